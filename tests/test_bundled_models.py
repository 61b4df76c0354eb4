"""The shipped weights, end to end: each bundled model's output on a fixed crop matches its
stored reference (tests/snapshots/<model>.png) within one grey level, so that a change to the
weights or to the inference path cannot go unnoticed. How to regenerate: tests/snapshot_helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, python_code
from PIL import Image
from snapshot_helpers import INPUT_SIZE, MODELS, reference_path, upscale_snapshot_input


def _reference(model: str) -> np.ndarray:
    path = reference_path(model)
    if not path.is_file():
        pytest.fail(f"bundled model '{model}' has no reference output {path}: make it with tests/snapshot_helpers.py")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("model", MODELS)
def test_bundled_model_output_matches_its_snapshot(model: str) -> None:
    output = upscale_snapshot_input(model)
    reference = _reference(model)
    assert output.dtype == np.uint8
    assert output.shape == reference.shape == (4 * INPUT_SIZE, 4 * INPUT_SIZE, 3)
    difference = np.abs(output.astype(np.int16) - reference.astype(np.int16))
    worst = np.unravel_index(np.argmax(difference), difference.shape)
    regenerate = "if the change is intended, regenerate with `PYTHONPATH=. python3 tests/snapshot_helpers.py`"
    assert difference.max() <= 1, (
        f"'{model}' differs from {reference_path(model).name} by {difference.max()} grey levels at {worst} "
        f"({np.count_nonzero(difference > 1)} values over 1); {regenerate}"
    )
    # Float rounding (another convolution algorithm, tiling, another CPU) moves about 0.02% of
    # the values by one level; scaling one body convolution's weights by 1.01 moves 2.4%
    # (default) and 6% (gan). Half a percent tells the two apart.
    assert np.mean(difference) <= 0.005, (
        f"'{model}' differs from {reference_path(model).name} by one grey level in "
        f"{np.mean(difference):.2%} of the values (float rounding moves about 0.02%); {regenerate}"
    )


def test_the_two_snapshots_are_different_models() -> None:
    # Guards against a reference written from the wrong weights: GAN texture differs visibly.
    difference = np.abs(_reference("default").astype(np.int16) - _reference("gan").astype(np.int16))
    assert difference.mean() > 2.0


# In the child: the bundled models as the package holds them after an install gone wrong, in `folder`:
# `default` cut in half, `gan` whole.
DAMAGED_INSTALL = """
import shutil, sys
from pathlib import Path
import srfeat.weights
folder = Path(sys.argv.pop(1))
shutil.copy(srfeat.weights.bundled_dir() / "gan.safetensors", folder)
whole = (srfeat.weights.bundled_dir() / "default.safetensors").read_bytes()
(folder / "default.safetensors").write_bytes(whole[: len(whole) // 2])
srfeat.weights.bundled_dir = lambda: folder
from srfeat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_damaged_bundled_model_says_to_reinstall_srfeat_and_a_users_copy_to_copy_it_again(tmp_path: Path) -> None:
    """The bundled file came with the package: copying it again is no advice (from where?); a user's own
    checkpoint, damaged alike, keeps its advice."""
    package = tmp_path / "package"
    package.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")

    def upscale(model: str) -> str:
        child = python_code(DAMAGED_INSTALL, package, "upscale", "x.png", "-o", "out/", "--model", model, cwd=tmp_path)
        return one_error_line(child)

    bundled = upscale("default")
    assert f"{package / 'default.safetensors'}: its data is not the size its header says" in bundled, bundled
    assert bundled.endswith(
        "; it came with srfeat: restore it from srfeat's clone (git checkout -- srfeat/weights) or reinstall srfeat"
    )
    assert "copy it again" not in bundled, bundled
    shutil.copy(package / "default.safetensors", tmp_path / "mine.safetensors")
    own = upscale("mine.safetensors")
    assert own.endswith(
        "mine.safetensors: its data is not the size its header says (cut short, or with bytes added); "
        "download or copy it again, or give another checkpoint"
    ), own
    assert not (tmp_path / "out").exists()
