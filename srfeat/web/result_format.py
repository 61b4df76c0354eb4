"""The format a web job's result is written in, and what its card says about it.

A result is written in its upload's own format, as `srfeat upscale` writes it, unless that format would drop what
the image has: its transparency or 16 bits (a PNG then), or its float pixels (a TIFF). The command line's advice
("use .png to keep 16", "float pixels are kept only in a gray TIFF") was given on the page, where following it meant
renaming the file and uploading it again.

The choice is made twice: at the upload from its header (`header_result_format`: `inspect_upload` refuses a result
over its format's size limit before queuing it), and again from the pixels as decoded (`decoded_result_format`),
which decides: a 16-bit LZW TIFF that this server reads with 8 bits (no imagecodecs package) named `.jpg` got a PNG
"to keep all 16" that had 8.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, TiffImagePlugin

from srfeat.data.image_writing import FLOAT_GREY_FORMAT, SIXTEEN_BIT_FORMATS
from srfeat.data.io import FORMATS, RawImage, has_alpha
from srfeat.data.png16 import PNG_HEAD_BYTES, png16_head_channels
from srfeat.inference.image_files import output_extension, over_format_limit

__all__ = [
    "FORMATS_WITHOUT_ALPHA",
    "KEEPS_ALPHA",
    "KEEPS_FLOAT",
    "KEEPS_SIXTEEN_BITS",
    "decoded_result_format",
    "format_note",
    "header_result_format",
]

# Output formats that `write_image` writes without the alpha (`srfeat.data.image_writing`); those without 16 bits
# are the ones outside `SIXTEEN_BIT_FORMATS`, and float grey is kept only in `FLOAT_GREY_FORMAT`. What the result
# keeps, as the card says it:
FORMATS_WITHOUT_ALPHA = ("JPEG", "BMP")
KEEPS_ALPHA = "an alpha channel (transparency)"
KEEPS_SIXTEEN_BITS = "16 bits per channel"
KEEPS_FLOAT = "32-bit float pixels"
# How the card says what the result keeps of one thing it has ("to keep all 16"); of two, "both".
_KEEPS_ONE: dict[tuple[str, ...], str] = {(KEEPS_ALPHA,): "it", (KEEPS_SIXTEEN_BITS,): "all 16", (KEEPS_FLOAT,): "them"}


def _result_format(name: str, float_pixels: bool, alpha: bool, sixteen_bits: bool) -> tuple[str, tuple[str, ...]]:
    """The extension of the result of the upload `name` whose pixels have what the flags say, and what that format
    keeps that the upload's own would drop (none: the upload's own format)."""
    extension = output_extension(name)
    image_format = FORMATS[extension]
    if float_pixels and image_format != FLOAT_GREY_FORMAT:  # as `srfeat upscale` writes a float `.tif`
        return ".tif", (KEEPS_FLOAT,)
    dropped = []
    if image_format in FORMATS_WITHOUT_ALPHA and alpha:
        dropped.append(KEEPS_ALPHA)
    if image_format not in SIXTEEN_BIT_FORMATS and sixteen_bits:
        dropped.append(KEEPS_SIXTEEN_BITS)
    return (".png", tuple(dropped)) if dropped else (extension, ())


def header_result_format(name: str, data: bytes, image: Image.Image) -> tuple[str, tuple[str, ...]]:
    """The result format of the upload `name` (`data`, opened as `image`, not decoded) as its header tells it."""
    return _result_format(name, image.mode == "F", has_alpha(image), _has_sixteen_bits(data, image))


def decoded_result_format(
    name: str, raw: RawImage, scale: int, chosen: tuple[str, tuple[str, ...]]
) -> tuple[str, tuple[str, ...]]:
    """The result format of the upload `name` by its pixels as read (`raw`), to be upscaled `scale` times; `chosen`:
    the one its header told (`header_result_format`), kept (keeping nothing) where the upload's own format, which
    the pixels would allow, cannot hold the result's size: the upload's check of that size was for `chosen`."""
    dtype = raw.array.dtype
    decoded = _result_format(name, dtype == np.float32, raw.has_alpha, dtype == np.uint16)
    height, width = raw.array.shape[:2]
    if (
        chosen[0]
        and decoded[0] != chosen[0]
        and over_format_limit(decoded[0], scale * width, scale * height) is not None
    ):
        return chosen[0], ()
    return decoded


def _has_sixteen_bits(data: bytes, image: Image.Image) -> bool:
    """Whether the upload `data` (opened as `image`) says it has 16 bits per channel: grey that PIL opens so
    (`I;16`, `I`), a colour PNG (which PIL opens with 8: its header says) or a colour TIFF (its BitsPerSample)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        return True
    if image.format == "PNG":
        return png16_head_channels(data[:PNG_HEAD_BYTES]) > 0
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return 16 in tuple(image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, ()))
    return False


def format_note(name: str, result_extension: str, result_name: str, kept: tuple[str, ...]) -> str | None:
    """Why the result `result_name` of the upload `name` is not in the upload's format, for the job's card: for what
    it `kept` (`decoded_result_format`). None: it is in the upload's format."""
    own = output_extension(name)
    if not result_extension or result_extension == own or not kept:
        return None
    return (
        f"{name} has {' and '.join(kept)}, which {FORMATS[own]} cannot hold: "
        f"the result is written as {FORMATS[result_extension]} ({result_name}) to keep {_KEEPS_ONE.get(kept, 'both')}"
    )
