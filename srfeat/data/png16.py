"""16-bit PNG files, which PIL decodes only as gray: colour ones it cuts down to 8 bits.

A small PNG codec with numpy and zlib, used only for 16-bit files, so that a 16-bit image
upscaled is written back with 16 bits: the reader undoes the five row filters of the PNG
standard (Sub and Up vectorised; Average and Paeth, whose bytes depend on their left
neighbours, by a plain loop), pass by pass in an interlaced (Adam7) file; the writer uses the Up
filter on every row and does not interlace.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srfeat.data.colour_profiles import (
    MAX_ICC_PROFILE_BYTES,
    inflated_size,
    warn_damaged_profile,
    warn_oversized_profile,
)

__all__ = [
    "PNG_HEAD_BYTES",
    "PNG_SIGNATURE",
    "Png16",
    "png16_channels",
    "png16_head_channels",
    "png16_size",
    "read_png16",
    "write_png16",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The signature, IHDR length and type, and IHDR: what tells a PNG's size and bit depth.
PNG_HEAD_BYTES = len(PNG_SIGNATURE) + 8 + 13
# PNG colour type -> channels: gray, RGB, gray + alpha, RGBA (palette images are never 16-bit).
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
COLOR_TYPES = {channels: color_type for color_type, channels in CHANNELS.items()}
# Adam7's seven passes: (first column, first row, column step, row step).
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
IDAT_CHUNK_BYTES = 1 << 20
WRITE_BAND_ROWS = 64  # rows filtered and compressed at once by `write_png16`


@dataclass(frozen=True)
class Png16:
    """Pixels (HxWxC uint16), the embedded ICC profile and the EXIF block of a 16-bit PNG file."""

    array: np.ndarray
    icc_profile: bytes | None
    exif: bytes | None = None  # the eXIf chunk, as stored (orientation not applied)
    frames: int = 1  # an animated PNG's (acTL); its default image, the first frame, is what is read


def _chunks(data: bytes) -> list[tuple[bytes, bytes, bool]]:
    """(type, data, whether its CRC matches) of each chunk of the PNG `data`, to IEND; a CRC cut off by the file's
    end is taken to match (PIL's reader lets it pass: the pixel data's own end is checked)."""
    chunks, position = [], len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        stored = data[position + 8 + length : position + 12 + length]
        crc_matches = len(stored) < 4 or struct.unpack(">I", stored)[0] == zlib.crc32(body, zlib.crc32(kind))
        chunks.append((kind, body, crc_matches))
        position += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            break
    return chunks


def png16_channels(path: str | os.PathLike[str]) -> int:
    """Channels of a 16-bit PNG (what `read_png16` reads); 0 for any other file."""
    try:
        with open(path, "rb") as file:
            head = file.read(PNG_HEAD_BYTES)
    except OSError:
        return 0
    return png16_head_channels(head)


def png16_head_channels(head: bytes) -> int:
    """`png16_channels` of a file whose first bytes (`PNG_HEAD_BYTES`, or more) are `head`: an upload in memory."""
    if len(head) < PNG_HEAD_BYTES or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return 0
    _width, _height, bit_depth, color_type, _compression, _filter, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return CHANNELS.get(color_type, 0) if bit_depth == 16 and interlace in (0, 1) else 0


def png16_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from a PNG's header, without reading further; ValueError if it has none."""
    with open(path, "rb") as file:
        head = file.read(len(PNG_SIGNATURE) + 8 + 13)
    if len(head) < PNG_HEAD_BYTES or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _paeth_row(row: bytearray, previous: bytes, bpp: int) -> None:
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = previous[i]
        up_left = previous[i - bpp] if i >= bpp else 0
        estimate = left + up - up_left
        distance_left, distance_up, distance_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
        if distance_left <= distance_up and distance_left <= distance_up_left:
            predictor = left
        elif distance_up <= distance_up_left:
            predictor = up
        else:
            predictor = up_left
        row[i] = (row[i] + predictor) & 0xFF


def _average_row(row: bytearray, previous: bytes, bpp: int) -> None:
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF


