"""Reading and writing image files.

Everything that opens an image goes through `open_image`, so every caller gets the same
behaviour: the whole file is decoded up front (a truncated file fails here, not later deep
inside a data loader), EXIF orientation is applied (a portrait photo from a phone stays
upright), and any failure becomes an `ImageReadError` that names the file.

`read_image` gives the 8-bit RGB array that the networks and the evaluation protocol use;
`read_raw_image` gives the pixels as stored (bit depth, channels, ICC profile, EXIF) for
callers that must write them back faithfully, and `write_image` (`srfeat.data.image_writing`,
importable from here too) writes them so: 16-bit colour
PNG, TIFF and PPM, which PIL reads only as 8-bit, go through `srfeat.data.png16`, `.tiff16` and
`.ppm16`. Of an animated file (GIF, WebP, AVIF) the first frame is read, and of a multi-page TIFF
the first page, with a warning. Float (mode F) images are read as intensities in [0, 1]: NaN,
inf and values outside that range are refused in one line. What PIL and tifffile report while a
file is read (PIL's `warnings`, tifffile's log records) comes out as one warning line each.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from srfeat.data import avif_check, gif_check, jpeg_check, orientation, png16, png_check, ppm16, tiff16, tiff_samples
from srfeat.data.colour_profiles import (
    cmyk_to_srgb,
    is_cmyk_profile,
    open_image_file,
    profile_for_pixels,
)
from srfeat.data.image_writing import (
    FORMATS,
    _uint16_to_uint8,  # noqa: F401  (tests/test_output_path.py)
    array_to_pil,
    stored_to_pil,
    write_image,
    write_png,
)
from srfeat.data.tiff_data_check import refuse_missing_data, refuse_unread_sparse
from srfeat.data.unidentified import read_failure, unidentified_error, zero_size_error
from srfeat.errors import ImageReadError, InvalidImageError
from srfeat.library_warnings import one_line_messages
from srfeat.path_checks import broken_link, broken_link_reason, special_file_kind

logger = logging.getLogger(__name__)
# The warning for a 16-bit colour TIFF read with 8 bits (its file, its compression), named so that the web page,
# whose user cannot install a package on the server, can word its own (`srfeat.web.worker`).
SIXTEEN_BIT_TIFF_READ_AS_8 = (
    "%s: a 16-bit colour TIFF compressed with %s: reading it with 8 bits per channel (pip install imagecodecs to keep "
    "all 16)"
)

# The writing names (`srfeat.data.image_writing`'s) stay importable from here, where callers have them.
__all__ = [
    "DECODE_ERRORS",
    "FLOAT_PIXEL_SLACK",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "PathLike",
    "RawImage",
    "array_to_pil",
    "check_float_pixels",
    "has_alpha",
    "image_size",
    "list_images",
    "open_image",
    "pil_to_array",
    "read_image",
    "read_image_noting_losses",
    "read_raw_image",
    "to_rgb_uint8",
    "warn_first_only",
    "write_image",
    "write_png",
]

# What folder scans take as images: the formats PIL reads that photos come in.
_PHOTO_EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".webp", ".tif", ".tiff"}
IMAGE_EXTENSIONS = frozenset(_PHOTO_EXTENSIONS | {".gif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"})

PathLike = str | os.PathLike[str]

# What PIL's readers raise for a damaged or hostile file: OSError (not an image, truncated data),
# SyntaxError and ValueError (malformed headers), and, from fields some readers do not check, TypeError
# (a TIFF tag of several values where one belongs), RuntimeError (the AVIF decoder), EOFError,
# IndexError, KeyError, struct.error, ZeroDivisionError and OverflowError (a TIFF strip at an offset no
# file has): those ended a whole run with a traceback.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, TypeError, RuntimeError, EOFError, IndexError, KeyError)
DECODE_ERRORS = (*_DECODE_ERRORS, ZeroDivisionError, OverflowError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class RawImage:
    """An image's pixels as stored in its file.

    `array` is HxWxC with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), dtype uint8,
    uint16 (16-bit files) or float32 in [0, 1] (gray float files, PIL mode F); `mode` is the PIL
    mode it was decoded from (`"L"`, `"I;16"`, `"RGBA"`, `"F"`, ...; `"RGB;16"` for 16-bit
    colour PNG); `icc_profile` is the embedded colour profile and `exif` the EXIF block
    (orientation already applied and removed), if any.
    """

    array: np.ndarray
    mode: str
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def channels(self) -> int:
        return int(self.array.shape[2])

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)


def list_images(folder: PathLike) -> list[Path]:
    """Every regular, non-hidden file of `folder` (not recursive), sorted by name.

    Extensions are not trusted either way: a file that is not an image is reported by name
    when it fails to open, rather than silently ignored, and a PNG named `.jpg` still works.
    A symbolic link that leads nowhere (broken, or a loop), a pipe, a socket or a device (or a link to
    one) is skipped with a warning naming it and what it is: they were left out without a word.
    """
    folder = Path(folder)
    try:
        kind = "folder" if folder.is_dir() else "file" if folder.exists() else None
    except OSError as error:  # a name longer than the file system takes (Errno 36): was a traceback
        raise ImageReadError(f"cannot read image folder {folder}: {error.strerror or error}") from error
    if kind != "folder":
        give = "give a folder of PNG/JPEG/BMP/WebP/TIFF images"
        if reason := broken_link(folder):
            raise ImageReadError(f"image folder {folder}: {reason} ({give})")
        problem = f"is {special_file_kind(folder) or 'a file'}, not a folder" if kind else "not found"  # a pipe too
        raise ImageReadError(f"image folder {problem}: {folder} ({give})")
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file():
            files.append(path)
        elif path.is_symlink() and not path.exists():
            logger.warning("skipped %s: %s", path, broken_link_reason(path))
        elif (kind := special_file_kind(path)) and kind != "a folder":  # subfolders are not searched
            # never opened: a pipe's read waits for a writer, a device's may never end
            logger.warning("skipped %s: it is %s, not an image file", path, kind)
    return files


def warn_first_only(path: Path, count: int, image_format: str | None) -> None:
    """The warning for a file of several pictures, of which the first is read."""
    if count > 1:
        what = {"TIFF": "pages", "MPO": "pictures (a multi-picture JPEG)"}.get(image_format or "", "frames (animated)")
        logger.warning("%s has %d %s: only the first is read", path, count, what)


def open_image(path: PathLike) -> Image.Image:
    """Open and fully decode an image file, EXIF orientation applied. A sparse TIFF (`read_raw_image`) is read by
    tifffile, its empty areas as zeros, where PIL read the file's first bytes into them (or failed)."""
    with one_line_messages(path):
        check_image_file(Path(path))
        info = tiff16.tiff_info(path)
        refuse_missing_data(Path(path), info)
        refuse_unread_sparse(Path(path), info)
        if info is not None and info.empty_strips:
            raw = _read_tiff_as_stored(Path(path), info)
            return stored_to_pil(raw.array, raw.icc_profile, raw.exif)
        return _open_image(Path(path))


