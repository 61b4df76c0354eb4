"""Arguments every subcommand shares the handling of (srfeat/commands/arguments.py), run as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from training_helpers import tiny_values, write_image_folders

# Each names a path as the empty string, as an unset shell variable does ("$IN"). Path("") is the
# working directory: upscale, eval and prepare took every image there, --json "" wrote nothing
# without a word, convert "" and blend -o "" were tracebacks.
EMPTY_PATHS = {
    "upscale input": ["upscale", ""],
    "upscale blank input": ["upscale", " "],
    "upscale -o": ["upscale", "photo.png", "-o", ""],
    "eval --data": ["eval", "--model", "bicubic", "--data", ""],
    "eval --json": ["eval", "--model", "bicubic", "--data", "photos", "--json", ""],
    "eval --figure": ["eval", "--model", "bicubic", "--data", "photos", "--figure", ""],
    "eval --plane": ["eval", "--model", "bicubic", "--data", "photos", "--plane", ""],
    "prepare src": ["prepare", "", "patches"],
    "prepare out": ["prepare", "photos", ""],
    "convert src": ["convert", ""],
    "convert -o": ["convert", "weights.npz", "-o", ""],
    "blend -o": ["blend", "default", "gan", "--alpha", "0.5", "-o", ""],
    "export -o": ["export", "-o", ""],
    "train config": ["train", ""],
    "train --out": ["train", "config.yaml", "--out", ""],
}


@pytest.mark.parametrize("argv", EMPTY_PATHS.values(), ids=EMPTY_PATHS.keys())
def test_an_empty_path_is_refused_before_anything_runs(argv: list[str], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for folder in (tmp_path, photos):  # what the working directory would have given
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(folder / "photo.png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    error = one_error_line(srfeat_cli(*argv, cwd=tmp_path), returncode=2)
    # train's config is a file: "a file or folder" asked for what it refuses
    expected = "a YAML config file (e.g. configs/dev/stage1.yaml)" if argv == ["train", ""] else "a file or folder path"
    assert f"is empty: give {expected}" in error, error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


# "-" is standard output to most tools: `upscale -o -` made a folder named "-" and `eval --json -` a file.
DASH_PATHS = {
    "upscale -o": ["upscale", "photo.png", "-o", "-"],
    "upscale input": ["upscale", "-"],
    "eval --json": ["eval", "--model", "bicubic", "--data", "photos", "--json", "-"],
    "prepare out": ["prepare", "photos", "-"],
}


@pytest.mark.parametrize("argv", DASH_PATHS.values(), ids=DASH_PATHS.keys())
def test_a_dash_for_a_path_is_refused_not_made_a_file_named_dash(argv: list[str], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for folder in (tmp_path, photos):
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(folder / "photo.png")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    error = one_error_line(srfeat_cli(*argv, cwd=tmp_path), returncode=2)
    assert "is '-'" in error and "not standard input or output" in error and "./-" in error, error
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no "-" made


@pytest.mark.parametrize("command", ["upscale", "eval", "train", "prepare", "convert", "blend", "export", "serve"])
def test_a_bad_option_of_every_command_is_one_line_without_the_usage_block(command: str) -> None:
    """train's own parser class (it lets key=value overrides follow options) printed argparse's
    usage block and a bare `error:` line."""
    error = one_error_line(srfeat_cli(command, "--no-such-option"), returncode=2, only=True)
    assert error.startswith(f"ERROR: srfeat {command}: ") and f"(see srfeat {command} --help)" in error, error


def test_a_tilde_the_shell_left_alone_is_the_home_folder_in_every_command(tmp_path: Path) -> None:
    """`--out=~/run` and a quoted '~/photos' reach srfeat unexpanded: prepare read a folder named
    '~' in the working directory, and train would have written its run into one."""
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "photos").mkdir(parents=True)
    work.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
        home / "photos" / "a.png"
    )
    env = {"HOME": str(home)}
    prepared = srfeat_cli(
        "prepare", "~/photos", "~/patches", "--hr-patch-size", "32", "--workers", "1", cwd=work, env=env
    )
    assert prepared.returncode == 0, prepared.stderr
    assert any((home / "patches" / "HR").iterdir()) and not (work / "~").exists()
    train, validation = write_image_folders(tmp_path / "images")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(train, validation, tmp_path / "unused")))
    dry = srfeat_cli("train", config, "--dry-run", "--out=~/run", cwd=work, env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"out_dir: {home / 'run'}" in dry.stdout, dry.stdout


def test_train_without_a_config_asks_for_the_config_alone() -> None:
    """`srfeat train` alone said "the following arguments are required: config, key=value": the
    overrides are optional (`srfeat train configs/dev/stage1.yaml` runs without any)."""
    error = one_error_line(srfeat_cli("train"), returncode=2, only=True)
    assert error == "ERROR: srfeat train: the following arguments are required: config (see srfeat train --help)"


@pytest.mark.parametrize("kind", ["character device", "named pipe"])
def test_convert_of_a_special_file_says_what_to_give(kind: str, tmp_path: Path) -> None:
    """`srfeat convert /dev/zero` said "is a character device, not a file" and no more."""
    import os

    source = Path("/dev/zero") if kind == "character device" else tmp_path / "pipe"
    if kind == "named pipe":
        os.mkfifo(source)
    error = one_error_line(srfeat_cli("convert", source, "-o", tmp_path / "x.safetensors"), only=True)
    assert f"{source} is a {kind}" in error and "give the authors' SRFeat_init.npz or SRFeat_full.npz" in error, error
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["upscale", "--help"]], ids=" ".join)
@pytest.mark.parametrize("stdout", ["a full disk", "a reader that went away"])
def test_help_and_version_that_cannot_be_written_say_so(argv: list[str], stdout: str) -> None:
    """`srfeat --version > /dev/full` and `--help` exited 0 with nothing written (argparse drops a
    failed write); as eval's table: a full disk is one line and status 1, a reader gone no error."""
    from cli_helpers import srfeat_cli_writing_to

    child = srfeat_cli_writing_to(stdout, *argv)
    if stdout == "a reader that went away":
        assert child.returncode == 0 and not child.stderr.strip(), child.stderr
    else:
        error = one_error_line(child, only=True)
        assert error == "ERROR: could not write to standard output: No space left on device", child.stderr


