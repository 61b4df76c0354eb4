"""File names at and beyond the file system's limit (srfeat/path_checks.py, files.py, commands/arguments.py).

Linux's file systems take names of up to 255 bytes. A file named right up to it could not be
written (its temporary, `.NAME.PID.tmp`, was longer); a longer name was a traceback from the
first look at it (`Path.exists` raises ENAMETOOLONG), or an error after the whole upscale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

from srfeat.files import remove_stale_temporaries, temporary_path, write_file_atomically
from srfeat.path_checks import name_max


def photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)
    return path


def test_a_file_named_up_to_the_limit_is_written_and_its_stale_temporaries_found(tmp_path: Path) -> None:
    limit = name_max(tmp_path)
    target = tmp_path / ("n" * (limit - len(".png")) + ".png")
    assert len(os.fsencode(target.name)) == limit
    temporary = temporary_path(target)
    assert len(os.fsencode(temporary.name)) <= limit and temporary.name.endswith(f".{os.getpid()}.tmp")
    write_file_atomically(target, lambda handle: handle.write(b"done"), 4)
    assert target.read_bytes() == b"done" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    # a writer killed mid-write (a process id that no longer runs) left one: the next write removes it
    stale = temporary.with_name(temporary.name.replace(f".{os.getpid()}.tmp", ".4194303.tmp"))
    stale.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [stale] and not stale.exists()


def test_a_multibyte_name_is_counted_in_bytes(tmp_path: Path) -> None:
    target = tmp_path / ("é" * 126 + ".png")  # 252 + 4 = 256 bytes, 130 characters
    assert len(os.fsencode(temporary_path(target).name)) <= name_max(tmp_path)


def test_an_upscale_to_a_name_at_the_limit_works(tmp_path: Path) -> None:
    source = photo(tmp_path / "in.png")
    target = tmp_path / "out" / ("o" * (name_max(tmp_path) - len(".png")) + ".png")
    child = srfeat_cli("upscale", source, "-o", target, "--model", "default")
    assert child.returncode == 0, child.stderr
    assert Image.open(target).size == (32, 32) and [p.name for p in target.parent.iterdir()] == [target.name]


def test_an_input_whose_output_name_would_be_too_long_is_named_before_any_upscale(tmp_path: Path) -> None:
    limit = name_max(tmp_path)
    long_one = photo(tmp_path / "in" / ("l" * (limit - len(".png")) + ".png"))  # fits; with _x4 it does not
    photo(tmp_path / "in" / "short.png")
    child = srfeat_cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "--suffix", "_x4", "--model", "default")
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    (error,) = [line for line in child.stderr.splitlines() if line.startswith(f"ERROR: {long_one}")]
    assert f"is {limit + 3} bytes, more than the {limit}" in error and "--suffix" in error, error
    assert "ERROR: 1 of 2 input(s) failed" in child.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["short_x4.png"]  # the others still done


@pytest.mark.parametrize(
    "argv",
    [
        ["upscale", "{long}.png"],
        ["upscale", "photo.png", "-o", "{long}.png"],
        ["eval", "--model", "bicubic", "--data", ".", "--json", "{long}.json"],
        ["blend", "default", "gan", "--alpha", "0.5", "-o", "{long}.safetensors"],
        ["export", "-o", "{long}.onnx"],
        ["train", "{long}.yaml"],
    ],
    ids=["input", "upscale -o", "eval --json", "blend -o", "export -o", "train config"],
)
def test_a_path_with_a_name_too_long_for_any_file_system_is_one_line(argv: list[str], tmp_path: Path) -> None:
    photo(tmp_path / "photo.png")
    long = "x" * (name_max(tmp_path) + 5)
    error = one_error_line(srfeat_cli(*(a.format(long=long) for a in argv), cwd=tmp_path), returncode=2)
    assert f"a name in it is {len(long) + len(Path(argv[-1]).suffix)} bytes" in error
    assert f"more than the {name_max(tmp_path)} the file system takes" in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # nothing made
