"""`srfeat eval`'s files: written where they were checked, and never over (or among) its inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_error_line, srfeat_cli
from inference_helpers import tiny_generator
from PIL import Image
from skimage import data as samples

from srfeat.data.io import write_png
from srfeat.weights import save_generator


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "Photos"
    write_png(folder / "astronaut.png", samples.astronaut()[:112, :112])  # NIQE's 96 px block after the shave
    return folder


def test_a_home_relative_output_is_written_where_it_was_checked(photos: Path, tmp_path: Path) -> None:
    # `--json=~/r.json` (no shell expansion after `=`) was checked as $HOME/r.json but written to ./~/r.json,
    # and a --data of `~/Photos` was "not found"
    home = tmp_path / "home"
    home.mkdir()
    args = ("eval", "--model", "bicubic", "--metrics", "psnr")
    result = srfeat_cli(*args, "--data", photos, "--json=~/r.json", cwd=tmp_path, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (home / "r.json").is_file() and not (tmp_path / "~").exists()
    (home / "other.json").write_text("mine\n")
    result = srfeat_cli(*args, "--data", photos, "--json=~/other.json", cwd=tmp_path, env={"HOME": str(home)})
    assert "exists: pass --overwrite" in one_error_line(result)
    photos.rename(home / "Photos")
    result = srfeat_cli(*args, "--data=~/Photos", cwd=tmp_path, env={"HOME": str(home)})
    assert result.returncode == 0 and "| bicubic | Photos |" in result.stdout, result.stderr


@pytest.mark.parametrize("case", ["figure over an HR image", "plane in a data folder", "json over the checkpoint"])
def test_an_output_among_the_inputs_is_refused_even_with_overwrite(case: str, photos: Path, tmp_path: Path) -> None:
    # `--figure Photos/astronaut.png --overwrite` replaced the HR image with the figure, and a new picture in a
    # --data folder was scored as one of its images by the next run; `--json model.safetensors` lost the model
    model = tmp_path / "model.safetensors"
    save_generator(tiny_generator(num_features=8), model)
    inputs = {path: path.read_bytes() for path in (model, photos / "astronaut.png")}
    option, path, message = {
        "figure over an HR image": ("--figure", photos / "astronaut.png", "is in the --data folder"),
        "plane in a data folder": ("--plane", photos / "plane.png", "is in the --data folder"),
        "json over the checkpoint": ("--json", model, "is the model"),
    }[case]
    args = ("eval", "--model", "bicubic", model, "--data", photos, option, path, "--overwrite")
    line = one_error_line(srfeat_cli(*args, cwd=tmp_path))
    assert message in line and str(path) in line, line
    assert {path: path.read_bytes() for path in inputs} == inputs
    assert sorted(path.name for path in photos.iterdir()) == ["astronaut.png"]


def test_a_picture_format_that_cannot_be_written_here_is_refused_before_the_evaluation(
    photos: Path, tmp_path: Path
) -> None:
    # matplotlib lists .pgf, whose writer runs xelatex for the text: without TeX the figure was a
    # RuntimeError traceback after the whole evaluation, and nothing was written
    empty = tmp_path / "no-programs"
    empty.mkdir()
    args = ("eval", "--model", "bicubic", "--data", photos, "--metrics", "psnr", "--figure", tmp_path / "f.pgf")
    result = srfeat_cli(*args, cwd=tmp_path, env={"PATH": str(empty)})
    line = one_error_line(result)
    assert "cannot write .pgf pictures here" in line and "xelatex" in line and "use .png" in line, line
    assert result.stdout == ""  # nothing was evaluated


def test_two_images_of_one_stem_keep_rows_of_their_own(tmp_path: Path) -> None:
    # a.png and a.bmp were both rows named "a" in --per-image and the JSON: which score was whose?
    folder = tmp_path / "Set"
    write_png(folder / "a.png", samples.astronaut()[:48, :48])
    Image.fromarray(samples.coffee()[:48, :48]).save(folder / "a.bmp")
    write_png(folder / "b.png", samples.chelsea()[:48, :48])
    result = srfeat_cli("eval", "--model", "bicubic", "--data", folder, "--metrics", "psnr", "--per-image")
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[2].strip() for line in result.stdout.splitlines() if line.startswith("| Set |")]
    assert rows == ["a.bmp", "a.png", "b"], result.stdout


@pytest.mark.parametrize("stdout", ["a reader that went away", "a full disk"])
def test_a_table_that_cannot_be_shown_is_no_traceback_and_the_json_is_written(
    stdout: str, photos: Path, tmp_path: Path
) -> None:
    """`srfeat eval ... --json r.json | head -1`: printing the table was a BrokenPipeError traceback, and
    the --json after it, the evaluation's record, was never written; `> /dev/full` a traceback too."""
    from cli_helpers import srfeat_cli_writing_to

    command = ["eval", "--model", "bicubic", "--metrics", "psnr", "--data", photos, "--json", "r.json"]
    child = srfeat_cli_writing_to(stdout, *command, cwd=tmp_path)
    assert (tmp_path / "r.json").is_file(), child.stderr
    if stdout == "a reader that went away":  # the reader had what it wanted: no error
        assert child.returncode == 0 and "Traceback" not in child.stderr and "ERROR" not in child.stderr, child.stderr
    else:
        error = one_error_line(child)
        assert error == "ERROR: could not write to standard output: No space left on device", child.stderr


