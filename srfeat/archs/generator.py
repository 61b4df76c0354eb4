"""The SRFeat generator: SRResNet with long-range skip connections (paper, Fig. 2).

State-dict names read as the architecture: `head`, `body.<i>.conv1`, `long_skips.<i>`,
`upsampler.<i>.conv`, `tail`.
"""

from __future__ import annotations

import torch
from torch import nn

from srfeat.archs.containers import TypedModuleList, TypedSequential
from srfeat.errors import InvalidImageError, InvalidOptionError, NotAnImageError, given, is_whole_number

LEAKY_SLOPE = 0.2


class ResidualBlock(nn.Module):
    """conv3x3 -> BN -> LeakyReLU -> conv3x3 -> BN, plus the block input (no bias: BN follows)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_features)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleStage(nn.Module):
    """conv3x3 to 4x the channels, PixelShuffle(2), LeakyReLU: doubles height and width."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_features, num_features * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRFeatGenerator(nn.Module):
    """Maps an (N, 3, h, w) batch in [0, 1] to (N, 3, scale*h, scale*w), nominally in [0, 1].

    The network works on [-1, 1] as the authors' code did; the output is not clamped (training
    losses see the raw values; clamp when converting to an image).
    """

    def __init__(
        self,
        scale: int = 4,
        num_features: int = 128,
        num_blocks: int = 16,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        # InvalidOptionError is a ValueError, as these were; 4.0 or "8" failed inside torch (TypeError)
        for name, value in (
            ("scale", scale),
            ("num_blocks", num_blocks),
            ("num_features", num_features),
            ("in_channels", in_channels),
        ):
            if not is_whole_number(value):
                raise InvalidOptionError(f"{name} must be a whole number, got {given(value)}")
        if scale not in (2, 4):
            raise InvalidOptionError(f"scale must be 2 or 4, got {scale}")
        for name, value in (("num_blocks", num_blocks), ("num_features", num_features), ("in_channels", in_channels)):
            if value < 1:
                raise InvalidOptionError(f"{name} must be at least 1, got {value}")
        self.scale = scale
        self.num_features = num_features
        self.num_blocks = num_blocks
        self.in_channels = in_channels
        self.head = nn.Conv2d(in_channels, num_features, 9, padding=4)
        self.body = TypedModuleList(ResidualBlock(num_features) for _ in range(num_blocks))
        # One 1x1 conv per block except the last: block i's output (i < num_blocks) is carried
        # to the end of the body, where the sum joins the last block's output.
        self.long_skips = TypedModuleList(
            nn.Conv2d(num_features, num_features, 1, bias=False) for _ in range(num_blocks - 1)
        )
        self.upsampler = TypedSequential(*(UpsampleStage(num_features) for _ in range(scale // 2)))
        self.tail = nn.Conv2d(num_features, in_channels, 3, padding=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Head and residual body with the long-range skips, at LR resolution."""
        x = self.head(x)
        skip_sum: torch.Tensor | None = None
        # Blocks 1..15 feed a long skip each; block 16 has none.
        for block, skip in zip(self.body[:-1], self.long_skips, strict=True):
            x = block(x)
            skip_sum = skip(x) if skip_sum is None else skip_sum + skip(x)
        x = self.body[-1](x)
        return x if skip_sum is None else x + skip_sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # uint8 pixels would be promoted to floats in 0..255 and give garbage without an error.
        # srfeat's errors, of the built-in kinds these were (NotAnImageError is a TypeError)
        if not x.is_floating_point():
            raise NotAnImageError(f"SRFeatGenerator takes float pixels in [0, 1], got {x.dtype}: use x.float() / 255")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InvalidImageError(
                f"SRFeatGenerator takes (N, {self.in_channels}, H, W) batches, got {tuple(x.shape)}"
            )
        if x.shape[2] == 0 or x.shape[3] == 0:  # else the head conv's "Kernel size can't be greater than ..."
            raise InvalidImageError(f"SRFeatGenerator takes images of at least 1x1 pixels, got {tuple(x.shape)}")
        x = self.features(x * 2.0 - 1.0)
        x = self.tail(self.upsampler(x))
        return (x + 1.0) * 0.5
