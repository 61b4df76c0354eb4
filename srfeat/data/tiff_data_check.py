"""Whether a TIFF's tags fit the data it holds, checked before a reader sets aside memory for its pixels.

A TIFF's tags give its size, and its strips' (or tiles') offsets and byte counts where its data lies; a damaged
or hostile file's tags can claim a gigabyte of pixels from a few hundred bytes, which tifffile and PIL set aside
before they find the data missing. `refuse_missing_data` names such a file in one line, from the tags
(`srfeat.data.tiff16.tiff_info`) and, for LZMA, what its data decompresses to (as its xz index gives it); an LZMA
file whose decoder needs more memory than srfeat allows is named as such, not as damaged.
"""

from __future__ import annotations

import lzma
import os
import zlib
from pathlib import Path
from typing import BinaryIO

from srfeat.data import jpeg_check
from srfeat.data.tiff16 import TiffInfo
from srfeat.data.unidentified import read_failure
from srfeat.errors import ImageReadError
from srfeat.varint import read_varint

__all__ = ["missing_data", "refuse_missing_data", "refuse_unread_sparse"]

# What the Deflate and LZMA checks read and make at a time: they hold a MiB of data and one of pixels at most.
_STEP = 1 << 20


def refuse_missing_data(path: Path, info: TiffInfo | None) -> None:
    """`ImageReadError` when the TIFF's tags (`info`) give more pixels than its data holds, before a reader
    (tifffile, or PIL for grey and 8-bit) reserves memory for them, and before the size's warning: a damaged
    file, not a decompression bomb."""
    try:
        problem = missing_data(info, path) if info is not None else None  # reads an LZMA file's data
    except _LzmaMemoryLimitError as error:  # a sound file, as likely as not: it was called damaged
        raise ImageReadError(
            f"cannot read image {path}: its LZMA data needs more memory to decompress than the "
            f"{_LZMA_MEMORY_LIMIT >> 20} MiB srfeat allows (its LZMA dictionary is larger)",
            "save it again with another compression (Deflate or LZW), or with LZMA of a smaller dictionary",
        ) from error
    except OSError as error:
        raise read_failure(path, error) from error
    if problem:
        raise ImageReadError(f"cannot read image {path}: {problem}", ImageReadError.SKIP_OR_REPLACE)


def refuse_unread_sparse(path: Path, info: TiffInfo | None) -> None:
    """`ImageReadError` for a sparse TIFF (strips or tiles of no data) that tifffile does not read for srfeat: PIL
    filled its empty areas with the file's first bytes (uncompressed), or failed with "decoder error -2"."""
    if info is None or not info.empty_strips or (info.decodable and info.plain_layout):
        return
    sparse = f"a sparse TIFF ({info.empty_strips} strip(s) or tile(s) of no data)"
    if not info.decodable:
        problem, advice = f"{sparse} compressed with {info.compression}", "pip install imagecodecs to read it"
    else:
        problem = f"{sparse} of a layout srfeat reads sparse only as grey or RGB(A) of 8 or 16 bits"
        advice = "save it again without empty areas (GDAL: -co SPARSE_OK=FALSE)"
    raise ImageReadError(f"cannot read image {path}: {problem}", advice)


def missing_data(info: TiffInfo, path: str | os.PathLike[str]) -> str | None:
    """Why the pixels the tags (`info`) give cannot all be in the file `path` (cut short, or a header that claims more
    than its data can hold), found before the decoder reserves memory for them: a 608-byte file whose tags
    gave 12000x12000 RGB pixels had tifffile set aside 864 MB first, one of grey PIL 288 MB. None when they
    can be, or when its compression's data has no bound known. A JPEG one's strips are checked as JPEG files
    (`srfeat.data.jpeg_check.short_tiff_strips`): libjpeg gives the rows past a strip's data's end as grey. Strips
    or tiles of no data are a sparse file's empty areas, read as zeros: only the pixels outside them need data (all
    empty, the pixel limits bound it)."""
    needed = info.pixel_bytes
    if len(info.strips) < info.strips_needed:  # tifffile reads the rest as zeros, with a warning
        planes = f" in {info.planes} planes (one a sample)" if info.planes > 1 else ""
        return (
            f"its tags list {len(info.strips)} strip(s) or tile(s), but its {info.width}x{info.height} pixels{planes} "
            f"need {info.strips_needed} (damaged?)"
        )
    if info.data_end > info.file_bytes:
        return f"its pixel data runs to byte {info.data_end:,}, but the file has {info.file_bytes:,} (cut short?)"
    if info.compression == "LZMA":  # no bound per byte: its data is decompressed, a MiB at a time, and counted
        # strips of no rows (a damaged RowsPerStrip) hold nothing: counted to what the pixels need, left to the reader
        made_each = _lzma_strip_bytes(path, info.strips, info.strip_bytes or needed)
        if info.strip_bytes and (
            over := next((number for number, made in enumerate(made_each, 1) if made > info.strip_bytes), 0)
        ):
            return (
                f"the LZMA data of strip or tile {over} of {len(info.strips)} is damaged (it makes more than the "
                f"{info.strip_bytes:,} bytes a strip or tile holds)"
            )
        made = sum(made_each)
        most = f"{made:,} bytes its LZMA data decompresses to"
    elif ratio := _MOST_EXPANSION.get(info.compression, 0):
        made = info.stored_bytes * ratio
        most = f"{info.stored_bytes:,} bytes of pixel data it holds can make"
    elif info.compression == "JPEG":  # no bound per byte: each strip's JPEG stream is checked as a JPEG file's
        # its scan data is checked against the rows PIL decodes from it (`srfeat.data.io`), unless tifffile reads it
        short = jpeg_check.short_tiff_strips(path, info.height, scan_data=bool(info.empty_strips))
        return f"{short} (damaged?)" if short else None
    else:  # no bound known: left to the pixel limits
        return None
    if needed > made:
        empty = f" outside {info.empty_strips} empty strip(s) or tile(s)" if info.empty_strips else ""
        return (
            f"its header gives {info.width}x{info.height} pixels ({needed:,} bytes{empty}), more than the {most} "
            "(damaged or cut short?)"
        )
    return _damaged_deflate(path, info) if info.compression in _DEFLATE else None


