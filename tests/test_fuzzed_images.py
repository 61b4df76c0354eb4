"""Hostile image files a mutation fuzzer of the reader found escaping its rule (a one-line error that says what is
wrong and what to do, checked before memory is set aside, no wrong result passed on): each is built here from a
small valid file, as the fuzzer made it."""

from __future__ import annotations

import io
import logging
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from cli_helpers import one_input_error, srfeat_cli
from PIL import Image
from skimage import data as samples
from test_image_reading import address_space_after_import

from srfeat import libtiff_messages
from srfeat.data.io import read_raw_image
from srfeat.data.png16 import write_png16
from srfeat.errors import ImageReadError

CROP = samples.astronaut()[100:117, 150:174]  # 17x24: small, and not square


def png_bytes(mode: str) -> bytes:
    pixels = CROP if mode in ("RGB", "P") else (CROP[..., 0].astype(np.uint16) * 257)
    image = Image.fromarray(pixels).quantize(16) if mode == "P" else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "I;16"], ids=["rgb8", "grey16"])
def test_a_png_whose_image_data_chunk_claims_4_gib_is_refused_before_it_is_read(
    tmp_path: Path, model_path: Path, mode: str
) -> None:
    """The IDAT's length made 4 GiB: PIL's reader, having decoded the pixels, read the rest of the chunk in one
    call, which set aside all 4 GiB first (MemoryError under a limit, a traceback) for a file of under 1 KB."""
    whole = bytearray(png_bytes(mode))
    at = whole.index(b"IDAT") - 4  # its length field (the CRC covers the type and data only: still right)
    whole[at : at + 4] = struct.pack(">I", 0xFFFFFFFF)
    (tmp_path / "idat.png").write_bytes(bytes(whole))
    limit = address_space_after_import() + 2**30  # what the upscale needs, and a GiB: not the 4 GiB claimed
    child = srfeat_cli("upscale", "idat.png", "-o", "out.png", "--model", model_path, cwd=tmp_path, memory_limit=limit)
    assert one_input_error(child) == (
        f"ERROR: cannot read image idat.png: its 'IDAT' chunk claims 4,294,967,295 bytes, but the file ends at byte "
        f"{len(whole):,} (damaged or cut short?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(("magic", "width", "height"), [("P6", 0, 17), ("P3", 24, 0)], ids=["binary", "ascii"])
def test_a_sixteen_bit_ppm_of_no_width_or_height_is_refused_as_read(
    tmp_path: Path, model_path: Path, magic: str, width: int, height: int
) -> None:
    """Read as an empty array without a word, it was refused only later, by the upscale ("the image is empty
    (0x17 pixels): nothing to upscale"), where `srfeat eval` and the API got the empty array."""
    sixteen_bit = CROP.astype(np.uint16) * 257
    body = sixteen_bit.astype(">u2").tobytes() if magic == "P6" else " ".join(map(str, sixteen_bit.ravel())).encode()
    (tmp_path / "empty.ppm").write_bytes(f"{magic}\n{width} {height}\n65535\n".encode() + body)
    child = srfeat_cli("upscale", "empty.ppm", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        f"ERROR: cannot read image empty.ppm: the PPM header gives an empty image ({width}x{height} pixels); "
        "skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_png_whose_image_data_chunk_claims_a_little_past_its_end_is_still_read_whole(tmp_path: Path) -> None:
    """Its pixels' compressed data all there (the CRC and IEND lost, or a length a little off): PIL read it whole,
    and still does; only a claim past what PIL reads at a time is refused. (Passes on the old code too: it guards
    the refusal above from taking in files that were read right.)"""
    whole = bytearray(png_bytes("RGB"))
    at = whole.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", whole[at : at + 4])
    whole[at : at + 4] = struct.pack(">I", length + 100_000)
    (tmp_path / "long.png").write_bytes(bytes(whole))
    np.testing.assert_array_equal(read_raw_image(tmp_path / "long.png").array, CROP)


@pytest.mark.parametrize("mode", ["RGB", "I;16", "P"], ids=["rgb8", "grey16", "palette"])
def test_a_png_whose_header_gives_more_rows_than_its_pixel_data_holds_is_refused(
    tmp_path: Path, model_path: Path, mode: str
) -> None:
    """Its height made 200 of 17: PIL's decoder stopped where the compressed data ended and gave the other 183
    rows as zeros, without a word, and they were upscaled as a black band."""
    whole = bytearray(png_bytes(mode))
    whole[20:24] = struct.pack(">I", 200)  # IHDR's height, and its CRC made right again: only the size lies
    whole[29:33] = struct.pack(">I", zlib.crc32(bytes(whole[12:29])))
    (tmp_path / "tall.png").write_bytes(bytes(whole))
    row_bytes = 1 + {"RGB": 24 * 3, "I;16": 24 * 2, "P": 24 // 2}[mode]  # PIL writes a palette of 16 with 4 bits
    child = srfeat_cli("upscale", "tall.png", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        f"ERROR: cannot read image tall.png: its pixel data inflates to {17 * row_bytes:,} bytes, short of the "
        f"{200 * row_bytes:,} its 24x200 header needs (damaged?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


# The kinds of JPEG a camera, an editor or PIL writes: baseline of each chroma subsampling (4:4:4, 4:2:2, 4:2:0) and
# quality, progressive, optimised Huffman tables, restart markers (every row of blocks, every 3 blocks), grey, CMYK.
JPEG_KINDS = {
    "baseline": ("RGB", {"quality": 75}),
    "444-q100": ("RGB", {"quality": 100, "subsampling": 0}),
    "422-q30": ("RGB", {"quality": 30, "subsampling": 1}),
    "progressive": ("RGB", {"progressive": True}),
    "optimised": ("RGB", {"optimize": True}),
    "restart-rows": ("RGB", {"restart_marker_rows": 1}),
    "progressive-restart-blocks": ("RGB", {"progressive": True, "restart_marker_blocks": 3}),
    "grey": ("L", {"quality": 90}),
    "cmyk": ("CMYK", {"quality": 90}),
}
JPEG_CROP = samples.astronaut()[60:101, 150:213]  # 41x63: several rows and columns of blocks, cut mid-block


def jpeg_bytes(mode: str, options: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(JPEG_CROP).convert(mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("mode", "options"), JPEG_KINDS.values(), ids=JPEG_KINDS.keys())
def test_a_jpeg_whose_header_gives_more_rows_than_its_scan_data_holds_is_refused(
    tmp_path: Path, model_path: Path, mode: str, options: dict[str, object]
) -> None:
    """Its frame header's (SOF's) height made 80 of 41: libjpeg reached the end marker early, warned (which PIL does
    not pass on) and decoded the missing rows as flat grey, and they were upscaled as a grey band without a word."""
    whole = bytearray(jpeg_bytes(mode, options))
    at = min(at for at in (whole.find(sof) for sof in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2")) if at >= 0)
    assert struct.unpack(">H", whole[at + 5 : at + 7]) == (41,)
    whole[at + 5 : at + 7] = struct.pack(">H", 80)
    (tmp_path / "tall.jpg").write_bytes(bytes(whole))
    child = srfeat_cli("upscale", "tall.jpg", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image tall.jpg: its data ends before the 80 rows its header gives (damaged?); "
        "skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(("mode", "options"), JPEG_KINDS.values(), ids=JPEG_KINDS.keys())
def test_valid_jpegs_of_every_kind_are_still_read_as_pil_decodes_them(
    tmp_path: Path, mode: str, options: dict[str, object]
) -> None:
    """The refusal above decodes the file again with bytes added past each scan's data: a sound file's decoder never
    reads them, and it reads as before. (Passes on the old code too: it guards the refusal from taking in good
    files.)"""
    path = tmp_path / "good.jpg"
    path.write_bytes(jpeg_bytes(mode, options))
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB") if mode == "CMYK" else image)
    read = read_raw_image(path).array
    np.testing.assert_array_equal(read[..., 0] if mode == "L" else read, expected)


def jpeg_tiff_bytes(strip_size: int | None = None) -> bytes:
    buffer = io.BytesIO()
    strips = {"strip_size": strip_size} if strip_size else {}
    Image.fromarray(JPEG_CROP).save(buffer, format="TIFF", compression="jpeg", **strips)
    return buffer.getvalue()


def with_tiff_tag(data: bytes, tag: int, value: int) -> bytes:
    """The little-endian TIFF `data` with its first page's SHORT or LONG `tag` made `value`."""
    whole = bytearray(data)
    (directory,) = struct.unpack("<I", whole[4:8])
    (entries,) = struct.unpack("<H", whole[directory : directory + 2])
    for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
        number, kind = struct.unpack("<HH", whole[entry : entry + 4])
        if number == tag:
            whole[entry + 8 : entry + 12] = struct.pack(
                "<HH" if kind == 3 else "<I", *((value, 0) if kind == 3 else (value,))
            )
    return bytes(whole)


JPEGTRAN = shutil.which("jpegtran")  # libjpeg(-turbo)'s: PIL writes no arithmetic code


def arithmetic_jpeg_tiff_bytes(height: int, frame_height: int) -> bytes:
    """PIL's one-strip JPEG TIFF with its strip made arithmetic-coded (`jpegtran -arithmetic`, appended, the strip's
    tags pointed at it), its tags' height and rows per strip made `height` and its frame header's `frame_height`."""
    whole = jpeg_tiff_bytes()
    with tifffile.TiffFile(io.BytesIO(whole)) as tiff:
        page = tiff.pages.first
        offset, count, tables = page.dataoffsets[0], page.databytecounts[0], bytes(page.jpegtables or b"")
    assert JPEGTRAN is not None
    huffman = tables[:-2] + whole[offset + 2 : offset + count]  # the tables in front: a JPEG of its own
    strip = bytearray(subprocess.run([JPEGTRAN, "-arithmetic"], input=huffman, capture_output=True, check=True).stdout)
    at = strip.index(b"\xff\xc9")  # SOF9: sequential, arithmetic-coded
    strip[at + 5 : at + 7] = struct.pack(">H", frame_height)
    whole = with_tiff_tag(with_tiff_tag(whole, 257, height), 278, height)  # ImageLength, RowsPerStrip
    return with_tiff_tag(with_tiff_tag(whole, 273, len(whole)), 279, len(strip)) + bytes(strip)


NEEDS_JPEGTRAN = pytest.mark.skipif(JPEGTRAN is None, reason="needs jpegtran (libjpeg-turbo-progs): arithmetic code")


@pytest.mark.parametrize("coding", ["huffman", pytest.param("arithmetic", marks=NEEDS_JPEGTRAN)])
@pytest.mark.parametrize("frame_header", ["enlarged too", "as written"])
def test_a_jpeg_tiff_whose_tags_give_more_rows_than_its_strip_holds_is_refused(
    tmp_path: Path, model_path: Path, frame_header: str, coding: str
) -> None:
    """Its height and rows per strip made 80 of 41: libtiff gave the rows past the strip's JPEG frame as zeros, or,
    the frame's height enlarged to match, libjpeg gave them as grey, without a word either way. A strip of arithmetic
    code (SOF9) the check had left out."""
    if coding == "arithmetic":
        whole = arithmetic_jpeg_tiff_bytes(80, 80 if frame_header == "enlarged too" else 41)
    else:
        whole = with_tiff_tag(with_tiff_tag(jpeg_tiff_bytes(), 257, 80), 278, 80)  # ImageLength, RowsPerStrip
    if frame_header == "enlarged too" and coding == "huffman":
        at = whole.index(b"\xff\xc0")
        whole = whole[: at + 5] + struct.pack(">H", 80) + whole[at + 7 :]
    (tmp_path / "tall.tif").write_bytes(whole)
    child = srfeat_cli("upscale", "tall.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image tall.tif: its data ends before the 80 rows its header gives (damaged?); "
        "skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("strip_size", [None, 2000], ids=["one-strip", "strips-of-16-rows"])
def test_valid_jpeg_tiffs_are_still_read_as_pil_decodes_them(tmp_path: Path, strip_size: int | None) -> None:
    """(Passes on the old code too: it guards the refusal above from taking in good files, of one strip or of
    several whose last is cut short by the image's end.)"""
    path = tmp_path / "good.tif"
    path.write_bytes(jpeg_tiff_bytes(strip_size))
    with Image.open(path) as image:
        expected = np.asarray(image)
    np.testing.assert_array_equal(read_raw_image(path).array, expected)


@NEEDS_JPEGTRAN
def test_a_valid_arithmetic_coded_jpeg_tiff_is_read_as_pil_decodes_it(tmp_path: Path) -> None:
    """(Passes on the old code too: it guards the refusal above from taking in a sound file.)"""
    path = tmp_path / "good.tif"
    path.write_bytes(arithmetic_jpeg_tiff_bytes(41, 41))
    with Image.open(path) as image:
        expected = np.asarray(image)
    assert np.abs(expected.astype(int) - JPEG_CROP).mean() < 8  # the picture, not grey or zeros
    np.testing.assert_array_equal(read_raw_image(path).array, expected)


def test_a_sound_jpeg_tiffs_strips_are_decoded_once_for_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each strip was decoded twice by the check (as it is, and with bytes past its data), besides libtiff's decode
    of the page: the rows libtiff decoded are what the strip with bytes past its data is compared with now."""
    path = tmp_path / "good.tif"
    path.write_bytes(jpeg_tiff_bytes(2000))
    with tifffile.TiffFile(path) as tiff:
        strips = len(tiff.pages.first.dataoffsets)
    opened: list[object] = []
    real_open = Image.open

    def counting_open(source: Any, *args: Any, **kwargs: Any) -> Image.Image:  # Image.open's arguments
        opened.extend([source] if isinstance(source, io.BytesIO) else [])  # a strip, as a JPEG of its own
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    with real_open(path) as image:
        expected = np.asarray(image)
    np.testing.assert_array_equal(read_raw_image(path).array, expected)
    assert strips > 1 and len(opened) == strips


def old_style_jpeg_tiff_bytes(jpeg: bytes, height: int, tables_in_tags: bool = False) -> bytes:
    """A little-endian TIFF of compression 6 (old-style JPEG, as scanners and faxes once wrote) of `height` rows whose
    JPEGInterchangeFormat tag points at the whole YCbCr 4:2:0 JPEG stream `jpeg`, its one strip too; or,
    `tables_in_tags`, with no such tag, whose JPEGQTables, JPEGDCTables and JPEGACTables tags point at `jpeg`'s tables
    (of each component) and whose one strip holds its scan data alone, from which libtiff builds the stream."""
    width = JPEG_CROP.shape[1]
    scan_at = jpeg.index(b"\xff\xda")
    scan_data = jpeg[scan_at + 2 + struct.unpack(">H", jpeg[scan_at + 2 : scan_at + 4])[0] : jpeg.rindex(b"\xff\xd9")]
    pieces = [*component_tables(jpeg), scan_data] if tables_in_tags else [jpeg]
    offsets, data = [], b""
    for piece in pieces:
        offsets.append(8 + len(data))
        data += piece + b"\x00" * (len(piece) % 2)
    arrays_at = 8 + len(data)  # BitsPerSample's values (8, 8, 8), then the tables' offsets
    arrays = struct.pack("<4H", 8, 8, 8, 0) + (struct.pack("<9I", *offsets[:9]) if tables_in_tags else b"")
    stream_tags = [(513, 4, 1, 8), (514, 4, 1, len(jpeg))]  # JPEGInterchangeFormat, its length
    table_tags = [(512, 3, 1, 1), *((519 + kind, 4, 3, arrays_at + 8 + 12 * kind) for kind in range(3))]
    entries = [  # (tag, type: 3 SHORT, 4 LONG, count, value or offset)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, arrays_at),
        (259, 3, 1, 6),
        (262, 3, 1, 6),  # YCbCr
        (273, 4, 1, offsets[-1]),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(pieces[-1])),
        *(table_tags if tables_in_tags else stream_tags),  # JPEGProc (1: baseline), JPEGQ/DC/ACTables
        (530, 3, 2, 2 | 2 << 16),  # YCbCrSubSampling 2, 2
    ]
    directory = struct.pack("<H", len(entries)) + b"".join(
        struct.pack(
            "<HHII" if kind == 4 or count > 1 else "<HHIHH",
            tag,
            kind,
            count,
            *((value,) if kind == 4 or count > 1 else (value, 0)),
        )
        for tag, kind, count, value in entries
    )
    return b"II*\x00" + struct.pack("<I", arrays_at + len(arrays)) + data + arrays + directory + b"\x00" * 4


def component_tables(jpeg: bytes) -> list[bytes]:
    """The quantisation tables (64 values), then the DC and the AC Huffman tables (16 counts, then the values) of
    each of the baseline JPEG `jpeg`'s components, in the order of its components: as an old-style JPEG TIFF's tags
    point at them."""
    tables: dict[tuple[int, int], bytes] = {}  # (0 quantisation, 1 DC, 2 AC; table number): the table
    quantisation_numbers: list[int] = []  # each component's, as its frame header (SOF0) gives them
    position = 2
    while jpeg[position + 1] != 0xDA:
        marker, (length,) = jpeg[position + 1], struct.unpack(">H", jpeg[position + 2 : position + 4])
        content, at = jpeg[position + 4 : position + 2 + length], 0
        while marker in (0xDB, 0xC4) and at < len(content):
            size = 64 if marker == 0xDB else 16 + sum(content[at + 1 : at + 17])
            kind = 0 if marker == 0xDB else 1 + (content[at] >> 4)
            tables[kind, content[at] & 15] = content[at + 1 : at + 1 + size]
            at += 1 + size
        if marker == 0xC0:
            quantisation_numbers = [content[8 + 3 * index] for index in range(content[5])]
        position += 2 + length
    scan = jpeg[position + 4 :]  # its header: each component's DC and AC table numbers
    numbers = [
        (quantisation, scan[2 + 2 * index] >> 4, scan[2 + 2 * index] & 15)
        for index, quantisation in enumerate(quantisation_numbers)
    ]
    return [tables[kind, each[kind]] for kind in range(3) for each in numbers]


def test_an_old_style_jpeg_tiff_whose_stream_gives_more_rows_than_its_scan_data_holds_is_refused(
    tmp_path: Path,
) -> None:
    """Its JPEG stream's frame header and its tags made 80 rows of 41: libtiff's old-style JPEG reader gave the rows
    past the scan data's end as flat grey (128), without a word; the check looked at new-style JPEG (7) only."""
    whole = bytearray(jpeg_bytes("RGB", {"quality": 75}))
    at = whole.index(b"\xff\xc0")
    whole[at + 5 : at + 7] = struct.pack(">H", 80)
    (tmp_path / "tall.tif").write_bytes(old_style_jpeg_tiff_bytes(bytes(whole), 80))
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "tall.tif")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'tall.tif'}: its data ends before the 80 rows its header gives (damaged?); "
        "skip or replace this file"
    )
    (tmp_path / "good.tif").write_bytes(old_style_jpeg_tiff_bytes(jpeg_bytes("RGB", {"quality": 75}), 41))
    read = read_raw_image(tmp_path / "good.tif").array  # a sound one is read (libtiff's colours, near PIL's)
    assert read.shape == JPEG_CROP.shape and np.abs(read.astype(int) - JPEG_CROP).mean() < 10


def test_an_old_style_jpeg_tiff_of_tables_in_tags_whose_tags_give_more_rows_than_its_strip_holds_is_refused(
    tmp_path: Path,
) -> None:
    """Without a JPEGInterchangeFormat tag (its tables in tags, its strip scan data alone), it was not checked: its
    tags made 80 rows of 41, libtiff built a stream of 80 rows from them, and gave the rows past the scan data's end
    as flat grey (128), without a word."""
    jpeg = jpeg_bytes("RGB", {"quality": 75})
    (tmp_path / "tall.tif").write_bytes(old_style_jpeg_tiff_bytes(jpeg, 80, tables_in_tags=True))
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "tall.tif")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'tall.tif'}: its data ends before the 80 rows its header gives (damaged?); "
        "skip or replace this file"
    )
    (tmp_path / "good.tif").write_bytes(old_style_jpeg_tiff_bytes(jpeg, 41, tables_in_tags=True))
    read = read_raw_image(tmp_path / "good.tif").array  # a sound one is read (libtiff's colours, near PIL's)
    assert read.shape == JPEG_CROP.shape and np.abs(read.astype(int) - JPEG_CROP).mean() < 10


def lzw_tiff_with_damaged_data(folder: Path) -> Path:
    """An LZW TIFF (as PIL writes it: one strip) with two bytes of its data overwritten: a code not yet in the table."""
    path = folder / "damaged.tif"
    Image.fromarray(CROP).save(path, compression="tiff_lzw")
    with tifffile.TiffFile(path) as tiff:
        offset = tiff.pages.first.dataoffsets[0] + 10
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = b"\xff\xff"
    path.write_bytes(bytes(data))
    return path


def test_a_tiff_libtiff_cannot_decode_fails_in_one_line_that_says_what_libtiff_said(
    tmp_path: Path, model_path: Path
) -> None:
    """libtiff's own handlers printed "tempfile.tif: Using code not yet in table." to stderr above srfeat's error
    (PIL names every file so to libtiff), which said only PIL's "decoder error -2"."""
    lzw_tiff_with_damaged_data(tmp_path)
    child = srfeat_cli("upscale", "damaged.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image damaged.tif: decoder error -2 (libtiff: Using code not yet in table); skip or "
        "replace this file"
    )
    assert [line for line in child.stderr.splitlines() if not line.startswith(("INFO", "ERROR"))] == []
    assert not (tmp_path / "out.png").exists()


def test_libtiff_messages_are_collected_in_the_thread_that_reads_and_kept_off_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = lzw_tiff_with_damaged_data(tmp_path)

    def decode() -> None:
        with pytest.raises(OSError, match="decoder error"), Image.open(path) as image:
            image.load()

    with libtiff_messages.caught() as lines:
        decode()
        assert libtiff_messages.errors_caught() == ["Using code not yet in table"]
    assert lines == ["libtiff: Using code not yet in table"]
    with caplog.at_level(logging.DEBUG, logger="srfeat.libtiff_messages"):
        decode()  # outside a reader: at debug level
    assert [record.getMessage() for record in caplog.records] == lines
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("fill", "kept"), [(0x00, 2), (0x00, 4), (0xFF, 2)], ids=["zeros-half", "zeros", "ones"])
def test_a_deflate_tiff_whose_strip_data_is_overwritten_is_refused(
    tmp_path: Path, model_path: Path, fill: int, kept: int
) -> None:
    """Zeros over the second half of a strip's Deflate data decode as codes too: libtiff stopped once the strip's
    rows were filled, never reaching zlib's checksum, and gave its last rows from them without a word."""
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, CROP, compression="zlib", rowsperstrip=8)
    with tifffile.TiffFile(path) as tiff:
        offset, count = tiff.pages.first.dataoffsets[1], tiff.pages.first.databytecounts[1]
    data = bytearray(path.read_bytes())
    data[offset + count // kept : offset + count] = bytes([fill]) * (count - count // kept)
    path.write_bytes(bytes(data))
    error = one_input_error(srfeat_cli("upscale", "damaged.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path))
    assert error.startswith(
        "ERROR: cannot read image damaged.tif: the Deflate data of strip or tile 2 of 3 is damaged ("
    )
    assert error.endswith("); skip or replace this file")
    assert not (tmp_path / "out.png").exists()


def test_a_tiff_of_65535_samples_per_pixel_fails_in_one_error_line(tmp_path: Path, model_path: Path) -> None:
    """PIL's TIFF reader logged "More samples per pixel than can be decoded: 65535" at ERROR, which printed as a
    second error line above srfeat's own."""
    path = tmp_path / "samples.tif"
    Image.fromarray(CROP).save(path, compression="tiff_lzw")
    with tifffile.TiffFile(path) as tiff:
        samples, width = (tiff.pages.first.tags[name] for name in ("SamplesPerPixel", "ImageWidth"))
    data = bytearray(path.read_bytes())
    data[samples.valueoffset : samples.valueoffset + 2] = struct.pack("<H", 65535)
    data[width.offset + 4 : width.offset + 8] = struct.pack("<I", 2)  # two widths: tifffile refuses it, PIL reads on
    path.write_bytes(bytes(data))
    child = srfeat_cli("upscale", "samples.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child).startswith("ERROR: cannot read image samples.tif: ")
    assert [line for line in child.stderr.splitlines() if not line.startswith(("INFO", "ERROR: cannot read"))] == [
        "ERROR: 1 of 1 input(s) failed"
    ]


def png_with_damaged_data(mode: str, *, damage: str) -> bytes:
    """`png_bytes(mode)` with zeros over the middle of its pixel data (its CRC made right again), or its CRC alone
    changed."""
    whole = bytearray(png_bytes(mode))
    at = whole.index(b"IDAT")
    (length,) = struct.unpack(">I", whole[at - 4 : at])
    if damage == "zeros":  # its last quarter: zeros elsewhere can make a row's filter type PIL refuses
        whole[at + 4 + 3 * length // 4 : at + 4 + length] = bytes(length - 3 * length // 4)
    whole[at + 4 + length : at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(whole[at : at + 4 + length])))
    if damage == "crc":
        whole[at + 4 + length] ^= 0x01
    return bytes(whole)


@pytest.mark.parametrize(
    ("mode", "damage"),
    [("RGB", "zeros"), ("RGB", "crc"), ("I;16", "crc")],
    ids=["rgb8-zeros", "rgb8-crc", "grey16-crc"],
)
def test_a_png_whose_pixel_data_is_damaged_where_pil_does_not_look_is_refused(
    tmp_path: Path, model_path: Path, mode: str, damage: str
) -> None:
    """Zeros over the middle of the data decode as codes too: PIL stopped once the rows were filled, checking neither
    zlib's checksum nor the chunk's CRC, and gave the rows after them from the zeros, without a word."""
    (tmp_path / "damaged.png").write_bytes(png_with_damaged_data(mode, damage=damage))
    child = srfeat_cli("upscale", "damaged.png", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    error = one_input_error(child)
    if damage == "crc":
        assert error == (
            "ERROR: cannot read image damaged.png: the CRC of its pixel data chunk 1 (IDAT) does not match its data "
            "(damaged?); skip or replace this file"
        )
    else:
        assert error.startswith("ERROR: cannot read image damaged.png: its pixel data ")
        assert error.endswith("(damaged?); skip or replace this file")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("damage", ["crc", "zlib-checksum"])
def test_a_sixteen_bit_colour_png_whose_pixel_data_is_damaged_is_refused(
    tmp_path: Path, model_path: Path, damage: str
) -> None:
    """srfeat's own reader of 16-bit colour PNGs checked neither the chunk's CRC nor zlib's checksum either (which
    lies past the last pixel's data: an inflate that stops once the rows are filled does not reach it)."""
    write_png16(tmp_path / "damaged.png", CROP.astype(np.uint16) * 257)
    whole = bytearray((tmp_path / "damaged.png").read_bytes())
    at = whole.index(b"IDAT")
    (length,) = struct.unpack(">I", whole[at - 4 : at])
    if damage == "crc":
        whole[at + 4 + length] ^= 0x01
    else:  # the last byte of zlib's checksum, the chunk's CRC made right
        whole[at + 3 + length] ^= 0x01
        whole[at + 4 + length : at + 8 + length] = struct.pack(">I", zlib.crc32(bytes(whole[at : at + 4 + length])))
    (tmp_path / "damaged.png").write_bytes(bytes(whole))
    child = srfeat_cli("upscale", "damaged.png", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image damaged.png: the CRC of its pixel data chunk 1 (IDAT) does not match its data "
        "(damaged?); skip or replace this file"
        if damage == "crc"
        else "ERROR: cannot read image damaged.png: corrupt PNG image data (Error -3 while decompressing data: "
        "incorrect data check); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_deflate_tiff_whose_last_strip_goes_on_past_its_rows_without_ending_is_refused(
    tmp_path: Path, model_path: Path
) -> None:
    """The last strip (one row here) of data that decodes to more than its row and never ends (bytes after it
    written over): libtiff took its row from the first bytes, which the checks by a full strip's size let pass."""
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, CROP, compression="zlib", rowsperstrip=8)
    with tifffile.TiffFile(path) as tiff:
        offsets, counts = (tiff.pages.first.tags[name] for name in ("StripOffsets", "StripByteCounts"))
    deflate = zlib.compressobj()
    endless = deflate.compress(CROP[16:].tobytes() + bytes(range(200))) + deflate.flush(zlib.Z_SYNC_FLUSH)
    data = bytearray(path.read_bytes())
    data[offsets.valueoffset + 8 : offsets.valueoffset + 12] = struct.pack("<I", len(data))  # the third strip's
    data[counts.valueoffset + 8 : counts.valueoffset + 12] = struct.pack("<I", len(endless))
    path.write_bytes(bytes(data) + endless)
    error = one_input_error(srfeat_cli("upscale", "damaged.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path))
    assert error == (
        "ERROR: cannot read image damaged.tif: the Deflate data of strip or tile 3 of 3 is damaged (it makes more than "
        f"the {24 * 3:,} bytes its rows need, and does not end); skip or replace this file"
    )


@pytest.mark.parametrize("compression", ["jpeg", "tiff_adobe_deflate"])
def test_a_tiff_whose_rows_per_strip_is_zero_fails_in_one_line(
    tmp_path: Path, model_path: Path, compression: str
) -> None:
    """The JPEG TIFF strips' check divided the height by it (ZeroDivisionError, a traceback); the Deflate one must
    not call the file damaged for making more than the 0 bytes such a strip would hold."""
    path = tmp_path / "zero.tif"
    Image.fromarray(CROP).save(path, compression=compression)
    with tifffile.TiffFile(path) as tiff:
        offset = tiff.pages.first.tags["RowsPerStrip"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = bytes(4)
    path.write_bytes(bytes(data))
    error = one_input_error(srfeat_cli("upscale", "zero.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path))
    assert error.startswith("ERROR: cannot read image zero.tif: ") and "Deflate" not in error


@pytest.mark.parametrize(
    ("layout", "listed", "needed"),
    [
        ("planes", 3, "24x17 pixels in 3 planes (one a sample) need 9"),
        ("strips", 2, "24x17 pixels need 3"),
        ("tiles", 1, "24x17 pixels need 4"),
    ],
)
def test_a_tiff_whose_tags_list_fewer_strips_or_tiles_than_its_pixels_need_is_refused(
    tmp_path: Path, model_path: Path, layout: str, listed: int, needed: str
) -> None:
    """A 16-bit TIFF's PlanarConfiguration made 2 (planes apart: three times the strips its tags list): tifffile read
    the strips it did not find as zeros, and the planes from data of the pixels' samples side by side, a wrong
    picture passed on with three warnings. A strip or tile count cut short is the same damage."""
    path = tmp_path / "damaged.tif"
    if layout == "planes":
        tifffile.imwrite(path, CROP.astype(np.uint16) * 257, compression="lzma", rowsperstrip=8)
        tag, value, count = "PlanarConfiguration", 2, None
    elif layout == "strips":
        tifffile.imwrite(path, CROP, compression="zlib", rowsperstrip=8)
        tag, value, count = "StripOffsets", None, 2
    else:
        tifffile.imwrite(path, CROP.astype(np.uint16) * 257, tile=(16, 16))
        tag, value, count = "TileOffsets", None, 1
    with tifffile.TiffFile(path) as tiff:
        entry = tiff.pages.first.tags[tag]
    data = bytearray(path.read_bytes())
    if value is not None:
        data[entry.valueoffset : entry.valueoffset + 2] = struct.pack("<H", value)
    if count is not None:
        data[entry.offset + 4 : entry.offset + 8] = struct.pack("<I", count)
    path.write_bytes(bytes(data))
    error = one_input_error(srfeat_cli("upscale", "damaged.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path))
    assert error == (
        f"ERROR: cannot read image damaged.tif: its tags list {listed} strip(s) or tile(s), but its {needed} "
        "(damaged?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_an_lzma_tiff_whose_width_was_made_smaller_is_refused(tmp_path: Path, model_path: Path) -> None:
    """ImageWidth 24 -> 23 in a 16-bit LZMA TIFF: each strip makes the 8 rows of 24 pixels it was written with, and
    tifffile read them as rows of 23, each a pixel further askew, without a word. Deflate strips were refused for
    making more than a strip holds; LZMA's were counted only against what the whole image needs."""
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, CROP.astype(np.uint16) * 257, compression="lzma", rowsperstrip=8)
    with tifffile.TiffFile(path) as tiff:
        offset = tiff.pages.first.tags["ImageWidth"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = struct.pack("<H", 23)
    path.write_bytes(bytes(data))
    error = one_input_error(srfeat_cli("upscale", "damaged.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path))
    assert error == (
        "ERROR: cannot read image damaged.tif: the LZMA data of strip or tile 1 of 3 is damaged (it makes more than "
        f"the {8 * 23 * 3 * 2:,} bytes a strip or tile holds); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def gif_bytes(*, comment: bool = False) -> bytes:
    """A 24x17 GIF of CROP in 16 colours, with a comment extension before its frame if `comment`."""
    buffer = io.BytesIO()
    Image.fromarray(CROP).quantize(16).save(buffer, format="GIF", comment=b"x" * 300 if comment else None)
    return buffer.getvalue()


@pytest.mark.parametrize(("left", "top"), [(0, 65535), (24, 0)])
def test_a_gif_whose_first_frame_starts_outside_its_screen_is_refused(
    tmp_path: Path, model_path: Path, left: int, top: int
) -> None:
    """The frame's top made 65535 in a 24x17 GIF: PIL grew the picture to take the frame in, 24x65552 pixels of
    background with the frame at its foot, and the upscale ran for minutes, without a word."""
    data = bytearray(gif_bytes(comment=True))  # an extension to walk past before the frame
    at = data.index(b"\x2c\x00\x00\x00\x00\x18\x00\x11\x00")  # the image descriptor: at (0, 0), 24x17
    data[at + 1 : at + 5] = struct.pack("<HH", left, top)
    (tmp_path / "damaged.gif").write_bytes(bytes(data))
    with Image.open(tmp_path / "damaged.gif") as image:  # the damage is what the test says
        assert image.size == (24 + left, 17 + top)
    child = srfeat_cli("upscale", "damaged.gif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        f"ERROR: cannot read image damaged.gif: its first frame is placed at ({left}, {top}), outside its 24x17 "
        "screen (damaged?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_gif_of_an_empty_screen_or_a_frame_inside_it_is_still_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A screen of 0x0 (some writers make it: the first frame sets the size), a frame placed inside the screen and
    one covering a quarter of it (a sticker's first frame cropped to what it shows) are no damage, and nothing is
    said of them. (Passes on the old code too: it guards the checks above and below from sound files.)"""
    empty = bytearray(gif_bytes())
    empty[6:10] = bytes(4)
    inside = bytearray(gif_bytes())
    at = inside.index(b"\x2c\x00\x00\x00\x00\x18\x00\x11\x00")
    inside[at + 1 : at + 5] = struct.pack("<HH", 3, 2)  # PIL grows the picture to 27x19: as it did
    quarter = bytearray(gif_bytes())
    quarter[6:10] = struct.pack("<HH", 48, 34)
    for name, data, size in (
        ("empty.gif", empty, (24, 17)),
        ("inside.gif", inside, (27, 19)),
        ("quarter.gif", quarter, (48, 34)),
    ):
        (tmp_path / name).write_bytes(bytes(data))
        assert read_raw_image(tmp_path / name).array.shape[1::-1] == size
    assert not caplog.records


def test_a_gif_whose_first_frame_covers_little_of_its_screen_says_so(tmp_path: Path, model_path: Path) -> None:
    """The screen's width made 65535 from 40 (`fuzz_images --seed 23`, palette.gif:11): PIL reads the picture at the
    screen's size, the frame at its left and background to its right, and the upscale ran for minutes without a word.
    It still runs (such a file is legal), but says what it is reading."""
    data = bytearray(gif_bytes())
    data[6:8] = struct.pack("<H", 1000)
    (tmp_path / "wide.gif").write_bytes(bytes(data))
    child = srfeat_cli("upscale", "wide.gif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING")]
    said = (
        "WARNING: wide.gif: its first frame covers 24x17 of its 1000x17 screen, and the rest is read as background "
        "(a damaged screen size?)"
    )
    assert warnings == [said]
    with Image.open(tmp_path / "out.png") as output:
        assert output.size == (4000, 68)
