"""What every subcommand's arguments share: one-line errors, and the check of a path argument."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from srfeat.path_checks import path_too_long

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = [
    "DEVICE_HELP",
    "MODEL_HELP",
    "MODEL_METAVAR",
    "OUTPUT_FLAGS",
    "OUTPUT_METAVAR",
    "STRENGTH_HELP",
    "TILE_HELP",
    "TTA_HELP",
    "OneLineErrorParser",
    "add_precision_arguments",
    "join_dash_values",
    "path_argument",
    "precision",
    "tell_of_bf16",
    "tile_problem",
]

logger = logging.getLogger(__name__)

# --device of upscale, eval and serve, in the same words: eval's said "auto (default)" where the others said
# what auto picks.
DEVICE_HELP = "cpu, cuda, cuda:N or auto (default: the GPU if there is one)"
# --tile of upscale and serve: serve's help left out that 0 means no tiling, and its refusal was worded otherwise.
TILE_HELP = "tile size in input pixels (default: chosen from free memory; 0: no tiling)"
# -o of upscale, export, convert, blend and train: export's read FILE and train's DIR where the others said OUT,
# and upscale took no --out (there it was "ambiguous" with --outscale) where train and convert did.
OUTPUT_FLAGS = ("-o", "--output", "--out")
OUTPUT_METAVAR = "OUT"
# --model of upscale, export and eval (and blend's A and B): what every one of them loads, in the same words;
# a command that takes more (upscale an .onnx file, eval bicubic and blends) adds it after. They read three
# ways: "(e.g. default), a checkpoint", "(default, gan) or a generator checkpoint", "a checkpoint path".
MODEL_METAVAR = "MODEL"
MODEL_HELP = "a bundled model name (default, gan) or a generator checkpoint (.safetensors, .pt or .pth)"
# --model of upscale, export and eval takes a blend of two generators too, in the same words after MODEL_HELP
BLEND_HELP = (
    ", or a blend: strength=S (the default/gan blend at S in 0..1, as `srfeat upscale --strength S`) or "
    "blend=A,B,ALPHA ((1 - ALPHA) A + ALPHA B of two generators of one architecture)"
)
# --strength of upscale and export: export's said only what it blends, upscale's not that it needs --model default.
STRENGTH_HELP = (
    "detail dial from 0 (the default model: faithful, smooth) to 1 (the gan model: sharp, invented texture); "
    "the two networks' weights blended, no slower; with --model default only"
)
# --tta of upscale and eval: eval's said it in other words.
TTA_HELP = "self-ensemble: average the 8 flips and rotations (slightly more faithful, 8x the time)"


def add_precision_arguments(parser: argparse.ArgumentParser, half_note: str = "") -> None:
    """--half and --bf16 of upscale and serve, one or neither (`precision` reads them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--half",
        action="store_true",
        help=f"half precision: float16 arithmetic on the GPU (tiles that overflow are redone in float32){half_note}",
    )
    group.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16: on a GPU, or on a CPU with native bf16 (AVX512-BF16, AMX), where it is 1.3-3x faster "
        "than fp32 (AMD Zen 4 to an Intel Xeon with AMX) and a few grey levels off",
    )


def precision(args: argparse.Namespace) -> str:
    """The `Upscaler`'s dtype that --half and --bf16 ask for."""
    return "fp16" if args.half else "bf16" if args.bf16 else "fp32"


def tell_of_bf16(device: object, dtype: str, backend: str = "torch") -> None:
    """Says that --bf16 would pay, for an fp32 run of srfeat's path on a CPU with native bf16: the switch that pays
    most there (3.4x with AMX), and opt-in, so few have heard of it."""
    from srfeat.hardware import cpu_has_native_bf16

    if backend == "torch" and str(device) == "cpu" and dtype == "fp32" and cpu_has_native_bf16():
        logger.info(
            "this CPU has native bf16 (AVX512-BF16 or AMX): --bf16 upscales 1.3-3x faster (README, Speed), "
            "a few grey levels off"
        )


