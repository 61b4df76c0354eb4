"""PNG files checked where PIL's reader lets a damaged one through: an image data chunk that claims far more
bytes than the file holds, which PIL sets aside before it reads (`chunk_past_end`, before the file is opened), and
pixel data that ends before the header's size is filled, whose missing rows PIL gives as zeros without a word, or
that is damaged where PIL does not look (`image_data_problem`, once the pixels are decoded).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from PIL import ImageFile

from srfeat.data.png16 import ADAM7, PNG_SIGNATURE

__all__ = ["chunk_past_end", "image_data_problem"]

# Samples per pixel of each PNG colour type: grey, RGB, palette index, grey + alpha, RGBA.
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_STEP = 1 << 20  # what `image_data_problem` reads and inflates at a time


def chunk_past_end(path: str | os.PathLike[str]) -> str | None:
    """What is wrong when an image data chunk (IDAT, or an animated PNG's fdAT) of the PNG at `path` claims more
    than a MiB past the end of the file; None for any other PNG, and for any other file. PIL's reader, once the
    pixels are decoded, skips the rest of such a chunk in one read, which sets aside all it claims first: a 1 KB
    file whose IDAT gave 4 GiB took 4 GiB of memory. Other chunks it reads a MiB at a time (`ImageFile.SAFEBLOCK`),
    and a claim within that of the end it is left to read: a file cut short after its pixels' compressed data
    ends (its CRC, or IEND, lost) it reads whole, and one cut inside it it says is truncated."""
    try:
        return _chunk_past_end(path)
    except OSError:  # unreadable: the reader says so
        return None


def _chunk_past_end(path: str | os.PathLike[str]) -> str | None:
    with open(path, "rb") as file:
        if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            return None
        size = os.fstat(file.fileno()).st_size
        for kind, length, start in _chunks(file):  # (a last CRC missing PIL lets pass: the data's end is checked)
            if kind in (b"IDAT", b"fdAT") and start + length > size + ImageFile.SAFEBLOCK:
                problem = f"its {kind.decode()!r} chunk claims {length:,} bytes, but the file ends at byte {size:,}"
                return f"{problem} (damaged or cut short?)"
    return None


def _chunks(file: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(type, length, where its data starts) of each chunk of the PNG `file` (past its signature), to IEND or to
    what is no chunk (not a PNG past its signature: PIL's reader says what it is); their data is skipped."""
    position = len(PNG_SIGNATURE)
    file.seek(position)
    while len(header := file.read(8)) == 8:
        (length,) = struct.unpack(">I", header[:4])
        kind = header[4:]
        if kind == b"IEND" or not kind.isalpha():
            return
        yield kind, length, position + 8
        position = file.seek(position + 12 + length)  # length, type, data, CRC


def _filtered_bytes(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """The bytes a PNG's pixel data inflates to: each row of each (Adam7) pass, and its filter byte."""
    total = 0
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + (columns * bits_per_pixel + 7) // 8)
    return total


def image_data_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the pixel data (IDAT) of the PNG at `path`, which PIL (or `png16`) has decoded; None when
    it is sound, or damaged in a way the decoder said. PIL's decoder stops where the compressed stream ends, and
    gives the rows past it as zeros: a header whose height was made 30000 gave a 30000-row image of 17 real rows,
    without a word. It also stops once the rows are filled, and checks neither the chunks' CRCs nor zlib's own
    checksum: zeros written over the middle of the data decode as codes too, and the rows after them came from
    those, without a word. Inflated a MiB at a time, and no further than a byte past what the header needs."""
    with open(path, "rb") as file:
        chunks = _chunks(file)
        kind, length, start = next(chunks, (b"", 0, 0))
        if kind != b"IHDR" or length != 13:
            return None
        file.seek(start)
        width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", file.read(13))
        needed = _filtered_bytes(width, height, _SAMPLES.get(colour_type, 0) * bit_depth, interlace == 1)
        inflater, made, broken, crc_failed = zlib.decompressobj(), 0, "", 0
        for number, (_, length, start) in enumerate((chunk for chunk in chunks if chunk[0] == b"IDAT"), 1):
            file.seek(start)
            crc, left = zlib.crc32(b"IDAT"), length
            while left > 0 and (piece := file.read(min(left, _STEP))):  # a chunk cut short ends where the file does
                left -= len(piece)
                crc = zlib.crc32(piece, crc)
                try:
                    while piece and made <= needed and not inflater.eof and not broken:
                        made += len(inflater.decompress(piece, _STEP))
                        piece = inflater.unconsumed_tail
                except zlib.error as error:
                    broken = str(error)
            stored = file.read(4) if not left else b""
            if len(stored) == 4 and struct.unpack(">I", stored)[0] != crc and not crc_failed:
                crc_failed = number
    if broken:  # (the decoder, which stopped once the rows were filled, did not meet it)
        return f"its pixel data fails zlib's check ({broken})"
    if made < needed:
        return f"its pixel data inflates to {made:,} bytes, short of the {needed:,} its {width}x{height} header needs"
    if made > needed:
        return f"its pixel data inflates to more than the {needed:,} bytes its {width}x{height} header needs"
    if crc_failed:
        return f"the CRC of its pixel data chunk {crc_failed} (IDAT) does not match its data"
    return None
