"""`srfeat eval`: the protocol's reference numbers, bad files, the `hr` model, checkpoints, outputs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples

from srfeat.archs.generator import SRFeatGenerator
from srfeat.commands import eval as eval_command
from srfeat.data.datasets import bicubic_downscale, bicubic_upscale, mod_crop
from srfeat.data.io import write_png
from srfeat.evaluation import evaluate, make_upscaler, niqe_available
from srfeat.metrics.psnr_ssim import psnr
from srfeat.weights import save_generator


def run_eval(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return eval_command.run(parser.parse_args(list(argv)))


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """A small benchmark folder of three photos (big enough for NIQE's 96 px blocks)."""
    folder = tmp_path / "Photos"
    write_png(folder / "astronaut.png", samples.astronaut()[::2, ::2])  # 256x256
    write_png(folder / "chelsea.png", samples.chelsea()[:150, :223])  # odd size: mod-cropped
    write_png(folder / "coffee.png", samples.coffee()[::2, ::2])
    return folder


def test_bicubic_gives_the_reference_protocol_numbers(datasets_dir: Path) -> None:
    # The values the reference (BasicSR) protocol gives on these copies (datasets/README.md).
    folders = [datasets_dir / name for name in ("Set5", "Set14", "BSD100")]
    result = evaluate(["bicubic"], folders, metrics=["psnr", "ssim"], device="cpu")
    scores = {row.dataset: row.scores for row in result.results}
    expected = {"Set5": (28.4314, 0.81127), "Set14": (26.0918, 0.70496), "BSD100": (25.9634, 0.66821)}
    for dataset, (expected_psnr, expected_ssim) in expected.items():
        assert scores[dataset]["psnr"] == pytest.approx(expected_psnr, abs=0.005), dataset
        assert scores[dataset]["ssim"] == pytest.approx(expected_ssim, abs=0.0002), dataset
    assert [row.images for row in result.results] == [5, 14, 100]


def test_bad_files_are_named_and_the_good_ones_reported(
    photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (photos / "chelsea.png").read_bytes()
    (photos / "broken.png").write_bytes(good[: len(good) // 3])
    (photos / "readme.txt").write_text("these are photos\n")
    json_path = tmp_path / "scores.json"
    with caplog.at_level(logging.WARNING):
        assert (
            run_eval(
                "--model",
                "bicubic",
                "--data",
                str(photos),
                "--metrics",
                "psnr",
                "ssim",
                "--per-image",
                "--json",
                str(json_path),
                "--device",
                "cpu",
            )
            == 0
        )
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("broken.png" in message for message in warnings)
    assert any("readme.txt" in message for message in warnings)
    table = capsys.readouterr().out
    assert "| bicubic | Photos | 3 |" in table
    for name in ("astronaut", "chelsea", "coffee"):
        assert f"| Photos | {name} | bicubic |" in table
    assert "broken" not in table and "readme" not in table
    records = json.loads(json_path.read_text())
    assert len(records) == 1 and records[0]["model"] == "bicubic" and records[0]["dataset"] == "Photos"
    per_image = {entry["image"]: entry["psnr"] for entry in records[0]["per_image"]}
    assert sorted(per_image) == ["astronaut", "chelsea", "coffee"]
    assert records[0]["psnr"] == pytest.approx(np.mean(list(per_image.values())))
    # The chelsea score is the protocol computed by hand: mod-crop, bicubic down and up, Y PSNR.
    hr = mod_crop(samples.chelsea()[:150, :223], 4)
    assert per_image["chelsea"] == pytest.approx(psnr(bicubic_upscale(bicubic_downscale(hr, 4), 4), hr, crop_border=4))


def test_hr_model_has_no_reference_scores(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = ["psnr", "ssim", "niqe"] if niqe_available() else ["psnr", "ssim"]
    json_path = tmp_path / "scores.json"
    assert (
        run_eval(
            "--model",
            "hr",
            "bicubic",
            "--data",
            str(photos),
            "--metrics",
            *metrics,
            "--json",
            str(json_path),
            "--device",
            "cpu",
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| hr | Photos | 3 | - | - |" in table
    records = {record["model"]: record for record in json.loads(json_path.read_text())}
    assert records["hr"]["psnr"] is None and records["hr"]["ssim"] is None
    assert records["bicubic"]["psnr"] > 20
    if niqe_available():
        # Ground truth looks more natural than its bicubic reconstruction.
        assert records["hr"]["niqe"] < records["bicubic"]["niqe"]


def test_checkpoint_model_table_json_and_figure(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = SRFeatGenerator(scale=4, num_features=8, num_blocks=2)
    checkpoint = tmp_path / "tiny_model.safetensors"
    save_generator(generator, checkpoint)
    json_path, figure_path = tmp_path / "out" / "scores.json", tmp_path / "out" / "compare.png"
    argv = ["--model", "bicubic", str(checkpoint), "--data", str(photos), "--metrics", "psnr", "ssim"]
    assert (
        run_eval(
            *argv,
            "--json",
            str(json_path),
            "--figure",
            str(figure_path),
            "--figure-image",
            "chelsea",
            "--device",
            "cpu",
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| tiny_model | Photos | 3 |" in table
    records = json.loads(json_path.read_text())
    assert [(record["model"], record["dataset"]) for record in records] == [
        ("bicubic", "Photos"),
        ("tiny_model", "Photos"),
    ]
    assert all(set(record) >= {"model", "dataset", "psnr", "ssim"} for record in records)
    with Image.open(figure_path) as figure:
        # Three labelled panels side by side (bicubic, the model, HR) in one row.
        assert figure.width > 2 * figure.height and figure.width >= 600


def test_checkpoint_models_run_the_inference_path_and_round_clamped_output(tmp_path) -> None:
    from srfeat.weights import save_generator

    generator = SRFeatGenerator(scale=4, num_features=8, num_blocks=1).eval()
    save_generator(generator, tmp_path / "tiny.safetensors")
    lr = samples.astronaut()[:12, :10]
    sr = make_upscaler(str(tmp_path / "tiny.safetensors"), 4, torch.device("cpu"))(lr)
    assert sr.shape == (48, 40, 3) and sr.dtype == np.uint8
    with torch.no_grad():
        expected = generator(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)[0] * 255
    expected_uint8 = expected.round().to(torch.uint8).permute(1, 2, 0).numpy()
    # folded BatchNorm and other convolution algorithms differ by float rounding only
    assert np.abs(sr.astype(int) - expected_uint8.astype(int)).max() <= 1
