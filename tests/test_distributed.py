"""torchrun with 2 CPU processes (gloo) trains like one process with the same global batch.

BatchNorm statistics are made global across processes (train.sync_batchnorm, on by default;
on CPUs by CrossProcessBatchNorm2d, as nn.SyncBatchNorm runs only on GPUs), so the two runs
agree up to float rounding.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from training_helpers import tiny_generator_file, tiny_values, wait_for_logged_steps, write_image_folders

from srfeat.training import checkpoint
from srfeat.training.config import config_from_dict
from srfeat.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
# Two CPU processes under torchrun, one thread each (the 2-core machine has no more to give).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
TORCHRUN_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

ENTRY = textwrap.dedent(
    """
    import sys
    from srfeat.training.config import load_config
    from srfeat.training.trainer import train

    train(load_config(sys.argv[1]), out_dir=sys.argv[2], show_progress=False)
    """
)


@pytest.mark.parametrize("stage", [1, 2])
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path, stage: int) -> None:
    train_dir, _ = write_image_folders(tmp_path / "images")
    values = tiny_values(train_dir, None, tmp_path / "unused", stage)
    values["data"]["repeat"] = 4  # 12 items: 3 global batches of 4 per epoch
    # Stage 2 compares after 2 steps: from there on the tiny GAN is chaotic (Adam turns float
    # rounding in near-zero gradients into whole steps; a 1e-7 change of the initial weights
    # grows to 1e-4 by step 3 in a single process too). Step 1 agrees to 1e-8, step 2 to 1e-6.
    steps = 4 if stage == 1 else 2
    values["train"].update(max_steps=steps, checkpoint_every=100, log_every=2)
    chaotic_weights = 0
    if stage == 2:
        values["train"]["init_generator"] = str(tiny_generator_file(tmp_path / "stage1.safetensors"))
        # With the authors' order (discriminators first) the generator's second step follows a
        # discriminator that took Adam's first, sign-like step: in a single process, 1e-7 on the
        # initial weights then moves 45% of the generator's head by more than the tolerance.
        # The order only swaps two calls of the same code, so DDP is compared in the other one.
        # Adam moves a weight by lr * g / (|g| + eps): the authors' epsilons (1e-10, 1e-7) turn
        # rounding differences of small gradients into large parts of a step; 1e-6 does not.
        values["train"]["update_order"] = "generator_first"
        values["optim"].update(eps=1e-6, discriminator_eps=1e-6)
        # A ReLU in VGG19 that one run's rounding keeps at 0 and the other's just above it sends a
        # whole channel's gradient to the feature discriminator's first conv in one run only: a
        # few such weights (2 of 36,864 here) may differ by up to two steps.
        chaotic_weights = 8

    single = dict(values, train=dict(values["train"], batch_size=4))
    train(config_from_dict(single), out_dir=tmp_path / "single", show_progress=False)

    per_rank = dict(values, train=dict(values["train"], batch_size=2))
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(per_rank))
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    command = [*TORCHRUN, str(entry), str(config_path), str(tmp_path / "ddp")]
    result = subprocess.run(
        command, cwd=REPO, env=TORCHRUN_ENV, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]

    one = checkpoint.load_state(tmp_path / "single" / checkpoint.STATE_FILE)
    two = checkpoint.load_state(tmp_path / "ddp" / checkpoint.STATE_FILE)
    assert one["step"] == two["step"] == steps and two["world_size"] == 2
    networks = [("generator", one["generator"], two["generator"])]
    networks += [(name, one["discriminators"][name], two["discriminators"][name]) for name in one["discriminators"]]
    assert len(networks) == (1 if stage == 1 else 3)
    for name, expected, actual in networks:
        assert expected.keys() == actual.keys()
        for key in expected:
            if not expected[key].is_floating_point():
                assert torch.equal(actual[key], expected[key]), f"{name}.{key}"
                continue
            # 5% of one Adam step (lr 1e-3); a wrong average or per-process BatchNorm
            # statistics move many weights by whole steps.
            off = (actual[key] - expected[key]).abs() > 5e-5 + 1e-4 * expected[key].abs()
            assert int(off.sum()) <= chaotic_weights, f"{name}.{key}: {int(off.sum())} of {off.numel()} weights differ"
            assert (actual[key] - expected[key]).abs().max() <= 2 * steps * 1e-3, f"{name}.{key}"

    # The logged losses are the global batch's, as the single process logs them: they were rank 0's
    # share of it alone (10% off in stage 1 here), so the curves of runs on 1 and on W GPUs differed.
    logged = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("single", "ddp")
    ]
    assert [r["step"] for r in logged[0]] == [r["step"] for r in logged[1]] == list(range(2, steps + 1, 2))
    for one_record, two_record in zip(*logged, strict=True):
        for key in (key for key in one_record if key.startswith("loss/")):
            assert math.isclose(two_record[key], one_record[key], rel_tol=1e-4), (key, one_record, two_record)


def test_sigterm_to_torchrun_stops_both_ranks_at_rank_0s_step_with_a_checkpoint(tmp_path) -> None:
    """A scheduler's SIGTERM reaches the launcher, which forwards it: the ranks agree on a step."""
    train_dir, _ = write_image_folders(tmp_path / "images")
    values = tiny_values(train_dir, None, tmp_path / "ddp")
    values["train"].update(max_steps=5000, epochs=100000, checkpoint_every=1000, log_every=1)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(values))
    command = [*TORCHRUN, "-m", "srfeat.cli", "train", str(config_path), "--no-progress"]
    launcher = subprocess.Popen(
        command, cwd=REPO, env=TORCHRUN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_logged_steps(launcher, tmp_path / "ddp", 3)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    steps = {int(step) for step in re.findall(r"interrupted \(SIGTERM\) at step (\d+): checkpoint saved", stderr)}
    assert len(steps) == 1, stderr[-3000:]
    (stopped_at,) = steps
    assert stderr.count("interrupted (SIGTERM)") == 2, "both ranks stopped themselves"
    assert stopped_at % 10 == 0, "DDP ranks read rank 0's clock and signal every 10 steps"
    state = checkpoint.load_state(tmp_path / "ddp" / checkpoint.STATE_FILE)
    assert state["step"] == stopped_at and state["world_size"] == 2


def test_under_torchrun_rank_0_alone_reports_the_run(tmp_path) -> None:
    """Each rank printed the result line (rank 1's without the validation) and the start-up lines."""
    train_dir, validation_dir = write_image_folders(tmp_path / "images")
    values = tiny_values(train_dir, validation_dir, tmp_path / "ddp")
    values["train"].update(max_steps=2)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(values))
    command = [*TORCHRUN, "-m", "srfeat.cli", "train", str(config_path), "--no-progress"]
    result = subprocess.run(
        command, check=False, cwd=REPO, env=TORCHRUN_ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("stage 1: 2 steps")]
    assert len(summaries) == 1 and "psnr" in summaries[0], result.stdout
    validations = [line for line in result.stderr.splitlines() if "step 2: validation" in line]
    assert len(validations) == 1, result.stderr[-3000:]
