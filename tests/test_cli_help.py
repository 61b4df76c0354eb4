"""An option several commands take reads the same in each command's --help, as a user sees it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

from srfeat.weights import bundled_names

COMMANDS = ("upscale", "eval", "train", "prepare", "serve", "export", "convert", "blend")

# Options whose help says what this command does with them, so it differs by nature (their spellings and
# metavars still agree): what -o names and what --overwrite replaces are each command's own output;
# eval upscales by --scale where prepare shrinks its patches by it.
OWN_HELP = {"-o", "--output", "--out", "--overwrite", "--scale"}
# Two options that share a name and nothing else: prepare's --half (with --no-half) cuts patches from the
# image at half size, upscale's computes in float16.
NOT_THE_SAME_OPTION = {"--half"}


@dataclass(frozen=True)
class OptionHelp:
    spellings: tuple[str, ...]  # as listed: ("-o", "--output", "--out")
    metavar: str  # the first word after the first spelling: "OUT", "MODEL", "{2,4}", or ""
    text: str


def option_helps(command: str) -> dict[str, OptionHelp]:
    """Each option of `srfeat COMMAND --help`, by each of its spellings; wide enough that no help wraps."""
    child = srfeat_cli(command, "--help", env={"COLUMNS": "1000"})
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    options: dict[str, OptionHelp] = {}
    for index, line in enumerate(lines):
        match = re.fullmatch(r"  (-\S.*?)(?: {2,}(\S.*))?", line)
        if match is None:
            continue
        invocation, text = match.groups()
        if text is None:  # a long invocation puts the help on the next line
            text = lines[index + 1].strip()
        forms = invocation.split(", ")
        spellings = tuple(form.split(" ", 1)[0] for form in forms)
        metavar = forms[0].split(" ")[1] if " " in forms[0] else ""
        help_line = OptionHelp(spellings, metavar, " ".join(text.split()))
        options.update(dict.fromkeys(spellings, help_line))
    return options


def shared_options() -> dict[str, dict[str, OptionHelp]]:
    """Every option spelling two or more commands take: command -> its help."""
    by_spelling: dict[str, dict[str, OptionHelp]] = {}
    for command in COMMANDS:
        for spelling, help_line in option_helps(command).items():
            by_spelling.setdefault(spelling, {})[command] = help_line
    return {
        spelling: takers
        for spelling, takers in by_spelling.items()
        if len(takers) > 1 and spelling not in {"-h", *NOT_THE_SAME_OPTION}
    }


def without_default(text: str) -> str:
    """The help before a closing "; default: ..." or " (default ...)", which each command may state its own."""
    return re.sub(r"(; default: .*| \(default[^()]*\))$", "", text)


@pytest.fixture(scope="module")
def shared() -> dict[str, dict[str, OptionHelp]]:
    return shared_options()


def test_the_options_the_commands_share_are_found(shared: dict[str, dict[str, OptionHelp]]) -> None:
    """The checks below look at what they should: the options known to be shared, by the commands known to."""
    assert set(shared["--device"]) == {"upscale", "eval", "serve"}
    assert set(shared["--model"]) == {"upscale", "eval", "export"}
    assert set(shared["-o"]) == {"upscale", "train", "export", "convert", "blend"}
    assert {"--strength", "--tta", "--tile", "--overwrite", "-v", "--verbose"} <= set(shared)


def test_a_shared_option_is_spelt_and_named_the_same_in_every_command(
    shared: dict[str, dict[str, OptionHelp]],
) -> None:
    """export's -o read FILE and train's DIR where the others said OUT; train listed --out first and upscale,
    export and blend took no --out; eval's --model read M where upscale's and export's said MODEL."""
    for spelling, takers in shared.items():
        forms = {command: (help_line.spellings, help_line.metavar) for command, help_line in takers.items()}
        assert len(set(forms.values())) == 1, (spelling, forms)


def test_a_shared_option_is_described_in_the_same_words_in_every_command(
    shared: dict[str, dict[str, OptionHelp]],
) -> None:
    """--model read "a bundled model name (e.g. default), a checkpoint or ..." in upscale, "(default, gan) or a
    generator checkpoint" in export, "a bundled name (e.g. default), a checkpoint path" in eval; --strength and
    --tta were worded otherwise in each command. One command may add what it alone accepts or does (upscale
    an .onnx model, eval 'bicubic'), after the words they share."""
    for spelling, takers in shared.items():
        if spelling in OWN_HELP:
            continue
        texts = {command: help_line.text for command, help_line in takers.items()}
        common = min((without_default(text) for text in texts.values()), key=len)
        differing = {command: text for command, text in texts.items() if not text.startswith(common)}
        assert not differing, (spelling, common, differing)


def test_the_model_help_names_every_bundled_model(shared: dict[str, dict[str, OptionHelp]]) -> None:
    """The help lists the bundled names by hand (arguments.py does not import torch): a generator added to
    the package is named there too."""
    names = re.search(r"a bundled model name \(([^)]*)\)", shared["--model"]["upscale"].text)
    assert names is not None, shared["--model"]["upscale"].text
    assert names.group(1).split(", ") == bundled_names()


def test_upscale_takes_out_as_train_and_convert_do(tmp_path: Path) -> None:
    """Train and convert took --out for -o; in upscale it was "ambiguous option: --out could match --output,
    --outscale", and export and blend took it only as argparse's abbreviation of --output."""
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")
    child = srfeat_cli("upscale", tmp_path / "a.png", "--out", tmp_path / "big.png", "--device", "cpu")
    assert child.returncode == 0, child.stderr
    with Image.open(tmp_path / "big.png") as written:
        assert written.size == (32, 32)


def test_strength_out_of_range_is_refused_in_the_same_words_by_upscale_and_export(tmp_path: Path) -> None:
    """export said "strength must be between 0 and 1", upscale "--strength must be ..."."""
    pytest.importorskip("onnx")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")
    refusals = {
        one_error_line(srfeat_cli(*argv, "--strength", "2"), only=True)
        for argv in (["upscale", tmp_path / "a.png", "-o", tmp_path / "b.png"], ["export", "-o", tmp_path / "b.onnx"])
    }
    assert refusals == {"ERROR: --strength must be between 0 and 1 (0 = default, 1 = gan), got 2.0"}, refusals
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "b.onnx").exists()
