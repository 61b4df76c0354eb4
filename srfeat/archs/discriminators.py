"""The SRGAN-style discriminator used twice in SRFeat: on images and on VGG19 features.

Both output one logit per sample (no sigmoid: the loss is BCE-with-logits). The dense layer's
width is fixed by the input size, so an input of another size is rejected with a message that
names the size the network was built for. The convolutions pad as the authors' TF 'SAME' does,
and `init_discriminator_as_authors` starts the weights as their tensorlayer code does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.generator import LEAKY_SLOPE
from srfeat.archs.vgg import conv5_4_size
from srfeat.errors import InvalidImageError, InvalidOptionError, NotAnImageError, given, is_whole_number

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
    """Spatial size after a 3x3 convolution with TF 'SAME' padding: ceil(size / stride)."""
    return (size - 1) // stride + 1


class SamePaddedConv2d(nn.Conv2d):
    """A 3x3 convolution padded as TF's 'SAME' pads it for an input of `input_size`.

    'SAME' pads `kernel - stride` pixels in all when the size divides by the stride (else
    `kernel - size % stride`), the odd one at the bottom and right: a stride-2 conv on an even
    input pads (0, 1), where PyTorch's padding=1 pads (1, 1) and samples a grid one pixel over.
    The output size is the same either way; the weights and their names are those of a plain
    conv, so states saved before this padding still load.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int, stride: int, bias: bool) -> None:
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=0, bias=bias)
        total = max(3 - stride, 0) if input_size % stride == 0 else max(3 - input_size % stride, 0)
        before = total // 2
        self.same_padding = (before, total - before, before, total - before)  # left, right, top, bottom

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # nn.Conv2d's parameter name
        return super().forward(F.pad(input, self.same_padding))


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
            if not is_whole_number(value):  # else torch's TypeError from inside
                raise InvalidOptionError(f"{type(self).__name__}: {name} must be a whole number, got {given(value)}")
            if value < 1:
                raise InvalidOptionError(f"{type(self).__name__}: {name} must be at least 1, got {value}")
        self.in_channels = in_channels
        self.input_size = input_size
        layers: list[nn.Module] = [
            SamePaddedConv2d(in_channels, base_channels, input_size, stride=1, bias=True),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        channels, size = base_channels, input_size
        for out_channels, stride in CONV_BLOCKS:
            # base_channels=64 is the paper's network; tests build narrower ones.
            out_channels = max(out_channels * base_channels // 64, 1)
            layers += [
                # No bias before BatchNorm: theirs starts at zero and BatchNorm subtracts it.
                SamePaddedConv2d(channels, out_channels, size, stride=stride, bias=False),
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
        if not x.is_floating_point():  # else the first conv's "Input type (unsigned char) and bias type (float)"
            raise NotAnImageError(f"{type(self).__name__} takes float inputs, got {x.dtype}: use x.float() / 255")
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.input_size, self.input_size):
            raise InvalidImageError(
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
        if not is_whole_number(hr_patch_size):
            raise InvalidOptionError(f"hr_patch_size must be a whole number, got {given(hr_patch_size)}")
        if hr_patch_size < VGG_DOWNSAMPLING:
            raise InvalidOptionError(f"hr_patch_size must be at least {VGG_DOWNSAMPLING}, got {hr_patch_size}")
        super().__init__(512, conv5_4_size(int(hr_patch_size)), base_channels, dense_features)


# tensorlayer's DenseLayer default (the authors' dense layers pass no W_init): truncated normal,
# standard deviation 0.1 before truncation.
AUTHORS_DENSE_STD = 0.1
# tf.contrib.layers.variance_scaling_initializer() (factor 2, fan in, truncated normal): a
# standard deviation of sqrt(1.3 * 2 / fan_in) before truncation; 1.3 makes up for the cut.
AUTHORS_CONV_VARIANCE = 1.3 * 2.0


def _truncated_normal_(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """TF's truncated_normal: N(0, std) with draws beyond two standard deviations drawn again."""
    nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


@torch.no_grad()
def init_discriminator_as_authors(
    discriminator: Discriminator, generator: torch.Generator | None = None
) -> Discriminator:
    """The authors' initialisation of `discriminator` (their SRGAN_d / SRGAN_vgg_d), in place.

    Convolutions from tf.contrib's variance-scaling initialiser; dense layers from tensorlayer's
    default; every bias zero; BatchNorm at gamma 1, beta 0. PyTorch's default starts the dense
    weights about 65x smaller (std 0.0013 on the image discriminator's 184,832 inputs, against
    0.088), so theirs begin with logits of tens and a saturated sigmoid.
    """
    for module in discriminator.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * math.prod(module.kernel_size)
            _truncated_normal_(module.weight, math.sqrt(AUTHORS_CONV_VARIANCE / fan_in), generator)
        elif isinstance(module, nn.Linear):
            _truncated_normal_(module.weight, AUTHORS_DENSE_STD, generator)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
            continue
        else:
            continue
        if module.bias is not None:
            module.bias.zero_()
    return discriminator
