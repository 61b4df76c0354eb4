"""Writing image files (`srfeat.data.io` re-exports the writers): `write_image` writes pixels as the
extension says, converting what the format cannot hold with a warning; 16-bit colour PNG and TIFF go
through `srfeat.data.png16` and `.tiff16`, the others through PIL, every write checked (`save_pil_image`)."""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from srfeat.data import orientation, png16, tiff16
from srfeat.data.colour_profiles import is_rgb_profile
from srfeat.files import disk_full_named, move_into_place, writing_temporary
from srfeat.library_warnings import WARNINGS_LOCK

logger = logging.getLogger("srfeat.data.io")  # the writer's messages keep the logger they always had
# The warnings whose advice is to name the output file otherwise (their first argument: the file), named so that
# the web page, whose user names no output file, can word its own (`srfeat.web.worker`).
SIXTEEN_BITS_CUT = "%s: %s cannot hold these 16-bit pixels; writing 8 bits (use .png to keep 16)"  # and the format
WEBP_GREY_AS_RGB = "%s: WebP has no grey mode; writing the grey as RGB (use .png to keep one channel)"
# The formats `write_image` writes 16-bit pixels in; the others get 8 bits (`SIXTEEN_BITS_CUT`).
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
# The format `write_image` keeps float grey pixels in (32-bit, mode F); the others get 16 or 8 bits of them.
FLOAT_GREY_FORMAT = "TIFF"


def write_png(path: str | os.PathLike[str], array: np.ndarray, compress_level: int = 6) -> None:
    """Write an HxW or HxWxC (C = 1, 3, 4) uint8 array as PNG, creating the folder."""
    path = Path(path)
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=compress_level)


def array_to_pil(array: np.ndarray) -> Image.Image:
    """HxW or HxWxC uint8 (C = 1..4: L, LA, RGB, RGBA), HxW(x1) uint16 (I;16) or float (F) -> PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if np.issubdtype(array.dtype, np.floating):
        if array.ndim != 2:
            raise ValueError(f"PIL holds float images only as gray (mode F), got shape {array.shape}")
        return Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("PIL holds 16-bit images only as gray; write 16-bit colour with write_image")
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] > 4):
        raise ValueError(f"expected HxW or HxWxC (C <= 4) uint8/uint16 pixels, got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def stored_to_pil(array: np.ndarray, icc_profile: bytes | None, exif: bytes | None) -> Image.Image:
    """HxWxC pixels as stored (`srfeat.data.io.RawImage`'s, uint8 or uint16) -> the PIL image PIL gives of such a
    file: 16-bit colour or grey and alpha, which PIL holds only with 8 bits, to the nearest 8-bit values; the ICC
    profile and the EXIF block in its `info`, where PIL puts a file's."""
    if array.dtype == np.uint16 and array.shape[2] > 1:
        array = _uint16_to_uint8(array)
    image = array_to_pil(array)
    image.info.update({key: value for key, value in (("icc_profile", icc_profile), ("exif", exif)) if value})
    return image


# Output formats by extension; `write_image` converts what a format cannot hold.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jfif": "JPEG",  # a JPEG's other names (Windows saves web photos so): --ext auto keeps them JPEGs
    ".jpe": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "PNG": {"compress_level": 6},
    "JPEG": {"quality": 95, "subsampling": 0},  # 4:4:4: an upscaled image's detail is in colour too
    "WEBP": {"quality": 95, "method": 4},
    "TIFF": {"compression": "tiff_lzw"},
    "BMP": {},
}


