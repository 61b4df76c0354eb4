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

The Winograd path (the body by NNPACK or srfeat, the upsampler in bands, the tail as a GEMM) is
`srfeat/inference/winograd_path.py`, a base class of `InferenceGenerator`; this module keeps the
folding, the dispatch and the library's convolutions.

Winograd is exact in real arithmetic; in float32 it rounds differently from the direct
convolution (the tests bound the whole network's output: below 1e-4 on [0, 1]).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.containers import TypedModuleList
from srfeat.archs.generator import LEAKY_SLOPE, SRFeatGenerator
from srfeat.inference.folding import FoldedResidualBlock, conv_bias
from srfeat.inference.winograd_path import Region, WinogradPath
from srfeat.ops.private_torch import nnpack_available
from srfeat.ops.workers import worker_threads

__all__ = ["Algorithm", "InferenceGenerator"]

Algorithm = Literal["auto", "winograd", "direct"]
ALGORITHMS: tuple[Algorithm, ...] = ("auto", "winograd", "direct")

# Default bound on the low-resolution pixels the upsampler handles at once (per band worker):
# at scale 4 in float32 a band holds 21 to 40 feature maps per pixel, 170 to 330 MB.
DEFAULT_UPSAMPLE_PIXELS = 16384


class InferenceGenerator(WinogradPath):
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

    def compile_parts(self, **options: Any) -> None:  # options: torch.compile's own keyword arguments, passed on
        """`torch.compile` the library path's body and upsampler (not `forward`, whose Python loop
        over bands and integer region would make the compiler specialise on every tile).

        The compiler cannot trace NNPACK or srfeat's band workers: a compiled model runs "direct".
        """
        self.algorithm = "direct"
        self.use_nnpack = False
        self.features = torch.compile(self.features, dynamic=True, **options)
        self.upsample = torch.compile(self.upsample, dynamic=True, **options)

    def forward(self, x: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, 3, h, w) in [0, 1] -> (N, 3, scale*h, scale*w), nominally in [0, 1], unclamped.

        With `region` = (top, left, bottom, right) in input pixels, only the output of that
        part of the input is computed and returned ((N, 3, scale*(bottom-top), scale*(right-left))):
        a tile's context is needed by the body but its upsampled output would be thrown away.
        """
        self._check_input(x)
        height, width = x.shape[-2:]
        whole_or_part = region if region is not None else (0, 0, height, width)
        self._check_region(whole_or_part, height, width)  # before the body's work, not after
        return self.for_window(x)(whole_or_part)

    def for_window(self, x: torch.Tensor) -> Callable[[Region], torch.Tensor]:
        """Run the head and body on `x` once; the function returned gives `forward(x, region)`, to the
        bit, for any region of `x`, from those features. `upscale_tiled` runs each distinct padded
        window once this way: tiles smaller than their padding, on a small image, all read the same
        one (the whole image), and each ran the body over it again."""
        self._check_input(x)
        height, width = x.shape[-2:]
        with torch.inference_mode():
            x = x.to(self.head.weight.dtype)
            winograd = self.uses_winograd(x)
            features = self._features_winograd(x) if winograd else self.features(x)

        def upsample(region: Region) -> torch.Tensor:
            self._check_region(region, height, width)
            with torch.inference_mode():
                if winograd:
                    return self._upsample_winograd(features, (height, width), region)
                return self._upsample_direct(features, region)

        return upsample

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected an (N, {self.in_channels}, h, w) batch, got {tuple(x.shape)}")

    @staticmethod
    def _check_region(region: Region, height: int, width: int) -> None:
        top, left, bottom, right = region
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"region {region} is not inside the {height}x{width} input")

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
