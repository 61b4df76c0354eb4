"""What the web page shows of a job: its images as a browser can show them.

The original and the result are sent as they are when the browser reads their format, else (and
for a non-JPEG turned by its EXIF orientation) as an upright 8-bit PNG copy; the bicubic view is
the original enlarged to the result's size by MATLAB's bicubic, the baseline of the README's
comparisons. Views are built on request, one at a time (`srfeat.web.app`), and refused before
anything is allocated when they would need more than half the free memory (a 16-megapixel upload
has a 256-megapixel result).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from srfeat.data.colour_profiles import cmyk_to_srgb, is_rgb_profile, open_image_data
from srfeat.data.io import pil_to_array
from srfeat.data.orientation import EXIF_DAMAGE, exif_orientation, exif_upright
from srfeat.data.resize import imresize
from srfeat.hardware import host_available_memory
from srfeat.inference.upscaler import from_float_tensor, to_float_tensor

__all__ = ["BROWSER_FORMATS", "ViewTooLargeError", "bicubic_view", "browser_view"]

# Formats a browser shows as they are; others (TIFF) are shown through an 8-bit PNG copy.
BROWSER_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}
# The bicubic view's peak, per pixel of the result: float32 planes for MATLAB's two passes, the 8-bit
# image and its PNG (measured: a 4000x4000 view took 822 MB more).
BICUBIC_VIEW_BYTES_PER_PIXEL = 52
# A PNG copy's peak, per pixel: the decoded image, its 8-bit RGB(A) copy and the PNG (measured: 12 bytes for an
# RGB or RGBA TIFF, 7 for grey), and room for an upright copy (EXIF) or a CMYK conversion.
CONVERTED_VIEW_BYTES_PER_PIXEL = 20


def browser_view(data: bytes, kind: str = "result") -> tuple[bytes, str]:
    """An image file (the `kind` of view, "result" or "original") as the browser can show it: as it is,
    or as an 8-bit PNG (EXIF orientation applied; so is a non-JPEG file turned by its EXIF orientation),
    refused before it is decoded when that copy would need more than half the free memory."""
    with open_image_data(data, "a view", warn=False) as image:  # the upload's check named a dropped profile
        # An animation is shown as its first frame, the one upscaled: the browser would play it beside a still result.
        still = getattr(image, "n_frames", 1) == 1
        if image.format in BROWSER_FORMATS and still and (image.format == "JPEG" or _orientation(image) == 1):
            return data, BROWSER_FORMATS[image.format]
        width, height = image.size
        _refuse_past_half_free(
            CONVERTED_VIEW_BYTES_PER_PIXEL * width * height,
            f"the PNG copy of this {width}x{height} {image.format or 'image'} that the browser would show",
            "the download is the whole file" if kind == "result" else "the result can still be compared alone",
        )
        image.load()
        shown = _displayable(exif_upright(image, "a view"))  # a damaged EXIF block: read as stored
    buffer = io.BytesIO()
    shown.save(buffer, format="PNG", compress_level=1, icc_profile=_rgb_profile(shown))
    return buffer.getvalue(), "image/png"


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1: as stored, also for a damaged block). Browsers turn a JPEG by
    it, but not all turn other formats (Chromium shows a WebP as stored), while srfeat's result is
    upright: such an original is sent as an upright PNG copy, so that the two sides match."""
    try:
        return exif_orientation(image.getexif())
    except EXIF_DAMAGE:
        return 1


def _rgb_profile(image: Image.Image) -> bytes | None:
    """The image's ICC profile where it describes its RGB pixels: the views carry it, so that the browser
    shows them in the same colours as the result, which keeps it (a Display P3 photo's bicubic view was
    shown as sRGB beside the managed result: its colours looked changed by the upscale)."""
    profile = image.info.get("icc_profile")
    return profile if image.mode in ("RGB", "RGBA") and is_rgb_profile(profile) else None


def _displayable(image: Image.Image) -> Image.Image:
    if image.mode == "CMYK":  # through its own profile, as srfeat reads it for the result (not PIL's plain formula)
        image, _ = cmyk_to_srgb(image, image.info.get("icc_profile"), Path("a view"))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.point(lambda value: value / 257).convert("L")
    elif image.mode == "F":
        # Float grey (TIFF): 0 to 1, as srfeat reads it and its result keeps it (taken as 0 to 255: all black).
        image = image.point(lambda value: value * 255 + 0.5).convert("L")
    return image.convert("RGBA" if has_alpha else "RGB")


class ViewTooLargeError(Exception):
    """A view that the free memory cannot build: the page is told, the download still works."""


def _refuse_past_half_free(needed: int, what: str, advice: str) -> None:
    """`ViewTooLargeError` (`what` needs how much, and `advice`) when `needed` bytes are over half the free memory."""
    available = host_available_memory()
    if needed > available // 2:
        raise ViewTooLargeError(
            f"{what} needs about {needed / 1e9:.1f} GB of memory and {available / 1e9:.1f} GB is free; {advice}"
        )


def bicubic_view(data: bytes, width: int, height: int) -> tuple[bytes, str]:
    """The original enlarged to the result's size with MATLAB's bicubic (what `bicubic` means in
    the README's comparisons), as an 8-bit PNG (and its media type); refused, before anything is
    allocated, when it needs more than half the free memory."""
    _refuse_past_half_free(
        BICUBIC_VIEW_BYTES_PER_PIXEL * width * height,
        f"the bicubic comparison of a {width}x{height} result",
        "download the result to compare it elsewhere",
    )
    with open_image_data(data, "a view", warn=False) as image:
        image.load()
        shown = _displayable(exif_upright(image, "a view"))  # a damaged EXIF block: read as stored
    pixels = pil_to_array(shown)
    enlarged = imresize(to_float_tensor(pixels), size=(height, width)).clamp_(0.0, 1.0)
    array = from_float_tensor(enlarged, np.dtype(np.uint8))
    buffer = io.BytesIO()
    view = Image.fromarray(np.ascontiguousarray(array))
    view.save(buffer, format="PNG", compress_level=1, icc_profile=_rgb_profile(shown))
    return buffer.getvalue(), "image/png"
