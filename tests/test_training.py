"""The training loop: stage 2 moves all three networks, exact resume, run folder, NaN stop, CLI."""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from safetensors.torch import load_file
from training_helpers import (
    assert_resume_matches_an_uninterrupted_run,
    state_tensors,
    tiny_config,
    tiny_generator_file,
    tiny_values,
    train_in_process,
    write_image_folders,
)

from srfeat.errors import ConfigError, WeightsError
from srfeat.ops.workers import worker_threads
from srfeat.training import build, checkpoint, trainer
from srfeat.training.steps import GANStep, PretrainStep

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def test_stage2_every_step_moves_generator_and_both_discriminators(folders, tmp_path, monkeypatch) -> None:
    train_dir, validation_dir = folders
    init = tiny_generator_file(tmp_path / "stage1.safetensors")
    config = tiny_config(
        train_dir,
        validation_dir,
        tmp_path / "run",
        stage=2,
        overrides=[f"train.init_generator={init}", "train.max_steps=3", "data.hr_patch_size=16"],
    )
    changes: list[dict[str, bool]] = []

    class RecordingGANStep(GANStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            networks = {"generator": self.generator, **{term.name: term.discriminator for term in self.terms}}
            before = {name: snapshot(module) for name, module in networks.items()}
            losses = super().__call__(lr, hr)
            changes.append({name: moved(before[name], module) for name, module in networks.items()})
            return losses

    monkeypatch.setattr(build, "GANStep", RecordingGANStep)
    result = train_in_process(config, tmp_path / "run")
    assert result.step == 3
    assert changes == [{"generator": True, "image": True, "feature": True}] * 3
    records = [json.loads(line) for line in (tmp_path / "run" / trainer.METRICS_FILE).read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    for key in (
        "loss/perceptual",
        "loss/adversarial_image",
        "loss/adversarial_feature",
        "loss/discriminator_image",
        "loss/discriminator_feature",
    ):
        assert all(math.isfinite(r[key]) for r in train_records), key
    assert any(r["kind"] == "validation" and "psnr" in r and "ssim" in r for r in records)


@pytest.mark.parametrize("stage", [1, 2])
def test_stop_and_resume_matches_an_uninterrupted_run(folders, tmp_path, stage: int) -> None:
    train_dir, _ = folders
    assert_resume_matches_an_uninterrupted_run(train_dir, tmp_path, stage, [])
    latest = load_file(str(tmp_path / "split" / checkpoint.LATEST_GENERATOR))
    expected = state_tensors(tmp_path / "whole")
    assert all(torch.equal(latest[k], expected[f"generator.{k}"]) for k in latest)


def test_a_log_torn_by_a_kill_does_not_stop_the_resume(folders, tmp_path, caplog) -> None:
    train_dir, _ = folders
    out = tmp_path / "run"
    whole = tiny_config(train_dir, None, tmp_path / "whole", 1, ["train.max_steps=4"])
    train_in_process(whole, tmp_path / "whole")
    assert train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=2"]), out).step == 2
    metrics = out / "metrics.jsonl"
    with open(metrics, "a") as handle:  # what a kill -9 in the middle of a write leaves
        handle.write('{"kind": "train", "step": 3, "loss/pi')

    with caplog.at_level("WARNING", logger="srfeat"):
        assert train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=4"]), out, resume=True).step == 4
    assert any("metrics.jsonl line" in r.getMessage() and "not JSON" in r.getMessage() for r in caplog.records)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole again
    expected = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [(r["kind"], r["step"]) for r in expected]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_resume_hides_the_tensorboard_events_of_the_steps_it_redoes(folders, tmp_path) -> None:
    # A run killed after logging steps 3-4 but before their checkpoint is resumed from step 2 and
    # logs 3-4 again: metrics.jsonl dropped the old records, but TensorBoard showed both copies.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_dir, validation_dir = folders
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=2"]), out)
    at_step_2 = (out / checkpoint.STATE_FILE).read_bytes()
    train_in_process(tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=4"]), out, resume=True)
    (out / checkpoint.STATE_FILE).write_bytes(at_step_2)  # as a kill -9 before step 4's checkpoint leaves it
    train_in_process(tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=4"]), out, resume=True)

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss/pixel")] == [1, 2, 3, 4]
    assert [event.step for event in events.Scalars("validation/psnr")] == [2, 4]


def test_a_resumed_run_with_no_step_left_validates_its_last_step_once(folders, tmp_path) -> None:
    # A run stopped at its last step without a validation there (Ctrl-C at that step, or here: no
    # validation folder then) is validated by its resume; a second resume must not do it again.
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3"]), out)
    for _ in range(2):
        train_in_process(tiny_config(train_dir, validation_dir, out, 1, ["train.max_steps=3"]), out, resume=True)
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "validation"] == [3]


def test_a_resume_with_a_config_that_changes_the_run_names_the_changes(folders, tmp_path, caplog) -> None:
    # A resume with another batch size or seed (the shipped config instead of the run's config.yaml,
    # which held overrides) continued without a word, on another data order than the run's.
    train_dir, _ = folders
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=2"]), out)
    with caplog.at_level("WARNING", logger="srfeat"):
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3", "data.num_workers=1"]), out, True)
    assert not [r for r in caplog.records if "differs from its run's" in r.getMessage()]
    with caplog.at_level("WARNING", logger="srfeat"):
        changed = ["train.max_steps=4", "train.batch_size=1", "train.seed=7"]
        train_in_process(tiny_config(train_dir, None, out, 1, changed), out, resume=True)
    (warning,) = [r.getMessage() for r in caplog.records if "differs from its run's" in r.getMessage()]
    assert "train.batch_size: 2 -> 1; train.seed: 0 -> 7" in warning and "config.yaml" in warning, warning


def test_a_config_key_newer_than_the_run_counts_as_its_default_on_resume(folders, tmp_path, caplog) -> None:
    # A run saved by an srfeat without data.shuffle reshuffled every epoch: resuming it with the
    # default is no change (it warned "data.shuffle: None -> 'every_epoch'"); with once it is one.
    import yaml

    train_dir, _ = folders
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=2"]), out)
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    older = yaml.safe_load(state["config"])
    del older["data"]["shuffle"]
    checkpoint.save_state({**state, "config": yaml.safe_dump(older)}, out / checkpoint.STATE_FILE)
    with caplog.at_level("WARNING", logger="srfeat"):
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3"]), out, resume=True)
    assert not [r for r in caplog.records if "differs from its run's" in r.getMessage()]
    with caplog.at_level("WARNING", logger="srfeat"):
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=4", "data.shuffle=once"]), out, True)
    (warning,) = [r.getMessage() for r in caplog.records if "differs from its run's" in r.getMessage()]
    assert "data.shuffle: 'every_epoch' -> 'once'" in warning, warning


def test_resume_with_workers_sees_the_same_batches(folders, tmp_path) -> None:
    """Item seeds make crops independent of which DataLoader worker draws them."""
    train_dir, _ = folders
    train_in_process(tiny_config(train_dir, None, tmp_path / "a", overrides=["train.max_steps=3"]), tmp_path / "a")
    train_in_process(
        tiny_config(train_dir, None, tmp_path / "b", overrides=["train.max_steps=3", "data.num_workers=2"]),
        tmp_path / "b",
    )
    a, b = state_tensors(tmp_path / "a"), state_tensors(tmp_path / "b")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_run_folder_holds_weights_state_logs_and_plot(folders, tmp_path) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    result = train_in_process(tiny_config(train_dir, validation_dir, out), out)
    assert result.step == 4 and result.last_validation is not None
    for name in (
        checkpoint.LATEST_GENERATOR,
        checkpoint.BEST_GENERATOR,
        checkpoint.STATE_FILE,
        trainer.PLOT_FILE,
        trainer.CONFIG_FILE,
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["kind"] == "validation"] == [2, 4]
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["step"] == 4 and state["best_psnr"] == max(r["psnr"] for r in records if r["kind"] == "validation")
    from srfeat.weights import load_generator

    assert load_generator(out / checkpoint.BEST_GENERATOR).num_features == 8


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(folders, tmp_path, monkeypatch) -> None:
    train_dir, _ = folders
    calls = 0

    class FailingStep(PretrainStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            nonlocal calls
            calls += 1
            losses = super().__call__(lr, hr)
            if calls == 3:
                with torch.no_grad():  # what a diverged step leaves behind
                    for p in self.generator.parameters():
                        p.fill_(float("nan"))
                losses = {key: torch.tensor(float("nan")) for key in losses}
            return losses

    monkeypatch.setattr(build, "PretrainStep", FailingStep)
    out = tmp_path / "run"
    with pytest.raises(trainer.TrainingDiverged, match="loss/.* became nan by step 3.*step 2"):
        train_in_process(tiny_config(train_dir, None, out, overrides=["train.checkpoint_every=1"]), out)
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_lr_follows_the_epoch_milestones(folders, tmp_path) -> None:
    train_dir, _ = folders
    out = tmp_path / "run"
    # 3 steps per epoch, lr x0.1 from epoch 2 and again from epoch 3.
    train_in_process(
        tiny_config(
            train_dir,
            None,
            out,
            overrides=["train.max_steps=7", "optim.lr_milestones=[2, 3]", "train.checkpoint_every=100"],
        ),
        out,
    )
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    assert lrs == pytest.approx([1e-3] * 3 + [1e-4] * 3 + [1e-5])


def test_the_logged_lr_is_the_one_the_progress_schedule_trained_with(folders, tmp_path) -> None:
    # 4 steps, x0.1 at half the run: steps 1-2 train at 1e-3, steps 3-4 at 1e-4. The log used to
    # read the rate after the schedule had already moved it for the next step, so step 2 said 1e-4.
    train_dir, _ = folders
    out = tmp_path / "run"
    overrides = ["optim.lr_schedule=progress", "optim.lr_milestones=[0.5]"]
    seen: list[float] = []

    class Recording(PretrainStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            seen.append(self.optimizer.param_groups[0]["lr"])
            return super().__call__(lr, hr)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "PretrainStep", Recording)
        train_in_process(tiny_config(train_dir, None, out, overrides=overrides), out)
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert seen == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert [r["lr"] for r in records if r["kind"] == "train"] == pytest.approx(seen)


@pytest.mark.parametrize("ended_by", ["max_steps", "max_minutes"])
def test_resuming_a_finished_run_trains_and_logs_nothing_more(folders, tmp_path, ended_by: str) -> None:
    # A run that had spent its max_minutes trained one more step at every --resume, and one that had
    # spent its steps validated its last step again, adding a second record of it to metrics.jsonl.
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    budget = ["train.max_steps=4"] if ended_by == "max_steps" else ["train.max_steps=null", "train.max_minutes=1e-6"]
    config = tiny_config(train_dir, validation_dir, out, 1, ["validation.every=3", *budget])
    step = train_in_process(config, out).step
    before = {name: (out / name).read_bytes() for name in (trainer.METRICS_FILE, checkpoint.STATE_FILE)}
    for _ in range(2):
        assert train_in_process(config, out, resume=True).step == step
    after = {name: (out / name).read_bytes() for name in (trainer.METRICS_FILE, checkpoint.STATE_FILE)}
    assert after == before
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "validation"] == sorted({*range(3, step + 1, 3), step})


# ----------------------------------------------------------------------------- the command


def command(*argv: str) -> int:
    from srfeat.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return train_command.run(parser.parse_args(list(argv)))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "dev").glob("*.yaml")))
