"""New generators: the interpolating initialisation (a bilinear upscaler at step 0) and the authors'."""

from __future__ import annotations

import pytest
import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.archs.generator_init import init_as_authors, init_as_interpolator


def test_starts_by_reproducing_flat_and_linear_images() -> None:
    generator = init_as_interpolator(SRFeatGenerator(num_features=16, num_blocks=3)).eval()
    # (at the borders the convolutions' zero padding blends in black, as for any SRFeat generator)
    flat = torch.full((1, 3, 6, 7), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(generator(flat)[..., 4:-4, 4:-4], torch.full((1, 3, 16, 20), 0.3))
        # bilinear interpolation reproduces a linear ramp away from the borders
        ramp = torch.linspace(0.1, 0.9, 12).view(1, 1, 1, 12).expand(1, 3, 8, 12).contiguous()
        out = generator(ramp)[..., 8:-8, 8:-8]
    steps = out[..., 1:] - out[..., :-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 0.8 / 11 / 4), atol=1e-5, rtol=0)


def test_every_weight_stays_trainable() -> None:
    generator = init_as_interpolator(SRFeatGenerator(num_features=8, num_blocks=2))
    optimizer = torch.optim.Adam(generator.parameters(), 1e-3)
    lr, hr = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 24, 24)
    before = [p.detach().clone() for p in generator.parameters()]
    for _ in range(2):  # zero-gamma blocks open up after the first step
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(generator(lr), hr).backward()
        optimizer.step()
    frozen = [name for (name, p), b in zip(generator.named_parameters(), before, strict=True) if torch.equal(p, b)]
    assert frozen == []


def test_authors_initialisation_is_normal_001_with_zero_biases_and_unit_gamma() -> None:
    generator = SRFeatGenerator(num_features=32, num_blocks=3)
    with torch.no_grad():  # start from something that is not the authors' state
        for p in generator.parameters():
            p.add_(0.5)
        running_var = generator.body[0].bn1.running_var
        assert running_var is not None
        running_var.fill_(7.0)
    init_as_authors(generator)
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 3 * 2 + 2 + 2 + 1  # head, body, long skips, upsampler, tail
    weights = torch.cat([conv.weight.flatten() for conv in convs])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.01, rel=0.02)
    biases = [conv.bias for conv in convs if conv.bias is not None]
    assert len(biases) == 4 and all(torch.all(b == 0) for b in biases)  # head, upsampler x2, tail
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
            assert torch.all(module.running_mean == 0) and torch.all(module.running_var == 1)