def test_a_pipe_in_a_model_folder_or_image_name_is_escaped_in_the_table(tmp_path: Path) -> None:
    # `Set|5`, `a|b.png` or `my|net.safetensors` added a column to their rows: the Markdown table fell apart
    folder, model = tmp_path / "Set|5", tmp_path / "my|net.safetensors"
    write_png(folder / "a|b.png", samples.astronaut()[:40, :44])
    save_generator(tiny_generator(num_features=8), model)
    json_path = tmp_path / "r.json"
    args = ("--data", folder, "--metrics", "psnr", "--per-image", "--json", json_path)
    child = srfeat_cli("eval", "--model", model, "bicubic", *args)
    assert child.returncode == 0, child.stderr
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in child.stdout.splitlines() if line]
    assert len(rows) == 8 and {len(row) for row in rows} == {4}, child.stdout  # two tables of 4 columns
    assert [row[:2] for row in rows[2:4]] == [[" my\\|net ", " Set\\|5 "], [" bicubic ", " Set\\|5 "]]
    assert [row[:3] for row in rows[6:]] == [[" Set\\|5 ", " a\\|b ", name] for name in (" my\\|net ", " bicubic ")]
    records = json.loads(json_path.read_text())  # the JSON keeps the names as they are
    assert [(record["model"], record["dataset"]) for record in records] == [("my|net", "Set|5"), ("bicubic", "Set|5")]
    assert records[0]["per_image"][0]["image"] == "a|b"


@pytest.mark.parametrize("replace", [True, False])
def test_write_json_given_a_folder_says_so(photos: Path, tmp_path: Path, replace: bool) -> None:
    """From Python, `write_json("results", result)` with a folder there was IsADirectoryError naming the
    temporary (`.results.PID.tmp -> results`), after the writing; or, with replace=False, "exists"."""
    from srfeat.errors import SRFeatError
    from srfeat.evaluation import evaluate, write_json

    result = evaluate(["bicubic"], [photos], ["psnr"])
    folder = tmp_path / "results"
    (folder / "mine.txt").parent.mkdir()
    (folder / "mine.txt").write_text("kept\n")
    with pytest.raises(SRFeatError) as refused:
        write_json(folder, result, replace=replace)
    assert str(refused.value) == f"{folder} is a folder: give the name of a file (in it, or beside it) to write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Photos", "results"]
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]


def test_an_output_that_appears_while_the_models_run_is_kept_and_refused_in_the_commands_words(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --figure saved while the models ran was refused by the writer, naming "replace=True" (a Python
    caller's keyword) beside --overwrite, and the --json before it had been written all the same."""
    import argparse

    from srfeat import evaluation
    from srfeat.commands import eval as eval_command
    from srfeat.errors import SRFeatError

    figure, json_path = tmp_path / "f.png", tmp_path / "r.json"
    evaluate = evaluation.evaluate

    def saved_meanwhile(*args: Any, **kwargs: Any) -> object:
        figure.write_bytes(b"the user's picture")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", saved_meanwhile)
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    args = parser.parse_args(
        ["--model", "bicubic", "--data", str(photos), "--metrics", "psnr", "--json", str(json_path)]
        + ["--figure", str(figure), "--device", "cpu"]
    )
    with pytest.raises(SRFeatError) as raised:
        eval_command.run(args)
    assert str(raised.value) == (
        f"--figure {figure} appeared while the models were evaluated; it is kept: pass --overwrite to replace it, "
        "or choose another name"
    )
    assert figure.read_bytes() == b"the user's picture" and not json_path.exists()


def test_a_json_file_saved_while_it_is_written_is_refused_naming_the_callers_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_json(replace=False) of a file saved while it was written said "(--overwrite)" to Python too;
    `srfeat eval` (`command_line=True`) keeps the flag."""
    from srfeat import evaluation_results, files
    from srfeat.evaluation import write_json
    from srfeat.files import OutputExistsError

    path = tmp_path / "r.json"
    monkeypatch.setattr(evaluation_results, "json_records", lambda *args: [])
    remove_stale_temporaries = files.remove_stale_temporaries

    def saving_meanwhile(target: Path) -> list[Path]:  # after the writer looked, before its temporary is renamed
        path.write_text("mine")
        return remove_stale_temporaries(target)

    monkeypatch.setattr(files, "remove_stale_temporaries", saving_meanwhile)
    said = f"{path} appeared while it was being written (another program?); it is kept: remove it or allow "
    for command_line, option in ((False, "replace=True"), (True, "--overwrite")):
        path.unlink(missing_ok=True)
        with pytest.raises(OutputExistsError) as raised:
            # no result: json_records, replaced above, never reads it
            write_json(path, None, replace=False, command_line=command_line)  # pyright: ignore[reportArgumentType]
        assert str(raised.value) == said + f"replacing it ({option}), and run again"
        assert path.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
