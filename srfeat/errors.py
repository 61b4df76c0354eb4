"""User-facing errors.

Anything raised as `SRFeatError` is a problem with the user's input (a missing file, a
malformed checkpoint, a config typo) and is shown by the command line as one line, without a
traceback. Each message says what is wrong and what to do about it.

For Python callers: each kind is also the built-in exception it resembles, so `except
ValueError` catches bad values (`InvalidImageError`, `InvalidOptionError`, `WeightsError`,
`MetricInputError`, `ConfigError`), `except TypeError` a non-image (`NotAnImageError`) and
`except OSError` an unreadable image or video file (`ImageReadError`, `VideoError`);
`except SRFeatError` catches them all. `srfeat.files.OutputExistsError` (a file that would be
overwritten) and `srfeat.files.OutputIsInputError` (an output that is an input) are ones too.

Also here, for the messages: `shown` (a caller's value, kept to one line), `printable` (a name with
its control characters escaped) and `check_flag` (True or False, or one line saying what was given);
for the checks before them, `is_whole_number` and `is_real_number` (a number, but not a bool); and
`OptionNames`, an option as its caller gives it (a keyword from Python, a flag from a command).
"""

from __future__ import annotations

import numbers
import re
import reprlib
import sys
from typing import TypeGuard

__all__ = [
    "AdvisedError",
    "ConfigError",
    "ImageReadError",
    "InvalidImageError",
    "InvalidOptionError",
    "MetricInputError",
    "ModelOutOfMemoryError",
    "ModelOutputError",
    "NotAnImageError",
    "SRFeatError",
    "TileOutOfMemoryError",
    "TrainingDiverged",
    "VideoError",
    "WeightsError",
]


class SRFeatError(Exception):
    """A problem with the user's input; its message is shown as is."""


class WeightsError(SRFeatError, ValueError):
    """A weights file or checkpoint is missing, unreadable or of another architecture."""


class AdvisedError(SRFeatError):
    """An error whose `problem` (what went wrong) and `advice` (what to do) are kept apart, so that a
    surface whose user has other options can say its own advice; the message is `"{problem}; {advice}"`,
    or `problem` alone when there is no advice."""

    def __init__(self, problem: str, advice: str = "") -> None:
        super().__init__(f"{problem}; {advice}" if advice else problem)
        self.problem = problem
        self.advice = advice

    def __reduce__(self) -> tuple[type[AdvisedError], tuple[str, str]]:
        # rebuilt from its parts, where an exception is rebuilt from its message (a process pool's)
        return type(self), (self.problem, self.advice)


class ImageReadError(AdvisedError, OSError):
    """An image file is missing, truncated or not an image.

    `problem` and `advice` as `AdvisedError`'s: the web page has no batch to skip the file in, no file
    on disk to replace.
    """

    SKIP_OR_REPLACE = "skip or replace this file"  # the command line's advice for a damaged file
    # for a file of its whole length that its decoder refuses (a WebP): another copy of it is as damaged
    SAVE_AGAIN = "skip this file, or save it again from the program that made it"


class TileOutOfMemoryError(AdvisedError):
    """A tile of the image (the part sent to the device at once) ran out of memory there, or ONNX Runtime
    failed on one. The `advice` names the tile size as the `Upscaler`'s maker gives it (`tile=`, or --tile);
    `problem` and `advice` are apart (`AdvisedError`) for callers that have no tile size to give: the
    evaluation chooses it from free memory, and a web page's user cannot restart the server."""


class ModelOutOfMemoryError(AdvisedError):
    """A model did not fit on its device as it was loaded (a GPU that other processes fill). `problem` and
    `advice` are apart (`AdvisedError`): the advice (free memory, another device) is for whoever chose the
    device, and a web page's user, whose setting loads another model on the server, did not."""


class ConfigError(SRFeatError, ValueError):
    """A training config has an unknown key, a wrong type or a missing path."""


class InvalidImageError(SRFeatError, ValueError):
    """Pixels that cannot be upscaled: an empty image, NaN or infinite values, float values outside
    [0, 1], a dtype or a shape that is not an image's; also an `outscale` out of range."""


class InvalidOptionError(SRFeatError, ValueError):
    """An option of the Python API of the wrong kind or out of range: an `Upscaler` tile size that is not
    a whole number, an unknown device, precision or backend, a flag (`tta`, `overwrite`, `replace`,
    `antialiasing`...) that is not True or False, something else where a path goes; options that do not go together
    (a `strength` with another model than `default`, or with an exported .onnx file)."""


class NotAnImageError(SRFeatError, TypeError):
    """The Python API was given something that is not an image (not a PIL image, array or tensor)."""


class ModelOutputError(SRFeatError, RuntimeError):
    """The network's output is not finite: the weights are broken, nothing is written."""


class TrainingDiverged(SRFeatError):  # noqa: N818 - public name (tests, callers); it reads as the event
    """A training loss became NaN or infinite, or the weights did or exploded; the last checkpoint on
    disk is the last good one."""


class VideoError(SRFeatError, OSError):
    """A video cannot be read, decoded or written as asked (or PyAV is missing)."""


class MetricInputError(SRFeatError, ValueError):
    """Images PSNR, SSIM or NIQE cannot score: NaN or infinite pixels, a dtype or value range the
    metric does not read, shapes that differ, or nothing left after the border shave."""


