"""`srfeat eval`: the protocol's reference numbers, bad files, the `hr` model, checkpoints, outputs."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import typing
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import REPO, one_error_line, srfeat_cli
from PIL import Image
from skimage import data as samples

from srfeat.archs.generator import SRFeatGenerator
from srfeat.commands import eval as eval_command
from srfeat.data.datasets import bicubic_downscale, bicubic_upscale, mod_crop
from srfeat.data.io import write_png
from srfeat.errors import InvalidOptionError
from srfeat.evaluation import evaluate, make_upscaler, niqe_available, write_json
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


def test_an_image_too_large_for_free_memory_is_scored_in_tiles(tmp_path, monkeypatch) -> None:
    """Eval ran every network untiled: a 24-megapixel photo needed about 7 GB. Now it tiles as
    `srfeat upscale` does, which leaves benchmark images whole (tiles are larger than they are)."""
    from srfeat.inference import tiling
    from srfeat.weights import save_generator

    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1).eval(), tmp_path / "tiny.safetensors")
    lr = samples.astronaut()[:96, :80]
    whole = make_upscaler(str(tmp_path / "tiny.safetensors"), 4, torch.device("cpu"))(lr)
    planned: list[int] = []
    plan = tiling.plan_tiles

    def counted(*args: int) -> list[tiling.Tile]:
        planned.append(len(tiles := plan(*args)))
        return tiles

    monkeypatch.setattr(tiling, "plan_tiles", counted)
    monkeypatch.setattr(tiling, "available_memory", lambda device: 4 << 20)  # 4 MB free: 32-pixel tiles
    tiled = make_upscaler(str(tmp_path / "tiny.safetensors"), 4, torch.device("cpu"))(lr)
    assert planned and planned[0] > 1, planned
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # exact up to float rounding


# ----------------------------------------------------------------------------- hostile and careless input (CLI)


@pytest.fixture()
def small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Small"
    write_png(folder / "a.png", samples.astronaut()[100:140, 150:194])
    return folder


def test_repeated_options_add_up_and_repeated_values_are_scored_once(small_folder: Path) -> None:
    """`--model bicubic --model hr` used to evaluate hr alone, without a word; `--metrics psnr psnr`
    gave two identical columns."""
    result = srfeat_cli(
        "eval", "--model", "bicubic", "--model", "hr", "bicubic", "--data", small_folder, "--metrics", "psnr", "psnr"
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines()[2:]]
    assert rows == ["bicubic", "hr"] and result.stdout.splitlines()[0].count("PSNR") == 1, result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING: --metrics names psnr more than once: each is evaluated once",
        "WARNING: --model names bicubic more than once: each is evaluated once",
    ], result.stderr


def test_a_strength_range_of_too_many_models_is_refused_at_once(small_folder: Path) -> None:
    # Before: strength=0:1:1e-9 listed a billion model names (hung, memory grew), and any range
    # built all its networks before the first image.
    error = one_error_line(srfeat_cli("eval", "--model", "strength=0:1:1e-9", "--data", small_folder))
    assert "1,000,000,000 models, more than 101" in error and "STEP of at least 0.01" in error


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("existing json", "exists: pass --overwrite"),
        ("json is a folder", "is a folder"),
        ("json under a file", "is a file, not a folder"),
        ("unknown figure format", "unknown picture format .xyz"),
        ("same file twice", "is also the --json file"),
        ("broken second model", "is a text file"),
    ],
)
def test_outputs_and_models_are_checked_before_any_image_is_scored(
    case: str, message: str, small_folder: Path, tmp_path: Path
) -> None:
    # Before: each output case was a traceback after the whole evaluation (or, for an existing
    # file, a silent overwrite).
    kept = tmp_path / "kept.json"
    kept.write_text("my earlier results\n")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.safetensors").write_text("not weights")
    options = {
        "existing json": ["--json", kept],
        "json is a folder": ["--json", tmp_path / "folder.json"],
        "json under a file": ["--json", tmp_path / "notes.txt" / "scores.json"],
        "unknown figure format": ["--figure", tmp_path / "figure.xyz"],
        "same file twice": ["--json", tmp_path / "out.png", "--figure", tmp_path / "out.png"],
        "broken second model": ["--model", "bicubic", tmp_path / "broken.safetensors"],
    }[case]
    models = [] if "--model" in options else ["--model", "bicubic"]
    process = srfeat_cli("eval", *models, "--data", small_folder, "--metrics", "psnr", *options)
    assert message in one_error_line(process)
    assert process.stdout == ""  # no table: nothing was evaluated
    assert kept.read_text() == "my earlier results\n"


def test_existing_outputs_are_replaced_only_with_overwrite(small_folder: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.json"
    kept.write_text("my earlier results\n")
    process = srfeat_cli(
        "eval", "--model", "bicubic", "--data", small_folder, "--metrics", "psnr", "--json", kept, "--overwrite"
    )
    assert process.returncode == 0, process.stderr
    assert json.loads(kept.read_text())[0]["model"] == "bicubic"
    assert not list(tmp_path.glob(".kept.json*"))  # the temporary was renamed, none left


def test_partial_means_are_marked_and_tiny_images_give_no_nan(tmp_path: Path) -> None:
    # Before: a 6x6 image (nothing left after the 4-pixel shave) put "nan" into the table with two
    # numpy RuntimeWarnings, and a mean over 1 of 2 images looked like a mean over both.
    tiny, small = tmp_path / "Tiny", tmp_path / "Mixed"
    photo = samples.astronaut()
    write_png(tiny / "t.png", photo[:6, :6])
    write_png(small / "big.png", photo[100:140, 150:194])
    write_png(small / "s9.png", photo[:9, :9])
    json_path = tmp_path / "scores.json"
    process = srfeat_cli(
        "eval", "--model", "bicubic", "--data", tiny, small, "--metrics", "psnr", "ssim", "--json", json_path
    )
    assert process.returncode == 0, process.stderr
    assert "nan" not in process.stdout.lower() and "RuntimeWarning" not in process.stderr
    assert "| bicubic | Tiny | 1 | - (0/1) | - (0/1) |" in process.stdout
    row = next(line for line in process.stdout.splitlines() if "| Mixed |" in line)
    assert row.count("(1/2)") == 2
    assert "PSNR left out for Tiny/t (bicubic): nothing is left of a 4x4 image" in process.stderr
    records = {record["dataset"]: record for record in json.loads(json_path.read_text())}
    assert records["Mixed"]["psnr_images"] == 1 and records["Mixed"]["images"] == 2
    assert records["Tiny"]["psnr"] is None and records["Tiny"]["psnr_images"] == 0


def test_folders_of_one_name_keep_their_own_rows(tmp_path: Path) -> None:
    # Before: the per-image table listed the first folder's images twice and dropped the second's.
    photo = samples.astronaut()
    write_png(tmp_path / "a" / "Set" / "one.png", photo[:40, :44])
    write_png(tmp_path / "b" / "Set" / "two.png", photo[40:80, :44])
    write_png(tmp_path / "b" / "Set" / "three.png", photo[80:120, :44])
    process = srfeat_cli(
        "eval", "--model", "bicubic", "--data", tmp_path / "a" / "Set", tmp_path / "b" / "Set", "--metrics", "psnr",
        "--per-image",
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    assert "labelled Set#2" in process.stderr
    for row in ("| Set | one | bicubic |", "| Set#2 | two | bicubic |", "| Set#2 | three | bicubic |"):
        assert row in process.stdout


def test_plane_of_hr_alone_and_a_zero_crop_are_refused_before_the_evaluation(
    small_folder: Path, tmp_path: Path
) -> None:
    process = srfeat_cli(
        "eval", "--model", "hr", "--data", small_folder, "--metrics", "psnr", "niqe", "--plane", tmp_path / "p.png"
    )
    assert "hr (the ground truth) has no PSNR" in one_error_line(process) and process.stdout == ""
    process = srfeat_cli(
        "eval", "--model", "bicubic", "--data", small_folder, "--figure", tmp_path / "f.png", "--figure-crop", "0"
    )
    assert "--figure-crop: must be at least 1 pixel" in one_error_line(process, returncode=2) and process.stdout == ""


def test_models_are_held_one_at_a_time(small_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A strength range of 101 networks must not hold 101 networks (about 55 MB each) at once.
    from srfeat import evaluation

    alive: list[weakref.ref] = []
    build = evaluation.make_upscaler

    def tracked(*args: typing.Any, **kwargs: typing.Any) -> evaluation.Upscaler:
        gc.collect()
        assert not any(reference() is not None for reference in alive), "the previous model is still held"
        upscaler = build(*args, **kwargs)
        alive.append(weakref.ref(upscaler))
        return upscaler

    monkeypatch.setattr(evaluation, "make_upscaler", tracked)
    checkpoint, other = small_folder.parent / "tiny.safetensors", small_folder.parent / "other" / "tiny.safetensors"
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1), checkpoint)
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1), other)
    result = evaluate([str(checkpoint), "bicubic", str(other)], [small_folder], metrics=["psnr"], device="cpu")
    # two networks built and dropped by the check at the start (a test image each), then three scored
    assert len(alive) == 5 and [row.model for row in result.results] == ["tiny", "bicubic", "tiny#2"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"models": "bicubic", "folders": ["set"]},
        {"models": ["bicubic"], "folders": "set"},
        {"models": ["bicubic"], "folders": Path("set")},
        {"models": ["bicubic"], "folders": ["set"], "metrics": "psnr"},
    ],
)
def test_evaluate_given_one_string_where_a_list_goes_says_so(arguments: dict) -> None:
    """`evaluate("bicubic", ...)` took each character as a model ("generator weights not found: b"),
    `metrics="psnr"` said "unknown metric(s) p, s, n, r", a Path of folders was a TypeError."""
    from srfeat.errors import SRFeatError

    with pytest.raises(SRFeatError, match=r"is a list: give \['"):
        evaluate(**arguments, device="cpu")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # an empty list was an empty result, without a word (a table of no rows, or of no columns)
        ({"models": []}, "models must be a non-empty list, got list"),
        ({"folders": []}, "folders must be a non-empty list, got list"),
        ({"metrics": []}, "metrics must be a non-empty list, got list"),
        ({"folders": [None]}, "folders must hold names or paths, got NoneType None"),  # was a TypeError
        ({"metrics": [1]}, "metrics must hold names, got int 1"),  # was a TypeError from str.join
        # "4" and 2.0 were TypeErrors from inside, 0 a ZeroDivisionError
        ({"scale": "4"}, r"^scale must be a whole number of at least 2 \(e.g. scale=4\), got '4'$"),
        ({"scale": 2.0}, r"^scale must be a whole number of at least 2 \(e.g. scale=4\), got 2.0$"),
        ({"scale": 0}, r"^scale must be a whole number of at least 2 \(e.g. scale=4\), got 0$"),
        # "no" left every PSNR and SSIM out with a warning, image by image: a table of "- (0/1)"
        ({"test_y_channel": "no"}, "test_y_channel must be True or False, got str 'no'"),
        ({"tta": "yes"}, "tta must be True or False, got str 'yes'"),
    ],
)
def test_evaluate_refuses_arguments_of_the_wrong_kind_before_any_work(
    small_folder: Path, arguments: dict, message: str
) -> None:
    from srfeat.errors import InvalidOptionError

    call = {"models": ["bicubic"], "folders": [small_folder], "metrics": ["psnr"], "device": "cpu", **arguments}
    with pytest.raises(InvalidOptionError, match=message) as error:
        evaluate(**call)
    assert "\n" not in str(error.value) and isinstance(error.value, ValueError)


def test_a_scale_below_2_is_named_as_its_caller_gives_it(small_folder: Path) -> None:
    """The scale's refusal named the keyword, in words of its own ("(4, 2...)"), whoever called, where the
    other refusals of the scale name scale=4 to Python and --scale 4 to `srfeat eval` (`command_line=True`)."""
    from srfeat.errors import InvalidOptionError

    for command_line, name, example in ((False, "scale", "scale=4"), (True, "--scale", "--scale 4")):
        call = {"models": ["bicubic"], "folders": [small_folder], "metrics": ["psnr"], "device": "cpu"}
        with pytest.raises(InvalidOptionError) as refused:
            evaluate(**call, scale=1, command_line=command_line)
        assert str(refused.value) == f"{name} must be a whole number of at least 2 (e.g. {example}), got 1"


def test_evaluate_takes_paths_as_paths_and_expands_the_home_folder(
    small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint given as a Path was an AttributeError ('PosixPath' object has no attribute 'startswith'),
    bytes folders a TypeError, and "~/Small" was looked for in a folder named "~" (the command line expands it)."""
    checkpoint = tmp_path / "tiny.safetensors"
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1), checkpoint)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "Small")  # where a folder "~" would be looked for
    for folders in (["~/Small"], [b"~/Small"], [Path("~/Small")]):
        result = evaluate([checkpoint, "bicubic"], folders, metrics=["psnr"], device="cpu")
        assert [(row.model, row.dataset, row.images) for row in result.results] == [
            ("tiny", "Small", 1),
            ("bicubic", "Small", 1),
        ]
    result = evaluate([os.fsencode(checkpoint), b"bicubic"], ["~/Small"], metrics=["psnr"], device="cpu")
    assert [row.model for row in result.results] == ["tiny", "bicubic"]
    # which the hint says (it left bytes out of models: a type checker refused the call above)
    assert typing.get_type_hints(evaluate)["models"] == Sequence[str | bytes | os.PathLike[str]]
    # any iterable of them, as before (a generator is read once), though the hint says Sequence
    result = evaluate((m for m in ["bicubic"]), ("~/Small",), metrics=iter(["psnr"]), device="cpu")  # pyright: ignore[reportArgumentType]
    assert [(row.model, row.images, list(row.scores)) for row in result.results] == [("bicubic", 1, ["psnr"])]