def check_image_file(path: Path) -> None:
    """`ImageReadError` naming what is at `path` when it is no image file to read, before it is opened: a
    pipe's open waited forever for a writer, and a folder, a link loop or an empty file were "image not
    found" or PIL's "cannot identify image file"."""
    if not path.is_file():
        if path.is_symlink() and not path.exists():
            problem = broken_link_reason(path)
        elif kind := special_file_kind(path):  # "a named pipe (FIFO)", "a folder", ...
            problem = f"it is {kind}, not an image file"
        else:
            raise ImageReadError(f"image not found: {path}")
        raise ImageReadError(f"cannot read image {path}: {problem}", "name an image file")
    if path.stat().st_size == 0:
        raise zero_size_error(path)
    # before the claim is allocated (or, a GIF's frame placed far outside its screen, upscaled)
    if problem := (
        png_check.chunk_past_end(path) or avif_check.size_mismatch(path) or gif_check.frame_outside_screen(path)
    ):
        raise ImageReadError(f"cannot read image {path}: {problem}", ImageReadError.SKIP_OR_REPLACE)


def _open_image(path: Path) -> Image.Image:
    check_image_file(path)
    try:
        with orientation.open_unmapped(path) as image:
            warn_first_only(path, getattr(image, "n_frames", 1), image.format)
            if image.format == "GIF" and (covers := gif_check.first_frame_covers_little(path)):
                logger.warning("%s: %s", path, covers)
            image.load()  # decode now: truncated files fail here
            # data short of its header's size: PIL gives zeros past a PNG's end, libjpeg flat grey past a JPEG's
            short = (
                png_check.image_data_problem(path) if image.format == "PNG" else jpeg_check.short_scan_data(path, image)
            )
            out_of_range = tiff_samples.out_of_range_error(path, image)
            oriented = orientation.exif_upright(image, path)
            decoded = oriented if oriented is not image else image.copy()
            if image.format == "TIFF" and (exif := orientation.tiff_exif(image, path)):  # as a JPEG's is: kept
                decoded.info["exif"] = exif
    except DECODE_ERRORS as error:
        if isinstance(error, UnidentifiedImageError):  # text named .png, float RGB TIFF...: said as what it is
            raise unidentified_error(path) from error
        raise read_failure(path, error) from error
    if short is not None:
        raise ImageReadError(f"cannot read image {path}: {short} (damaged?)", ImageReadError.SKIP_OR_REPLACE)
    if out_of_range is not None:
        raise out_of_range
    return decoded


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels (EXIF rotation ignored).

    A 16-bit grey + alpha TIFF (what `write_image` makes of one) PIL does not open, but
    `read_raw_image` reads: its size comes from its tags, so that a dataset scan takes it too.
    """
    path = Path(path)
    check_image_file(path)
    try:
        with one_line_messages(path), open_image_file(path, warn=False) as image:  # the read names the profile
            width, height = image.size
    except DECODE_ERRORS as error:
        with one_line_messages(path):  # tifffile's complaints too are only the error line's when it fails
            info = tiff16.tiff16_info(path)
            if info is None and isinstance(error, UnidentifiedImageError):
                raise unidentified_error(path) from error
            if info is None:
                raise read_failure(path, error) from error
        height, width = info.height, info.width
    return height, width


# Float pixels a hair outside [0, 1] are the rounding of the program that made them (a file's, or the
# caller's own processing of an array passed to the API), and are clamped like the output; beyond this
# they are another convention (0..255, [-1, 1]), which clamping would turn into a white or black image
# without a word. One rule for files and arrays: `srfeat.inference.upscaler` takes it from here.
FLOAT_PIXEL_SLACK = 1 / 255


def check_float_pixels(array: np.ndarray) -> None:
    """Float pixels must be finite intensities in [0, 1]; anything else is refused, with what was found.

    There is no safe guess for other ranges: 0..255 data (a common slip) would come out white,
    [-1, 1] data half black, and one NaN turns into a black pixel or, upscaled, spreads.
    """
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise InvalidImageError(
            f"{bad:,} of its {array.size:,} float pixel values are not finite (NaN or inf); "
            "replace them (e.g. numpy.nan_to_num) and save it again"
        )
    if array.size and (array.min() < -FLOAT_PIXEL_SLACK or array.max() > 1 + FLOAT_PIXEL_SLACK):
        raise InvalidImageError(
            f"its float pixels are in [{float(array.min()):g}, {float(array.max()):g}], not in [0, 1] as srfeat reads "
            "float images; scale them to [0, 1] (divide 0..255 data by 255) or save it as 8- or 16-bit"
        )


def _colour_keyed(image: Image.Image) -> bool:
    """Whether `image` is see-through by a tRNS colour (or index), or through an RGBA palette."""
    keyed = image.mode in ("P", "RGB", "L", "1") and "transparency" in image.info
    return keyed or (image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA")  # quantize()


def has_alpha(image: Image.Image) -> bool:
    """Whether the pixels read from the opened (not yet decoded) `image` carry an alpha channel, as
    `read_raw_image` gives them: an alpha of its mode, or a see-through colour it is expanded to."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    if image.mode.startswith("I;16") or image.mode == "I":  # a 16-bit grey PNG's see-through level
        return isinstance(image.info.get("transparency"), int)
    return _colour_keyed(image)


