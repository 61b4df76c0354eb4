"""model.luma_loss_weight: stage 1's pixel MSE plus a weighted MSE of the luma the benchmarks score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_error_line, srfeat_cli

from srfeat.errors import ConfigError
from srfeat.losses import luma, pixel_loss
from srfeat.metrics.psnr_ssim import rgb_to_y
from srfeat.training.config import config_from_dict


def luma_of_the_evaluation(images: torch.Tensor) -> torch.Tensor:
    """Y in [0, 1] (offset of 16 removed) as the evaluation computes it, image by image, in float64."""
    y = [rgb_to_y(image.permute(1, 2, 0).double().numpy()) for image in images]
    return torch.from_numpy((np.stack(y)[:, None] - 16.0) / 255.0)


def test_luma_is_the_evaluations_y() -> None:
    images = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(luma(images), luma_of_the_evaluation(images))


def test_the_loss_adds_the_weighted_mse_of_the_luma() -> None:
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    rgb = F.mse_loss(sr, hr)
    assert pixel_loss(sr, hr) == rgb  # the paper's loss by default
    luma_mse = F.mse_loss(luma_of_the_evaluation(sr), luma_of_the_evaluation(hr)).float()
    torch.testing.assert_close(pixel_loss(sr, hr, 4.0), rgb + 4.0 * luma_mse)


def test_an_error_the_luma_cannot_see_costs_only_its_rgb_mse() -> None:
    """A change of colour at constant luma (the direction orthogonal to the luma weights in R and B)
    leaves the luma term at 0; a grey change of the same size is weighed by it."""
    hr = torch.full((1, 3, 4, 4), 0.5)
    weights = torch.tensor([65.481, 128.553, 24.966])
    colour = torch.tensor([weights[2], 0.0, -weights[0]])
    colour = 0.01 * colour / colour.norm()
    grey = torch.full((3,), 0.01 / 3**0.5)
    at_constant_luma = hr + colour.view(1, 3, 1, 1)
    brighter = hr + grey.view(1, 3, 1, 1)
    torch.testing.assert_close(pixel_loss(at_constant_luma, hr, 4.0), pixel_loss(at_constant_luma, hr))
    assert pixel_loss(brighter, hr, 4.0) > 3 * pixel_loss(brighter, hr)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.luma_loss_weight=-1"], "model.luma_loss_weight must be 0 (the paper's loss) or more, got -1.0"),
        (["model.luma_loss_weight=nan"], "model.luma_loss_weight must be a finite number"),
        (["stage=2", "model.luma_loss_weight=1"], "stage 2 does not use: leave it at 0 in stage 2"),
    ],
)
def test_a_weight_that_cannot_work_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict({"data": {"train_dirs": ["images"]}}, overrides)


def test_the_paper_loss_is_the_default_and_stage2_takes_zero() -> None:
    assert config_from_dict({"data": {"train_dirs": ["images"]}}).model.luma_loss_weight == 0.0
    stage2 = config_from_dict({"stage": 2, "data": {"train_dirs": ["images"]}}, ["model.luma_loss_weight=0"])
    assert stage2.model.luma_loss_weight == 0.0


def test_the_cli_refuses_a_negative_weight_in_one_line(tmp_path) -> None:
    child = srfeat_cli("train", "configs/dev/stage1.yaml", "--out", tmp_path / "run", "model.luma_loss_weight=-0.5")
    assert "model.luma_loss_weight must be 0 (the paper's loss) or more, got -0.5" in one_error_line(child)
    assert not (tmp_path / "run").exists()
