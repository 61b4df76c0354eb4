"""Initialisations of a new SRFeat generator: as an upscaler (`interpolation`) or the authors' (`authors`).

`init_as_interpolator`: an initialisation that makes the generator start as an upscaler, not as noise.

With PyTorch's default initialisation the generator's first outputs are noise, and on a CPU
it takes hours of MSE training just to reach plain bicubic quality. This initialisation keeps
the architecture and every weight trainable, but sets them so that at step 0 the network
computes a fixed bilinear 4x upscale, carried through three of its feature channels:

- residual blocks start as identities (zero gamma in their last BatchNorm, as in Goyal et al.,
  "Accurate, large minibatch SGD", 2017) and the long-range 1x1 skips start at zero;
- the head copies R, G, B into feature channels 0..2 (the other channels stay random);
- each upsampling stage interpolates those channels bilinearly into its sub-pixel outputs,
  offset by +1 so that the LeakyReLU passes them unchanged;
- the tail reads them back and removes the offset.

Training then learns the residual detail on top of an image that is already right, which is
what makes CPU training reach and pass bicubic quality in minutes instead of hours.
"""

from __future__ import annotations

import torch
from torch import nn

from srfeat.archs.generator import SRFeatGenerator

# 2x bilinear interpolation (pixel centres at +-1/4) as 3-tap filters, per sub-pixel phase.
_BILINEAR_PHASES = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]])
_OFFSET = 1.0  # keeps the carried values (in [-1, 1] inside the network) positive for LeakyReLU


@torch.no_grad()
def init_as_interpolator(generator: SRFeatGenerator) -> SRFeatGenerator:
    """Set `generator`'s weights so that it starts as a bilinear upscaler (in place)."""
    channels = generator.in_channels
    for block in generator.body:
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    for skip in generator.long_skips:
        skip.weight.zero_()

    head = generator.head
    # The head, the upsampler's and the tail's convolutions are built with biases.
    assert head.bias is not None
    centre = head.kernel_size[0] // 2
    head.weight[:channels].zero_()
    head.bias[:channels] = _OFFSET
    for c in range(channels):
        head.weight[c, c, centre, centre] = 1.0

    for stage in generator.upsampler:
        conv = stage.conv
        assert conv.bias is not None
        # PixelShuffle(2) takes sub-pixel (i, j) of output channel c from input channel 4c + 2i + j.
        carried = slice(0, 4 * channels)
        conv.weight[carried].zero_()
        conv.bias[carried] = 0.0  # the offset arrives with the input; interpolation weights sum to 1
        for c in range(channels):
            for i in range(2):
                for j in range(2):
                    conv.weight[4 * c + 2 * i + j, c] = torch.outer(_BILINEAR_PHASES[i], _BILINEAR_PHASES[j])

    tail = generator.tail
    assert tail.bias is not None
    tail.weight.zero_()
    tail.bias.fill_(-_OFFSET)
    for c in range(channels):
        tail.weight[c, c, 1, 1] = 1.0
    return generator


# The authors' model.py builds every generator conv with tf.random_normal_initializer(stddev=0.01).
AUTHORS_WEIGHT_STD = 0.01


@torch.no_grad()
def init_as_authors(generator: SRFeatGenerator, generator_seed: torch.Generator | None = None) -> SRFeatGenerator:
    """The authors' initialisation (their `SRGAN_g`), in place.

    Every convolution's weights from N(0, 0.01); biases, where a conv has one (head,
    upsampler, tail), zero; the convs before BatchNorm and the long skips have none, here as
    there. BatchNorm starts at gamma 1, beta 0, running mean 0 and variance 1.
    """
    for module in generator.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.normal_(0.0, AUTHORS_WEIGHT_STD, generator=generator_seed)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()  # weight 1, bias 0, running mean 0, running variance 1
    return generator