def _pixels(image: Image.Image, source: str | Path = "the image") -> np.ndarray:
    """The pixels of a decoded PIL image as HxWxC uint8/uint16 (float32 in [0, 1] for mode F), channels as
    stored; CMYK through its own colour profile, if it has one (`srfeat.data.colour_profiles`)."""
    mode = image.mode
    if mode == "CMYK":
        image, _ = cmyk_to_srgb(image, image.info.get("icc_profile"), Path(source))
        mode = image.mode
    if mode == "F":  # 32-bit float gray (TIFF): intensities in [0, 1]
        array = np.array(image, dtype=np.float32)
        check_float_pixels(array)
        return array[..., None]
    keyed = _colour_keyed(image)
    if keyed or mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        # Palette, bilevel, colour-keyed and other colour spaces: expand to the plain equivalent.
        has_alpha = mode in ("PA", "RGBa", "La") or keyed
        target = ("LA" if mode in ("La", "L", "1") else "RGBA") if has_alpha else ("L" if mode == "1" else "RGB")
        image = image.convert(target)
        mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PIL reads 16-bit PNG/TIFF gray as I;16 or I).
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise InvalidImageError(
                f"its {mode} pixels are in [{array.min()}, {array.max()}], outside 16 bits (0..65535); "
                "convert it to 8- or 16-bit"
            )
        grey, key = array.astype(np.uint16)[..., None], image.info.get("transparency")
        if isinstance(key, int):  # a 16-bit grey PNG's see-through level (PIL's convert to LA ignores it)
            return np.concatenate([grey, np.where(grey == key, 0, 65535).astype(np.uint16)], axis=2)
        return grey
    array = np.array(image)  # a writable copy (np.asarray of a PIL image is read-only)
    if array.ndim == 2:
        array = array[..., None]
    return np.ascontiguousarray(array)