def test_one_checkpoint_under_two_names_is_evaluated_once(small_folder: Path, tmp_path: Path) -> None:
    """`--model tiny.safetensors ./tiny.safetensors` ran the network twice, in rows tiny and tiny#2 of the
    same numbers, though a model named twice is scored once (and a folder under two names evaluated once)."""
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1), tmp_path / "tiny.safetensors")
    child = srfeat_cli(
        "eval",
        "--model",
        "tiny.safetensors",
        "./tiny.safetensors",
        tmp_path / "tiny.safetensors",
        "default",
        REPO / "srfeat" / "weights" / "default.safetensors",
        "--data",
        small_folder,
        "--metrics",
        "psnr",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr
    rows = [line.split("|")[1].strip() for line in child.stdout.splitlines() if "| Small |" in line]
    assert rows == ["tiny", "default"]
    assert (
        f"--model names tiny.safetensors (also as ./tiny.safetensors, {tmp_path / 'tiny.safetensors'}), default "
        f"(also as {REPO / 'srfeat' / 'weights' / 'default.safetensors'}) more than once: each is evaluated once"
    ) in child.stderr


def test_size_messages_of_every_metric_read_width_x_height(tmp_path: Path) -> None:
    # SSIM's warning said "got (8, 12)" (height, width) where NIQE's said "12x8" for the same image
    folder = tmp_path / "Tiny"
    write_png(folder / "t.png", samples.astronaut()[:16, :20])  # 20x16: 12x8 after the 4-pixel shave
    metrics = ["ssim", "niqe"] if niqe_available() else ["ssim"]
    child = srfeat_cli("eval", "--model", "bicubic", "--data", folder, "--metrics", *metrics)
    assert child.returncode == 0, child.stderr
    assert (
        "WARNING: SSIM left out for Tiny/t (bicubic): SSIM needs images of at least 11x11 after the border "
        "crop, got 12x8\n" in child.stderr
    )
    if niqe_available():
        assert "NIQE needs an image of at least 96x96 pixels after shaving, got 12x8;" in child.stderr


def test_two_specs_of_one_blend_are_evaluated_once(small_folder: Path) -> None:
    """`--model strength=0.5 strength=0.50` ran one blend twice, in two rows of the same numbers (and
    `blend=default,gan,0.5` is that blend too), though one checkpoint under two names was scored once."""
    models = ("strength=0.5", "bicubic", "strength=0.50", "blend=default,gan,0.5", "strength=0.25")
    child = srfeat_cli("eval", "--model", *models, "--data", small_folder, "--metrics", "psnr", "--device", "cpu")
    assert child.returncode == 0, child.stderr
    rows = [line.split("|")[1].strip() for line in child.stdout.splitlines() if "| Small |" in line]
    assert rows == ["strength=0.5", "bicubic", "strength=0.25"]
    assert (
        "WARNING: --model names strength=0.5 (also as strength=0.50, blend=default,gan,0.5) more than once: "
        "each is evaluated once"
    ) in child.stderr


@pytest.mark.parametrize("metrics", [["psnr", "ssim"], ["ssim"]])
def test_hr_alone_with_only_psnr_or_ssim_is_refused_before_any_work(
    small_folder: Path, tmp_path: Path, metrics: list[str]
) -> None:
    """`--model hr --metrics psnr ssim` read and scored every image to print a table of dashes: the
    ground truth has no PSNR or SSIM (they would compare it with itself)."""
    json_path = tmp_path / "r.json"
    child = srfeat_cli("eval", "--model", "hr", "--data", small_folder, "--metrics", *metrics, "--json", json_path)
    error = one_error_line(child, only=True)
    names = " or ".join(metric.upper() for metric in metrics)
    assert f"hr (the ground truth) has no {names}, which would compare it with itself: add a model" in error
    assert "(e.g. --model bicubic hr)" in error  # the flags it was given (from Python: test_eval_messages)
    assert child.stdout == "" and "image(s)" not in child.stderr and not json_path.exists()
    with pytest.raises(InvalidOptionError, match=r"hr \(the ground truth\) has no PSNR"):
        evaluate(["hr"], [small_folder], metrics=["psnr"], device="cpu")


def test_a_checkpoint_whose_output_is_not_finite_is_refused_before_any_image_is_read(
    small_folder: Path, tmp_path: Path
) -> None:
    """Weights that load (finite) but overflow to inf failed at the first image of that model, after every
    model before it had been scored, and nothing of that work was kept."""
    generator = SRFeatGenerator(scale=4, num_features=8, num_blocks=1)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.mul_(1e6)
    save_generator(generator, tmp_path / "diverged.safetensors")
    child = srfeat_cli(
        "eval", "--model", "bicubic", tmp_path / "diverged.safetensors", "--data", small_folder, "--device", "cpu"
    )
    line = one_error_line(child, only=True)
    assert "model " + str(tmp_path / "diverged.safetensors") + " is broken: its output for a test image" in line
    assert "is not finite (NaN or inf)" in line
    assert "image(s)" not in child.stderr and child.stdout == ""  # no folder read, nothing scored


def test_an_onnx_file_is_still_refused_by_eval(small_folder: Path, tmp_path: Path) -> None:
    """The check at the start builds each network as an Upscaler, which would run an .onnx file on ONNX
    Runtime: eval scores generators (srfeat upscale runs ONNX files), and says so in one line."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    save_generator(SRFeatGenerator(scale=4, num_features=8, num_blocks=1), tmp_path / "tiny.safetensors")
    exported = srfeat_cli("export", "--model", tmp_path / "tiny.safetensors", "-o", tmp_path / "tiny.onnx")
    assert exported.returncode == 0, exported.stderr
    child = srfeat_cli("eval", "--model", "bicubic", tmp_path / "tiny.onnx", "--data", small_folder, "--device", "cpu")
    assert "is an ONNX model, which only srfeat upscale runs" in one_error_line(child, only=True)


def test_a_damaged_niqe_model_file_stops_the_evaluation_in_one_line(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The evaluation took the damaged-file error for an image where NIQE is undefined: every image's
    NIQE was left out with a warning, and the table had '- (0/n)' for a broken installation."""
    from srfeat.errors import SRFeatError
    from srfeat.metrics import niqe as niqe_module

    if not niqe_available():
        pytest.skip("NIQE is not installed")
    niqe_module.pristine_model.cache_clear()
    monkeypatch.setattr(niqe_module, "PRISTINE_PARAMS_SHA256", "0" * 64)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(SRFeatError, match="NIQE model file .* is damaged"):
            evaluate(["bicubic"], [small_folder], metrics=["psnr", "niqe"], device="cpu")
    finally:
        niqe_module.pristine_model.cache_clear()
    assert "left out" not in caplog.text


def test_a_model_name_longer_than_the_file_system_takes_is_one_line(small_folder: Path) -> None:
    """`--model` of a 300-byte name was OSError 'File name too long' from Path.is_dir, a traceback
    (srfeat upscale's too, and `load_generator` from Python)."""
    from srfeat.errors import WeightsError
    from srfeat.weights import load_generator

    name = "a" * 300 + ".safetensors"
    child = srfeat_cli("eval", "--model", "bicubic", name, "--data", small_folder, "--device", "cpu")
    assert "File name too long; give a checkpoint path" in one_error_line(child, only=True)
    with pytest.raises(WeightsError, match="File name too long"):
        load_generator(name)


def test_evaluate_on_a_folder_name_longer_than_the_file_system_takes_is_one_line() -> None:
    """The command line's path check refuses such a --data name; evaluate() from Python went on to the
    folder scan, where Path.is_dir raised OSError 'File name too long'."""
    from srfeat.errors import ImageReadError

    with pytest.raises(ImageReadError, match="cannot read image folder a+: File name too long") as error:
        evaluate(["bicubic"], ["a" * 300], metrics=["psnr"], device="cpu")
    assert "\n" not in str(error.value)


def test_writing_results_over_an_existing_file_from_python_says_it_exists(small_folder: Path, tmp_path: Path) -> None:
    """write_json(replace=False) and the figures over a file that was there before said it 'appeared while it
    was being written (another program?)' and to pass --overwrite, an option a Python caller does not have."""
    from srfeat.figures import comparison_figure
    from srfeat.files import OutputExistsError

    result = evaluate(["bicubic"], [small_folder], metrics=["psnr"], device="cpu", keep_figure_samples=True)
    for path, write in (
        (tmp_path / "mine.json", lambda path: write_json(path, result, replace=False)),
        (tmp_path / "mine.png", lambda path: comparison_figure(path, result.figure_samples, replace=False)),
    ):
        path.write_text("mine")
        with pytest.raises(OutputExistsError, match=r"mine\.\w+ exists; it is kept: .*replace=True") as error:
            write(path)
        assert "appeared" not in str(error.value) and path.read_text() == "mine"
        assert "--overwrite" not in str(error.value)  # the command's flag (srfeat eval names it itself)


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_the_figures_refuse_a_replace_that_is_not_true_or_false_and_keep_the_file(
    small_folder: Path, tmp_path: Path, flag: object
) -> None:
    """`comparison_figure(path, samples, replace="no")` and `plane_figure` replaced the file: a string is true."""
    from srfeat.errors import InvalidOptionError
    from srfeat.figures import comparison_figure
    from srfeat.plane import plane_figure

    result = evaluate(["bicubic"], [small_folder], metrics=["psnr"], device="cpu", keep_figure_samples=True)
    records = [{"model": "bicubic", "dataset": "Small", "psnr": 20.0, "niqe": 7.0}]
    path = tmp_path / "mine.png"
    path.write_text("mine")
    for write in (
        lambda: comparison_figure(path, result.figure_samples, replace=flag),  # pyright: ignore[reportArgumentType]
        lambda: plane_figure(path, records, replace=flag),  # pyright: ignore[reportArgumentType]
    ):
        with pytest.raises(InvalidOptionError, match=f"replace must be True or False, got {type(flag).__name__}"):
            write()
        assert path.read_text() == "mine"


def test_figure_options_without_a_figure_are_named_in_a_warning(small_folder: Path, tmp_path: Path) -> None:
    """`--figure-image a` without `--figure` was taken without a word, and the figure never came."""
    child = srfeat_cli(
        "eval", "--model", "bicubic", "--data", small_folder, "--metrics", "psnr", "--figure-image", "a", cwd=tmp_path
    )
    assert child.returncode == 0, child.stderr
    assert (
        "WARNING: --figure-image applies to --figure, which is not given: no figure is written (add --figure FILE.png)"
    ) in child.stderr
    child = srfeat_cli("eval", "--model", "bicubic", "--data", small_folder, "--metrics", "psnr", cwd=tmp_path)
    assert child.returncode == 0 and "WARNING" not in child.stderr, child.stderr


@pytest.fixture()
def two_image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Two"
    write_png(folder / "a.png", samples.astronaut()[100:140, 150:194])
    write_png(folder / "baby.png", samples.chelsea()[40:80, 60:104])
    return folder


def test_a_figure_image_given_with_its_extension_is_the_image_of_that_file(
    two_image_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`figure_image="baby.png"` was said not to be in the folder, and its first image was shown."""

    def shown_for(given: str) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="srfeat"):
            result = evaluate(
                ["bicubic"],
                [two_image_folder],
                metrics=["psnr"],
                device="cpu",
                figure_image=given,
                keep_figure_samples=True,
            )
        return [sample.image for sample in result.figure_samples]

    for given, shown in (("baby.png", "baby"), ("baby", "baby"), ("a.png", "a")):
        assert shown_for(given) == [shown], given
        assert not caplog.records, caplog.text
    for given in ("baby.jpg", "Baby.png", "cat"):  # another file's extension, another case, no such image
        assert shown_for(given) == ["a"], given
        expected = (
            f"figure image {given} is not in Two (give an image's file name, with or without its extension): "
            "its first image, a, is shown"
        )
        assert [record.getMessage() for record in caplog.records] == [expected]


def test_figure_image_on_the_command_line_takes_a_file_name_too(two_image_folder: Path, tmp_path: Path) -> None:
    """`srfeat eval --figure-image baby.png` warned that baby.png is not in the folder and showed its first image."""
    argv = ["eval", "--model", "bicubic", "--data", two_image_folder, "--metrics", "psnr", "--figure", "f.png"]
    argv += ["--figure-crop", "500"]  # its warning names the image shown
    child = srfeat_cli(*argv, "--figure-image", "baby.png", cwd=tmp_path)
    assert child.returncode == 0 and (tmp_path / "f.png").is_file(), child.stderr
    assert [line for line in child.stderr.splitlines() if line.startswith("WARNING")] == [
        "WARNING: --figure-crop 500 is larger than Two/baby (44x40): the figure shows a crop of 40 px"
    ], child.stderr
    child = srfeat_cli(*argv, "--figure-image", "baby.jpg", "--overwrite", cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    assert (
        "WARNING: figure image baby.jpg is not in Two (give an image's file name, with or without its extension): "
        "its first image, a, is shown"
    ) in child.stderr.splitlines(), child.stderr


def test_tta_with_no_network_is_named_in_a_warning(small_folder: Path, tmp_path: Path) -> None:
    """`--tta` with only bicubic and hr was taken without a word: the rows were those of a run without it."""
    child = srfeat_cli(
        "eval", "--model", "bicubic", "hr", "--data", small_folder, "--metrics", "psnr", "niqe", "--tta", cwd=tmp_path
    )
    assert child.returncode == 0, child.stderr
    assert (
        "WARNING: --tta applies to networks, and --model names none (bicubic and hr run as they are): "
        "it changes nothing"
    ) in child.stderr.splitlines(), child.stderr


def test_a_figure_crop_larger_than_an_image_is_named_in_a_warning(small_folder: Path, tmp_path: Path) -> None:
    """`--figure-crop 500` on a 44x40 image drew a 40 px crop without a word."""
    figure = tmp_path / "f.png"
    argv = ["eval", "--model", "bicubic", "--data", small_folder, "--metrics", "psnr", "--figure", figure]
    child = srfeat_cli(*argv, "--figure-crop", "500", cwd=tmp_path)
    assert child.returncode == 0 and figure.is_file(), child.stderr
    expected = "WARNING: --figure-crop 500 is larger than Small/a (44x40): the figure shows a crop of 40 px"
    assert expected in child.stderr.splitlines(), child.stderr
    child = srfeat_cli(*argv, "--figure-crop", "40", "--overwrite", cwd=tmp_path)
    assert child.returncode == 0 and "WARNING" not in child.stderr, child.stderr


def test_the_help_of_metrics_says_niqe_is_a_default() -> None:
    """The help said NIQE may be "not installed", though it ships with srfeat."""
    child = srfeat_cli("eval", "--help")
    assert child.returncode == 0 and niqe_available(), child.stderr
    text = " ".join(child.stdout.split())
    assert "(default: psnr ssim niqe)" in text and "not installed" not in text, text
