"""PSNR and SSIM as super-resolution papers compute them (BasicSR's protocol).

Inputs are uint8 images (the SR output rounded, the HR ground truth), `crop_border` pixels
(= the scale) are shaved from every side, and by default both are converted to the Y channel
of BT.601 YCbCr. Everything is computed in float64, a band of rows at a time. SSIM uses an
11x11 Gaussian window (sigma 1.5) over the valid region only, C1 = (0.01*255)^2,
C2 = (0.03*255)^2; on RGB it is the mean over the three channels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
from scipy.ndimage import correlate1d

from srfeat.errors import MetricInputError, check_flag, given, is_whole_number
from srfeat.library_warnings import warn_once

logger = logging.getLogger(__name__)

__all__ = ["check_crop_border", "psnr", "refuse_masked", "rgb_to_y", "ssim"]

# BT.601 luma for RGB in [0, 1], giving Y in [16, 235].
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


# Pixels per band of rows turned into float64 at a time (about 110 bytes each at SSIM's peak).
BAND_PIXELS = 1 << 20

# Float pixels may overshoot [0, 1] by rounding, as the upscaler's check allows.
FLOAT_TOLERANCE = 1 / 255


def refuse_masked(image: object, what: str) -> None:
    """A numpy masked array is refused: the metrics read its data and would score the masked pixels as
    if they were there (a masked SR scored its hidden values, a masked HR the ground truth it hid)."""
    if isinstance(image, np.ma.MaskedArray):
        raise MetricInputError(
            f"{what} is a numpy masked array ({np.ma.count_masked(image):,} value(s) masked), and the metrics do "
            "not read masks: fill the masked values first (array.filled(value)), or pass array.data if the mask "
            "means nothing"
        )


def _check_pixels(image: np.ndarray, what: str) -> None:
    """uint8, or finite floats in [0, 1]; HxW or HxWxC with C = 1 or 3. Anything else would give a
    number that means nothing (uint16 read as 0..255, 0..255 floats as [0, 1], NaN), so it is refused."""
    if not isinstance(image, np.ndarray):
        raise MetricInputError(f"{what} must be a numpy array, got {type(image).__name__}")
    refuse_masked(image, what)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise MetricInputError(f"{what} must be HxW (gray) or HxWx3 (RGB), got shape {image.shape}")
    if image.dtype == np.uint8:
        return
    if not np.issubdtype(image.dtype, np.floating):
        raise MetricInputError(
            f"{what} has dtype {image.dtype}: give uint8 (0..255) or floats in [0, 1] "
            "(16-bit: divide by 65535.0; 0..255 integers: .astype(np.uint8))"
        )
    finite = np.isfinite(image)
    if not finite.all():
        raise MetricInputError(f"{what} has {int(image.size - finite.sum()):,} NaN or infinite pixel value(s)")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        raise MetricInputError(
            f"{what} has float values in [{low:g}, {high:g}], outside [0, 1]: float pixels must be in [0, 1] "
            "(0..255 data: divide by 255, or pass uint8)"
        )


def check_crop_border(crop_border: object, shape: tuple[int, ...]) -> int:
    """`crop_border` as an int >= 0 that leaves at least one pixel of an image of `shape`."""
    if not is_whole_number(crop_border) or crop_border < 0:
        raise MetricInputError(f"crop_border must be an integer >= 0 (the scale), got {given(crop_border)}")
    border = int(crop_border)
    if min(shape[:2]) - 2 * border < 1:
        raise MetricInputError(
            f"nothing is left of a {shape[1]}x{shape[0]} image after shaving {border} pixel(s) from each side: "
            f"the image needs more than {2 * border} pixels on each side"
        )
    return border


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr, float64 in [16, 235], from uint8 RGB (HxWx3) or float RGB in [0, 1].

    A gray image (HxW or HxWx1) is treated as R = G = B.
    """
    _check_pixels(image, "the image")
    rgb = image.astype(np.float64)
    if image.dtype == np.uint8:
        rgb /= 255.0
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        return 16.0 + rgb[..., 0] * Y_WEIGHTS.sum()
    return 16.0 + rgb @ Y_WEIGHTS


