"""File names a user's system can make: control characters (a newline, an escape sequence) and bytes
that are not UTF-8 (a Latin-1 system's `caf\\xe9`, which Python holds with surrogates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import CHILD_ENV, REPO, one_error_line, srfeat_cli
from PIL import Image
from safetensors.torch import load_file
from training_helpers import tiny_generator_file, tiny_values, write_image_folders

LATIN_1 = os.fsdecode(b"caf\xe9")  # 'caf\udce9'


def photo(path: Path, **options: Any) -> Path:
    Image.fromarray(np.full((12, 16, 3), 100, np.uint8)).save(path, **options)
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


BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("control", BIDI_CONTROLS)
def test_a_bidirectional_control_is_escaped_so_a_name_shows_in_its_own_order(control: str) -> None:
    from srfeat.errors import printable

    # `photo\u202egnp.exe` displayed as `photoexe.png`: the override reversed what followed it
    assert printable(f"photo{control}gnp.exe") == f"photo\\u{ord(control):04x}gnp.exe"


def test_joiners_and_variation_selectors_of_emoji_names_are_kept() -> None:
    from srfeat.errors import printable

    family, heart = "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u2764\ufe0f"
    assert printable(f"{family} {heart} caf\u00e9.png") == f"{family} {heart} caf\u00e9.png"


def test_shown_writes_a_byte_that_is_not_utf8_as_xe9_and_a_typed_backslash_as_typed() -> None:
    from srfeat.errors import shown

    assert shown(f"{LATIN_1}/") == "'caf\\xe9/'"
    assert shown(Path(LATIN_1)) == "PosixPath('caf\\xe9')"
    assert shown("caf\\udce9") == "'caf\\\\udce9'"  # the text typed, backslash and all: its repr, unchanged


def test_a_name_holding_a_right_to_left_override_is_escaped_on_standard_error(tmp_path: Path) -> None:
    model = tiny_generator_file(tmp_path / "tiny.safetensors")
    damaged = tmp_path / "photo\u202egnp.png"
    damaged.write_bytes(b"not an image")
    child = srfeat_cli("upscale", damaged, "-o", tmp_path / "out", "--model", model, env={"PYTHONIOENCODING": "utf-8"})
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "cannot read image " + str(tmp_path / "photo\\u202egnp.png") in child.stderr
    assert "\u202e" not in child.stderr


def test_an_argument_holding_a_newline_is_refused_in_one_line(tmp_path: Path) -> None:
    # no space in it: argparse takes it for an option, not an input
    child = srfeat_cli("upscale", photo(tmp_path / "x.png"), "--bogus\nERROR:fake", cwd=tmp_path)
    assert child.returncode == 2 and child.stderr.count("\n") == 1, child.stderr
    assert "--bogus\\nERROR:fake" in child.stderr and not (tmp_path / "results").exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_checkpoint_whose_name_is_not_utf8_loads(tmp_path: Path, suffix: str) -> None:
    tiny = tiny_generator_file(tmp_path / "tiny.safetensors")
    model = tmp_path / f"{LATIN_1}{suffix}"
    if suffix == ".pt":
        torch.save(load_file(str(tiny)), tmp_path / "made.pt")
        (tmp_path / "made.pt").rename(model)
    else:
        tiny.rename(model)
    child = srfeat_cli("upscale", photo(tmp_path / "x.png"), "-o", tmp_path / "out", "--model", model)
    assert child.returncode == 0, child.stderr
    assert Image.open(tmp_path / "out" / "x.png").size == (64, 48)


def test_a_compressed_tiff_whose_name_is_not_utf8_is_written(tmp_path: Path) -> None:
    model = tiny_generator_file(tmp_path / "tiny.safetensors")
    source = photo(tmp_path / "made.tif", compression="tiff_lzw").rename(tmp_path / f"{LATIN_1}.tif")
    later = photo(tmp_path / "later.png")
    child = srfeat_cli("upscale", source, later, "-o", tmp_path / "out", "--model", model)
    assert child.returncode == 0, child.stderr
    assert Image.open(tmp_path / "out" / source.name).size == (64, 48)
    assert Image.open(tmp_path / "out" / later.name).size == (64, 48)


def test_a_training_run_in_a_folder_whose_name_is_not_utf8_trains_and_resumes(tmp_path: Path) -> None:
    import yaml

    train, validation = write_image_folders(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(train, validation, tmp_path / "unused")))
    out = tmp_path / LATIN_1 / "run"
    out.parent.mkdir()
    readable = {"PYTHONIOENCODING": "utf-8:backslashreplace"}  # its last line names the run folder
    child = srfeat_cli("train", config, "--out", out, "--no-progress", timeout=600, env=readable)
    assert child.returncode == 0, child.stderr
    assert list((out / "tensorboard").glob("events.out.tfevents.*")) and (out / "state.pt").is_file()
    resume = ("--resume", "--max-steps", "6", "--no-progress")
    child = srfeat_cli("train", config, "--out", out, *resume, timeout=600, env=readable)
    assert child.returncode == 0 and "step 6" in child.stderr, child.stderr


def test_a_table_naming_a_file_that_is_not_utf8_is_printed_under_a_strict_utf8_locale(tmp_path: Path) -> None:
    model = tmp_path / f"{LATIN_1}.safetensors"
    tiny_generator_file(tmp_path / "tiny.safetensors").rename(model)
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(data / "a.png")
    # a UTF-8 locale that is installed (en_US.UTF-8) gives standard output strict errors
    child = subprocess.run(
        [sys.executable, "-m", "srfeat.cli", "eval", "--model", str(model), "--data", str(data), "--metrics", "psnr"],
        cwd=REPO,
        env={**CHILD_ENV, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode(errors="replace")
    assert b"| caf\\xe9 | set | 1 |" in child.stdout  # as its --json writes it: a table is text, UTF-8


def test_messages_write_the_bytes_of_a_name_that_is_not_utf8_as_a_shell_types_them(tmp_path: Path) -> None:
    """Standard error wrote `caf\\xe9` as `caf\\udce9`, which no shell or editor takes: now as `ls -b` shows it."""
    missing = srfeat_cli("upscale", tmp_path / f"{LATIN_1}.png", "-o", tmp_path / "out")
    assert one_error_line(missing) == f"ERROR: input not found: {tmp_path}/caf\\xe9.png", missing.stderr
    photo(tmp_path / f"{LATIN_1} 2.png")
    unknown = srfeat_cli("upscale", tmp_path / f"{LATIN_1} 2.png", "--tlie", "64")  # argparse's own error
    assert unknown.returncode == 2 and "--tlie" in unknown.stderr and "\\udc" not in unknown.stderr, unknown.stderr
    model = tiny_generator_file(tmp_path / "tiny.safetensors")
    done = srfeat_cli("upscale", tmp_path / f"{LATIN_1} 2.png", "-o", tmp_path / "out", "--model", model)
    assert done.returncode == 0 and "caf\\xe9 2" in done.stderr and "\\udc" not in done.stderr, done.stderr
    assert (tmp_path / "out" / f"{LATIN_1} 2.png").is_file()


@pytest.mark.parametrize(
    "arguments, said",
    [
        (["upscale", "IN", "--suffix", f"{LATIN_1}/"], "ERROR: --suffix 'caf\\xe9/' contains a path separator"),
        (["upscale", "IN", "--frames", LATIN_1], "argument --frames: 'caf\\xe9' is not A:B"),
        (["eval", "--data", "IN", "--figure-crop", LATIN_1], "argument --figure-crop: 'caf\\xe9' is not a whole"),
        (["eval", "--data", "IN", "--model", f"strength={LATIN_1}"], "model spec 'strength=caf\\xe9': 'caf\\xe9' is"),
        (["serve", "--host", f"{LATIN_1}:80"], "ERROR: cannot listen on host 'caf\\xe9:80': it names a port"),
        (["serve", "--host", LATIN_1], "ERROR: cannot listen on host 'caf\\xe9': not a valid host name"),
    ],
)
def test_options_quoted_in_messages_write_bytes_that_are_not_utf8_as_a_shell_types_them(
    tmp_path: Path, arguments: list[str], said: str
) -> None:
    """A value quoted by its repr wrote such a byte `\\udce9` (`--suffix '\\udce9/'`), which no shell takes."""
    photo(tmp_path / "in.png")
    child = srfeat_cli(*(str(tmp_path / "in.png") if part == "IN" else part for part in arguments))
    assert child.returncode != 0 and said in child.stderr and "\\udc" not in child.stderr, child.stderr
    assert len(child.stderr.strip().splitlines()) == 1, child.stderr


def test_json_names_files_that_are_not_utf8_in_utf8(tmp_path: Path) -> None:
    """`--json` wrote a Latin-1 name as `\\udce9`, a lone surrogate that strict JSON readers refuse."""
    model = tiny_generator_file(tmp_path / "tiny.safetensors").rename(tmp_path / f"{LATIN_1}.safetensors")
    data = tmp_path / f"set{LATIN_1}"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(data / f"{LATIN_1}.png")
    scored = ("eval", "--model", model, "--data", data, "--metrics", "psnr", "--per-image")
    child = srfeat_cli(*scored, "--json", tmp_path / "scores.json", env={"PYTHONIOENCODING": "utf-8:backslashreplace"})
    assert child.returncode == 0, child.stderr
    (record,) = json.loads((tmp_path / "scores.json").read_bytes().decode("utf-8"))
    names = [record["model"], record["dataset"], record["per_image"][0]["image"]]
    assert names == ["caf\\xe9", "setcaf\\xe9", "caf\\xe9"]  # as `ls -b` shows them
    for name in names:
        name.encode("utf-8")  # no lone surrogate


def test_figures_name_folders_that_are_not_utf8_and_models_that_hold_a_dollar(tmp_path: Path) -> None:
    from skimage import data as samples

    # the folder's name reaches both figures; `$\q$` would be mathtext, with a symbol it does not know
    models = [tiny_generator_file(tmp_path / "m$\\q$.safetensors")]
    folder = tmp_path / f"set{LATIN_1}"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(samples.astronaut()[:128, 100:228])).save(folder / "a.png")
    env = {"PYTHONIOENCODING": "utf-8:backslashreplace"}  # the table names them
    scored = ("eval", *(part for model in models for part in ("--model", model)), "bicubic", "--data", folder)
    child = srfeat_cli(*scored, "--metrics", "psnr", "--figure", tmp_path / "figure.png", env=env)
    assert child.returncode == 0, child.stderr
    assert Image.open(tmp_path / "figure.png").size[0] > 0
    child = srfeat_cli(*scored, "--metrics", "psnr", "niqe", "--plane", tmp_path / "plane.png", env=env)
    assert child.returncode == 0, child.stderr
    assert Image.open(tmp_path / "plane.png").size[0] > 0


def test_vgg_weights_whose_name_is_not_utf8_are_read(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from srfeat.archs.vgg import load_torchvision_state
    from srfeat.errors import WeightsError

    made = tmp_path / "made.safetensors"
    save_file({"features.0.weight": torch.zeros(2, 3, 3, 3)}, made)
    path = made.rename(tmp_path / f"{LATIN_1}.safetensors")  # model.vgg_weights, in a folder a Latin-1 system named
    with pytest.raises(WeightsError, match="has 1 of the 32 conv5_4 tensors"):  # read: its contents are judged
        load_torchvision_state(path)


def test_an_override_naming_a_folder_that_is_not_utf8_is_taken(tmp_path: Path) -> None:
    import yaml

    train, validation = write_image_folders(tmp_path / LATIN_1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(tmp_path / "elsewhere", None, tmp_path / "run")))
    child = srfeat_cli(
        "train", config, "--dry-run", f"data.train_dirs=[{train}]", f"validation.dir={validation}", cwd=tmp_path
    )
    assert child.returncode == 0, child.stderr
    assert "training data: 3 image(s)" in child.stderr and "validation.dir: 1 image(s)" in child.stderr


def test_a_config_in_latin_1_is_named_as_text_not_binary_data(tmp_path: Path) -> None:
    config = tmp_path / "latin.yaml"
    config.write_bytes(b"stage: 1\nout_dir: /home/caf\xe9/run\n")
    error = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert "is not UTF-8 text (line 2): save it as UTF-8" in error


def test_an_output_that_is_or_lies_in_a_link_loop_is_one_line_and_replaced_only_with_overwrite(tmp_path: Path) -> None:
    """`-o loop.png` (a link to itself), or a folder whose entry of the output's name is one, was a traceback
    from `Path.resolve` ("RuntimeError: Symlink loop") before Python 3.13."""
    model = tiny_generator_file(tmp_path / "tiny.safetensors")
    source = photo(tmp_path / "a.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to("a.png")  # out/a.png -> out/a.png
    for output in ("loop.png", "out"):
        child = srfeat_cli("upscale", source, "-o", tmp_path / output, "--model", model, cwd=tmp_path)
        assert "exists; use --overwrite" in one_error_line(child), child.stderr
    assert os.readlink(tmp_path / "loop.png") == "loop.png"  # kept
    child = srfeat_cli("upscale", source, "-o", "loop.png", "--model", model, "--overwrite", cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    assert Image.open(tmp_path / "loop.png").size == (64, 48)


def test_a_link_to_a_device_is_named_as_such_not_as_a_link_to_nothing(tmp_path: Path) -> None:
    """`ln -s /dev/zero z.png` was "broken symbolic link (its target /dev/zero does not exist)", then "a pipe,
    socket or device": it names the kind."""
    (tmp_path / "z.png").symlink_to(os.devnull)
    child = srfeat_cli("upscale", "z.png", "-o", "out", cwd=tmp_path)
    line = one_error_line(child)
    assert "input z.png is a character device, not an image file or folder" in line and "broken" not in line, line
