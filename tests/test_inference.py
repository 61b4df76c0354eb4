"""Inference: exact tiling, the Upscaler API, 16-bit PNG (the folded generator: test_fused_inference.py)."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import randomise_batchnorm, tiny_generator
from PIL import Image, ImageOps

from srfeat.archs.generator import SRFeatGenerator
from srfeat.data.png16 import png16_channels, read_png16, write_png16
from srfeat.data.resize import imresize
from srfeat.errors import SRFeatError, WeightsError
from srfeat.inference import InferenceGenerator, Upscaler, plan_tiles, tiling, upscale_tiled
from srfeat.inference.tiling import count_non_finite
from srfeat.weights import save_generator

# -- tiling --------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width", "tile", "pad"), [(50, 37, 16, 5), (8, 8, 64, 3), (100, 1, 7, 0)])
def test_tiles_cover_every_pixel_once_and_read_only_the_image(height: int, width: int, tile: int, pad: int) -> None:
    owners = np.zeros((height, width), dtype=int)
    for part in plan_tiles(height, width, tile, pad):
        assert part.bottom - part.top <= tile and part.right - part.left <= tile
        assert 0 <= part.in_top <= part.top and part.bottom <= part.in_bottom <= height
        assert 0 <= part.in_left <= part.left and part.right <= part.in_right <= width
        assert part.in_top == max(0, part.top - pad) and part.in_right == min(width, part.right + pad)
        owners[part.top : part.bottom, part.left : part.right] += 1
    assert (owners == 1).all()


def test_tiled_equals_untiled_with_full_depth() -> None:
    # Full depth (receptive radius 38 like the real network), narrow width to stay fast.
    model = InferenceGenerator(tiny_generator(num_blocks=16, num_features=8))
    image = torch.rand(3, 90, 130)
    whole = upscale_tiled(model, image, 4, tile=1000, pad=38, device=torch.device("cpu"), dtype=torch.float32)
    tiled = upscale_tiled(model, image, 4, tile=24, pad=38, device=torch.device("cpu"), dtype=torch.float32)
    assert (tiled - whole).abs().max().item() < 1e-5
    # With less context than the receptive radius the seams show: the padding is what matters.
    short = upscale_tiled(model, image, 4, tile=24, pad=4, device=torch.device("cpu"), dtype=torch.float32)
    assert (short - whole).abs().max().item() > 1e-4


def test_tiled_equals_untiled_full_size_network() -> None:
    # The real architecture on an 8x150 strip, tiles of 40 columns: each reads 40 + 2 * 38
    # columns at most, so the tiles really are cut out of the image.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = InferenceGenerator(randomise_batchnorm(SRFeatGenerator()))
    image = torch.rand(3, 8, 150)
    whole = upscale_tiled(model, image, 4, tile=150, pad=38, device=torch.device("cpu"), dtype=torch.float32)
    tiled = upscale_tiled(model, image, 4, tile=40, pad=38, device=torch.device("cpu"), dtype=torch.float32)
    assert (tiled - whole).abs().max().item() * 255 < 0.01


@pytest.mark.parametrize(("size", "tile", "whole"), [((11, 9), 1, True), ((12, 12), 2, True), ((15, 16), 1, False)])
def test_tiles_that_read_the_same_window_share_one_run_of_the_network(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], tile: int, whole: bool
) -> None:
    """`srfeat upscale --tile 1` on a small image: every tile's padding reached both borders, so each tile read
    the whole image and ran the whole network on it again (99 times for 11x9). Now the body runs once for each
    distinct window, and each tile's own region is upsampled from it: the result the tiles gave, to the bit."""
    model = InferenceGenerator(tiny_generator())
    pad = model.receptive_radius  # 10
    height, width = size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(3))
    bodies: list[tuple[int, ...]] = []
    body = InferenceGenerator._features_winograd  # what runs the head and body on a CPU in float32

    def counted_body(self: InferenceGenerator, x: torch.Tensor) -> torch.Tensor:
        bodies.append(tuple(x.shape[-2:]))
        return body(self, x)

    monkeypatch.setattr(InferenceGenerator, "_features_winograd", counted_body)
    tiles = plan_tiles(height, width, tile, pad)
    windows = {(part.in_top, part.in_left, part.in_bottom, part.in_right) for part in tiles}
    assert (windows == {(0, 0, height, width)}) == whole and len(windows) < len(tiles)
    cpu = torch.device("cpu")
    shared = upscale_tiled(model, image, 4, tile=tile, pad=pad, device=cpu, dtype=torch.float32)
    assert len(bodies) == len(windows)
    bodies.clear()

    def one_tile_at_a_time(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        return model(batch, region)  # the network run whole for each tile, as every tile was before

    separate = upscale_tiled(one_tile_at_a_time, image, 4, tile=tile, pad=pad, device=cpu, dtype=torch.float32)
    assert len(bodies) == len(tiles)
    assert torch.equal(shared, separate)


def test_non_finite_tiles_are_recomputed_by_the_fallback() -> None:
    calls = []

    def overflowing(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        calls.append(batch.shape)
        return torch.full((1, 3, (region[2] - region[0]) * 2, (region[3] - region[1]) * 2), float("inf"))

    def fallback(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        top, left, bottom, right = region
        return torch.nn.functional.interpolate(batch[:, :, top:bottom, left:right], scale_factor=2, mode="nearest")

    image = torch.rand(3, 10, 12)
    output = upscale_tiled(
        overflowing, image, 2, tile=6, pad=2, device=torch.device("cpu"), dtype=torch.float32, fallback=fallback
    )
    assert len(calls) == 4
    torch.testing.assert_close(output, fallback(image[None], (0, 0, 10, 12))[0])


# a window per tile, or one window for every tile; every tile overflowing, or only the image's first
@pytest.mark.parametrize(("tile", "pad"), [(6, 2), (1, 20)])
@pytest.mark.parametrize("everywhere", [True, False])
def test_a_windows_features_are_let_go_before_the_float32_fallback_runs(tile: int, pad: int, everywhere: bool) -> None:
    """A float16 tile that overflows is redone by the float32 model, the step that needs the most memory: the
    float16 window's features, kept for the window's other tiles, were held through it, where the network run
    whole for each tile had freed them (a GPU out of memory there that was not before). The window's other tiles
    are then upscaled from its features made again."""
    features: list[weakref.ref[torch.Tensor]] = []
    held_through_fallback = []

    class Overflowing:
        def __call__(self, batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
            return self.for_window(batch)(region)

        def for_window(self, batch: torch.Tensor) -> Callable[[tuple[int, int, int, int]], torch.Tensor]:
            body = batch.repeat(1, 8, 1, 1)  # what the body gives: the window's features
            features.append(weakref.ref(body))

            def upsample(region: tuple[int, int, int, int]) -> torch.Tensor:
                top, left = region[:2]
                assert features[-1]() is body  # the last window's features made, not ones let go
                output = nearest(body[:, :3], region)
                return output + math.inf if everywhere or (top, left) == (0, 0) else output

            return upsample

    def fallback(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        held_through_fallback.append(any(feature() is not None for feature in features))
        return nearest(batch, region)

    def nearest(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        top, left, bottom, right = region
        return torch.nn.functional.interpolate(batch[:, :, top:bottom, left:right], scale_factor=2, mode="nearest")

    image = torch.rand(3, 10, 12)
    cpu = torch.device("cpu")
    output = upscale_tiled(
        Overflowing(), image, 2, tile=tile, pad=pad, device=cpu, dtype=torch.float32, fallback=fallback
    )
    assert held_through_fallback == [False] * (len(plan_tiles(10, 12, tile, pad)) if everywhere else 1)
    torch.testing.assert_close(output, nearest(image[None], (0, 0, 10, 12))[0], rtol=0, atol=0)


def test_non_finite_values_are_counted_wherever_they_are() -> None:
    # An upscaled image's layout: (C, H, W) over height-width-channel memory, rows in several bands.
    image = torch.rand(200, 70, 3).permute(2, 0, 1)
    assert count_non_finite(image) == 0 and count_non_finite(image[:, :0]) == 0
    for value, where in [(math.nan, (0, 0, 0)), (math.inf, (2, 199, 69)), (-math.inf, (1, 130, 5))]:
        image[where] = value
    image[1, 64, :] = math.nan  # a whole row at a band's edge
    assert count_non_finite(image) == 3 + 70 == int((~torch.isfinite(image)).sum())


def test_tile_errors_are_raised_not_swallowed() -> None:
    def failing(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        upscale_tiled(failing, torch.rand(3, 8, 8), 4, tile=4, pad=1, device=torch.device("cpu"), dtype=torch.float32)

    def out_of_memory(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(SRFeatError, match="smaller tile="):
        upscale_tiled(
            out_of_memory, torch.rand(3, 8, 8), 4, tile=4, pad=1, device=torch.device("cpu"), dtype=torch.float32
        )

    def out_of_host_memory(batch: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        return torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator's refusal: a plain RuntimeError

    # eval has no --tile: the advice was only that, so `srfeat eval --tile` was argparse's error
    expected = "out of memory on cpu upscaling a 5x5 tile; free memory (other programs, or the processes nvidia-smi "
    with pytest.raises(SRFeatError, match=f"^{re.escape(expected)}.* and run again, or give the Upscaler a smaller"):
        upscale_tiled(
            out_of_host_memory, torch.rand(3, 8, 8), 4, tile=4, pad=1, device=torch.device("cpu"), dtype=torch.float32
        )


# -- the Upscaler API ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    torch.manual_seed(1)
    return Upscaler(tiny_generator(), device="cpu", tile=16)


def test_upscaler_loads_checkpoints_and_rejects_missing_ones(tmp_path: Path) -> None:
    generator = tiny_generator()
    save_generator(generator, tmp_path / "g.safetensors")
    upscaler = Upscaler(tmp_path / "g.safetensors", device="cpu")
    image = torch.rand(1, 3, 9, 10)
    with torch.inference_mode():
        expected = generator(image).clamp(0, 1)
    torch.testing.assert_close(upscaler(image), expected, rtol=0, atol=1e-5)
    with pytest.raises(WeightsError, match="not found"):
        Upscaler(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(SRFeatError, match="fp16"):
        Upscaler(generator, device="cpu", dtype="fp16")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_numpy_arrays_keep_dtype_and_layout(upscaler: Upscaler, dtype: type) -> None:
    rgb = np.random.default_rng(0).random((12, 9, 3))
    peak = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    array = (rgb * peak).astype(dtype) if peak != 1 else rgb.astype(dtype)
    result = upscaler(array)
    assert result.dtype == dtype and result.shape == (48, 36, 3)
    as_float = torch.from_numpy(array.astype(np.float64) / peak).float().permute(2, 0, 1)
    reference = upscaler(as_float).permute(1, 2, 0).numpy()
    assert np.abs(result.astype(np.float64) / peak - reference).max() <= 0.5 / peak + 1e-5
    gray = upscaler(array[..., 0])
    assert gray.shape == (48, 36) and gray.dtype == dtype


def test_gray_is_replicated_and_converted_back_with_luma(upscaler: Upscaler) -> None:
    gray = torch.rand(1, 10, 14)
    rgb = upscaler(gray.expand(3, 10, 14).contiguous())
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    torch.testing.assert_close(upscaler(gray), luma.clamp(0, 1), rtol=0, atol=1e-6)


def test_alpha_is_resized_on_its_own(upscaler: Upscaler) -> None:
    rgba = torch.rand(4, 10, 14)
    result = upscaler(rgba)
    torch.testing.assert_close(result[:3], upscaler(rgba[:3]))
    torch.testing.assert_close(result[3:], imresize(rgba[3:], size=(40, 56)).clamp(0, 1))
    opaque = torch.cat([rgba[:3], torch.ones(1, 10, 14)])
    assert (upscaler(opaque)[3] == 1).all()


def test_tensor_batches_and_outscale(upscaler: Upscaler) -> None:
    batch = torch.rand(2, 3, 8, 11, dtype=torch.float64)
    result = upscaler(batch)
    assert result.shape == (2, 3, 32, 44) and result.dtype == torch.float64
    assert 0 <= result.min() and result.max() <= 1
    torch.testing.assert_close(result[1], upscaler(batch[1]))
    assert upscaler(batch[0], outscale=2.5).shape == (3, 20, 28)
    with pytest.raises(ValueError, match="channels"):
        upscaler(torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="float"):
        upscaler(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_gpu_memory_that_pytorch_keeps_unused_counts_as_free_for_the_tiles(monkeypatch) -> None:
    """After the first image, PyTorch's caching allocator keeps its tiles' memory; the driver's
    free figure counts it as taken, so each later image got about half the tile area."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * gib, 8 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * gib)  # the model's weights, say
    assert tiling.available_memory(torch.device("cuda", 0)) == 5 * gib


def test_tiling_in_the_api_matches_untiled(upscaler: Upscaler) -> None:
    image = (np.random.default_rng(2).random((40, 53, 3)) * 255).astype(np.uint8)
    tiled = upscaler.upscale_array(image)  # tiles of 16 pixels
    upscaler.tile = 0
    try:
        untiled = upscaler.upscale_array(image)
    finally:
        upscaler.tile = 16
    assert np.abs(tiled.astype(int) - untiled.astype(int)).max() <= 1


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precisions_refuse_fp16_and_say_when_bf16_is_emulated(monkeypatch, caplog, native: bool) -> None:
    monkeypatch.setattr("srfeat.inference.devices.cpu_has_native_bf16", lambda: native)
    with pytest.raises(SRFeatError, match="fp16.*needs a GPU"):
        Upscaler(tiny_generator(), device="cpu", dtype="fp16")
    with pytest.raises(SRFeatError, match="unknown precision 'fp8'"):
        Upscaler(tiny_generator(), device="cpu", dtype="fp8")
    caplog.clear()
    upscaler = Upscaler(tiny_generator(), device="cpu", dtype="bf16")
    assert upscaler.dtype == torch.bfloat16
    assert ("no native bf16" in caplog.text) == (not native)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "I;16"])
def test_pil_images_keep_their_mode_and_icc_profile(upscaler: Upscaler, mode: str) -> None:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        image = Image.fromarray((rng.random((9, 7)) * 65535).astype(np.uint16))
    else:
        image = Image.fromarray((rng.random((9, 7, 4)) * 255).astype(np.uint8), "RGBA").convert(mode)
    image.info["icc_profile"] = b"profile"
    result = upscaler(image)
    assert result.mode == mode and result.size == (28, 36)
    assert result.info.get("icc_profile") == b"profile"


@pytest.mark.parametrize(("suffix", "orientation"), [(".jpg", 6), (".png", 3), (".webp", 8), (".jpg", 1), (".tif", 6)])
def test_pil_images_with_an_exif_orientation_are_upscaled_as_stored_with_a_warning(
    upscaler: Upscaler, caplog: pytest.LogCaptureFixture, tmp_path: Path, suffix: str, orientation: int
) -> None:
    """A phone's portrait photo from `Image.open` came back sideways, silently: its pixels upscaled as stored, and
    the EXIF that said to turn them dropped. It still does (the caller decides), with one line saying how to
    turn it; `ImageOps.exif_transpose` first, as the advice says, gives no warning. (PIL turns a TIFF as it
    loads it: nothing to say there.)"""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray((np.random.default_rng(5).random((9, 7, 3)) * 255).astype(np.uint8))
    path = tmp_path / f"photo{suffix}"
    stored.save(path, exif=exif)
    with Image.open(path) as image, caplog.at_level(logging.WARNING, logger="srfeat"):
        result = upscaler(image)
        warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        expected = (
            f"the PIL image ({path}) has EXIF orientation {orientation}, not applied here: its pixels are upscaled "
            "as stored and the result has no EXIF, so it shows turned or mirrored; pass "
            "ImageOps.exif_transpose(image) to upscale it as viewers show it"
        )
        assert warned == ([] if orientation == 1 or suffix == ".tif" else [expected])
        turned = suffix == ".tif" and orientation == 6
        assert result.size == ((36, 28) if turned else (28, 36))
        caplog.clear()
        assert upscaler(ImageOps.exif_transpose(image)).size == ((36, 28) if orientation in (6, 8) else (28, 36))
        assert [record for record in caplog.records if record.levelno == logging.WARNING] == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "import sys, srfeat; print('torch' in sys.modules); from srfeat import Upscaler; print(Upscaler.__name__)",
            "False\nUpscaler",
        ),
        # `srfeat --help` imports every command module: the upscale command's must be light.
        ("import sys, srfeat.commands.upscale; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))", "[]"),
    ],
)
def test_imports_are_light_and_the_api_is_exported(code: str, expected: str) -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


# -- 16-bit PNG ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_round_trip_with_icc(tmp_path: Path, channels: int) -> None:
    array = (np.random.default_rng(channels).random((13, 17, channels)) * 65535).astype(np.uint16)
    write_png16(tmp_path / "a.png", array, icc_profile=b"icc bytes")
    assert png16_channels(tmp_path / "a.png") == channels
    decoded = read_png16(tmp_path / "a.png")
    assert np.array_equal(decoded.array, array) and decoded.icc_profile == b"icc bytes"
    if channels == 3:  # PIL reads the same file as 8-bit: the high bytes
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), (array >> 8).astype(np.uint8))


def test_png16_reads_all_row_filters_as_pil_does(tmp_path: Path) -> None:
    # PIL writes 16-bit gray with adaptive row filters (Sub, Up and Paeth here) and reads it right.
    skimage_data = pytest.importorskip("skimage.data")
    camera = skimage_data.camera().astype(np.uint16) * 257
    camera[::3] += np.arange(camera.shape[1], dtype=np.uint16)[None] % 200
    Image.fromarray(camera).save(tmp_path / "camera16.png")
    decoded = read_png16(tmp_path / "camera16.png")
    assert np.array_equal(decoded.array[..., 0], np.asarray(Image.open(tmp_path / "camera16.png")).astype(np.uint16))
    assert png16_channels(tmp_path / "missing.png") == 0


# -- GPU (run where one is available; skipped elsewhere) -------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def full_size_generator() -> SRFeatGenerator:
    torch.manual_seed(5)
    return randomise_batchnorm(SRFeatGenerator())


@cuda
@pytest.mark.parametrize(("dtype", "tolerance"), [("fp32", 2 / 255), ("fp16", 4 / 255), ("bf16", 16 / 255)])
def test_cuda_precisions_match_cpu(full_size_generator: SRFeatGenerator, dtype: str, tolerance: float) -> None:
    image = torch.rand(3, 40, 56)
    with torch.inference_mode():
        expected = full_size_generator(image[None])[0].clamp(0, 1)
    result = Upscaler(full_size_generator, device="cuda", dtype=dtype)(image)
    error = (result - expected).abs()
    print(f"{dtype}: max {error.max().item() * 255:.3f}, mean {error.mean().item() * 255:.4f} grey levels")
    assert result.device.type == "cpu" and error.max().item() < tolerance


@cuda
def test_cuda_fp16_overflow_falls_back_to_fp32() -> None:
    generator = tiny_generator()
    assert generator.head.bias is not None
    with torch.no_grad():  # weights that fit float16 but activations that do not
        generator.head.bias.fill_(60000.0)
        generator.body[0].conv1.weight.fill_(1.0)
    image = torch.rand(3, 20, 24)
    fp32 = Upscaler(generator, device="cuda", dtype="fp32", tile=10)(image)
    fp16 = Upscaler(generator, device="cuda", dtype="fp16", tile=10)
    with torch.inference_mode():
        raw = fp16.model(image[None].cuda().half(), (0, 0, 20, 24))
    assert not bool(torch.isfinite(raw).all())  # the premise: float16 does overflow here
    torch.testing.assert_close(fp16(image), fp32)


@cuda
def test_cuda_tiles_equal_untiled_and_bound_device_memory(full_size_generator: SRFeatGenerator) -> None:
    image = torch.rand(3, 96, 128)
    whole = Upscaler(full_size_generator, device="cuda", tile=0)(image)
    torch.cuda.reset_peak_memory_stats()
    tiled = Upscaler(full_size_generator, device="cuda", tile=24)(image)
    assert (tiled - whole).abs().max().item() * 255 < 1
    # A 24x24 tile with its 38-pixel context is at most 100x100 input pixels on the device.
    assert torch.cuda.max_memory_allocated() < 1.2e9
    big = torch.rand(3, 512, 512)
    torch.cuda.reset_peak_memory_stats()
    assert Upscaler(full_size_generator, device="cuda", tile=64)(big).shape == (3, 2048, 2048)
    assert torch.cuda.max_memory_allocated() < 1.5e9


@cuda
def test_cuda_compile_matches_eager() -> None:
    generator = tiny_generator()
    image = torch.rand(3, 30, 34)
    eager = Upscaler(generator, device="cuda", tile=16)(image)
    compiled = Upscaler(generator, device="cuda", tile=16, compile=True)(image)
    assert (compiled - eager).abs().max().item() < 1e-3
