"""JPEG files checked where PIL lets a damaged one through: scan data that ends before all the rows its header
(SOF) gives are decoded. libjpeg then reaches the end marker early, warns ("Corrupt JPEG data: premature end of
data segment"), which PIL does not pass on, and decodes the missing blocks from zero bits: a header whose height
was made larger gave an image whose added rows were flat grey (128), without a word. A JPEG-compressed TIFF's
strips or tiles are JPEG streams, checked so too (`short_tiff_strips`), and against the rows its tags give them:
libtiff gave rows that a strip's frame header left out as zeros. So is an old-style JPEG (6) TIFF's stream: the one
its JPEGInterchangeFormat tag gives, or, of one strip, the one libtiff builds from its tables' tags and scan data.
Huffman and arithmetic code, lossy and lossless, are checked alike.

How it is told (`short_scan_data`): the file is decoded once more with bytes added after each scan's data, just
before the marker that ends it (and a restart marker, for a file whose data ends where a restart interval does).
A decoder that has all it needs from the scan never reads them (a sound file decodes to the same pixels); one that
runs out of data decodes them as blocks, which changes its pixels. It costs a second decode of the file, in which
PIL's JPEG reader takes a tenth to a quarter of a second for 12 megapixels. A JPEG TIFF's strips, with the bytes
added, are compared with the rows libtiff decoded from them, and decoded as they are only where those differ.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import BinaryIO

import tifffile
from PIL import Image

__all__ = ["scan_data_ends", "short_scan_data", "short_tiff_strips"]

# What is added after each scan's data: bytes of no pattern (a fixed pseudo-random run with no 0xFF, which would
# start a marker), which decode to blocks unlike the zeros libjpeg gives past the data's end.
_FILLER = bytes((17 + 101 * i) % 251 for i in range(96))
_RESTART_MARKERS = range(0xD0, 0xD8)  # RST0..RST7: within a scan's data
_START_OF_SCAN, _END_OF_IMAGE, _STUFFED = 0xDA, 0xD9, 0x00
# What libjpeg(-turbo 3) decodes: baseline, extended, progressive and lossless, Huffman-coded (SOF0..SOF3) and
# arithmetic-coded (SOF9..SOF11). A TIFF strip of arithmetic code was left out of the check, and its rows past the
# scan data's end came out grey, or past its frame's height as zeros.
_START_OF_FRAME = (0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB)
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
    decode fails (the file is damaged otherwise, and PIL's reader has had its say). A JPEG-compressed TIFF's strips
    are checked so (`short_tiff_strips`), against the rows PIL (libtiff) decoded from them."""
    if image.format == "TIFF":
        if image.info.get("compression") not in _JPEG_TIFF_COMPRESSIONS:
            return None  # only JPEG strips decode short data as rows; tifffile need not read the file
        return short_tiff_strips(path, image.height, image)
    if image.format not in ("JPEG", "MPO"):
        return None
    with open(path, "rb") as file:
        data = file.read()
    if _fills_its_rows(data, image):
        return None
    return f"its data ends before the {image.height} rows its header gives"


# PIL's names of a TIFF's JPEG (7) and old-style JPEG (6) compressions, in its `info["compression"]`.
_JPEG_TIFF_COMPRESSIONS = ("jpeg", "tiff_jpeg")


def _fills_its_rows(data: bytes, image: Image.Image) -> bool:
    """Whether the JPEG `data`, decoded into `image`, decodes to the same pixels with `_FILLER` past each scan's data
    (True, too, when it has no scan, or the second decode fails: nothing is known against it)."""
    ends = scan_data_ends(data)
    if not ends:
        return True
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(_with_filler(data, ends))) as filled:
            warnings.simplefilter("ignore")  # the first decode said what there was to say
            filled.load()
            return filled.size != image.size or filled.mode != image.mode or _same_pixels(image, filled)
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return True


def _same_pixels(image: Image.Image, other: Image.Image) -> bool:
    if image.height <= _ROWS_COMPARED:  # a TIFF's strip: one band, compared without cropping a copy first
        return image.tobytes() == other.tobytes()
    for top in range(0, image.height, _ROWS_COMPARED):
        band = (0, top, image.width, min(top + _ROWS_COMPARED, image.height))
        if image.crop(band).tobytes() != other.crop(band).tobytes():
            return False
    return True


