"""Every fast inference path against the plain `SRFeatGenerator.forward` on edge shapes: one-pixel
and thin images, tiles above and below the image and the receptive radius, batches, layouts, grey
and alpha, bf16, ONNX Runtime, the self-ensemble; and the band workers' thread settings.

Tolerances come from the arithmetic: float32 paths round differently from the reference (Winograd,
folded BatchNorm) by about 1e-6 on [0, 1] for these small networks, bounded at 1e-5; integer
outputs may differ from the rounded reference by one level (a value near a rounding boundary);
bf16 keeps 8 bits of mantissa, so its output is bounded at 2 grey levels (measured: under 0.7).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from inference_helpers import tiny_generator

from srfeat.archs.generator import SRFeatGenerator
from srfeat.inference import InferenceGenerator, Upscaler
from srfeat.inference.fused import Algorithm
from srfeat.inference.pixels import LUMA_WEIGHTS

FP32 = 1e-5
# (height, width): one pixel, one row, one column, and sizes around the 4x4 Winograd tiles.
EDGE_SHAPES = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 5), (5, 4)]


@pytest.fixture(scope="module")
def generator() -> SRFeatGenerator:
    torch.manual_seed(0)
    return tiny_generator(num_blocks=2, num_features=8)  # receptive radius 10


def reference(generator: SRFeatGenerator, batch: torch.Tensor) -> torch.Tensor:
    """The eager generator in float64: what every path approximates."""
    with torch.no_grad():
        return copy.deepcopy(generator).double()(batch.double()).float()


def reference_image(generator: SRFeatGenerator, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> the clamped output `Upscaler` promises."""
    return reference(generator, image[None])[0].clamp(0.0, 1.0)


@pytest.mark.parametrize("algorithm", ["auto", "winograd", "direct"])
def test_every_algorithm_matches_the_generator_on_edge_shapes(generator: SRFeatGenerator, algorithm: Algorithm) -> None:
    model = InferenceGenerator(generator, algorithm=algorithm)
    torch.manual_seed(1)
    for height, width in EDGE_SHAPES:
        batch = torch.rand(3, 3, height, width)
        expected = reference(generator, batch)
        layouts = (
            batch,
            batch.contiguous(memory_format=torch.channels_last),
            batch.transpose(2, 3).contiguous().transpose(2, 3),
        )
        for upsample_pixels in (16384, 1):  # the upsampler whole, and in bands of one row
            model.upsample_pixels = upsample_pixels
            for layout in layouts:
                result = model(layout)
                assert result.shape == (3, 3, 4 * height, 4 * width)
                torch.testing.assert_close(result, expected, rtol=0, atol=FP32)
        part = model(batch, (height - 1, width - 1, height, width))  # the last pixel alone
        torch.testing.assert_close(part, expected[..., -4:, -4:], rtol=0, atol=FP32)


def test_scale_2_and_one_block_match_the_generator_on_edge_shapes() -> None:
    torch.manual_seed(2)
    generator = tiny_generator(scale=2, num_blocks=1, num_features=3)  # no long skips at all
    for algorithm in ("auto", "winograd", "direct"):
        model = InferenceGenerator(generator, algorithm=algorithm)
        for height, width in EDGE_SHAPES[:4]:
            batch = torch.rand(2, 3, height, width)
            torch.testing.assert_close(model(batch), reference(generator, batch), rtol=0, atol=FP32)


