"""The generator in inference form: BatchNorm folded into the convolutions, buffers reused.

In eval mode every BatchNorm of the generator is a fixed per-channel affine map that follows a
bias-free convolution, so it can be folded into that convolution's weights and a new bias:
the network then runs 33 fewer passes over its activations and gives the same outputs up to
float rounding. `InferenceGenerator` is that folded network; it also updates in place where
the training graph allocates (LeakyReLU, residual adds, the running sum of the long-range
skips), folds the output map from [-1, 1] to [0, 1] into the tail convolution, and runs the
upsampler, whose activations are 4x and 16x the size of the body's, in bands of rows so that
its memory stays bounded whatever the size of the input.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.generator import LEAKY_SLOPE, ResidualBlock, SRFeatGenerator

__all__ = ["fold_batchnorm", "InferenceGenerator", "winograd_available"]

logger = logging.getLogger(__name__)

# Default bound on the low-resolution pixels the upsampler handles at once: at scale 4 in
# float32 it holds about 20 kB per low-resolution pixel (the 512-channel convolution output
# at 2x resolution and its pixel-shuffled copy), so this is about 0.3 GB.
DEFAULT_UPSAMPLE_PIXELS = 16384

Region = tuple[int, int, int, int]  # top, left, bottom, right


def winograd_available() -> bool:
    """Whether PyTorch has NNPACK's Winograd convolution here (the call also initialises it)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to `bn(conv(x))` with `bn` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    with torch.no_grad():
        # Fold in float64 so the folded weights are the correctly rounded float32 values.
        inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
        scale = gamma * inv_std
        bias = beta - bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        folded = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        folded.bias.copy_(bias)
    return folded


def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    return copy.deepcopy(conv)


class FoldedResidualBlock(nn.Module):
    """conv (+folded BN) -> LeakyReLU -> conv (+folded BN), plus the block input."""

    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = fold_batchnorm(block.conv1, block.bn1)
        self.conv2 = fold_batchnorm(block.conv2, block.bn2)


