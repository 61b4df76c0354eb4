"""What every subcommand's arguments share: one-line errors, and the check of a path argument."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

__all__ = ["OneLineErrorParser", "path_argument"]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (as every other srfeat error), not the usage block.

    Subparsers are made of their parent's class; a subcommand that needs another parser class
    (train's intermixed one) derives it from this one.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ERROR: {self.prog}: {message} (see {self.prog} --help)\n")


def path_argument(text: str) -> str:
    """A file or folder named on the command line, `~` expanded; an empty one is refused.

    `Path("")` is the working directory: an unset shell variable (`srfeat upscale "$IN"`) upscaled
    every image there, `eval --data ""` scored them, `--json ""` wrote nothing without a word.
    The shell expands `~` only at a word's start, so `--out=~/runs` and a quoted `'~/photos'`
    reach us as written: expanded here, every command reads and writes where the user meant.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file or folder path")
    return os.path.expanduser(text)
