"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for CPUs, in plain PyTorch.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): each 6x6 tile
of the input gives a 4x4 tile of the output with 36 multiplies per input/output channel pair
instead of 4 * 4 * 9 = 144. The input and output transforms are additions; what is left to
multiply is one (tiles, C) x (C, K) GEMM per tile position, 4x less work than the direct
convolution. On a CPU, where oneDNN's direct convolution already runs near the peak rate,
that is the only way left to make the generator's convolutions (128 -> 128 and 128 -> 512
channels, 99% of its multiplies) much faster. GPUs get this from cuDNN; this module is for
CPU float32 and leaves every other case to the library.

- `winograd_conv3x3`: the convolution on zero-bordered NHWC buffers, in bands of tiles that
  stay in cache, the bands spread over single-threaded workers;
- `WinogradConv2d` / `use_winograd`: an `nn.Conv2d` that trains through it (forward, and
  backward for the input and the weights), switched on in place in any network, state dict
  unchanged.

Winograd is exact in real arithmetic; in float32 it rounds differently from the direct
convolution, about 1e-6 relative per convolution for unit-scale data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.ops.workers import run_parallel, worker_threads

# What training, inference, the benchmarks and the tests use from here (the band workers: srfeat.ops.workers).
__all__ = [
    "MIN_WINOGRAD_SIZE",
    "POSITIONS",
    "TILE",
    "WinogradConv2d",
    "interior",
    "padded_buffer",
    "pixel_shuffle_target",
    "shuffle_channel_order",
    "tiles_for",
    "to_padded",
    "use_winograd",
    "winograd_applies",
    "winograd_conv3x3",
    "winograd_filter",
    "zero_border",
    "zero_outside",
]

TILE = 4  # output tile of F(4x4, 3x3)
TILE_IN = TILE + 2  # its input tile, 6x6
POSITIONS = TILE_IN * TILE_IN
# The transforms index their operands along the first axis: a tensor, or a list of its slices.
Rows = Sequence[torch.Tensor] | torch.Tensor
# Tiles per band: enough rows for efficient GEMMs, few enough that a band's 36 transformed
# matrices (36 * tiles * channels floats, 2.3 MB at 128 channels) stay in the caches.
TILES_PER_BAND = 128
# Smallest image side `WinogradConv2d` convolves by Winograd.
MIN_WINOGRAD_SIZE = 8

# The filter transform G (6x3) for the points 0, +-1, +-2 and infinity (Lavin & Gray 2016).
# B^T and A^T are applied as additions in the transforms below.
_WINOGRAD_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)


def _g_matrix(device: torch.device) -> torch.Tensor:
    return torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=device)


