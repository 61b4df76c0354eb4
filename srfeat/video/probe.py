"""What the pipeline reads off an input before and while it decodes: the film's stream, the
times a `--frames` slice cuts at, and time bases that a damaged file may lack."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from srfeat.errors import VideoError
from srfeat.video import FrameRange

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

__all__ = ["TimeWindow", "error_reason", "main_video_stream", "seconds_of", "time_base_of", "time_window"]


@dataclass(frozen=True)
class TimeWindow:
    """The presentation times (seconds) of the first frame kept and of the first one after."""

    start: float
    stop: float | None


def time_window(av: ModuleType, source: Path, frames: FrameRange) -> TimeWindow:
    """Decode up to frame B once to learn the times of frames A and B, which cut the audio."""
    start: float | None = None
    time = 0.0
    count = 0
    with av.open(str(source), metadata_errors="ignore") as probe:
        stream = main_video_stream(probe)
        assert stream is not None  # checked on the first opening
        stream.thread_type = "AUTO"
        try:
            for count, frame in enumerate(probe.decode(stream), start=1):
                time = float(frame.time) if frame.time is not None else 0.0
                if count - 1 == frames.start:
                    start = time
                if frames.stop is not None and count - 1 == frames.stop:
                    break
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{source}: frame {count} cannot be decoded ({error_reason(error)}); the file is damaged"
            ) from error
    if start is None:
        raise VideoError(f"{source}: --frames {frames} starts past the last frame (the video has {count} frames)")
    return TimeWindow(start, time if frames.stop is not None and count - 1 == frames.stop else None)


def main_video_stream(container: InputContainer) -> VideoStream | None:
    """The first video stream that is a film, not a cover picture (which MP4 and MKV store as video)."""
    from av.stream import Disposition

    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def error_reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


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
