"""An outscale so small that a side of the result rounds to 0 pixels is refused, naming the size it would make
and the smallest outscale that keeps 1 pixel (--outscale 1e-320 wrote a 1x1 image); ordinary ones are kept."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_input_error, srfeat_cli
from PIL import Image

from srfeat import Upscaler
from srfeat.errors import InvalidImageError
from srfeat.inference.image_files import upscale_file


@pytest.fixture(scope="module")
def upscaler(model_path: Path) -> Upscaler:
    return Upscaler(model_path, device="cpu")


@pytest.mark.parametrize(("outscale", "made"), [("1e-320", "0x0"), ("0.02", "1x0")])
def test_the_command_refuses_an_outscale_that_leaves_no_pixel_and_writes_nothing(
    tmp_path: Path, model_path: Path, outscale: str, made: str
) -> None:
    Image.new("RGB", (40, 20), "red").save(tmp_path / "a.png")
    child = srfeat_cli("upscale", "a.png", "-o", "out.png", "--outscale", outscale, "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        f"ERROR: a.png: --outscale {outscale} would make this 40x20 image {made} pixels, under 1 pixel on a side: "
        "give --outscale 0.05 or more"
    )
    assert not (tmp_path / "out.png").exists()


def test_the_outscale_the_refusal_suggests_gives_one_pixel_on_the_shorter_side(
    tmp_path: Path, model_path: Path
) -> None:
    Image.new("RGB", (70, 30), "red").save(tmp_path / "a.png")
    refused = srfeat_cli("upscale", "a.png", "-o", "out.png", "--outscale", "0.01", "--model", model_path, cwd=tmp_path)
    suggested = re.search(r"give --outscale (\S+) or more", refused.stderr)
    assert suggested, refused.stderr
    child = srfeat_cli(
        "upscale", "a.png", "-o", "out.png", "--outscale", suggested[1], "--model", model_path, cwd=tmp_path
    )
    assert child.returncode == 0, child.stderr
    with Image.open(tmp_path / "out.png") as written:
        assert written.size == (2, 1)


def test_the_api_refuses_it_for_arrays_pictures_tensors_and_files(upscaler: Upscaler, tmp_path: Path) -> None:
    expected = "outscale 0.01 would make this 40x20 image 0x0 pixels, under 1 pixel on a side: give outscale 0.05"
    array = np.zeros((20, 40, 3), np.uint8)
    with pytest.raises(InvalidImageError, match=expected):
        upscaler(array, outscale=0.01)
    with pytest.raises(InvalidImageError, match=expected):
        upscaler(Image.fromarray(array), outscale=0.01)
    with pytest.raises(InvalidImageError, match=expected):
        upscaler(torch.zeros(2, 3, 20, 40), outscale=0.01)
    Image.fromarray(array).save(tmp_path / "a.png")
    with pytest.raises(InvalidImageError, match=expected):
        upscale_file(upscaler, tmp_path / "a.png", tmp_path / "b.png", outscale=0.01)
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize(("outscale", "size"), [(0.5, (10, 20)), (2, (40, 80)), (3.5, (70, 140)), (0.05, (1, 2))])
def test_ordinary_outscales_keep_their_sizes(upscaler: Upscaler, outscale: float, size: tuple[int, int]) -> None:
    assert upscaler(np.zeros((20, 40, 3), np.uint8), outscale=outscale).shape[:2] == size
