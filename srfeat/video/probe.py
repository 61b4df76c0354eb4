"""What the pipeline reads off an input before, while and after it decodes: the film's stream, its
first frame, the span a `--frames` slice cuts at (`TimeWindow`; timed by `range_times`), time bases that a
damaged file may lack, and whether the file held as many frames as it says."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from srfeat.errors import VideoError
from srfeat.video import FrameRange, frames_option

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

__all__ = [
    "FrameDefects",
    "TimeWindow",
    "check_length",
    "continued_pts",
    "display_matrix",
    "error_reason",
    "expected_frames",
    "ffmpeg_log",
    "ffmpeg_name",
    "first_frame",
    "frame_step",
    "has_alpha",
    "logged_reason",
    "main_video_stream",
    "open_for_reading",
    "seconds_of",
    "side_data",
    "stated_duration",
    "time_base_of",
]


def ffmpeg_name(path: Path) -> str:
    """The name FFmpeg opens `path` by: absolute, since FFmpeg takes a name that starts with a protocol
    (`pipe:0.mp4`, `http:x.mp4`, a file in the working directory) for that protocol, not the file."""
    return str(path.absolute())


def open_for_reading(av: ModuleType, source: Path) -> InputContainer:
    """`source` opened by PyAV, with metadata that is not UTF-8 read, not raised about. PyAV 18 and
    older raise UnicodeDecodeError for such a tag unless asked to ignore it (`metadata_errors`); PyAV
    19 (the one pip picks on Python 3.12 and newer) reads it with surrogateescape and has no such
    argument: passing it there failed every video with a TypeError traceback."""
    if int(av.__version__.split(".")[0]) < 19:
        return av.open(ffmpeg_name(source), metadata_errors="ignore")
    return av.open(ffmpeg_name(source))


@dataclass(frozen=True)
class TimeWindow:
    """The presentation times (seconds) of the first frame kept and of the first one after."""

    start: float
    stop: float | None


@dataclass
class FrameDefects:
    """What the decoded frames say that the upscaled ones cannot: closed captions (CEA-608/708, US
    broadcasts and DVDs) travel inside the frames, so frames encoded anew lose them (said at once);
    frames the decoder flags as damaged (their errors concealed with guesses) are counted, and said."""

    source: Path
    command_line: bool = False  # the report names --frames, else VideoOptions's frames
    captions: bool = False
    damaged: int = 0
    first_damaged: int = 0

    def check(self, frame: Any, index: int) -> None:
        from av.sidedata.sidedata import Type

        if not self.captions and Type.A53_CC in side_data(frame):
            self.captions = True
            logger.warning(
                "%s: its video carries closed captions (CEA-608/708) inside its frames, which the upscaled "
                "frames do not: they are lost; extract them first if they are needed (e.g. ccextractor)",
                self.source,
            )
        if frame.is_corrupt:
            self.first_damaged = index if not self.damaged else self.first_damaged
            self.damaged += 1

    def report(self, frames: int) -> None:
        if self.damaged:
            logger.warning(
                "%s: %d of the %d frames upscaled decoded with errors (a damaged file?), the first at frame %d; "
                "they are upscaled as the decoder patched them up (%s can leave them out)",
                self.source,
                self.damaged,
                frames,
                self.first_damaged,
                "--frames" if self.command_line else "VideoOptions(frames=...)",
            )


def frame_step(video: VideoStream) -> int:
    """One frame's duration in the stream's ticks (at least one)."""
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    return max(1, round(1 / (rate * time_base_of(video))))


def continued_pts(pts: int | None, last: int | None, step: int) -> int:
    """A frame's timestamp as the output gets it. One that is missing, or not after the last frame's
    (broken files, and files joined end to end whose timestamps start over), becomes the last plus
    `step`, since encoders refuse timestamps that do not increase."""
    if last is None:
        return 0 if pts is None else pts
    if pts is None or pts <= last:
        return last + step
    return pts


def main_video_stream(container: InputContainer) -> VideoStream | None:
    """The first video stream that is a film, not a cover picture (which MP4 and MKV store as video)."""
    from av.stream import Disposition

    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def first_frame(av: ModuleType, source: Path) -> Any:
    """The first frame (None if none decodes): its size and the rotation players apply (phones store
    portrait video turned) go into the output's header, before any packet, so they are looked up first."""
    with open_for_reading(av, source) as probe:
        stream = main_video_stream(probe)
        try:
            return next(probe.decode(stream), None) if stream is not None else None
        except av.error.FFmpegError:
            return None  # the real pass reports it, with where


