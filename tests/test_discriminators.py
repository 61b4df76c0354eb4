"""Image and feature discriminators: the paper's sizes, logits out, clear size errors, the
authors' TF 'SAME' padding and initialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from srfeat.archs.discriminators import (
    FeatureDiscriminator,
    ImageDiscriminator,
    SamePaddedConv2d,
    init_discriminator_as_authors,
)
from srfeat.archs.vgg import build_vgg19_conv5_4


def test_image_discriminator_dense_layer_has_184832_inputs_for_296_patches() -> None:
    discriminator = ImageDiscriminator(296)
    assert discriminator.dense_inputs == 19 * 19 * 512 == 184_832
    dense = discriminator.classifier[1]
    assert isinstance(dense, torch.nn.Linear)
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
    assert discriminator.input_size == 19 and discriminator.in_channels == 512
    assert discriminator(torch.rand(2, 512, 19, 19)).shape == (2,)
    with pytest.raises(ValueError, match="512, 19, 19"):
        discriminator(torch.rand(2, 512, 18, 18))


def test_at_296_pixels_the_feature_discriminator_sees_19x19_vgg_maps() -> None:
    """VGG19's pools round up as the authors' TF 'SAME' pools: 296 -> 148 -> 74 -> 37 -> 19."""
    vgg = build_vgg19_conv5_4().eval()
    with torch.no_grad():
        features = vgg(torch.rand(1, 3, 296, 296))
    assert features.shape == (1, 512, 19, 19)
    discriminator = FeatureDiscriminator(296, base_channels=8, dense_features=16)
    assert discriminator(features).shape == (1,)
    # the paper's widths: four stride-2 convs take the 19x19 map to 2x2x512 dense inputs
    assert FeatureDiscriminator(296).dense_inputs == 2 * 2 * 512


@pytest.mark.parametrize("size", [24, 100])
def test_feature_discriminator_size_follows_vgg(size: int) -> None:
    vgg = build_vgg19_conv5_4().eval()
    with torch.no_grad():
        side = vgg(torch.rand(1, 3, size, size)).shape[-1]
    assert FeatureDiscriminator(size, base_channels=8, dense_features=16).input_size == side == -(-size // 16)


def test_a_discriminator_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="ImageDiscriminator: input size must be at least 1, got 0"):
        ImageDiscriminator(hr_patch_size=0)
    with pytest.raises(ValueError, match="dense_features must be at least 1, got 0"):
        ImageDiscriminator(hr_patch_size=32, base_channels=8, dense_features=0)


@pytest.mark.parametrize("size", [10, 11, 296, 37])
def test_stride_2_convs_sample_where_tf_same_padding_does(size: int) -> None:
    """TF 'SAME' centres a stride-2 output on input 2i+1 when the size is even (it pads only at the
    bottom and right), on 2i when odd: the stride-1 output there. padding=1 centred all on 2i."""
    torch.manual_seed(0)
    conv = SamePaddedConv2d(2, 3, size, stride=2, bias=True)
    image = torch.randn(1, 2, size, size)
    every_pixel = F.conv2d(image, conv.weight, conv.bias, padding=1)
    first = 1 if size % 2 == 0 else 0
    expected = every_pixel[..., first::2, first::2]
    assert expected.shape[-1] == math.ceil(size / 2)
    assert torch.allclose(conv(image), expected, atol=1e-6)


def test_the_authors_initialisation_starts_dense_layers_far_larger() -> None:
    discriminator = ImageDiscriminator(64)
    dense_layer = discriminator.classifier[1]
    assert isinstance(dense_layer, torch.nn.Linear)
    default_dense = dense_layer.weight.std().item()
    init_discriminator_as_authors(discriminator, torch.Generator().manual_seed(0))
    dense = dense_layer.weight
    # tensorlayer's DenseLayer default: N(0, 0.1) cut at two standard deviations (std 0.088 after the cut).
    assert dense.abs().max().item() <= 0.2 + 1e-6 and dense.std().item() == pytest.approx(0.088, rel=0.02)
    assert dense.std().item() > 10 * default_dense  # 14x at these 8,192 inputs; 65x at the paper's 184,832
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:  # variance scaling: sqrt(1.3 * 2 / fan_in) before the cut, 0.88 of it after
        fan_in = conv.in_channels * 9
        assert conv.weight.std().item() == pytest.approx(0.88 * math.sqrt(2.6 / fan_in), rel=0.1)
        assert conv.bias is None or torch.all(conv.bias == 0)
    assert all(torch.all(layer.bias == 0) for layer in discriminator.classifier if isinstance(layer, torch.nn.Linear))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            # a float for an int, on purpose
            lambda: ImageDiscriminator(32.5, 8, 16),  # pyright: ignore[reportArgumentType]
            "ImageDiscriminator: input size must be a whole number, got float 32.5",
        ),
        (
            # a float for an int, on purpose
            lambda: ImageDiscriminator(32, 8.0, 16),  # pyright: ignore[reportArgumentType]
            "ImageDiscriminator: base_channels must be a whole number, got float",
        ),
        # a float for an int, on purpose
        (lambda: FeatureDiscriminator(32.5, 8, 16), "hr_patch_size must be a whole number, got float 32.5"),  # pyright: ignore[reportArgumentType]
        # a string for an int, on purpose
        (lambda: FeatureDiscriminator("32", 8, 16), "hr_patch_size must be a whole number, got str '32'"),  # pyright: ignore[reportArgumentType]
    ],
)
def test_a_size_that_is_no_whole_number_is_one_line(build: Callable[[], object], message: str) -> None:
    """They were torch's TypeError from inside (`empty(): argument 'size' failed to unpack`) or `'<' not
    supported between instances of 'str' and 'int'`."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError) as refused:
        build()
    assert str(refused.value).startswith(message), refused.value


@pytest.mark.parametrize(
    "build",
    # A tensor as a size, on purpose.
    [lambda: ImageDiscriminator(torch.ones(3, 3), 8, 16), lambda: FeatureDiscriminator(torch.ones(3, 3), 8, 16)],  # pyright: ignore[reportArgumentType]
)
def test_a_tensor_given_as_a_size_is_quoted_on_one_line(build: Callable[[], object]) -> None:
    """The message quoted the value's repr, which for a tensor spans lines: "got Tensor tensor([[1., 1.],\n..."."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError) as refused:
        build()
    assert "must be a whole number, got Tensor tensor([[1., 1., 1.]," in str(refused.value)
    assert "\n" not in str(refused.value)


def test_integer_pixels_are_a_one_line_error_as_for_the_generator() -> None:
    """It was the first conv's "Input type (unsigned char) and bias type (float) should be the same"."""
    from srfeat.errors import NotAnImageError

    with pytest.raises(
        NotAnImageError, match=r"ImageDiscriminator takes float inputs, got torch.uint8: use x.float\(\)"
    ):
        ImageDiscriminator(32, 8, 16)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
