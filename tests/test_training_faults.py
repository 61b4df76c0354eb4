"""`srfeat train` under faults a long run meets: a damaged optimizer state, a quota or file size limit
that fills during a checkpoint, a full disk while plotting, a generator whose output overflows."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from cli_helpers import CHILD_ENV, REPO, one_error_line, srfeat_cli, srfeat_cli_out_of_memory
from safetensors.torch import load_file
from training_helpers import tiny_config, tiny_generator_file, tiny_values, train_in_process

from srfeat.cli import Terminated
from srfeat.training import build, checkpoint, trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name)


@pytest.fixture()
def two_step_run(folders, tmp_path: Path) -> tuple[Path, Path]:
    """A 2-step stage-1 run folder (checkpoint at step 2, no validation) and its config file."""
    train_dir, _ = folders
    out = tmp_path / "run"
    config = tiny_config(train_dir, None, out, 1, ["train.max_steps=2"])
    train_in_process(config, out)
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    return out, path


def damage_optimizer(state: dict, damage: str) -> None:
    moments = state["optimizers"]["generator"]["state"]
    first = moments[next(iter(moments))]
    if damage == "nan moment":
        first["exp_avg_sq"].fill_(float("nan"))
    elif damage == "moment of another shape":
        first["exp_avg"] = torch.zeros(3)
    elif damage == "moment missing":
        del first["exp_avg"]
    elif damage == "negative step":
        first["step"] = torch.tensor(-5.0)
    elif damage == "nan beta":
        state["optimizers"]["generator"]["param_groups"][0]["betas"] = (float("nan"), 0.999)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # trained on: the first step's NaN weights were called a divergence, pointing at this same state
        ("nan moment", "has exp_avg_sq values that are NaN"),
        ("moment of another shape", "has exp_avg of shape (3,) for a parameter of shape (8, 3, 9, 9)"),  # SIGSEGV
        ("moment missing", "has no exp_avg tensor"),  # KeyError traceback in the first step
        ("negative step", "has step -5 for parameter 0, not a whole number from 1 to the run's 2"),
        ("nan beta", "has betas (nan, 0.999)"),
    ],
)
def test_a_damaged_optimizer_state_is_refused_in_one_line_and_writes_nothing(
    two_step_run: tuple[Path, Path], damage: str, message: str
) -> None:
    out, config = two_step_run
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    damage_optimizer(state, damage)
    torch.save(state, out / checkpoint.STATE_FILE)
    before = folder_bytes(out)
    # the dry run says the resume's line: it passed these, checked only once the optimizers were loaded
    for dry_run in (["--dry-run"], []):
        child = srfeat_cli("train", config, "--out", out, "--resume", "--max-steps", "4", "--no-progress", *dry_run)
        error = one_error_line(child)
        assert "the generator optimizer state" in error and message in error, error
        assert "damaged or edited" in error
    assert folder_bytes(out) == before


def test_a_checkpoint_over_a_file_size_limit_is_one_line_and_keeps_the_previous(
    two_step_run: tuple[Path, Path],
) -> None:
    # `ulimit -f` (batch systems set one): torch.save's EFBIG came out as "RuntimeError: ... unexpected
    # pos", a traceback
    out, config = two_step_run
    limit = (out / checkpoint.STATE_FILE).stat().st_size * 2 // 3  # above every other file the run writes
    assert limit > (out / checkpoint.LATEST_GENERATOR).stat().st_size

    child = srfeat_cli(
        "train", config, "--out", out, "--resume", "--max-steps", "4", "--no-progress", file_size_limit=limit
    )
    error = one_error_line(child)
    assert "cannot write the checkpoint" in error and "state.pt" in error and "ulimit -f" in error, error
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["step"] == 2, "step 4's checkpoint failed; step 2's stays"
    latest = load_file(str(out / checkpoint.LATEST_GENERATOR))
    assert all(torch.equal(latest[key], state["generator"][key]) for key in latest), "both files from one step"
    assert temporaries(out) == []


def in_a_small_tmpfs(tmp_path: Path, size: str, python: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -c PYTHON ARGS` with a `size` tmpfs mounted at tmp_path/small, in a private mount namespace;
    its exit status is the command's, and its stdout ends with `ls -A` of tmp_path/small/run."""
    namespace = ["unshare", "--user", "--map-root-user", "--mount"]
    if shutil.which("unshare") is None or subprocess.run([*namespace, "true"], check=False).returncode:
        pytest.skip("no unprivileged mount namespaces here (unshare)")
    small = tmp_path / "small"
    small.mkdir()
    command = shlex.join([sys.executable, "-c", python, *map(str, args)])
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(small))} && {command}; echo rc=$?; echo FILES; "
        f"ls -A {shlex.quote(str(small))}/run"
    )
    child = subprocess.run(
        [*namespace, "sh", "-c", script],
        check=False,
        cwd=REPO,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    returncode = int(child.stdout.split("rc=")[-1].split()[0])  # the command's, not the shell's
    return subprocess.CompletedProcess(child.args, returncode, child.stdout, child.stderr)


# A quota: the file system has space (the free-space check passes), the user's share of it has none.
OVER_QUOTA = textwrap.dedent(
    """
    import sys
    import srfeat.files
    from srfeat.cli import main

    srfeat.files.free_bytes = lambda folder: 1 << 40  # what `df` says under a quota
    sys.exit(main(["train", *sys.argv[1:]]))
    """
)


def test_a_quota_that_fills_during_a_checkpoint_is_one_line_and_keeps_the_previous(folders, tmp_path: Path) -> None:
    # ENOSPC / EDQUOT inside torch.save came out as "RuntimeError: ... unexpected pos", a traceback
    train_dir, _ = folders
    out = tmp_path / "small" / "run"
    values = tiny_values(train_dir, None, out)
    values["train"].update({"max_steps": 4, "checkpoint_every": 2})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    # room for one checkpoint (about 200 kB) and the logs, not for a second one's temporaries beside it
    child = in_a_small_tmpfs(tmp_path, "300k", OVER_QUOTA, config, "--no-progress")
    error = one_error_line(child)
    assert "not enough disk space to write state.pt" in error, error
    files = child.stdout.split("FILES\n", 1)[1].split()
    assert not [name for name in files if ".tmp" in name], files
    assert {checkpoint.STATE_FILE, checkpoint.LATEST_GENERATOR} <= set(files), files


# The disk fills up just before the plot is drawn (another job writing to it).
FULL_AT_PLOT = textwrap.dedent(
    """
    import os, sys
    from srfeat.cli import main
    from srfeat.training import run_log

    plot = run_log.RunLog.plot

    def fill_then_plot(self):
        descriptor = os.open(os.path.join(sys.argv[1], "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while os.write(descriptor, bytes(4096)):
                pass
        except OSError:
            pass
        os.close(descriptor)
        plot(self)

    run_log.RunLog.plot = fill_then_plot
    sys.exit(main(["train", *sys.argv[2:]]))
    """
)


def test_a_full_disk_while_plotting_is_one_line_and_leaves_no_temporary(folders, tmp_path: Path) -> None:
    # savefig's ENOSPC was an OSError traceback mid-run (and a half-written .training.png.tmp.png)
    train_dir, _ = folders
    out = tmp_path / "small" / "run"
    values = tiny_values(train_dir, None, out)
    values["train"].update({"max_steps": 1, "checkpoint_every": 1000})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    child = in_a_small_tmpfs(tmp_path, "1m", FULL_AT_PLOT, tmp_path / "small", config, "--no-progress")
    error = one_error_line(child)
    assert "not enough disk space to write training.png" in error, error
    files = child.stdout.split("FILES\n", 1)[1].split()
    assert trainer.PLOT_FILE not in files and not [name for name in files if ".tmp" in name], files
    assert checkpoint.STATE_FILE in files, "the run's checkpoint, saved before the plot, stays"


def test_a_generator_whose_validation_output_overflows_stops_the_run_named(
    folders, tmp_path: Path, monkeypatch
) -> None:
    """Weights under the divergence bound can still overflow to inf at validation (BatchNorm on its running
    statistics); that output was clamped, rounded and scored as a plain PSNR, and a first validation saved
    those weights as generator_best."""
    train_dir, validation_dir = folders
    steps = 0

    class OverflowingStep(build.PretrainStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            nonlocal steps
            steps += 1
            losses = super().__call__(lr, hr)
            if steps == 3:
                with torch.no_grad():
                    for parameter in self.generator.parameters():
                        if parameter.dim() == 4:  # the convolutions: large, finite, under 1e6
                            parameter.fill_(1e5)
            return losses

    monkeypatch.setattr(build, "PretrainStep", OverflowingStep)
    out = tmp_path / "run"
    overrides = ["train.max_steps=6", "validation.every=1", "train.checkpoint_every=2"]
    config = tiny_config(train_dir, validation_dir, out, overrides=overrides)
    with pytest.raises(trainer.TrainingDiverged) as error:
        train_in_process(config, out)
    message = str(error.value)
    assert "output for validation image face holds NaN or inf at step 3" in message, message
    assert "last good checkpoint (step 2)" in message and "\n" not in message
    validated = [line for line in (out / trainer.METRICS_FILE).read_text().splitlines() if '"validation"' in line]
    assert len(validated) == 2, "steps 1 and 2 validated; step 3's output is no number"
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["step"] == 2
    best = load_file(str(out / checkpoint.BEST_GENERATOR))
    assert all(value.abs().max() < 1e5 for value in best.values()), "generator_best holds no overflowing weights"


def test_a_resume_that_changes_adams_betas_trains_with_them(two_step_run: tuple[Path, Path], tmp_path: Path) -> None:
    # load_state_dict put the saved betas back: the change was named in a warning and written to
    # config.yaml, yet the run trained on with the old beta1
    out, config = two_step_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for folder, beta1 in ((out, "0.9"), (copy, "0.5")):
        child = srfeat_cli(
            "train", config, "--out", folder, "--resume", "--max-steps", "3", "--no-progress", f"optim.beta1={beta1}"
        )
        assert child.returncode == 0, child.stderr
    same, changed = (checkpoint.load_state(folder / checkpoint.STATE_FILE) for folder in (out, copy))
    assert changed["optimizers"]["generator"]["param_groups"][0]["betas"] == (0.5, 0.999)
    assert any(not torch.equal(same["generator"][key], changed["generator"][key]) for key in same["generator"])


class InterruptedFile(io.BytesIO):
    """A file whose third write is cut by a second Ctrl-C (or SIGTERM: the CLI's `Terminated`)."""

    def __init__(self, interrupt: BaseException) -> None:
        super().__init__()
        self.interrupt, self.writes = interrupt, 0

    def write(self, data: Any, /) -> int:
        self.writes += 1
        if self.writes == 3:
            raise self.interrupt
        return super().write(data)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Terminated()], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_in_the_middle_of_writing_the_state_stops_as_itself(tmp_path: Path, interrupt) -> None:
    # torch's archive writer, closing on it, raised "RuntimeError: ... unexpected pos" instead: a traceback
    # where a second Ctrl-C or SIGTERM during a checkpoint stops at once
    state = {"generator": {"weight": torch.zeros(1000)}, "step": 1}
    with pytest.raises(type(interrupt)):
        checkpoint.state_file(state, tmp_path / checkpoint.STATE_FILE).write(InterruptedFile(interrupt))


def address_space_after_import() -> int:
    """The bytes of address space a Python that imported torch and srfeat's training holds (VmSize)."""
    code = (
        "import torch, srfeat.training.trainer\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmSize')))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=CHILD_ENV)
    return int(child.stdout) * 1024


def test_a_state_whose_config_is_an_alias_bomb_resumes_in_bounded_memory(two_step_run: tuple[Path, Path]) -> None:
    # the resume compared the state's config with plain yaml.safe_load: 700 bytes of aliases stood for 10^8
    # keys, which the comparison walked (hours, and gigabytes) before the run went on
    out, config = two_step_run
    levels = ["l0: &l0 {" + ", ".join(f"k{j}: {j}" for j in range(10)) + "}"]
    levels += [f"l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(10)) + "}" for i in range(1, 9)]
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    state["config"] = "\n".join(levels)
    torch.save(state, out / checkpoint.STATE_FILE)
    limit = address_space_after_import() + 2**30
    child = srfeat_cli(
        "train", config, "--out", out, "--resume", "--max-steps", "3", "--no-progress", memory_limit=limit
    )
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr[-2000:]
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 3


@pytest.mark.parametrize(("damage", "message"), [("none", "no training state at"), ("cut", "cut short or damaged")])
def test_a_dry_run_of_a_resume_reads_the_state(two_step_run: tuple[Path, Path], damage: str, message: str) -> None:
    # it printed the config and exited 0 whatever state.pt was, even with no run folder: the resume then refused
    out, config = two_step_run
    if damage == "none":
        out = out.parent / "never-ran"
    else:
        state = out / checkpoint.STATE_FILE
        state.write_bytes(state.read_bytes()[:20_000])
    error = one_error_line(srfeat_cli("train", config, "--out", out, "--resume", "--dry-run"))
    assert message in error and "state.pt" in error, error
    if damage == "cut":  # it was "(OSError: [Errno 22] Invalid argument)", or torch's "... internal miniz error ..."
        assert "it is a zip archive cut short or damaged" in error and "copy it again if it is a copy" in error, error


@pytest.mark.parametrize("override", ["model.num_features=16", "model.num_blocks=3", "model.scale=2"])
def test_a_dry_run_of_a_resume_refuses_a_state_of_other_networks_as_the_resume_does(
    two_step_run: tuple[Path, Path], override: str
) -> None:
    # the dry run read the state but not its tensors' shapes: it passed, and the resume then refused
    out, config = two_step_run
    before = folder_bytes(out)
    dry = one_error_line(srfeat_cli("train", config, "--out", out, "--resume", "--dry-run", override), only=True)
    # and the resume said first that the changed config "continues" the run, then refused it
    resumed = one_error_line(
        srfeat_cli("train", config, "--out", out, "--resume", "--no-progress", override), only=True
    )
    assert dry == resumed and f"{out / checkpoint.STATE_FILE}: the generator" in dry, (dry, resumed)
    # more blocks than the run's were "the file is damaged": a good run's state, which the user would give up
    assert "set the model section as in that run" in dry and "damaged" not in dry, dry
    assert folder_bytes(out) == before


def test_a_dry_run_of_a_resume_refuses_random_states_the_resume_cannot_restore(
    two_step_run: tuple[Path, Path],
) -> None:
    # the dry run passed them; the resume refused them once its networks were built
    out, config = two_step_run
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    state["rng"]["python"] = [1, 2, 3]
    torch.save(state, out / checkpoint.STATE_FILE)
    before = folder_bytes(out)
    dry = one_error_line(srfeat_cli("train", config, "--out", out, "--resume", "--dry-run"), only=True)
    resumed = one_error_line(srfeat_cli("train", config, "--out", out, "--resume", "--no-progress"), only=True)
    assert dry == resumed and "its random states cannot be restored" in dry, (dry, resumed)
    assert folder_bytes(out) == before


@pytest.mark.parametrize("saved_config", ["[not, a, mapping]", "key: [unclosed", 42])
def test_a_state_whose_config_cannot_be_read_is_warned_of(two_step_run: tuple[Path, Path], saved_config) -> None:
    # the resume went on without a word: a config changed since the run could not be named, and was not
    out, config = two_step_run
    state = torch.load(out / checkpoint.STATE_FILE, weights_only=True)
    state["config"] = saved_config
    torch.save(state, out / checkpoint.STATE_FILE)
    for extra in (["--dry-run"], ["--max-steps", "3", "--no-progress"]):
        child = srfeat_cli("train", config, "--out", out, "--resume", *extra)
        warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING")]
        assert child.returncode == 0 and len(warnings) == 1, child.stderr
        assert "holds a config that cannot be read (damaged or edited)" in warnings[0], warnings


def test_a_dry_run_of_a_good_resume_passes(two_step_run: tuple[Path, Path]) -> None:
    out, config = two_step_run
    child = srfeat_cli("train", config, "--out", out, "--resume", "--dry-run")
    assert child.returncode == 0 and "stage: 1" in child.stdout, child.stderr


def train_running_out_of_memory(
    name: str, when: str, *args: str | Path, module: str = "loop"
) -> subprocess.CompletedProcess[str]:
    return srfeat_cli_out_of_memory(f"srfeat.training.{module}", name, when, "train", *args, "--no-progress")


def test_a_step_out_of_memory_is_one_line_that_says_what_to_lower_and_keeps_the_checkpoint(
    two_step_run: tuple[Path, Path],
) -> None:
    # it was the allocator's RuntimeError with a traceback through the generator's layers
    out, config = two_step_run
    child = train_running_out_of_memory(
        "TrainingLoop._step", "args[0].progress.step == 3", config, "--out", out, "--resume", "--max-steps", "6"
    )
    error = one_error_line(child)
    assert error.startswith("ERROR: out of memory on cpu in training step 4: 2 patches of 32x32 a step is too many "), (
        error
    )
    assert "lower train.batch_size or data.hr_patch_size; the last good checkpoint (step 2) is in" in error, error
    assert f"once changed, continue with `srfeat train {out / 'config.yaml'} --out {out} --resume`" in error, error
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 2, "step 3's weights were not saved"


@pytest.mark.parametrize("stage", [1, 2])
def test_networks_that_do_not_fit_on_the_device_are_one_line_and_write_nothing(
    stage: int, folders, tmp_path: Path
) -> None:
    # it was a traceback through Module.to (the allocator's RuntimeError; a full GPU's OutOfMemoryError)
    train_dir, validation_dir = folders
    overrides = ["train.max_steps=2"]
    if stage == 2:
        init = tiny_generator_file(tmp_path / "stage1.safetensors")
        overrides += [f"train.init_generator={init}", "data.hr_patch_size=16"]
    config = tiny_config(train_dir, validation_dir, tmp_path / "run", stage, overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    child = train_running_out_of_memory("RunBuilder._prepare", "True", path, module="build")
    networks = "the generator" if stage == 1 else "the generator, discriminators and VGG19"
    assert one_error_line(child) == (
        f"ERROR: out of memory on cpu building {networks}: use smaller networks (the model section) or "
        f"train.device=cpu; nothing was written to {tmp_path / 'run'}"
    )
    assert not (tmp_path / "run").exists()


def test_a_validation_out_of_memory_names_the_validation_images(folders, tmp_path: Path) -> None:
    train_dir, validation_dir = folders
    config = tiny_config(train_dir, validation_dir, tmp_path / "run", 1, ["train.max_steps=2"])
    path = tmp_path / "tiny.yaml"
    path.write_text(config.to_yaml())
    child = train_running_out_of_memory("validate_generators", "True", path)
    error = one_error_line(child)
    assert error.startswith(
        "ERROR: out of memory on cpu in the validation at step 2: the images of validation.dir ("
    ), error
    assert f"are upscaled whole: use smaller ones; no checkpoint was saved in {tmp_path / 'run'}" in error, error
    # the new run saved nothing, and leaves nothing: the same command runs again without --overwrite
    assert error.endswith("once changed, run again"), error
    assert not (tmp_path / "run").exists()
