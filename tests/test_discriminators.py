"""Image and feature discriminators: the paper's sizes, logits out, clear size errors."""

from __future__ import annotations

import pytest
import torch

from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator


def test_image_discriminator_dense_layer_has_184832_inputs_for_296_patches() -> None:
    discriminator = ImageDiscriminator(296)
    assert discriminator.dense_inputs == 19 * 19 * 512 == 184_832
    dense = discriminator.classifier[1]
    assert dense.in_features == 184_832 and dense.out_features == 1024
    assert 189_000_000 < dense.weight.numel() < 190_000_000


def test_image_discriminator_outputs_one_logit_per_sample() -> None:
    discriminator = ImageDiscriminator(32, base_channels=8, dense_features=16)
    logits = discriminator(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3,)
    assert not any(isinstance(m, (torch.nn.Sigmoid,)) for m in discriminator.modules())


def test_wrong_input_size_names_the_expected_size() -> None:
    discriminator = ImageDiscriminator(96, base_channels=8, dense_features=16)
    with pytest.raises(ValueError, match=r"\(N, 3, 96, 96\).*got \(1, 3, 64, 64\)"):
        discriminator(torch.rand(1, 3, 64, 64))


def test_feature_discriminator_takes_conv5_4_maps() -> None:
    discriminator = FeatureDiscriminator(296, base_channels=8, dense_features=16)
    assert discriminator.input_size == 18 and discriminator.in_channels == 512
    assert discriminator(torch.rand(2, 512, 18, 18)).shape == (2,)
    with pytest.raises(ValueError, match="512, 18, 18"):
        discriminator(torch.rand(2, 512, 19, 19))
