"""The generator for CPU inference with Winograd convolutions: same function, half the work.

`optimize_for_inference(generator)` returns a module that computes what `generator.eval()`
computes (up to float rounding) with:

- BatchNorm folded into the convolutions (`srfeat.inference.fused.fold_batchnorm`), and the
  output's (x + 1) / 2 folded into the tail;
- on a CPU in float32, every 3x3 convolution with 128 input channels (the 32 of the residual
  body and the two of the upsampler, 99% of the multiplies) computed by Winograd's minimal
  filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
  CVPR 2016): each 6x6 input tile gives a 4x4 output tile for 36 multiplies per
  input/output channel pair instead of 144. The transforms are additions (see
  `_input_transform`), so the channel GEMMs, the only multiplications left, are 4x smaller;
- activations in NHWC buffers with a zero border that the next convolution reads as its
  padding (no padding copies); PixelShuffle for free, by the output transform writing each
  sub-pixel where the shuffle puts it; LeakyReLU, residual additions and the 1x1 long skips
  applied in place, band by band while the band is in cache;
- the work cut into bands of tiles run by one worker thread per intra-op thread (each worker
  single-threaded), so a core synchronises with the others once per convolution rather than
  once per tensor operation;
- the upsampler and tail run on bands of rows, so memory stays bounded for any input size.

Elsewhere (a GPU, bfloat16 or float16, or `algorithm="direct"`) the folded network runs with
the library's convolutions in channels_last.

Winograd is exact in real arithmetic; in float32 it rounds differently from direct
convolution (about 1e-5 relative per convolution; the tests bound the whole network's output).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.generator import LEAKY_SLOPE, SRFeatGenerator
from srfeat.inference.fused import fold_batchnorm

__all__ = ["FastSRFeatGenerator", "optimize_for_inference", "winograd_conv3x3", "winograd_filter"]

logger = logging.getLogger(__name__)

Algorithm = Literal["auto", "winograd", "direct"]
T = TypeVar("T")

TILE = 4  # output tile of F(4x4, 3x3)
TILE_IN = TILE + 2  # its input tile, 6x6
# Tiles per band: enough rows for efficient GEMMs, few enough that a band's 36 transformed
# matrices (36 * tiles * channels floats, 4.5 MB at 128 channels) stay in the caches.
TILES_PER_BAND = 256
# Low-resolution pixels per upsampler band: the band's 4x-resolution 128-channel buffer takes
# 8 kB per low-resolution pixel in float32, so about 64 MB per worker.
DEFAULT_UPSAMPLE_PIXELS = 8192

# Winograd F(4x4, 3x3) filter transform G (6x3) for the points 0, +-1, +-2 and infinity
# (Lavin & Gray 2016). B^T and A^T are applied as additions in the transforms below.
_WINOGRAD_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)


def winograd_filter(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (36, C, K): G g G^T of each filter, one (C, K) matrix per tile position.

    Computed in float64, so the transformed filters are the correctly rounded values.
    """
    g = torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=weight.device)
    transformed = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)
    return transformed.reshape(TILE_IN * TILE_IN, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


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


def _output_transform(m: Sequence[torch.Tensor], out: Sequence[torch.Tensor]) -> None:
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


# -- worker threads --------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
_in_worker = threading.local()


def _init_worker() -> None:
    # The intra-op thread count is per thread: each worker runs its operations on its own core.
    torch.set_num_threads(1)
    _in_worker.active = True


def _run_parallel(work: Callable[[T], None], items: Sequence[T]) -> None:
    """work(item) for every item, spread over as many single-threaded workers as this thread
    has intra-op threads (inline when that is one, or when already inside a worker)."""
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1 or getattr(_in_worker, "active", False):
        for item in items:
            work(item)
        return
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="srfeat-winograd", initializer=_init_worker)
    # Interleaved shares, one per worker: each worker runs its items in order, so bands next
    # to each other run at the same time and share the input rows they overlap on.
    # Inference mode is per thread: carry the caller's into the workers.
    inference = torch.is_inference_mode_enabled()

    def run_share(share: Sequence[T]) -> None:
        with torch.inference_mode(inference):
            for item in share:
                work(item)

    futures = [pool.submit(run_share, items[k::workers]) for k in range(workers)]
    for future in futures:
        future.result()


