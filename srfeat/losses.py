"""The loss terms of SRFeat (paper, Sec. 3.2).

Stage 1 trains with the pixel MSE alone (plus, as options that are not the paper's, an MSE of the
luma that the evaluation measures, and the mean absolute error in place of the MSE). Stage 2 trains
with the perceptual loss on VGG19 conv5_4 features scaled by 1/12.75, plus 1e-3 times the
adversarial loss of each of the two discriminators. Discriminators output logits, so the
adversarial terms use BCE-with-logits (a sigmoid inside the network *and* in the loss would flatten
the signal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from srfeat.metrics.psnr_ssim import Y_WEIGHTS

# The authors scale conv5_4 activations by 1/12.75 so that their magnitude suits the MSE
# and the feature discriminator.
FEATURE_SCALE = 1.0 / 12.75
ADVERSARIAL_WEIGHT = 1e-3

# BT.601 luma of RGB in [0, 1], as the evaluation computes it, divided by 255 so that Y is on the
# images' [0, 1] scale; its offset of 16 cancels in a difference.
LUMA_WEIGHTS = tuple(float(weight) / 255.0 for weight in Y_WEIGHTS)


def luma(images: torch.Tensor) -> torch.Tensor:
    """BT.601 Y (without its offset) of an NCHW RGB batch in [0, 1], as N1HW."""
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


# The distances stage 1 can measure its pixel loss with: the paper's mean squared error, or the mean absolute
# error, which EDSR trains with and which Zhao et al. (2017) found to reach a lower squared error than the squared
# error itself when a network trained on that switches to it (the squared error settles in poorer minima).
PIXEL_DISTANCES = {"mse": F.mse_loss, "l1": F.l1_loss}


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, luma_weight: float = 0.0, distance: str = "mse") -> torch.Tensor:
    """Stage-1 loss: the `distance` (PIXEL_DISTANCES: mean squared or absolute error) between the SR and HR
    images, plus `luma_weight` times that of their luma.

    The benchmarks score the luma alone (PSNR and SSIM on Y); the RGB term keeps the colours
    anchored, which a loss on the luma alone leaves free. MSE and 0 are the paper's loss.
    """
    measure = PIXEL_DISTANCES[distance]
    loss = measure(sr, hr)
    if luma_weight:
        loss = loss + luma_weight * measure(luma(sr), luma(hr))
    return loss


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
