"""BatchNorm folded into the convolution before it, for inference.

In eval mode a BatchNorm is a fixed per-channel affine map; after a bias-free convolution it
folds into that convolution's weights and bias, which saves a pass over the activations.
"""

from __future__ import annotations

import torch
from torch import nn

from srfeat.archs.generator import ResidualBlock

__all__ = ["FoldedResidualBlock", "conv_bias", "fold_batchnorm"]


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return values[0], values[1]


def conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a convolution made with one."""
    if conv.bias is None:
        raise ValueError("expected a convolution with a bias")
    return conv.bias


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
            _pair(conv.kernel_size),
            stride=_pair(conv.stride),
            padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
            dilation=_pair(conv.dilation),
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        conv_bias(folded).copy_(bias)
    return folded


class FoldedResidualBlock(nn.Module):
    """conv (+folded BN) -> LeakyReLU -> conv (+folded BN), plus the block input."""

    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.conv1 = fold_batchnorm(block.conv1, block.bn1)
        self.conv2 = fold_batchnorm(block.conv2, block.bn2)