def _uint16_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit pixels to the nearest 8-bit ones, a band of rows at a time: the whole image in float64
    is four times its size (384 MB for a 4000x4000 RGB result), twice over."""
    output = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], 64):
        output[start : start + 64] = np.rint(array[start : start + 64].astype(np.float64) / 257.0)
    return output


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    replace: bool = True,
    *,
    command_line: bool = False,
) -> None:
    """Write HxW or HxWxC (C = 1..4) uint8/uint16 (any byte order) or float ([0, 1]) pixels as the extension says.

    16-bit is kept in PNG and TIFF (gray and colour); other formats get 8 bits. Float gray is kept
    in TIFF (mode F); PNG gets 16 bits of it, other formats 8. JPEG and BMP drop alpha, WebP makes
    gray RGB (leaving out a gray ICC profile). Each change is logged as a warning; every layout can
    be written in every format. The ICC profile and EXIF block are embedded where the format allows.
    The file appears whole or not at all (written to a temporary name, then renamed), and its folder
    is created. With `replace` False an existing file is kept, even one that appeared while this one
    was written (`srfeat.files.OutputExistsError`, naming replace=True; `command_line`: --overwrite).
    """
    path = Path(path)
    image_format = FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"unknown image extension {path.suffix!r}: use one of {', '.join(sorted(FORMATS))}")
    if array.ndim == 2:
        array = array[..., None]
    if not array.dtype.isnative:  # big-endian pixels (`>u2`, as numpy reads them from a PPM or FITS file)
        array = array.astype(array.dtype.newbyteorder("="))
    channels = array.shape[2]
    if image_format in ("JPEG", "BMP") and channels in (2, 4):
        # BMP: PIL cannot write gray + alpha, and the fourth byte of the 32-bit BMP it writes for
        # RGBA is one that readers (PIL's own included) ignore: the alpha would be lost unsaid.
        logger.warning(
            "%s: %s has no alpha channel; the alpha is dropped (use .png or .webp to keep it)", path, image_format
        )
        array, channels = array[..., : channels - 1], channels - 1
    if image_format == "WEBP" and channels in (1, 2):
        logger.warning(WEBP_GREY_AS_RGB, path)
        if icc_profile and not is_rgb_profile(icc_profile):  # a grey one: viewers would read RGB through it
            logger.warning("%s: the grey colour profile cannot describe RGB pixels; it is left out", path)
            icc_profile = None
    sixteen_bit_ok = image_format in SIXTEEN_BIT_FORMATS
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(array, 0.0, 1.0)  # a copy, changed in place from here: the caller's array is kept
        if image_format == FLOAT_GREY_FORMAT and channels == 1:
            array = array.astype(np.float32, copy=False)  # mode F
        else:
            bits = 16 if sixteen_bit_ok else 8
            logger.warning(
                "%s: float pixels are kept only in a gray TIFF; writing %s with %d bits per channel",
                path,
                image_format,
                bits,
            )
            array = np.rint(np.multiply(array, 65535.0 if bits == 16 else 255.0, out=array), out=array)
            array = array.astype(np.uint16 if bits == 16 else np.uint8)
    if array.dtype == np.uint16 and not sixteen_bit_ok:
        logger.warning(SIXTEEN_BITS_CUT, path, image_format)
        array = _uint16_to_uint8(array)
    # the folder made (and removed again if the write fails), a stale temporary (a run killed while writing this
    # file) removed; a live writer's kept
    with disk_full_named(path), writing_temporary(path) as temporary:  # a full disk: one line naming the file
        if array.dtype == np.uint16 and channels > 1 and image_format == "TIFF":
            if exif:  # tifffile writes no EXIF directory
                logger.warning("%s: a 16-bit colour TIFF is written without the EXIF data (.png keeps it)", path)
            tiff16.write_tiff16(temporary, array, icc_profile=icc_profile)
        elif array.dtype == np.uint16 and channels > 1:
            png16.write_png16(temporary, array, icc_profile=icc_profile, exif=exif)
        else:
            options = dict(_SAVE_OPTIONS[image_format])
            if icc_profile and image_format != "BMP":
                options["icc_profile"] = icc_profile
            if image_format == "TIFF" and exif:
                with WARNINGS_LOCK, warnings.catch_warnings():  # a damaged block was named when it was read
                    warnings.simplefilter("ignore")
                    exif, options["compression"] = orientation.exif_for_tiff(exif)  # its tags go over the TIFF's
            if exif and image_format != "BMP" and orientation.exif_fits(exif, image_format, path):
                options["exif"] = exif
            save_pil_image(array_to_pil(array), temporary, image_format, options)
        move_into_place(temporary, path, replace, command_line=command_line)


class WritesThroughPython(io.RawIOBase):
    """An open file that PIL writes through `write`, not through its descriptor: given a path, or a
    file with a descriptor, PIL's C writer takes a short write (on a full disk, the part that fits)
    for a whole one, and a JPEG came out cut short, with no error. Python's `write` raises instead."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # pyright: ignore[reportIncompatibleMethodOverride]  # bytes-like
        return self._file.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def save_pil_image(image: Image.Image, path: Path, image_format: str, options: dict[str, Any]) -> None:
    """`image.save` into the file `path` (a temporary), every write checked (`WritesThroughPython`).

    A compressed TIFF is written by libtiff through the file's descriptor instead (it checks its own
    writes; through Python's it would hold the whole file in memory), but a failed write comes out of it
    as "encoder error -2" alone: it is then written again through Python's writes, whose error says why
    (a full disk, a file size limit), or which succeed where the failure has passed.
    """
    if image_format == "TIFF" and options.get("compression", "raw") != "raw":
        try:
            # Opened here, so that PIL gives libtiff a descriptor and no name: libtiff's name must be
            # UTF-8, and `.caf\xe9.tif.PID.tmp` (a Latin-1 name) was a UnicodeEncodeError traceback.
            with open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666), "w+b") as file:
                image.save(file, format=image_format, **options)
            return
        except OSError as error:
            if error.errno is not None or not str(error).startswith("encoder error"):
                raise
    with open(path, "wb") as file:
        through_python: BinaryIO = WritesThroughPython(file)  # pyright: ignore[reportAssignmentType]  # PIL uses write/seek/tell
        image.save(through_python, format=image_format, **options)
