"""Wide, thin images on the CPU's Winograd path: their work is cut into bands as a square image's is.

On a busy 2-core machine a 1x20000 image took 7 s where a 2x9000 one took 0.5 s: its upsampler
ran as one band on the calling thread (each small tensor operation split over the intra-op
threads), and each of its Winograd convolutions as one band of thousands of tiles (temporaries
of tens of MB, out of the caches). What is checked here is that structure, not a time.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from inference_helpers import tiny_generator
from torch import nn

from srfeat.inference import InferenceGenerator, winograd_path
from srfeat.ops import winograd
from srfeat.ops.winograd import TILES_PER_BAND, WinogradConv2d, use_winograd

Region = tuple[int, int, int, int]


def covered(bands: list[Region]) -> set[tuple[int, int]]:
    """Every (row, column) the bands hold, checking that no two bands share one."""
    pixels: set[tuple[int, int]] = set()
    for top, left, bottom, right in bands:
        part = {(y, x) for y in range(top, bottom) for x in range(left, right)}
        assert not pixels & part, f"band {(top, left, bottom, right)} overlaps another"
        pixels |= part
    return pixels


@pytest.mark.parametrize("height, width", [(1, 700), (2, 333)])
def test_a_thin_image_is_upsampled_in_parts_that_the_band_workers_share(
    monkeypatch: pytest.MonkeyPatch, height: int, width: int
) -> None:
    torch.manual_seed(0)
    generator = tiny_generator()
    model = InferenceGenerator(generator, algorithm="winograd")
    monkeypatch.setattr(winograd_path, "worker_threads", lambda: 2)  # two band workers, whatever this machine has
    bands: list[Region] = []
    upsample_band = model._upsample_band

    def recorded(features: torch.Tensor, size: tuple[int, int], band: Region, *args: Any) -> torch.Tensor:
        bands.append(band)
        return upsample_band(features, size, band, *args)

    monkeypatch.setattr(model, "_upsample_band", recorded)
    image = torch.rand(1, 3, height, width)
    out = model(image, (0, 0, height, width))
    assert len(bands) >= 2, f"one band for the whole {height}x{width} image: {bands}"
    assert covered(bands) == {(y, x) for y in range(height) for x in range(width)}
    with torch.no_grad():
        expected = generator(image)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_a_row_wider_than_the_budget_is_cut_into_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without workers too: one band of a 1x5000 row held 5000 pixels where the budget is 1024."""
    torch.manual_seed(0)
    generator = tiny_generator(num_blocks=1)
    model = InferenceGenerator(generator, algorithm="winograd", upsample_pixels=1024)
    monkeypatch.setattr(winograd_path, "worker_threads", lambda: 1)
    bands: list[Region] = []
    upsample_band = model._upsample_band

    def recorded(features: torch.Tensor, size: tuple[int, int], band: Region, *args: Any) -> torch.Tensor:
        bands.append(band)
        return upsample_band(features, size, band, *args)

    monkeypatch.setattr(model, "_upsample_band", recorded)
    image = torch.rand(1, 3, 1, 5000)
    out = model(image)
    assert len(bands) >= 5 and all(right - left <= 1024 for _, left, _, right in bands), bands
    assert covered(bands) == {(0, x) for x in range(5000)}
    with torch.no_grad():
        torch.testing.assert_close(out, generator(image), rtol=0, atol=1e-4)


def test_a_winograd_band_holds_at_most_tiles_per_band_tiles_and_the_gradients_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An input one tile row tall and 300 tiles across: bands of parts of that row, forward and
    backward (the weight gradient sums the bands' parts)."""
    torch.manual_seed(0)
    reference = nn.Conv2d(8, 8, 3, padding=1)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    conv.load_state_dict(reference.state_dict())
    assert use_winograd(conv, min_channels=8) == 1 and isinstance(conv, WinogradConv2d)
    tiles_per_band: list[int] = []
    transform_band = winograd._transform_band

    def recorded(band: torch.Tensor, rows: int) -> torch.Tensor:
        tiles_per_band.append(rows * (band.shape[2] - 2) // winograd.TILE * band.shape[0])
        return transform_band(band, rows)

    monkeypatch.setattr(winograd, "_transform_band", recorded)
    image = torch.randn(1, 8, 8, 4 * 300)
    x, x_ref = image.clone().requires_grad_(), image.clone().requires_grad_()
    out = conv(x)
    assert max(tiles_per_band) <= TILES_PER_BAND, tiles_per_band
    assert sum(tiles_per_band) == 2 * 300  # two tile rows of 300 tiles, each in exactly one band
    out.square().sum().backward()
    assert max(tiles_per_band) <= TILES_PER_BAND, tiles_per_band  # the input's gradient: a convolution too
    expected = reference(x_ref)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-4)
    assert reference.weight.grad is not None
    torch.testing.assert_close(
        conv.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5 * reference.weight.grad.abs().max().item()
    )