def read_raw_image(path: PathLike) -> RawImage:
    """The image as stored: HxWxC uint8/uint16 (float32 for mode F) pixels, PIL mode, ICC profile and EXIF."""
    with one_line_messages(path):
        raw = _read_raw_image(Path(path))
        return replace(raw, icc_profile=profile_for_pixels(raw.icc_profile, raw.channels, path))  # all formats


def _read_raw_image(path: Path) -> RawImage:
    check_image_file(path)  # before the 16-bit readers open it
    if png16.png16_channels(path) > 1:  # 16-bit gray PIL reads right; colour it cuts to 8 bits
        return _read_color_png16(path)
    if (ppm := ppm16.ppm16_header(path)) is not None:  # as a 16-bit colour PPM (dcraw -4)
        _check_pixel_count(path, ppm.width, ppm.height)
        return RawImage(array=ppm16.read_ppm16(path, ppm), mode="RGB;16")
    info = tiff16.tiff_info(path)
    refuse_missing_data(path, info)
    if info is not None and info.decodable and (info.sixteen_bit_colour or (info.empty_strips and info.plain_layout)):
        return _read_tiff_as_stored(path, info)  # sparse: PIL read the file's first bytes as the empty areas' pixels
    refuse_unread_sparse(path, info)
    if info is not None and info.sixteen_bit_colour:
        logger.warning(SIXTEEN_BIT_TIFF_READ_AS_8, path, info.compression)
    image = _open_image(path)
    try:
        array = _pixels(image, path)
    except ValueError as error:  # InvalidImageError's say what to do
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    profile = image.info.get("icc_profile")
    if image.mode == "CMYK" and is_cmyk_profile(profile):
        profile = None  # the pixels were converted through it into sRGB
    return RawImage(
        array=array,
        mode=image.mode,
        icc_profile=profile,
        exif=orientation.exif_to_write(image, path),
    )


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    """PIL's decompression-bomb rule, for the files srfeat decodes itself: a warning above
    `Image.MAX_IMAGE_PIXELS`, an error above twice that; checked from the header, before decoding."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    if width * height > 2 * limit:
        raise ImageReadError(
            f"cannot read image {path}: {width}x{height} pixels is more than {2 * limit:,} (a decompression bomb?)",
            ImageReadError.SKIP_OR_REPLACE,
        )
    if width * height > limit:
        warnings.warn(
            f"Image size ({width * height} pixels) exceeds limit of {limit} pixels, "
            "could be decompression bomb DOS attack.",
            Image.DecompressionBombWarning,
            stacklevel=2,
        )


def _read_color_png16(path: Path) -> RawImage:
    # PIL would decode these to 8 bits; read them ourselves and apply EXIF as open_image does.
    try:
        width, height = png16.png16_size(path)
    except (OSError, ValueError) as error:
        raise read_failure(path, error) from error
    _check_pixel_count(path, width, height)
    try:
        decoded = png16.read_png16(path)  # inflates no more than the checked header's size needs
    except (OSError, ValueError) as error:
        raise read_failure(path, error) from error
    warn_first_only(path, decoded.frames, "PNG")
    exif = Image.Exif()
    try:
        exif.load(decoded.exif or b"")  # a damaged block is read as far as it goes, with PIL's warning
    except orientation.EXIF_DAMAGE as error:  # not even a TIFF header (or a short one): nothing to keep
        logger.warning("%s: its EXIF block is damaged (%s); it is dropped", path, error)
        exif = Image.Exif()
    array = orientation.upright(decoded.array, orientation.exif_orientation(exif))
    exif.pop(0x0112, None)
    mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[array.shape[2]]
    return RawImage(array=array, mode=mode, icc_profile=decoded.icc_profile, exif=exif.tobytes() if len(exif) else None)


def _read_tiff_as_stored(path: Path, info: tiff16.TiffInfo) -> RawImage:
    _check_pixel_count(path, info.width, info.height)  # from the tags, before decoding
    warn_first_only(path, info.pages, "TIFF")
    if info.strips and info.empty_strips == len(info.strips):  # legal, but for a photo almost surely zeroed tables
        logger.warning(
            "%s holds no pixel data: all %d of its strips or tiles are empty (a sparse file left blank, or its strip "
            "tables damaged?); it is read as all zeros",
            path,
            len(info.strips),
        )
    try:
        decoded = tiff16.read_tiff16(path)
    except Exception as error:  # tifffile raises its own types for damaged files
        raise read_failure(path, error) from error
    array = orientation.upright(
        decoded.array, decoded.orientation if decoded.orientation in orientation.ORIENTATIONS else 1
    )
    modes = ("I;16", "LA;16", "RGB;16", "RGBA;16") if array.dtype == np.uint16 else ("L", "LA", "RGB", "RGBA")
    return RawImage(
        array=array,
        mode=modes[array.shape[2] - 1],
        icc_profile=decoded.icc_profile,
        exif=orientation.tiff_file_exif(path),
    )


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """HxWxC uint8/uint16 (or float in [0, 1]) pixels (any of 1..4 channels) -> HxWx3 uint8 RGB, alpha dropped."""
    if array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"expected uint8, uint16 or float pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    if channels in (1, 2):
        return np.ascontiguousarray(np.repeat(array[..., :1], 3, axis=2))
    return np.ascontiguousarray(array[..., :3])


def read_image(path: PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (gray expanded, alpha dropped, 16-bit reduced to 8)."""
    return to_rgb_uint8(read_raw_image(path).array)


def read_image_noting_losses(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """`read_image`, and what it lost of the file, for callers that say so (`srfeat eval`, whose protocol
    scores 8-bit RGB): "alpha" (a pixel not opaque), "depth" (16-bit values 8 bits do not hold; float)."""
    raw = read_raw_image(path)
    array, colours, floating = raw.array, raw.channels - raw.has_alpha, np.issubdtype(raw.array.dtype, np.floating)
    opaque = 1.0 if floating else np.iinfo(array.dtype).max
    alpha = ["alpha"] if raw.has_alpha and bool((array[..., -1] != opaque).any()) else []
    depth = ["depth"] if floating or (array.dtype == np.uint16 and (array[..., :colours] % 257).any()) else []
    return to_rgb_uint8(array), alpha + depth


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as HxWxC uint8 (C = 1..4), uint16 (16-bit gray) or float32 in [0, 1] (mode F).

    Modes map as in the README's table: 1 -> L; P -> RGB (RGBA with transparency); PA, RGBa ->
    RGBA; La -> LA; CMYK, YCbCr, LAB, HSV, RGBX -> RGB; I and I;16* -> 16-bit gray; F -> float
    gray (refused unless finite and in [0, 1]).
    """
    return _pixels(image)
