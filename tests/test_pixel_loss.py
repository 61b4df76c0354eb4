"""model.pixel_loss: stage 1's pixel loss as the paper's mean squared error or as the mean absolute error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_error_line, srfeat_cli
from training_helpers import tiny_config, train_in_process

from srfeat.errors import ConfigError
from srfeat.losses import luma, pixel_loss
from srfeat.training import build
from srfeat.training.config import config_from_dict
from srfeat.training.steps import PretrainStep


def test_l1_measures_the_rgb_and_the_luma_by_their_mean_absolute_error() -> None:
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert pixel_loss(sr, hr, distance="l1") == (sr - hr).abs().mean()
    torch.testing.assert_close(
        pixel_loss(sr, hr, 4.0, distance="l1"), (sr - hr).abs().mean() + 4.0 * (luma(sr) - luma(hr)).abs().mean()
    )
    assert pixel_loss(sr, hr) == F.mse_loss(sr, hr)  # the paper's loss by default


@pytest.mark.parametrize("distance, measure", [("mse", F.mse_loss), ("l1", F.l1_loss)])
def test_a_stage1_run_trains_with_the_configured_distance_and_luma_weight(
    folders, tmp_path, monkeypatch, distance: str, measure
) -> None:
    """The distance and the luma weight reach the step a run builds, and its logged loss is the one they make."""
    train_dir, validation_dir = folders
    seen: list[tuple[str, float, float, float]] = []

    class RecordingStep(PretrainStep):
        def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
            self.generator.train()  # as the step runs it: BatchNorm on its running statistics (generator_bn_eval)
            with torch.no_grad():
                sr = self.generator(lr).float()
            losses = super().__call__(lr, hr)
            expected = measure(sr, hr) + 2.5 * measure(luma(sr), luma(hr))
            seen.append((self.distance, self.luma_weight, float(losses["loss/pixel"]), float(expected)))
            return losses

    monkeypatch.setattr(build, "PretrainStep", RecordingStep)
    out = tmp_path / "run"
    overrides = [f"model.pixel_loss={distance}", "model.luma_loss_weight=2.5"]
    train_in_process(tiny_config(train_dir, validation_dir, out, overrides=overrides), out)
    assert len(seen) == 4
    for used, weight, logged, expected in seen:
        assert (used, weight) == (distance, 2.5)
        assert logged == pytest.approx(expected, rel=1e-5)


def test_mse_is_the_default_and_stage2_refuses_another_distance() -> None:
    assert config_from_dict({"data": {"train_dirs": ["images"]}}).model.pixel_loss == "mse"
    with pytest.raises(ConfigError, match="model.pixel_loss chooses .*stage 2 does not use: leave it at mse"):
        config_from_dict({"stage": 2, "data": {"train_dirs": ["images"]}}, ["model.pixel_loss=l1"])


def test_the_cli_refuses_an_unknown_distance_in_one_line(tmp_path) -> None:
    child = srfeat_cli("train", "configs/dev/stage1.yaml", "--out", tmp_path / "run", "model.pixel_loss=l2")
    line = one_error_line(child)
    assert "model.pixel_loss" in line and "l2" in line
    assert not (tmp_path / "run").exists()