def _looks_like_y(image: np.ndarray) -> bool:
    """One channel (HxW or HxWx1) of finite floats all in Y's [16, 235], as `rgb_to_y` gives."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] != 1:
        return False
    if not np.issubdtype(image.dtype, np.floating) or not image.size:
        return False
    low, high = float(image.min()), float(image.max())  # NaN and infinities fall outside
    return 16 - 255 * FLOAT_TOLERANCE <= low and high <= 235 + 255 * FLOAT_TOLERANCE


def _uint8_in_y_range(image: np.ndarray) -> bool:
    """One channel (HxW or HxWx1) of uint8 all in Y's [16, 235], as `rgb_to_y`'s output rounded gives."""
    if image.dtype != np.uint8 or image.ndim == 3 and image.shape[2] != 1 or not image.size:
        return False
    return 16 <= int(image.min()) and int(image.max()) <= 235


def _checked_crop(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Check both images and the options, and shave the border (views, nothing copied)."""
    # "no" or 0.0 would score Y, or RGB, silently
    check_flag(
        test_y_channel, "test_y_channel", MetricInputError, "True (the Y channel, the papers' protocol) or False (RGB)"
    )
    for image, what in ((sr, "the SR image"), (hr, "the HR image")):
        refuse_masked(image, what)  # before the Y check: a masked Y channel is refused as masked
        try:
            _check_pixels(image, what)
        except MetricInputError:
            if test_y_channel and _looks_like_y(image):  # "divide by 255" would have it converted to Y twice
                raise MetricInputError(
                    f"{what} is one channel of floats in Y's range [16, 235] (rgb_to_y's output?), which "
                    "test_y_channel=True would convert to Y again: pass the RGB images, or, for a channel already "
                    "converted, test_y_channel=False and the channel divided by 255"
                ) from None
            raise
    if sr.shape != hr.shape:
        raise MetricInputError(f"SR and HR images differ in shape: {sr.shape} vs {hr.shape}")
    if sr.dtype != hr.dtype and np.uint8 in (sr.dtype, hr.dtype):
        raise MetricInputError(f"SR ({sr.dtype}) and HR ({hr.dtype}) must both be uint8 or both float in [0, 1]")
    if test_y_channel and _uint8_in_y_range(sr) and _uint8_in_y_range(hr):
        # rgb_to_y's output rounded to uint8 reads as a gray image and is converted to Y a second time (as its
        # floats are refused above); a gray image may lie in [16, 235] too, so this is said, not refused
        # once a process: an evaluation loop scores hundreds of images alike
        warn_once(
            logger,
            "rounded Y channel",
            "the SR and HR images are one channel of uint8 all in Y's range [16, 235] (rgb_to_y's output, rounded?), "
            "which test_y_channel=True converts to Y again, as gray images: for a Y channel, pass the RGB images "
            "(the protocol's Y is not rounded), or test_y_channel=False to score the channel as it is; for gray "
            "images, nothing is wrong",
        )
    crop_border = check_crop_border(crop_border, sr.shape)
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    return sr, hr


