"""What every subcommand's arguments share: one-line errors, and the check of a path argument."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from srfeat.path_checks import name_max

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["OneLineErrorParser", "path_argument"]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (as every other srfeat error), not the usage block.

    Subparsers are made of their parent's class; a subcommand that needs another parser class
    (train's intermixed one) derives it from this one.
    """

    def error(self, message: str) -> NoReturn:
        from srfeat.errors import printable  # an argument may hold a newline or an escape sequence

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


def path_argument(text: str) -> str:
    """A file or folder named on the command line, `~` expanded; an empty one is refused.

    `Path("")` is the working directory: an unset shell variable (`srfeat upscale "$IN"`) upscaled
    every image there, `eval --data ""` scored them, `--json ""` wrote nothing without a word.
    A name longer than the file system takes is refused too. The shell expands `~` only at a
    word's start, so `--out=~/runs` and a quoted `'~/photos'` reach us as written: expanded
    here, every command reads and writes where the user meant.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file or folder path")
    path = os.path.expanduser(text)
    # Such a name can be neither read nor made; every command's first look at it (exists?) was a traceback.
    limit = name_max(Path(path).parent)
    for part in Path(path).parts:
        if (size := len(os.fsencode(part))) > limit:
            raise argparse.ArgumentTypeError(
                f"a name in it is {size} bytes, more than the {limit} the file system takes: give a shorter one"
            )
    return path