def test_dry_run_succeeds_for_every_dev_config(name, datasets_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    assert command(str(REPO / "configs" / "dev" / name), "--dry-run", f"datasets_dir={datasets_dir}") == 0
    printed = capsys.readouterr().out
    assert "stage:" in printed and str(datasets_dir) in printed


@pytest.mark.parametrize(
    "name, missing", [("stage1.yaml", "data/coco/train2017"), ("stage2.yaml", "data/div2k_patches")]
)
def test_dry_run_of_a_paper_config_names_the_missing_folder(name, missing, tmp_path, monkeypatch) -> None:
    from srfeat.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"training folder not found: {missing}") as error:
        command(str(REPO / "configs" / "paper" / name), "--dry-run")
    assert "\n" not in str(error.value)
    # the folder is named outright, not under {datasets_dir}: the hint was to set datasets_dir or
    # SRFEAT_DATASETS, which does not move it
    assert "data.train_dirs=[" in str(error.value) and "SRFEAT_DATASETS" not in str(error.value), error.value


def test_a_missing_folder_under_datasets_dir_says_to_set_it(tmp_path, monkeypatch) -> None:
    from srfeat.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="set datasets_dir or SRFEAT_DATASETS"):
        command(str(REPO / "configs" / "dev" / "stage1.yaml"), "--dry-run", f"datasets_dir={tmp_path / 'none'}")