_DEFLATE = ("ADOBE_DEFLATE", "DEFLATE")


def _damaged_deflate(path: str | os.PathLike[str], info: TiffInfo) -> str | None:
    """Where the Deflate data of a strip or tile is damaged: zlib refuses it (its checksum, a code), it makes more
    bytes than a strip or tile holds, or it goes on past the rows it holds without ending. libtiff stops inflating
    once a strip's rows are filled, so bytes overwritten in the middle of one (zeros decode as codes too) gave its
    last rows from them, without a word, and the zlib checksum at the end was never read. It costs a second inflate
    of the data, a MiB at a time."""
    row, most = info.row_bytes, info.strip_bytes
    per_plane = -(-info.height // info.rows_per_strip) if info.rows_per_strip else 0
    if not most:  # strips of no rows (a damaged tag): the decoder refuses the file
        return None
    with open(path, "rb") as file:
        for number, (offset, count) in enumerate(info.strips, 1):
            if not count:
                continue
            if per_plane:  # what a strip's rows need: one at the image's foot has fewer (a writer may pad it to full)
                needed = row * min(info.rows_per_strip, info.height - (number - 1) % per_plane * info.rows_per_strip)
            else:  # a tile's: all it covers
                needed = most
            file.seek(offset)
            inflate, made = zlib.decompressobj(), 0
            try:
                while (count or inflate.unconsumed_tail) and made <= most and not inflate.eof:
                    piece = inflate.unconsumed_tail or file.read(min(count, _STEP))
                    if not piece:  # the file ends first (its tags were checked against its size before)
                        break
                    count -= 0 if inflate.unconsumed_tail else len(piece)
                    made += len(inflate.decompress(piece, max_length=_STEP))
            except zlib.error as error:
                return f"the Deflate data of strip or tile {number} of {len(info.strips)} is damaged ({error})"
            if made > most:
                limit, what = most, "a strip or tile holds"
            elif made > needed and not inflate.eof:
                limit, what = needed, "its rows need, and does not end"
            else:
                continue
            return (
                f"the Deflate data of strip or tile {number} of {len(info.strips)} is damaged (it makes more than the "
                f"{limit:,} bytes {what})"
            )
    return None


# The most bytes of pixels one byte of a compression's data makes: uncompressed 1; PackBits 128 from 2; Deflate
# 258 from 2 bits (zlib's 1032:1); LZW a string of at most 4095 - 256 bytes from a code of at least 9 bits
# (3839 * 8 / 9); Zstandard a block of at most 128 KiB from at least 4 bytes (its 3-byte header and one of
# content, as an RLE block). LZMA has no such bound (`_lzma_strip_bytes` counts), nor JPEG (`jpeg_check`).
_MOST_EXPANSION = {
    "NONE": 1,
    "PACKBITS": 64,
    "ADOBE_DEFLATE": 1032,
    "DEFLATE": 1032,
    "LZW": 3413,
    "ZSTD": 32768,
}
# What the check's decoder may take for its dictionary (xz -9 uses 65 MiB): a hostile header's 4 GiB is not set aside.
_LZMA_MEMORY_LIMIT = 256 << 20
_LZMA_MEMORY_LIMIT_REACHED = "Memory usage limit"  # how Python's lzma says liblzma's LZMA_MEMLIMIT_ERROR


class _LzmaMemoryLimitError(Exception):
    """An LZMA strip whose stream header asks for more decoder memory than `_LZMA_MEMORY_LIMIT`."""


def _lzma_strip_bytes(path: str | os.PathLike[str], strips: tuple[tuple[int, int], ...], most: int) -> list[int]:
    """How many bytes each of the LZMA `strips` of the file at `path` decompresses to, counted no further than a byte
    past `most` (what a strip or tile holds): of a few hundred bytes claiming a gigabyte, what they truly make, and of
    a strip that makes more than it holds (a width made smaller: the rows would be read skewed), that it does. A
    strip that ends in a sound xz index (`_xz_index`) is taken at its word, its blocks' headers checked against the
    memory limit: decompressing it here too took twice the time the reader's own decode does. Any other (cut short,
    its index damaged) is read, made and dropped a MiB at a time; one that does not decompress counts what it made
    before. One whose decoder needs more memory than `_LZMA_MEMORY_LIMIT` is `_LzmaMemoryLimitError`, as the file's
    reader would need as much. An index that lies (made so: its CRC holds) is found by the reader's decoder, after
    it has set aside what the tags give, as for any file whose LZMA data truly makes that much."""
    made = []
    with open(path, "rb") as file:
        for offset, count in strips:
            indexed = _xz_index(file, offset, count)
            made.append(indexed if indexed is not None else _decompressed_bytes(file, offset, count, most + 1))
    return made


def _decompressed_bytes(file: BinaryIO, offset: int, count: int, enough: int) -> int:
    """What the LZMA strip at `offset` (`count` bytes) of `file` decompresses to, a MiB at a time, up to `enough`."""
    made = 0
    file.seek(offset)
    decompressor = lzma.LZMADecompressor(memlimit=_LZMA_MEMORY_LIMIT)
    try:
        while made < enough and not decompressor.eof:
            piece = file.read(min(count, _STEP)) if decompressor.needs_input else b""
            if decompressor.needs_input and not piece:  # all of the strip is used: it made what it makes
                break
            count -= len(piece)
            made += len(decompressor.decompress(piece, max_length=_STEP))
    except lzma.LZMAError as error:  # its decoder says what is wrong, if the count lets it go that far
        _raise_if_memory_limit(error)
    return made


def _raise_if_memory_limit(error: lzma.LZMAError) -> None:
    if _LZMA_MEMORY_LIMIT_REACHED in str(error):
        raise _LzmaMemoryLimitError from error


_XZ_HEADER_MAGIC, _XZ_FOOTER_MAGIC = b"\xfd7zXZ\x00", b"YZ"


def _xz_index(file: BinaryIO, offset: int, count: int) -> int | None:
    """The bytes the xz stream of the strip at `offset` (`count` bytes) of `file` decompresses to, as the index at its
    end gives them (xz's format: stream header, blocks, index, footer; each block's uncompressed size in the index),
    read without decompressing; None where the strip is not one stream that ends in a sound footer and index (CRCs
    checked) whose blocks fill it."""
    if count < 32:
        return None
    file.seek(offset)
    header = file.read(12)
    file.seek(offset + count - 12)
    footer = file.read(12)
    if not header.startswith(_XZ_HEADER_MAGIC) or footer[10:] != _XZ_FOOTER_MAGIC or footer[8:10] != header[6:8]:
        return None
    index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
    index_start = offset + count - 12 - index_size
    if zlib.crc32(footer[4:10]) != int.from_bytes(footer[:4], "little") or index_start < offset + 12:
        return None
    file.seek(index_start)
    index = file.read(index_size)
    if index[:1] != b"\x00" or zlib.crc32(index[:-4]) != int.from_bytes(index[-4:], "little"):
        return None
    if (read := read_varint(index, 1)) is None:
        return None
    records, position = read
    block, total = offset + 12, 0
    for _ in range(min(records, index_size // 2)):  # a record takes at least two bytes
        unpadded = read_varint(index, position)
        uncompressed = read_varint(index, unpadded[1]) if unpadded else None
        if unpadded is None or uncompressed is None:
            return None  # a number past the index's end
        position = uncompressed[1]
        _check_block_memory(file, header, block)
        block, total = block + -(-unpadded[0] // 4) * 4, total + uncompressed[0]
    return total if block == index_start and records <= index_size // 2 else None


def _check_block_memory(file: BinaryIO, stream_header: bytes, block: int) -> None:
    """`_LzmaMemoryLimitError` when the xz block at `block` of `file` declares a dictionary past the memory limit: its
    header (after the stream's) is given to a decoder of that limit, which sizes its memory from it, and stops."""
    file.seek(block)
    size = (file.read(1) or b"\x00")[0]
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMORY_LIMIT)
    try:
        decompressor.decompress(stream_header + bytes((size,)) + file.read(size * 4 + 3), max_length=1)
    except lzma.LZMAError as error:  # a damaged header: the reader's decoder says so
        _raise_if_memory_limit(error)
