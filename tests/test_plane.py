"""`srfeat eval` with blend specs, --tta and --plane (the perception-distortion figure)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import srfeat_cli
from inference_helpers import tiny_generator
from PIL import Image
from skimage import data as samples

from srfeat.commands import eval as eval_command
from srfeat.data.io import write_png
from srfeat.errors import SRFeatError, WeightsError
from srfeat.evaluation import evaluate, model_labels
from srfeat.plane import plane_figure, plane_table
from srfeat.weights import save_generator
from srfeat.weights.blend import expand_blend_specs, parse_blend_spec


def run_eval(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return eval_command.run(parser.parse_args(list(map(str, argv))))


@pytest.fixture()
def photo_folder(tmp_path: Path) -> Path:
    """One photo, big enough for NIQE's 96 px blocks after the x4 round trip."""
    folder = tmp_path / "Photo"
    write_png(folder / "astronaut.png", samples.astronaut()[::2, ::2][:128, :128])
    return folder


@pytest.fixture()
def checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    paths = tmp_path / "soft.safetensors", tmp_path / "sharp.safetensors"
    for path in paths:
        save_generator(tiny_generator(), path)
    return paths


# -- specs -------------------------------------------------------------------------------


def test_strength_ranges_expand_to_every_step_both_ends_included() -> None:
    assert expand_blend_specs(["bicubic", "strength=0:1:0.1"]) == [
        "bicubic",
        *(f"strength={value}" for value in ("0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1")),
    ]
    assert expand_blend_specs(["strength=0.25:0.75:0.25", "strength=0.3"]) == [
        "strength=0.25",
        "strength=0.5",
        "strength=0.75",
        "strength=0.3",
    ]


def test_specs_parse_to_the_models_and_weight() -> None:
    spec = parse_blend_spec("strength=0.3")
    assert spec is not None and (spec.model_a, spec.model_b, spec.alpha) == ("default", "gan", 0.3)
    spec = parse_blend_spec("blend=runs/a,b/g.safetensors,gan,0.25")  # a comma in a path: split from the right
    assert spec is not None and (spec.model_a, spec.model_b, spec.alpha) == ("runs/a,b/g.safetensors", "gan", 0.25)
    assert parse_blend_spec("default") is None and parse_blend_spec("runs/strength.safetensors") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("strength=1.5", "strength must be between 0 and 1"),
        ("strength=nan", "strength must be between 0 and 1"),
        ("strength=much", "'much' is not a number"),
        ("strength=0:2:0.5", "strength must be between 0 and 1"),
        ("strength=0:1:0", "positive STEP"),
        ("strength=0:1", "is not strength=START:STOP:STEP"),
        ("blend=default,gan", "is not blend=A,B,ALPHA"),
        ("blend=default,gan,-1", "alpha must be between 0 and 1"),
    ],
)
def test_bad_specs_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message) as error:
        expand_blend_specs([spec])
        parse_blend_spec(spec)
    assert "\n" not in str(error.value)


def test_labels_shorten_paths_and_mark_tta(checkpoints: tuple[Path, Path]) -> None:
    soft, sharp = checkpoints
    specs = ["bicubic", "hr", "strength=0.5", f"blend={soft},{sharp},0.5", str(soft)]
    assert model_labels(specs) == ["bicubic", "hr", "strength=0.5", "blend=soft,sharp,0.5", "soft"]
    assert model_labels(specs, tta=True) == [
        "bicubic",
        "hr",
        "strength=0.5+tta",
        "blend=soft,sharp,0.5+tta",
        "soft+tta",
    ]


def test_a_checkpoint_named_like_a_reference_does_not_take_its_label(tmp_path: Path) -> None:
    """`--model ck/hr.safetensors hr` made the checkpoint's row `hr` (scored as the ground truth's
    on the plane) and the real ground truth `hr#2`."""
    specs = [str(tmp_path / "hr.safetensors"), "hr", "bicubic", str(tmp_path / "bicubic.safetensors")]
    assert model_labels(specs) == ["hr.safetensors", "hr", "bicubic", "bicubic.safetensors"]
    blend = f"blend={tmp_path / 'hr.safetensors'},{tmp_path / 'soft.safetensors'},0.5"
    assert model_labels([blend]) == ["blend=hr.safetensors,soft,0.5"]


