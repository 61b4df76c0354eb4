"""The video encoder of an output: which codec, which pixel format, which quality options.

Kept apart from the pipeline: these are the choices a user steers with `--codec`, `--crf` and
the output's extension, each refused in one line when this FFmpeg or container cannot do it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from srfeat.errors import VideoError

if TYPE_CHECKING:
    from av.container import OutputContainer

__all__ = ["CRF_SCALES", "CrfScale", "choose_codec", "choose_pixel_format", "quality_options"]


@dataclass(frozen=True)
class CrfScale:
    """An encoder's constant-quality scale from 0 (best): its default and its largest value."""

    default: float
    maximum: int
    whole_numbers: bool  # FFmpeg would round a fraction without a word


# Defaults: x264's 18 is the usual "visually lossless"; the others are their projects'
# recommendations for a similar quality. Maximums are the encoders' own: x264 clamps a larger
# value to 51 silently, the others refuse it only once the first frame is encoded.
CRF_SCALES: dict[str, CrfScale] = {
    "libx264": CrfScale(18, 51, whole_numbers=False),
    "libx264rgb": CrfScale(18, 51, whole_numbers=False),
    "libx265": CrfScale(20, 51, whole_numbers=False),
    "libvpx-vp9": CrfScale(24, 63, whole_numbers=True),
    "libsvtav1": CrfScale(30, 63, whole_numbers=True),
    "libaom-av1": CrfScale(30, 63, whole_numbers=True),
}
AUTO_CODECS: dict[str, tuple[str, ...]] = {"webm": ("libvpx-vp9", "libvpx")}
AUTO_CODECS_OTHERWISE = ("libx264", "mpeg4")  # H.264 where this FFmpeg has x264
# For lossless encoders (and --crf 0) the frames stay full-resolution colour, exact where RGB is offered.
LOSSLESS_PIXEL_FORMATS = ("rgb24", "gbrp", "bgr0", "yuv444p")


def choose_codec(av: ModuleType, output: OutputContainer, source: Path, requested: str) -> Any:
    """The encoder for `--codec` (or, for "auto", the first this FFmpeg has for the container)."""
    container = output.format.name
    candidates = (requested,) if requested != "auto" else AUTO_CODECS.get(container, AUTO_CODECS_OTHERWISE)
    for name in candidates:
        try:
            codec = av.codec.Codec(name, "w")
        except (ValueError, av.error.FFmpegError):
            continue
        if codec.type != "video":
            raise VideoError(f"--codec {name} is not a video encoder (e.g. libx264, libx265, libvpx-vp9, ffv1)")
        if codec.canonical_name not in output.supported_codecs:
            raise VideoError(
                f"{source}: {name} video cannot go in a {container} file; choose another --codec or -o extension"
            )
        return codec
    if requested != "auto":
        raise VideoError(f"--codec {requested}: this FFmpeg has no such video encoder (e.g. libx264, libx265, ffv1)")
    raise VideoError(f"this FFmpeg has none of the encoders {', '.join(candidates)}; choose one with --codec")


def choose_pixel_format(codec: Any, crf: float | None) -> str:
    """Full-resolution colour for lossless encodes, 4:2:0 (plays everywhere) otherwise."""
    offered = [f.name for f in (codec.video_formats or ())]
    if not offered:
        return "yuv420p"
    lossless = crf == 0 or (codec.lossless and not codec.lossy)
    preferred = LOSSLESS_PIXEL_FORMATS if lossless else ("yuv420p", "rgb24")
    return next((name for name in preferred if name in offered), offered[0])


def quality_options(codec_name: str, crf: float | None) -> dict[str, str]:
    """The encoder options for `--crf` (or the codec's constant-quality default)."""
    scale = CRF_SCALES.get(codec_name)
    if scale is None:
        if crf is None:
            return {}
        raise VideoError(f"--crf works with {', '.join(CRF_SCALES)}, not {codec_name}; leave it out")
    if crf is None:
        crf = scale.default
    elif not (math.isfinite(crf) and 0 <= crf <= scale.maximum) or (scale.whole_numbers and crf != int(crf)):
        numbers = "a whole number from" if scale.whole_numbers else "a number from"
        raise VideoError(f"--crf {crf:g}: {codec_name} takes {numbers} 0 to {scale.maximum} (lower is better quality)")
    options = {"crf": f"{crf:g}"}
    if codec_name.startswith("libvpx"):
        options["b"] = "0"  # libvpx is in constant-quality mode only with no bitrate target
    return options
