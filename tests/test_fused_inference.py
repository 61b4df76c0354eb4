"""`InferenceGenerator`: the eager generator's function with BatchNorm folded, by each algorithm
(NNPACK + srfeat Winograd, srfeat Winograd alone, the library's convolutions)."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import randomise_batchnorm, tiny_generator
from torch import nn

from srfeat.archs.generator import SRFeatGenerator
from srfeat.inference import InferenceGenerator, fold_batchnorm
from srfeat.inference.fused import Algorithm
from srfeat.ops.private_torch import nnpack_available

ALGORITHMS: list[Algorithm] = ["auto", "winograd", "direct"]


def test_fold_batchnorm_equals_conv_then_batchnorm() -> None:
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=False)
    bn = randomise_batchnorm(nn.BatchNorm2d(7))
    x = torch.randn(2, 5, 11, 13)
    folded = fold_batchnorm(conv, bn)
    assert folded.bias is not None
    torch.testing.assert_close(folded(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("scale", [2, 4])
def test_inference_generator_matches_generator_to_float_rounding(scale: int, algorithm: Algorithm) -> None:
    generator = tiny_generator(scale=scale, num_blocks=3, num_features=16)
    model = InferenceGenerator(generator, algorithm=algorithm)
    x = torch.rand(2, 3, 17, 22)
    assert model.uses_winograd(x) == (algorithm != "direct")
    with torch.no_grad():
        expected = generator(x)
    folded = model(x)
    model.upsample_pixels = 2 * 22 * 3  # bands of a few rows: the upsampler's band edges too
    banded = model(x.contiguous(memory_format=torch.channels_last))
    assert folded.shape == expected.shape == (2, 3, 17 * scale, 22 * scale)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(banded, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["auto", "winograd"])
def test_paper_generator_differs_from_eager_by_float_rounding(algorithm: Algorithm) -> None:
    """The full 16-block, 128-channel network: Winograd's rounding stays far below a grey level."""
    generator = randomise_batchnorm(SRFeatGenerator())
    image = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        expected = generator.double()(image.double())
    model = InferenceGenerator(generator.float(), algorithm=algorithm)
    result = model(image)
    error = (result.double() - expected).abs().max().item()
    assert error < 1e-4, f"max abs difference {error} on [0, 1] outputs"
    # Not the direct convolution in disguise: Winograd rounds differently.
    assert not torch.equal(result, InferenceGenerator(generator, algorithm="direct")(image))


