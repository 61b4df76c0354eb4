"""16-bit colour TIFF files, which PIL decodes to 8 bits per channel: read and written with tifffile.

PIL keeps 16 bits only for gray TIFFs; an RGB(A) TIFF of 16 bits per sample comes out of it as
8-bit RGB. tifffile (which scikit-image and imageio build on) reads and writes these samples
as they are. Compression: tifffile decodes uncompressed and Deflate (zip) files by itself;
LZW, JPEG and others need the `imagecodecs` package, without which `tiff16_info` says so and
the caller falls back to PIL's 8 bits with a warning. Written files use Deflate, which every
TIFF reader decodes.

`tiff_info` reads the first page's tags of any TIFF, which PIL reads too (grey, 8-bit): `srfeat.data.tiff_data_check`
checks them against the data the file holds before either reader sets aside memory for the pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tifffile import TiffPage

__all__ = ["Tiff16", "TiffInfo", "read_tiff16", "tiff16_info", "tiff_info", "unread_layout", "write_tiff16"]

TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
ORIENTATION_TAG = 274
ICC_PROFILE_TAG = 34675


@dataclass(frozen=True)
class TiffInfo:
    """What the first page of a TIFF holds, from its tags (no pixels decoded)."""

    height: int
    width: int
    channels: int
    orientation: int
    decodable: bool  # False: its compression needs the imagecodecs package
    compression: str
    pages: int = 1
    bits_per_sample: int = 16
    chroma_block: int = 1  # pixels per chroma sample of subsampled YCbCr (4 for 2x2); 1 for every other layout
    sixteen_bit_colour: bool = False  # a layout `read_tiff16` reads (16-bit RGB(A), grey and alpha); PIL reads the rest
    # grey (and alpha) or RGB(A) of 8 or 16 bits: what `read_tiff16` gives as PIL's modes hold it (a sparse one's)
    plain_layout: bool = False
    strips: tuple[tuple[int, int], ...] = ()  # (offset, byte count) of each strip or tile
    strip_pixels: int = 0  # the most pixels one strip or tile covers (a tile's, or rows per strip times the width)
    rows_per_strip: int = 0  # of a TIFF in strips (0: in tiles), as many as the image has at most
    file_bytes: int = 0
    # The strips or tiles its size and layout need, in all its planes (one a sample where they are stored apart):
    # those its tags leave out tifffile reads as zeros, with a warning. 0: not known.
    strips_needed: int = 0
    planes: int = 1

    @property
    def data_end(self) -> int:
        """Where its last strip or tile ends, by their offsets and byte counts."""
        return max((offset + count for offset, count in self.strips), default=0)

    @property
    def stored_bytes(self) -> int:
        """What its strips or tiles hold, by their byte counts."""
        return sum(count for _, count in self.strips)

    @property
    def empty_strips(self) -> int:
        """Its strips or tiles of no data (a byte count of 0): a sparse TIFF's empty areas (GDAL writes them), which
        readers fill with zeros."""
        return sum(count == 0 for _, count in self.strips)

    @property
    def strip_bytes(self) -> int:
        """The most bytes one strip or tile decodes to (rows of under 8 bits padded to whole bytes; all of a pixel's
        samples, also where the planes are stored apart: an upper bound)."""
        return int(self.strip_pixels * self._samples * max(self.bits_per_sample, 8) // 8)

    @property
    def row_bytes(self) -> int:
        """The bytes one row of a strip decodes to (rows of under 8 bits padded to whole bytes)."""
        return int(self.width * self._samples * max(self.bits_per_sample, 8) // 8)

    @property
    def _samples(self) -> float:
        """Samples per pixel, a subsampled YCbCr pixel's share of its chroma samples counted."""
        return 1 + (self.channels - 1) / self.chroma_block

    @property
    def pixel_bytes(self) -> int:
        """The fewest bytes its pixels outside empty strips or tiles decode to (rows padded to whole bytes, tiles
        past the edges make more); an empty one is taken to cover as many pixels as one can."""
        pixels = max(0, self.height * self.width - self.empty_strips * self.strip_pixels)
        return int(pixels * self._samples * self.bits_per_sample // 8)


@dataclass(frozen=True)
class Tiff16:
    """Pixels (HxWxC uint16, as stored: EXIF orientation not applied) and the ICC profile."""

    array: np.ndarray
    icc_profile: bytes | None
    orientation: int


def _is_tiff(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(4) in TIFF_SIGNATURES
    except OSError:
        return False


def tiff_info(path: str | os.PathLike[str]) -> TiffInfo | None:
    """The first page's layout, from its tags, if the file is a TIFF tifffile parses; else None."""
    if not _is_tiff(path):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            try:
                tifffile.TIFF.DECOMPRESSORS[page.compression]
                decodable = True
            except KeyError:
                decodable = False
            subsampling = tuple(page.subsampling or (1, 1)) if page.photometric == tifffile.PHOTOMETRIC.YCBCR else ()
            return TiffInfo(
                height=int(page.imagelength),
                width=int(page.imagewidth),
                channels=int(page.samplesperpixel),
                orientation=_orientation(page),
                decodable=decodable,
                compression=tifffile.COMPRESSION(page.compression).name,
                pages=len(tiff.pages),
                bits_per_sample=int(page.bitspersample),
                chroma_block=int(np.prod(subsampling or (1,))),
                # CMYK, YCbCr, Lab, min-is-white...: PIL converts them (with 8 bits) or names the file
                sixteen_bit_colour=page.bitspersample == 16 and page.dtype == np.uint16 and _plain_layout(page),
                plain_layout=page.bitspersample in (8, 16)
                and page.dtype in (np.uint8, np.uint16)
                and (
                    _plain_layout(page)
                    or (page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.samplesperpixel == 1)
                ),
                strips=tuple(zip(map(int, page.dataoffsets), map(int, page.databytecounts), strict=False)),
                strip_pixels=_strip_pixels(page),
                rows_per_strip=0 if page.is_tiled else min(int(page.rowsperstrip), int(page.imagelength)),
                file_bytes=os.path.getsize(path),
                strips_needed=_strips_needed(page),
                planes=int(page.shaped[0]),
            )
    except Exception:  # noqa: BLE001  # tifffile raises many kinds for a damaged file (TypeError, for one)
        return None  # let PIL try, and name the file when it fails


def _strips_needed(page: TiffPage) -> int:
    """The strips or tiles the page's size and layout need, planes stored apart counted as tifffile reads them (its
    `shaped`: a PlanarConfiguration tag of a damaged value it reads as planes apart too); 0 where its rows per strip
    are none, and for a Zeiss LSM file (whose strips tifffile does not count either)."""
    if page.is_lsm:
        return 0
    depth, length, width = (max(1, int(side)) for side in (page.imagedepth, page.imagelength, page.imagewidth))
    if page.is_tiled:
        tile_depth, tile_length, tile_width = (
            max(1, int(side)) for side in (page.tiledepth, page.tilelength, page.tilewidth)
        )
        per_plane = -(-depth // tile_depth) * -(-length // tile_length) * -(-width // tile_width)
    elif page.rowsperstrip:
        per_plane = depth * -(-length // int(page.rowsperstrip))
    else:
        return 0
    return int(page.shaped[0]) * per_plane


def _strip_pixels(page: TiffPage) -> int:
    """The most pixels one of the page's tiles (as stored: whole, past the edges) or strips covers."""
    if page.is_tiled:
        return int(page.tilewidth) * int(page.tilelength) * max(1, int(page.tiledepth))
    return min(int(page.rowsperstrip), int(page.imagelength)) * int(page.imagewidth)


def tiff16_info(path: str | os.PathLike[str]) -> TiffInfo | None:
    """The first page's layout if it is a 16-bit TIFF with 2 to 4 samples per pixel (what `read_tiff16`
    reads); else None."""
    info = tiff_info(path)
    return info if info is not None and info.sixteen_bit_colour else None


def unread_layout(path: str | os.PathLike[str]) -> str | None:
    """The samples of a sound TIFF whose first page srfeat does not read, in words ("3 samples of
    32-bit float"): float other than 32-bit grey, more than 16 bits, more than 4 samples, signed 8- or 16-bit
    colour (PIL refuses it; signed grey it reads, `srfeat.data.io` checks its values). None for
    any other file (not a TIFF, a damaged one, or a layout srfeat reads)."""
    if not _is_tiff(path):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            kind, bits, samples = np.dtype(page.dtype).kind, int(page.bitspersample), int(page.samplesperpixel)
            if (
                page.imagewidth
                and page.imagelength
                and (
                    (kind == "f" and (bits, samples) != (32, 1))
                    or bits > 16
                    or samples > 4
                    or (kind, bits) == ("i", 8)
                    or (kind == "i" and samples > 1)
                )
            ):
                name = {"f": "float", "i": "signed integer", "u": "unsigned integer"}.get(kind, str(page.dtype))
                return f"{samples} sample(s) of {bits}-bit {name}"
    except Exception:  # noqa: BLE001  # as in tiff16_info: a damaged file is named as such by the caller
        return None
    return None


def _plain_layout(page: TiffPage) -> bool:
    """RGB (3 samples, or 4 with alpha) or gray and alpha: what `read_tiff16` returns as stored. A
    CMYK page's four inks read as RGBA were another picture, pure cyan a transparent red."""
    import tifffile

    photometric, samples = page.photometric, int(page.samplesperpixel)
    if photometric == tifffile.PHOTOMETRIC.RGB:
        return samples in (3, 4)
    return photometric == tifffile.PHOTOMETRIC.MINISBLACK and samples == 2


def _unpremultiply(array: np.ndarray) -> np.ndarray:
    """Colour samples premultiplied by the last (associated alpha) -> straight ones, in place, a
    band of rows at a time; fully transparent pixels stay 0."""
    opaque = float(np.iinfo(array.dtype).max)
    for start in range(0, array.shape[0], 64):
        band = array[start : start + 64]
        alpha = band[..., -1:].astype(np.float64)
        colour = band[..., :-1] * opaque
        np.divide(colour, alpha, out=colour, where=alpha > 0)
        band[..., :-1] = np.rint(np.clip(colour, 0, opaque))
    return array


def _orientation(page: TiffPage) -> int:
    """The page's Orientation tag; 1 (as stored) when absent or not a number (tifffile warns of an
    unknown value and keeps it; the caller ignores values outside 1..8)."""
    tag = page.tags.get(ORIENTATION_TAG)
    value = tag.value if tag is not None else 1
    return int(value) if isinstance(value, int) else 1


def read_tiff16(path: str | os.PathLike[str]) -> Tiff16:
    """Decode the first page of a 16-bit colour TIFF (check `tiff16_info` first), or of another plain layout
    (`TiffInfo.plain_layout`): a sparse one's empty strips or tiles come out as zeros, where PIL read the
    file's first bytes into them."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        # tifffile reads a page of one empty strip (offset 0, no bytes) from the file's first bytes: zeros
        array = page.asarray() if any(page.databytecounts) else np.zeros(page.shape, page.dtype)
        if page.axes.startswith("S"):  # planar configuration: one plane per sample
            array = np.moveaxis(array, 0, -1)
        icc = page.tags.get(ICC_PROFILE_TAG)
        array = np.ascontiguousarray(array.reshape(int(page.imagelength), int(page.imagewidth), -1))
        extra = tuple(page.extrasamples)[:1]
        if extra == (tifffile.EXTRASAMPLE.ASSOCALPHA,):  # premultiplied, as PIL's RGBa
            array = _unpremultiply(array)
        elif extra == (tifffile.EXTRASAMPLE.UNSPECIFIED,):  # not an alpha (PIL's RGBX, LX): left out, as PIL does
            array = np.ascontiguousarray(array[..., :-1])
        return Tiff16(
            array=array,
            icc_profile=bytes(icc.value) if icc is not None and isinstance(icc.value, bytes) else None,
            orientation=_orientation(page),
        )


def write_tiff16(path: str | os.PathLike[str], array: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write HxWxC (C = 2, 3, 4) uint16 pixels as a Deflate-compressed TIFF."""
    import tifffile

    if array.dtype != np.uint16 or array.ndim != 3 or not 2 <= array.shape[2] <= 4:
        raise ValueError(f"write_tiff16 expects HxWxC (C = 2..4) uint16 pixels, got {array.dtype} {array.shape}")
    photometric = "minisblack" if array.shape[2] == 2 else "rgb"
    extrasamples = ("unassalpha",) if array.shape[2] in (2, 4) else None
    extratags = [(ICC_PROFILE_TAG, 7, len(icc_profile), icc_profile, True)] if icc_profile else None
    tifffile.imwrite(
        path,
        array,
        photometric=photometric,
        extrasamples=extrasamples,
        compression="zlib",
        extratags=extratags,
        metadata=None,
    )
