"""A resume reads state.pt's counters (elapsed_seconds, best_psnr, ...) as untrusted input: a value a
run cannot have written is refused in one line naming it, before anything is written; and a stop signal
during a validation stops the run at the validated step, which resumes to the uninterrupted result."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from safetensors.torch import load_file
from training_helpers import state_tensors, tiny_config, train_in_process

from srfeat.training import checkpoint
from srfeat.training.interrupt import TrainingInterrupted
from srfeat.training.validation import Validator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_step_state(folders, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step stage-1 run folder (checkpoint at step 2, no validation), copied by each test, and its config."""
    train_dir, _ = folders
    root = tmp_path_factory.mktemp("counters")
    out = root / "run"
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=2"])
    train_in_process(config, out)
    path = root / "tiny.yaml"
    path.write_text(config.to_yaml())
    return out, path


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def edited_run(two_step_state: tuple[Path, Path], tmp_path: Path, key: str, value: object) -> Path:
    source, _ = two_step_state
    out = tmp_path / "run"
    for name, data in folder_bytes(source).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=False)
    state[key] = value
    torch.save(state, out / checkpoint.STATE_FILE)
    return out


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        # trained on, logging "seconds": null; with train.max_minutes it trained no step: "time budget reached"
        ("elapsed_seconds", math.inf, "elapsed_seconds is inf, not a finite number >= 0"),
        ("elapsed_seconds", 10**400, "elapsed_seconds is 1000"),  # OverflowError traceback
        ("best_psnr", math.nan, "best_psnr is nan, not a number"),  # NaN compares false: never a best again
        ("best_psnr", "33.1", "best_psnr is '33.1', not a number"),
        # the dry run passed it, and the resume's first log was TensorBoard's "Value out of range" traceback
        ("step", 10**30, "step is 1000000000000000000000000000000, not a whole number from 0 to 2**53"),
        ("validated_step", 10**30, "validated_step is 1000000000000000000000000000000, not a step number"),
        # found by scripts/fuzz_states.py: its epochs spent, the resume trained nothing, exit 0, without a word
        ("epoch", 255, "epoch is 255, past its 2 steps"),
        ("batch_in_epoch", 3, "batch_in_epoch is 3, past its 2 steps"),
    ],
    ids=[
        "seconds inf",
        "seconds past a float",
        "best nan",
        "best text",
        "step 10**30",
        "validated 10**30",
        "epoch past the steps",
        "batch past the steps",
    ],
)
def test_a_state_counter_no_run_writes_is_refused_in_one_line_and_writes_nothing(
    two_step_state: tuple[Path, Path], tmp_path: Path, key: str, value: object, shown: str
) -> None:
    out = edited_run(two_step_state, tmp_path, key, value)
    before = folder_bytes(out)
    child = srfeat_cli("train", two_step_state[1], "--out", out, "--resume", "--max-steps", "4", "--no-progress")
    error = one_error_line(child)
    assert shown in error and "state.pt" in error and "damaged or edited" in error, error
    assert folder_bytes(out) == before


def test_a_best_psnr_of_inf_resumes(two_step_state: tuple[Path, Path], tmp_path: Path) -> None:
    # a run writes it: the mean PSNR is inf once one validation image is matched exactly
    out = edited_run(two_step_state, tmp_path, "best_psnr", math.inf)
    child = srfeat_cli("train", two_step_state[1], "--out", out, "--resume", "--max-steps", "4", "--no-progress")
    assert child.returncode == 0, child.stderr
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["step"] == 4 and state["best_psnr"] == math.inf


def test_resuming_a_run_that_has_taken_its_steps_says_no_step_is_trained(
    two_step_state: tuple[Path, Path], tmp_path: Path
) -> None:
    # `--resume` of a finished run (to train it on, without a larger --max-steps) ended with exit 0 and
    # "stage 1: 2 steps, run folder ...", having trained nothing, without a word
    out = tmp_path / "run"
    for name, data in folder_bytes(two_step_state[0]).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    child = srfeat_cli("train", two_step_state[1], "--out", out, "--resume", "--no-progress")
    assert child.returncode == 0, child.stderr
    assert "WARNING: the run is already at step 2 of its 2 " in child.stderr, child.stderr
    assert "give a larger --max-steps to continue it" in child.stderr, child.stderr
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 2


def test_resuming_a_run_past_its_epochs_says_no_step_is_trained(folders, tmp_path: Path) -> None:
    """A run of two epochs resumed with train.epochs=1 once its folder holds more images (more steps an epoch, so its
    planned steps are not spent): it trained nothing and ended with exit 0 without a word, as a resume of a run that
    had taken its steps once did."""
    import shutil

    train = tmp_path / "train"
    shutil.copytree(folders[0], train)
    out, config = tmp_path / "run", tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train, None, out, 1, ["train.epochs=2", "train.max_steps=null"]).to_yaml())
    assert srfeat_cli("train", config, "--no-progress").returncode == 0
    steps = checkpoint.load_state(out / checkpoint.STATE_FILE)["step"]
    for copy in range(3):
        for image in folders[0].iterdir():
            shutil.copy(image, train / f"more{copy}_{image.name}")
    child = srfeat_cli("train", config, "--resume", "--no-progress", "train.epochs=1")
    assert child.returncode == 0, child.stderr
    warning = "WARNING: the run is already at epoch 1 of its 1: no step is trained; give a larger train.epochs"
    assert warning in child.stderr, child.stderr
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == steps


def test_a_signal_during_validation_stops_at_the_validated_step_and_resumes_exactly(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the stop was read before the validation only: a SIGTERM during it trained one step more
    train_dir, validation_dir = folders
    whole, split = tmp_path / "whole", tmp_path / "split"
    train_in_process(
        tiny_config(
            train_dir,
            validation_dir,
            whole,
            1,
        ),
        whole,
    )
    validate = Validator.__call__
    calls: list[int] = []

    def signalled(self: Validator, generator: torch.nn.Module) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the first validation, at step 2
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # Python runs the handler between bytecodes of the main thread
        return validate(self, generator)

    monkeypatch.setattr(Validator, "__call__", signalled)
    with pytest.raises(TrainingInterrupted, match="at step 2:"):
        train_in_process(tiny_config(train_dir, validation_dir, split, 1), split)
    assert checkpoint.load_state(split / checkpoint.STATE_FILE)["step"] == 2
    monkeypatch.setattr(Validator, "__call__", validate)
    assert train_in_process(tiny_config(train_dir, validation_dir, split, 1), split, resume=True).step == 4

    expected, resumed = state_tensors(whole), state_tensors(split)
    assert expected.keys() == resumed.keys()
    assert not [key for key in expected if not torch.equal(expected[key], resumed[key])]
    for name in (checkpoint.BEST_GENERATOR, checkpoint.LATEST_GENERATOR):
        best, resumed_best = load_file(str(whole / name)), load_file(str(split / name))
        assert all(torch.equal(best[key], resumed_best[key]) for key in best), name
    logged = [
        [(r["kind"], r["step"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
        for out in (whole, split)
    ]
    assert logged[0] == logged[1]