# Containers shown by their first items: a message quoting a caller's value stays short.
_SHORT_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict, _SHORT_REPR.maxtuple = 2, 4, 4, 4
_SHORT_REPR.maxstring, _SHORT_REPR.maxother = 80, 80
_LINE_BREAK = re.compile(r"\s*[\r\n]\s*")


def shown(value: object, limit: int = 100) -> str:
    """`value`'s repr for a one-line message (not an error type): a tensor's, an array's or a
    module's repr spans lines, and a message that quoted it was several lines long. Only the line
    breaks and the indents around them go: spaces within a line are the value's own ('my  photo')."""
    # a repr, so each \udcXX escape in it is a byte of a name or of the command line that is not UTF-8
    text = bytes_shown(_LINE_BREAK.sub(" ", _SHORT_REPR.repr(value).strip()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def given(value: object) -> str:
    """`value` after "got" in a message: a whole number as typed (`srfeat prepare --hr-patch-size 0` was
    told "got int 0"), anything else with its type, which is why it was refused (`got str '96'`)."""
    return str(int(value)) if is_whole_number(value) else f"{type(value).__name__} {shown(value)}"


def check_flag(
    value: object, name: str, error: type[SRFeatError] = InvalidOptionError, choices: str = "True or False"
) -> bool:
    """`value` as a bool if it is True or False (numpy's `bool_` too), else a one-line `error`.

    For every flag of the Python API: a string is true whatever it says, so `overwrite="no"`
    overwrote, and 0, 1 or None passed as a choice the caller may not have meant.
    """
    numpy = sys.modules.get("numpy")  # without numpy loaded no value is one of its bools; not imported here
    if isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_)):
        return bool(value)
    raise error(f"{name} must be {choices}, got {type(value).__name__} {shown(value)}")


def is_whole_number(value: object) -> TypeGuard[numbers.Integral]:
    """True for an int or a numpy integer, False for a bool: True is an int to Python, so `tile=True`
    was a 1-pixel tile and `scale=True` a scale of 1, where the caller meant a flag somewhere else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real_number(value: object) -> TypeGuard[numbers.Real]:
    """True for an int, a float or a numpy number that is not complex, False for a bool (see
    `is_whole_number`); a string such as "2", which `float` would take, is not one either."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class OptionNames:
    """How a message names the options of a function that a command calls too: `names(keyword,
    command_line=...)` is the function's keyword for a Python caller (as `keywords` writes it, e.g.
    `overwrite=True`, else bare), the command's flag or argument with `command_line` (`--overwrite`).
    A Python caller has no flags, a command-line user no keywords: a message never names both."""

    def __init__(self, flags: dict[str, str], keywords: dict[str, str] | None = None) -> None:
        self.flags = flags
        self.keywords = keywords or {}

    def __call__(self, keyword: str, *, command_line: bool) -> str:
        return self.flags[keyword] if command_line else self.keywords.get(keyword, keyword)


# C0 and C1 control characters (category Cc: newline, CR, tab, ESC, DEL, ...) and the Unicode line and
# paragraph separators (Zl, Zp), which a terminal or a text viewer also starts a new line at; and the
# bidirectional controls (the embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the
# marks U+200E, U+200F and U+061C), which reorder the text around them as it is displayed: a file named
# `photo\u202egnp.exe` showed as `photoexe.png` (Trojan Source). Joiners (U+200D) and variation
# selectors stay: emoji names are made of them, and they move nothing.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A byte of a name or of the command line that is not UTF-8 (`caf\xe9` from a Latin-1 system, `$'\xff'=1`)
# reaches Python as a lone surrogate (U+DC80-U+DCFF, surrogateescape); messages showed it as `\udce9`, which
# no shell or editor writes: `\xe9` is how `ls -b` shows the byte and `$'...'` and printf write it.
_BYTE_ESCAPES = {code: f"\\x{code - 0xDC00:02x}" for code in range(0xDC80, 0xDD00)}
# The same escaped by a repr (an odd number of backslashes before it).
_ESCAPED_BYTE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def bytes_shown(message: str) -> str:
    """`message` with each byte that is not UTF-8 written `\\xff`, raw in it or escaped by a repr it quotes."""
    return _ESCAPED_BYTE.sub(r"\1\\x\2", message.translate(_BYTE_ESCAPES))


def printable(text: str) -> str:
    """`text` with its control characters written as Python writes them (`\\n`, `\\x1b`, `\\u2028`, `\\u202e`),
    and the bytes of a name that is not UTF-8 as `\\xe9`.

    For anything shown a line at a time: a file may be named `a\\nERROR: b.png`, hold an escape
    sequence or a right-to-left override; written raw, its name printed a fake `ERROR:` line in a
    successful run, broke a table's row in two, rewrote the user's terminal, or showed another name
    than the file's (`photo\\u202egnp.exe` as `photoexe.png`). Each log line, argparse error and
    table cell goes through here.
    """
    # Only raw bytes: a name's own backslashes are not a repr's, so its text `\\udce9` stays as it is.
    return _UNPRINTABLE.sub(lambda match: ascii(match.group())[1:-1], text).translate(_BYTE_ESCAPES)