# Tiles of a few pixels, below and above the receptive radius (10), and larger than the image.
@pytest.mark.parametrize("tile", [3, 9, 11, 40])
def test_tiles_of_every_size_on_thin_images_match_the_generator(generator: SRFeatGenerator, tile: int) -> None:
    upscaler = Upscaler(generator, device="cpu", tile=tile)
    torch.manual_seed(3)
    for height, width in [(1, 23), (23, 1), (12, 11)]:
        image = torch.rand(3, height, width)
        torch.testing.assert_close(upscaler(image), reference_image(generator, image), rtol=0, atol=FP32)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_grey_rgb_and_alpha_arrays_match_the_generator(generator: SRFeatGenerator, dtype: type) -> None:
    """What the network makes of the colour, the luma mix for grey, and the alpha resized on its
    own (a constant alpha stays exact), through the array conversions, on one-row images."""
    upscaler = Upscaler(generator, device="cpu", tile=3)
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    rng = np.random.default_rng(4)
    for channels in (1, 2, 3, 4):
        for height, width in [(1, 6), (5, 1)]:
            values = rng.random((height, width, channels))
            if channels in (2, 4):
                values[..., -1] = 1.0  # opaque: exactly 1 after resizing
            array = (values * peak).round().astype(dtype) if peak != 1 else values.astype(dtype)
            pixels = torch.from_numpy(array.astype(np.float64) / peak).float().permute(2, 0, 1)
            colour = pixels[:3] if channels >= 3 else pixels[:1].expand(3, height, width)
            expected = reference_image(generator, colour)
            if channels < 3:
                expected = (expected * torch.tensor(LUMA_WEIGHTS).view(3, 1, 1)).sum(0, keepdim=True)
            if channels in (2, 4):
                expected = torch.cat([expected, torch.ones(1, 4 * height, 4 * width)])
            result = upscaler(array)
            assert result.dtype == dtype and result.shape == (4 * height, 4 * width, channels)
            got = torch.from_numpy(result.astype(np.float64)).permute(2, 0, 1)
            if peak == 1:
                torch.testing.assert_close(got, expected.double(), rtol=0, atol=FP32)
            else:
                assert (got - (expected.double() * peak).round()).abs().max() <= 1


def test_tta_on_thin_images_is_the_mean_of_the_eight_orientations(generator: SRFeatGenerator) -> None:
    upscaler = Upscaler(generator, device="cpu", tile=4, tta=True)
    torch.manual_seed(5)
    for height, width in [(1, 6), (6, 1), (2, 3)]:
        image = torch.rand(3, height, width)
        total = torch.zeros(3, 4 * height, 4 * width)
        for mirror in (False, True):
            for turns in range(4):
                turned = (image.flip(-1) if mirror else image).rot90(turns, (-2, -1))
                back = reference_image(generator, turned.contiguous()).rot90(-turns, (-2, -1))
                total += back.flip(-1) if mirror else back
        torch.testing.assert_close(upscaler(image), total / 8, rtol=0, atol=FP32)


def test_cpu_bf16_stays_within_two_grey_levels_of_the_generator(generator: SRFeatGenerator) -> None:
    upscaler = Upscaler(generator, device="cpu", dtype="bf16", tile=5)
    torch.manual_seed(6)
    for height, width in [(1, 1), (1, 7), (7, 1), (9, 8)]:
        image = torch.rand(3, height, width)
        error = (upscaler(image) - reference_image(generator, image)).abs().max().item()
        assert error * 255 <= 2, f"{height}x{width}: {error * 255:.2f} grey levels"


def test_onnx_runtime_matches_the_generator_on_edge_shapes(generator: SRFeatGenerator) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from srfeat.export.onnx import model_info, onnx_model
    from srfeat.inference.onnx_runner import OnnxRunner

    runner = OnnxRunner(onnx_model(generator, model_info(generator)).SerializeToString(), "the tiny generator")
    torch.manual_seed(7)
    for height, width in EDGE_SHAPES:
        batch = torch.rand(3, 3, height, width)
        expected = reference(generator, batch).clamp(0.0, 1.0)
        torch.testing.assert_close(runner(batch), expected, rtol=0, atol=FP32)
        part = runner(batch, (height - 1, 0, height, width))  # the last row
        torch.testing.assert_close(part, expected[..., -4:, :], rtol=0, atol=FP32)


def test_threads_started_after_a_parallel_upscale_keep_the_process_thread_count() -> None:
    """The band workers run on one intra-op thread each. Setting that (`torch.set_num_threads`)
    also set the count every thread started afterwards begins with: after the first upscale that
    used the workers, a web server's or a user's new thread ran everything on one core."""
    script = textwrap.dedent(
        """
        import threading
        import torch
        from srfeat.archs.generator import SRFeatGenerator
        from srfeat.inference import InferenceGenerator

        torch.set_num_threads(3)
        model = InferenceGenerator(SRFeatGenerator(num_features=8, num_blocks=2), algorithm="winograd")
        model.upsample_pixels = 16  # several upsampler bands: the workers run
        model(torch.rand(1, 3, 40, 40))
        seen = []
        started = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        started.start()
        started.join()
        from srfeat.ops.workers import run_parallel

        in_workers = []
        run_parallel(lambda item: in_workers.append(torch.get_num_threads()), [0, 1, 2])
        print(torch.get_num_threads(), seen[0], *sorted(in_workers))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The caller and a thread it starts keep 3; each worker still runs on one.
    assert done.stdout.split() == ["3", "3", "1", "1", "1"], done.stdout
