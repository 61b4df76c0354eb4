"""What a file PIL cannot identify is, in words: PIL's "cannot identify image file" was the message for a text
file named `.png` (a saved web page, a note), a PNG cut short, a photo in a format srfeat does not read and a
sound TIFF of a layout PIL does not open alike. `unidentified_error` tells these apart from the file's first
bytes and says what to do about each. So are files that are there but do not read: no permission, a failing
disk (`unreadable_image`), a WebP cut short or damaged (`damaged_webp`), an AVIF cut short (`cut_short_avif`), a
size of 0 (`zero_size_error`); `read_failure` says which of these a reader's error was.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from srfeat import libtiff_messages
from srfeat.data import avif_check, tiff16
from srfeat.data.colour_profiles import READ_FORMATS
from srfeat.errors import ImageReadError
from srfeat.path_checks import unreadable_advice, unreadable_problem

__all__ = [
    "WebpProblem",
    "a_format",
    "cut_short_avif",
    "damaged_webp",
    "looks_like_text",
    "read_failure",
    "starts_as",
    "unidentified_error",
    "unreadable_image",
    "webp_problem",
    "zero_size_error",
]

# How the formats srfeat reads begin (TGA has no signature).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    *((signature, "TIFF") for signature in tiff16.TIFF_SIGNATURES),
    *((f"P{kind}".encode(), "PPM") for kind in "123456fF"),
    (b"BM", "BMP"),
)
_HEAD_BYTES = 4096  # enough to tell text from binary data


def starts_as(head: bytes) -> str | None:
    """The format srfeat reads that a file beginning with `head` is by its signature, if any."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    return next((kind for signature, kind in _SIGNATURES if head.startswith(signature)), None)


def a_format(kind: str) -> str:
    """`kind` (a format's name, as `starts_as` or a page gives it) with its article: "an AVIF", "a PNG"."""
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind}"


def looks_like_text(head: bytes) -> bool:
    """Whether `head` (a file's first bytes) is text: UTF-8 (ASCII too) of printable characters and line
    breaks, no NUL byte; a character cut at the end of `head` is allowed."""
    if not head or b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    printable = sum(character.isprintable() or character in "\t\n\r\f" for character in text)
    return printable >= 0.95 * len(text)


def unreadable_image(path: Path, error: OSError) -> ImageReadError:
    """An image file that is there but whose read failed (no permission, a failing disk): the system's words
    and what to do, apart (an `ImageReadError`'s advice is the command line's, not the web page's)."""
    advice = unreadable_advice(error, ImageReadError.SKIP_OR_REPLACE)
    return ImageReadError(unreadable_problem(path, error, what="image"), advice)


def read_failure(path: Path, error: BaseException) -> ImageReadError:
    """A file that failed to read: a system's error (no permission, a failing disk) in its words, with what to
    do about it ("[Errno 13] Permission denied: 'PATH'; skip or replace this file" named the path twice and
    said to replace a sound file); a decoder's as it is, to skip or replace the file."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        return unreadable_image(path, error)
    if isinstance(error, OSError) and (webp := damaged_webp(path)):  # "could not create decoder object"
        return webp
    if avif := cut_short_avif(path):  # libavif's "Truncated data", a SyntaxError
        return avif
    # PIL says only "decoder error -2" of a TIFF libtiff could not decode; libtiff said why
    said = "".join(f" (libtiff: {libtiff})" for libtiff in libtiff_messages.errors_caught()[-1:])
    return ImageReadError(f"cannot read image {path}: {error}{said}", ImageReadError.SKIP_OR_REPLACE)


def zero_size_error(path: Path) -> ImageReadError:
    """The error for `path`, a regular file whose size is given as 0: empty, or one that holds data all the same
    (a file of /proc or /sys, some FUSE mounts), which "the file is empty (0 bytes)" misnamed."""
    try:
        with path.open("rb") as file:
            holds_data = bool(file.read(1))
    except OSError as error:
        return unreadable_image(path, error)
    if holds_data:  # srfeat's readers check a file's content against its size: refused, said as what it is
        return ImageReadError(
            f"cannot read image {path}: its size is given as 0 bytes, yet it holds data (a file of /proc or /sys?)",
            "copy it to a regular file first (cp), and give that",
        )
    return ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)", ImageReadError.SKIP_OR_REPLACE)


class WebpProblem(NamedTuple):
    """What is wrong with a WebP file (`what`), and whether it is cut short (else damaged: its whole length, which
    its decoder refuses), for the advice: the whole file, or a copy saved again."""

    what: str
    cut_short: bool


def webp_problem(head: bytes, size: int) -> WebpProblem | None:
    """What is wrong with a WebP file of `size` bytes, beginning with `head` (12 bytes or more), that its decoder
    refused or PIL could not even identify: cut short when its RIFF header gives more bytes than it holds, else
    damaged. None when `head` is not a WebP's. One wording for the command line, the API and the web page."""
    if starts_as(head) != "WEBP":
        return None
    stated = int.from_bytes(head[4:8], "little") + 8  # RIFF's size field counts the bytes after itself
    if size < stated:
        return WebpProblem(f"the WebP file is cut short ({size:,} of the {stated:,} bytes its header gives)", True)
    return WebpProblem("the WebP file is damaged (its decoder cannot read it)", False)


