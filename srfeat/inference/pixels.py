"""Pixels in and out of `Upscaler`: arrays to (C, H, W) float tensors and back, grey and alpha.

A 1000x1000 input is a 4000x4000 output, 192 MB as float32 RGB: here everything full-size is
made once and changed in place, or a band of rows at a time, so that converting a result costs
no second copy of it (the grey mix's products alone were 192 MB, a 16-bit result's int32 copy
another 192). The results are the same, bit for bit, as the plain whole-image formulas.
"""

from __future__ import annotations

import numpy as np
import torch

from srfeat.data.resize import imresize
from srfeat.errors import InvalidImageError

__all__ = [
    "LUMA_WEIGHTS",
    "check_dtype",
    "from_float_tensor",
    "mix_grey",
    "resize_alpha",
    "to_float_tensor",
]

# BT.601 luma, as PIL's RGB -> L conversion: a gray input upscaled to near-gray RGB comes back
# as the gray the network made of it.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Float pixels beyond this become inf in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Rows of a full-size image converted at once: a band of a 4000-pixel-wide RGB result is 3 MB.
BAND_ROWS = 64


def mix_grey(rgb: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) grey with `LUMA_WEIGHTS`, into `out` if given (else a new tensor).

    `(rgb * weights).sum(0, keepdim=True)`, a band of rows at a time: the same values (each
    pixel's three products summed in the same order) without the full-size products.
    """
    weights = torch.tensor(LUMA_WEIGHTS).view(3, 1, 1)
    if out is None:
        out = rgb.new_empty((1, *rgb.shape[1:]))
    for start in range(0, rgb.shape[1], BAND_ROWS):
        rows = slice(start, start + BAND_ROWS)
        out[:, rows].copy_((rgb[:, rows] * weights).sum(0, keepdim=True))
    return out


def resize_alpha(alpha: torch.Tensor, size: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """(1, H, W) alpha -> (1, *size) with MATLAB's bicubic, into `out` if given; a constant alpha
    (opaque) stays exact."""
    first = float(alpha.flatten()[0])
    if bool((alpha == first).all()):
        return alpha.new_full((1, *size), first) if out is None else out.fill_(first)
    resized = imresize(alpha, size=size)
    return resized if out is None else out.copy_(resized)


def check_dtype(dtype: np.dtype) -> None:
    """uint8, uint16 or float pixels, of either byte order; else a one-line `InvalidImageError`."""
    if not ((dtype.kind == "u" and dtype.itemsize in (1, 2)) or dtype.kind == "f"):
        raise InvalidImageError(
            f"expected uint8, uint16 or float pixels (floats in [0, 1]), got {dtype.name}; "
            "convert the array, e.g. array.astype(numpy.uint8) for 8-bit values"
        )


def to_float_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWxC uint8, uint16 or float array, of either byte order -> (C, H, W) float32 in [0, 1] (a
    permuted view of the caller's array when it is a native, writable, contiguous float32 one)."""
    check_dtype(array.dtype)
    kind, size = array.dtype.kind, array.dtype.itemsize
    scale = 1.0 if kind == "f" else 255.0 if size == 1 else 65535.0
    if kind == "f":
        low, high = (float(array.min()), float(array.max())) if size > 4 and array.size else (0.0, 0.0)
        if np.isfinite([low, high]).all() and max(-low, high) > FLOAT32_MAX:
            raise InvalidImageError(
                f"float pixels must be in [0, 1], these go from {low:.4g} to {high:.4g}: rescale them to [0, 1]"
            )
    pixels = np.ascontiguousarray(array, dtype=np.float32)  # native byte order, as torch needs
    if not pixels.flags.writeable:  # torch would warn that it cannot guard a read-only buffer
        pixels = pixels.copy()
    tensor = torch.from_numpy(pixels)
    if scale != 1.0:
        tensor.div_(scale)
    return tensor.permute(2, 0, 1)


def from_float_tensor(image: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] -> C-contiguous HxWxC array of `dtype` (integers rounded to nearest).

    For integer dtypes `image` is scaled and rounded in place (a full-size upscaled image is
    large: no second float copy of it is made), and converted straight to `dtype`: the values are
    whole numbers in its range, so the conversion is exact (through int32 it cost 192 MB more
    for a 4000x4000 RGB result).
    """
    hwc = image.permute(1, 2, 0)
    dtype = np.dtype(dtype)
    if dtype.kind == "u" and dtype.itemsize == 1:
        return hwc.mul_(255.0).round_().to(torch.uint8, memory_format=torch.contiguous_format).numpy()
    if dtype.kind == "u" and dtype.itemsize == 2:  # `dtype` keeps the caller's byte order
        return hwc.mul_(65535.0).round_().numpy().astype(dtype, order="C")
    return hwc.contiguous().numpy().astype(dtype, copy=False)
