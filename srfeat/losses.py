"""The loss terms of SRFeat (paper, Sec. 3.2).

Stage 1 trains with the pixel MSE alone. Stage 2 trains with the perceptual loss on VGG19
conv5_4 features scaled by 1/12.75, plus 1e-3 times the adversarial loss of each of the two
discriminators. Discriminators output logits, so the adversarial terms use BCE-with-logits
(a sigmoid inside the network *and* in the loss would flatten the signal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The authors scale conv5_4 activations by 1/12.75 so that their magnitude suits the MSE
# and the feature discriminator.
FEATURE_SCALE = 1.0 / 12.75
ADVERSARIAL_WEIGHT = 1e-3


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Stage-1 loss: mean squared error between the SR and HR images."""
    return F.mse_loss(sr, hr)


def perceptual_loss(sr_features: torch.Tensor, hr_features: torch.Tensor) -> torch.Tensor:
    """MSE between already-scaled VGG19 conv5_4 features of SR and HR."""
    return F.mse_loss(sr_features, hr_features)


def adversarial_loss(logits: torch.Tensor, is_real: bool) -> torch.Tensor:
    """BCE-with-logits against an all-real or all-fake target."""
    target = torch.ones_like(logits) if is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE(D(real), real) + BCE(D(fake), fake)."""
    return adversarial_loss(real_logits, True) + adversarial_loss(fake_logits, False)
