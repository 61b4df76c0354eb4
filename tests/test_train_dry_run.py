"""`srfeat train --dry-run` checks the data a run would find, and milestones a run never reaches are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from training_helpers import tiny_values

pytestmark = pytest.mark.usefixtures("one_thread")


def config_file(folders: tuple[Path, Path], tmp_path: Path, **sections: dict) -> Path:
    """The tiny config (3 images of 64x80, 32 px patches, repeat 2, batch 2: 3 steps an epoch, 4 steps in all)."""
    values = tiny_values(folders[0], folders[1], tmp_path / "run")
    for section, changes in sections.items():
        values[section] = {**values[section], **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def warnings(child) -> list[str]:
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr
    return [line for line in child.stderr.splitlines() if line.startswith("WARNING")]


def barren_folder(tmp_path: Path, holds: str) -> Path:
    folder = tmp_path / holds
    folder.mkdir()
    if holds == "subfolder":  # DIV2K/ given for DIV2K/DIV2K_train_HR/
        (folder / "DIV2K_train_HR").mkdir()
        Image.new("RGB", (64, 64)).save(folder / "DIV2K_train_HR" / "0001.png")
    elif holds == "text":
        (folder / "notes.txt").write_text("not an image")
        (folder / "photo.png").write_bytes(b"not a PNG either")
    elif holds == "small":
        Image.new("RGB", (20, 64)).save(folder / "thumb.png")
    return folder


EXPECTED = {
    "empty": "holds no image files: it is empty",
    "subfolder": "holds no image files, only 1 subfolder(s) (not read)",
    "text": "holds no usable image (2 file(s) skipped: 2 not readable as images)",
    "small": "holds no usable image (1 file(s) skipped: 1 smaller than 32x32)",
}


@pytest.mark.parametrize("holds", sorted(EXPECTED))
def test_the_dry_run_refuses_a_training_folder_without_usable_images(folders, tmp_path, holds) -> None:
    # The dry run checked that the folder existed and passed; the run then stopped at its start.
    folder = barren_folder(tmp_path, holds)
    config = config_file(folders, tmp_path, data={"train_dirs": [str(folder)]})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert f"{folder} {EXPECTED[holds]}" in line, line
    # the run says the same, before anything is written
    assert f"{folder} {EXPECTED[holds]}" in one_error_line(srfeat_cli("train", "--no-progress", config, cwd=tmp_path))
    assert not (tmp_path / "run").exists()


def test_the_dry_run_names_one_of_several_folders_that_gives_nothing(folders, tmp_path) -> None:
    folder = barren_folder(tmp_path, "text")
    config = config_file(folders, tmp_path, data={"train_dirs": [str(folders[0]), str(folder)]})
    lines = warnings(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert any(f"{folder} {EXPECTED['text']}" in line for line in lines), lines


def test_the_dry_run_refuses_an_empty_validation_folder(folders, tmp_path) -> None:
    folder = barren_folder(tmp_path, "empty")
    config = config_file(folders, tmp_path, validation={"dir": str(folder)})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert "validation.dir" in line and f"{folder} holds no image files" in line, line


def test_the_dry_run_refuses_fewer_images_than_a_batch(folders, tmp_path) -> None:
    config = config_file(folders, tmp_path, data={"repeat": 1}, train={"batch_size": 4})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert "the training set has 3 items, fewer than one global batch (4 x 1)" in line, line


def test_the_dry_run_of_patches_needs_their_pairs(folders, tmp_path) -> None:
    patches = tmp_path / "patches"
    (patches / "HR").mkdir(parents=True)
    (patches / "LR").mkdir()
    config = config_file(folders, tmp_path, data={"kind": "patches", "train_dirs": [str(patches)]})
    assert "no HR/LR patch pairs found" in one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(patches / "HR" / name)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(patches / "LR" / name)
    assert warnings(srfeat_cli("train", config, "--dry-run", cwd=tmp_path)) == []


@pytest.mark.parametrize(
    ("optim", "expected"),
    [
        ({"lr_milestones": [2, 3, 5]}, "optim.lr_milestones 3, 5 never reached: the run's last epoch is 2"),
        (
            {"lr_schedule": "progress", "lr_milestones": [0.5, 0.8]},
            "optim.lr_milestones 0.8 never reached: the run has 4 steps",
        ),
        ({"lr_milestones": [2]}, None),
        ({"lr_schedule": "progress", "lr_milestones": [0.75]}, None),
    ],
)
def test_milestones_the_run_never_reaches_are_named(folders, tmp_path, optim, expected) -> None:
    # 3 steps an epoch, 4 steps: epoch 2 is the last; with 4 steps, 0.75 changes step 4, 0.8 none.
    config = config_file(folders, tmp_path, optim=optim)
    lines = [line for line in warnings(srfeat_cli("train", config, "--dry-run", cwd=tmp_path)) if "milestones" in line]
    assert (lines == []) if expected is None else (len(lines) == 1 and expected in lines[0]), lines


def test_epoch_milestones_past_train_epochs_are_named_by_the_run(folders, tmp_path) -> None:
    config = config_file(folders, tmp_path, optim={"lr_milestones": [3]}, train={"epochs": 2, "max_steps": None})
    expected = "optim.lr_milestones 3 never reached: the run's last epoch is 2 (train.epochs)"
    assert any(expected in line for line in warnings(srfeat_cli("train", config, "--dry-run", cwd=tmp_path)))
    run = srfeat_cli("train", "--no-progress", config, "validation.dir=null", cwd=tmp_path)
    assert sum(expected in line for line in warnings(run)) == 1, run.stderr


def test_the_dry_run_of_a_resume_warns_of_config_changes_as_the_resume_does(folders, tmp_path) -> None:
    # The resume warned that another batch size or seed changes the run; its dry run passed without a word.
    config = config_file(folders, tmp_path, validation={"dir": None}, train={"max_steps": 2})
    assert srfeat_cli("train", config, "--no-progress", cwd=tmp_path).returncode == 0
    same = warnings(srfeat_cli("train", config, "--resume", "--dry-run", "--max-steps", "3", cwd=tmp_path))
    assert not [line for line in same if "differs from its run's" in line], same
    changed = ["train.batch_size=1", "train.seed=7", "--max-steps", "3"]
    dry = warnings(srfeat_cli("train", config, "--resume", "--dry-run", *changed, cwd=tmp_path))
    resumed = warnings(srfeat_cli("train", config, "--resume", "--no-progress", *changed, cwd=tmp_path))
    dry, resumed = ([line for line in lines if "differs from its run's" in line] for lines in (dry, resumed))
    assert len(dry) == 1 and dry == resumed, (dry, resumed)
    assert "train.batch_size: 2 -> 1; train.seed: 0 -> 7" in dry[0] and "config.yaml" in dry[0], dry


def test_the_generator_to_start_from_is_read_by_the_dry_run_and_before_the_run_writes(folders, tmp_path) -> None:
    """The dry run passed any file there as train.init_generator (a PNG, a generator of another size), and the
    run took a 1-channel generator, wrote its folder and failed at the first step ("takes (N, 1, H, W) batches")."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40)).save(photo)
    grey = tmp_path / "grey.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2, in_channels=1), grey)
    for start, named in ((photo, "is a PNG image"), (grey, "1 channel(s)")):
        config = config_file(folders, tmp_path, train={"init_generator": str(start)})
        line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
        assert str(start) in line and named in line, line
    line = one_error_line(srfeat_cli("train", config, "--no-progress", cwd=tmp_path))
    assert str(grey) in line and "3 channels (RGB)" in line, line
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("length", [["--max-steps", str(10**23)], [f"train.epochs={10**400}", "train.max_steps=null"]])
def test_the_dry_run_refuses_a_run_length_no_run_reaches(folders, tmp_path, length) -> None:
    # 10**23 passed; 10**400 epochs with a progress schedule was an OverflowError's traceback
    config = config_file(folders, tmp_path, optim={"lr_schedule": "progress", "lr_milestones": [0.5]})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", *length, cwd=tmp_path))
    assert "must be at most 2**53 (9,007,199,254,740,992)" in line and "train.max_minutes ends it by time" in line, line