def _float_bands(
    sr: np.ndarray, hr: np.ndarray, test_y_channel: bool, output_rows: int, overlap: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Both images as float64 HxWxC (C = 1 for Y) in 0..255, a band of rows at a time.

    The bands give `output_rows` rows of results between them, about BAND_PIXELS each; a band
    holds `overlap` more rows, for the window of a filter. Only one band is ever in float64, so
    the memory stays about 100 MB however large the images are.
    """
    rows_per_band = max(1, BAND_PIXELS // sr.shape[1])
    for top in range(0, output_rows, rows_per_band):
        rows = slice(top, min(top + rows_per_band, output_rows) + overlap)
        if test_y_channel:
            yield rgb_to_y(sr[rows])[..., None], rgb_to_y(hr[rows])[..., None]
            continue
        scale = 1.0 if sr.dtype == np.uint8 else 255.0
        sr_f, hr_f = sr[rows].astype(np.float64) * scale, hr[rows].astype(np.float64) * scale
        yield (sr_f[..., None], hr_f[..., None]) if sr_f.ndim == 2 else (sr_f, hr_f)


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255) between two uint8 HxWx3 images; inf if equal.

    `sr` and `hr`: numpy arrays of one shape, HxW or HxWx3 (or HxWx1), both uint8 or both float
    in [0, 1]. `crop_border` (pixels shaved from each side) has no default on purpose: the
    protocol shaves the scale (4), and a forgotten shave moves PSNR by tenths of a dB.
    `test_y_channel` scores BT.601 Y (papers' protocol); False scores the RGB channels.
    """
    sr, hr = _checked_crop(sr, hr, crop_border, test_y_channel)
    squared_error, values = 0.0, 0
    for sr_f, hr_f in _float_bands(sr, hr, test_y_channel, sr.shape[0]):
        squared_error += float(np.sum((sr_f - hr_f) ** 2))
        values += sr_f.size
    if squared_error == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / (squared_error / values))


def _gaussian_window() -> np.ndarray:
    """The 1-D Gaussian (OpenCV's getGaussianKernel(11, 1.5)); the 2-D window is its outer product."""
    offsets = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable Gaussian filtering, keeping only positions where the window fits inside."""
    filtered = correlate1d(correlate1d(image, kernel, axis=0, mode="constant"), kernel, axis=1, mode="constant")
    half = SSIM_WINDOW // 2
    return filtered[half:-half, half:-half]


def _ssim_map(x: np.ndarray, y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """SSIM at every position where the window fits, of two float64 planes with values in 0..255."""
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    mu_x2, mu_y2, mu_xy = mu_x**2, mu_y**2, mu_x * mu_y
    sigma_x2 = _filter_valid(x * x, kernel) - mu_x2
    sigma_y2 = _filter_valid(y * y, kernel) - mu_y2
    sigma_xy = _filter_valid(x * y, kernel) - mu_xy
    return ((2 * mu_xy + SSIM_C1) * (2 * sigma_xy + SSIM_C2)) / (
        (mu_x2 + mu_y2 + SSIM_C1) * (sigma_x2 + sigma_y2 + SSIM_C2)
    )


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """Structural similarity between two uint8 HxWx3 images (mean over channels for RGB); at most 1.

    `sr`, `hr`, `crop_border` and `test_y_channel` as for `psnr`: one shape, HxW, HxWx1 or HxWx3,
    both uint8 or both float in [0, 1].

    Computed in float64, in bands of rows that overlap by the window: each position's value is
    what the whole planes give, and the memory stays about 100 MB however large the images are.
    """
    sr, hr = _checked_crop(sr, hr, crop_border, test_y_channel)
    if min(sr.shape[:2]) < SSIM_WINDOW:
        raise MetricInputError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after the border crop, "
            f"got {sr.shape[1]}x{sr.shape[0]}"
        )
    kernel = _gaussian_window()
    valid_rows, valid_columns = sr.shape[0] - SSIM_WINDOW + 1, sr.shape[1] - SSIM_WINDOW + 1
    band_sums = [
        [_ssim_map(sr_f[..., c], hr_f[..., c], kernel).sum() for c in range(sr_f.shape[2])]
        for sr_f, hr_f in _float_bands(sr, hr, test_y_channel, valid_rows, overlap=SSIM_WINDOW - 1)
    ]
    return float(np.mean(np.sum(band_sums, axis=0) / (valid_rows * valid_columns)))
