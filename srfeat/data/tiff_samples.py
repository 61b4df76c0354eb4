"""TIFF samples that PIL decodes into values other than the file's: signed 8-bit ones it reads as plain bytes, and
unsigned 32-bit ones past 2^31, which its signed mode I wraps. Such a file is refused in one line, with the range its
samples are in, rather than read as other intensities without a word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from srfeat.errors import ImageReadError

__all__ = ["out_of_range_error"]


def out_of_range_error(path: Path, image: Image.Image) -> ImageReadError | None:
    """The error for the decoded TIFF `image` (read from `path`) whose samples srfeat does not read as intensities:
    signed 8-bit ones of which some is negative, or unsigned 32-bit ones of which some is past 16 bits; else None."""
    negative = _negative_signed_bytes(image)
    if negative is not None:
        return ImageReadError(
            f"cannot read image {path}: a TIFF of signed 8-bit samples, in [{negative[0]}, {negative[1]}], which "
            "srfeat does not read (its intensities are 0..255)",
            "convert it to unsigned 8- or 16-bit",
        )
    unsigned_32 = _unsigned_32_bit_range(image)
    if unsigned_32 is not None:  # said here: the copy PIL reads into its signed mode I shows wrapped values
        return ImageReadError(
            f"cannot read image {path}: its unsigned 32-bit pixels are in [{unsigned_32[0]}, {unsigned_32[1]}], "
            "outside 16 bits (0..65535)",
            "convert it to 8- or 16-bit",
        )
    return None


def _unsigned_32_bit_range(image: Image.Image) -> tuple[int, int] | None:
    """(lowest, highest) of a TIFF's unsigned 32-bit samples if any is past 16 bits, else None. PIL reads them
    into its signed mode I, where those past 2^31 wrap: the refusal gave [-2134620432, 2143510973]."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or image.mode != "I" or tags is None or tuple(tags.get(339, (1,)))[:1] != (1,):
        return None
    if tuple(tags.get(258, ()))[:1] != (32,):
        return None
    values = np.asarray(image).view(np.uint32)
    low, high = int(values.min()), int(values.max())
    return (low, high) if high > 65535 else None


def _negative_signed_bytes(image: Image.Image) -> tuple[int, int] | None:
    """(lowest, highest) of a TIFF's signed 8-bit samples if any is negative, else None. PIL decodes them
    as plain bytes: -56 became 200, a dark pixel bright, and the image was upscaled without a word (signed
    16-bit samples it decodes as such, and a negative one is refused)."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or image.mode != "L" or tags is None or tuple(tags.get(339, (1,)))[:1] != (2,):
        return None
    values = np.asarray(image).view(np.int8)
    low, high = int(values.min()), int(values.max())
    return (low, high) if low < 0 else None
