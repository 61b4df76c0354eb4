"""The SRGAN-style discriminator used twice in SRFeat: on images and on VGG19 features.

Both output one logit per sample (no sigmoid: the loss is BCE-with-logits). The dense layer's
width is fixed by the input size, so an input of another size is rejected with a message that
names the size the network was built for.
"""

from __future__ import annotations

import torch
from torch import nn

from srfeat.archs.generator import LEAKY_SLOPE
from srfeat.archs.vgg import conv5_4_size

# (out_channels, stride) of the conv-BN-LeakyReLU blocks after the first conv (paper, Fig. 3).
CONV_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 2),
    (128, 1),
    (128, 2),
    (256, 1),
    (256, 2),
    (512, 1),
    (512, 2),
)
VGG_DOWNSAMPLING = 16  # conv5_4 is after four 2x2 max-pools (each rounding up)


def conv_output_size(size: int, stride: int) -> int:
    """Spatial size after a 3x3 convolution with padding 1."""
    return (size - 1) // stride + 1


class Discriminator(nn.Module):
    """conv3x3 + LeakyReLU, seven conv3x3-BN-LeakyReLU blocks, dense 1024, dense 1."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        base_channels: int = 64,
        dense_features: int = 1024,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("input size", input_size),
            ("base_channels", base_channels),
            ("dense_features", dense_features),
        ):
            if value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be at least 1, got {value}")
        self.in_channels = in_channels
        self.input_size = input_size
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 3, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        channels, size = base_channels, input_size
        for out_channels, stride in CONV_BLOCKS:
            # base_channels=64 is the paper's network; tests build narrower ones.
            out_channels = max(out_channels * base_channels // 64, 1)
            layers += [
                nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
            channels, size = out_channels, conv_output_size(size, stride)
        self.features = nn.Sequential(*layers)
        self.dense_inputs = channels * size * size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.dense_inputs, dense_features),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Linear(dense_features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"{type(self).__name__} was built for (N, {self.in_channels}, {self.input_size}, "
                f"{self.input_size}) inputs, got {tuple(x.shape)}; build it with the training "
                "patch size you use"
            )
        return self.classifier(self.features(x)).squeeze(1)


class ImageDiscriminator(Discriminator):
    """Judges HR/SR images of `hr_patch_size` x `hr_patch_size` pixels."""

    def __init__(self, hr_patch_size: int = 296, base_channels: int = 64, dense_features: int = 1024) -> None:
        super().__init__(3, hr_patch_size, base_channels, dense_features)


class FeatureDiscriminator(Discriminator):
    """Judges VGG19 conv5_4 feature maps (512 channels) of `hr_patch_size` images.

    The map is ceil(hr_patch_size / 16) pixels wide (19 for the paper's 296), as VGG19's pools
    round up like the authors' TF 'SAME' pools.
    """

    def __init__(self, hr_patch_size: int = 296, base_channels: int = 64, dense_features: int = 1024) -> None:
        if hr_patch_size < VGG_DOWNSAMPLING:
            raise ValueError(f"hr_patch_size must be at least {VGG_DOWNSAMPLING}, got {hr_patch_size}")
        super().__init__(512, conv5_4_size(hr_patch_size), base_channels, dense_features)
