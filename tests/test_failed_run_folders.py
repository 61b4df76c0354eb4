"""`srfeat train` that fails or is stopped before it saved a generator: it leaves nothing it made (its
config.yaml, logs, TensorBoard events, the run folder and the folders above it that it made), and keeps
every folder that was there and everything in it; a run that saved a checkpoint or a best generator keeps it.
With --overwrite, the run it was to replace is put back as it was."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli, srfeat_cli_out_of_memory
from training_helpers import tiny_config, train_in_process

from srfeat.data.io import write_png
from srfeat.errors import ConfigError, TrainingDiverged
from srfeat.files import folder_made_for
from srfeat.training import checkpoint, trainer
from srfeat.training.loop import TrainingLoop
from srfeat.training.run_folder import REPLACED_RUN_PREFIX, ReplacedRun, run_folder_lock

pytestmark = pytest.mark.usefixtures("one_thread")


def everything_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def out_of_memory_at_step(step: int, config: Path, *args: str | Path):
    """`srfeat train CONFIG ARGS` whose training step `step` runs out of memory."""
    when = f"args[0].progress.step == {step - 1}"
    return srfeat_cli_out_of_memory("srfeat.training.loop", "TrainingLoop._step", when, "train", config, *args)


def patches_with_one_of_another_size(root: Path) -> Path:
    """A prepared folder of 32 px patches whose third pair is 40 px: the dataset checks the first pair
    when it is built, the others when the first batch loads them, after the run folder is made."""
    rng = np.random.default_rng(0)
    for name, size in (("a", 32), ("b", 32), ("c", 40)):
        write_png(root / "HR" / f"{name}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        write_png(root / "LR" / f"{name}.png", rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize("failure", ["out of memory in the first step", "a patch of another size in the first batch"])
def test_a_new_run_that_fails_before_saving_leaves_nothing_it_made(folders, tmp_path: Path, failure: str) -> None:
    # it left new/deeper/run/ with config.yaml, an empty metrics.jsonl and a TensorBoard event file, and the
    # next run there was refused ("already holds a run") unless told --overwrite
    train_dir, _ = folders
    (tmp_path / "there").mkdir()
    out = tmp_path / "there" / "new" / "deeper" / "run"
    overrides = ["train.max_steps=2"]
    if failure == "a patch of another size in the first batch":
        patches = patches_with_one_of_another_size(tmp_path / "patches")
        overrides += ["data.kind=patches", f"data.train_dirs=[{patches}]", "data.repeat=1", "train.batch_size=3"]
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train_dir, None, out, 1, overrides).to_yaml())
    if failure == "out of memory in the first step":
        error = one_error_line(out_of_memory_at_step(1, config, "--no-progress"))
        assert error.endswith(f"no checkpoint was saved in {out}: once changed, run again"), error
    else:
        error = one_error_line(srfeat_cli("train", config, "--no-progress"))
        assert error.endswith("is 40x40, expected 32x32: prepare the patches with --hr-patch-size 32"), error
    assert everything_under(tmp_path / "there") == []
    if failure == "out of memory in the first step":  # the same command again, without --overwrite
        child = srfeat_cli("train", config, "--no-progress")
        assert child.returncode == 0, child.stderr
        assert (out / checkpoint.STATE_FILE).is_file()


@pytest.mark.parametrize("held", ["nothing", "a file of yours"])
def test_a_failed_run_keeps_the_folder_that_was_there_and_what_it_held(
    folders, tmp_path: Path, held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a second Ctrl-C in the first step (KeyboardInterrupt at once: the first one's checkpoint not saved)
    train_dir, _ = folders
    out = tmp_path / "run"
    out.mkdir()
    if held == "a file of yours":
        (out / "notes.txt").write_text("mine")

    def interrupted(self: TrainingLoop, batch: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainingLoop, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=2"]), out)
    assert everything_under(out) == ([] if held == "nothing" else ["notes.txt"])


@pytest.mark.parametrize("diverged_at", [1, 3])
def test_a_new_run_that_diverged_keeps_its_log_if_it_logged_steps(
    folders, tmp_path: Path, diverged_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run whose losses became NaN at step 3, before its first checkpoint, removed the log of steps 1 and 2:
    # how the losses went, which the user needs to choose a lower learning rate
    train_dir, _ = folders
    out = tmp_path / "run"
    original_step = TrainingLoop._step

    def step_then_nan(self: TrainingLoop, batch: dict[str, torch.Tensor]) -> None:
        original_step(self, batch)
        if self.progress.step == diverged_at:
            self.state.loss_sums = {key: value * float("nan") for key, value in self.state.loss_sums.items()}

    monkeypatch.setattr(TrainingLoop, "_step", step_then_nan)
    overrides = ["train.max_steps=6", "train.log_every=1", "train.checkpoint_every=6"]
    config = tiny_config(train_dir, None, out, 1, overrides)
    with pytest.raises(TrainingDiverged, match=f"became nan by step {diverged_at}") as raised:
        train_in_process(config, out)
    if diverged_at == 1:  # nothing logged: nothing to keep
        assert str(raised.value).endswith(f"no checkpoint was saved in {out} (lower optim.lr or check the data)")
        assert not out.exists()
        return
    assert str(raised.value).endswith("lower optim.lr or check the data, then run again with overwrite=True")
    assert sorted(os.listdir(out)) == [checkpoint.CONFIG_FILE, "metrics.jsonl", "tensorboard"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2]
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="already holds a run"):
        train_in_process(config, out)
    trainer.train(config, out_dir=out, overwrite=True, show_progress=False)
    assert (out / checkpoint.STATE_FILE).is_file()


@pytest.mark.parametrize(
    ("saved", "kept", "then"),
    [
        ("a checkpoint", checkpoint.STATE_FILE, "continue with `srfeat train"),
        ("a best generator", checkpoint.BEST_GENERATOR, "run again with --overwrite"),
    ],
)
def test_a_failed_run_that_saved_a_generator_keeps_its_folder(
    folders, tmp_path: Path, saved: str, kept: str, then: str
) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "new" / "run"
    every = ["train.checkpoint_every=2", "validation.every=2"]
    if saved == "a best generator":  # validated at step 1, no checkpoint before step 4
        every = ["train.checkpoint_every=4", "validation.every=1"]
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=4", *every]).to_yaml())
    error = one_error_line(out_of_memory_at_step(3 if saved == "a checkpoint" else 2, config, "--no-progress"))
    assert then in error, error
    names = os.listdir(out)
    assert kept in names and checkpoint.CONFIG_FILE in names and "metrics.jsonl" in names, names
    assert any((out / "tensorboard").iterdir())


def test_a_run_folder_another_run_holds_is_kept_by_the_run_that_made_it(tmp_path: Path) -> None:
    # two runs started at once on a new --out: this one made the folder, the other took its lock first; this
    # one, refused, removed the folder from under the other, still empty before its first file
    out = tmp_path / "new" / "run"
    other = -1
    try:
        refused = pytest.raises(ConfigError, match="in use by another srfeat train")
        with refused, folder_made_for(out / checkpoint.CONFIG_FILE):
            other = os.open(out, os.O_RDONLY)
            fcntl.flock(other, fcntl.LOCK_EX)  # the other run's lock
            with run_folder_lock(out):
                pass
        assert out.is_dir()
    finally:
        if other >= 0:
            os.close(other)
    with pytest.raises(KeyboardInterrupt), folder_made_for(tmp_path / "new" / "run2" / checkpoint.CONFIG_FILE):
        raise KeyboardInterrupt  # no lock: removed, up to the folder that was there
    assert everything_under(tmp_path) == ["new", "new/run"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too), by its path relative to it, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def a_finished_run(train_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A config file of 4 tiny steps (checkpoints at 2 and 4) and its run folder, trained."""
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train_dir, None, out, 1, ["train.max_steps=4"]).to_yaml())
    child = srfeat_cli("train", config, "--no-progress")
    assert child.returncode == 0, child.stderr
    return config, out


