"""Winograd F(4x4, 3x3) convolution: forward and gradients against direct convolution."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srfeat.archs.generator import SRFeatGenerator
from srfeat.ops.winograd import (
    MIN_WINOGRAD_SIZE,
    WinogradConv2d,
    _WinogradConv3x3,
    pixel_shuffle_target,
    shuffle_channel_order,
    tiles_for,
    to_padded,
    use_winograd,
    winograd_conv3x3,
    winograd_filter,
)


@pytest.mark.parametrize("height, width", [(4, 4), (5, 11), (13, 8), (1, 3)])
def test_winograd_conv_matches_direct_convolution(height: int, width: int) -> None:
    image = torch.randn(2, 8, height, width)
    weight, bias = torch.randn(12, 8, 3, 3) * 0.2, torch.randn(12)
    residual = torch.randn(2, 4 * tiles_for(height), 4 * tiles_for(width), 12)
    out = torch.full((2, 4 * tiles_for(height), 4 * tiles_for(width), 12), float("nan"))
    winograd_conv3x3(to_padded(image), winograd_filter(weight), bias, out, leaky_slope=0.2, residual=residual)

    expected = F.leaky_relu(F.conv2d(image.double(), weight.double(), bias.double(), padding=1), 0.2).permute(
        0, 2, 3, 1
    )
    expected = expected + residual[:, :height, :width].double()
    torch.testing.assert_close(out[:, :height, :width].double(), expected, rtol=0, atol=2e-5)


def test_winograd_conv_writes_pixel_shuffle_positions() -> None:
    """With the output channels reordered, the transform writes the shuffled image directly."""
    image = torch.randn(1, 6, 7, 5)
    weight, bias = torch.randn(24, 6, 3, 3) * 0.2, torch.randn(24)
    upsampled = image.new_zeros(1, 2 * (4 * tiles_for(7)) + 2, 2 * (4 * tiles_for(5)) + 2, 6)
    winograd_conv3x3(
        to_padded(image),
        winograd_filter(shuffle_channel_order(weight)),
        shuffle_channel_order(bias),
        pixel_shuffle_target(upsampled),
    )

    expected = F.pixel_shuffle(F.conv2d(image, weight, bias, padding=1), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(upsampled[:, 1:15, 1:11], expected, rtol=0, atol=2e-5)
    assert torch.all(upsampled[:, 0] == 0) and torch.all(upsampled[:, :, 0] == 0), "the border must stay zero"


@pytest.mark.parametrize("height, width, bias", [(9, 11, True), (8, 8, False), (13, 10, True)])
def test_winograd_conv2d_gradients_match_conv2d(height: int, width: int, bias: bool) -> None:
    reference = nn.Conv2d(8, 12, 3, padding=1, bias=bias)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=bias)
    conv.load_state_dict(reference.state_dict())
    assert use_winograd(conv, min_channels=8) == 1 and isinstance(conv, WinogradConv2d)
    image = torch.randn(2, 8, height, width)
    x, x_ref = image.clone().requires_grad_(), image.clone().requires_grad_()
    with mock.patch.object(_WinogradConv3x3, "apply", wraps=_WinogradConv3x3.apply) as winograd:
        out = conv(x)
    assert winograd.call_count == 1
    expected = reference(x_ref)
    grad = torch.randn_like(expected)
    (out * grad).sum().backward()
    (expected * grad).sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=5e-5)
    # A weight gradient sums over every pixel: compare relative to its size.
    assert reference.weight.grad is not None
    torch.testing.assert_close(
        conv.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5 * reference.weight.grad.abs().max().item()
    )
    if bias:
        assert conv.bias is not None and reference.bias is not None
        torch.testing.assert_close(conv.bias.grad, reference.bias.grad, rtol=1e-5, atol=1e-4)


def test_winograd_gradients_pass_gradcheck() -> None:
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _WinogradConv3x3.apply(x, w, b, True), (x, weight, bias))


def test_use_winograd_switches_only_plain_3x3_convolutions() -> None:
    generator = SRFeatGenerator(num_features=64, num_blocks=2)
    state = {k: v.clone() for k, v in generator.state_dict().items()}
    # 2 blocks x 2 convolutions + 2 upsampling convolutions; not the 9x9 head, the 1x1 skip,
    # or the tail (3 output channels).
    assert use_winograd(generator) == 6
    assert type(generator.head) is nn.Conv2d and type(generator.tail) is nn.Conv2d
    assert generator.state_dict().keys() == state.keys()
    strided = nn.Conv2d(64, 64, 3, stride=2, padding=1)
    assert use_winograd(nn.Sequential(strided)) == 0


def test_winograd_generator_trains_like_the_eager_one() -> None:
    """One optimizer step through every switched convolution: the same loss and weights."""
    torch.manual_seed(0)
    reference = SRFeatGenerator(num_features=64, num_blocks=2)
    generator = SRFeatGenerator(num_features=64, num_blocks=2)
    generator.load_state_dict(reference.state_dict())
    use_winograd(generator)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    losses = []
    with mock.patch.object(_WinogradConv3x3, "apply", wraps=_WinogradConv3x3.apply) as winograd:
        for model in (reference, generator):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            loss = F.mse_loss(model(lr), hr)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert winograd.call_count == 6
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, expected), actual in zip(reference.state_dict().items(), generator.state_dict().values(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_winograd_conv2d_leaves_other_cases_to_the_library() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    reference = nn.Conv2d(8, 8, 3, padding=1)
    reference.load_state_dict(conv.state_dict())
    use_winograd(conv, min_channels=8)
    image = torch.rand(1, 8, MIN_WINOGRAD_SIZE, MIN_WINOGRAD_SIZE)
    small = torch.rand(1, 8, MIN_WINOGRAD_SIZE - 1, 12)
    with mock.patch.object(_WinogradConv3x3, "apply", wraps=_WinogradConv3x3.apply) as winograd:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(image).dtype == torch.bfloat16
        torch.testing.assert_close(conv(small), reference(small), rtol=0, atol=0)
        torch.testing.assert_close(conv.double()(image.double()), reference.double()(image.double()))
    assert winograd.call_count == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch, size", [(5, 8), (2, 40)])
def test_bands_of_images_and_of_rows_on_workers(threads: int, batch: int, size: int) -> None:
    """Small images are banded a few images at a time, large ones by rows; spread over workers."""
    reference = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    conv.load_state_dict(reference.state_dict())
    use_winograd(conv, min_channels=8)
    image = torch.randn(batch, 8, size, size)
    x, x_ref = image.clone().requires_grad_(), image.clone().requires_grad_()
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out = conv(x)
        out.square().sum().backward()
    finally:
        torch.set_num_threads(saved)
    expected = reference(x_ref)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-4)
    assert reference.weight.grad is not None
    torch.testing.assert_close(
        conv.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5 * reference.weight.grad.abs().max().item()
    )
