"""Video for `srfeat upscale`: which files are videos, where their output goes, and the flags.

This module is imported by `srfeat --help`, so it is light (no PyAV, numpy or torch): the
pipeline itself is `srfeat.video.pipeline`, which needs the `video` extra (PyAV).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from srfeat.inference import Upscaler

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTENSIONS",
    "WRITTEN_CONTAINERS",
    "FrameRange",
    "VideoOptions",
    "add_arguments",
    "check_video_job",
    "is_video",
    "output_extension",
    "output_mismatch",
    "parse_frame_range",
    "unwritten_extension",
    "upscale_video_job",
    "warn_unused_options",
]

# What a folder or glob contributes as video (a named file is tried whatever its extension).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv", ".3gp"}
    | {".vob", ".ogv", ".mxf", ".y4m", ".asf", ".f4v", ".divx", ".dv"}  # DVD, Ogg, broadcast, raw, older PC formats
)
# Containers written, by extension: FFmpeg's muxer names. Any other input is written as
# Matroska, which takes every audio and subtitle codec, so its streams can be copied as they are.
WRITTEN_CONTAINERS: dict[str, str] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
FALLBACK_CONTAINER = ".mkv"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def output_extension(source: Path) -> str:
    """The input's own container where we write it, else Matroska."""
    extension = source.suffix.lower()
    return extension if extension in WRITTEN_CONTAINERS else FALLBACK_CONTAINER


def output_mismatch(source: Path, target: Path) -> str | None:
    """An error line if a video would be written under an image's extension, or the reverse."""
    if is_video(source) and target.suffix.lower() not in WRITTEN_CONTAINERS:
        return f"{source}: a video cannot be written as {target.name}; name the output .mp4, .m4v, .mkv, .mov or .webm"
    if not is_video(source) and target.suffix.lower() in WRITTEN_CONTAINERS:
        return f"{source}: an image cannot be written as the video {target.name}; give an image file name or a folder"
    return None


def unwritten_extension(spec: str, suffix: str) -> str | None:
    """The error line for `-o NAME.avi` and other video containers that are read but not written."""
    if suffix in VIDEO_EXTENSIONS and suffix not in WRITTEN_CONTAINERS:
        written = ", ".join(sorted(WRITTEN_CONTAINERS))
        return f"-o {spec}: {suffix} videos are read but not written; name the output {written} (or give a folder)"
    return None


@dataclass(frozen=True)
class FrameRange:
    """Frames `start` (inclusive) to `stop` (exclusive, None: to the end), counted from 0 in decoding order."""

    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        # A range built in Python (the command line's text is checked by parse_frame_range): FrameRange(2, 1)
        # was taken, and the video was then said to end "before frame 2".
        whole = all(isinstance(n, int) and not isinstance(n, bool) for n in (self.start, self.stop or 0))
        if not whole or self.start < 0 or (self.stop is not None and self.stop <= self.start):
            from srfeat.errors import InvalidOptionError

            raise InvalidOptionError(
                f"FrameRange({self.start!r}, {self.stop!r}): need whole numbers "
                "0 <= start < stop (frames counted from 0, stop excluded; None: to the end)"
            )

    @property
    def is_everything(self) -> bool:
        return self.start == 0 and self.stop is None

    def __str__(self) -> str:
        return f"{self.start}:{'' if self.stop is None else self.stop}"


def frames_option(frames: FrameRange, *, command_line: bool = False) -> str:
    """`frames` as its caller gave it: `--frames A:B` on the command line, `frames=FrameRange(A, B)`
    (VideoOptions's) from Python."""
    if command_line:
        return f"--frames {frames}"
    return f"frames=FrameRange({frames.start}{'' if frames.stop is None else f', {frames.stop}'})"


def frames_before_hint(index: int, frames: FrameRange, *, command_line: bool = False) -> str:
    """What to do about a frame that stops the upscale of `frames`, `index` frames into the file: the part
    of the range before it, as its caller gives a range (`--frames 2:4` for `--frames 2:` failing at frame
    4; `0:4` was said, frames the user had left out). Where no frame of the range comes before it, no range
    avoids it (frames are decoded from the file's start whatever the range): `--frames 0:0` was said. That hint
    names no frame ("decoded before it" followed "no frame of X could be read", where "it" was nothing)."""
    if index <= frames.start:
        before = "no frame of the range" if frames.start else "no frame"
        return (
            f"{before} comes before this point, and every frame range is decoded from the file's start: "
            "skip or replace this file"
        )
    working = frames_option(FrameRange(frames.start, index), command_line=command_line)
    count = index - frames.start
    return f"{working} upscales the {count} frame{'s' if count > 1 else ''} before it"  # not "the 1 frames"


def parse_frame_range(text: str) -> FrameRange:
    """`A:B`, `A:` or `:B` (Python slice style, frames counted from 0) -> a FrameRange."""
    from srfeat.errors import shown

    start_text, colon, stop_text = text.partition(":")
    try:
        if not colon:
            raise ValueError
        start = int(start_text) if start_text.strip() else 0
        stop = int(stop_text) if stop_text.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not A:B (e.g. 0:48, 100: or :250)") from None
    if start < 0 or (stop is not None and stop <= start):
        raise argparse.ArgumentTypeError(f"{shown(text)}: need 0 <= A < B (frames counted from 0, B excluded)")
    return FrameRange(start, stop)


