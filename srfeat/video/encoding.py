"""The video encoder of an output: which codec, which pixel format, which quality options.

Kept apart from the pipeline: these are the choices a user steers with `--codec`, `--crf` and
the output's extension, each refused in one line when this FFmpeg or container cannot do it.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from srfeat.errors import VideoError

if TYPE_CHECKING:
    from av.container import OutputContainer

__all__ = [
    "CRF_SCALES",
    "ColourTags",
    "CrfScale",
    "choose_codec",
    "choose_pixel_format",
    "codecs_held",
    "colour_tags",
    "even_size",
    "quality_options",
    "stream_tag",
]


@dataclass(frozen=True)
class CrfScale:
    """An encoder's constant-quality scale from `minimum` (best): its default and its largest value."""

    default: float
    maximum: int
    whole_numbers: bool  # FFmpeg would round a fraction without a word
    minimum: int = 0  # SVT-AV1 starts at 1: FFmpeg takes its 0 for "not set" and encodes worse than the default


# Defaults: x264's 18 is the usual "visually lossless"; the others are their projects'
# recommendations for a similar quality. Maximums are the encoders' own: x264 clamps a larger
# value to 51 silently, the others refuse it only once the first frame is encoded.
CRF_SCALES: dict[str, CrfScale] = {
    "libx264": CrfScale(18, 51, whole_numbers=False),
    "libx264rgb": CrfScale(18, 51, whole_numbers=False),
    "libx265": CrfScale(20, 51, whole_numbers=False),
    "libvpx-vp9": CrfScale(24, 63, whole_numbers=True),
    "libsvtav1": CrfScale(30, 63, whole_numbers=True, minimum=1),
    "libaom-av1": CrfScale(30, 63, whole_numbers=True),
}
AUTO_CODECS: dict[str, tuple[str, ...]] = {"webm": ("libvpx-vp9", "libvpx")}
AUTO_CODECS_OTHERWISE = ("libx264", "mpeg4")  # H.264 where this FFmpeg has x264
# For lossless encoders (and --crf 0) the frames stay full-resolution colour, exact where RGB is offered.
LOSSLESS_PIXEL_FORMATS = ("rgb24", "gbrp", "bgr0", "yuv444p")


@functools.cache
def codecs_held(av: ModuleType, container_format: str) -> frozenset[str]:
    """The codecs a container holds, by their canonical names (dts, hdmv_pgs_subtitle, h264). PyAV's
    `supported_codecs` names FFmpeg's decoders and encoders instead (dca, pgssub, libx264), which are
    the codec's name only for some: a Blu-ray's PGS subtitles and DTS audio were "not held" by .mkv."""
    with av.open(io.BytesIO(), "w", format=container_format) as probe:
        implementations = probe.supported_codecs
    held = set()
    for name in implementations:
        for mode in ("r", "w"):  # a decoder's name, else an encoder's
            try:
                held.add(av.codec.Codec(name, mode).canonical_name)
                break
            except (ValueError, av.error.FFmpegError):
                continue
    return frozenset(held)


def choose_codec(
    av: ModuleType, output: OutputContainer, source: Path, requested: str, *, command_line: bool = False
) -> Any:
    """The encoder for `codec` (or, for "auto", the first this FFmpeg has for the container). One it
    cannot be is refused in one line that names `--codec` for the command line, else `codec` (VideoOptions's)."""
    container = output.format.name
    option, output_name = ("--codec ", "-o extension") if command_line else ("codec=", "target extension")
    candidates = (requested,) if requested != "auto" else AUTO_CODECS.get(container, AUTO_CODECS_OTHERWISE)
    for name in candidates:
        try:
            codec = av.codec.Codec(name, "w")
        except (ValueError, av.error.FFmpegError):
            continue
        if codec.type != "video":
            raise VideoError(f"{option}{name} is not a video encoder (e.g. libx264, libx265, libvpx-vp9, ffv1)")
        if codec.canonical_name not in codecs_held(av, container):
            raise VideoError(
                f"{source}: {name} video cannot go in a {container} file; choose another {option.strip(' =')} or "
                f"{output_name}"
            )
        return codec
    if requested != "auto":
        raise VideoError(f"{option}{requested}: this FFmpeg has no such video encoder (e.g. libx264, libx265, ffv1)")
    raise VideoError(
        f"this FFmpeg has none of the encoders {', '.join(candidates)}; choose one with "
        + ("--codec" if command_line else "VideoOptions(codec=...)")
    )


def choose_pixel_format(codec: Any, crf: float | None) -> str:
    """Full-resolution colour for lossless encodes, 4:2:0 (plays everywhere) otherwise."""
    offered = [f.name for f in (codec.video_formats or ())]
    if not offered:
        return "yuv420p"
    lossless = crf == 0 or (codec.lossless and not codec.lossy)
    preferred = LOSSLESS_PIXEL_FORMATS if lossless else ("yuv420p", "rgb24")
    return next((name for name in preferred if name in offered), offered[0])


