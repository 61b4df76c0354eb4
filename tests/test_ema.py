"""EMA of the generator's weights (train.ema_decay) and gradient-norm clipping (train.grad_clip_norm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_helpers import (
    assert_resume_matches_an_uninterrupted_run,
    state_tensors,
    tiny_config,
    tiny_values,
    train_in_process,
)

from srfeat.training import build, checkpoint, trainer
from srfeat.training.steps import PretrainStep, optimizer_step

REPO = Path(__file__).resolve().parents[1]
DECAY = 0.6  # far from 1, so that four steps move the average well away from the weights


pytestmark = pytest.mark.usefixtures("one_thread")


def records_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]


def test_ema_weights_are_the_running_average_and_validation_scores_them(folders, tmp_path, monkeypatch) -> None:
    train_dir, validation_dir = folders
    after_steps: list[dict[str, torch.Tensor]] = []

    class RecordingStep(PretrainStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            losses = super().__call__(lr, hr)
            after_steps.append({k: v.detach().clone() for k, v in self.generator.state_dict().items()})
            return losses

    monkeypatch.setattr(build, "PretrainStep", RecordingStep)
    out = tmp_path / "run"
    train_in_process(tiny_config(train_dir, validation_dir, out, overrides=[f"train.ema_decay={DECAY}"]), out)

    # torch's AveragedModel: the first update copies, then ema = decay * ema + (1 - decay) * weights
    expected: list[dict[str, torch.Tensor]] = []
    for weights in after_steps:
        previous = expected[-1] if expected else weights
        expected.append(
            {k: DECAY * previous[k] + (1 - DECAY) * w if w.is_floating_point() else w for k, w in weights.items()}
        )
    ema = load_file(str(out / checkpoint.EMA_GENERATOR))
    latest = load_file(str(out / checkpoint.LATEST_GENERATOR))
    assert ema.keys() == latest.keys()
    for key, value in ema.items():
        if value.is_floating_point():  # parameters and BatchNorm running statistics alike
            torch.testing.assert_close(value, expected[-1][key], rtol=1e-5, atol=1e-6, msg=key)
    assert any(not torch.equal(ema[k], latest[k]) for k in ema if "running_mean" in k)
    assert any(not torch.equal(ema[k], latest[k]) for k in ema if k.endswith("weight"))

    validations = [r for r in records_of(out) if r["kind"] == "validation"]
    assert [r["step"] for r in validations] == [2, 4]
    assert all({"psnr", "ssim", "raw_psnr", "raw_ssim"} <= r.keys() for r in validations)
    assert any(r["psnr"] != r["raw_psnr"] for r in validations)
    best = max(validations, key=lambda r: r["psnr"])  # generator_best: the best validated EMA weights
    saved_best = load_file(str(out / checkpoint.BEST_GENERATOR))
    for key, value in saved_best.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[best["step"] - 1][key], rtol=1e-5, atol=1e-6, msg=key)
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["best_psnr"] == best["psnr"]


@pytest.mark.parametrize("stage", [1, 2])
def test_stop_and_resume_with_ema_and_clipping_matches_an_uninterrupted_run(folders, tmp_path, stage: int) -> None:
    train_dir, _ = folders
    assert_resume_matches_an_uninterrupted_run(
        train_dir, tmp_path, stage, [f"train.ema_decay={DECAY}", "train.grad_clip_norm=0.05"]
    )
    assert any(key.startswith("ema.") for key in state_tensors(tmp_path / "split"))
    norms = [r["grad_norm/generator"] for r in records_of(tmp_path / "split") if r["kind"] == "train"]
    assert len(norms) == 4 and all(norm > 0 for norm in norms)


def test_clipping_bounds_the_gradient_norm_of_a_step() -> None:
    network = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(network.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten().clone() for p in network.parameters()])
    loss = (network(torch.full((2, 4), 10.0)) ** 2).sum()
    norm = optimizer_step(optimizer, loss, (network, 0.5))
    after = torch.cat([p.detach().flatten() for p in network.parameters()])
    assert norm is not None and norm.item() > 0.5  # the norm before clipping
    # SGD at lr 1 moves the weights by exactly the (clipped) gradient
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(0.5, rel=1e-5)


def test_ema_off_writes_no_average_and_zero_is_off(folders, tmp_path) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    train_in_process(
        tiny_config(train_dir, validation_dir, out, overrides=["train.ema_decay=0", "train.max_steps=2"]), out
    )
    assert not (out / checkpoint.EMA_GENERATOR).exists()
    assert "ema" not in checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert all("raw_psnr" not in r and "grad_norm/generator" not in r for r in records_of(out))


def test_cli_run_with_ema_leaves_an_upscaler_checkpoint(folders, tmp_path) -> None:
    train_dir, validation_dir = folders
    out = tmp_path / "run"
    values = tiny_values(train_dir, validation_dir, out)
    values["train"].update({"ema_decay": 0.9, "max_steps": 2, "deterministic": False})
    config = tmp_path / "ema.yaml"
    config.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [sys.executable, "-m", "srfeat.cli", "train", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (out / checkpoint.EMA_GENERATOR).is_file()
    refused = subprocess.run(
        [sys.executable, "-m", "srfeat.cli", "train", str(config), "train.ema_decay=1", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0 and "train.ema_decay must be in [0, 1)" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("damage", ["missing tensor", "nan"])
def test_a_broken_average_in_the_state_is_refused_in_one_line(folders, tmp_path, damage: str) -> None:
    from srfeat.errors import WeightsError

    train_dir, _ = folders
    out = tmp_path / "run"
    train_in_process(
        tiny_config(train_dir, None, out, overrides=[f"train.ema_decay={DECAY}", "train.max_steps=2"]), out
    )
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    averaged = state["ema"]["averaged"]
    key = next(k for k in averaged if k.endswith("weight"))
    if damage == "missing tensor":
        del averaged[key]
    else:
        averaged[key] = torch.full_like(averaged[key], float("nan"))
    del state["format"]
    checkpoint.save_state(state, out / checkpoint.STATE_FILE)
    resumed = tiny_config(train_dir, None, out, overrides=[f"train.ema_decay={DECAY}", "train.max_steps=4"])
    with pytest.raises(WeightsError, match="the EMA average( lacks |'s weights are not finite)") as error:
        train_in_process(resumed, out, resume=True)
    assert "\n" not in str(error.value)
