"""AVIF files checked where libavif lets a damaged one through: an image whose size property (`ispe`) is not the
size its AV1 data codes. libavif scales the decoded picture to the property's size without a word: a 40x33 image
whose `ispe` gave 40x80 was read as 40x80 pixels of it stretched, one that gave 4000x4000 as 16 million, and one
that gave 20x16 as a shrunk copy. `size_mismatch` compares the two from the file's boxes and the AV1 sequence
header, before PIL sets aside what the property claims.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from srfeat.varint import read_varint

__all__ = ["cut_short", "size_mismatch"]

_META_LIMIT = 1 << 20  # a meta box past this is left to libavif (its own limits): srfeat's files' are under 1 KB
_TOP_LEVEL_BOXES = 64  # an AVIF has a handful (ftyp, meta, mdat...): a file of more is left to libavif, unscanned
_SEQUENCE_HEADER = 1  # the AV1 OBU type whose fields give the coded size


def size_mismatch(path: str | os.PathLike[str]) -> str | None:
    """What is wrong when an image of the AVIF at `path` (its colour, its alpha) gives (`ispe`) another size than its
    AV1 data codes; None when they agree, for an image of tiles (`grid`, which libavif checks), and for any other
    file."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            if head[4:8] != b"ftyp":  # an ISO file (AVIF, HEIF): its AV1 images are checked
                return None
            sizes = _mismatched_sizes(file)
    except (OSError, ValueError, IndexError, struct.error):  # unreadable or malformed: the decoder says so
        return None
    if sizes is None:
        return None
    (width, height), (coded_width, coded_height) = sizes
    if width == coded_width and height > coded_height:
        return f"its data ends before the {height:,} rows its header gives (damaged?)"
    return f"its header gives {width}x{height} pixels, but its data holds {coded_width}x{coded_height} (damaged?)"


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, where its content starts, where it ends) of each ISO box in `data[start:end]`."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        content = start + 8
        if size == 1:  # a 64-bit size follows
            (size,) = struct.unpack(">Q", data[content : content + 8])
            content += 8
        elif size == 0:  # to the end
            size = end - start
        if size < content - start:
            return
        yield kind, content, min(start + size, end)
        start += size


def _top_level_meta(file: BinaryIO) -> bytes | None:
    """The meta box's content (past its version and flags), among the file's top-level boxes; None without one,
    with a track (`moov`: an animated AVIF, whose frames libavif decodes from it, not from the meta's items), or
    with too many boxes to scan."""
    meta = None
    for kind, position, length, size in _top_level_boxes(file):
        if kind == b"moov":
            return None
        if kind == b"meta" and length + 4 <= size <= _META_LIMIT:
            meta = _read_at(file, position + length + 4, size - length - 4)
        if kind == b"":  # the file's end
            return meta
    return None