def winograd_filter(weight: torch.Tensor, flipped: bool = False) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (36, C, K): G g G^T of each filter, one (C, K) matrix per tile position.

    flipped: transform the filters of the transposed convolution instead (the input's
    gradient): g'[c, k] = g[k, c] turned by 180 degrees, giving (36, K, C).
    """
    # (3, 3, C_in, C_out): then G applies along the first axis, and along the second as a batch
    # of matrix products, and the result is laid out as the GEMMs need it. The one transposing
    # copy is of the 3x3 filters, 4x smaller than the transformed ones.
    hwio = weight.flip(2, 3).permute(2, 3, 0, 1) if flipped else weight.permute(2, 3, 1, 0)
    hwio = hwio.contiguous()
    g = _g_matrix(weight.device).to(weight.dtype)
    rows = (g @ hwio.view(3, -1)).view(TILE_IN, 3, -1)  # (6 a, 3 j, C*K)
    transformed = torch.matmul(g, rows)  # (6 a, 6 b, C*K)
    return transformed.view(POSITIONS, *hwio.shape[2:])


def _filter_gradient(grad_transformed: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
    """Adjoint of `winograd_filter`: (36, C, K) gradient -> (K, C, 3, 3) gradient, G^T dU G."""
    g = _g_matrix(grad_transformed.device).to(grad_transformed.dtype)
    rows = (g.t() @ grad_transformed.view(TILE_IN, -1)).view(3, TILE_IN, -1)  # (3 i, 6 b, C*K)
    hwio = torch.matmul(g.t(), rows).view(3, 3, in_channels, out_channels)
    return hwio.permute(3, 2, 0, 1).contiguous()


def _input_transform(rows: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """out[j] = sum_i B^T[j, i] rows[i], over the six rows (or columns) of every input tile.

    B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
           [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    with shared partial sums: 12 tensor operations instead of 20.
    """
    r0, r1, r2, r3, r4, r5 = rows
    a = torch.add(r4, r2, alpha=-4)
    b = torch.add(r3, r1, alpha=-4)
    torch.add(a, b, out=out[1])
    torch.sub(a, b, out=out[2])
    c = torch.sub(r4, r2)
    d = torch.sub(r3, r1)
    torch.add(c, d, alpha=2, out=out[3])
    torch.add(c, d, alpha=-2, out=out[4])
    torch.add(a, r0, alpha=4, out=out[0]).sub_(r2)
    torch.sub(r5, b, out=out[5]).add_(r3, alpha=-4)


def _output_transform(m: Rows, out: Rows) -> None:
    """out[j] = sum_i A^T[j, i] m[i], over one axis of the 6x6 products of every tile.

    A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]].
    """
    s12 = torch.add(m[1], m[2])
    d12 = torch.sub(m[1], m[2])
    s34 = torch.add(m[3], m[4])
    d34 = torch.sub(m[3], m[4])
    torch.add(m[0], s12, out=out[0]).add_(s34)
    torch.add(d12, d34, alpha=2, out=out[1])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.add(d12, d34, alpha=8, out=out[3]).add_(m[5])


def _output_transform_adjoint(dy: Rows, out: Rows) -> None:
    """out[i] = sum_j A^T[j, i] dy[j]: the gradient of `_output_transform` (4 -> 6)."""
    even = torch.add(dy[0], dy[2])
    odd = torch.add(dy[1], dy[3])
    torch.add(even, odd, out=out[1])
    torch.sub(even, odd, out=out[2])
    even = torch.add(dy[0], dy[2], alpha=4)
    odd = torch.add(dy[1], dy[3], alpha=4)
    torch.add(even, odd, alpha=2, out=out[3])
    torch.add(even, odd, alpha=-2, out=out[4])
    out[0].copy_(dy[0])
    out[5].copy_(dy[3])


# -- the convolution -------------------------------------------------------------------------


def tiles_for(size: int) -> int:
    return -(-size // TILE)


def padded_buffer(batch: int, height: int, width: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A zeroed NHWC buffer for an image: a one-pixel border, the interior rounded up to whole tiles."""
    return like.new_zeros(batch, TILE * tiles_for(height) + 2, TILE * tiles_for(width) + 2, channels)


def interior(buffer: torch.Tensor) -> torch.Tensor:
    """What a convolution writes of a padded buffer: all but the one-pixel border."""
    return buffer[:, 1:-1, 1:-1]


def zero_outside(buffer: torch.Tensor, height: int, width: int) -> None:
    """Zero what lies below and right of the image (written as parts of whole output tiles)."""
    buffer[:, 1 + height :].zero_()
    buffer[:, :, 1 + width :].zero_()


def zero_border(buffer: torch.Tensor) -> None:
    """Zero the one-pixel frame of a padded NHWC buffer (what a convolution reads as padding)."""
    buffer[:, 0].zero_()
    buffer[:, -1].zero_()
    buffer[:, :, 0].zero_()
    buffer[:, :, -1].zero_()