def test_folding_removes_batchnorm_and_keeps_a_frozen_copy() -> None:
    generator = tiny_generator()
    model = InferenceGenerator(generator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    before = model.head.weight.clone()
    with torch.no_grad():
        generator.head.weight.add_(1.0)
    assert torch.equal(model.head.weight, before)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("region", [(0, 0, 13, 11), (3, 2, 9, 7), (5, 0, 13, 4), (0, 6, 1, 11)])
def test_region_output_is_the_crop_of_the_whole_output(algorithm: Algorithm, region: tuple[int, int, int, int]) -> None:
    """The Upscaler's protocol: upsample only a tile's own region, same pixels as the whole."""
    model = InferenceGenerator(tiny_generator(num_features=16), algorithm=algorithm)
    image = torch.rand(1, 3, 13, 11)
    whole = model(image)
    model.upsample_pixels = 12  # several bands, each narrower than the input
    top, left, bottom, right = region
    part = model(image, region)
    assert part.shape == (1, 3, 4 * (bottom - top), 4 * (right - left))
    torch.testing.assert_close(part, whole[:, :, 4 * top : 4 * bottom, 4 * left : 4 * right], rtol=0, atol=1e-6)


@pytest.mark.parametrize("band_rows", [2, 7])
def test_upsampler_bands_give_the_whole_image_result(band_rows: int) -> None:
    model = InferenceGenerator(tiny_generator(num_features=16))
    image = torch.rand(1, 3, 11, 9)
    whole = model(image)
    model.upsample_pixels = band_rows * 9  # bands of (about) this many low-resolution rows
    torch.testing.assert_close(model(image), whole, rtol=0, atol=1e-6)


def test_worker_threads_give_the_same_result() -> None:
    model = InferenceGenerator(tiny_generator(num_features=16))
    model.upsample_pixels = 3 * 20
    image = torch.rand(1, 3, 20, 20)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = model(image)
        torch.set_num_threads(2)
        parallel = model(image)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(parallel, single, rtol=0, atol=1e-6)


def test_full_size_receptive_radius() -> None:
    # head 9x9 (4) + 32 body 3x3 convolutions (32) + upsampler 1 + 1/2 + 1/4 -> 38 input pixels.
    for algorithm in ALGORITHMS:
        assert InferenceGenerator(SRFeatGenerator(), algorithm=algorithm).receptive_radius == 38
    assert InferenceGenerator(SRFeatGenerator(scale=2, num_features=8)).receptive_radius == 38


def test_receptive_radius_bounds_the_influence_of_a_pixel() -> None:
    # The direct convolutions: Winograd's rounding spreads float noise over whole tiles, so
    # "changed at all" would overstate its reach (its tiles are checked by the region tests).
    model = InferenceGenerator(tiny_generator(num_blocks=2), algorithm="direct")
    radius = model.receptive_radius  # 4 + 4 + 1.75 -> 10
    assert radius == 10
    x = torch.rand(1, 3, 41, 41)
    y = x.clone()
    y[0, :, 20, 20] += 0.5
    changed = (model(x) - model(y)).abs().amax(dim=(0, 1)) > 0
    rows = changed.any(dim=1).nonzero().flatten()
    # Input pixel 20 covers output pixels 80..83; the reach is 9.75 input pixels = 39 outputs.
    assert rows.min().item() >= 80 - 39 and rows.max().item() <= 83 + 39
    assert rows.min().item() <= 80 - 36  # the bound is tight, not generous


def test_auto_uses_nnpack_for_the_body_where_it_runs() -> None:
    generator = tiny_generator(num_features=16)
    model = InferenceGenerator(generator)
    assert model.use_nnpack == nnpack_available()
    assert model.memory_format == (torch.contiguous_format if model.use_nnpack else torch.channels_last)
    assert not InferenceGenerator(generator, algorithm="winograd").use_nnpack
    assert InferenceGenerator(generator, algorithm="direct").memory_format == torch.channels_last
    # Reduced precision runs the library's convolutions, in channels_last.
    assert model.to(torch.bfloat16).memory_format == torch.channels_last


@pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build has no NNPACK")
def test_nnpack_body_does_not_make_srfeat_winograd_filters() -> None:
    """The body's srfeat Winograd filters are 4x its weights: a model on NNPACK must not hold them."""
    model = InferenceGenerator(tiny_generator(num_features=16))
    model(torch.rand(1, 3, 9, 9))
    assert "upsample" in model._derived and "body" not in model._derived


def test_conversions_after_a_forward_use_the_converted_weights() -> None:
    """srfeat's Winograd filters are derived from the weights: `.to()` must not leave stale ones."""
    model = InferenceGenerator(tiny_generator(num_features=16), algorithm="winograd")
    image = torch.rand(1, 3, 10, 10)
    before = model(image)
    model.bfloat16().float()  # weights rounded to bfloat16 precision
    after = model(image)
    model.algorithm = "direct"
    torch.testing.assert_close(after, model(image), rtol=0, atol=1e-5)
    assert (after - before).abs().max() > 1e-4


def test_module_conversions_keep_it_working() -> None:
    """The Upscaler converts models with .to(dtype, memory_format): bfloat16 runs the direct path."""
    generator = tiny_generator(num_features=16)
    image = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = generator(image)
    # Module.to accepts memory_format at run time; torch's typed overloads leave it out.
    model = InferenceGenerator(generator).to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    torch.testing.assert_close(model(image), expected, rtol=0, atol=1e-5)
    low = InferenceGenerator(generator).to(torch.bfloat16)
    out = low(image.bfloat16())
    assert out.dtype == torch.bfloat16 and not low.uses_winograd(image.bfloat16())
    assert (out.float() - expected).abs().max() < 0.05


def test_bad_inputs_are_rejected() -> None:
    generator = SRFeatGenerator(num_features=8, num_blocks=1)
    with pytest.raises(ValueError, match="algorithm"):
        InferenceGenerator(generator, algorithm="fft")  # pyright: ignore[reportArgumentType]
    model = InferenceGenerator(generator)
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="region"):
        model(torch.rand(1, 3, 8, 8), (0, 0, 9, 8))


def test_a_failing_nnpack_falls_back_to_srfeat_winograd(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = tiny_generator(num_features=16)
    model = InferenceGenerator(generator)
    model.use_nnpack = True

    def fail(*args: object) -> torch.Tensor:
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", fail)
    image = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        expected = generator(image)
    torch.testing.assert_close(model(image), expected, rtol=0, atol=1e-5)
    assert not model.use_nnpack
