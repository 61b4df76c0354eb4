"""Generators for the inference tests: BatchNorm statistics far from the identity, so that
folding them has something to fold."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

from srfeat.archs.generator import SRFeatGenerator

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def randomise_batchnorm(generator: ModuleT) -> ModuleT:
    """Give every BatchNorm statistics and affine parameters far from the identity."""
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.3, 3.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return generator.eval()


def tiny_generator(scale: int = 4, num_blocks: int = 2, num_features: int = 8) -> SRFeatGenerator:
    return randomise_batchnorm(SRFeatGenerator(scale=scale, num_features=num_features, num_blocks=num_blocks))