@pytest.mark.parametrize("frames", ["-1:", "-5:-1"])
def test_frames_with_a_negative_start_gets_the_options_own_message_spaced_or_joined(frames: str) -> None:
    """argparse took "-1:" for an option: `--frames -1:` was "expected one argument", while `--frames=-1:`
    got the range's own message. Both are refused before any input is looked at (none exists here)."""
    expected = f"ERROR: srfeat upscale: argument --frames: {frames!r}: need 0 <= A < B (frames counted from 0"
    for argv in (["--frames", frames], [f"--frames={frames}"]):
        error = one_error_line(srfeat_cli("upscale", "missing.mp4", *argv), returncode=2, only=True)
        assert error.startswith(expected), error
    # A missing value is still missing: the next option is not taken for it.
    error = one_error_line(srfeat_cli("upscale", "missing.mp4", "--frames", "-o", "out"), returncode=2, only=True)
    assert "argument --frames: expected one argument" in error, error


@pytest.mark.parametrize(
    "args",
    [
        ["train", "config.yaml", "--max-steps", "9" * 5000],
        ["upscale", "a.png", "--outscale", "4" * 5000 + "x"],
        ["upscale", "a.png", "--ext", "g" * 5000],
    ],
    ids=["int", "float", "choice"],
)
def test_a_long_value_argparse_refuses_is_quoted_cut_short(args: list[str]) -> None:
    # argparse quoted it whole: a 5,000-digit --max-steps was an error line of 5,000 characters
    line = one_error_line(srfeat_cli(*args), returncode=2, only=True)
    assert f"{args[-2]}: invalid" in line and "..." in line and "' (5,00" in line and len(line) < 400, line


