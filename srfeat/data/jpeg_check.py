"""JPEG files checked where PIL lets a damaged one through: scan data that ends before all the rows its header
(SOF) gives are decoded. libjpeg then reaches the end marker early, warns ("Corrupt JPEG data: premature end of
data segment"), which PIL does not pass on, and decodes the missing blocks from zero bits: a header whose height
was made larger gave an image whose added rows were flat grey (128), without a word.

How it is told (`short_scan_data`): the file is decoded once more with bytes added after each scan's data, just
before the marker that ends it (and a restart marker, for a file whose data ends where a restart interval does).
A decoder that has all it needs from the scan never reads them (a sound file decodes to the same pixels); one that
runs out of data decodes them as blocks, which changes its pixels. It costs a second decode of the file, in which
PIL's JPEG reader takes a tenth to a quarter of a second for 12 megapixels.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

from PIL import Image

__all__ = ["scan_data_ends", "short_scan_data"]

# What is added after each scan's data: bytes of no pattern (a fixed pseudo-random run with no 0xFF, which would
# start a marker), which decode to blocks unlike the zeros libjpeg gives past the data's end.
_FILLER = bytes((17 + 101 * i) % 251 for i in range(96))
_RESTART_MARKERS = range(0xD0, 0xD8)  # RST0..RST7: within a scan's data
_START_OF_SCAN, _END_OF_IMAGE, _STUFFED = 0xDA, 0xD9, 0x00
_ROWS_COMPARED = 256  # the pixels are compared a band at a time: no second copy of the whole image


def scan_data_ends(data: bytes) -> list[tuple[int, int]]:
    """(offset of the marker that ends it, restart markers within it) of each scan of the JPEG `data`, to its first
    end-of-image marker (an MPO's first picture); empty when it is not a JPEG, or ends before a scan does."""
    ends: list[tuple[int, int]] = []
    if not data.startswith(b"\xff\xd8"):
        return ends
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill bytes before a marker
            position += 1
            continue
        if marker == _END_OF_IMAGE:
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + length
        if marker == _START_OF_SCAN:
            end = _scan_end(data, position)
            if end is None:
                break
            ends.append(end)
            position = end[0]
    return ends


def _scan_end(data: bytes, position: int) -> tuple[int, int] | None:
    """(offset of the marker that ends the scan whose data starts at `position`, restart markers before it)."""
    restarts = 0
    while (position := data.find(b"\xff", position)) >= 0 and position + 1 < len(data):
        following = data[position + 1]
        if following == 0xFF:
            position += 1
        elif following == _STUFFED or following in _RESTART_MARKERS:
            restarts += following in _RESTART_MARKERS
            position += 2
        else:
            return position, restarts
    return None


def _with_filler(data: bytes, ends: list[tuple[int, int]]) -> bytes:
    """`data` with `_FILLER` before each scan's end, around the restart marker that would come next: a decoder
    short of data at the end of a restart interval looks for that marker, and would skip bytes before it."""
    pieces, start = [], 0
    for end, restarts in ends:
        pieces += [data[start:end], _FILLER, bytes((0xFF, _RESTART_MARKERS[restarts % 8])), _FILLER]
        start = end
    pieces.append(data[start:])
    return b"".join(pieces)


def short_scan_data(path: str | os.PathLike[str], image: Image.Image) -> str | None:
    """What is wrong when the JPEG (or MPO) at `path`, which PIL has decoded into `image`, has scan data that ends
    before the rows its header gives; None when its data fills them, for any other format, and when the second
    decode fails (the file is damaged otherwise, and PIL's reader has had its say)."""
    if image.format not in ("JPEG", "MPO"):
        return None
    with open(path, "rb") as file:
        data = file.read()
    ends = scan_data_ends(data)
    if not ends:
        return None
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(_with_filler(data, ends))) as filled:
            warnings.simplefilter("ignore")  # the first decode said what there was to say
            filled.load()
            same = filled.size == image.size and filled.mode == image.mode and _same_pixels(image, filled)
    except (OSError, ValueError, SyntaxError, struct.error):
        return None
    return None if same else f"its data ends before the {image.height} rows its header gives"


def _same_pixels(image: Image.Image, other: Image.Image) -> bool:
    for top in range(0, image.height, _ROWS_COMPARED):
        band = (0, top, image.width, min(top + _ROWS_COMPARED, image.height))
        if image.crop(band).tobytes() != other.crop(band).tobytes():
            return False
    return True