def test_max_steps_then_resume_on_the_dev_config(datasets_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    tiny = [
        f"datasets_dir={datasets_dir}",
        "model.num_features=8",
        "model.num_blocks=2",
        "data.hr_patch_size=32",
        "data.num_workers=0",
        "validation.max_images=1",
    ]
    out = tmp_path / "dev"
    assert command(str(REPO / "configs" / "dev" / "stage1.yaml"), "--max-steps", "3", "--out", str(out), *tiny) == 0
    assert (out / checkpoint.LATEST_GENERATOR).is_file()
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 3
    assert (
        command(str(REPO / "configs" / "dev" / "stage1.yaml"), "--resume", "--max-steps", "5", "--out", str(out), *tiny)
        == 0
    )
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 5
    assert "5 steps" in capsys.readouterr().out


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16-cpu", "cpu-without-bf16"])
def test_bf16_on_cpu_autocasts_only_where_the_cpu_has_it(folders, tmp_path, monkeypatch, native: bool) -> None:
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    config = tiny_config(
        train_dir, validation_dir, out, overrides=["train.bf16=true", "train.winograd=true", "train.max_steps=2"]
    )
    loop = trainer.Trainer(config, out_dir=out, show_progress=False)
    with loop._autocast()():
        features = torch.nn.functional.conv2d(torch.rand(1, 3, 8, 8), torch.rand(4, 3, 3, 3))
    assert (features.dtype == torch.bfloat16) == native
    # bf16 replaces the float32 Winograd convolutions; without native bf16, Winograd stays
    assert loop._winograd == (not native)
    result = train_in_process(config, out)
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert result.step == 2 and all(math.isfinite(r["loss/generator"]) for r in records if r["kind"] == "train")


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16-cpu", "cpu-without-bf16"])
def test_a_float32_run_on_a_cpu_with_native_bf16_is_told_of_train_bf16(
    folders, tmp_path, monkeypatch, caplog, native: bool
) -> None:
    """On a CPU where `train.bf16` makes steps 2-5x faster a run never heard of the opt-in switch."""
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    train_dir, validation_dir = folders
    for bf16 in ("false", "true"):
        out = tmp_path / f"run_{bf16}"
        config = tiny_config(train_dir, validation_dir, out, overrides=[f"train.bf16={bf16}", "train.max_steps=1"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="srfeat"):
            trainer.Trainer(config, out_dir=out, show_progress=False)
        told = [
            record.getMessage() for record in caplog.records if "train.bf16=true makes steps" in record.getMessage()
        ]
        assert len(told) == (native and bf16 == "false"), caplog.text


def test_a_winograd_run_leaves_the_band_workers_on_for_the_process_after_it(folders, tmp_path, monkeypatch) -> None:
    """A run turned srfeat's band workers off for good: upscales in the same process after it (a notebook's, the
    test session's) took intra-op threads, slower and with other rounding than `srfeat upscale` gives."""
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, validation_dir, out, overrides=["train.winograd=true", "train.max_steps=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert worker_threads() == 2
        assert train_in_process(config, out).step == 1
        assert worker_threads() == 2
    finally:
        torch.set_num_threads(threads)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture()
def finished_run(folders, tmp_path) -> tuple[Path, Path]:
    """A 2-step stage-1 run folder, and its config as a YAML file."""
    train_dir, _ = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=2"])
    train_in_process(config, out)
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    return out, path


def test_a_new_run_refuses_a_folder_that_holds_a_run_and_keeps_it(finished_run, tmp_path) -> None:
    # It used to train over it: new weights, config.yaml and metrics in place of the old run's.
    out, config = finished_run
    before = folder_bytes(out)
    message = one_error_line(srfeat_cli("train", "--no-progress", config, "--out", str(out), cwd=tmp_path))
    assert "already holds a run" in message and "--resume" in message and "--overwrite" in message
    assert folder_bytes(out) == before
    replaced = srfeat_cli(
        "train", "--no-progress", config, "--out", str(out), "--overwrite", "optim.lr=5e-4", cwd=tmp_path
    )
    assert replaced.returncode == 0, replaced.stderr
    assert (out / "state.pt").read_bytes() != before["state.pt"]
    assert "lr: 0.0005" in (out / "config.yaml").read_text()


def test_an_overwrite_refuses_to_delete_the_generator_it_starts_from(folders, finished_run) -> None:
    # train.init_generator=OUT/generator_latest.safetensors with --overwrite loaded it, then deleted it
    # with the old run: a run that then failed or was stopped left the user without it.
    train_dir, _ = folders
    out, _ = finished_run
    before = folder_bytes(out)
    init = out / checkpoint.LATEST_GENERATOR
    config = tiny_config(train_dir, None, out, 1, [f"train.init_generator={init}", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="is a file of the run that overwrite=True replaces: copy it out"):
        trainer.train(config, out, show_progress=False, overwrite=True)
    assert folder_bytes(out) == before


def test_an_overwrite_removes_the_runs_event_files_and_nothing_else_of_tensorboard(folders, finished_run) -> None:
    # --overwrite deleted the whole tensorboard/ folder, with whatever else the user kept in it
    train_dir, _ = folders
    out, _ = finished_run
    (out / "tensorboard" / "other_run").mkdir()
    (out / "tensorboard" / "other_run" / "events.out.tfevents.1.host").write_bytes(b"another run's")
    (out / "tensorboard" / "notes.txt").write_text("mine")
    old_events = {path.name for path in (out / "tensorboard").glob("events.out.tfevents.*")}
    assert old_events
    trainer.train(tiny_config(train_dir, None, out, 1, ["train.max_steps=1"]), out, show_progress=False, overwrite=True)
    assert (out / "tensorboard" / "notes.txt").read_text() == "mine"
    assert (out / "tensorboard" / "other_run" / "events.out.tfevents.1.host").read_bytes() == b"another run's"
    new_events = {path.name for path in (out / "tensorboard").glob("events.out.tfevents.*")}
    assert new_events and not new_events & old_events


def test_resuming_a_run_killed_before_its_first_checkpoint_says_to_overwrite(finished_run, tmp_path) -> None:
    # It said "run without --resume first", and that run said "continue it with --resume".
    _, config = finished_run
    out = tmp_path / "killed"
    out.mkdir()
    (out / "config.yaml").write_text(config.read_text())  # what a kill -9 in the first steps leaves
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    before = folder_bytes(out)
    message = one_error_line(srfeat_cli("train", "--no-progress", config, "--out", str(out), "--resume", cwd=tmp_path))
    assert "holds no state.pt to resume" in message and "--overwrite" in message, message
    assert "without --resume" not in message
    assert folder_bytes(out) == before


def test_a_second_run_on_a_folder_in_use_is_refused_and_writes_nothing(finished_run, tmp_path) -> None:
    """Before: a second `srfeat train --resume` (another terminal, a job started twice) trained in the
    same folder as the first, each writing checkpoints and logs over the other's."""
    from srfeat.training.run_folder import run_folder_lock

    out, config = finished_run
    before = folder_bytes(out)
    command = ("train", "--no-progress", config, "--out", str(out), "--resume", "train.max_steps=3")
    with run_folder_lock(out):  # what the first run holds while it trains
        message = one_error_line(srfeat_cli(*command, cwd=tmp_path))
    assert (
        message
        == f"ERROR: run folder {out} is in use by another srfeat train: wait for it to end, or choose another --out"
    )
    assert folder_bytes(out) == before
    assert srfeat_cli(*command, cwd=tmp_path).returncode == 0  # the lock goes with its holder


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_another_ended_while_this_one_started_is_refused(
    finished_run, tmp_path, monkeypatch, resume
) -> None:
    """The folder was checked at the start and locked only once the networks and data were built:
    a second `srfeat train` on it (another terminal) that ran and ended in between was trained over:
    a new run replaced its files without --overwrite, a resume went on from the state it had read
    and dropped the other run's later steps. The other run here is a real process, run to its end
    while this one builds its data."""
    from srfeat.training.config import load_config

    out, config = finished_run
    other = ("train", "--no-progress", config, "--out", str(out))
    if not resume:
        out = tmp_path / "fresh"  # empty when this run checks it; the other run fills it
        other = ("train", "--no-progress", config, "--out", str(out))
    build_loader = trainer.build_loader

    def meanwhile(*args, **kwargs):
        command = (*other, "--resume", "train.max_steps=3") if resume else other
        assert srfeat_cli(*command, cwd=tmp_path).returncode == 0
        return build_loader(*args, **kwargs)

    monkeypatch.setattr(trainer, "build_loader", meanwhile)
    mine = load_config(config, ["train.max_steps=4"])
    with pytest.raises(ConfigError) as refused:
        train_in_process(mine, out, resume=resume)
    monkeypatch.undo()
    expected = "wrote state.pt while this one started" if resume else "already holds a run"
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    steps = [json.loads(line)["step"] for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    assert max(steps) == (3 if resume else 2)  # the other run's steps, all kept
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == (3 if resume else 2)


def test_a_resume_that_fails_keeps_the_run_folder(finished_run, tmp_path) -> None:
    # A resume with another architecture used to end in a 50-line load_state_dict traceback, and
    # had already replaced the run's config.yaml with the wrong one.
    out, config = finished_run
    before = folder_bytes(out)
    message = one_error_line(
        srfeat_cli(
            "train", "--no-progress", config, "--out", str(out), "--resume", "model.num_features=16", cwd=tmp_path
        )
    )
    assert "head.weight is (8, 3, 9, 9), the config builds (16, 3, 9, 9)" in message
    assert folder_bytes(out) == before


def test_a_run_folder_that_is_a_file_or_the_image_folder_is_refused(folders, finished_run, tmp_path) -> None:
    train_dir, _ = folders
    _, config = finished_run
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert "is not a folder" in one_error_line(
        srfeat_cli("train", "--no-progress", config, "--out", str(a_file), cwd=tmp_path)
    )
    assert a_file.read_text() == "mine"  # used to be a FileExistsError traceback
    images = sorted(path.name for path in train_dir.iterdir())
    message = one_error_line(srfeat_cli("train", "--no-progress", config, "--out", str(train_dir), cwd=tmp_path))
    assert "is the image folder" in message
    assert sorted(path.name for path in train_dir.iterdir()) == images  # no config.yaml, checkpoints, logs


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_run_folder_under_a_file_or_a_broken_link_is_refused(finished_run, tmp_path, dry_run) -> None:
    # Both passed the dry run, and the run built its networks and data, then died in mkdir with a
    # NotADirectoryError / FileExistsError traceback.
    _, config = finished_run
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "gone").symlink_to(tmp_path / "missing")
    dry = ["--dry-run"] if dry_run else []
    message = one_error_line(srfeat_cli("train", "--no-progress", *dry, config, "--out", "notes.txt/run", cwd=tmp_path))
    assert "cannot be made" in message and "notes.txt is a file" in message
    message = one_error_line(srfeat_cli("train", "--no-progress", *dry, config, "--out", "gone", cwd=tmp_path))
    assert "is a link to" in message and "missing" in message
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "missing").exists()


def test_files_of_yours_with_a_run_files_name_in_the_run_folder_are_never_replaced(folders, tmp_path) -> None:
    # `srfeat train exp/config.yaml --out exp` was refused as "already holds a run (config.yaml)", and
    # --overwrite, as that message offered, replaced the user's config (comments and all) with the run's dump.
    import yaml

    train_dir, _ = folders
    exp = tmp_path / "exp"
    exp.mkdir()
    values = tiny_values(train_dir, None, exp)
    values["train"]["max_steps"] = 2
    mine = "# my experiment: lr 1e-3\n" + yaml.safe_dump(values)
    (exp / "config.yaml").write_text(mine)
    (exp / "training.png").write_bytes(b"the plot of a run I keep")
    for flags in ([], ["--overwrite"], ["--dry-run"]):
        child = srfeat_cli("train", "--no-progress", *flags, exp / "config.yaml", "--out", exp, cwd=tmp_path)
        assert "holds config.yaml, training.png, which no run wrote" in one_error_line(child)
    assert (exp / "config.yaml").read_text() == mine and (exp / "training.png").read_bytes().startswith(b"the plot")
    assert sorted(path.name for path in exp.iterdir()) == ["config.yaml", "training.png"]
    # the config.yaml a run wrote, all that a run killed before its first log leaves, is still the run's
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.yaml").write_text(tiny_config(train_dir, None, lone).to_yaml())
    child = srfeat_cli("train", "--dry-run", exp / "config.yaml", "--out", lone, cwd=tmp_path)
    assert "already holds a run (config.yaml)" in one_error_line(child)


def test_a_failed_start_leaves_no_run_folder(folders, tmp_path) -> None:
    train_dir, _ = folders
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(train_dir, None, tmp_path / "unused").to_yaml())
    empty = tmp_path / "empty"
    empty.mkdir()
    message = one_error_line(
        srfeat_cli("train", "--no-progress", config, "--out", "run", f"data.train_dirs=[{empty}]", cwd=tmp_path)
    )
    assert "no usable images" in message
    assert not (tmp_path / "run").exists()  # it used to hold a config.yaml of a run that never was


@pytest.mark.parametrize(("patch", "message"), [(32, "expected 16x16"), (20, "is not 4x its LR")])
def test_an_overwrite_with_patches_that_do_not_fit_keeps_the_old_run(finished_run, tmp_path, patch, message) -> None:
    # Patches of another size (or scale) were found in the first step, after --overwrite had deleted
    # the folder's run: its weights and state were gone, and an empty run was left in their place.
    from skimage import data as samples

    from srfeat.data.datasets import bicubic_downscale
    from srfeat.data.io import write_png

    out, config = finished_run
    hr = samples.astronaut()[:32, :32]
    for name in ("a", "b", "c"):
        write_png(tmp_path / "patches" / "HR" / f"{name}.png", hr[:patch, :patch])
        write_png(tmp_path / "patches" / "LR" / f"{name}.png", bicubic_downscale(hr, 4))
    before = folder_bytes(out)
    overrides = ["data.kind=patches", f"data.train_dirs=[{tmp_path / 'patches'}]", "data.hr_patch_size=16"]
    line = one_error_line(
        srfeat_cli("train", "--no-progress", config, "--out", str(out), "--overwrite", *overrides, cwd=tmp_path)
    )
    assert message in line, line
    assert folder_bytes(out) == before


def damaged(state: dict, damage: str) -> dict:
    if damage == "nan weights":
        next(iter(state["generator"].values())).fill_(float("nan"))
    elif damage == "no optimizers":
        del state["optimizers"]
    elif damage == "step is text":
        state["step"] = "x"
    elif damage == "negative step":
        state["step"] = -5
    elif damage == "no python random state":
        del state["rng"]["python"]
    elif damage == "short python random state":
        state["rng"]["python"] = [1, 2, 3]
    return state


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nan weights", r"the generator's weights are not finite \(NaN or inf\)"),
        ("no optimizers", "has no optimizers entry"),
        ("step is text", "step is 'x'"),
        ("negative step", "step is -5"),
        ("no python random state", "random states cannot be restored"),  # these two were tracebacks
        ("short python random state", "random states cannot be restored"),
    ],
)
def test_a_damaged_state_is_refused_before_the_resume(folders, finished_run, damage: str, message: str) -> None:
    # a missing entry or a text step used to be a KeyError / TypeError traceback; NaN weights were
    # loaded and trained on until the first save refused them; a negative step resumed
    train_dir, _ = folders
    out, _ = finished_run
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    torch.save(damaged(state, damage), out / checkpoint.STATE_FILE)
    before = folder_bytes(out)
    with pytest.raises(WeightsError, match=message) as error:
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3"]), out, resume=True)
    assert "\n" not in str(error.value)
    assert folder_bytes(out) == before


