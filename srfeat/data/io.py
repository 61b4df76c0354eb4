"""Reading and writing image files.

Everything that opens an image goes through `open_image`, so every caller gets the same
behaviour: the whole file is decoded up front (a truncated file fails here, not later deep
inside a data loader), EXIF orientation is applied (a portrait photo from a phone stays
upright), and any failure becomes an `ImageReadError` that names the file.

`read_image` gives the 8-bit RGB array that the networks and the evaluation protocol use;
`read_raw_image` gives the pixels as stored (bit depth, channels, ICC profile, EXIF) for
callers that must write them back faithfully, and `write_image` writes them so: 16-bit colour
PNG and TIFF, which PIL reads and writes only as 8-bit, go through `srfeat.data.png16` and
`srfeat.data.tiff16`. Of an animated file (GIF, WebP, AVIF) the first frame is read, with a
warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from srfeat.data import png16, tiff16
from srfeat.errors import ImageReadError
from srfeat.files import remove_stale_temporaries, temporary_path

logger = logging.getLogger(__name__)

# What folder scans take as images: the formats PIL reads that photos come in.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RawImage:
    """An image's pixels as stored in its file.

    `array` is HxWxC with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), dtype uint8 or
    uint16 (16-bit files); `mode` is the PIL mode it was decoded from (`"L"`, `"I;16"`,
    `"RGBA"`, ...; `"RGB;16"` for 16-bit colour PNG); `icc_profile` is the embedded colour
    profile and `exif` the EXIF block (orientation already applied and removed), if any.
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
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"image folder not found: {folder} (give a folder of PNG/JPEG/BMP/WebP/TIFF images)")
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def open_image(path: PathLike) -> Image.Image:
    """Open and fully decode an image file, EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                logger.warning("%s has %d frames (animated): only the first frame is read", path, frames)
            image.load()  # decode now: truncated files fail here
            oriented = ImageOps.exif_transpose(image)
            return oriented if oriented is not image else image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
        # data, SyntaxError/ValueError for some malformed headers.
        raise ImageReadError(f"cannot read image {path}: {error}; skip or replace this file") from error


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels (EXIF rotation ignored)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}; skip or replace this file") from error
    return height, width


def _pixels(image: Image.Image) -> np.ndarray:
    """The pixels of a decoded PIL image as HxWxC uint8/uint16, channels as stored."""
    mode = image.mode
    if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "F"):
        # Palette, bilevel and other colour spaces: expand to the plain equivalent.
        has_alpha = mode in ("PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
        target = ("LA" if mode == "La" else "RGBA") if has_alpha else ("L" if mode in ("1", "F") else "RGB")
        if mode == "F":
            array = np.asarray(image, dtype=np.float32)
            return np.clip(np.rint(array), 0, 255).astype(np.uint8)[..., None]
        image = image.convert(target)
        mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PIL reads 16-bit PNG/TIFF gray as I;16 or I).
        array = np.asarray(image).astype(np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"{mode} image with values outside 0..65535")
        return array.astype(np.uint16)[..., None]
    array = np.array(image)  # a writable copy (np.asarray of a PIL image is read-only)
    if array.ndim == 2:
        array = array[..., None]
    return np.ascontiguousarray(array)


def read_raw_image(path: PathLike) -> RawImage:
    """The image as stored: HxWxC uint8/uint16 pixels, PIL mode, ICC profile and EXIF."""
    if png16.png16_channels(path) > 1:  # 16-bit gray PIL reads right; colour it cuts to 8 bits
        return _read_color_png16(Path(path))
    info = tiff16.tiff16_info(path)
    if info is not None and info.decodable:
        return _read_color_tiff16(Path(path), info)
    if info is not None:
        logger.warning(
            "%s: a 16-bit colour TIFF compressed with %s: reading it with 8 bits per channel "
            "(pip install imagecodecs to keep all 16)",
            path,
            info.compression,
        )
    image = open_image(path)
    try:
        array = _pixels(image)
    except ValueError as error:
        raise ImageReadError(f"cannot read image {path}: {error}; convert it to 8- or 16-bit RGB") from error
    return RawImage(
        array=array, mode=image.mode, icc_profile=image.info.get("icc_profile"), exif=image.info.get("exif")
    )


# EXIF orientation -> (clockwise quarter turns of np.rot90's k = -turns, mirror first).
_ORIENTATIONS = {2: (0, True), 3: (2, False), 4: (2, True), 5: (1, True), 6: (1, False), 7: (3, True), 8: (3, False)}


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> upright, by the EXIF/TIFF orientation value."""
    turns, mirror = _ORIENTATIONS.get(orientation, (0, False))
    if mirror:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, k=-turns))


