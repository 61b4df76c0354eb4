"""The full-size output path made without full-size temporaries gives what the whole-image formulas gave.

Each restructured step (grey mix, alpha and RGB written into one output, the self-ensemble's
banded sum, banded resizes, 16-bit conversions and PNG writing, min/max without a copy) is
compared, bit for bit, with the formula it replaced. The band sizes are made small here so that
small images cross many bands (the real sizes would give one band and test nothing).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import tiny_generator
from PIL import Image

from srfeat.data import io, png16, resize
from srfeat.data.png16 import read_png16, write_png16
from srfeat.data.resize import imresize
from srfeat.inference import Upscaler, ensemble, pixels, tiling
from srfeat.inference.ensemble import ORIENTATIONS, _orient, _unorient, _unoriented_rows
from srfeat.inference.pixels import from_float_tensor, mix_grey, to_float_tensor
from srfeat.inference.tiling import count_non_finite, value_range

RNG = np.random.default_rng(7)


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pixels, "BAND_ROWS", 5)
    monkeypatch.setattr(ensemble, "BAND_ROWS", 3)
    monkeypatch.setattr(resize, "GATHER_BAND_ELEMENTS", 50)
    monkeypatch.setattr(png16, "WRITE_BAND_ROWS", 3)
    monkeypatch.setattr(tiling, "COUNT_ROWS", 4)


def hwc_laid(channels: int, height: int, width: int) -> torch.Tensor:
    """A (C, H, W) view of an HxWxC tensor: the layout of the upscaler's results."""
    return torch.rand(height, width, channels).permute(2, 0, 1)


# -- the formulas that were replaced ------------------------------------------------------------


def old_self_ensemble(upscale, image: torch.Tensor) -> torch.Tensor:
    total = None
    for turns, mirror in ORIENTATIONS:
        result = _unorient(upscale(_orient(image, turns, mirror).contiguous()), turns, mirror)
        total = result.clone() if total is None else total.add_(result)
    assert total is not None
    return total.div_(len(ORIENTATIONS))


def old_from_float_tensor(image: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    hwc = image.permute(1, 2, 0)
    if dtype.itemsize == 1:
        return hwc.mul_(255.0).round_().to(torch.uint8).numpy()
    return hwc.mul_(65535.0).round_().to(torch.int32).numpy().astype(dtype)


def old_upscale_array(upscaler: Upscaler, array: np.ndarray, outscale: float | None) -> np.ndarray:
    """`Upscaler.upscale_array` as it was: the whole result mixed, concatenated and converted at once."""
    image = to_float_tensor(array[..., None] if array.ndim == 2 else array)
    channels, height, width = image.shape
    color, alpha = (image[:-1], image[-1:]) if channels in (2, 4) else (image, None)
    rgb = color.expand(3, height, width) if color.shape[0] == 1 else color
    result = old_self_ensemble(upscaler.upscale_rgb, rgb) if upscaler.tta else upscaler.upscale_rgb(rgb)
    if color.shape[0] == 1:
        result = (result * torch.tensor(pixels.LUMA_WEIGHTS).view(3, 1, 1)).sum(0, keepdim=True)
    size = upscaler.output_size(height, width, outscale)
    if size != (height * upscaler.scale, width * upscaler.scale):
        result = imresize(result, size=size)
    if alpha is not None:
        if bool((alpha == alpha.flatten()[0]).all()):
            resized = alpha.new_full((1, *size), float(alpha.flatten()[0]))
        else:
            resized = imresize(alpha, size=size)
        result = torch.cat([result, resized])
    output = old_from_float_tensor(result.clamp_(0.0, 1.0), array.dtype)
    return output[..., 0] if array.ndim == 2 else output


def old_write_png16(path: Path, array: np.ndarray) -> None:
    height, width, channels = array.shape
    rows = np.ascontiguousarray(array, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    compressed = zlib.compress(filtered.tobytes(), 6)
    parts = [
        png16.PNG_SIGNATURE,
        png16._chunk(b"IHDR", png16.struct.pack(">IIBBBBB", width, height, 16, png16.COLOR_TYPES[channels], 0, 0, 0)),
    ]
    step = png16.IDAT_CHUNK_BYTES
    parts += [png16._chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)]
    parts.append(png16._chunk(b"IEND", b""))
    path.write_bytes(b"".join(parts))


# -- the upscaler's output, every kind of input ---------------------------------------------------


def sample(kind: str, height: int = 13, width: int = 11) -> np.ndarray:
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "L16": 1, "RGB16": 3, "RGBA16": 4, "LA16": 2}[kind]
    if kind.endswith("16"):
        array = RNG.integers(0, 65536, (height, width, channels), dtype=np.uint16)
    else:
        array = RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return array[..., 0] if channels == 1 else array


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA", "L16", "LA16", "RGB16", "RGBA16"])
@pytest.mark.parametrize("outscale", [None, 2.0, 5.0])
@pytest.mark.parametrize("tta", [False, True])
def test_upscale_array_equals_the_whole_image_formulas(small_bands: None, kind: str, outscale, tta: bool) -> None:
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=6, tta=tta)
    array = sample(kind)
    expected = old_upscale_array(upscaler, array, outscale)
    result = upscaler.upscale_array(array, outscale)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert np.array_equal(result, expected)
    assert result.flags.c_contiguous


