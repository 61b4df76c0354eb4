"""PSNR and SSIM as super-resolution papers compute them (BasicSR's protocol).

Inputs are uint8 images (the SR output rounded, the HR ground truth), `crop_border` pixels
(= the scale) are shaved from every side, and by default both are converted to the Y channel
of BT.601 YCbCr. Everything is computed in float64. SSIM uses an 11x11 Gaussian window
(sigma 1.5) over the valid region only, C1 = (0.01*255)^2, C2 = (0.03*255)^2; on RGB it is
the mean over the three channels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

__all__ = ["psnr", "rgb_to_y", "ssim"]

# BT.601 luma for RGB in [0, 1], giving Y in [16, 235].
Y_WEIGHTS = np.array([65.481, 128.553, 24.966])

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr, float64 in [16, 235], from uint8 RGB (HxWx3) or float RGB in [0, 1].

    A gray image (HxW or HxWx1) is treated as R = G = B.
    """
    rgb = image.astype(np.float64)
    if image.dtype == np.uint8:
        rgb /= 255.0
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        return 16.0 + rgb[..., 0] * Y_WEIGHTS.sum()
    if rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects HxWx3 RGB (or gray), got shape {image.shape}")
    return 16.0 + rgb @ Y_WEIGHTS


def _prepare(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shave the border and convert both images to float64 HxWxC (C = 1 for Y)."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR images differ in shape: {sr.shape} vs {hr.shape}")
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y(sr)[..., None], rgb_to_y(hr)[..., None]
    to_float = (lambda a: a.astype(np.float64)) if sr.dtype == np.uint8 else (lambda a: a.astype(np.float64) * 255.0)
    sr_f, hr_f = to_float(sr), to_float(hr)
    if sr_f.ndim == 2:
        sr_f, hr_f = sr_f[..., None], hr_f[..., None]
    return sr_f, hr_f


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255) between two uint8 HxWx3 images; inf if equal."""
    sr_f, hr_f = _prepare(sr, hr, crop_border, test_y_channel)
    mse = float(np.mean((sr_f - hr_f) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


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


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two float64 planes with values in 0..255."""
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after the border crop, got {x.shape}"
        )
    kernel = _gaussian_window()
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    mu_x2, mu_y2, mu_xy = mu_x**2, mu_y**2, mu_x * mu_y
    sigma_x2 = _filter_valid(x * x, kernel) - mu_x2
    sigma_y2 = _filter_valid(y * y, kernel) - mu_y2
    sigma_xy = _filter_valid(x * y, kernel) - mu_xy
    ssim_map = ((2 * mu_xy + SSIM_C1) * (2 * sigma_xy + SSIM_C2)) / (
        (mu_x2 + mu_y2 + SSIM_C1) * (sigma_x2 + sigma_y2 + SSIM_C2)
    )
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """Structural similarity between two uint8 HxWx3 images (mean over channels for RGB)."""
    sr_f, hr_f = _prepare(sr, hr, crop_border, test_y_channel)
    return float(np.mean([_ssim_plane(sr_f[..., c], hr_f[..., c]) for c in range(sr_f.shape[2])]))
