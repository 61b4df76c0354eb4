"""What `train` tells a Python caller of its run folder, and `srfeat train` a command-line user: the keywords
`train` takes (resume=True, overwrite=True, out_dir) to the one, the flags (--resume, --overwrite, --out) to
the other (`command_line=True`), never the other's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_helpers import srfeat_cli
from training_helpers import tiny_config

from srfeat.errors import ConfigError, SRFeatError, WeightsError
from srfeat.training import checkpoint, trainer
from srfeat.training.loop import TrainingLoop
from srfeat.training.run_folder import check_run_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_folder_that_holds_a_run_is_refused_naming_the_callers_options(folders, tmp_path: Path) -> None:
    """`train(config, out_dir=...)` on a folder with a run said to continue it "with --resume", replace it
    "with --overwrite" or "choose another --out": flags of a command the caller never ran."""
    train_dir, _ = folders
    out = tmp_path / "run"
    out.mkdir()
    (out / checkpoint.STATE_FILE).write_bytes(b"a run's state")
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=1"])
    said = f"run folder {out} already holds a run ({checkpoint.STATE_FILE}): "
    with pytest.raises(ConfigError) as raised:
        trainer.train(config, out_dir=out, show_progress=False)
    assert (
        str(raised.value)
        == said + "continue it with resume=True, replace it with overwrite=True, or choose another out_dir"
    )
    with pytest.raises(ConfigError) as raised:
        check_run_folder(config, out, resume=False, overwrite=False, command_line=True)
    assert str(raised.value) == said + "continue it with --resume, replace it with --overwrite, or choose another --out"
    with pytest.raises(ConfigError) as raised:
        trainer.train(config, out_dir=out, resume=True, overwrite=True, show_progress=False)
    assert str(raised.value) == (
        "resume=True continues the run in the folder and overwrite=True replaces it: give one of them"
    )
    assert [path.name for path in out.iterdir()] == [checkpoint.STATE_FILE]


def test_resuming_a_folder_without_a_state_names_the_callers_options(folders, tmp_path: Path) -> None:
    """`train(..., resume=True)` of a folder with no state.pt said "run without --resume first, or give the run
    folder with --out"."""
    train_dir, _ = folders
    out = tmp_path / "empty"
    out.mkdir()
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=1"])
    said = f"no training state at {out / checkpoint.STATE_FILE}: run without "
    with pytest.raises(WeightsError) as raised:
        trainer.train(config, out_dir=out, resume=True, show_progress=False)
    assert str(raised.value) == said + "resume=True first, or give the run folder with out_dir"
    with pytest.raises(WeightsError) as raised:
        checkpoint.load_state(out / checkpoint.STATE_FILE, command_line=True)
    assert str(raised.value) == said + "--resume first, or give the run folder with --out"
    assert not any(out.iterdir())


def test_a_run_that_stops_after_a_checkpoint_tells_a_python_caller_the_call_that_continues_it(
    folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step out of memory after a checkpoint told `train`'s caller to "continue with `srfeat train
    run/config.yaml --out run --resume`", a command; it names the call (the command's words are
    test_training_faults')."""
    train_dir, _ = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=4", "train.checkpoint_every=2"])
    step = TrainingLoop._step

    def out_of_memory_at_step_3(self: TrainingLoop, batch: dict[str, torch.Tensor]) -> None:
        if self.progress.step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        step(self, batch)

    monkeypatch.setattr(TrainingLoop, "_step", out_of_memory_at_step_3)
    with pytest.raises(SRFeatError) as raised:
        trainer.train(config, out_dir=out, show_progress=False)
    continued = f"continue with train(load_config({str(out / 'config.yaml')!r}), out_dir={str(out)!r}, resume=True)"
    assert str(raised.value).endswith(f"once changed, {continued}"), raised.value
    assert "srfeat train" not in str(raised.value) and "--" not in str(raised.value)
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 2


def test_a_stage_2_divergence_names_the_discriminators_rate_and_the_adversarial_weights(
    folders, tmp_path: Path
) -> None:
    """A stage-2 run that diverged for its adversarial term (here a weight of 1e300, which makes the losses NaN at
    the first step; a discriminator_lr as wild is refused with the config now) was told to lower optim.lr, which
    was not the cause; stage 1's advice stays optim.lr alone."""
    from training_helpers import tiny_generator_file

    from srfeat.errors import TrainingDiverged

    train_dir, _ = folders
    init = tiny_generator_file(tmp_path / "stage1.safetensors")
    overrides = [
        f"train.init_generator={init}",
        "data.hr_patch_size=16",
        "train.max_steps=2",
        "model.discriminators=[image]",
    ]
    config = tiny_config(train_dir, None, tmp_path / "run", 2, [*overrides, "model.image_adversarial_weight=1e300"])
    with pytest.raises(TrainingDiverged) as raised:
        trainer.train(config, out_dir=tmp_path / "run", show_progress=False)
    assert "(lower optim.lr, optim.discriminator_lr or model.image_adversarial_weight, or check the data)" in str(
        raised.value
    ), raised.value


def test_no_progress_logs_a_line_per_logged_step_with_its_loss(folders, tmp_path: Path) -> None:
    """`srfeat train --no-progress` (README: "log lines only, no progress bar (batch jobs)") printed no step
    at all between validations: the loss and the step reached were only in metrics.jsonl."""
    train_dir, _ = folders
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train_dir, None, tmp_path / "run", 1, ["train.max_steps=3"]).to_yaml())
    child = srfeat_cli("train", "--no-progress", str(config), cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    steps = [line for line in child.stderr.splitlines() if line.startswith("INFO: step ")]
    assert [line.split(":")[1] for line in steps] == [" step 1/3", " step 2/3", " step 3/3"], child.stderr
    assert all(" loss " in line and " lr 1.0e-03" in line and "steps/s" in line for line in steps), steps