def side_data(frame: Any) -> Any:
    """`frame`'s side data (FFmpeg's extras: closed captions, the display matrix), looked up by `Type`.

    Not `frame.side_data`: the frame keeps that container, which points back at it, so every frame it
    was asked of lived on, with its decoder buffers, until the garbage collector found the cycle (a
    240-frame clip's upscale peaked 50 MB higher). This one goes when the caller drops it."""
    from av.sidedata.sidedata import SideDataContainer

    return SideDataContainer(frame)  # pyright: ignore[reportCallIssue]  # PyAV's stub leaves out its frame argument


def display_matrix(frame: Any, source: Path) -> list[int] | None:
    """The turn and mirror that players apply to `frame` (FFmpeg's 3x3 display matrix, as the nine
    integers `VideoStream.set_display_matrix` takes), for the output's header; None if there is none.

    The whole matrix is carried, not the angle that `frame.rotation` derives from it: that angle
    loses a mirror (a selfie camera's video), and is garbage (-2**31 degrees) for a matrix that
    maps everything onto a line. Such a matrix, or a damaged one, is left out with a warning.
    The translation is dropped: it counts input pixels, and players ignore it.
    """
    from av.sidedata.sidedata import Type

    # Looked up by type: iterating side data gives the entries in PyAV 18 and older, their types in 19.
    entry = side_data(frame).get(Type.DISPLAYMATRIX)
    if entry is None:
        return None
    raw = bytes(entry)
    if len(raw) != 36:
        problem = f"its display matrix is {len(raw)} bytes, not 36"
    else:
        a, b, _, c, d, _, _, _, _ = np.frombuffer(raw, dtype=np.int32).tolist()
        if a * d - b * c != 0:
            # 16.16 fixed point; the last entry is 2.30. The identity says nothing.
            return None if (a, b, c, d) == (1 << 16, 0, 0, 1 << 16) else [a, b, 0, c, d, 0, 0, 0, 1 << 30]
        problem = "its display matrix maps the picture onto a line; no player can show it"
    logger.warning("%s: %s; the output is shown as stored", source, problem)
    return None


def has_alpha(video: VideoStream, first: Any) -> bool:
    """Whether the film is transparent: its frames carry alpha (PNG, QuickTime Animation, ProRes 4444),
    or, in WebM, VP8/VP9 carry it beside the picture (`alpha_mode`), where FFmpeg's decoder drops it."""
    if video.metadata.get("alpha_mode", video.metadata.get("ALPHA_MODE")) == "1":
        return True
    return first is not None and any(component.is_alpha for component in first.format.components)


def stated_duration(video: VideoStream) -> float | None:
    """The video stream's length as the file states it, in seconds."""
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    tag = video.metadata.get("DURATION") or video.metadata.get("duration")
    if tag:  # Matroska: HH:MM:SS.nnnnnnnnn
        with suppress(ValueError):
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def error_reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


@contextmanager
def ffmpeg_log(av: ModuleType, level: int | None = None) -> Iterator[list[Any]]:
    """FFmpeg's log lines (of `level`, else errors) while the block runs, captured, not printed: the reason behind
    an error that FFmpeg states only as "Invalid argument". Only while no other thread uses FFmpeg (the level is
    global). A line that repeats the last one logged is captured too, where PyAV drops it: the same damage in the
    next file of a batch went unsaid."""
    previous, skipped, capture = av.logging.get_level(), av.logging.get_skip_repeated(), av.logging.Capture()
    av.logging.set_level(av.logging.ERROR if level is None else level)
    av.logging.set_skip_repeated(False)
    try:
        with capture:
            yield capture.logs
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skipped)


def logged_reason(logs: list[Any], error: BaseException) -> str:
    """The log's first line (the cause; more lines elaborate it, DNxHD's list some 100 profiles) as
    the reason for `error`, else the error's own text."""
    lines = [" ".join(str(line[2]).split()) for line in logs]
    return next((line for line in lines if line), None) or error_reason(error)


def seconds_of(value: int | None, time_base: Fraction) -> float:
    return float(value * time_base) if value is not None else 0.0


def time_base_of(item: Any) -> Fraction:
    """A stream's or packet's time base (FFmpeg always sets one on streams it has opened)."""
    time_base = item.time_base
    if time_base is None:
        raise VideoError(
            f"stream #{item.index if hasattr(item, 'index') else '?'} has no time base; the file is damaged"
        )
    return time_base


