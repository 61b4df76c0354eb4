"""NIQE, the no-reference "naturalness" score, computed as the MATLAB reference does.

Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE
Signal Processing Letters 20(3), 2013 (LIVE's `niqe_release`). Lower is better. The score is
the distance between a multivariate Gaussian fitted to the image's local statistics and one
fitted to pristine natural images; the pristine model's figures are LIVE's published
`modelparameters.mat`, carried here as `niqe_pris_params.npz` (see `NIQE_NOTICE.txt`).

What the MATLAB code does, and so this module:
- the image (the BT.601 Y channel, rounded to integers) is cut to whole 96x96 blocks;
- at two scales (full, then MATLAB-bicubic half size with 48x48 blocks) the image is
  normalised by its local mean and deviation (a 7x7 Gaussian, replicated borders), and each
  block gives 18 features: an asymmetric generalised Gaussian (AGGD) fit to the normalised
  values and to their products with the four neighbours (right, down, two diagonals);
- NaN features (a flat block has no negative or no positive values) are left out as
  MATLAB's `nanmean` / `nancov` do; the score is the Mahalanobis-like distance
  sqrt(d' pinv((C_pristine + C_image) / 2) d) between the two models.

Arithmetic precision matters on images with flat areas: there a float64 local mean leaves
residues of +-1e-14 instead of exact zeros, and those residues count as "negative" or
"positive" samples and move the AGGD fits. The normalised image is therefore computed in
float32 (the residues round away), which matches MATLAB's published scores best.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.ndimage import correlate
from scipy.special import gamma

from srfeat.data.resize import imresize
from srfeat.errors import MetricInputError, SRFeatError, given, is_whole_number
from srfeat.metrics.psnr_ssim import refuse_masked

__all__ = ["BLOCK_SIZE", "PRISTINE_PARAMS_SHA256", "niqe", "pristine_model"]

logger = logging.getLogger(__name__)

# sha256 of basicsr 1.4.2's `basicsr/metrics/niqe_pris_params.npz` (LIVE's modelparameters.mat).
PRISTINE_PARAMS_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
PRISTINE_PARAMS_FILE = "niqe_pris_params.npz"

# The block size the pristine model was built with (MATLAB's recommended 96x96, no overlap).
BLOCK_SIZE = 96

# The normalised image's precision (see the module docstring).
COMPUTE_DTYPE = np.float32

# MATLAB's grid of AGGD shape parameters, `gam = 0.2:0.001:10`, and the ratio
# E[|x|]^2 / E[x^2] each shape gives; a fit picks the shape whose ratio is nearest.
_SHAPES = np.arange(0.2, 10.001, 0.001)
_SHAPE_RATIOS = gamma(2.0 / _SHAPES) ** 2 / (gamma(1.0 / _SHAPES) * gamma(3.0 / _SHAPES))

# The neighbour offsets (rows, columns) of MATLAB's `circshift` in computefeature.m.
_NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pristine model: (mean (36,), covariance (36, 36), 7x7 Gaussian window), checked by sha256."""
    data = resources.files("srfeat.metrics").joinpath(PRISTINE_PARAMS_FILE).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PRISTINE_PARAMS_SHA256:
        raise SRFeatError(
            f"NIQE model file srfeat/metrics/{PRISTINE_PARAMS_FILE} is damaged (sha256 {digest[:12]}..., "
            f"expected {PRISTINE_PARAMS_SHA256[:12]}...); reinstall srfeat"
        )
    with np.load(io.BytesIO(data)) as params:
        mean = params["mu_pris_param"].reshape(-1).astype(np.float64)
        covariance = params["cov_pris_param"].astype(np.float64)
        window = params["gaussian_window"].astype(np.float64)
    return mean, covariance, window


def _aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MATLAB's estimateaggdparam.m for each row of `samples` (N, M): (shape, left scale, right scale).

    A row without negative (or positive) samples has an undefined deviation on that side:
    its scales are NaN, and its shape is the grid's first value, as MATLAB's `min` over an
    all-NaN vector returns index 1.
    """
    negative = samples < 0
    positive = samples > 0
    squares = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.where(negative, squares, 0).sum(axis=1) / negative.sum(axis=1))
        right_std = np.sqrt(np.where(positive, squares, 0).sum(axis=1) / positive.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(samples).mean(axis=1) ** 2 / squares.mean(axis=1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    distance = (_SHAPE_RATIOS[None, :] - r_hat_norm.astype(np.float64)[:, None]) ** 2
    shape = _SHAPES[np.argmin(distance, axis=1)]  # all-NaN rows give index 0, as MATLAB
    scale_factor = np.sqrt(gamma(1.0 / shape) / gamma(3.0 / shape))
    return shape, left_std * scale_factor, right_std * scale_factor


def _block_features(normalised: np.ndarray, block: int) -> np.ndarray:
    """The 18 features (computefeature.m) of each `block` x `block` tile: (number of tiles, 18)."""
    rows, cols = normalised.shape[0] // block, normalised.shape[1] // block
    tiles = normalised.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    flat = tiles.reshape(len(tiles), -1)
    shape, left, right = _aggd_fit(flat)
    features = [shape, (left + right) / 2]
    for shift in _NEIGHBOUR_SHIFTS:
        # Products with the neighbour wrap around inside the tile, as circshift does.
        neighbours = np.roll(tiles, shift, axis=(1, 2)).reshape(len(tiles), -1)
        shape, left, right = _aggd_fit(flat * neighbours)
        mean = (right - left) * gamma(2.0 / shape) / gamma(1.0 / shape)
        features += [shape, mean, left, right]
    return np.stack(features, axis=1).astype(np.float64)


def _normalise(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised image (Eq. 1): (I - mu) / (sigma + 1)."""
    # correlate computes in float64 and returns the input's dtype (float32 here).
    mu = correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1)