@pytest.mark.parametrize(("damage", "message"), [("drop", "lacks"), ("add", "has an unknown")])
def test_a_stage2_state_with_a_discriminator_tensor_missing_or_added_is_one_line(
    folders, tmp_path, damage: str, message: str
) -> None:
    # load_state_dict's "Missing key(s)" / "Unexpected key(s)" RuntimeError came out as a traceback
    train_dir, _ = folders
    out = tmp_path / "run"
    init = tiny_generator_file(tmp_path / "stage1.safetensors")
    overrides = [f"train.init_generator={init}", "data.hr_patch_size=16", "train.max_steps=1"]
    train_in_process(tiny_config(train_dir, None, out, 2, overrides), out)
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    weights = state["discriminators"]["image"]
    if damage == "drop":
        del weights[next(iter(weights))]
    else:
        weights["extra.weight"] = torch.zeros(1)
    torch.save(state, out / checkpoint.STATE_FILE)
    before = folder_bytes(out)
    with pytest.raises(WeightsError, match=f"the image discriminator {message}") as error:
        train_in_process(tiny_config(train_dir, None, out, 2, [*overrides, "train.max_steps=2"]), out, resume=True)
    assert "\n" not in str(error.value)
    assert folder_bytes(out) == before


def test_a_truncated_state_says_so_in_one_line(folders, finished_run) -> None:
    # it said only "(OSError: [Errno 22] Invalid argument)"
    train_dir, _ = folders
    out, _ = finished_run
    state = out / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:20_000])
    with pytest.raises(WeightsError, match="cut short or damaged") as error:
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3"]), out, resume=True)
    assert "\n" not in str(error.value)