# -- the convolution -------------------------------------------------------------------------


def tiles_for(size: int) -> int:
    return -(-size // TILE)


def padded_buffer(batch: int, height: int, width: int, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A zeroed NHWC buffer for an image: a one-pixel border, the interior rounded up to whole tiles."""
    return like.new_zeros(batch, TILE * tiles_for(height) + 2, TILE * tiles_for(width) + 2, channels)


def _interior(buffer: torch.Tensor) -> torch.Tensor:
    """What a convolution writes of a padded buffer: all but the one-pixel border."""
    return buffer[:, 1:-1, 1:-1]


def _zero_outside(buffer: torch.Tensor, height: int, width: int) -> None:
    """Zero what lies below and right of the image (written as parts of whole output tiles)."""
    buffer[:, 1 + height :].zero_()
    buffer[:, :, 1 + width :].zero_()


def winograd_conv3x3(
    padded: torch.Tensor,
    filters: torch.Tensor,
    bias: torch.Tensor,
    out: torch.Tensor,
    leaky_slope: float | None = None,
    residual: torch.Tensor | None = None,
    parallel: bool = True,
) -> None:
    """3x3 convolution, stride 1, zero padding 1, of an NHWC image, by Winograd F(4x4, 3x3).

    padded: (N, 4*th + 2, 4*tw + 2, C): the image with a zero border, and zeros right of and
        below it up to whole 4x4 tiles (`padded_buffer`);
    filters: (36, C, K) from `winograd_filter`; bias: (K,);
    out: (N, 4*th, 4*tw, *k_shape), prod(k_shape) = K, any strides: where each output pixel
        goes (a strided view writes into the interior of a padded buffer, or straight into the
        places PixelShuffle would move the pixels to);
    leaky_slope: LeakyReLU applied to each band as it is written, while it is in cache;
    residual: shaped like `out`, added to each band as it is written (after the LeakyReLU).
    """
    batch, padded_h, padded_w, channels = padded.shape
    tiles_h, tiles_w = (padded_h - 2) // TILE, (padded_w - 2) // TILE
    if out.shape[:3] != (batch, TILE * tiles_h, TILE * tiles_w) or math.prod(out.shape[3:]) != filters.shape[2]:
        raise ValueError(f"output {tuple(out.shape)} does not fit input {tuple(padded.shape)} and filters {tuple(filters.shape)}")
    k_shape = out.shape[3:]
    band_rows = max(1, min(tiles_h, TILES_PER_BAND // max(1, batch * tiles_w)))
    if parallel:  # at least one band per worker
        band_rows = min(band_rows, -(-tiles_h // torch.get_num_threads()))

    def run_band(t0: int) -> None:
        rows = min(band_rows, tiles_h - t0)
        band = padded[:, TILE * t0 : TILE * (t0 + rows) + 2]
        # The six rows of every tile (stride 4), then the six columns: V = B^T d B, laid out
        # (tile row, tile column, N, tiles down, tiles across, C) = 36 (tiles, C) matrices.
        along_h = padded.new_empty(TILE_IN, batch, rows, padded_w, channels)
        _input_transform([band[:, i::TILE][:, :rows] for i in range(TILE_IN)], along_h)
        transformed = padded.new_empty(TILE_IN, TILE_IN, batch, rows, tiles_w, channels)
        columns = [along_h[:, :, :, j::TILE][:, :, :, :tiles_w] for j in range(TILE_IN)]
        _input_transform(columns, transformed.transpose(0, 1))
        products = torch.bmm(transformed.view(TILE_IN * TILE_IN, -1, channels), filters)
        # Column 1 of A^T is all ones, so a bias added at tile position (1, 1) reaches all 16
        # outputs of the tile: one addition on 1/36 of the products instead of one on the output.
        products[TILE_IN + 1].add_(bias)
        products = products.view(TILE_IN, TILE_IN, batch, rows, tiles_w, *k_shape)
        along_rows = padded.new_empty(TILE, TILE_IN, batch, rows, tiles_w, *k_shape)
        _output_transform(products, along_rows)
        written = out[:, TILE * t0 : TILE * (t0 + rows)]
        # (N, rows, 4, tiles_w, 4, k) -> (4 columns, 4 rows, N, rows, tiles_w, k)
        target = written.unflatten(1, (rows, TILE)).unflatten(3, (tiles_w, TILE)).permute(4, 2, 0, 1, 3, *range(5, 5 + len(k_shape)))
        _output_transform([along_rows[:, j] for j in range(TILE_IN)], target)
        if leaky_slope is not None:
            F.leaky_relu_(written, leaky_slope)
        if residual is not None:
            written.add_(residual[:, TILE * t0 : TILE * (t0 + rows)])

    starts = list(range(0, tiles_h, band_rows))
    if parallel:
        _run_parallel(run_band, starts)
    else:
        for t0 in starts:
            run_band(t0)


def _shuffled_target(buffer: torch.Tensor) -> torch.Tensor:
    """A padded 2x-resolution buffer seen as (N, h, w, 2, 2, C): where PixelShuffle(2) puts
    sub-pixel (i, j) of channel c of the low-resolution pixel (y, x), for a convolution whose
    output channels are ordered (i, j, c) (`_shuffle_channel_order`)."""
    inner = _interior(buffer)
    return inner.unflatten(1, (inner.shape[1] // 2, 2)).unflatten(3, (inner.shape[2] // 2, 2)).permute(0, 1, 3, 2, 4, 5)


def _shuffle_channel_order(tensor: torch.Tensor) -> torch.Tensor:
    """Reorder output channels from PixelShuffle's c*4 + i*2 + j to (i*2 + j)*C + c."""
    return tensor.unflatten(0, (-1, 4)).transpose(0, 1).flatten(0, 1).contiguous()


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone(), requires_grad=False)


class FastSRFeatGenerator(nn.Module):
    """Inference-only SRFeat generator; made by `optimize_for_inference`.

    Same tensors in and out as `SRFeatGenerator` in eval mode: (N, 3, h, w) in [0, 1] ->
    (N, 3, scale*h, scale*w), unclamped. Its weights are frozen parameters (all 1-4
    dimensional, so `.to(dtype=..., memory_format=...)` works as on any module).
    """

    def __init__(self, generator: SRFeatGenerator, algorithm: Algorithm = "auto", upsample_pixels: int = DEFAULT_UPSAMPLE_PIXELS) -> None:
        super().__init__()
        if algorithm not in ("auto", "winograd", "direct"):
            raise ValueError(f"algorithm must be 'auto', 'winograd' or 'direct', got {algorithm!r}")
        generator = generator.eval()
        self.algorithm = algorithm
        self.scale = generator.scale
        self.num_features = generator.num_features
        self.num_blocks = generator.num_blocks
        self.in_channels = generator.in_channels
        # Low-resolution pixels per upsampler band (per worker): bounds the upsampler's memory.
        self.upsample_pixels = upsample_pixels
        channels = self.num_features
        self.head_weight = _frozen(generator.head.weight)
        self.head_bias = _frozen(generator.head.bias)
        folded = [fold_batchnorm(conv, bn) for block in generator.body for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2))]
        # Rows [K*i, K*(i+1)): convolution i of the body (two per block), BatchNorm folded.
        self.body_weight = _frozen(torch.cat([conv.weight for conv in folded]))
        self.body_bias = _frozen(torch.stack([conv.bias for conv in folded]))
        # skip_weight[i]: (C_in, C_out), so that an NHWC x @ skip_weight[i] is the i-th 1x1 skip.
        skips = [skip.weight[:, :, 0, 0].t() for skip in generator.long_skips]
        self.skip_weight = _frozen(torch.stack(skips) if skips else generator.head.weight.new_zeros(0, channels, channels))
        self.upsample_weight = _frozen(torch.cat([stage.conv.weight for stage in generator.upsampler]))
        self.upsample_bias = _frozen(torch.stack([stage.conv.bias for stage in generator.upsampler]))
        # The generator returns (tail(x) + 1) / 2: fold that affine map into the tail.
        self.tail_weight = _frozen(generator.tail.weight * 0.5)
        self.tail_bias = _frozen((generator.tail.bias + 1.0) * 0.5)
        if algorithm != "direct":
            stages = len(generator.upsampler)
            # (36 * i + position, C, K): the Winograd filters of body convolution i.
            self.body_winograd = _frozen(torch.cat([winograd_filter(conv.weight) for conv in folded]))
            upsample = self.upsample_weight.unflatten(0, (stages, -1))
            self.upsample_winograd = _frozen(torch.cat([winograd_filter(_shuffle_channel_order(w)) for w in upsample]))
            self.upsample_winograd_bias = _frozen(torch.stack([_shuffle_channel_order(b) for b in self.upsample_bias]))
            # The tail as one GEMM to the 27 (tap, output channel) products, then 9 shifted
            # additions: a direct 3x3 convolution to 3 channels has little to vectorise over.
            # Columns ordered (dy, dx, output channel).
            self.tail_taps = _frozen(self.tail_weight.permute(1, 2, 3, 0).reshape(channels, 27))

    @property
    def receptive_radius(self) -> int:
        """How far (in input pixels) an output pixel sees: tiles overlapping by this are exact."""
        head_reach = self.head_weight.shape[-1] // 2
        body_reach = 2 * self.num_blocks
        upsampler_reach = sum(0.5**stage for stage in range(self.upsample_bias.shape[0] + 1))
        return math.ceil(head_reach + body_reach + upsampler_reach)

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """Winograd runs on CPU float32 inputs (unless built with algorithm="direct")."""
        return hasattr(self, "body_winograd") and x.device.type == "cpu" and x.dtype == torch.float32 and self.body_winograd.dtype == torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected an (N, {self.in_channels}, h, w) batch, got {tuple(x.shape)}")
        with torch.inference_mode():
            x = x.to(self.head_weight.dtype)
            if self.uses_winograd(x):
                return self._forward_winograd(x)
            return self._forward_direct(x)

    # -- library convolutions (GPU, reduced precision) -----------------------------------------

    def _forward_direct(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.num_features
        x = (x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)
        x = F.conv2d(x, self.head_weight, self.head_bias, padding=4)
        skip_sum: torch.Tensor | None = None
        for i in range(self.num_blocks):
            weights = self.body_weight[2 * i * channels : (2 * i + 2) * channels]
            y = F.leaky_relu_(F.conv2d(x, weights[:channels], self.body_bias[2 * i], padding=1), LEAKY_SLOPE)
            x = F.conv2d(y, weights[channels:], self.body_bias[2 * i + 1], padding=1).add_(x)
            if i < self.num_blocks - 1:
                skip = F.conv2d(x, self.skip_weight[i].t()[:, :, None, None])
                skip_sum = skip if skip_sum is None else skip_sum.add_(skip)
        if skip_sum is not None:
            x = x.add_(skip_sum)
        for weight, bias in zip(self.upsample_weight.split(4 * channels), self.upsample_bias):
            # LeakyReLU commutes with the shuffle (a permutation): apply it before, in place.
            x = F.pixel_shuffle(F.leaky_relu_(F.conv2d(x, weight, bias, padding=1), LEAKY_SLOPE), 2)
        return F.conv2d(x, self.tail_weight, self.tail_bias, padding=1).contiguous()

    # -- Winograd on the CPU -------------------------------------------------------------------

    def _forward_winograd(self, x: torch.Tensor) -> torch.Tensor:
        features, height, width = self._features_winograd(x)
        batch = x.shape[0]
        scale = self.scale
        out = x.new_empty(batch, height * scale, width * scale, self.in_channels)
        # Bands of low-resolution rows with one real row of context above and below: the first
        # upsampling convolution reads real neighbours, so only the later ones see the band's
        # edge, and they reach less than one low-resolution row into the band.
        band_rows = max(1, min(height, self.upsample_pixels // max(1, batch * width)))
        bands = [(top, min(height, top + band_rows)) for top in range(0, height, band_rows)]
        _run_parallel(lambda band: self._upsample_band(features, band[0], band[1], height, out), bands)
        return out.permute(0, 3, 1, 2).contiguous()

    def _features_winograd(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Head and body with the long skips: (padded NHWC features, height, width)."""
        batch, _, height, width = x.shape
        channels = self.num_features
        head = F.conv2d((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last), self.head_weight, self.head_bias, padding=4)
        current = padded_buffer(batch, height, width, channels, head)
        current[:, 1 : 1 + height, 1 : 1 + width] = head.permute(0, 2, 3, 1)
        del head
        middle, following, skip_sum = torch.zeros_like(current), torch.zeros_like(current), torch.zeros_like(current)
        positions = TILE_IN * TILE_IN
        for i in range(self.num_blocks):
            first, second = 2 * i, 2 * i + 1
            winograd_conv3x3(
                current, self.body_winograd[positions * first : positions * (first + 1)], self.body_bias[first], _interior(middle), LEAKY_SLOPE
            )
            _zero_outside(middle, height, width)
            winograd_conv3x3(
                middle,
                self.body_winograd[positions * second : positions * (second + 1)],
                self.body_bias[second],
                _interior(following),
                residual=_interior(current),
            )
            _zero_outside(following, height, width)
            current, following = following, current
            if i < self.num_blocks - 1:
                # Over the whole padded buffer (zeros in, zeros out), as one GEMM.
                skip_sum.view(-1, channels).addmm_(current.view(-1, channels), self.skip_weight[i])
        return current.add_(skip_sum), height, width

    def _upsample_band(self, features: torch.Tensor, top: int, bottom: int, height: int, out: torch.Tensor) -> None:
        """Upsampler and tail for low-resolution rows [top, bottom), written into `out` (NHWC)."""
        batch, _, padded_w, channels = features.shape
        lo, hi = max(0, top - 1), min(height, bottom + 1)
        rows = hi - lo
        # Padded rows lo .. hi + 1 hold image rows lo - 1 .. hi: the band and one neighbouring
        # row on each side (or the zero border).
        current = features.new_zeros(batch, TILE * tiles_for(rows) + 2, padded_w, channels)
        current[:, : rows + 2] = features[:, lo : hi + 2]
        scale = self.scale
        band_h, band_w = rows, out.shape[2] // scale
        positions = TILE_IN * TILE_IN
        for stage in range(self.upsample_bias.shape[0]):
            band_h, band_w = 2 * band_h, 2 * band_w
            # Twice the whole tiles of the input: still whole tiles, plus the border.
            upsampled = current.new_zeros(batch, 2 * (current.shape[1] - 2) + 2, 2 * (current.shape[2] - 2) + 2, channels)
            winograd_conv3x3(
                current,
                self.upsample_winograd[positions * stage : positions * (stage + 1)],
                self.upsample_winograd_bias[stage],
                _shuffled_target(upsampled),
                LEAKY_SLOPE,
                parallel=False,
            )
            # What lies beyond the band is zero for the next convolution, as beyond an image.
            _zero_outside(upsampled, band_h, band_w)
            current = upsampled
        tail = self._tail(current, band_h, band_w)
        out[:, top * scale : bottom * scale] = tail[:, (top - lo) * scale : (bottom - lo) * scale]

    def _tail(self, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """3x3 convolution to 3 channels of a zero-bordered NHWC buffer: one GEMM to the 27
        (tap, channel) products of every pixel, then each output sums its nine taps."""
        batch, _, padded_w, channels = padded.shape
        out = self.tail_bias.view(1, 1, 1, -1).expand(batch, height, width, -1).clone()
        rows_per_gemm = max(1, (1 << 14) // max(1, padded_w * batch))  # 16k pixels: in cache
        for y0 in range(0, height, rows_per_gemm):
            rows = min(rows_per_gemm, height - y0)
            products = torch.mm(padded[:, y0 : y0 + rows + 2].reshape(-1, channels), self.tail_taps)
            products = products.view(batch, rows + 2, padded_w, 3, 3, -1)
            target = out[:, y0 : y0 + rows]
            for dy in range(3):
                for dx in range(3):
                    target.add_(products[:, dy : dy + rows, dx : dx + width, dy, dx])
        return out


def optimize_for_inference(generator: SRFeatGenerator, algorithm: Algorithm = "auto") -> FastSRFeatGenerator:
    """The generator's eval-mode function as a fast, inference-only module on the same device.

    algorithm: "winograd" or "auto" (Winograd F(4x4, 3x3) for the 128-channel 3x3
    convolutions on CPU float32 inputs, library convolutions otherwise), or "direct" (library
    convolutions always: BatchNorm folded, channels_last). For bfloat16 on a CPU with native
    support (or float16/bfloat16 on a GPU) convert the result with `.to(dtype)`; the direct
    path then runs in that precision.
    """
    was_training = generator.training
    try:
        fast = FastSRFeatGenerator(generator.eval(), algorithm)
    finally:
        generator.train(was_training)
    return fast.to(generator.head.weight.device)
