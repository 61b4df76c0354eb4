"""The fast inference generator: the eager generator's function, by Winograd or folded library convolutions."""

from __future__ import annotations

import pytest
import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.inference.fast import FastSRFeatGenerator, optimize_for_inference


def _with_trained_statistics(generator: SRFeatGenerator) -> SRFeatGenerator:
    """BatchNorm with non-trivial statistics, so folding has something to fold."""
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return generator.eval()


@pytest.mark.parametrize("algorithm", ["auto", "winograd"])
@pytest.mark.parametrize("scale", [2, 4])
def test_fast_generator_matches_eager_generator(scale: int, algorithm: str) -> None:
    generator = _with_trained_statistics(SRFeatGenerator(scale=scale, num_features=16, num_blocks=3))
    fast = optimize_for_inference(generator, algorithm=algorithm)  # type: ignore[arg-type]
    image = torch.rand(2, 3, 9, 14)
    with torch.no_grad():
        expected = generator(image)
    assert fast.uses_winograd(image)
    out = fast(image)
    assert out.shape == expected.shape == (2, 3, 9 * scale, 14 * scale)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("band_rows", [2, 7])
def test_upsampler_bands_give_the_whole_image_result(band_rows: int) -> None:
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    fast = optimize_for_inference(generator)
    image = torch.rand(1, 3, 11, 9)
    whole = fast(image)
    fast.upsample_pixels = band_rows * 9  # bands of (about) this many low-resolution rows
    torch.testing.assert_close(fast(image), whole, rtol=0, atol=1e-6)


def test_worker_threads_give_the_same_result() -> None:
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    fast = optimize_for_inference(generator)
    fast.upsample_pixels = 3 * 20
    image = torch.rand(1, 3, 20, 20)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = fast(image)
        torch.set_num_threads(2)
        parallel = fast(image)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(parallel, single, rtol=0, atol=1e-6)


def test_direct_path_matches_eager_generator() -> None:
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=3))
    fast = optimize_for_inference(generator, algorithm="direct")
    image = torch.rand(1, 3, 10, 7)
    assert not fast.uses_winograd(image)
    with torch.no_grad():
        torch.testing.assert_close(fast(image), generator(image), rtol=0, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["auto", "winograd"])
def test_paper_generator_differs_from_eager_by_float_rounding(algorithm: str) -> None:
    """The full 16-block, 128-channel network: Winograd's rounding stays far below a grey level."""
    generator = _with_trained_statistics(SRFeatGenerator())
    image = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        expected = generator.double()(image.double())
    fast = optimize_for_inference(generator.float(), algorithm=algorithm)  # type: ignore[arg-type]
    error = (fast(image).double() - expected).abs().max().item()
    assert error < 1e-4, f"max abs difference {error} on [0, 1] outputs"


def test_module_conversions_keep_it_working() -> None:
    """The Upscaler converts models with .to(dtype, memory_format): bfloat16 runs the direct path."""
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    image = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = generator(image)
    fast = optimize_for_inference(generator).to(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(image), expected, rtol=0, atol=1e-5)
    assert all(not p.requires_grad for p in fast.parameters())
    low = optimize_for_inference(generator).to(torch.bfloat16)
    out = low(image.bfloat16())
    assert out.dtype == torch.bfloat16 and not low.uses_winograd(image.bfloat16())
    assert (out.float() - expected).abs().max() < 0.05


def test_receptive_radius_matches_the_inference_generator() -> None:
    from srfeat.inference.fused import InferenceGenerator

    generator = SRFeatGenerator()
    assert FastSRFeatGenerator(generator).receptive_radius == InferenceGenerator(generator).receptive_radius == 38


def test_bad_inputs_are_rejected() -> None:
    generator = SRFeatGenerator(num_features=8, num_blocks=1)
    with pytest.raises(ValueError, match="algorithm"):
        optimize_for_inference(generator, algorithm="fft")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        optimize_for_inference(generator)(torch.rand(1, 4, 8, 8))


@pytest.mark.parametrize("algorithm", ["auto", "winograd", "direct"])
@pytest.mark.parametrize("region", [(0, 0, 13, 11), (3, 2, 9, 7), (5, 0, 13, 4), (0, 6, 1, 11)])
def test_region_output_is_the_crop_of_the_whole_output(algorithm: str, region: tuple[int, int, int, int]) -> None:
    """The Upscaler's protocol: upsample only a tile's own region, same pixels as the whole."""
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    fast = optimize_for_inference(generator, algorithm=algorithm)  # type: ignore[arg-type]
    image = torch.rand(1, 3, 13, 11)
    whole = fast(image)
    fast.upsample_pixels = 12  # several bands
    top, left, bottom, right = region
    part = fast(image, region)
    assert part.shape == (1, 3, 4 * (bottom - top), 4 * (right - left))
    torch.testing.assert_close(part, whole[:, :, 4 * top : 4 * bottom, 4 * left : 4 * right], rtol=0, atol=1e-6)


def test_auto_uses_nnpack_for_the_body_where_it_runs() -> None:
    from srfeat.inference.fast import nnpack_available

    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    fast = optimize_for_inference(generator)
    assert fast.use_nnpack == nnpack_available()
    assert fast.memory_format == (torch.contiguous_format if fast.use_nnpack else torch.channels_last)
    assert not optimize_for_inference(generator, algorithm="winograd").use_nnpack


def test_regions_outside_the_input_are_rejected() -> None:
    fast = optimize_for_inference(SRFeatGenerator(num_features=8, num_blocks=1))
    with pytest.raises(ValueError, match="region"):
        fast(torch.rand(1, 3, 8, 8), (0, 0, 9, 8))


def test_a_failing_nnpack_falls_back_to_winograd(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _with_trained_statistics(SRFeatGenerator(num_features=16, num_blocks=2))
    fast = optimize_for_inference(generator)
    fast.use_nnpack = True

    def fail(*args: object) -> torch.Tensor:
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", fail)
    image = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        expected = generator(image)
    torch.testing.assert_close(fast(image), expected, rtol=0, atol=1e-5)
    assert not fast.use_nnpack
