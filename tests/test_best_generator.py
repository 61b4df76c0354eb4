"""generator_best.safetensors once a validation image is matched exactly: the mean PSNR is then inf at every
validation, and validations of equal PSNR are told apart by their SSIM, in a run and across a resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from safetensors.torch import load_file
from training_helpers import tiny_config, train_in_process

from srfeat.training import checkpoint
from srfeat.training.validation import Validator

pytestmark = pytest.mark.usefixtures("one_thread")


def scripted_validation(
    monkeypatch: pytest.MonkeyPatch, scores: dict[int, tuple[float, float]]
) -> dict[int, dict[str, torch.Tensor]]:
    """Validations that score (PSNR, SSIM) `scores[n]` at the n-th; returns the generator each one scored."""
    scored: dict[int, dict[str, torch.Tensor]] = {}

    def validate(self: Validator, generator: torch.nn.Module) -> tuple[dict[str, float], list[Any]]:
        number = len(scored) + 1
        scored[number] = {key: value.detach().clone() for key, value in generator.state_dict().items()}
        psnr, ssim = scores[number]
        return {"psnr": psnr, "ssim": ssim}, []

    monkeypatch.setattr(Validator, "__call__", validate)
    return scored


def best_is(out: Path, weights: dict[str, torch.Tensor]) -> bool:
    best = load_file(str(out / checkpoint.BEST_GENERATOR))
    return all(torch.equal(best[key], weights[key]) for key in best)


def test_a_later_validation_of_inf_psnr_and_better_ssim_is_the_best(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # inf > inf is false: generator_best stayed the first generator to match an image exactly, for good
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    scored = scripted_validation(monkeypatch, {1: (math.inf, 0.5), 2: (math.inf, 0.7), 3: (math.inf, 0.6)})
    config = tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=3", "validation.every=1"])
    result = train_in_process(config, out)
    assert len(scored) == 3 and best_is(out, scored[2])
    assert result.best_psnr == math.inf
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert (state["best_psnr"], state["best_ssim"]) == (math.inf, 0.7)


@pytest.mark.parametrize(("saved_ssim", "improved"), [(0.7, False), (0.5, True), (None, True)])
def test_a_resumed_run_compares_with_the_saved_best_psnr_and_ssim(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved_ssim: float | None, improved: bool
) -> None:
    # None: a state of an earlier version, which holds no best_ssim
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=2"]), out)
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    state["best_psnr"] = math.inf
    state.pop("best_ssim", None)
    if saved_ssim is not None:
        state["best_ssim"] = saved_ssim
    torch.save(state, out / checkpoint.STATE_FILE)
    scored = scripted_validation(monkeypatch, {1: (math.inf, 0.6)})
    config = tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=3", "validation.every=3"])
    train_in_process(config, out, resume=True)
    assert len(scored) == 1
    assert (out / checkpoint.BEST_GENERATOR).is_file() == improved
    if improved:
        assert best_is(out, scored[1])
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["best_ssim"] == (0.6 if improved else saved_ssim)


@pytest.mark.parametrize("value", [math.nan, math.inf, "0.7"])
def test_a_saved_best_ssim_no_run_writes_is_refused_in_one_line(folders, tmp_path: Path, value: object) -> None:
    # NaN (and inf) would never be beaten at an equal PSNR: generator_best frozen for the rest of the run
    train_dir, _ = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=2"])
    train_in_process(config, out)
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    state["best_ssim"] = value
    torch.save(state, out / checkpoint.STATE_FILE)
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    error = one_error_line(srfeat_cli("train", path, "--out", out, "--resume", "--max-steps", "3", "--no-progress"))
    assert f"best_ssim is {value!r}, not a number below inf: the file is damaged or edited" in error, error