def _niqe(y: np.ndarray, dtype: type[np.floating] = COMPUTE_DTYPE) -> float:
    """NIQE of an already rounded and shaved Y channel; `dtype` is the normalised image's precision."""
    mean_pristine, cov_pristine, window = pristine_model()
    rows, cols = y.shape[0] // BLOCK_SIZE, y.shape[1] // BLOCK_SIZE
    if rows == 0 or cols == 0:
        raise MetricInputError(
            f"NIQE needs an image of at least {BLOCK_SIZE}x{BLOCK_SIZE} pixels after shaving, got "
            f"{y.shape[1]}x{y.shape[0]}; evaluate larger images"
        )
    image = np.ascontiguousarray(y[: rows * BLOCK_SIZE, : cols * BLOCK_SIZE], dtype=dtype)

    full_scale = _block_features(_normalise(image, window), BLOCK_SIZE)
    half = imresize(torch.from_numpy(image), scale=0.5).numpy()
    half_scale = _block_features(_normalise(half, window), BLOCK_SIZE // 2)
    features = np.concatenate([full_scale, half_scale], axis=1)

    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) == 0:
        raise MetricInputError(
            "NIQE is undefined for an image without texture (every 96x96 block is flat); "
            "leave it out of the NIQE average"
        )
    with np.errstate(invalid="ignore"):
        mean_image = np.nanmean(features, axis=0)
    # MATLAB's cov normalises by N - 1, and by 1 for a single observation (all zeros).
    cov_image = np.cov(complete, rowvar=False) if len(complete) > 1 else np.zeros_like(cov_pristine)
    difference = mean_pristine - mean_image
    distance = difference @ np.linalg.pinv((cov_pristine + cov_image) / 2) @ difference
    if not math.isfinite(distance):
        raise MetricInputError("NIQE came out undefined for this image (degenerate local statistics); leave it out")
    return math.sqrt(max(distance, 0.0))


def _check_y_range(y: np.ndarray) -> None:
    """Finite values in 0..255; not all in [0, 1] (a float image not yet scaled), which NIQE would
    score as a nearly black picture (600-700) rather than refuse."""
    if y.size == 0:
        return  # the size check in _niqe says what is missing
    values = y.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        raise MetricInputError(f"the Y channel has {int(y.size - finite.sum()):,} NaN or infinite value(s)")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 255:
        raise MetricInputError(
            f"the Y channel has values in [{low:g}, {high:g}], outside 0..255: NIQE reads 8-bit intensities "
            "(16-bit: divide by 257 first)"
        )
    if np.issubdtype(y.dtype, np.floating) and high <= 1 and low < high:
        raise MetricInputError(
            f"the Y channel has values in [{low:g}, {high:g}], as of a [0, 1] image; NIQE reads Y in 16..235: "
            "pass rgb_to_y(image) (which takes [0, 1] RGB) or multiply a gray image by 255"
        )


def _as_array(y: object) -> np.ndarray:
    """`y` as a numpy array: a tensor detached, on the CPU, bfloat16 as float32 (numpy has none of
    these: each was torch's error), a ragged list refused in one line."""
    refuse_masked(y, "the Y channel")  # numpy's asarray keeps the data and drops the mask
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
        if y.dtype == torch.bfloat16:
            y = y.float()
    try:
        return np.asarray(y)
    except ValueError as error:  # a ragged list: numpy's "setting an array element with a sequence"
        raise MetricInputError(
            f"niqe expects an HxW Y channel (rgb_to_y of the image), got a {type(y).__name__} that is not one array "
            f"({error})"
        ) from error


def niqe(y: ArrayLike | torch.Tensor, crop_border: int = 0) -> float:
    """NIQE of a Y channel (HxW floats, BT.601 range 16..235), lower is better.

    The values are rounded to integers as MATLAB's uint8 `rgb2ycbcr` does (half away from
    zero), and `crop_border` pixels are shaved from every side first (the evaluation
    protocol shaves `scale`). `y` may be any array-like (a list; a tensor, on a GPU or requiring
    grad too). Raises `srfeat.errors.MetricInputError` (a `ValueError`) for images smaller than
    96x96 after shaving and for images whose every block is flat, where NIQE is undefined, as for
    values it cannot read; `SRFeatError` only if the installed pristine model is damaged.
    """
    y = _as_array(y)
    if y.ndim != 2:
        raise MetricInputError(f"niqe expects an HxW Y channel (rgb_to_y of the image), got shape {y.shape}")
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise MetricInputError(f"niqe expects Y values (numbers in 16..235), got dtype {y.dtype}")
    if not is_whole_number(crop_border) or crop_border < 0:
        raise MetricInputError(f"crop_border must be an integer >= 0 (the scale), got {given(crop_border)}")
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    _check_y_range(y)
    rounded = np.floor(y.astype(np.float64) + 0.5)
    return _niqe(rounded)