def expected_frames(video: VideoStream, frames: FrameRange) -> int | None:
    """How many frames the upscale will write, as far as the file says (for the progress bar)."""
    total = video.frames or None
    if total is None and (duration := stated_duration(video)) is not None and video.average_rate:
        total = round(duration * video.average_rate)
    if frames.stop is not None:
        total = frames.stop if total is None else min(total, frames.stop)
    return None if total is None else max(0, total - frames.start)


def length_tolerance(last_frame_duration: float | None, rate: float) -> float:
    """How far short of its stated length a whole video may end. A file states its stream's length as its last
    frame's time plus that frame's duration, so with that duration known the two differ only by rounding (a
    Matroska file's milliseconds): less than half a frame is short of no frame. Without it, the last frame of a
    variable frame rate video may be held for longer or shorter than the average: two frames' time is allowed,
    which leaves a file cut a frame short unsaid."""
    if last_frame_duration:
        return max(0.002, min(last_frame_duration, 1 / rate) / 2)
    return max(0.1, 2 / rate)


def _video_end(video: VideoStream, last_frame_time: float | None, last_frame_duration: float | None) -> float | None:
    """When the last frame shown ends, from the video's start (a player's clock): None where unknown."""
    rate = video.average_rate
    duration = last_frame_duration or (1 / float(rate) if rate else None)
    if last_frame_time is None or duration is None:
        return None
    return last_frame_time - seconds_of(video.start_time, time_base_of(video)) + duration


def check_length(
    source: Path,
    video: VideoStream,
    frames: FrameRange,
    decoded_frames: int,
    last_frame_time: float | None,
    hidden_frames: int = 0,
    cut_frame_bytes: int = 0,
    *,
    cut_packet_bytes: int = 0,
    last_frame_duration: float | None = None,
    command_line: bool = False,
) -> None:
    """A file cut short decodes without an error, and `--frames A:B` may reach past the end: say so
    rather than pass a short video off as whole or as the range asked for. `hidden_frames` are
    listed but not shown: an MP4 trimmed without re-encoding keeps the frames from the keyframe
    before its cut, which its edit list hides (FFmpeg flags their packets to be decoded, not shown).
    `cut_frame_bytes`: what a raw-frame file (.y4m) held of a last frame cut short, which FFmpeg drops
    unsaid (such a file states only its whole frames, so no other check sees the loss); said where
    that frame was in the range asked for. `cut_packet_bytes`: the same of an MPEG-TS's last transport packet,
    which FFmpeg drops unsaid (such a file states no length: only the packet cut shows the file was).
    `last_frame_duration`: the last frame's own, as the file states
    it (None where it states none). A range past the end is named `--frames` for the command line,
    else `frames` (VideoOptions's)."""
    if cut_frame_bytes and (frames.stop is None or decoded_frames < frames.stop):
        logger.warning(
            "%s: the file ends %d bytes into a frame (truncated?); that incomplete last frame was dropped, "
            "the video has %d whole frames",
            source,
            cut_frame_bytes,
            decoded_frames,
        )
    end = _video_end(video, last_frame_time, last_frame_duration)
    if cut_packet_bytes and end is not None and (frames.stop is None or decoded_frames < frames.stop):
        logger.warning(
            "%s: the file seems cut short at %.2f s: it ends %d bytes into a transport packet (truncated?); the "
            "video has %d frames up to there, and whatever the file held after is not in the output",
            source,
            end,
            cut_packet_bytes,
            decoded_frames,
        )
    if frames.stop is not None and decoded_frames < frames.stop:
        logger.warning(
            "%s: %s ends past the last frame (the video has %d frames); wrote frames %d to %d",
            source,
            frames_option(frames, command_line=command_line),
            decoded_frames,
            frames.start,
            decoded_frames - 1,
        )
    if not frames.is_everything:
        return
    listed = video.frames and video.frames - hidden_frames
    if listed and decoded_frames < listed:
        logger.warning(
            "%s: only %d of the %d frames the file lists decoded (truncated or damaged?); the output has those",
            source,
            decoded_frames,
            listed,
        )
        return
    duration, rate = stated_duration(video), video.average_rate
    if duration is None or end is None or not rate:
        return
    if end < duration - length_tolerance(last_frame_duration, float(rate)):
        logger.warning(
            "%s: the video stops at %.2f s but the file says %.2f s (truncated or damaged?); wrote its %d frames",
            source,
            end,
            duration,
            decoded_frames,
        )