@pytest.mark.parametrize("key", ["train.log_every", "train.checkpoint_every", "validation.every"])
def test_the_dry_run_refuses_a_step_interval_no_run_reaches(folders, tmp_path, key) -> None:
    # 10**30 passed the dry run and the run, where train.max_steps beside it stops at 2**53
    section, name = key.split(".")
    config = config_file(folders, tmp_path, **{section: {name: 10**30}})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert f"config key {key} must be in 1..2**53 (9,007,199,254,740,992), got 1000" in line, line


def test_a_run_that_plans_more_than_2_53_steps_is_refused_before_it_writes(folders, tmp_path) -> None:
    # train.epochs 2**53 (allowed) of 3 steps without train.max_steps planned 3 x 2**53 steps: the dry run
    # passed, and the run started, counting towards steps its own resume refuses as a damaged state
    config = config_file(folders, tmp_path, train={"epochs": 2**53, "max_steps": None})
    for mode in ("--dry-run", "--no-progress"):
        line = one_error_line(srfeat_cli("train", config, mode, cwd=tmp_path))
        assert "train.epochs 9,007,199,254,740,992 of 3 step(s) each plan 27,021,597,764,222,976 steps" in line, line
        assert "give train.epochs at most 3,002,399,751,580,330 or set train.max_steps" in line, line
    assert not (tmp_path / "run").exists()  # nothing written
    # the most epochs of 3 steps is a run's length, and the dry run passes it
    config = config_file(folders, tmp_path, train={"epochs": 2**53 // 3, "max_steps": None})
    assert srfeat_cli("train", config, "--dry-run", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("train_dirs", "expected"),
    [
        # a lone number was wrapped as a list of one and blamed as its item: "data.train_dirs[0] must be str"
        (5, "got 5 (int); a folder whose name YAML reads as a number is written in quotes"),
        (2.5, "got 2.5 (float); a folder whose name YAML reads as a number is written in quotes"),
        (True, "got True (bool)"),
        ({"T91": 1}, "got {'T91': 1} (dict)"),
    ],
)
def test_a_train_dirs_that_is_no_path_nor_list_is_named_as_itself(folders, tmp_path, train_dirs, expected) -> None:
    config = config_file(folders, tmp_path, data={"train_dirs": train_dirs})
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path), only=True)
    assert line == f"ERROR: {config}: config key data.train_dirs must be a path or a list of paths, {expected}", line
