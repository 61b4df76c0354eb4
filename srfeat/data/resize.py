"""MATLAB-compatible bicubic resizing (`imresize(img, scale, 'bicubic')`).

Super-resolution papers make their low-resolution inputs with MATLAB's `imresize`, and the
numbers they report depend on its details: the cubic kernel with a = -0.5, a kernel
stretched by 1/scale when shrinking (antialiasing), MATLAB's mapping of output to input
coordinates, symmetric ("mirror") padding at the borders and weights normalised to sum to one
for every output pixel. PIL's and torch's bicubic differ from it in several of these, which
shifts PSNR by tenths of a dB, so this module follows MATLAB's `contributions` function
line by line.

The weights are computed once per (input length, output length) and applied per dimension,
either as one matrix product (short dimensions: fastest) or as a sum of `taps` gathers (6
taps when enlarging, 18 for x1/4 with antialiasing; long dimensions, linear cost). There
is no loop over pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

from srfeat.errors import InvalidImageError, NotAnImageError, check_flag, is_real_number, is_whole_number, shown
from srfeat.hardware import host_available_memory

logger = logging.getLogger(__name__)

__all__ = ["contributions", "cubic", "imresize", "imresize_np"]

# Support of the cubic kernel (|x| <= 2).
KERNEL_WIDTH = 4.0
# An output below this is not weighed against the free memory: reading /proc/meminfo (70 us) would
# be a third of the time of resizing a training crop, done once per crop.
SMALL_OUTPUT_BYTES = 1 << 26
# Weights one dimension's `contributions` may hold (output pixels x taps, 16 bytes each with the
# indices): a shrink by 1e-9 would otherwise ask numpy for tens of GB before anything is resized.
MAX_CONTRIBUTIONS = 2**24


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as in MATLAB's `imresize`."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


@lru_cache(maxsize=64)
def contributions(in_length: int, out_length: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's `contributions`: which input pixels feed each output pixel, and how much.

    Returns `(weights, indices)`, both of shape (out_length, taps); `indices` are 0-based
    input positions already folded into range by symmetric padding, `weights` are float64
    and sum to one along each row.
    """
    if scale < 1 and antialiasing:
        # Shrinking: stretch the kernel so that it also low-pass filters (MATLAB's h(x) = scale*cubic(scale*x)).
        kernel_width = KERNEL_WIDTH / scale

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * x)

    else:
        kernel_width = KERNEL_WIDTH
        kernel = cubic

    # 1-based output coordinates mapped into 1-based input coordinates, exactly as MATLAB.
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric padding: the sequence 1..n, n..1 repeated (MATLAB's `aux` array), 0-based here.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]

    # Drop taps that carry no weight for any output pixel (MATLAB's `kill`); only a speed-up.
    used = np.any(weights != 0, axis=0)
    weights, indices = weights[:, used], indices[:, used]
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


@lru_cache(maxsize=64)
def _dense_weights(
    in_length: int, out_length: int, scale: float, antialiasing: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The (out_length, in_length) matrix of `contributions` (mirrored taps summed); CPU, cached."""
    weights, indices = contributions(in_length, out_length, scale, antialiasing)
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
    return torch.from_numpy(matrix).to(dtype)


# Up to this many input pixels per tap a dense matrix product is faster than gathering
# taps: BLAS does the extra multiplications by zero faster than `index_select` moves memory.
DENSE_INPUT_PER_TAP = 64


def _resize_along(image: torch.Tensor, dim: int, out_length: int, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize `image` along one dimension (-2 for height, -1 for width)."""
    in_length = image.shape[dim]
    weights_np, indices_np = contributions(in_length, out_length, scale, antialiasing)
    if in_length <= DENSE_INPUT_PER_TAP * weights_np.shape[1]:
        matrix = _dense_weights(in_length, out_length, scale, antialiasing, image.dtype).to(image.device)
        return matrix @ image if dim == -2 else image @ matrix.T
    # Long dimensions: a sum of `taps` gathers, linear in the number of pixels.
    weights = torch.tensor(weights_np, dtype=image.dtype, device=image.device)
    indices = torch.tensor(indices_np, device=image.device)
    shape = [1] * image.dim()
    shape[dim] = out_length  # broadcast a tap's per-output weight along the other dimension
    taps = [(indices[:, tap], weights[:, tap].reshape(shape)) for tap in range(weights.shape[1])]
    size = list(image.shape)
    size[dim] = out_length
    if math.prod(size) > GATHER_BAND_ELEMENTS and not (torch.is_grad_enabled() and image.requires_grad):
        return _gather_in_bands(image, dim, taps, size)
    output = None
    for index, weight in taps:
        term = image.index_select(dim, index) * weight
        output = term if output is None else output.add_(term)
    assert output is not None
    return output


# A large resize (an upscaled image's alpha, `--outscale`) is summed this many output values at a
# time: the taps' gathered terms are then a few MB, not each the size of the output (64 MB each
# for a 4000x4000 alpha, two alive at once).
GATHER_BAND_ELEMENTS = 1 << 21


def _gather_in_bands(
    image: torch.Tensor, dim: int, taps: list[tuple[torch.Tensor, torch.Tensor]], size: list[int]
) -> torch.Tensor:
    """The sum of `taps` gathers into one preallocated output, a band along the other dimension at a
    time: each output value is the same products added in the same order as the whole-image sum."""
    output = image.new_empty(size)
    other = -1 if dim == -2 else -2
    band = max(1, GATHER_BAND_ELEMENTS // (math.prod(size) // size[other]))
    for start in range(0, size[other], band):
        part = image.narrow(other, start, min(band, size[other] - start))
        target = output.narrow(other, start, part.shape[other])
        for tap, (index, weight) in enumerate(taps):
            term = part.index_select(dim, index).mul_(weight)
            if tap == 0:
                target.copy_(term)
            else:
                target.add_(term)
    return output


def _check_scale(scale: object) -> float:
    if not is_real_number(scale):
        raise InvalidImageError(f"imresize's scale must be a number, got {type(scale).__name__} {shown(scale)}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise InvalidImageError(f"imresize's scale must be a finite number above 0, got {scale}")
    return value


def _check_size(size: object) -> tuple[int, int]:
    if (
        isinstance(size, (str, bytes))
        or not isinstance(size, Sequence | np.ndarray | torch.Size)
        or len(size) != 2
        or any(not is_whole_number(n) for n in size)
    ):
        raise InvalidImageError(f"imresize's size must be (height, width), two whole numbers, got {shown(size)}")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"imresize's size must be positive, got {(height, width)}")
    return height, width


def _check_cost(
    image: torch.Tensor, out_h: int, out_w: int, scale_h: float, scale_w: float, antialiasing: bool
) -> None:
    """One line, before anything is allocated, for a resize whose weights or output cannot fit."""
    for out_length, scale in ((out_h, scale_h), (out_w, scale_w)):
        kernel_width = KERNEL_WIDTH / scale if scale < 1 and antialiasing else KERNEL_WIDTH
        weights = out_length * (kernel_width + 2)  # MATLAB takes two taps more than the kernel's width
        if weights > MAX_CONTRIBUTIONS:
            raise InvalidImageError(
                f"imresize to {out_length} pixels at scale {scale:.3g} would need {weights:.3g} "
                f"filter weights (over {MAX_CONTRIBUTIONS:,}): a scale that small or that large is a mistake; "
                "resize in steps"
            )
    if image.device.type == "cpu":
        check_output_fits(math.prod(image.shape[:-2]), (out_h, out_w), image.element_size())


def check_output_fits(channels: int, size: tuple[int, int], element_size: int = 4) -> None:
    """The memory check `imresize` makes before resizing on the CPU, for a resize yet to come:
    `Upscaler` makes it before its network runs, not minutes later."""
    out_h, out_w = size
    needed = channels * out_h * out_w * element_size
    if needed > SMALL_OUTPUT_BYTES and needed > host_available_memory():
        raise InvalidImageError(
            f"imresize's output ({out_w}x{out_h}, {needed / 2**30:.1f} GiB) is larger than the free memory"
        )


def imresize(
    image: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> torch.Tensor:
    """Resize the last two dimensions (H, W) of a float tensor like MATLAB's bicubic `imresize`.

    Give either `scale` (a finite number above 0; output size `ceil(in * scale)`, as MATLAB) or
    `size` = (height, width), two positive whole numbers. Any leading dimensions (channels,
    batch) are kept; so are the dtype, device and autograd graph (it is differentiable). Values
    are not assumed to be in any range, and the result is not clamped or rounded: for the
    evaluation protocol, round it to uint8 (`imresize_np` does, for uint8 arrays).

    Raises `srfeat.errors.NotAnImageError` (a `TypeError`) for anything but a floating-point
    tensor of at least two dimensions, `srfeat.errors.InvalidImageError` (a `ValueError`)
    for a bad `scale` or `size`, or a resize whose filter or output would not fit in memory, and
    `srfeat.errors.InvalidOptionError` (a `ValueError`) for an `antialiasing` other than True or False.
    """
    return _imresize(image, scale, size, antialiasing)


def _imresize(
    image: torch.Tensor,
    scale: float | None,
    size: tuple[int, int] | None,
    antialiasing: bool,
    after_pass: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`imresize`, with `after_pass` applied to the result of each of its two 1-D passes."""
    antialiasing = check_flag(antialiasing, "antialiasing")  # "no" antialiased a shrink, None did not
    if not isinstance(image, torch.Tensor):
        advice = "use imresize_np for numpy arrays" if isinstance(image, np.ndarray) else "give a float tensor"
        raise NotAnImageError(f"imresize expects a torch tensor, got {type(image).__name__}: {advice}")
    if not image.is_floating_point():
        raise NotAnImageError(f"imresize expects a floating-point tensor, got {image.dtype}; convert it first")
    if image.dim() < 2:
        raise InvalidImageError(f"imresize expects a tensor of shape (..., H, W), got {tuple(image.shape)}")
    if (scale is None) == (size is None):
        raise InvalidImageError("imresize needs exactly one of scale and size")
    if image.dim() >= 3 and image.shape[-1] in (1, 3, 4) and min(image.shape[-3], image.shape[-2]) > 4:
        logger.warning(  # a numpy image made a tensor as it is: its width and channels were resized
            "imresize resizes the last two dimensions of the %s tensor, %dx%d pixels of %d channels: "
            "channels last? use tensor.permute(2, 0, 1) (or imresize_np for HxWxC arrays)",
            "x".join(map(str, image.shape)),
            image.shape[-1],
            image.shape[-2],
            image.shape[-3],
        )
    in_h, in_w = image.shape[-2], image.shape[-1]
    if scale is not None:
        scale = _check_scale(scale)
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = scale
    else:
        out_h, out_w = _check_size(size)
        if in_h == 0 or in_w == 0:
            raise InvalidImageError(f"imresize cannot resize an empty ({in_w}x{in_h}) image to a size")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    _check_cost(image, out_h, out_w, scale_h, scale_w, antialiasing)

    # MATLAB resizes along the dimension with the smaller scale first (height on a tie); it
    # matters for rounding and for speed (shrink first, then work on fewer pixels).
    steps = [(-2, out_h, scale_h), (-1, out_w, scale_w)]
    if scale_w < scale_h:
        steps.reverse()
    output = image
    for dim, out_length, dim_scale in steps:
        output = _resize_along(output, dim, out_length, dim_scale, antialiasing)
        if after_pass is not None:
            output = after_pass(output)
    return output


def imresize_np(
    array: np.ndarray,
    scale: float | None = None,
    antialiasing: bool = True,
    *,
    size: tuple[int, int] | None = None,
    round_each_pass: bool = False,
) -> np.ndarray:
    """`imresize` for an HxW or HxWxC numpy array, returned in the array's dtype: by `scale`, or to `size`
    (height, width), as `imresize`.

    An integer array (uint8 as the evaluation protocol uses, uint16, signed) is resized in
    float64, rounded and clipped to its dtype's range (bicubic overshoots at edges: cast back
    unclipped, a uint16 edge would wrap to the other end of the range); a float array keeps its
    dtype and is neither rounded nor clipped. Bool and other dtypes are refused.

    `round_each_pass` rounds and clips an integer array after each of the two 1-D passes, as
    MATLAB's own `imresize` does on integer images (its mex writes each pass in the input's
    type): the authors' training patches were made so. The evaluation protocol (BasicSR's, and
    the published bicubic numbers) rounds once, at the end: the default. Both flags are True or
    False (`srfeat.errors.InvalidOptionError` otherwise).
    """
    round_each_pass = check_flag(round_each_pass, "round_each_pass")  # "no" rounded each pass
    if not isinstance(array, np.ndarray):
        raise NotAnImageError(f"imresize_np expects a numpy array, got {type(array).__name__}")
    if array.ndim not in (2, 3):
        raise InvalidImageError(f"imresize_np expects an HxW or HxWxC array, got shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "uif":
        raise NotAnImageError(
            f"imresize_np expects integer or float pixels, got {array.dtype}; e.g. array.astype(numpy.uint8)"
        )
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] > 4:
        logger.warning(
            "imresize_np resizes the %s array as %dx%d pixels of %d channels: channels first? "
            "use array.transpose(1, 2, 0)",
            "x".join(map(str, array.shape)),
            array.shape[1],
            array.shape[0],
            array.shape[2],
        )
    is_integer = kind in "ui"
    dtype = np.float64 if is_integer or array.dtype.itemsize > 4 else np.float32
    tensor = torch.from_numpy(array.astype(dtype))  # a copy: the input may be read-only or non-native
    if array.ndim == 3:
        tensor = tensor.permute(2, 0, 1)
    if not is_integer:
        if round_each_pass:
            raise InvalidImageError(f"round_each_pass rounds integer pixels; this array is {array.dtype}")
        resized = imresize(tensor, scale=scale, size=size, antialiasing=antialiasing)
        return (resized.permute(1, 2, 0) if array.ndim == 3 else resized).numpy().astype(array.dtype, copy=False)
    limits = np.iinfo(array.dtype)

    def to_integers(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.round().clamp_(limits.min, limits.max)

    resized = _imresize(tensor, scale, size, antialiasing, to_integers if round_each_pass else None)
    resized = to_integers(resized)  # once more is a no-op after each pass
    return (resized.permute(1, 2, 0) if array.ndim == 3 else resized).numpy().astype(array.dtype)
