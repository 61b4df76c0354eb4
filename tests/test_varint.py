"""The one reader of LEB128 integers that the ONNX, LZMA TIFF and AVIF checks share."""

from __future__ import annotations

import lzma

import pytest

from srfeat.varint import read_varint


@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        (b"\x00", 0),
        (b"\x01", 1),
        (b"\x7f", 127),
        (b"\x80\x01", 128),
        (b"\xac\x02", 300),
        (b"\xff" * 9 + b"\x01", 2**64 - 1),
    ],
)
def test_the_published_encodings_read_as_their_values(encoded: bytes, value: int) -> None:
    data = b"\x99" + encoded + b"\x42"  # read from inside other bytes, the position after it returned
    assert read_varint(data, 1) == (value, 1 + len(encoded))
    assert read_varint(memoryview(data), 1) == (value, 1 + len(encoded))


def test_a_number_cut_off_by_the_end_of_the_data_is_none() -> None:
    assert read_varint(b"\xac", 0) is None
    assert read_varint(b"", 0) is None
    assert read_varint(b"\x01", 1) is None


def test_a_number_longer_than_its_format_allows_is_none() -> None:
    assert read_varint(b"\x80" * 10 + b"\x01", 0) is None  # 11 bytes: past 64 bits
    assert read_varint(b"\x80" * 8 + b"\x01", 0, longest=8) is None  # AV1's limit is 8 bytes
    assert read_varint(b"\x80" * 7 + b"\x01", 0, longest=8) == (1 << 49, 8)


def test_an_xz_index_written_by_lzma_reads_as_its_sizes() -> None:
    """xz's index (after the blocks, before the 12-byte footer): 0x00, the record count, then each block's unpadded
    and uncompressed sizes; the data's length must come out as the uncompressed size."""
    data = bytes(range(256)) * 40
    packed = lzma.compress(data, format=lzma.FORMAT_XZ)
    backward_size = (int.from_bytes(packed[-8:-4], "little") + 1) * 4
    index = packed[-12 - backward_size : -12]
    assert index[0] == 0
    records, position = read_varint(index, 1) or (None, 0)
    assert records == 1
    unpadded, position = read_varint(index, position) or (None, 0)
    assert read_varint(index, position) == (len(data), position + 2)
    assert unpadded is not None and 12 < unpadded < len(packed)
