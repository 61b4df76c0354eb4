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


def write_patches(root: Path, count: int) -> Path:
    """A folder as `srfeat prepare` writes it: `count` HR patches of 32 px and their 8 px LR."""
    for name, size in (("HR", 32), ("LR", 8)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(
                0, 256, (size, size, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8
            )
            Image.fromarray(pixels.numpy()).save(root / name / f"p{i}.png")
    return root


@pytest.mark.parametrize("kind", ["center_crop", "patches"])
def test_data_repeat_lengthens_the_epoch_of_every_data_kind(folders, tmp_path, kind: str) -> None:
    # data.repeat ("each epoch visits every image this many times") was applied to random_crop only:
    # center_crop and patches accepted it and ran epochs of one visit, so epoch milestones came early.
    train_dir, _ = folders
    source = write_patches(tmp_path / "patches", 3) if kind == "patches" else train_dir
    for repeat, steps_per_epoch in ((1, 1), (4, 6)):
        config = tiny_config(
            train_dir,
            None,
            tmp_path / f"{kind}{repeat}",
            1,
            [f"data.kind={kind}", f"data.train_dirs=[{source}]", f"data.repeat={repeat}", "train.max_steps=100"]
            + ["train.epochs=1", "train.checkpoint_every=100"],
        )
        result = train_in_process(config, tmp_path / f"{kind}{repeat}")
        assert result.step == steps_per_epoch, (repeat, result.step)