def test_an_opaque_alpha_stays_exact_in_the_output(small_bands: None) -> None:
    array = sample("RGBA")
    array[..., 3] = 255
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=6)
    result = upscaler(array)
    assert (result[..., 3] == 255).all()
    assert np.array_equal(result, old_upscale_array(upscaler, array, None))


def test_a_big_endian_16_bit_array_keeps_its_byte_order_and_values() -> None:
    array = sample("RGBA16").astype(">u2")
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=0)
    result = upscaler(array)
    assert result.dtype == np.dtype(">u2")
    assert np.array_equal(result, old_upscale_array(upscaler, array, None))


# -- the pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_mix_grey_is_the_weighted_sum(small_bands: None, layout: str) -> None:
    rgb = hwc_laid(3, 23, 17) if layout == "hwc" else torch.rand(3, 23, 17)
    expected = (rgb * torch.tensor(pixels.LUMA_WEIGHTS).view(3, 1, 1)).sum(0, keepdim=True)
    assert torch.equal(mix_grey(rgb), expected)
    out = hwc_laid(2, 23, 17)  # into the grey channel of a grey + alpha output
    alpha = out[1:].clone()
    assert mix_grey(rgb, out[:1]).data_ptr() == out.data_ptr()
    assert torch.equal(out[:1], expected) and torch.equal(out[1:], alpha)


def test_unoriented_rows_are_rows_of_the_turned_back_image() -> None:
    image = torch.rand(2, 3, 7, 10)
    for turns, mirror in ORIENTATIONS:
        whole = _unorient(image, turns, mirror)
        for start, stop in ((0, 1), (2, 5), (4, whole.shape[-2]), (0, whole.shape[-2])):
            assert torch.equal(_unoriented_rows(image, turns, mirror, start, stop), whole[..., start:stop, :])


def test_self_ensemble_is_the_old_sum_and_fills_out(small_bands: None) -> None:
    def lopsided(image: torch.Tensor) -> torch.Tensor:  # not orientation-blind: every term differs
        upscaled = image.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return (
            upscaled * torch.linspace(0.5, 1.5, upscaled.shape[-1])
            + torch.linspace(0, 0.1, upscaled.shape[-2])[:, None]
        )

    image = torch.rand(3, 9, 5)
    expected = old_self_ensemble(lopsided, image)
    assert torch.equal(ensemble.self_ensemble(lopsided, image), expected)
    out = hwc_laid(4, 18, 10)
    alpha = out[3:].clone()
    assert ensemble.self_ensemble(lopsided, image, out[:3]).data_ptr() == out.data_ptr()
    assert torch.equal(out[:3], expected) and torch.equal(out[3:], alpha)


def test_self_ensemble_sums_into_a_copy_of_the_first_result() -> None:
    image = torch.rand(3, 4, 6)
    kept = image.clone()
    torch.testing.assert_close(ensemble.self_ensemble(lambda x: x, image), image)  # an "upscaler" returning its input
    assert torch.equal(image, kept)  # not summed into