@dataclass(frozen=True)
class VideoOptions:
    """What `srfeat.video.pipeline.upscale_video` does besides upscaling: `codec` (an FFmpeg encoder
    name, or "auto"), `crf` (the encoder's quality; None: its default), `frames` (a `FrameRange`) and
    `outscale` (the final scale, above 0 and at most 16; None: the model's). The command line's --codec,
    --crf, --frames, --outscale."""

    codec: str = "auto"
    crf: float | None = None
    frames: FrameRange = FrameRange()
    outscale: float | None = None

    def __post_init__(self) -> None:
        # Built in Python: a crf of "20" was a TypeError from inside the encoder set-up, a frames of (0, 48)
        # an AttributeError once the video was open.
        from srfeat.errors import InvalidOptionError, given, is_real_number, shown

        if not isinstance(self.codec, str) or not self.codec.strip():
            raise InvalidOptionError(f"codec must be an encoder name such as libx264, or auto; got {shown(self.codec)}")
        if self.crf is not None and not is_real_number(self.crf):
            raise InvalidOptionError(f"crf must be a number or None, got {given(self.crf)}")
        if not isinstance(self.frames, FrameRange):
            raise InvalidOptionError(f"frames must be a FrameRange (e.g. FrameRange(0, 48)), got {given(self.frames)}")
        if self.outscale is not None:  # NaN was "cannot convert float NaN to integer" once the video was open
            from srfeat.inference.checks import check_outscale  # torch: not for `srfeat --help`

            check_outscale(self.outscale)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "video",
        'Videos (.mp4, .mkv, .mov, .webm, .avi, ...; needs: pip install -e ".[video]") are upscaled frame by frame '
        "with the same model and settings; frame rate and timestamps are kept, audio and subtitles copied as they are. "
        "The output keeps the input's container (.mp4, .m4v, .mkv, .mov, .webm; others become .mkv), or -o names it.",
    )
    group.add_argument(
        "--codec",
        default="auto",
        help="video encoder, e.g. libx264, libx265, libvpx-vp9, ffv1 (default auto: H.264 (libx264), VP9 for .webm)",
    )
    group.add_argument(
        "--crf",
        type=float,
        default=None,
        metavar="Q",
        help="constant quality for x264/x265/VP9/AV1: lower is better, 0 is lossless (SVT-AV1: from 1, lossy) "
        "(default: 18 for H.264, 20 for H.265, 24 for VP9, 30 for AV1)",
    )
    group.add_argument(
        "--frames",
        type=parse_frame_range,
        default=FrameRange(),
        metavar="A:B",
        help="only frames A to B-1 (from 0), e.g. 0:48 to preview a setting; audio and subtitles are cut to match",
    )
    from srfeat.commands.arguments import OneLineErrorParser

    if isinstance(parser, OneLineErrorParser):  # `--frames -1:` reaches parse_frame_range, as `--frames=-1:` does
        parser.take_dash_values("--frames")


def options_from_args(args: argparse.Namespace) -> VideoOptions:
    return VideoOptions(codec=args.codec, crf=args.crf, frames=args.frames, outscale=args.outscale)


def video_options_given(args: argparse.Namespace) -> list[str]:
    """The video options set on the command line (those that differ from their defaults)."""
    given = {"--codec": args.codec != "auto", "--crf": args.crf is not None, "--frames": not args.frames.is_everything}
    return [name for name, is_given in given.items() if is_given]


def warn_unused_options(args: argparse.Namespace) -> None:
    """One warning line when video options are given to a run without videos: they do nothing there
    (a warning, not an error: the images are upscaled as asked, and scripts reuse one command line)."""
    if given := video_options_given(args):
        logger.warning(
            "%s only %s to videos and no input is a video: ignored (an animated image is read as its first frame)",
            ", ".join(given),
            "applies" if len(given) == 1 else "apply",
        )


def check_video_job(source: Path, target: Path, args: argparse.Namespace) -> str | None:
    """An error line if `source` is no video FFmpeg reads, or `target` cannot be written as asked (its
    folder, --codec, --crf): checked before the model loads, so that a wrong input or option costs no
    model load and no decoding."""
    from srfeat.errors import SRFeatError
    from srfeat.video.output import check_output

    try:
        check_output(source, target, options_from_args(args), command_line=True)
    except SRFeatError as error:
        return _error_line(source, error)
    return None


def _error_line(source: Path, error: Exception) -> str:
    """A VideoError names the file; others (a model's NaN output) are given its name."""
    message = " ".join(str(error).split())
    return message if str(source) in message else f"{source}: {message}"


def upscale_video_job(source: Path, target: Path, upscaler: Upscaler, args: argparse.Namespace) -> bool:
    """`srfeat upscale` on one video: True if it was written, else one error line and False."""
    from srfeat.errors import SRFeatError
    from srfeat.video.pipeline import upscale_video

    try:
        summary = upscale_video(
            source, target, upscaler, options_from_args(args), replace=args.overwrite, command_line=True
        )
    except (SRFeatError, OSError) as error:  # the pipeline maps OSErrors to lines; any it missed is one line too
        logger.error("%s", _error_line(source, error))
        return False
    logger.info(
        "%s -> %s (%d frames, %dx%d, %s, %d stream(s) copied)",
        source,
        target,
        summary.frames,
        summary.width,
        summary.height,
        summary.codec,
        summary.copied_streams,
    )
    return True