def shuffle_channel_order(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder a convolution's output channels (weights or bias, along dim 0) from
    PixelShuffle(2)'s c*4 + i*2 + j to (i*2 + j)*C + c, the order `pixel_shuffle_target` takes."""
    return tensor.unflatten(0, (-1, 4)).transpose(0, 1).flatten(0, 1).contiguous()


def pixel_shuffle_target(buffer: torch.Tensor) -> torch.Tensor:
    """A padded 2x-resolution NHWC buffer seen as (N, h, w, 2, 2, C): where PixelShuffle(2) puts
    sub-pixel (i, j) of channel c of the low-resolution pixel (y, x). Given as `out` to
    `winograd_conv3x3` with filters in `shuffle_channel_order`, the convolution writes the
    shuffled image directly, with no separate shuffle copy."""
    inner = interior(buffer)
    return inner.unflatten(1, (inner.shape[1] // 2, 2)).unflatten(3, (inner.shape[2] // 2, 2)).permute(0, 1, 3, 2, 4, 5)


Band = tuple[int, int, int, int, int, int]  # images [n0, n1), tile rows [t0, t1), tile columns [c0, c1)


def _plan_bands(batch: int, tiles_h: int, tiles_w: int, parallel: bool) -> list[Band]:
    """About TILES_PER_BAND tiles each: rows of one image (equal parts of a row that has more
    tiles), or whole images when they are small; at least one band per worker when `parallel`.

    A row is cut into parts because a band of a whole row of a wide, thin image (a 1x20000
    image's upsampler: 10,000 tiles) had temporaries of tens of MB: out of the caches, and,
    beyond glibc's mmap threshold, mapped and page-faulted afresh for every band.
    """
    workers = worker_threads() if parallel else 1
    per_image = tiles_h * tiles_w
    if batch == 1 or per_image >= TILES_PER_BAND:
        rows = max(1, min(tiles_h, TILES_PER_BAND // tiles_w))
        if batch < workers:
            rows = min(rows, -(-tiles_h * batch // workers))
        parts = -(-tiles_w // TILES_PER_BAND)
        columns = [(round(i * tiles_w / parts), round((i + 1) * tiles_w / parts)) for i in range(parts)]
        return [
            (n, n + 1, t0, min(tiles_h, t0 + rows), c0, c1)
            for n in range(batch)
            for t0 in range(0, tiles_h, rows)
            for c0, c1 in columns
        ]
    images = min(max(1, TILES_PER_BAND // per_image), -(-batch // workers))
    return [(n0, min(batch, n0 + images), 0, tiles_h, 0, tiles_w) for n0 in range(0, batch, images)]


def _transform_band(band: torch.Tensor, rows: int) -> torch.Tensor:
    """V = B^T d B for the tiles of a band (its padded rows: 4 * rows + 2): (36, tiles, C).

    The six rows of every tile (stride 4), then its six columns; the result is laid out
    (tile row, tile column, N, tiles down, tiles across, C): 36 (tiles, C) matrices.
    """
    batch, _, padded_w, channels = band.shape
    tiles_w = (padded_w - 2) // TILE
    along_h = band.new_empty(TILE_IN, batch, rows, padded_w, channels)
    _input_transform([band[:, i::TILE][:, :rows] for i in range(TILE_IN)], along_h)
    transformed = band.new_empty(TILE_IN, TILE_IN, batch, rows, tiles_w, channels)
    columns = [along_h[:, :, :, j::TILE][:, :, :, :tiles_w] for j in range(TILE_IN)]
    _input_transform(columns, transformed.transpose(0, 1))
    return transformed.view(POSITIONS, -1, channels)


def _tiles_of(band: torch.Tensor, rows: int, tiles_w: int) -> torch.Tensor:
    """(N, 4*rows, 4*tiles_w, *k) -> (4 columns, 4 rows, N, rows, tiles_w, *k): a view."""
    k_dims = range(5, band.dim() + 2)
    return band.unflatten(1, (rows, TILE)).unflatten(3, (tiles_w, TILE)).permute(4, 2, 0, 1, 3, *k_dims)


def winograd_conv3x3(
    padded: torch.Tensor,
    filters: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    leaky_slope: float | None = None,
    residual: torch.Tensor | None = None,
    parallel: bool = True,
    keep_transformed: dict[Band, torch.Tensor] | None = None,
) -> None:
    """3x3 convolution, stride 1, zero padding 1, of an NHWC image.

    padded: (N, 4*th + 2, 4*tw + 2, C): the image with a zero border, and zeros right of and
        below it up to whole 4x4 tiles (`padded_buffer`);
    filters: (36, C, K) from `winograd_filter`; bias: (K,) or None;
    out: (N, 4*th, 4*tw, *k_shape), prod(k_shape) = K, any strides: where each output pixel
        goes (a strided view writes into the interior of a padded buffer, or straight into the
        places PixelShuffle would move the pixels to);
    leaky_slope: LeakyReLU applied to each band as it is written, while it is in cache;
    residual: shaped like `out`, added to each band as it is written (after the LeakyReLU);
    parallel: spread the bands over worker threads (`run_parallel`);
    keep_transformed: if given, receives each band's transformed input (band -> (36, tiles,
        C)), which the weight gradient needs.
    """
    batch, padded_h, padded_w, _ = padded.shape
    tiles_h, tiles_w = (padded_h - 2) // TILE, (padded_w - 2) // TILE
    if out.shape[:3] != (batch, TILE * tiles_h, TILE * tiles_w) or math.prod(out.shape[3:]) != filters.shape[2]:
        raise ValueError(
            f"output {tuple(out.shape)} does not fit input {tuple(padded.shape)} and filters {tuple(filters.shape)}"
        )
    k_shape = out.shape[3:]

    def run_band(band: Band) -> None:
        n0, n1, t0, t1, c0, c1 = band
        rows, columns = t1 - t0, c1 - c0
        transformed = _transform_band(padded[n0:n1, TILE * t0 : TILE * t1 + 2, TILE * c0 : TILE * c1 + 2], rows)
        if keep_transformed is not None:
            keep_transformed[band] = transformed
        products = torch.bmm(transformed, filters)
        if bias is not None:
            # Column 1 of A^T is all ones, so a bias added at tile position (1, 1) reaches all
            # 16 outputs of the tile: an addition on 1/36 of the products, not on the output.
            products[TILE_IN + 1].add_(bias)
        products = products.view(TILE_IN, TILE_IN, n1 - n0, rows, columns, *k_shape)
        along_rows = padded.new_empty(TILE, TILE_IN, n1 - n0, rows, columns, *k_shape)
        _output_transform(products, along_rows)
        written = out[n0:n1, TILE * t0 : TILE * t1, TILE * c0 : TILE * c1]
        _output_transform([along_rows[:, j] for j in range(TILE_IN)], _tiles_of(written, rows, columns))
        if leaky_slope is not None:
            F.leaky_relu_(written, leaky_slope)
        if residual is not None:
            written.add_(residual[n0:n1, TILE * t0 : TILE * t1, TILE * c0 : TILE * c1])

    bands = _plan_bands(batch, tiles_h, tiles_w, parallel)
    if parallel:
        run_parallel(run_band, bands)
    else:
        for band in bands:
            run_band(band)


def _filter_gradient_bands(grad_padded: torch.Tensor, kept: dict[Band, torch.Tensor]) -> torch.Tensor:
    """sum over tiles of V^T dM, dM = A dY A^T: the (36, C, K) gradient of the transformed filters,
    band by band as the forward pass transformed the input (`kept`: band -> V)."""
    out_channels = grad_padded.shape[3]
    grad_out = interior(grad_padded)
    partial: dict[Band, torch.Tensor] = {}

    def run_band(band: Band) -> None:
        n0, n1, t0, t1, c0, c1 = band
        rows, columns, images = t1 - t0, c1 - c0, n1 - n0
        # (N, rows, 4 a, columns, 4 b, K): rows of the tiles (4 -> 6), then columns (4 -> 6),
        # keeping b next to K so that the second pass reads nearby memory.
        part = grad_out[n0:n1, TILE * t0 : TILE * t1, TILE * c0 : TILE * c1]
        tiles = part.unflatten(1, (rows, TILE)).unflatten(3, (columns, TILE))
        along_rows = grad_out.new_empty(TILE_IN, images, rows, columns, TILE, out_channels)
        _output_transform_adjoint([tiles[:, :, a] for a in range(TILE)], along_rows)
        grad_products = grad_out.new_empty(TILE_IN, TILE_IN, images, rows, columns, out_channels)
        _output_transform_adjoint([along_rows[..., b, :] for b in range(TILE)], grad_products.transpose(0, 1))
        partial[band] = torch.bmm(kept[band].transpose(1, 2), grad_products.view(POSITIONS, -1, out_channels))

    run_parallel(run_band, sorted(kept))
    # Summed in band order, so the result does not depend on thread timing.
    bands = sorted(partial)
    total = partial[bands[0]]
    for band in bands[1:]:
        total.add_(partial[band])
    return total


def to_padded(image: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in any memory layout -> zero-bordered NHWC buffer (`padded_buffer`), one copy
    (only the border and the margin to whole tiles are zeroed, not the whole buffer first)."""
    batch, channels, height, width = image.shape
    buffer = image.new_empty(batch, TILE * tiles_for(height) + 2, TILE * tiles_for(width) + 2, channels)
    buffer[:, 0].zero_()
    buffer[:, 1 + height :].zero_()
    buffer[:, 1 : 1 + height, 0].zero_()
    buffer[:, 1 : 1 + height, 1 + width :].zero_()
    buffer[:, 1 : 1 + height, 1 : 1 + width] = image.permute(0, 2, 3, 1)
    return buffer


class _WinogradConv3x3(torch.autograd.Function):
    """conv2d(x, weight, bias, padding=1) for 3x3 filters, by Winograd, with its gradients."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, keep_for_weight: bool
    ) -> torch.Tensor:
        batch, _, height, width = x.shape
        out_channels = weight.shape[0]
        # Written as NHWC, returned as a channels_last NCHW tensor (not a view: a view would
        # forbid in-place operations such as ReLU(inplace=True) on the result).
        out = torch.empty(
            batch,
            out_channels,
            TILE * tiles_for(height),
            TILE * tiles_for(width),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        kept: dict[Band, torch.Tensor] | None = {} if keep_for_weight else None
        winograd_conv3x3(to_padded(x), winograd_filter(weight), bias, out.permute(0, 2, 3, 1), keep_transformed=kept)
        ctx.kept = kept
        ctx.shape = (height, width)
        ctx.save_for_backward(weight)
        if out.shape[2:] != (height, width):
            out = out[:, :, :height, :width].contiguous(memory_format=torch.channels_last)
        return out

    @staticmethod
    def backward(ctx: Any, *grad_outputs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad_output,) = grad_outputs
        (weight,) = ctx.saved_tensors
        height, width = ctx.shape
        out_channels, in_channels = weight.shape[:2]
        grad_padded = to_padded(grad_output)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # The input's gradient is the convolution of the output's gradient with the
            # filters flipped and their channel axes swapped.
            flipped = winograd_filter(weight, flipped=True)
            grad = grad_output.new_empty(
                grad_padded.shape[0], grad_padded.shape[1] - 2, grad_padded.shape[2] - 2, in_channels
            )
            winograd_conv3x3(grad_padded, flipped, None, grad)
            grad_input = grad[:, :height, :width].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            if ctx.kept is None:
                raise RuntimeError("the Winograd convolution kept no transformed input for the weight gradient")
            grad_weight = _filter_gradient(_filter_gradient_bands(grad_padded, ctx.kept), out_channels, in_channels)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None


class WinogradConv2d(nn.Conv2d):
    """An `nn.Conv2d` (3x3, stride 1, padding 1) that convolves by Winograd F(4x4, 3x3) on CPU
    float32 tensors outside autocast, and as `nn.Conv2d` otherwise. Same parameters and state
    dict; made by `use_winograd`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and weight.dtype == torch.float32
            and input.dim() == 4
            # On smaller images whole 4x4 tiles waste too much (6x6 computes 8x8).
            and min(input.shape[-2:]) >= MIN_WINOGRAD_SIZE
            and not torch.is_autocast_enabled("cpu")
        ):
            keep_for_weight = torch.is_grad_enabled() and weight.requires_grad
            return _WinogradConv3x3.apply(input, weight, bias, keep_for_weight)
        return super()._conv_forward(input, weight, bias)


def winograd_applies(conv: nn.Module, min_channels: int) -> bool:
    """A plain 3x3, stride-1, padding-1 convolution with at least `min_channels` input and
    output channels (with fewer, the transforms cost more than the multiplies they save)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


def use_winograd(module: nn.Module, min_channels: int = 64) -> int:
    """Switch every eligible `nn.Conv2d` in `module` to `WinogradConv2d`, in place; returns how many.

    Parameters, state dict and outputs (to float rounding) are unchanged.
    """
    count = 0
    for conv in module.modules():
        if winograd_applies(conv, min_channels):
            conv.__class__ = WinogradConv2d
            count += 1
    return count