def _top_level_boxes(file: BinaryIO) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, where it starts, its header's length, its size as its header gives it) of the file's first
    `_TOP_LEVEL_BOXES` top-level boxes, up to one of size 0 (to the end) or less than its header; then, where the
    file's boxes end (at its end, or inside a box's header), (b"", there, the header's length or 0, 0)."""
    position = 0
    for _ in range(_TOP_LEVEL_BOXES):
        header = _read_at(file, position, 16)
        length = 16 if header[:4] == b"\0\0\0\1" else 8  # size 1: a 64-bit size follows
        if len(header) < length:
            yield b"", position, length if header else 0, 0
            return
        size, kind = struct.unpack(">I4s", header[:8])
        size = struct.unpack(">Q", header[8:16])[0] if length == 16 else size
        yield kind, position, length, size
        if size < length:  # size 0 (to the end) or malformed: no box past it
            yield b"", position, 0, 0
            return
        position += size


def cut_short(source: str | os.PathLike[str] | bytes) -> str | None:
    """What is wrong when the ISO file (AVIF, HEIF) at `source` (a path, or the file's bytes: an upload) ends inside
    one of its top-level boxes (`ftyp`, `meta`, `mdat`...), by the sizes their headers give: libavif said only
    "Truncated data", or PIL could not even identify it. None when each box ends in the file, and for any other
    file. One wording for the command line, the API and the web page."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as file:
            if _read_at(file, 4, 4) != b"ftyp":
                return None
            stated = 0
            for _kind, position, length, size in _top_level_boxes(file):
                stated = max(stated, position + max(size, length))
            held = file.seek(0, os.SEEK_END)
    except (OSError, struct.error):
        return None
    if stated <= held:
        return None
    return f"the AVIF file is cut short ({held:,} of the {stated:,} bytes its boxes give)"


def _read_at(file: BinaryIO, position: int, size: int) -> bytes:
    file.seek(position)
    return file.read(size)


def _mismatched_sizes(file: BinaryIO) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((width, height) an image item's `ispe` gives, (width, height) its AV1 sequence header codes) for the first
    AV1 item (the colour, its alpha, a thumbnail) whose `ispe` is larger than its data codes, or, a still picture's,
    another size; None when none is, or the file lacks them (libavif refuses it; an image of tiles, `grid`, has no
    AV1 data of its own, and libavif checks its tiles')."""
    meta = _top_level_meta(file)
    if meta is None:
        return None
    boxes = {kind: (start, end) for kind, start, end in _boxes(meta)}
    if b"iprp" not in boxes or b"iloc" not in boxes:
        return None
    locations = _item_locations(meta, *boxes[b"iloc"])
    for item, properties in _item_properties(meta, *boxes[b"iprp"]):
        if b"ispe" not in properties or b"av1C" not in properties:
            continue
        ispe, _ = properties[b"ispe"]
        size = struct.unpack(">II", meta[ispe + 4 : ispe + 12])
        offset, length = locations.get(item, (0, 0))
        coded = _coded_size(_read_at(file, offset, min(length, 256))) if length else None  # its header: ~12 bytes
        if coded is None:  # no sequence header in the item's data: the one in its configuration (av1C) is decoded
            av1c_start, av1c_end = properties[b"av1C"]
            coded = _coded_size(meta[av1c_start + 4 : av1c_end])
        if coded is not None and (size[0] > coded[0] or size[1] > coded[1] or (coded[2] and size != coded[:2])):
            return size, coded[:2]
    return None


def _item_properties(meta: bytes, start: int, end: int) -> Iterator[tuple[int, dict[bytes, tuple[int, int]]]]:
    """Each item that `ipma` gives properties, and where they (`ipco`'s boxes) lie in `meta`, by type."""
    inside = {kind: (box_start, box_end) for kind, box_start, box_end in _boxes(meta, start, end)}
    if b"ipco" not in inside or b"ipma" not in inside:
        return
    listed = list(_boxes(meta, *inside[b"ipco"]))
    at, _ = inside[b"ipma"]
    version, flags = meta[at], int.from_bytes(meta[at + 1 : at + 4], "big")
    (entries,) = struct.unpack(">I", meta[at + 4 : at + 8])
    id_size, index_size = 4 if version >= 1 else 2, 2 if flags & 1 else 1
    mask = 0x7FFF if index_size == 2 else 0x7F  # the top bit says "essential"
    at += 8
    for _ in range(entries):
        item, count = int.from_bytes(meta[at : at + id_size], "big"), meta[at + id_size]
        at += id_size + 1
        indices = [
            int.from_bytes(meta[at + i * index_size : at + (i + 1) * index_size], "big") & mask for i in range(count)
        ]
        at += count * index_size
        chosen = [listed[index - 1] for index in indices if 0 < index <= len(listed)]
        yield item, {kind: (box_start, box_end) for kind, box_start, box_end in chosen}


def _item_locations(meta: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """(offset in the file, length) of each item's first extent, by `iloc`, where its AV1 sequence header is; items
    whose data lies elsewhere (in the meta box's `idat`, another file) are left out."""
    version = meta[start]
    offset_size, length_size = meta[start + 4] >> 4, meta[start + 4] & 15
    base_size, index_size = meta[start + 5] >> 4, (meta[start + 5] & 15) if version in (1, 2) else 0
    id_size = 4 if version == 2 else 2
    count = int.from_bytes(meta[start + 6 : start + 6 + id_size], "big")
    at, locations = start + 6 + id_size, {}
    for _ in range(count):
        item = int.from_bytes(meta[at : at + id_size], "big")
        at += id_size
        method = 0
        if version in (1, 2):
            method = meta[at + 1] & 15
            at += 2
        at += 2  # data_reference_index
        base = int.from_bytes(meta[at : at + base_size], "big")
        (extents,) = struct.unpack(">H", meta[at + base_size : at + base_size + 2])
        first = at + base_size + 2 + index_size
        at += base_size + 2 + extents * (index_size + offset_size + length_size)
        if method == 0 and extents > 0:
            offset = base + int.from_bytes(meta[first : first + offset_size], "big")
            length = int.from_bytes(meta[first + offset_size : first + offset_size + length_size], "big")
            locations[item] = (offset, length or 256)  # a length of 0: to the file's end
    return locations


def _coded_size(obus: bytes) -> tuple[int, int, bool] | None:
    """(width, height) the AV1 sequence header among `obus` (OBUs with their sizes, as AVIF stores them) gives as
    its frames' largest, and whether its frame is that size (a reduced still picture header's is; another's frame
    header may give a smaller one, which a valid `ispe` gives too); None when there is none."""
    at = 0
    while at < len(obus):
        header = obus[at]
        kind, extended, sized = (header >> 3) & 15, header >> 2 & 1, header >> 1 & 1
        at += 1 + extended
        if not sized:
            size = len(obus) - at
        elif (read := read_varint(obus, at, longest=8)) is None:  # AV1 allows 8 bytes
            return None
        else:
            size, at = read
        if kind == _SEQUENCE_HEADER:
            return _sequence_header_size(_Bits(obus[at : at + size]))
        at += size
    return None


class _Bits:
    """Reads an AV1 header's fields, most significant bit first."""

    def __init__(self, data: bytes) -> None:
        self.value, self.left = int.from_bytes(data, "big"), 8 * len(data)

    def read(self, count: int) -> int:
        if count > self.left:
            raise ValueError("the header ends early")
        self.left -= count
        return (self.value >> self.left) & ((1 << count) - 1)

    def skip_uvlc(self) -> None:
        zeros = 0
        while not self.read(1):
            zeros += 1
        self.read(min(zeros, 32))


def _sequence_header_size(bits: _Bits) -> tuple[int, int, bool]:
    """The AV1 sequence header's max_frame_width and max_frame_height (spec 5.5.1), its fields before them read,
    and whether it is a reduced still picture header."""
    bits.read(3)  # seq_profile
    bits.read(1)  # still_picture
    reduced = bool(bits.read(1))
    if not reduced:  # timing, decoder model, operating points
        decoder_model, delay_length = False, 0
        if bits.read(1):  # timing_info_present_flag
            bits.read(64)  # num_units_in_display_tick, time_scale
            if bits.read(1):  # equal_picture_interval
                bits.skip_uvlc()
            decoder_model = bool(bits.read(1))
            if decoder_model:
                delay_length = bits.read(5) + 1
                bits.read(32 + 5 + 5)  # num_units_in_decoding_tick, two lengths
        initial_display_delay = bits.read(1)
        for _ in range(bits.read(5) + 1):  # operating points
            bits.read(12)  # operating_point_idc
            if bits.read(5) > 7:  # seq_level_idx
                bits.read(1)  # seq_tier
            if decoder_model and bits.read(1):
                bits.read(2 * delay_length + 1)
            if initial_display_delay and bits.read(1):
                bits.read(4)
    else:
        bits.read(5)  # seq_level_idx
    width_bits, height_bits = bits.read(4) + 1, bits.read(4) + 1
    return bits.read(width_bits) + 1, bits.read(height_bits) + 1, reduced
