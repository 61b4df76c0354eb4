"""The evaluation protocol's image pairs (`srfeat.data.datasets` re-exports these): HR mod-cropped
or centre-cropped, LR by MATLAB bicubic rounded to uint8, and uint8 arrays as float tensors in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from srfeat.data.resize import imresize, imresize_np
from srfeat.errors import InvalidImageError, InvalidOptionError, given, is_real_number, is_whole_number


def check_whole_number(value: object, name: str, least: int = 1) -> int:
    """`value` as an int >= `least` (numpy's too), else a one-line `InvalidOptionError` naming `name`: a
    patch size of "96" was a TypeError from a comparison, 96.0 one from slicing, True a size of 1, and a
    scale of 0 a ZeroDivisionError from `%`."""
    if not is_whole_number(value) or value < least:
        raise InvalidOptionError(f"{name} must be a whole number of at least {least}, got {given(value)}")
    return int(value)


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HxW(xC) image to a multiple of `scale` (bottom/right rows go, as in the protocol)."""
    scale = check_whole_number(scale, "scale")
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR image: MATLAB bicubic x1/scale (antialiased) of uint8 HR, rounded to uint8.

    The HR size must be a multiple of `scale` (use `mod_crop`), so that LR is exactly 1/scale
    (else `srfeat.errors.InvalidImageError`); `scale` is a whole number (else `InvalidOptionError`).
    """
    scale = check_whole_number(scale, "scale")
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise InvalidImageError(f"HR size {hr.shape[:2]} is not a multiple of the scale {scale}; mod_crop it first")
    return imresize_np(hr, 1.0 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic xscale of a uint8 image, rounded to uint8 (the `bicubic` baseline)."""
    return imresize_np(lr, float(scale))


def check_image_scales(
    image_scales: object, name: str = "image_scales", example: str = "e.g. [1.0, 0.9, 0.8, 0.7, 0.6]"
) -> tuple[float, ...]:
    """The size factors of `RandomCropDataset`'s augmentation (`image_scales`, `image_aspects`) as floats: a
    non-empty list of distinct numbers in (0, 1] (a factor above 1 would invent the pixels the network learns to
    restore), else a one-line `InvalidOptionError` that calls them `name` and gives `example`."""
    example = f"{example}, or [1.0] for the images as they are"
    if isinstance(image_scales, (str, bytes)) or not isinstance(image_scales, Sequence) or not image_scales:
        raise InvalidOptionError(
            f"{name} must be a non-empty list of size factors ({example}), got {given(image_scales)}"
        )
    for factor in image_scales:
        if not is_real_number(factor) or not 0.0 < float(factor) <= 1.0:
            raise InvalidOptionError(f"{name} must hold factors in (0, 1] ({example}), got {given(factor)}")
    factors = tuple(float(factor) for factor in image_scales)
    if len(set(factors)) != len(factors):
        twice = next(factor for factor in factors if factors.count(factor) > 1)
        raise InvalidOptionError(f"{name} lists {twice:g} more than once: give each factor once")
    return factors


def check_patch_size(
    hr_patch_size: object, scale: object, names: tuple[str, str] = ("hr_patch_size", "scale")
) -> tuple[int, int]:
    """`(hr_patch_size, scale)` as ints: whole numbers, the patch a positive multiple of the scale (or LR
    patches would not be exactly 1/scale), else a one-line `InvalidOptionError` that calls them `names`
    (`srfeat prepare`'s flags)."""
    patch_name, scale_name = names
    scale = check_whole_number(scale, scale_name)
    if not is_whole_number(hr_patch_size):
        raise InvalidOptionError(f"{patch_name} must be a whole number, got {given(hr_patch_size)}")
    if hr_patch_size < scale or hr_patch_size % scale:
        raise InvalidOptionError(
            f"{patch_name} must be a positive multiple of {scale_name} ({scale}), got {int(hr_patch_size)}"
        )
    return int(hr_patch_size), scale


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window of an HxW(xC) image."""
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> (C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def downscale_tensor(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR from a (3, H, W) float HR tensor in [0, 1], rounded to uint8 levels like the protocol.

    float32 is enough here (training on the fly); `bicubic_downscale` is the exact float64 path.
    """
    lr = imresize(hr.mul(255.0), scale=1.0 / scale)
    return lr.round_().clamp_(0.0, 255.0).div_(255.0)
