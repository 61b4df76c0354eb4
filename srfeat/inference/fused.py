"""The generator in inference form: the same function as `SRFeatGenerator.eval()`, less work.

`InferenceGenerator(generator)` is what `Upscaler` runs, on every device. What it does:

- BatchNorm folded into the convolutions (`fold_batchnorm`: in eval mode each BatchNorm is a
  fixed per-channel affine map after a bias-free convolution), and the output's (x + 1) / 2
  folded into the tail: 33 fewer passes over the activations;
- in-place LeakyReLU, residual additions and long-range skips (one GEMM each);
- only the requested region of a tile upsampled, in bands of rows (and of columns where a row
  is wide or the rows few), so that the upsampler's activations (4x and 16x the body's) stay
  bounded whatever the size of the input, and thin inputs too keep the band workers busy.

Which algorithm runs each layer (the `algorithm` argument):

- "auto" on a CPU in float32: the 32 convolutions of the residual body (128 -> 128) by
  NNPACK's Winograd F(6x6, 3x3) where PyTorch has NNPACK (the fastest here for that shape),
  else by srfeat's F(4x4, 3x3) (`srfeat.ops.winograd`); the upsampler's two 128 -> 512
  convolutions always by srfeat's, which is faster there and writes each sub-pixel straight
  to where PixelShuffle puts it (no shuffle copy); the tail (128 -> 3) as one GEMM plus
  shifted additions. The upsampler bands are spread over single-threaded workers.
- "winograd": srfeat's F(4x4, 3x3) for the body too (what runs where there is no NNPACK).
- "direct", and whatever the algorithm on a GPU or in bfloat16/float16: the library's
  convolutions (cuDNN, oneDNN) in channels_last; `compile_parts()` puts this path through
  `torch.compile`.

srfeat's Winograd filters are derived from the folded weights when first needed, so a model
on NNPACK does not hold the body's (72 MB for the paper's network, 4x its weights).

Winograd is exact in real arithmetic; in float32 it rounds differently from the direct
convolution (the tests bound the whole network's output: below 1e-4 on [0, 1]).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11; torch depends on typing_extensions

from srfeat.archs.containers import TypedModuleList
from srfeat.archs.generator import LEAKY_SLOPE, SRFeatGenerator
from srfeat.inference.folding import FoldedResidualBlock, conv_bias
from srfeat.ops.private_torch import matmul, nnpack_available, nnpack_conv3x3, prepack_matmul_weight
from srfeat.ops.winograd import (
    POSITIONS,
    TILE,
    interior,
    padded_buffer,
    pixel_shuffle_target,
    shuffle_channel_order,
    to_padded,
    winograd_conv3x3,
    winograd_filter,
    zero_border,
    zero_outside,
)
from srfeat.ops.workers import run_parallel, worker_threads

__all__ = ["Algorithm", "InferenceGenerator"]

logger = logging.getLogger(__name__)

Algorithm = Literal["auto", "winograd", "direct"]
ALGORITHMS: tuple[Algorithm, ...] = ("auto", "winograd", "direct")
Region = tuple[int, int, int, int]  # top, left, bottom, right, in input pixels

# Default bound on the low-resolution pixels the upsampler handles at once (per band worker):
# at scale 4 in float32 a band holds 21 to 40 feature maps per pixel, 170 to 330 MB.
DEFAULT_UPSAMPLE_PIXELS = 16384
# Narrowest part of a band's columns (each reads two context columns on either side).
MIN_BAND_COLUMNS = 16


class InferenceGenerator(nn.Module):
    """`SRFeatGenerator` for inference only: same outputs (to float rounding), less work.

    (N, 3, h, w) in [0, 1] -> (N, 3, scale*h, scale*w), unclamped. Built from a trained
    generator (its BatchNorm statistics are read once, so later changes to the generator do not
    reach this copy); `algorithm` is "auto", "winograd" or "direct" (module docstring). Its
    weights are frozen, and `.to(device, dtype, memory_format)` works as on any module. The
    forward runs in inference mode and updates intermediate tensors in place.
    """

    def __init__(
        self, generator: SRFeatGenerator, algorithm: Algorithm = "auto", upsample_pixels: int = DEFAULT_UPSAMPLE_PIXELS
    ) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be 'auto', 'winograd' or 'direct', got {algorithm!r}")
        self.algorithm = algorithm
        # NNPACK for the body: "auto" only, and dropped if it ever fails.
        self.use_nnpack = algorithm == "auto" and nnpack_available()
        self.scale = generator.scale
        self.num_features = generator.num_features
        self.num_blocks = generator.num_blocks
        self.in_channels = generator.in_channels
        # Low-resolution pixels per upsampler band (per worker); the caller may lower it to save memory.
        self.upsample_pixels = upsample_pixels
        # Tensors derived from the weights (srfeat's Winograd filters, the packed tail), made
        # on first use; `_apply` (behind .to(), .float(), ...) drops them.
        self._derived: dict[str, torch.Tensor] = {}
        self.head = copy.deepcopy(generator.head)
        self.body = TypedModuleList(FoldedResidualBlock(block) for block in generator.body)
        self.long_skips = TypedModuleList(copy.deepcopy(skip) for skip in generator.long_skips)
        self.upsample_convs = TypedModuleList(copy.deepcopy(stage.conv) for stage in generator.upsampler)
        # The generator returns (tail(x) + 1) / 2: fold that affine map into the tail.
        self.tail = copy.deepcopy(generator.tail)
        with torch.no_grad():
            self.tail.weight.mul_(0.5)
            conv_bias(self.tail).mul_(0.5).add_(0.5)
        self.requires_grad_(False)
        self.eval()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        self._derived.clear()
        return super()._apply(fn, recurse)

    def _derive(self, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]

    # -- what the Upscaler asks ----------------------------------------------------------------

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """Whether `x` takes the Winograd path: a CPU float32 input and weights, unless "direct"."""
        weight = self.head.weight
        return (
            self.algorithm != "direct"
            and x.device.type == weight.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32
        )

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout to give inputs and weights in: NCHW for NNPACK, channels-last otherwise."""
        probe = self.head.weight
        return torch.contiguous_format if self.use_nnpack and self.uses_winograd(probe) else torch.channels_last

    def bytes_per_pixel(self) -> tuple[int, int]:
        """Peak bytes per input pixel of the body (per tile pixel), and of the upsampler (per band pixel).

        Measured, with margin. The body holds about four feature maps (block input, the two
        convolution outputs, the skip sum) and the library's scratch; NNPACK's transformed
        tiles add about four more (counted as six). srfeat's upsampler holds, per worker, the
        band's input and its 2x and 4x-resolution buffers (1 + 4 + 16 feature maps at scale
        4), counted twice: what the workers free stays partly in their own malloc arenas.
        Counted once, a 1000x1000 `srfeat upscale` peaked at 1121 MiB (1044 MiB with NNPACK's
        upsampler); counted twice, at 1040-1075 MiB, for no measurable loss of speed. The
        library's upsampler also holds the un-shuffled convolution outputs (about 40 maps).
        """
        feature = self.num_features * self.head.weight.element_size()
        stages = len(self.upsample_convs)
        if self.uses_winograd(self.head.weight):
            body = (10 if self.use_nnpack else 6) * feature
            band = sum(4**stage for stage in range(stages + 1)) * feature
            return body, 2 * band * worker_threads()
        return 6 * feature, feature * (2 * self.scale**2 + self.scale**2 // 2)

    def _upsampler_reach(self) -> float:
        # Each 3x3 convolution reaches one pixel at its own resolution: one input pixel for the
        # first upsampling stage, half of one for the second, then a quarter for the tail.
        return sum(0.5**stage for stage in range(len(self.upsample_convs) + 1))

    @property
    def upsample_halo(self) -> int:
        """Input rows (and columns) a band of the upsampler needs beyond its own on each side."""
        return math.ceil(self._upsampler_reach())

    @property
    def receptive_radius(self) -> int:
        """How far (in input pixels) an output pixel sees: tiles overlapping by this are exact."""
        head_reach = self.head.kernel_size[0] // 2
        body_reach = 2 * self.num_blocks  # two 3x3 convolutions per block; the 1x1 skips add none
        return math.ceil(head_reach + body_reach + self._upsampler_reach())

    def compile_parts(self, **options: object) -> None:
        """`torch.compile` the library path's body and upsampler (not `forward`, whose Python loop
        over bands and integer region would make the compiler specialise on every tile).

        The compiler cannot trace NNPACK or srfeat's band workers: a compiled model runs "direct".
        """
        self.algorithm = "direct"
        self.use_nnpack = False
        self.features = torch.compile(self.features, dynamic=True, **options)  # type: ignore[method-assign]
        self.upsample = torch.compile(self.upsample, dynamic=True, **options)  # type: ignore[method-assign]

    def forward(self, x: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, 3, scale*h, scale*w), nominally in [0, 1], unclamped.

        With `region` = (top, left, bottom, right) in input pixels, only the output of that
        part of the input is computed and returned ((N, 3, scale*(bottom-top), scale*(right-left))):
        a tile's context is needed by the body but its upsampled output would be thrown away.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected an (N, {self.in_channels}, h, w) batch, got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        region = region if region is not None else (0, 0, height, width)
        top, left, bottom, right = region
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"region {region} is not inside the {height}x{width} input")
        with torch.inference_mode():
            x = x.to(self.head.weight.dtype)
            if self.uses_winograd(x):
                return self._upsample_winograd(self._features_winograd(x), (height, width), region)
            return self._upsample_direct(self.features(x), region)

    # -- the library's convolutions (GPU, reduced precision, "direct", compiled) ----------------

    @staticmethod
    def block(block: FoldedResidualBlock, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(block.conv1(x), LEAKY_SLOPE, inplace=True)
        return block.conv2(y).add_(x)

    @staticmethod
    def add_skip(skip_sum: torch.Tensor | None, skip: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """skip_sum + skip(x) for a bias-free 1x1 convolution, as one in-place matrix product."""
        if skip_sum is None:
            return skip(x)
        channels = x.shape[1]
        if x.is_contiguous(memory_format=torch.channels_last) and skip_sum.is_contiguous(
            memory_format=torch.channels_last
        ):
            # (N*H*W, C) views of the channels-last buffers.
            pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)
            skip_sum.permute(0, 2, 3, 1).view(-1, skip.out_channels).addmm_(
                pixels, skip.weight.view(skip.out_channels, channels).t()
            )
        else:
            skip_sum.add_(skip(x))
        return skip_sum

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Head and residual body with the long-range skips, at low resolution."""
        x = self.head((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last))
        skip_sum: torch.Tensor | None = None
        # Blocks 1..15 feed a long skip each; block 16 has none.
        for block, skip in zip(self.body[:-1], self.long_skips, strict=True):
            x = self.block(block, x)
            skip_sum = self.add_skip(skip_sum, skip, x)
        x = self.block(self.body[-1], x)
        return x if skip_sum is None else x.add_(skip_sum)

    def upsample(self, features: torch.Tensor) -> torch.Tensor:
        """Upsampler and tail on features (all of them, or a band with its halo)."""
        for conv in self.upsample_convs:
            # LeakyReLU commutes with the pixel shuffle (a permutation): apply it to the
            # convolution output in place, before the shuffle copies it.
            features = F.pixel_shuffle(F.leaky_relu(conv(features), LEAKY_SLOPE, inplace=True), 2)
        return self.tail(features)

    def _upsample_direct(self, features: torch.Tensor, region: Region) -> torch.Tensor:
        # Bands of rows, each with `halo` real neighbouring rows and columns (none beyond the
        # input, where the convolutions zero-pad exactly as on the whole input).
        _, _, height, width = features.shape
        top, left, bottom, right = region
        halo, scale = self.upsample_halo, self.scale
        col_lo, col_hi = max(0, left - halo), min(width, right + halo)
        band_rows = max(1, self.upsample_pixels // max(1, features.shape[0] * (col_hi - col_lo)))
        bands = []
        for band_top in range(top, bottom, band_rows):
            band_bottom = min(bottom, band_top + band_rows)
            row_lo, row_hi = max(0, band_top - halo), min(height, band_bottom + halo)
            band = self.upsample(
                features[:, :, row_lo:row_hi, col_lo:col_hi].contiguous(memory_format=torch.channels_last)
            )
            bands.append(
                band[
                    :,
                    :,
                    (band_top - row_lo) * scale : (band_bottom - row_lo) * scale,
                    (left - col_lo) * scale : (right - col_lo) * scale,
                ]
            )
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)

    # -- Winograd on the CPU (float32) -----------------------------------------------------------

    def _features_winograd(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body: the features in a zero-bordered NHWC buffer (`srfeat.ops.winograd`)."""
        if self.use_nnpack:
            try:
                return self._features_nnpack(x)
            except RuntimeError as error:  # PrivateTorchError: NNPACK missing, or e.g. out of workspace
                logger.warning("NNPACK convolution failed (%s); using srfeat's Winograd convolutions", error)
                self.use_nnpack = False
        return self._features_srfeat(x)

    def _features_nnpack(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body, the body by NNPACK's convolutions in NCHW."""
        channels = self.num_features
        x = F.conv2d(
            (x * 2.0 - 1.0).contiguous(), self.head.weight.contiguous(), self.head.bias, padding=self.head.padding
        )
        skip_sum = torch.zeros_like(x)
        for i, block in enumerate(self.body):
            y = nnpack_conv3x3(x, block.conv1.weight.contiguous(), block.conv1.bias)
            x = nnpack_conv3x3(F.leaky_relu_(y, LEAKY_SLOPE), block.conv2.weight.contiguous(), block.conv2.bias).add_(x)
            del y
            if i < len(self.long_skips):
                weight = self.long_skips[i].weight.view(channels, channels)
                for item in range(x.shape[0]):  # (C_out, H*W) += W (C_out, C_in) @ (C_in, H*W)
                    skip_sum[item].view(channels, -1).addmm_(weight, x[item].view(channels, -1))
        x.add_(skip_sum)
        del skip_sum
        return to_padded(x)

    def _features_srfeat(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body, the body by srfeat's Winograd F(4x4, 3x3) on zero-bordered NHWC buffers."""
        _, _, height, width = x.shape
        channels = self.num_features
        convs = [conv for block in self.body for conv in (block.conv1, block.conv2)]
        # (36 * i + position, C, K): the Winograd filters of body convolution i.
        filters = self._derive("body", lambda: torch.cat([winograd_filter(conv.weight) for conv in convs]))
        current = to_padded(self.head((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)))
        middle, following, skip_sum = torch.zeros_like(current), torch.zeros_like(current), torch.zeros_like(current)
        for i, block in enumerate(self.body):
            first, second = 2 * i, 2 * i + 1
            winograd_conv3x3(
                current,
                filters[POSITIONS * first : POSITIONS * (first + 1)],
                block.conv1.bias,
                interior(middle),
                LEAKY_SLOPE,
            )
            zero_outside(middle, height, width)
            winograd_conv3x3(
                middle,
                filters[POSITIONS * second : POSITIONS * (second + 1)],
                block.conv2.bias,
                interior(following),
                residual=interior(current),
            )
            zero_outside(following, height, width)
            current, following = following, current
            if i < len(self.long_skips):
                # Over the whole padded buffer (zeros in, zeros out), as one GEMM with (C_in, C_out).
                weight = self.long_skips[i].weight.view(channels, channels).t()
                skip_sum.view(-1, channels).addmm_(current.view(-1, channels), weight)
        return current.add_(skip_sum)

    def _upsample_winograd(self, features: torch.Tensor, size: tuple[int, int], region: Region) -> torch.Tensor:
        """Upsampler and tail of `region` from padded NHWC features of an image of `size`, in
        bands (`_upsample_bands`) spread over the band workers; returns an NCHW view of an NHWC tensor (the
        layout images use, so the caller's copy into an image is a straight one)."""
        batch = features.shape[0]
        top, left, bottom, right = region
        scale = self.scale
        # Made here, not in the workers: they would race to make them.
        filters = self._derive("upsample", self._upsample_filters)
        biases = self._derive(
            "upsample_bias",
            lambda: torch.stack([shuffle_channel_order(conv_bias(conv)) for conv in self.upsample_convs]),
        )
        tail_weight = self._derive("tail", self._tail_weight)
        out = features.new_empty(batch, (bottom - top) * scale, (right - left) * scale, self.in_channels)
        bands = self._upsample_bands(region, batch, size[1])
        # Each worker reuses its band buffers from band to band: a fresh large buffer costs
        # its page faults every time.
        scratch: dict[tuple[int, int], torch.Tensor] = {}

        def upsample_band(band: Region) -> None:
            band_top, band_left, band_bottom, band_right = band
            band_out = self._upsample_band(features, size, band, filters, biases, tail_weight, scratch)
            out[
                :,
                (band_top - top) * scale : (band_bottom - top) * scale,
                (band_left - left) * scale : (band_right - left) * scale,
            ] = band_out

        run_parallel(upsample_band, bands)
        return out.permute(0, 3, 1, 2)

    def _upsample_bands(self, region: Region, batch: int, width: int) -> list[Region]:
        """The parts of `region` (of a batch of `width`-pixel-wide inputs) the Winograd path
        upsamples one at a time: bands of rows within `upsample_pixels`, each cut into parts of
        its columns where one row is over that budget or where there are fewer bands than band
        workers. Bands of rows alone left an input of one row (or a few) one band, run on the
        calling thread: each of its thousands of small tensor operations was split over the
        intra-op threads, each waiting on all of them: on a busy 2-core machine a 1x20000 image
        took 7 s where a 2x9000 one took 0.5."""
        top, left, bottom, right = region
        row_pixels = batch * (min(width, right + 1) - max(0, left - 1))
        band_rows = self.upsample_pixels // max(1, row_pixels)
        if band_rows >= 6:  # the band and its two context rows in whole 4-row tiles
            band_rows = (band_rows + 2) // TILE * TILE - 2
        band_rows = max(1, min(bottom - top, band_rows))
        row_starts = range(top, bottom, band_rows)
        parts = max(-(-row_pixels // self.upsample_pixels), -(-worker_threads() // len(row_starts)))
        parts = min(parts, max(1, (right - left) // MIN_BAND_COLUMNS))  # each part wide beside its context
        spans = [(left + (right - left) * i // parts, left + (right - left) * (i + 1) // parts) for i in range(parts)]
        return [
            (band_top, band_left, min(bottom, band_top + band_rows), band_right)
            for band_top in row_starts
            for band_left, band_right in spans
        ]

    def _upsample_filters(self) -> torch.Tensor:
        # Output channels in the order that writes each sub-pixel where PixelShuffle puts it.
        return torch.cat([winograd_filter(shuffle_channel_order(conv.weight)) for conv in self.upsample_convs])

    def _tail_weight(self) -> torch.Tensor:
        """The tail as a (C, 27) matrix to its (dy, dx, output channel) products, prepacked for
        oneDNN's matrix product where there is one (twice MKL's speed for this narrow shape)."""
        return prepack_matmul_weight(self.tail.weight.permute(1, 2, 3, 0).reshape(self.num_features, -1))

    def _upsample_band(
        self,
        features: torch.Tensor,
        size: tuple[int, int],
        band: Region,
        filters: torch.Tensor,
        biases: torch.Tensor,
        tail_weight: torch.Tensor,
        scratch: dict[tuple[int, int], torch.Tensor],
    ) -> torch.Tensor:
        """Upsampler and tail of the input pixels `band`: (N, scale*rows, scale*columns, 3).

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
        for stage in range(len(self.upsample_convs)):
            band_h, band_w = 2 * band_h, 2 * band_w
            # Twice the whole tiles of the input: still whole tiles, plus the border. The
            # convolution writes all of the interior; only the border needs zeros.
            shape = (batch, 2 * (current.shape[1] - 2) + 2, 2 * (current.shape[2] - 2) + 2, channels)
            key = (threading.get_ident(), stage)
            upsampled = scratch.get(key)
            if upsampled is None or upsampled.shape != shape:
                upsampled = scratch[key] = current.new_empty(shape)
            zero_border(upsampled)
            winograd_conv3x3(
                current,
                filters[POSITIONS * stage : POSITIONS * (stage + 1)],
                biases[stage],
                pixel_shuffle_target(upsampled),
                LEAKY_SLOPE,
                parallel=False,
            )
            # What lies beyond the band is zero for the next convolution, as beyond an image.
            zero_outside(upsampled, band_h, band_w)
            current = upsampled
        tail = self._tail(current, band_h, band_w, tail_weight)
        scale = self.scale
        return tail[:, (top - lo) * scale : (bottom - lo) * scale, (left - col_lo) * scale : (right - col_lo) * scale]

    def _tail(self, padded: torch.Tensor, height: int, width: int, weight: torch.Tensor) -> torch.Tensor:
        """3x3 convolution to 3 channels of a zero-bordered NHWC buffer: one GEMM to the 27
        (tap, channel) products of every pixel, then each output sums its nine taps (a direct
        convolution to 3 channels has little to vectorise over)."""
        batch, _, padded_w, channels = padded.shape
        out = conv_bias(self.tail).view(1, 1, 1, -1).expand(batch, height, width, -1).clone()
        rows_per_gemm = max(1, (1 << 14) // max(1, padded_w * batch))  # 16k pixels: in cache
        for y0 in range(0, height, rows_per_gemm):
            rows = min(rows_per_gemm, height - y0)
            pixels = padded[:, y0 : y0 + rows + 2].reshape(-1, channels)
            products = matmul(pixels, weight).view(batch, rows + 2, padded_w, 3, 3, -1)
            target = out[:, y0 : y0 + rows]
            for dy in range(3):
                for dx in range(3):
                    target.add_(products[:, dy : dy + rows, dx : dx + width, dy, dx])
        return out