# -- evaluation of blends and self-ensembles ----------------------------------------------


def test_blend_specs_evaluate_as_the_blended_checkpoint(
    photo_folder: Path, checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    from srfeat.weights.blend import blend_generators

    soft, sharp = checkpoints
    save_generator(blend_generators(soft, sharp, 0.3), tmp_path / "blended.safetensors")
    models = [f"blend={soft},{sharp},0", f"blend={soft},{sharp},0.3", str(tmp_path / "blended.safetensors"), str(soft)]
    result = evaluate(models, [photo_folder], metrics=["psnr"], device="cpu")
    scores = {row.model: row.scores["psnr"] for row in result.results}
    assert scores["blend=soft,sharp,0.3"] == scores["blended"]
    assert scores["blend=soft,sharp,0"] == scores["soft"]
    assert scores["blend=soft,sharp,0.3"] != scores["soft"]


def test_eval_tta_rows_are_the_self_ensemble(photo_folder: Path, checkpoints: tuple[Path, Path]) -> None:
    soft, _ = checkpoints
    plain = evaluate([str(soft), "bicubic"], [photo_folder], metrics=["psnr"], device="cpu")
    ensemble = evaluate([str(soft), "bicubic"], [photo_folder], metrics=["psnr"], device="cpu", tta=True)
    assert [row.model for row in ensemble.results] == ["soft+tta", "bicubic"]
    assert ensemble.results[1].scores == plain.results[1].scores  # bicubic is symmetric: untouched
    assert ensemble.results[0].scores["psnr"] != plain.results[0].scores["psnr"]


# -- the plane ----------------------------------------------------------------------------


def records(dataset: str, shift: float) -> list[dict]:
    rows = [{"model": "bicubic", "psnr": 26.0 + shift, "niqe": 7.7}, {"model": "hr", "psnr": None, "niqe": 4.9}]
    rows += [{"model": f"strength={s:g}", "psnr": 28.2 - 2 * s + shift, "niqe": 6.2 - 2.4 * s} for s in (0, 0.5, 1)]
    return [{"dataset": dataset, **row} for row in rows]


def test_plane_table_orders_bicubic_the_dial_then_hr() -> None:
    table = plane_table(records("Set14", 0.0) + records("BSD100", -1.0))
    lines = table.splitlines()
    assert lines[0] == "| model | Set14 PSNR (dB) | Set14 NIQE | BSD100 PSNR (dB) | BSD100 NIQE |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| bicubic",
        "| strength=0",
        "| strength=0.5",
        "| strength=1",
        "| hr",
    ]
    assert lines[3] == "| strength=0 | 28.20 | 6.200 | 27.20 | 6.200 |"
    assert lines[-1] == "| hr | - | 4.900 | - | 4.900 |"


def test_plane_figure_has_a_panel_per_dataset(tmp_path: Path) -> None:
    plane_figure(tmp_path / "one.png", records("Set14", 0.0))
    plane_figure(tmp_path / "two.png", records("Set14", 0.0) + records("BSD100", -1.0))
    one, two = Image.open(tmp_path / "one.png"), Image.open(tmp_path / "two.png")
    assert two.size[0] == pytest.approx(2 * one.size[0], abs=2) and two.size[1] == one.size[1]
    # Not a blank canvas: the curve, the points and the HR line are drawn in colour.
    pixels = np.asarray(two.convert("RGB")).astype(int)
    assert (np.ptp(pixels, axis=2) > 60).mean() > 0.001
    with pytest.raises(SRFeatError, match="nothing to draw"):
        plane_figure(tmp_path / "none.png", [{"dataset": "Set14", "model": "hr", "psnr": None, "niqe": 4.9}])


