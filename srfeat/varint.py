"""Variable-length integers as protobuf (ONNX files), xz's index (LZMA TIFFs) and AV1 (AVIF) write them: 7 bits a
byte, the lowest first, a byte's top bit saying another follows (LEB128). They are read from untrusted files, so one
that runs past the data, or past the most bytes its format allows, is no number: the reader says None, and each
caller refuses, or stops reading, its own way."""

from __future__ import annotations

LONGEST_64_BITS = 10  # protobuf's and xz's: 64 bits at 7 a byte


def read_varint(data: bytes | memoryview, position: int, longest: int = LONGEST_64_BITS) -> tuple[int, int] | None:
    """The integer at `position` of `data` and the position after it; None when the data ends before its last byte,
    or it takes more than `longest` bytes."""
    value = 0
    for index in range(longest):
        if position + index >= len(data):
            return None
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, position + index + 1
    return None