# Each command with --device, run as a user runs it on this machine (no GPU in the tests' environment).
DEVICE_COMMANDS = {
    "upscale": ["upscale", "a.png", "-o", "out/"],
    "eval": ["eval", "--model", "bicubic", "--data", "photos", "--metrics", "psnr"],
    "serve": ["serve", "--port", "0"],
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there: --device cuda is not refused")
@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
@pytest.mark.parametrize("argv", DEVICE_COMMANDS.values(), ids=DEVICE_COMMANDS.keys())
def test_a_missing_gpu_names_the_flag_not_the_python_keyword(tmp_path: Path, argv: list[str], device: str) -> None:
    """`srfeat upscale --device cuda` without a GPU said "use --device cpu (device='cpu')", a Python
    keyword the user of the command never gave."""
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.png")
    line = one_error_line(srfeat_cli(*argv, "--device", device, cwd=tmp_path), only=True)
    assert line == f"ERROR: device {device} requested but no CUDA GPU is available; use --device cpu", line


@pytest.mark.parametrize("argv", DEVICE_COMMANDS.values(), ids=DEVICE_COMMANDS.keys())
def test_an_unknown_device_names_neither_flag_nor_keyword(tmp_path: Path, argv: list[str]) -> None:
    line = one_error_line(srfeat_cli(*argv, "--device", "tpu", cwd=tmp_path), only=True)
    assert line == "ERROR: unknown device 'tpu': use cpu, cuda, cuda:N or auto", line


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_verbose_is_taken_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    """`srfeat upscale -v photo.png` was "unrecognized arguments: -v": only `srfeat -v upscale` took it."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    argv = ["upscale", tmp_path / "a.png", "-o", tmp_path / "out.png"]
    child = srfeat_cli("-v", *argv) if where == "before the command" else srfeat_cli(*argv[:1], "-v", *argv[1:])
    assert child.returncode == 0, child.stderr
    assert " DEBUG: " in child.stderr and (tmp_path / "out.png").is_file(), child.stderr


@pytest.mark.parametrize("command", ["upscale", "eval", "train", "prepare", "convert", "blend", "export", "serve"])
def test_every_command_takes_verbose_and_says_so_in_its_help(command: str) -> None:
    help_text = srfeat_cli(command, "--help").stdout
    assert re.search(r"-v, --verbose\s+log debug messages", help_text), help_text


def test_device_reads_the_same_in_every_command_that_takes_it() -> None:
    """eval's --device said "auto (default)", upscale's and serve's what auto picks."""
    takers = []
    for command in ("upscale", "eval", "train", "prepare", "convert", "blend", "export", "serve"):
        help_text = " ".join(srfeat_cli(command, "--help").stdout.split())
        if "--device DEVICE " in help_text:
            takers.append(command)
            assert "--device DEVICE cpu, cuda, cuda:N or auto (default: the GPU if there is one" in help_text, command
    assert takers == ["upscale", "eval", "serve"]


@pytest.mark.parametrize("flag", ["-o", "--output", "--out"])
def test_train_names_its_run_folder_with_the_output_flag_of_the_other_commands(flag: str, tmp_path: Path) -> None:
    """upscale, convert, blend and export take -o/--output; train took --out alone: `-o runs/x` was a usage error."""
    train, validation = write_image_folders(tmp_path / "images")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(train, validation, tmp_path / "unused")))
    dry = srfeat_cli("train", config, flag, tmp_path / "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"out_dir: {tmp_path / 'run'}" in dry.stdout, dry.stdout


def test_tile_reads_and_is_refused_the_same_in_upscale_and_serve(tmp_path: Path) -> None:
    """serve's --tile help left out 0 (no tiling), and a negative one was "must be positive" there, where
    upscale said "must be a tile size in pixels"."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    refusals = set()
    for argv in (["upscale", tmp_path / "a.png", "-o", tmp_path / "out"], ["serve", "--no-browser", "--port", "0"]):
        help_text = " ".join(srfeat_cli(argv[0], "--help").stdout.split())
        assert "--tile N tile size in input pixels (default: chosen from free memory; 0: no tiling)" in help_text
        refusals.add(one_error_line(srfeat_cli(*argv, "--tile", "-5"), only=True))
    assert refusals == {"ERROR: --tile must be a tile size in pixels (or 0 for no tiling), got -5"}, refusals
    assert not (tmp_path / "out").exists()


def test_outscale_help_gives_the_range_the_command_takes() -> None:
    """The range was in the README only: the help said "final scale, if not the model's"."""
    from srfeat.inference.checks import MAX_OUTSCALE

    help_text = " ".join(srfeat_cli("upscale", "--help").stdout.split())
    assert (
        f"above 0 and at most {MAX_OUTSCALE:g} "
        in help_text.partition("--outscale S final scale")[2].partition("--model")[0]
    )
    refused = one_error_line(srfeat_cli("upscale", "a.png", "--outscale", f"{MAX_OUTSCALE + 0.5:g}"))
    assert (
        refused == f"ERROR: --outscale must be a number above 0 and at most {MAX_OUTSCALE:g}, got {MAX_OUTSCALE + 0.5}"
    )


def help_of_option(command: str, option: str) -> str:
    """What `srfeat COMMAND --help` says of `option` (its entry, on one line: argparse wraps it)."""
    help_text = srfeat_cli(command, "--help").stdout
    entry = re.search(rf"^  {re.escape(option)}\b.*?(?=^  -)", help_text, re.MULTILINE | re.DOTALL)
    assert entry is not None, help_text
    return " ".join(entry.group().split())


def test_each_half_says_what_it_halves() -> None:
    """`srfeat prepare --half` is half-size images (aug_data_div2k_half.m), `srfeat upscale --half` float16: one flag
    name, two meanings, so each help says which it is, and prepare's that it is not fp16."""
    prepare = help_of_option("prepare", "--half, --no-half")
    assert prepare.startswith("--half, --no-half half-size images, not fp16"), prepare
    assert "shrunk to half its width and height" in prepare, prepare
    upscale = help_of_option("upscale", "--half")
    assert upscale.startswith("--half half precision: float16"), upscale
    assert "size is not halved" in upscale, upscale