def test_eval_plane_draws_what_it_evaluated(photo_folder: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    soft, sharp = checkpoints
    plane, json_path = tmp_path / "plane.png", tmp_path / "plane.json"
    specs = ["bicubic", "hr", f"blend={soft},{sharp},0.5", str(soft)]
    assert run_eval("--model", *specs, "--data", photo_folder, "--plane", plane, "--json", json_path) == 0
    assert Image.open(plane).format == "PNG"
    models = [record["model"] for record in json.loads(json_path.read_text())]
    assert models == ["bicubic", "hr", "blend=soft,sharp,0.5", "soft"]


def test_eval_plane_without_niqe_fails_before_evaluating(photo_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SRFeatError, match="include both in --metrics"):
        run_eval("--model", "bicubic", "--data", photo_folder, "--metrics", "psnr", "--plane", tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_strength_spec_is_the_dial(photo_folder: Path) -> None:
    # The full-size bundled pair on one small photo: strength=0 scores as default.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    result = evaluate(["default", "strength=0", "strength=1", "gan"], [photo_folder], metrics=["psnr"], device="cpu")
    scores = [row.scores["psnr"] for row in result.results]
    assert scores[0] == scores[1] and scores[2] == scores[3] and scores[0] != scores[2]


def test_plane_figure_names_the_channel_its_psnr_was_measured_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `srfeat eval --rgb --plane` labelled its axis "PSNR (dB, Y)" over RGB PSNRs (about 1.5 dB lower)
    drawn: list = []
    monkeypatch.setattr(
        "srfeat.figures.save_figure", lambda figure, path, replace=True, *, command_line=False: drawn.append(figure)
    )
    for channel, expected in (("rgb", "PSNR (dB, RGB)"), ("y", "PSNR (dB, Y)")):
        plane_figure(tmp_path / "p.png", [{**record, "channel": channel} for record in records("Set14", 0.0)])
        assert drawn[-1].axes[0].get_xlabel().startswith(expected), drawn[-1].axes[0].get_xlabel()


def test_eval_plane_says_which_points_it_leaves_out(tmp_path: Path) -> None:
    """A model without a finite PSNR and NIQE on a set (NIQE undefined on a flat image, PSNR infinite
    where the output is HR) was left off the plane without a word, as if it had not been evaluated."""
    write_png(tmp_path / "Photo" / "astronaut.png", samples.astronaut()[::2, ::2])
    write_png(tmp_path / "Flat" / "grey.png", np.full((120, 120, 3), 77, np.uint8))
    plane = tmp_path / "plane.png"
    child = srfeat_cli(
        "eval", "--model", "bicubic", "hr", "--data", tmp_path / "Photo", tmp_path / "Flat", "--plane", plane
    )
    assert child.returncode == 0 and Image.open(plane).format == "PNG", child.stderr
    warnings = [line for line in child.stderr.splitlines() if "the plane leaves out" in line]
    assert len(warnings) == 1 and warnings[0].startswith(
        "WARNING: the plane leaves out bicubic on Flat, hr on Flat: no finite PSNR and NIQE"
    ), child.stderr


def test_eval_plane_with_nothing_drawable_says_why_not_what_was_given(tmp_path: Path) -> None:
    """PSNR and NIQE were asked for, but a small set has no NIQE (under 96 px) and a flat image no finite
    PSNR: the refusal told the user to evaluate with --metrics psnr niqe, which they had done."""
    folder = tmp_path / "Small"
    write_png(folder / "flat.png", np.full((32, 32, 3), 128, np.uint8))
    plane = tmp_path / "plane.png"
    result = srfeat_cli(
        "eval",
        "--model",
        "bicubic",
        "hr",
        "--data",
        folder,
        "--metrics",
        "psnr",
        "niqe",
        "--plane",
        plane,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(error) == 1 and "nothing to draw" in error[0], result.stderr
    assert "--metrics psnr niqe" not in error[0] and "under 96 px" in error[0], error[0]
    assert not plane.exists()