def test_a_folder_as_the_generator_to_start_from_is_called_a_folder(folders, tmp_path) -> None:
    # it said "not found"
    train_dir, _ = folders
    config = tiny_config(train_dir, None, tmp_path / "run", 1, [f"train.init_generator={tmp_path}"])
    with pytest.raises(ConfigError, match="is a folder, not a weights file"):
        train_in_process(config, tmp_path / "run")


def test_an_onnx_file_as_the_generator_to_start_from_is_called_one(folders, tmp_path) -> None:
    # it said "looks like an ONNX file: name it .onnx", to a file named .onnx
    train_dir, _ = folders
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(64))  # how an ONNX ModelProto begins
    config = tiny_config(train_dir, None, tmp_path / "run", 1, [f"train.init_generator={model}"])
    with pytest.raises(WeightsError, match="is an ONNX model, which only srfeat upscale runs") as error:
        train_in_process(config, tmp_path / "run")
    assert "name it .onnx" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_bundled_model_by_name_is_a_generator_to_start_from(folders, tmp_path) -> None:
    # train.init_generator documents "e.g. the bundled one" and load_generator takes the name, but
    # the path check refused it: "generator to start from not found: default".
    from srfeat.weights import load_generator

    train_dir, _ = folders
    out = tmp_path / "run"
    overrides = ["train.init_generator=default", "model.num_features=128", "model.num_blocks=16", "train.max_steps=1"]
    config = tiny_config(train_dir, None, out, 1, [*overrides, "optim.lr=1e-12"])
    assert train_in_process(config, out).step == 1
    started, bundled = load_generator(out / checkpoint.LATEST_GENERATOR), load_generator("default")
    assert torch.allclose(started.head.weight, bundled.head.weight, atol=1e-6)


