"""Settings that each work alone and failed together: a run folder under ~, data.repeat on every
data kind, a resume from another working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from training_helpers import tiny_config, train_in_process

from srfeat.training import checkpoint, trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_folder_under_home_in_the_config_is_one_folder(folders, tmp_path, monkeypatch) -> None:
    # `out_dir: ~/runs/x` wrote state.pt, config.yaml and the logs to ./~/runs/x, and the generators
    # (whose writer expands ~) to $HOME/runs/x: a resume of either folder lacked half the run.
    train_dir, validation_dir = folders
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    config = tiny_config(train_dir, validation_dir, Path("unused"), 1, ["out_dir=~/runs/x", "train.max_steps=2"])
    result = trainer.train(config, show_progress=False)
    assert result.out_dir == home / "runs" / "x"
    names = {path.name for path in (home / "runs" / "x").iterdir()}
    assert {checkpoint.STATE_FILE, checkpoint.LATEST_GENERATOR, checkpoint.BEST_GENERATOR, "config.yaml"} <= names
    assert not any(cwd.iterdir())
