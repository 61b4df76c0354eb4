"""EXIF orientation and the EXIF block (`srfeat.data.io`): how the pixels srfeat decodes itself are
turned upright, a TIFF that PIL turns itself opened so that it can, a damaged block dropped rather
than the picture, and the block written back without the tag, in the form each output format takes."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin

from srfeat.data.colour_profiles import open_image_data, open_image_file

__all__ = [
    "EXIF_DAMAGE",
    "ORIENTATIONS",
    "exif_fits",
    "exif_for_tiff",
    "exif_orientation",
    "exif_to_write",
    "exif_upright",
    "open_unmapped",
    "tiff_exif",
    "tiff_file_exif",
    "upright",
    "without_orientation",
]

logger = logging.getLogger(__name__)


# What PIL's `getexif` raises for an EXIF block that is not even TIFF-structured.
EXIF_DAMAGE = (SyntaxError, ValueError, OSError, struct.error)


def exif_upright(image: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    """`ImageOps.exif_transpose`, but a damaged EXIF block is no orientation: it is dropped with a
    warning and the picture read as stored. It refused the picture (a PNG's, a WebP's), or failed
    with a traceback that ended the whole `srfeat upscale` run."""
    try:
        return ImageOps.exif_transpose(image)
    except EXIF_DAMAGE as error:
        logger.warning("%s: its EXIF block is damaged (%s); it is dropped", path, error)
        image.info.pop("exif", None)  # so that the copy made of it has none to read again
        return image


def exif_to_write(image: Image.Image, path: str | os.PathLike[str]) -> bytes | None:
    """`without_orientation` of a decoded image's EXIF block; a damaged one (read by PIL only now,
    as for JPEG) is dropped with a warning, as in `exif_upright`."""
    try:
        return without_orientation(image.getexif(), image.info.get("exif"))
    except EXIF_DAMAGE as error:
        logger.warning("%s: its EXIF block is damaged (%s); it is dropped", path, error)
        return None


def without_orientation(exif: Image.Exif, block: bytes | None) -> bytes | None:
    """The EXIF block to write: PIL's `exif_transpose` drops the orientation it applies, but keeps
    one it ignores (text, 0, 9...), which a viewer might still act on; the pixels are as they are
    meant to be seen, so that one goes too. A block without the tag is kept byte for byte."""
    if not block or 0x0112 not in exif:
        return block
    exif.pop(0x0112)
    return exif.tobytes() if len(exif) else None


# TIFF tags that say how a TIFF's pixels are stored (size, samples, compression, strips...). An EXIF
# block may carry some (a phone's JPEG its own width and height); PIL writes an EXIF block's tags into
# a TIFF it saves over the real ones, so a 4x output took the input's width and read as stripes.
TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 338, 339, 530, 532}
)


# The most EXIF data a JPEG's APP1 segment holds (PIL's JpegImagePlugin.MAX_BYTES_IN_MARKER).
JPEG_EXIF_BYTES = 65533


def exif_fits(block: bytes, image_format: str, path: str | os.PathLike[str]) -> bool:
    """Whether `block` can be written in `image_format`; a JPEG's is at most 64 kB (a PNG's, WebP's or
    TIFF's may be larger: a big thumbnail or maker note), so there it is left out with a warning:
    PIL's ValueError ended the whole run with a traceback."""
    if image_format != "JPEG" or len(block) <= JPEG_EXIF_BYTES:
        return True
    logger.warning("%s: the EXIF data (%d bytes) is too large for a JPEG (64 kB); it is left out", path, len(block))
    return False


# EXIF tags that point to a directory of their own: Exif (exposure, date taken...), GPS, interoperability.
SUB_DIRECTORY_TAGS = frozenset({0x8769, 0x8825, 0xA005})


def exif_for_tiff(block: bytes) -> tuple[bytes | None, str]:
    """The EXIF block to write into a TIFF, and the TIFF's compression.

    The block goes without `TIFF_LAYOUT_TAGS`, and as PIL reads it (PIL writes a TIFF's tags from
    what it reads of the block anyway: a damaged one would be read, and complained of, again). With
    a sub-directory (any camera's photo has the Exif one) PIL's compressed (libtiff) TIFF writer
    fails ("Error setting from dictionary", a traceback that ended the whole run): such a TIFF is
    written uncompressed, keeping the photo's data; others with LZW.
    """
    exif = Image.Exif()
    try:
        exif.load(block)
    except EXIF_DAMAGE:  # not even TIFF-structured (a caller's own block): nothing PIL could write of it
        return None, "tiff_lzw"
    for tag in TIFF_LAYOUT_TAGS:
        exif.pop(tag, None)
    compression = "raw" if SUB_DIRECTORY_TAGS & set(exif) else "tiff_lzw"
    return (exif.tobytes() if len(exif) else None), compression


