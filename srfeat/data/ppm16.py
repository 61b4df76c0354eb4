"""16-bit colour PPM files (`P6` binary or `P3` ASCII, with a maxval above 255), which PIL cuts down to 8 bits.

dcraw's `-4` (linear 16-bit) and many raw converters write them, so that a photo read from one
keeps its 16 bits through `srfeat upscale` (written as a 16-bit PNG). The format: the magic
`P6` or `P3`, then width, height and maxval as ASCII numbers separated by whitespace (a `#` starts a
comment to the end of its line), one whitespace byte, then the RGB samples, row after row: in `P6`
big-endian 16-bit numbers, in `P3` ASCII decimal numbers separated by whitespace (comments allowed).
A maxval below 65535 is scaled to the full 16-bit range, as PIL scales 8-bit ones. 16-bit grey
(`P5`, `P2`) PIL reads with its 16 bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srfeat.errors import ImageReadError

__all__ = ["Ppm16Header", "ppm16_header", "read_ppm16"]

# A header is short: magic, three numbers, their whitespace and any comments.
HEADER_BYTES = 4096
_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*[\n\r])*(\d+)")
_COMMENT = re.compile(rb"#[^\n\r]*")
_PLAIN_TEXT = b"0123456789 \t\n\r\v\f"  # all that a P3 file's samples may be written with


@dataclass(frozen=True)
class Ppm16Header:
    width: int
    height: int
    maxval: int
    data_offset: int  # where the samples start
    plain: bool = False  # P3: the samples as ASCII decimal numbers


def ppm16_header(path: Path) -> Ppm16Header | None:
    """The header of a 16-bit (binary or ASCII) PPM file; None for any other file (PIL reads those)."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEADER_BYTES)
    except OSError:
        return None  # PIL's reader reports it
    if head[:2] not in (b"P6", b"P3"):
        return None
    numbers, position = [], 2
    for _ in range(3):
        match = _TOKEN.match(head, position)
        if match is None:
            return None  # damaged: PIL's reader says so
        numbers.append(int(match.group(1)))
        position = match.end()
    width, height, maxval = numbers
    if not 255 < maxval < 65536 or position >= len(head) or not head[position : position + 1].isspace():
        return None
    return Ppm16Header(width, height, maxval, position + 1, plain=head.startswith(b"P3"))


def read_ppm16(path: Path, header: Ppm16Header) -> np.ndarray:
    """HxWx3 uint16 pixels of a 16-bit PPM file, scaled to 0..65535; ImageReadError if it is cut
    short or a sample exceeds its maxval. The caller checks the pixel count first."""
    if not header.width or not header.height:  # was an empty array, refused only by the upscale ("nothing to upscale")
        problem = f"the PPM header gives an empty image ({header.width}x{header.height} pixels)"
        raise ImageReadError(f"cannot read image {path}: {problem}", ImageReadError.SKIP_OR_REPLACE)
    count = header.width * header.height * 3
    with open(path, "rb") as file:
        file.seek(header.data_offset)
        data = file.read(None if header.plain else 2 * count)
    if header.plain:
        samples, problem = _plain_samples(data, count)
    else:
        samples, problem = np.frombuffer(data, dtype=">u2", count=len(data) // 2), None  # cut after an odd byte too
    if problem is None and samples.size != count:
        problem = f"the file ends after {samples.size:,} of its {count:,} samples (cut short?)"
    elif problem is None and samples.size and int(samples.max()) > header.maxval:
        problem = f"a sample is {int(samples.max())}, above the file's maxval {header.maxval} (damaged)"
    if problem is not None:
        raise ImageReadError(f"cannot read image {path}: {problem}", ImageReadError.SKIP_OR_REPLACE)
    pixels = samples.reshape(header.height, header.width, 3)
    if header.maxval == 65535:
        return pixels.astype(np.uint16)
    return np.round(pixels * (65535 / header.maxval)).astype(np.uint16)


def _plain_samples(data: bytes, count: int) -> tuple[np.ndarray, str | None]:
    """The first `count` samples of a P3 file's ASCII data (after its header), and what is wrong with it."""
    if b"#" in data:
        data = _COMMENT.sub(b" ", data)
    if stray := data.translate(None, _PLAIN_TEXT):  # a sign, a point, a letter: not a sample
        return np.empty(0, dtype=np.int64), f"{stray[:1].decode('latin-1')!r} where a sample belongs (damaged)"
    # Digits and whitespace only, so read to the end (no warning of unmatched data); past 2**63 saturates.
    samples = np.fromstring(data, dtype=np.int64, sep=" ")
    return samples[:count], None