@pytest.mark.parametrize("shape, size", [((1, 30, 20), (120, 80)), ((3, 41, 37), (20, 18)), ((3, 40, 40), (97, 13))])
@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_imresize_in_bands_equals_the_whole_sum(monkeypatch: pytest.MonkeyPatch, shape, size, layout: str) -> None:
    image = hwc_laid(*shape) if layout == "hwc" else torch.rand(shape)
    monkeypatch.setattr(resize, "DENSE_INPUT_PER_TAP", 0)  # the gather path, whatever the length
    monkeypatch.setattr(resize, "GATHER_BAND_ELEMENTS", 1 << 30)
    whole = imresize(image, size=size)
    monkeypatch.setattr(resize, "GATHER_BAND_ELEMENTS", 50)
    assert torch.equal(imresize(image, size=size), whole)


def test_imresize_stays_differentiable_for_large_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resize, "DENSE_INPUT_PER_TAP", 0)
    monkeypatch.setattr(resize, "GATHER_BAND_ELEMENTS", 50)
    image = torch.rand(1, 12, 10, requires_grad=True)
    imresize(image, size=(24, 20)).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", ["u1", "<u2", ">u2"])
@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_from_float_tensor_equals_the_int32_route(dtype: str, layout: str) -> None:
    image = hwc_laid(4, 9, 7) if layout == "hwc" else torch.rand(4, 9, 7)
    image[0, 0, :3] = torch.tensor([0.0, 1.0, 0.5 / 65535])  # the ends, and a tie
    expected = old_from_float_tensor(image.clone(), np.dtype(dtype))
    result = from_float_tensor(image, np.dtype(dtype))
    assert result.dtype == np.dtype(dtype) and np.array_equal(result, expected) and result.flags.c_contiguous


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (10, 9, 1), (600, 600, 3)])
def test_write_png16_writes_the_same_bytes(small_bands: None, tmp_path: Path, shape) -> None:
    # 600x600 noise compresses to over two IDAT chunks of 1 MiB
    array = RNG.integers(0, 65536, shape, dtype=np.uint16)
    old_write_png16(tmp_path / "old.png", array)
    write_png16(tmp_path / "new.png", array)
    assert (tmp_path / "new.png").read_bytes() == (tmp_path / "old.png").read_bytes()
    assert np.array_equal(read_png16(tmp_path / "new.png").array, array)


def test_sixteen_bits_to_eight_is_the_nearest_value() -> None:
    every = np.arange(65536, dtype=np.uint16).reshape(256, 128, 2)
    expected = np.rint(every.astype(np.float64) / 257.0).astype(np.uint8)
    assert np.array_equal(io._uint16_to_uint8(every), expected)


def test_float_pixels_written_as_16_bits_keep_the_old_rounding(tmp_path: Path) -> None:
    array = RNG.random((6, 5)).astype(np.float32) * 1.002 - 0.001  # a hair outside [0, 1] too
    kept = array.copy()
    io.write_image(tmp_path / "grey.png", array)
    expected = np.rint(np.clip(kept, 0.0, 1.0) * 65535.0).astype(np.uint16)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grey.png")), expected)
    assert np.array_equal(array, kept)  # the caller's array is not changed


@pytest.mark.parametrize("layout", ["contiguous", "hwc", "flipped", "expanded", "sliced"])
def test_value_range_without_a_copy_is_min_and_max(small_bands: None, layout: str) -> None:
    image = {
        "contiguous": torch.rand(3, 10, 9),
        "hwc": hwc_laid(3, 10, 9),
        "flipped": torch.rand(3, 10, 9).flip(-1),
        "expanded": torch.rand(1, 10, 9).expand(3, 10, 9),
        "sliced": torch.rand(3, 10, 20)[:, 1:, ::2],
    }[layout]
    low, high = torch.aminmax(image.contiguous())
    assert value_range(image) == (float(low), float(high))
    image = image.clone() if layout == "expanded" else image
    image[1, 7, 4] = float("nan")
    image[2, 8, 8] = float("-inf")
    assert count_non_finite(image) == 2