def damaged_webp(path: Path) -> ImageReadError | None:
    """The error for `path` when it is a WebP file that PIL's decoder refused ("could not create decoder
    object", its words for a file cut short or damaged) or could not identify (one of a few bytes), or None
    for any other file. Cut short, the advice is to replace it (with the whole file); damaged, to save it again."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
        size = path.stat().st_size
    except OSError:  # unreadable now: the caller's own error stands
        return None
    if (problem := webp_problem(head, size)) is None:
        return None
    advice = ImageReadError.SKIP_OR_REPLACE if problem.cut_short else ImageReadError.SAVE_AGAIN
    return ImageReadError(f"cannot read image {path}: {problem.what}", advice)


def cut_short_avif(path: Path) -> ImageReadError | None:
    """The error for `path` when it is an AVIF file that ends inside one of its boxes (libavif's words: "Failed to
    decode frame 0: Truncated data"), said as a WebP's is; None for any other file."""
    if (problem := avif_check.cut_short(path)) is None:
        return None
    return ImageReadError(f"cannot read image {path}: {problem}", ImageReadError.SKIP_OR_REPLACE)


def unidentified_error(path: Path) -> ImageReadError:
    """The error for `path`, which PIL could not identify as an image of the formats srfeat reads: a TIFF
    of a layout srfeat does not read, text, a damaged file of a format it reads, or another format."""
    if layout := tiff16.unread_layout(path):  # float RGB, signed colour...
        if " signed integer" in layout:  # PIL reads signed samples as grey only (8-bit colour it refuses)
            return ImageReadError(
                f"cannot read image {path}: a TIFF of {layout} per pixel, which srfeat does not read (signed "
                "samples only as grey)",
                "convert it to unsigned 8- or 16-bit",
            )
        return ImageReadError(
            f"cannot read image {path}: a TIFF of {layout} per pixel, which srfeat does not read (it reads 8 "
            "and 16 bits, and 32-bit float grey)",
            "save it with 16 bits, as TIFF or PNG",
        )
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
    except OSError as error:
        return unreadable_image(path, error)
    kind = starts_as(head)
    Image.init()  # every plugin's extensions registered
    named = Image.registered_extensions().get(path.suffix.lower())  # what its name says it is: "PNG" for .png
    if looks_like_text(head):  # before the signatures: a note may begin with "BM" or "P1"
        what = f"a {named} image" if named in READ_FORMATS else "an image"
        return ImageReadError(f"cannot read image {path}: it holds text, not {what}", ImageReadError.SKIP_OR_REPLACE)
    if kind == "WEBP" and (webp := damaged_webp(path)):  # the first bytes of one: "starts as a WEBP file" said less
        return webp
    if kind == "AVIF" and (avif := cut_short_avif(path)):
        return avif
    if kind is not None:
        return ImageReadError(
            f"cannot read image {path}: it starts as {a_format(kind)} file but cannot be decoded (damaged, cut short, "
            f"or {a_format(kind)} variant srfeat does not read)",
            ImageReadError.SKIP_OR_REPLACE,
        )
    if named == "TGA":  # TGA files have no signature: a damaged one looks like any other data
        return ImageReadError(
            f"cannot read image {path}: it is damaged, or not a TGA file", ImageReadError.SKIP_OR_REPLACE
        )
    return ImageReadError(
        f"cannot read image {path}: it is not in an image format srfeat reads ({', '.join(READ_FORMATS)})",
        "convert it to PNG or JPEG, or skip it",
    )