class InferenceGenerator(nn.Module):
    """`SRFeatGenerator` for inference only: same outputs (to float rounding), less work.

    Built from a trained generator (its BatchNorm statistics are read once, so later changes
    to the generator do not reach this copy). Use it under `torch.inference_mode()`; its
    forward modifies intermediate tensors in place and cannot be differentiated.
    """

    def __init__(
        self, generator: SRFeatGenerator, upsample_pixels: int = DEFAULT_UPSAMPLE_PIXELS, winograd: bool = False
    ) -> None:
        super().__init__()
        # Winograd (NNPACK) 3x3 convolutions: CPU, float32, NCHW-contiguous inputs only.
        self.winograd = winograd and winograd_available()
        self.scale = generator.scale
        self.num_features = generator.num_features
        self.num_blocks = generator.num_blocks
        self.in_channels = generator.in_channels
        # Low-resolution pixels per upsampler band; the caller may lower it to save memory.
        self.upsample_pixels = upsample_pixels
        self.head = _copy_conv(generator.head)
        self.body = nn.ModuleList(FoldedResidualBlock(block) for block in generator.body)
        self.long_skips = nn.ModuleList(_copy_conv(skip) for skip in generator.long_skips)
        self.upsample_convs = nn.ModuleList(_copy_conv(stage.conv) for stage in generator.upsampler)
        # The generator returns (tail(x) + 1) / 2: fold that affine map into the tail.
        self.tail = _copy_conv(generator.tail)
        with torch.no_grad():
            self.tail.weight.mul_(0.5)
            self.tail.bias.mul_(0.5).add_(0.5)
        self.eval()

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout to give inputs (and weights) in: NCHW for NNPACK, channels-last otherwise."""
        return torch.contiguous_format if self.winograd else torch.channels_last

    def bytes_per_pixel(self) -> tuple[int, int]:
        """Peak bytes per input pixel of the body and of the upsampler, as measured (with margin).

        The body holds about six feature maps at once (block input, two convolution outputs,
        the skip sum, the library's scratch); the last upsampling stage holds its input, its
        4x-channel output and the pixel-shuffled copy. Winograd's transformed tiles about
        double both.
        """
        itemsize = self.head.weight.element_size()
        workspace = 2 if self.winograd else 1
        body = (4 * workspace + 2) * self.num_features * itemsize
        upsample = workspace * self.num_features * (2 * self.scale**2 + self.scale**2 // 2) * itemsize
        return body, upsample

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
        """`torch.compile` the body and the upsampler (not `forward`, whose Python loop over
        bands and integer region would make the compiler specialise on every tile).

        The compiler cannot trace NNPACK's convolution: a compiled model uses direct ones.
        """
        self.winograd = False
        self.features = torch.compile(self.features, dynamic=True, **options)  # type: ignore[method-assign]
        self.upsample = torch.compile(self.upsample, dynamic=True, **options)  # type: ignore[method-assign]

    def conv3x3(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if self.winograd and x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and conv.weight.is_contiguous():
            try:
                return torch._nnpack_spatial_convolution(x, conv.weight, conv.bias, list(conv.padding))
            except RuntimeError as error:  # e.g. its workspace could not be allocated
                logger.warning("Winograd convolution failed (%s); using direct convolutions", error)
                self.winograd = False
        return conv(x)

    def block(self, block: FoldedResidualBlock, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv3x3(block.conv1, x), LEAKY_SLOPE, inplace=True)
        return self.conv3x3(block.conv2, y).add_(x)

    @staticmethod
    def add_skip(skip_sum: torch.Tensor | None, skip: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """skip_sum + skip(x) for a bias-free 1x1 convolution, as one in-place matrix product."""
        batch, channels, height, width = x.shape
        weight = skip.weight.view(skip.out_channels, channels)
        if skip_sum is None:
            return skip(x)
        if x.is_contiguous(memory_format=torch.channels_last) and skip_sum.is_contiguous(memory_format=torch.channels_last):
            # (N*H*W, C) views of the channels-last buffers.
            pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)
            skip_sum.permute(0, 2, 3, 1).view(-1, skip.out_channels).addmm_(pixels, weight.t())
        elif batch == 1 and x.is_contiguous() and skip_sum.is_contiguous():
            skip_sum.view(skip.out_channels, -1).addmm_(weight, x.view(channels, -1))
        else:
            skip_sum.add_(skip(x))
        return skip_sum

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Head and residual body with the long-range skips, at low resolution."""
        x = self.head(x * 2.0 - 1.0)
        skip_sum: torch.Tensor | None = None
        for block, skip in zip(self.body, self.long_skips):
            x = self.block(block, x)
            skip_sum = self.add_skip(skip_sum, skip, x)
        x = self.block(self.body[-1], x)
        return x if skip_sum is None else x.add_(skip_sum)

    def upsample(self, features: torch.Tensor) -> torch.Tensor:
        """Upsampler and tail on the features of the whole input."""
        for conv in self.upsample_convs:
            # LeakyReLU commutes with the pixel shuffle (a permutation): apply it to the
            # convolution output in place, before the shuffle copies it.
            features = F.pixel_shuffle(F.leaky_relu(self.conv3x3(conv, features), LEAKY_SLOPE, inplace=True), 2)
        return self.conv3x3(self.tail, features)

    def forward(self, x: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, C, h, w) in [0, 1] -> (N, C, scale*h, scale*w), nominally in [0, 1], unclamped.

        With `region` = (top, left, bottom, right) in input pixels, only the output of that
        part of the input is computed and returned ((N, C, scale*(bottom-top), scale*(right-left))):
        a tile's context is needed by the body but its upsampled output would be thrown away.
        """
        features = self.features(x)
        _, _, height, width = features.shape
        top, left, bottom, right = region if region is not None else (0, 0, height, width)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"region {region} is not inside the {height}x{width} input")
        # Upsample in bands of rows, each with `halo` real neighbouring rows and columns (none
        # beyond the input, where the convolutions zero-pad exactly as on the whole input).
        halo, scale = self.upsample_halo, self.scale
        col_lo, col_hi = max(0, left - halo), min(width, right + halo)
        band_rows = max(1, self.upsample_pixels // max(1, features.shape[0] * (col_hi - col_lo)))
        bands = []
        for band_top in range(top, bottom, band_rows):
            band_bottom = min(bottom, band_top + band_rows)
            row_lo, row_hi = max(0, band_top - halo), min(height, band_bottom + halo)
            band = features[:, :, row_lo:row_hi, col_lo:col_hi].contiguous(memory_format=self.memory_format)
            band = self.upsample(band)
            bands.append(
                band[:, :, (band_top - row_lo) * scale : (band_bottom - row_lo) * scale, (left - col_lo) * scale : (right - col_lo) * scale]
            )
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