def _read_color_png16(path: Path) -> RawImage:
    # PIL would decode these to 8 bits; read them ourselves and apply EXIF as open_image does.
    try:
        decoded = png16.read_png16(path)
        with Image.open(path) as image:
            exif = image.getexif()
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"cannot read image {path}: {error}; skip or replace this file") from error
    array = _orient(decoded.array, int(exif.get(0x0112, 1)))
    exif.pop(0x0112, None)
    mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[array.shape[2]]
    return RawImage(array=array, mode=mode, icc_profile=decoded.icc_profile, exif=exif.tobytes() if len(exif) else None)


def _read_color_tiff16(path: Path, info: tiff16.Tiff16Info) -> RawImage:
    # The same pixel-count limit as PIL's, checked from the tags before decoding.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and info.height * info.width > 2 * limit:
        raise ImageReadError(
            f"cannot read image {path}: {info.width}x{info.height} pixels is more than {2 * limit:,} "
            "(a decompression bomb?); skip or replace this file"
        )
    try:
        decoded = tiff16.read_tiff16(path)
    except Exception as error:  # tifffile raises its own types for damaged files
        raise ImageReadError(f"cannot read image {path}: {error}; skip or replace this file") from error
    array = _orient(decoded.array, decoded.orientation)
    mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[array.shape[2]]
    return RawImage(array=array, mode=mode, icc_profile=decoded.icc_profile)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """HxWxC uint8/uint16 pixels (any of 1..4 channels) -> HxWx3 uint8 RGB, alpha dropped."""
    if array.dtype == np.uint16:
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    if channels in (1, 2):
        return np.ascontiguousarray(np.repeat(array[..., :1], 3, axis=2))
    return np.ascontiguousarray(array[..., :3])


def read_image(path: PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (gray expanded, alpha dropped, 16-bit reduced to 8)."""
    return to_rgb_uint8(read_raw_image(path).array)


def write_png(path: PathLike, array: np.ndarray, compress_level: int = 6) -> None:
    """Write an HxW or HxWxC (C = 1, 3, 4) uint8 array as PNG, creating the folder."""
    path = Path(path)
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=compress_level)


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as HxWxC uint8 (C = 1..4) or uint16 (16-bit gray), channels as stored."""
    return _pixels(image)


def array_to_pil(array: np.ndarray) -> Image.Image:
    """HxW or HxWxC uint8 (C = 1..4: L, LA, RGB, RGBA) or HxW(x1) uint16 (I;16) -> PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError("PIL holds 16-bit images only as gray; write 16-bit colour with write_image")
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] > 4):
        raise ValueError(f"expected HxW or HxWxC (C <= 4) uint8/uint16 pixels, got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


# Output formats by extension; `write_image` converts what a format cannot hold.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
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


def write_image(
    path: PathLike,
    array: np.ndarray,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write HxW or HxWxC (C = 1..4) uint8/uint16 pixels in the format of the file extension.

    16-bit is kept in PNG and TIFF (gray and colour); other formats get 8 bits. JPEG
    has no alpha channel: it is dropped (with a warning). The ICC profile and EXIF block are
    embedded where the format allows. The file appears whole or not at all (written to a
    temporary name, then renamed), and its folder is created.
    """
    path = Path(path)
    image_format = FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"unknown image extension {path.suffix!r}: use one of {', '.join(sorted(FORMATS))}")
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    if image_format == "JPEG" and channels in (2, 4):
        logger.warning("%s: JPEG has no alpha channel; the alpha is dropped (use .png or .webp to keep it)", path)
        array, channels = array[..., : channels - 1], channels - 1
    sixteen_bit_ok = image_format in ("PNG", "TIFF")
    if array.dtype == np.uint16 and not sixteen_bit_ok:
        logger.warning(
            "%s: %s cannot hold these 16-bit pixels; writing 8 bits (use .png to keep 16)", path, image_format
        )
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # a run killed while writing this file left its temporary
    temporary = temporary_path(path)
    try:
        if array.dtype == np.uint16 and channels > 1 and image_format == "TIFF":
            tiff16.write_tiff16(temporary, array, icc_profile=icc_profile)
        elif array.dtype == np.uint16 and channels > 1:
            png16.write_png16(temporary, array, icc_profile=icc_profile)
        else:
            options = dict(_SAVE_OPTIONS[image_format])
            if icc_profile and image_format != "BMP":
                options["icc_profile"] = icc_profile
            if exif and image_format != "BMP":
                options["exif"] = exif
            array_to_pil(array).save(temporary, format=image_format, **options)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