def short_tiff_strips(
    path: str | os.PathLike[str], height: int, decoded: Image.Image | None = None, scan_data: bool = True
) -> str | None:
    """What is wrong when a strip or tile of the JPEG-compressed (7) TIFF at `path`, of `height` rows, holds fewer
    rows than its tags give it (its frame header's height, or, with `scan_data`, its scan data's end); None when each
    holds them, and for any other TIFF. Each strip is decoded by PIL as a JPEG of its own (the tables the file keeps
    apart in front) with `_FILLER` past its data, and compared with the rows of `decoded` (the page as PIL decoded
    it), where those are its rows (strips of all the samples), else, or where they differ, with the strip decoded
    alone, as `short_scan_data` does. One whose header gives more rows than its tags is left to libtiff, which
    refuses it."""
    with tifffile.TiffFile(path) as tiff, open(path, "rb") as file:
        page = tiff.pages.first
        if page.compression == 6 and scan_data:  # old-style JPEG: one JPEG stream of the whole page
            stream = _old_style_stream(file, page, height)
            if stream is None or _frame_rows(stream) != height or _decodes_whole(stream):
                return None  # a frame of other rows than the tags' libtiff refuses
            return f"its data ends before the {height} rows its header gives"
        if page.compression != 7:
            return None
        tables = bytes(page.jpegtables or b"")
        rows_each = int(page.tilelength) if page.is_tiled else min(int(page.rowsperstrip), height)
        if rows_each <= 0:  # a strip of no rows (a damaged tag): libtiff refuses the file
            return None
        per_plane = -(-height // rows_each) if not page.is_tiled else len(page.dataoffsets)
        chunky = not page.is_tiled and page.planarconfig == 1 and len(page.dataoffsets) == per_plane
        for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=False)):
            rows = rows_each if page.is_tiled else min(rows_each, height - index % per_plane * rows_each)
            file.seek(offset)
            stream = _with_tables(file.read(count), tables)
            header_rows = _frame_rows(stream)
            if header_rows is None or header_rows > rows:
                continue
            if header_rows < rows:
                return f"its data ends before the {height} rows its header gives"
            if not scan_data or (
                decoded is not None and chunky and _filled_as(stream, _band(decoded, index * rows_each, rows))
            ):
                continue  # the decoder never read the filler: PIL's pixels are the strip's
            if not _decodes_whole(stream):
                return f"its data ends before the {height} rows its header gives"
    return None


def _old_style_stream(file: BinaryIO, page: tifffile.TiffPage, height: int) -> bytes | None:
    """An old-style JPEG (6) TIFF's JPEG stream: the one its JPEGInterchangeFormat tag points at, or, without one, the
    one libtiff builds from the tables its tags point at and its one strip's scan data; None where it has neither
    (strips of several: libtiff's joining of them is not repeated here). Checked as `short_scan_data` checks a JPEG
    file: libtiff gave the rows past its scan data's end as flat grey, without a word. The stream's colours libtiff
    converts its own way, so the page it decoded is no reference."""
    offset, count = _first(page.tags.valueof(513)), _first(page.tags.valueof(514))
    if isinstance(offset, int) and isinstance(count, int) and offset > 0 and count > 0:
        file.seek(offset)
        return file.read(count)
    if len(page.dataoffsets) != 1 or page.tags.valueof(512) != 1:  # not one strip, or not baseline (1) coding
        return None
    file.seek(page.dataoffsets[0])
    strip = file.read(page.databytecounts[0])
    if strip.startswith(b"\xff\xd8"):  # a whole JPEG of its own in the strip
        return strip
    tables = _tag_tables(file, page)
    if tables is None:
        return None
    components = len(tables)
    sampling = (page.tags.valueof(530) or (2, 2)) if page.photometric == 6 and components == 3 else (1, 1)  # YCbCr's
    frame = struct.pack(">BHHB", 8, height, page.imagewidth, components) + b"".join(
        struct.pack(">BBB", index + 1, (sampling[0] << 4 | sampling[1]) if index == 0 else 0x11, index)
        for index in range(components)
    )
    scan = struct.pack(">B", components)
    scan += b"".join(struct.pack(">BB", index + 1, index << 4 | index) for index in range(components)) + b"\x00\x3f\x00"
    restart = page.tags.valueof(515)
    pieces = [b"\xff\xd8"]
    for index, (quantisation, dc, ac) in enumerate(tables):
        pieces += [_segment(0xDB, bytes([index]) + quantisation), _segment(0xC4, bytes([index]) + dc)]
        pieces.append(_segment(0xC4, bytes([0x10 | index]) + ac))
    if isinstance(restart, int) and restart > 0:
        pieces.append(_segment(0xDD, struct.pack(">H", restart)))
    return b"".join([*pieces, _segment(0xC0, frame), _segment(_START_OF_SCAN, scan), strip, b"\xff\xd9"])


