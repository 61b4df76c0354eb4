"""File names a user's system can make: control characters (a newline, an escape sequence) and bytes
that are not UTF-8 (a Latin-1 system's `caf\\xe9`, which Python holds with surrogates)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cli_helpers import srfeat_cli
from PIL import Image
from training_helpers import tiny_generator_file

LATIN_1 = os.fsdecode(b"caf\xe9")  # 'caf\udce9'


def photo(path: Path, **options: object) -> Path:
    Image.fromarray(np.full((12, 16, 3), 100, np.uint8)).save(path, **options)  # pyright: ignore[reportArgumentType]
    return path


def test_control_characters_in_names_are_escaped_in_every_line_on_standard_error(tmp_path: Path) -> None:
    model = tiny_generator_file(tmp_path / "tiny.safetensors")
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo(inputs / "name\nERROR: x.png")
    photo(inputs / "esc\x1b[2Jred.png")
    (inputs / "bad\nERROR: fake.png").write_bytes(b"not an image")
    child = srfeat_cli("upscale", inputs, "-o", tmp_path / "out", "--model", model)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "\x1b" not in child.stderr
    errors = [line for line in child.stderr.splitlines() if line.startswith("ERROR")]
    # the damaged file's line and the count: no fake ERROR line from a name, none cut in two
    assert len(errors) == 2 and "bad\\nERROR: fake.png" in errors[0] and "1 of 3" in errors[1], child.stderr
    assert "INFO: " + str(inputs / "name\\nERROR: x.png") in child.stderr
    assert str(inputs / "esc\\x1b[2Jred.png") in child.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["esc\x1b[2Jred.png", "name\nERROR: x.png"]


def test_an_argument_holding_a_newline_is_refused_in_one_line(tmp_path: Path) -> None:
    # no space in it: argparse takes it for an option, not an input
    child = srfeat_cli("upscale", photo(tmp_path / "x.png"), "--bogus\nERROR:fake", cwd=tmp_path)
    assert child.returncode == 2 and child.stderr.count("\n") == 1, child.stderr
    assert "--bogus\\nERROR:fake" in child.stderr and not (tmp_path / "results").exists()