# A TIFF's EXIF: the tags of its first directory that describe the picture (camera maker and model, date, artist,
# copyright) and its Exif and GPS directories. Its other tags say how its pixels are stored, or are data of their own
# (ICC profile, XMP, GeoTIFF's place of each pixel, which a result of another size does not keep); Software names the
# program that wrote the input (tifffile writes it into every file), not the result's, and ImageDescription is where
# TIFF writers keep their own metadata (tifffile's shape, ImageJ's, OME-XML), of the input's layout.
TIFF_EXIF_TAGS = frozenset({0x010F, 0x0110, 0x0132, 0x013B, 0x8298, 0x8769, 0x8825})
# What reading a hostile TIFF's EXIF tags raises besides `EXIF_DAMAGE` (a directory's pointer of the wrong type).
_TIFF_EXIF_DAMAGE = (*EXIF_DAMAGE, TypeError, KeyError, IndexError)


def tiff_exif(image: Image.Image, path: str | os.PathLike[str]) -> bytes | None:
    """The EXIF block of an opened TIFF (`TIFF_EXIF_TAGS`), to write as a JPEG's or PNG's is; None if it has none.
    PIL gives a TIFF's EXIF as its tags only (`getexif`), no block in `info`: its camera, date and GPS were not
    carried into the result. A damaged one is dropped with a warning, as in `exif_upright`, not the picture."""
    try:
        tags = image.getexif()
        exif = Image.Exif()
        for tag in TIFF_EXIF_TAGS & set(tags):
            if tag in SUB_DIRECTORY_TAGS:
                directory = dict(tags.get_ifd(tag))  # {} where PIL found none there (with its warning)
                directory.pop(0xA005, None)  # where the interoperability directory lies in the input, not the output
                if directory:
                    exif[tag] = directory
            else:
                exif[tag] = tags[tag]
        return exif.tobytes() if len(exif) else None
    except _TIFF_EXIF_DAMAGE as error:
        logger.warning("%s: its EXIF block is damaged (%s); it is dropped", path, error)
        return None


def tiff_file_exif(path: str | os.PathLike[str]) -> bytes | None:
    """`tiff_exif` of the TIFF at `path`, whose pixels tifffile decodes (16-bit colour, a sparse file); None where PIL
    does not parse its tags (16-bit grey and alpha). Its plugin is opened as is: `Image.open`'s pixel-limit check
    would say again what the caller's said."""
    try:
        with TiffImagePlugin.TiffImageFile(path) as image:
            return tiff_exif(image, path)
    except _TIFF_EXIF_DAMAGE:  # PIL does not open it: its pixels are read without PIL, there is nothing to keep
        return None


# EXIF orientation -> (clockwise quarter turns of np.rot90's k = -turns, mirror first), as PIL's
# `ImageOps.exif_transpose`: 5 is the transpose (row r of the stored image is column r of the
# upright one), 7 the transverse; mirrored, those are 3 and 1 clockwise turns.
ORIENTATIONS = {2: (0, True), 3: (2, False), 4: (2, True), 5: (3, True), 6: (1, False), 7: (1, True), 8: (3, False)}


def exif_orientation(exif: Image.Exif) -> int:
    """The EXIF orientation, 1 (as stored) when absent or invalid (text, 0, 9...), as PIL treats JPEG's."""
    value = exif.get(0x0112, 1)
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> upright, by the EXIF/TIFF orientation value."""
    turns, mirror = ORIENTATIONS.get(orientation, (0, False))
    if mirror:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, k=-turns))


def open_unmapped(path: Path) -> Image.Image:
    """`open_image_file`, but a TIFF that PIL turns upright as it loads by a quarter turn (orientation
    5 to 8) is opened from its bytes: from a path PIL memory-maps an uncompressed one-strip grey,
    16-bit grey or RGBA file with the turned size, which scrambles the pixels into stripes."""
    image = open_image_file(path)
    turned = image.format == "TIFF" and getattr(image, "tag_v2", {}).get(0x0112) in (5, 6, 7, 8)
    tiles = getattr(image, "tile", [])  # what PIL maps: one uncompressed strip (another is decoded right)
    if turned and len(tiles) == 1 and tiles[0][0] == "raw":
        image.close()
        return open_image_data(path.read_bytes(), str(path), warn=False)  # the first opening named its profile
    return image