def _tag_tables(file: BinaryIO, page: tifffile.TiffPage) -> list[tuple[bytes, bytes, bytes]] | None:
    """(quantisation, DC Huffman, AC Huffman table) of each of an old-style JPEG TIFF's 1 or 3 components, read where
    its JPEGQTables, JPEGDCTables and JPEGACTables tags point; None where they are not all there."""
    offsets = [_as_tuple(page.tags.valueof(tag)) for tag in (519, 520, 521)]  # of a grey one, one each
    components = page.samplesperpixel
    if components not in (1, 3) or not all(isinstance(each, tuple) and len(each) == components for each in offsets):
        return None
    tables = []
    for quantisation_at, dc_at, ac_at in zip(*offsets, strict=True):
        file.seek(quantisation_at)
        quantisation = file.read(64)
        huffman = []
        for at in (dc_at, ac_at):
            file.seek(at)
            counts = file.read(16)
            huffman.append(counts + file.read(min(sum(counts), 256)))
        if len(quantisation) < 64 or any(len(table) < 17 for table in huffman):
            return None
        tables.append((quantisation, huffman[0], huffman[1]))
    return tables


def _segment(marker: int, content: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(content) + 2) + content


def _as_tuple(value: object) -> object:
    """A tag's value as a tuple: tifffile gives one of one item as it is."""
    return (value,) if isinstance(value, int) else value


def _first(value: object) -> object:
    """A tag's value, of one item given as a tuple (as tifffile gives old-style JPEG's) or not."""
    return value[0] if isinstance(value, tuple) and len(value) == 1 else value


def _band(image: Image.Image, top: int, rows: int) -> Image.Image:
    return image.crop((0, top, image.width, top + rows))


def _filled_as(stream: bytes, reference: Image.Image) -> bool:
    """Whether the JPEG `stream` with `_FILLER` past each scan's data decodes to the pixels of `reference`; False when
    it does not decode, or has no scan (the strip's own decode says)."""
    ends = scan_data_ends(stream)
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(_with_filler(stream, ends))) as filled:
            warnings.simplefilter("ignore")
            filled.load()
            same_kind = bool(ends) and filled.size == reference.size and filled.mode == reference.mode
            return same_kind and filled.tobytes() == reference.tobytes()
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return False


def _with_tables(strip: bytes, tables: bytes) -> bytes:
    """A TIFF's JPEG strip as a JPEG of its own: the JPEGTables tag's (SOI, tables, EOI) in front of its frame."""
    if tables.startswith(b"\xff\xd8") and tables.endswith(b"\xff\xd9") and strip.startswith(b"\xff\xd8"):
        return tables[:-2] + strip[2:]
    return strip


def _frame_rows(data: bytes) -> int | None:
    """The height that the JPEG `data`'s frame header (SOF) gives; None without one libjpeg decodes."""
    position = 2
    while position + 9 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in _START_OF_FRAME:
            return struct.unpack(">H", data[position + 5 : position + 7])[0]
        if marker in (_START_OF_SCAN, _END_OF_IMAGE):
            return None
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    return None


def _decodes_whole(stream: bytes) -> bool:
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(stream)) as image:
            warnings.simplefilter("ignore")
            image.load()
            return _fills_its_rows(stream, image)
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return True  # libtiff says what is wrong