def test_an_overwrite_that_fails_before_saving_puts_the_run_it_was_to_replace_back(folders, tmp_path: Path) -> None:
    # --overwrite deleted the old run as the new one started: out of memory in its first step lost both
    train_dir, _ = folders
    config, out = a_finished_run(train_dir, tmp_path)
    before = folder_bytes(out)
    error = one_error_line(out_of_memory_at_step(1, config, "--no-progress", "--overwrite"))
    assert error.endswith(
        f"no checkpoint was saved in {out}, where the run it was to replace is put back: once changed, "
        "run again with --overwrite"
    ), error
    assert folder_bytes(out) == before  # every file as it was, no hidden folder left behind


def test_an_overwrite_deletes_the_run_it_replaces_once_it_saved_a_checkpoint(folders, tmp_path: Path) -> None:
    train_dir, _ = folders
    config, out = a_finished_run(train_dir, tmp_path)
    before = folder_bytes(out)
    child = out_of_memory_at_step(3, config, "--no-progress", "--overwrite")
    error = one_error_line(child)
    assert "the last good checkpoint (step 2)" in error, error
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 2
    after = folder_bytes(out)
    assert not any(name.startswith(".") for name in after), sorted(after)
    assert after[checkpoint.LATEST_GENERATOR] != before[checkpoint.LATEST_GENERATOR]


def test_an_overwrite_that_diverged_before_saving_puts_the_run_it_was_to_replace_back(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the diverged run's log, kept where there was no run before (above), gives way to the run it replaces
    train_dir, _ = folders
    _, out = a_finished_run(train_dir, tmp_path)
    before = folder_bytes(out)
    original_step = TrainingLoop._step

    def step_then_nan(self: TrainingLoop, batch: dict[str, torch.Tensor]) -> None:
        original_step(self, batch)
        if self.progress.step == 2:
            self.state.loss_sums = {key: value * float("nan") for key, value in self.state.loss_sums.items()}

    monkeypatch.setattr(TrainingLoop, "_step", step_then_nan)
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=4", "train.checkpoint_every=4"])
    with pytest.raises(TrainingDiverged, match="became nan by step 2") as raised:
        trainer.train(config, out_dir=out, overwrite=True, show_progress=False)
    assert str(raised.value).endswith(
        f"no checkpoint was saved in {out}, where the run it was to replace is put back "
        "(lower optim.lr or check the data)"
    )
    assert folder_bytes(out) == before


def test_a_run_set_aside_by_a_killed_overwrite_is_set_aside_with_the_rest_and_comes_back(tmp_path: Path) -> None:
    # `kill -9` while an --overwrite run had saved nothing: its config.yaml, and the run it replaced in a
    # hidden folder; the next --overwrite sets both aside, and puts both back if it fails in turn
    out = tmp_path / "run"
    out.mkdir()
    (out / checkpoint.CONFIG_FILE).write_text(tiny_config(tmp_path, None, out).to_yaml())
    stale = out / f"{REPLACED_RUN_PREFIX}abc"
    stale.mkdir()
    (stale / checkpoint.STATE_FILE).write_bytes(b"the first run")
    (out / "notes.txt").write_text("mine")
    before = folder_bytes(out)
    replaced = ReplacedRun(out)
    replaced.set_aside()
    assert replaced.folder is not None and set(os.listdir(out)) == {"notes.txt", replaced.folder.name}
    replaced.put_back()
    assert folder_bytes(out) == before and replaced.folder is None
