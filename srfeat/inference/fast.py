"""The generator for fast inference: same function, less work.

`optimize_for_inference(generator)` returns a module that computes what `generator.eval()`
computes (up to float rounding) with:

- BatchNorm folded into the convolutions (`srfeat.inference.fused.fold_batchnorm`), and the
  output's (x + 1) / 2 folded into the tail;
- on a CPU in float32, every 3x3 convolution with 128 input channels (99% of the multiplies)
  by a Winograd algorithm, several times fewer multiplies than direct convolution: the 32
  of the residual body by NNPACK's F(6x6, 3x3) where PyTorch has NNPACK (C kernels, the
  fastest here for 128 -> 128), else by `srfeat.archs.winograd`'s F(4x4, 3x3); the two of
  the upsampler (128 -> 512) always by ours, which is faster there and writes each
  sub-pixel straight to where PixelShuffle puts it;
- the upsampler in NHWC buffers with a zero border that the next convolution reads as its
  padding (no padding copies), LeakyReLU applied band by band while the band is in cache,
  the tail as one GEMM plus shifted additions; the 1x1 long skips and residual additions in
  place;
- the upsampler and tail run on bands of rows, spread over single-threaded workers, so memory
  stays bounded for any input size; and only the requested region of a tile is upsampled.

Elsewhere (a GPU, bfloat16 or float16, or `algorithm="direct"`) the folded network runs with
the library's convolutions in channels_last.

Winograd is exact in real arithmetic; in float32 it rounds differently from direct
convolution (the tests bound the whole network's output: below 1e-4 on [0, 1]).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.generator import LEAKY_SLOPE, SRFeatGenerator
from srfeat.archs.winograd import (
    POSITIONS,
    TILE,
    interior,
    padded_buffer,
    run_parallel,
    tiles_for,
    winograd_conv3x3,
    winograd_filter,
    zero_outside,
)
from srfeat.inference.fused import fold_batchnorm

logger = logging.getLogger(__name__)

__all__ = ["FastSRFeatGenerator", "optimize_for_inference"]

Algorithm = Literal["auto", "winograd", "direct"]
Region = tuple[int, int, int, int]  # top, left, bottom, right, in input pixels

# Low-resolution pixels per upsampler band and worker: at scale 4 in float32 a band takes
# 21 feature maps (its input, the 2x and 4x-resolution buffers) per pixel, about 170 MB.
DEFAULT_UPSAMPLE_PIXELS = 16384


def nnpack_available() -> bool:
    """Whether PyTorch's NNPACK runs here (asking also initialises it, which its convolution needs)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def _shuffled_target(buffer: torch.Tensor) -> torch.Tensor:
    """A padded 2x-resolution buffer seen as (N, h, w, 2, 2, C): where PixelShuffle(2) puts
    sub-pixel (i, j) of channel c of the low-resolution pixel (y, x), for a convolution whose
    output channels are ordered (i, j, c) (`_shuffle_channel_order`)."""
    inner = interior(buffer)
    return inner.unflatten(1, (inner.shape[1] // 2, 2)).unflatten(3, (inner.shape[2] // 2, 2)).permute(0, 1, 3, 2, 4, 5)


def _zero_border(buffer: torch.Tensor) -> None:
    """Zero the one-pixel frame of an NHWC buffer."""
    buffer[:, 0].zero_()
    buffer[:, -1].zero_()
    buffer[:, :, 0].zero_()
    buffer[:, :, -1].zero_()


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
        # NNPACK's Winograd F(6x6, 3x3) (C, AVX2) runs the body's 128 -> 128 convolutions
        # faster than `winograd_conv3x3`; ours runs the upsampler faster (and writes the
        # shuffled image directly). "auto" takes the faster of each where NNPACK is there.
        self.use_nnpack = algorithm == "auto" and nnpack_available()
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

    @property
    def memory_format(self) -> torch.memory_format:
        """The input layout that costs no conversion (the Upscaler's protocol): NNPACK's NCHW."""
        return torch.contiguous_format if self.use_nnpack else torch.channels_last

    def bytes_per_pixel(self) -> tuple[int, int]:
        """Peak bytes per input pixel of the body, and of the upsampler per band pixel.

        The body holds four zero-bordered feature maps (block input, the two convolution
        outputs, the skip sum) and the head's output briefly; each worker's upsampler band
        holds its input, the 2x and the 4x-resolution buffers (1 + 4 + 16 feature maps per
        input pixel). Bands of transformed tiles are bounded and small.
        """
        itemsize = self.head_weight.element_size()
        feature = self.num_features * itemsize
        stages = self.upsample_bias.shape[0]
        upsample = feature * sum(4**stage for stage in range(stages + 1)) * max(1, torch.get_num_threads())
        return 5 * feature, upsample

    def compile_parts(self, **options: object) -> None:
        """Nothing to compile: the Winograd path is its own kernels (kept for the Upscaler's protocol)."""

    def forward(self, x: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, 3, scale*h, scale*w), unclamped.

        With `region` = (top, left, bottom, right) in input pixels, only the output of that
        part of the input is computed ((N, 3, scale*(bottom-top), scale*(right-left))): the
        body needs a tile's context, but the upsampler need not upsample it.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected an (N, {self.in_channels}, h, w) batch, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        top, left, bottom, right = region if region is not None else (0, 0, height, width)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"region {region} is not inside the {height}x{width} input")
        with torch.inference_mode():
            x = x.to(self.head_weight.dtype)
            if self.uses_winograd(x):
                return self._forward_winograd(x, (top, left, bottom, right))
            return self._forward_direct(x, (top, left, bottom, right))

    # -- library convolutions (GPU, reduced precision) -----------------------------------------

    def _forward_direct(self, x: torch.Tensor, region: Region) -> torch.Tensor:
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
        # Upsample the region and a halo of real neighbours that covers the upsampler's reach
        # (1 + 1/2 + 1/4 input pixels), zero-padded beyond the input as on the whole image.
        top, left, bottom, right = region
        height, width = x.shape[-2:]
        halo = 2
        row_lo, col_lo = max(0, top - halo), max(0, left - halo)
        x = x[:, :, row_lo : min(height, bottom + halo), col_lo : min(width, right + halo)]
        for weight, bias in zip(self.upsample_weight.split(4 * channels), self.upsample_bias):
            # LeakyReLU commutes with the shuffle (a permutation): apply it before, in place.
            x = F.pixel_shuffle(F.leaky_relu_(F.conv2d(x, weight, bias, padding=1), LEAKY_SLOPE), 2)
        out = F.conv2d(x, self.tail_weight, self.tail_bias, padding=1)
        scale = self.scale
        return out[:, :, (top - row_lo) * scale : (bottom - row_lo) * scale, (left - col_lo) * scale : (right - col_lo) * scale].contiguous()

    # -- Winograd on the CPU -------------------------------------------------------------------

    def _forward_winograd(self, x: torch.Tensor, region: Region) -> torch.Tensor:
        features, height, width = self._features(x)
        top, left, bottom, right = region
        batch, scale = x.shape[0], self.scale
        out = x.new_empty(batch, (bottom - top) * scale, (right - left) * scale, self.in_channels)
        # Bands of rows of the region; each worker upsamples its bands.
        columns = min(width, right + 1) - max(0, left - 1)
        band_rows = self.upsample_pixels // max(1, batch * columns)
        if band_rows >= 6:  # the band and its two context rows in whole 4-row tiles
            band_rows = (band_rows + 2) // TILE * TILE - 2
        band_rows = max(1, min(bottom - top, band_rows))
        bands = [(band_top, min(bottom, band_top + band_rows)) for band_top in range(top, bottom, band_rows)]
        # Each worker reuses its band buffers from band to band: a fresh large buffer costs
        # its page faults every time.
        scratch: dict[tuple[int, int], torch.Tensor] = {}
        run_parallel(lambda band: self._upsample_band(features, (band[0], left, band[1], right), (height, width), region, out, scratch), bands)
        del scratch
        return out.permute(0, 3, 1, 2).contiguous()

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if self.use_nnpack:
            try:
                return self._features_nnpack(x)
            except RuntimeError as error:  # e.g. NNPACK could not allocate its workspace
                logger.warning("NNPACK convolution failed (%s); using srfeat's Winograd convolutions", error)
                self.use_nnpack = False
        return self._features_winograd(x)

    def _features_nnpack(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Head and body with NNPACK's convolutions in NCHW: (padded NHWC features, height, width)."""
        batch, _, height, width = x.shape
        channels = self.num_features
        x = F.conv2d((x * 2.0 - 1.0).contiguous(), self.head_weight.contiguous(), self.head_bias, padding=4)
        skip_sum = torch.zeros_like(x)
        for i in range(self.num_blocks):
            weights = self.body_weight[2 * i * channels : (2 * i + 2) * channels].contiguous()
            y = F.leaky_relu_(torch._nnpack_spatial_convolution(x, weights[:channels], self.body_bias[2 * i], [1, 1]), LEAKY_SLOPE)
            x = torch._nnpack_spatial_convolution(y, weights[channels:], self.body_bias[2 * i + 1], [1, 1]).add_(x)
            del y
            if i < self.num_blocks - 1:
                for item in range(batch):  # (C_out, H*W) += W^T (C_out, C_in) @ (C_in, H*W)
                    skip_sum[item].view(channels, -1).addmm_(self.skip_weight[i].t(), x[item].view(channels, -1))
        x.add_(skip_sum)
        del skip_sum
        features = padded_buffer(batch, height, width, channels, x)
        features[:, 1 : 1 + height, 1 : 1 + width] = x.permute(0, 2, 3, 1)
        return features, height, width

    def _features_winograd(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Head and body with the long skips: (padded NHWC features, height, width)."""
        batch, _, height, width = x.shape
        channels = self.num_features
        head = F.conv2d((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last), self.head_weight, self.head_bias, padding=4)
        current = padded_buffer(batch, height, width, channels, head)
        current[:, 1 : 1 + height, 1 : 1 + width] = head.permute(0, 2, 3, 1)
        del head
        middle, following, skip_sum = torch.zeros_like(current), torch.zeros_like(current), torch.zeros_like(current)
        for i in range(self.num_blocks):
            first, second = 2 * i, 2 * i + 1
            winograd_conv3x3(
                current, self.body_winograd[POSITIONS * first : POSITIONS * (first + 1)], self.body_bias[first], interior(middle), LEAKY_SLOPE
            )
            zero_outside(middle, height, width)
            winograd_conv3x3(
                middle,
                self.body_winograd[POSITIONS * second : POSITIONS * (second + 1)],
                self.body_bias[second],
                interior(following),
                residual=interior(current),
            )
            zero_outside(following, height, width)
            current, following = following, current
            if i < self.num_blocks - 1:
                # Over the whole padded buffer (zeros in, zeros out), as one GEMM.
                skip_sum.view(-1, channels).addmm_(current.view(-1, channels), self.skip_weight[i])
        return current.add_(skip_sum), height, width

    def _upsample_band(
        self,
        features: torch.Tensor,
        band: Region,
        size: tuple[int, int],
        region: Region,
        out: torch.Tensor,
        scratch: dict[tuple[int, int], torch.Tensor],
    ) -> None:
        """Upsampler and tail for the input pixels `band`, written into `out` (NHWC, `region`'s output).

        The band is cut from the features with one real neighbouring row and column on each
        side, and one more that the first upsampling convolution reads as its padding: that
        convolution is then exact on the cut, and the later ones, which see zeros beyond it,
        reach less than one input pixel into it (1/2 + 1/4).
        """
        top, left, bottom, right = band
        height, width = size
        batch, _, _, channels = features.shape
        lo, hi = max(0, top - 1), min(height, bottom + 1)
        col_lo, col_hi = max(0, left - 1), min(width, right + 1)
        band_h, band_w = hi - lo, col_hi - col_lo
        # Padded rows lo .. hi + 1 hold image rows lo - 1 .. hi (or the zero border); columns alike.
        current = padded_buffer(batch, band_h, band_w, channels, features)
        current[:, : band_h + 2, : band_w + 2] = features[:, lo : hi + 2, col_lo : col_hi + 2]
        for stage in range(self.upsample_bias.shape[0]):
            band_h, band_w = 2 * band_h, 2 * band_w
            # Twice the whole tiles of the input: still whole tiles, plus the border. The
            # convolution writes all of the interior; only the border needs zeros.
            shape = (batch, 2 * (current.shape[1] - 2) + 2, 2 * (current.shape[2] - 2) + 2, channels)
            key = (threading.get_ident(), stage)
            upsampled = scratch.get(key)
            if upsampled is None or upsampled.shape != shape:
                upsampled = scratch[key] = current.new_empty(shape)
            _zero_border(upsampled)
            winograd_conv3x3(
                current,
                self.upsample_winograd[POSITIONS * stage : POSITIONS * (stage + 1)],
                self.upsample_winograd_bias[stage],
                _shuffled_target(upsampled),
                LEAKY_SLOPE,
                parallel=False,
            )
            # What lies beyond the band is zero for the next convolution, as beyond an image.
            zero_outside(upsampled, band_h, band_w)
            current = upsampled
        tail = self._tail(current, band_h, band_w)
        scale = self.scale
        out[:, (top - region[0]) * scale : (bottom - region[0]) * scale] = tail[
            :, (top - lo) * scale : (bottom - lo) * scale, (left - col_lo) * scale : (right - col_lo) * scale
        ]

    def _tail_products(self, pixels: torch.Tensor) -> torch.Tensor:
        """(pixels, C) @ (C, 27): oneDNN's matrix product with a prepacked weight where there
        is one (twice MKL's speed for this narrow shape here), else torch.mm."""
        if pixels.device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            key = (self.tail_taps.data_ptr(), self.tail_taps.dtype)
            if getattr(self, "_tail_packed_key", None) != key:
                self._tail_packed = torch.ops.mkldnn._reorder_linear_weight(self.tail_taps.t().contiguous(), None)
                self._tail_packed_key = key
            return torch.ops.mkldnn._linear_pointwise(pixels, self._tail_packed, None, "none", [], "")
        return torch.mm(pixels, self.tail_taps)

    def _tail(self, padded: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """3x3 convolution to 3 channels of a zero-bordered NHWC buffer: one GEMM to the 27
        (tap, channel) products of every pixel, then each output sums its nine taps."""
        batch, _, padded_w, channels = padded.shape
        out = self.tail_bias.view(1, 1, 1, -1).expand(batch, height, width, -1).clone()
        rows_per_gemm = max(1, (1 << 14) // max(1, padded_w * batch))  # 16k pixels: in cache
        for y0 in range(0, height, rows_per_gemm):
            rows = min(rows_per_gemm, height - y0)
            products = self._tail_products(padded[:, y0 : y0 + rows + 2].reshape(-1, channels))
            products = products.view(batch, rows + 2, padded_w, 3, 3, -1)
            target = out[:, y0 : y0 + rows]
            for dy in range(3):
                for dx in range(3):
                    target.add_(products[:, dy : dy + rows, dx : dx + width, dy, dx])
        return out


def optimize_for_inference(generator: SRFeatGenerator, algorithm: Algorithm = "auto") -> FastSRFeatGenerator:
    """The generator's eval-mode function as a fast, inference-only module on the same device.

    algorithm: "auto" (CPU float32 inputs: NNPACK's Winograd for the body where available and
    ours for the upsampler; library convolutions otherwise), "winograd" (ours everywhere on
    CPU float32), or "direct" (library convolutions always: BatchNorm folded, channels_last). For bfloat16 on a CPU with native
    support (or float16/bfloat16 on a GPU) convert the result with `.to(dtype)`; the direct
    path then runs in that precision.
    """
    was_training = generator.training
    try:
        fast = FastSRFeatGenerator(generator.eval(), algorithm)
    finally:
        generator.train(was_training)
    return fast.to(generator.head.weight.device)
