"""The README's helper scripts (figures, shipping) as a user runs them: bad input is one line, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, python_path: Path = REPO) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        check=False,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last and all(word in last for word in words), result.stderr


@pytest.mark.parametrize("content", [None, "not JSON\n", "[]\n", '{"model": "default"}\n'])
def test_better_on_all_sets_passes_nothing_it_cannot_read(tmp_path: Path, content: str | None) -> None:
    """The shipping test (`better_on_all_sets.py eval.json new default && ship_weights.py ...`) must not
    call a candidate better on no evidence: an empty record list passed it on zero datasets."""
    path = tmp_path / "eval.json"
    if content is not None:
        path.write_text(content)
    result = run_script("better_on_all_sets.py", str(path), "new_default", "default")
    assert result.returncode == 1 and "is better" not in result.stdout
    assert_one_line_error(result, str(path))


def test_better_on_all_sets_needs_a_metric(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([{"model": "new", "dataset": "Set5"}, {"model": "old", "dataset": "Set5"}]))
    result = run_script("better_on_all_sets.py", str(path), "new", "old", "--higher")
    assert result.returncode == 2 and "is better" not in result.stdout
    assert_one_line_error(result, "metric")


def test_plot_plane_refuses_missing_and_empty_records_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "bicubic.json"
    assert_one_line_error(run_script("plot_plane.py", str(missing), "-o", str(tmp_path / "plane.png")), str(missing))
    empty = tmp_path / "empty.json"
    empty.write_text("[]\n")
    result = run_script("plot_plane.py", str(empty), "-o", str(tmp_path / "plane.png"))
    assert_one_line_error(result, "nothing to draw")
    assert not (tmp_path / "plane.png").exists()


def test_plot_training_refuses_a_missing_log_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "metrics.jsonl"
    result = run_script("plot_training.py", str(missing), "-o", str(tmp_path / "training.png"))
    assert_one_line_error(result, str(missing))


def test_plot_training_keeps_the_plot_s_height_however_many_runs_are_listed(tmp_path: Path) -> None:
    """The legend below the axes took its rows out of the plot: with ten runs listed it covered the x-axis
    label and squeezed the curves into a strip. Now the figure grows by the legend's rows."""
    from PIL import Image

    runs = []
    for index in range(10):
        path = tmp_path / f"run_{index}.jsonl"
        records = [{"kind": "validation", "step": step, "psnr": 30.0 + index / 10 + step / 1e4} for step in (100, 200)]
        if index == 0:  # a GAN run's NIQE goes on an axis of its own, with its own legend entry
            records = [{**record, "niqe": 5.0} for record in records]
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
        runs.append(str(path))
    heights = []
    for listed in (1, 10):
        out = tmp_path / f"training_{listed}.png"
        result = run_script("plot_training.py", *runs[:listed], "-o", str(out))
        assert result.returncode == 0, result.stderr
        with Image.open(out) as image:
            heights.append(image.height)
    # one run: its PSNR and NIQE entries share a row; ten: eleven entries in four rows of three
    assert heights[1] - heights[0] >= 3 * 0.25 * 100 * 0.9, heights


def test_ship_weights_refuses_what_is_not_a_generator_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "new_default.safetensors"
    missing = tmp_path / "runs" / "generator_best.safetensors"
    result = run_script("ship_weights.py", str(missing), "default", "--output", str(target))
    assert_one_line_error(result, str(missing))
    not_weights = tmp_path / "notes.safetensors"
    not_weights.write_text("not weights\n")
    assert_one_line_error(run_script("ship_weights.py", str(not_weights), "default", "--output", str(target)))
    assert not target.exists()


def test_scripts_import_their_checkouts_srfeat_not_an_installed_one(tmp_path: Path, model_path: Path) -> None:
    """`python3 scripts/ship_weights.py X default` in one worktree wrote into the installed package's
    weights (another worktree's): scripts/ is first on the path, not the checkout."""
    other = tmp_path / "other_install" / "srfeat"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('the srfeat of another install')\n")
    target = tmp_path / "shipped.safetensors"
    result = run_script(
        "ship_weights.py", str(model_path), "default", "--output", str(target), python_path=other.parent
    )
    assert result.returncode == 0 and target.exists(), result.stderr
    for script in ("plot_plane.py", "plot_training.py"):
        result = run_script(script, "--help", python_path=other.parent)
        assert result.returncode == 0 and "another install" not in result.stderr, result.stderr