def tile_problem(tile: int | None) -> str | None:
    """What is wrong with a --tile (upscale's, serve's), or None."""
    return (
        None if tile is None or tile >= 0 else f"--tile must be a tile size in pixels (or 0 for no tiling), got {tile}"
    )


# A value that starts as a negative number does ("-1:", "-5:-1"): no srfeat option is spelt so.
DASH_VALUE = re.compile(r"-\d")
# The value argparse quotes whole where it cannot take it: `--max-steps` of 5,000 digits was a line as long.
_REFUSED_VALUE = re.compile(r"(invalid [\w ]+ value|invalid choice): '(.{121,}?)'(?=$| \(choose from)")


def _value_cut_short(match: re.Match[str]) -> str:
    value = match.group(2)
    return f"{match.group(1)}: '{value[:60]}...{value[-20:]}' ({len(value):,} characters)"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (as every other srfeat error), not the usage block.

    Subparsers are made of their parent's class; a subcommand that needs another parser class
    (train's intermixed one) derives it from this one.
    """

    dash_value_options: frozenset[str] = frozenset()  # see take_dash_values

    def take_dash_values(self, *option_strings: str) -> None:
        """Let these options' values start with a dash (`--frames -1:`): see `join_dash_values`."""
        self.dash_value_options = self.dash_value_options | set(option_strings)

    # typeshed spells this as three overloads keyed on the namespace's type; one plain signature covers
    # how argparse calls it (a subcommand's parser gets its words from the top one), as in train's parser.
    def parse_known_args(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace = argparse.Namespace() if namespace is None else namespace  # as argparse itself does
        if self.dash_value_options:
            args = join_dash_values(sys.argv[1:] if args is None else list(args), self.dash_value_options)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        from srfeat.errors import printable  # an argument may hold a newline or an escape sequence

        message = _REFUSED_VALUE.sub(_value_cut_short, message)
        self.exit(2, printable(f"ERROR: {self.prog}: {message} (see {self.prog} --help)") + "\n")

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse drops a failed write: `srfeat --help > /dev/full` (and --version) exited 0 with
        # nothing written. Standard output goes through the commands' own writer instead: a reader
        # that went away is no error, a full disk one line and status 1.
        if file is not None and file is sys.stdout and message:
            from srfeat.cli import write_output
            from srfeat.errors import SRFeatError

            try:
                write_output(message)
            except SRFeatError as error:
                self.exit(1, f"ERROR: {error}\n")
            return
        super()._print_message(message, file)


def join_dash_values(args: list[str], options: frozenset[str]) -> list[str]:
    """`OPTION VALUE` as `OPTION=VALUE` for these options, where VALUE starts as a negative number does.

    argparse takes "-1:" for an option of its own, so `--frames -1:` was "expected one argument"
    where `--frames=-1:` got the option's own message. Plain negative numbers it reads as values
    already; after `--` every word is an input, left as it is.
    """
    joined: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return joined + args[index:]
        if word in options and index + 1 < len(args) and DASH_VALUE.match(args[index + 1]):
            joined.append(f"{word}={args[index + 1]}")
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined


def path_argument(text: str) -> str:
    """A file or folder named on the command line, `~` expanded; an empty one is refused.

    `Path("")` is the working directory: an unset shell variable (`srfeat upscale "$IN"`) upscaled
    every image there, `eval --data ""` scored them, `--json ""` wrote nothing without a word.
    A name longer than the file system takes is refused too. The shell expands `~` only at a
    word's start, so `--out=~/runs` and a quoted `'~/photos'` reach us as written: expanded
    here, every command reads and writes where the user meant.
    A bare `-`, the usual name of standard input or output, is refused: `upscale -o -` made a
    folder named `-` without a word, and `eval --json -` a file of that name.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file or folder path")
    if text == "-":
        raise argparse.ArgumentTypeError(
            "is '-': srfeat reads and writes files, not standard input or output; "
            "give a file or folder path (./- for one named '-')"
        )
    path = os.path.expanduser(text)
    # Such a name can be neither read nor made; every command's first look at it (exists?) was a traceback.
    if problem := path_too_long(path):
        raise argparse.ArgumentTypeError(f"{problem}: give a shorter one")
    return path