def test_validation_says_once_which_images_its_niqe_leaves_out(tmp_path: Path, caplog) -> None:
    """NIQE needs 96x96 after the shave: a 48x48 validation image has none, and the mean of the others
    must not pass for the mean of all, silently, at every validation."""
    import logging

    import numpy as np
    from PIL import Image
    from skimage import data

    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.training.validation import Validator

    folder = tmp_path / "validation"
    folder.mkdir()
    photo = data.astronaut()
    Image.fromarray(np.ascontiguousarray(photo[:128, 100:228])).save(folder / "large.png")
    Image.fromarray(np.ascontiguousarray(photo[200:248, 200:248])).save(folder / "small.png")
    config = tiny_config(tmp_path, folder, tmp_path / "run", stage=2, overrides=["validation.max_images=null"])
    validator = Validator(config, torch.device("cpu"))
    generator = SRFeatGenerator(scale=4, num_features=8, num_blocks=2)
    with caplog.at_level(logging.WARNING, logger="srfeat.training.validation"):
        metrics, _ = validator(generator)
        validator(generator)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "NIQE is the mean over 1 of 2 images: it is undefined for small" in warnings[0]
    assert math.isfinite(metrics["niqe"]) and validator.count == 2


def test_a_validation_image_too_small_for_ssim_is_left_out_at_the_start(tmp_path: Path, caplog) -> None:
    """A 16x16 image (8x8 after the x4 shave, under SSIM's 11 px window) raised MetricInputError at the
    first validation: the run stopped after `validation.every` steps with nothing saved since its last
    checkpoint (and with --overwrite, after the folder's previous run was deleted)."""
    import logging

    import numpy as np
    from PIL import Image
    from skimage import data

    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.errors import SRFeatError
    from srfeat.training.validation import Validator

    folder = tmp_path / "validation"
    folder.mkdir()
    photo = data.astronaut()
    Image.fromarray(np.ascontiguousarray(photo[:48, 100:148])).save(folder / "large.png")
    Image.fromarray(np.ascontiguousarray(photo[200:216, 200:216])).save(folder / "small.png")
    config = tiny_config(tmp_path, folder, tmp_path / "run", overrides=["validation.max_images=null"])
    with caplog.at_level(logging.WARNING, logger="srfeat.training.validation"):
        validator = Validator(config, torch.device("cpu"))
    assert "validation leaves out small: under 19 px" in caplog.text
    metrics, _ = validator(SRFeatGenerator(scale=4, num_features=8, num_blocks=2))
    assert validator.count == 1 and math.isfinite(metrics["psnr"]) and math.isfinite(metrics["ssim"])
    (folder / "large.png").unlink()
    with pytest.raises(SRFeatError, match="every image is under 19 px"):
        Validator(config, torch.device("cpu"))


