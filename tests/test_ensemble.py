"""Self-ensemble (`tta`): the eight flips and rotations, averaged, through the same tiled path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import tiny_generator
from PIL import Image
from skimage import data as samples

from srfeat.inference import Upscaler
from srfeat.inference.ensemble import ORIENTATIONS, self_ensemble


def nearest_x2(image: torch.Tensor) -> torch.Tensor:
    return image.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_the_eight_orientations_are_distinct_and_complete() -> None:
    image = torch.arange(12.0).view(1, 3, 4)
    seen = set()
    for turns, mirror in ORIENTATIONS:
        mirrored = image.flip(-1) if mirror else image
        seen.add(tuple(mirrored.rot90(turns, dims=(-2, -1)).flatten().tolist()))
    assert len(ORIENTATIONS) == 8 and len(seen) == 8


def test_an_orientation_blind_upscaler_is_unchanged() -> None:
    image = torch.rand(3, 5, 7)
    torch.testing.assert_close(self_ensemble(nearest_x2, image), nearest_x2(image))


def test_an_orientation_bias_averages_out() -> None:
    # An upscaler that adds a left-to-right ramp (0 .. 1): over the eight orientations the ramp
    # points each way equally often, so the ensemble adds its mean, 0.5, everywhere. Results
    # that were not turned back the right way would leave a ramp (or the wrong shape).
    def biased(image: torch.Tensor) -> torch.Tensor:
        upscaled = nearest_x2(image)
        return upscaled + torch.linspace(0.0, 1.0, upscaled.shape[-1])

    image = torch.rand(3, 6, 9)
    torch.testing.assert_close(self_ensemble(biased, image), nearest_x2(image) + 0.5)


def test_upscaler_tta_is_tiled_like_one_pass_and_changes_the_result() -> None:
    generator = tiny_generator(num_blocks=2, num_features=8)
    photo = samples.astronaut()[::8, ::8][:40, :28]
    whole = Upscaler(generator, device="cpu", tile=0, tta=True)(photo.astype(np.float32) / 255)
    tiled = Upscaler(generator, device="cpu", tile=12, tta=True)(photo.astype(np.float32) / 255)
    single = Upscaler(generator, device="cpu", tile=0)(photo.astype(np.float32) / 255)
    assert whole.shape == single.shape == (160, 112, 3)
    assert np.abs(tiled - whole).max() < 1e-5
    assert np.abs(whole - single).max() > 1e-3


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_tta_keeps_gray_and_alpha(mode: str) -> None:
    image = Image.fromarray(samples.astronaut()[:20, :16]).convert(mode)
    result = Upscaler(tiny_generator(), device="cpu", tta=True)(image)
    assert result.mode == mode and result.size == (64, 80)


def test_cli_tta_is_tiled_like_one_pass(tmp_path: Path) -> None:
    import subprocess
    import sys

    from srfeat.weights import save_generator

    save_generator(tiny_generator(), tmp_path / "tiny.safetensors")
    Image.fromarray(samples.astronaut()[::8, ::8][:36, :30]).save(tmp_path / "photo.png")
    outputs = {}
    for name, options in {"tiled": ["--tta", "--tile", "12"], "whole": ["--tta", "--tile", "0"], "plain": []}.items():
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "srfeat.cli",
                "upscale",
                str(tmp_path / "photo.png"),
                "-o",
                str(tmp_path / f"{name}.png"),
            ]
            + ["--model", str(tmp_path / "tiny.safetensors"), "--device", "cpu", *options],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert process.returncode == 0, process.stderr
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png")).astype(int)
    assert outputs["tiled"].shape == outputs["plain"].shape == (144, 120, 3)
    assert np.abs(outputs["tiled"] - outputs["whole"]).max() <= 1
    assert np.abs(outputs["whole"] - outputs["plain"]).max() > 1