def quality_options(codec_name: str, crf: float | None, *, command_line: bool = False) -> dict[str, str]:
    """The encoder options for `crf` (or the codec's constant-quality default). A crf the encoder does not
    take is refused in one line that names `--crf` for the command line, else `crf` (VideoOptions's)."""
    scale = CRF_SCALES.get(codec_name)
    if scale is None:
        if crf is None:
            return {}
        if command_line:
            raise VideoError(f"--crf works with {', '.join(CRF_SCALES)}, not {codec_name}; leave it out")
        raise VideoError(f"crf works with {', '.join(CRF_SCALES)}, not {codec_name}; leave it None")
    if crf is None:
        crf = scale.default
    elif not (math.isfinite(crf) and scale.minimum <= crf <= scale.maximum) or (
        scale.whole_numbers and crf != int(crf)
    ):
        numbers = "a whole number from" if scale.whole_numbers else "a number from"
        taken = f"{numbers} {scale.minimum} to {scale.maximum}"
        if command_line:
            raise VideoError(f"--crf {crf:g}: {codec_name} takes {taken} (lower is better quality)")
        raise VideoError(f"crf must be {taken} for {codec_name} (lower is better quality), got {crf:g}")
    options = {"crf": f"{crf:g}"}
    if codec_name.startswith("libvpx"):
        options["b"] = "0"  # libvpx is in constant-quality mode only with no bitrate target
    if codec_name == "libx265":  # else some 25 lines of its settings on stderr; its CRF 0 alone is lossy
        options["x265-params"] = "log-level=error" + (":lossless=1" if crf == 0 else "")
    if codec_name == "libsvtav1":  # the same, and a warning about thread priority; it reads its level only here
        os.environ.setdefault("SVT_LOG", "1")  # errors (a user's own setting stands)
    return options


def stream_tag(codec_name: str, container: str) -> str | None:
    """The codec tag the output's video goes by, where FFmpeg's default does not play everywhere:
    HEVC in MP4 and MOV as `hvc1` (FFmpeg writes `hev1`, which QuickTime, Safari and iPhones refuse)."""
    return "hvc1" if codec_name == "hevc" and container in ("mp4", "mov") else None


# An encoder decodes a frame at most this many frames before it is shown (x265's B-pyramid: 2).
MAX_REORDER_FRAMES = 64


def repaired_decode_time(pts: int | None, dts: int | None, last_dts: int | None, step: int) -> int | None:
    """An encoded packet's decode time `dts`, or, where it cannot be one (after the packet is shown,
    or further before it than any encoder reorders), the next one after `last_dts`.

    libx265 gives a clip of one or two frames decode times near -2**38 (uninitialised), which
    the MP4 muxer refuses as "Not yet implemented in FFmpeg, patches welcome".
    """
    if pts is None or dts is None or pts - MAX_REORDER_FRAMES * step <= dts <= pts:
        return dts
    return pts if last_dts is None else min(pts, last_dts + 1)


# FFmpeg's AVColorSpace (the matrix from RGB to Y'CbCr) and AVColorRange values.
MATRIX_RGB, MATRIX_BT709, MATRIX_UNSPECIFIED, MATRIX_BT601 = 0, 1, 2, 5
RANGE_LIMITED = 1


@dataclass(frozen=True)
class ColourTags:
    """How frames are converted: `source_matrix` reads the input's samples (None: the matrix they are
    tagged with); the output's are converted with and tagged as `matrix` and `colour_range` (None: not set)."""

    source_matrix: int | None
    matrix: int | None
    colour_range: int | None


def guessed_matrix(width: int, height: int) -> int:
    """The matrix players (mpv, FFmpeg, browsers) assume for an untagged YUV stream: BT.709 for HD sizes."""
    return MATRIX_BT709 if width >= 1280 or height > 576 else MATRIX_BT601


def colour_tags(input_matrix: int, input_range: int, input_size: tuple[int, int], output_is_rgb: bool) -> ColourTags:
    """The input's matrix and range where they describe the output's samples; otherwise what does.

    A YUV matrix on RGB samples (a BT.709 film into libx264rgb or FFV1) makes decoders read the
    G, B, R planes as Y, Cb, Cr: wrong colours everywhere. The RGB "matrix" on YUV samples (an RGB
    screen recording into 4:2:0 H.264) is invalid H.264, which browsers show in false colours; such
    frames are converted with BT.709, the HD standard, in limited range, and tagged so. An untagged
    input is read with the matrix players assume for its size, and its output tagged with it: untagged,
    a 4x output of standard definition crosses into HD, where players would assume the other one."""
    source_matrix = guessed_matrix(*input_size) if input_matrix == MATRIX_UNSPECIFIED else None
    if output_is_rgb:
        return ColourTags(source_matrix, MATRIX_RGB, None)
    if input_matrix == MATRIX_RGB:
        return ColourTags(None, MATRIX_BT709, RANGE_LIMITED)
    return ColourTags(source_matrix, source_matrix or input_matrix or None, input_range or None)


def even_size(
    source: Path, width: int, height: int, pixel_format: str, *, command_line: bool = False
) -> tuple[int, int]:
    """The output size an encoder with subsampled chroma takes: 4:2:0 needs even sides, 4:2:2 an even
    width. One column or row less beats a refused encode; a side of 1 pixel cannot lose one (refused
    naming `--outscale` and `--codec` for the command line, else VideoOptions's `outscale` and `codec`)."""
    even_width = pixel_format.startswith(("yuv420", "yuv422", "nv"))
    even_height = even_width and ("420" in pixel_format or pixel_format.startswith(("nv12", "nv21")))
    if (even_width and width < 2) or (even_height and height < 2):
        advice = "a larger --outscale, or --codec ffv1" if command_line else 'a larger outscale, or codec="ffv1"'
        raise VideoError(
            f"{source}: the output would be {width}x{height} pixels, too small for {pixel_format} (2 pixels a side "
            f"at least); give {advice}"
        )
    return width - (width % 2 if even_width else 0), height - (height % 2 if even_height else 0)
