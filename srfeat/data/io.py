"""Reading and writing image files.

Everything that opens an image goes through `open_image`, so every caller gets the same
behaviour: the whole file is decoded up front (a truncated file fails here, not later deep
inside a data loader), EXIF orientation is applied (a portrait photo from a phone stays
upright), and any failure becomes an `ImageReadError` that names the file.

`read_image` gives the 8-bit RGB array that the networks and the evaluation protocol use;
`read_raw_image` gives the pixels as stored (bit depth, channels, ICC profile) for callers
that must write them back faithfully.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from srfeat.errors import ImageReadError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RawImage:
    """An image's pixels as stored in its file.

    `array` is HxWxC with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), dtype uint8 or
    uint16 (16-bit files); `mode` is the PIL mode it was decoded from (`"L"`, `"I;16"`,
    `"RGBA"`, ...); `icc_profile` is the embedded colour profile, if any.
    """

    array: np.ndarray
    mode: str
    icc_profile: bytes | None = None

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
    """The image as stored: HxWxC uint8/uint16 pixels, PIL mode and ICC profile."""
    image = open_image(path)
    try:
        array = _pixels(image)
    except ValueError as error:
        raise ImageReadError(f"cannot read image {path}: {error}; convert it to 8- or 16-bit RGB") from error
    return RawImage(array=array, mode=image.mode, icc_profile=image.info.get("icc_profile"))


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