def _unfilter(data: bytes | memoryview, height: int, stride: int, bpp: int) -> np.ndarray:
    if len(data) < height * (stride + 1):
        raise ValueError("truncated PNG image data")
    rows = np.frombuffer(data, dtype=np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    output = np.empty((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, row = rows[y, 0], rows[y, 1:]
        if kind == 0:
            output[y] = row
        elif kind == 1:  # Sub: a running sum along each byte lane of the pixels
            output[y] = np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            output[y] = row + previous
        elif kind in (3, 4):
            line = bytearray(row.tobytes())
            (_average_row if kind == 3 else _paeth_row)(line, previous.tobytes(), bpp)
            output[y] = np.frombuffer(line, dtype=np.uint8)
        else:
            raise ValueError(f"unknown PNG filter type {kind}")
        previous = output[y]
    return output


def _inflate_icc_profile(body: bytes, path: str | os.PathLike[str]) -> bytes | None:
    """The iCCP chunk's profile, or None (with a warning) when it is damaged or too large.

    The profile is metadata: a broken one costs the colour management, not the picture, so the
    image is still read (PIL drops a damaged profile the same way).
    """
    name_end = body.find(b"\0")
    if name_end < 0 or name_end + 2 > len(body):
        warn_damaged_profile(path, "its iCCP chunk is malformed")
        return None
    inflater = zlib.decompressobj()
    try:
        profile = inflater.decompress(body[name_end + 2 :], MAX_ICC_PROFILE_BYTES)
        if inflater.unconsumed_tail:
            warn_oversized_profile(path, inflated_size(body[name_end + 2 :]))
            return None
    except zlib.error as error:
        warn_damaged_profile(path, error)
        return None
    return profile or None


def _inflated_pixel_data(idat_chunks: list[tuple[bytes, bool]], expected: int, size: str) -> bytes:
    """The pixel data of a PNG's IDAT chunks (data, whether its CRC matches), inflated to `expected` bytes at most;
    ValueError when it is damaged: zlib refuses it or its checksum, it goes on past `expected` (what the header's
    `size`, "WxH", needs), or a chunk's CRC fails. zlib's checksum lies past the last pixel's data, so the stream
    is inflated a byte further, to reach it."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(body for body, _ in idat_chunks), expected)
        surplus = len(raw) == expected and bool(inflater.decompress(inflater.unconsumed_tail, 1))
    except zlib.error as error:
        raise ValueError(f"corrupt PNG image data ({error})") from error
    if surplus:
        raise ValueError(f"the PNG image data is longer than its {size} header says (a damaged file?)")
    if (failed := next((number for number, (_, matches) in enumerate(idat_chunks, 1) if not matches), 0)) != 0:
        raise ValueError(f"the CRC of its pixel data chunk {failed} (IDAT) does not match its data (damaged?)")
    return raw


def read_png16(path: str | os.PathLike[str], max_pixels: int | None = None) -> Png16:
    """Decode a 16-bit PNG; raises ValueError for anything else or bad data.

    `max_pixels` (PIL's decompression-bomb limit, say) is checked against the header's size
    before any pixel data is inflated, and the inflated data is never allowed to grow past what
    that size needs: a small file cannot make this allocate more than its header declares.
    """
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError("PNG file without a header")
    width, height, bit_depth, color_type, _compression, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if bit_depth != 16 or color_type not in CHANNELS or interlace not in (0, 1):
        raise ValueError(f"not a 16-bit PNG (bit depth {bit_depth}, colour type {color_type}, interlace {interlace})")
    if width == 0 or height == 0:
        raise ValueError(f"the PNG header gives an empty image ({width}x{height} pixels)")
    if max_pixels is not None and width * height > max_pixels:
        # PIL's wording for the same refusal of 8-bit files
        raise ValueError(
            f"Image size ({width * height} pixels) exceeds limit of {max_pixels} pixels, "
            "could be decompression bomb DOS attack."
        )
    channels = CHANNELS[color_type]
    icc_profile = None
    exif = None
    key: np.ndarray | None = None
    frames = 1
    for kind, body, _ in chunks:
        if kind == b"iCCP" and icc_profile is None:
            icc_profile = _inflate_icc_profile(body, path)
        elif kind == b"eXIf" and exif is None:
            exif = body
        elif kind == b"acTL" and len(body) == 8:
            frames = max(1, struct.unpack(">I", body[:4])[0])
        elif kind == b"tRNS" and len(body) == 2 * channels and key is None:  # grey or RGB: one see-through colour
            key = np.frombuffer(body, dtype=">u2")
    bpp = 2 * channels
    passes = [
        (x0, y0, dx, dy, max(0, -(-(height - y0) // dy)), max(0, -(-(width - x0) // dx)))
        for x0, y0, dx, dy in (ADAM7 if interlace else ((0, 0, 1, 1),))
    ]
    expected = sum(rows * (columns * bpp + 1) for *_, rows, columns in passes if columns)  # a filter byte a row
    raw = _inflated_pixel_data(
        [(body, crc_matches) for kind, body, crc_matches in chunks if kind == b"IDAT"], expected, f"{width}x{height}"
    )
    if len(raw) < expected:
        raise ValueError(f"truncated PNG image data ({len(raw):,} of {expected:,} bytes)")
    array = np.empty((height, width, channels), dtype=np.uint16)
    start = 0
    for x0, y0, dx, dy, rows, columns in passes:  # an empty pass (a small image's) has no rows at all
        if rows and columns:
            size = rows * (columns * bpp + 1)
            pixels = _unfilter(memoryview(raw)[start : start + size], rows, columns * bpp, bpp)
            array[y0::dy, x0::dx] = pixels.view(">u2").reshape(rows, columns, channels)
            start += size
    if key is not None and color_type in (0, 2):  # the colour key becomes an alpha channel, as PIL's 8-bit one
        alpha = np.where((array == key).all(axis=2, keepdims=True), 0, 65535).astype(np.uint16)
        array = np.concatenate([array, alpha], axis=2)
    return Png16(array=array, icc_profile=icc_profile, exif=exif, frames=frames)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png16(
    path: str | os.PathLike[str],
    array: np.ndarray,
    icc_profile: bytes | None = None,
    compress_level: int = 6,
    exif: bytes | None = None,
) -> None:
    """Write an HxW or HxWxC (C = 1..4) uint16 array as a 16-bit PNG, with its ICC profile and EXIF block.

    The rows are filtered and compressed a band at a time, and the compressed data written as it
    comes: the file is the same as from filtering and compressing the whole image at once, which
    took three image-sized copies (big-endian, filtered, and its bytes: 288 MB for a 4000x4000
    RGB image) and two of the compressed data.
    """
    if array.dtype != np.uint16:
        raise ValueError(f"write_png16 expects uint16 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in COLOR_TYPES:
        raise ValueError(f"write_png16 expects HxW or HxWxC with C = 1..4, got shape {array.shape}")
    height, width, channels = array.shape
    with open(path, "wb") as file:
        file.write(PNG_SIGNATURE)
        file.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, COLOR_TYPES[channels], 0, 0, 0)))
        if icc_profile:
            file.write(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
        if exif:  # eXIf holds the TIFF-structured block, without JPEG's "Exif" header (as PIL writes it)
            file.write(_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
        pending = bytearray()  # compressed data not yet written: IDAT chunks of IDAT_CHUNK_BYTES, the last shorter
        for compressed in _compressed_rows(array, compress_level):
            pending += compressed
            while len(pending) >= IDAT_CHUNK_BYTES:
                file.write(_chunk(b"IDAT", bytes(pending[:IDAT_CHUNK_BYTES])))
                del pending[:IDAT_CHUNK_BYTES]
        if pending:
            file.write(_chunk(b"IDAT", bytes(pending)))
        file.write(_chunk(b"IEND", b""))


def _compressed_rows(array: np.ndarray, compress_level: int) -> Iterator[bytes]:
    """The zlib stream of the Up-filtered rows of an HxWxC uint16 array, in pieces, a band of rows at a time.

    zlib's deflate gives the same stream for input fed in pieces as for the whole at once.
    """
    height = array.shape[0]
    compressor = zlib.compressobj(compress_level)
    previous: np.ndarray | None = None  # the band's row above, as big-endian bytes
    for start in range(0, height, WRITE_BAND_ROWS):
        rows = np.ascontiguousarray(array[start : start + WRITE_BAND_ROWS], dtype=">u2").view(np.uint8)
        rows = rows.reshape(rows.shape[0], -1)
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = 2  # Up: each row minus the one above, which compresses photographs well
        if previous is None:
            filtered[0, 1:] = rows[0]
        else:
            np.subtract(rows[0], previous, out=filtered[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        previous = rows[-1].copy()
        yield compressor.compress(filtered.data)
    yield compressor.flush()