def test_a_training_folder_listed_twice_is_used_once_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: its images were drawn twice as often as the other folders', without a word."""
    from srfeat.training.sampling import build_train_dataset

    train, _ = write_image_folders(tmp_path)
    once = build_train_dataset(tiny_config(train, None, tmp_path / "run"))
    alias = tmp_path / "alias"
    alias.symlink_to(train)
    twice = tiny_config(train, None, tmp_path / "run", overrides=[f"data.train_dirs=[{train}, {alias}]"])
    with caplog.at_level(logging.WARNING):
        dataset = build_train_dataset(twice)
    # torch's Dataset stubs leave __len__ out (not every dataset has one); the training datasets have it.
    assert len(dataset) == len(once) > 0  # pyright: ignore[reportArgumentType]
    assert f"data.train_dirs {alias} is given twice (the same folder as {train}): used once" in caplog.text


def test_steps_per_second_after_a_validation_count_training_only(tmp_path, monkeypatch) -> None:
    """Before: the first log after a validation (or a checkpoint) divided its steps by the time
    that included the pause, so a slow validation made training look slow."""
    from srfeat.training import loop

    train_dir, validation_dir = write_image_folders(tmp_path)
    validate = loop.validate_generators

    def slow_validation(*args, **kwargs):
        time.sleep(1.5)
        return validate(*args, **kwargs)

    monkeypatch.setattr(loop, "validate_generators", slow_validation)
    out = tmp_path / "run"
    overrides = ["train.log_every=2", "validation.every=2", "train.checkpoint_every=100"]
    train_in_process(tiny_config(train_dir, validation_dir, out, overrides=overrides), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    after_validation = next(r for r in records if r["kind"] == "train" and r["step"] == 4)
    assert after_validation["steps_per_second"] > 1.5, after_validation  # 2 steps in well under 1.5 s


def test_a_resume_with_another_number_of_processes_says_so(folders, finished_run, caplog) -> None:
    """A run of 2 torchrun processes resumed by 1 trains with half the global batch on another data
    order; before, no warning said so (the config is the same)."""
    train_dir, _ = folders
    out, _ = finished_run
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    torch.save({**state, "world_size": 2}, out / checkpoint.STATE_FILE)
    with caplog.at_level("WARNING", logger="srfeat"):
        train_in_process(tiny_config(train_dir, None, out, 1, ["train.max_steps=3"]), out, resume=True)
    (warning,) = [r.getMessage() for r in caplog.records if "process(es)" in r.getMessage()]
    assert f"resuming {out} with 1 process(es) where the run had 2: the global batch (2 images a step)" in warning


@pytest.mark.parametrize("world_size", [1, 2])
def test_data_shuffle_once_walks_one_order_every_epoch_and_every_epoch_draws_a_new_one(world_size: int) -> None:
    from srfeat.training.distributed import DistributedContext
    from srfeat.training.sampling import ResumableSampler

    items = list(range(40))

    def epoch_orders(reshuffle: bool) -> list[list[int]]:
        orders = []
        for epoch in range(3):
            order: list[int] = []
            for rank in range(world_size):
                sampler = ResumableSampler(
                    items,  # pyright: ignore[reportArgumentType]  # any sized sequence serves
                    DistributedContext(rank, world_size, rank, torch.device("cpu")),
                    seed=7,
                    reshuffle_every_epoch=reshuffle,
                )
                sampler.set_epoch(epoch)
                order += [index for index, _ in sampler]
            orders.append(order)
        return orders

    once = epoch_orders(reshuffle=False)
    assert once[0] == once[1] == once[2] and sorted(once[0]) == items  # one permutation, walked again
    every = epoch_orders(reshuffle=True)
    assert every[0] == once[0] and every[1] != every[0] and sorted(every[1]) == items


@pytest.mark.parametrize(("shuffle", "reshuffles"), [("once", False), ("every_epoch", True)])
def test_the_config_data_shuffle_reaches_the_sampler(folders, tmp_path, shuffle: str, reshuffles: bool) -> None:
    from srfeat.training.distributed import DistributedContext
    from srfeat.training.sampling import build_loader

    config = tiny_config(folders[0], None, tmp_path, 1, [f"data.shuffle={shuffle}", "data.num_workers=0"])
    _, sampler, _ = build_loader(config, DistributedContext(0, 1, 0, torch.device("cpu")), torch.device("cpu"))
    assert sampler.reshuffle_every_epoch is reshuffles
