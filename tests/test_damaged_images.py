"""Damaged image files said in plain words: a WebP cut short or damaged (PIL's "could not create decoder
object"), an AVIF cut short (libavif's "Truncated data"), and a TIFF whose tags claim more pixels than its data can
hold, refused before its reader reserves memory for them ("failed to read 864000000 bytes, got 384", once 864 MB had
been set aside)."""

from __future__ import annotations

import lzma
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import tifffile
from cli_helpers import one_input_error, python_code, srfeat_cli
from PIL import Image, features
from skimage import data as samples

from srfeat.data.io import read_raw_image
from srfeat.data.tiff16 import write_tiff16
from srfeat.errors import ImageReadError
from srfeat.web.worker import page_error


def write_webp(path: Path, **options: Any) -> bytes:  # PIL's save keywords, of many types
    Image.fromarray(samples.astronaut()[:64, :64]).save(path, **options)
    return path.read_bytes()


@pytest.mark.parametrize("options", [{"quality": 80}, {"lossless": True}], ids=["lossy", "lossless"])
@pytest.mark.parametrize("keep", [12, 0.5], ids=["its-first-12-bytes", "half"])
def test_a_webp_cut_short_is_said_so_by_the_command(
    tmp_path: Path, model_path: Path, options: dict, keep: float
) -> None:
    """Of its first 12 bytes, which PIL cannot even identify, it said "it starts as a WEBP file but cannot be
    decoded (damaged, cut short, or a WEBP variant ...)"; of half, PIL's "could not create decoder object"."""
    whole = write_webp(tmp_path / "whole.webp", **options)
    kept = int(keep if keep >= 1 else len(whole) * keep)
    (tmp_path / "cut.webp").write_bytes(whole[:kept])
    child = srfeat_cli("upscale", "cut.webp", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        f"ERROR: cannot read image cut.webp: the WebP file is cut short ({kept:,} of the {len(whole):,} "
        "bytes its header gives); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
@pytest.mark.parametrize("keep", [-1, 0.5, 100], ids=["all-but-its-last-byte", "half", "its-first-100-bytes"])
def test_an_avif_cut_short_is_said_so_by_the_command(tmp_path: Path, model_path: Path, keep: float) -> None:
    """As a WebP's is: of all but its last bytes, it said libavif's "Failed to decode frame 0: Truncated data"; of
    half, or of its first 100 bytes (its meta box cut), "it starts as an AVIF file but cannot be decoded (damaged,
    cut short, or an AVIF variant ...)"."""
    Image.fromarray(samples.astronaut()[:64, :64]).save(tmp_path / "whole.avif", quality=80)
    whole = (tmp_path / "whole.avif").read_bytes()
    kept = len(whole) + int(keep) if keep < 0 else int(keep if keep >= 1 else len(whole) * keep)
    (tmp_path / "cut.avif").write_bytes(whole[:kept])
    child = srfeat_cli("upscale", "cut.avif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    box_ends = [0]  # where each top-level box (ftyp, meta, mdat) ends, by the size its header gives
    while box_ends[-1] < len(whole):
        box_ends.append(box_ends[-1] + struct.unpack(">I", whole[box_ends[-1] : box_ends[-1] + 4])[0])
    stated = next(end for end in box_ends if end > kept)  # the end of the box the file now ends inside
    assert one_input_error(child) == (
        f"ERROR: cannot read image cut.avif: the AVIF file is cut short ({kept:,} of the {stated:,} "
        "bytes its boxes give); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_damaged_webp_of_its_whole_length_is_said_to_be_damaged(tmp_path: Path) -> None:
    """Its advice was "skip or replace this file", as for one cut short: another copy of it is as damaged."""
    damaged = bytearray(write_webp(tmp_path / "whole.webp", quality=80))
    damaged[20:60] = bytes(40)  # the VP8 frame's header, after the RIFF and chunk headers
    (tmp_path / "damaged.webp").write_bytes(bytes(damaged))
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "damaged.webp")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'damaged.webp'}: the WebP file is damaged (its decoder cannot read it); "
        "skip this file, or save it again from the program that made it"
    )


def claiming(source: Path, target: Path, width: int, height: int) -> None:
    """`source`, a TIFF of one strip, written to `target` with its tags giving `width`x`height` pixels in it."""
    with tifffile.TiffFile(source) as tiff:
        tags = tiff.pages.first.tags
        places = [(tags[code].valueoffset, tags[code].dtype) for code in (256, 257, 278)]  # width, length, rows
    claimed = bytearray(source.read_bytes())
    for (offset, kind), value in zip(places, (width, height, height), strict=True):
        struct.pack_into("<I" if kind == tifffile.DATATYPE.LONG else "<H", claimed, offset, value)
    target.write_bytes(bytes(claimed))


def test_a_sixteen_bit_tiff_claiming_more_pixels_than_it_holds_is_refused_by_the_command(
    tmp_path: Path, model_path: Path
) -> None:
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((8, 8, 3), np.uint16), photometric="rgb", metadata=None)
    claiming(tmp_path / "small.tif", tmp_path / "huge.tif", 12000, 12000)
    child = srfeat_cli("upscale", "huge.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image huge.tif: its header gives 12000x12000 pixels (864,000,000 bytes), more than the "
        "384 bytes of pixel data it holds can make (damaged or cut short?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_sixteen_bit_tiff_cut_short_is_refused_before_its_pixels_are_read(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((8, 8, 3), np.uint16), photometric="rgb", metadata=None)
    whole = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) - 100])
    with pytest.raises(ImageReadError, match=rf"its pixel data runs to byte {len(whole)}, but the file has "):
        read_raw_image(tmp_path / "cut.tif")


def test_a_flat_sixteen_bit_tiff_deflated_as_far_as_it_goes_is_still_read(tmp_path: Path) -> None:
    """The check allows Deflate's most (1032:1): a flat image, which srfeat writes so, is no damaged file."""
    flat = np.full((600, 600, 3), 1234, np.uint16)
    write_tiff16(tmp_path / "flat.tif", flat)
    assert flat.nbytes > 500 * (tmp_path / "flat.tif").stat().st_size  # compressed near Deflate's limit
    assert np.array_equal(read_raw_image(tmp_path / "flat.tif").array, flat)


def write_small_tiff(path: Path, layout: str, compression: str | None = None) -> int:
    """An 8x8 TIFF of one strip at `path`, of `layout` ("grey16", "rgb16", "grey8", "rgb8"), written as PIL writes it
    (`compression` a name of PIL's) or, for 16 bits, as tifffile does (LZMA, which tifffile writes without
    imagecodecs); the bytes of pixel data it holds."""
    if layout in ("grey16", "rgb16"):  # PIL reads grey, tifffile colour (`srfeat.data.tiff16`)
        shape, photometric = ((8, 8), "minisblack") if layout == "grey16" else ((8, 8, 3), "rgb")
        tifffile.imwrite(
            path, np.zeros(shape, np.uint16), photometric=photometric, compression=compression, metadata=None
        )
    else:
        Image.new("L" if layout == "grey8" else "RGB", (8, 8), 7).save(path, compression=compression)
    with tifffile.TiffFile(path) as tiff:
        assert (tiff.pages.first.compression == tifffile.COMPRESSION.NONE) == (compression is None)  # PIL's names
        return sum(tiff.pages.first.databytecounts)


def test_a_grey_sixteen_bit_tiff_claiming_more_pixels_than_it_holds_is_refused_by_the_command(
    tmp_path: Path, model_path: Path
) -> None:
    """PIL reads grey 16-bit TIFFs, not tifffile: the check on the tags had left them out, and PIL set aside
    288 MB for a file of a few hundred bytes, then called it truncated."""
    stored = write_small_tiff(tmp_path / "small.tif", "grey16")
    claiming(tmp_path / "small.tif", tmp_path / "huge.tif", 12000, 12000)
    child = srfeat_cli("upscale", "huge.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image huge.tif: its header gives 12000x12000 pixels (288,000,000 bytes), more than the "
        f"{stored} bytes of pixel data it holds can make (damaged or cut short?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("layout", "compression", "needed"),
    [
        ("grey8", None, 144_000_000),
        ("rgb8", None, 432_000_000),
        ("grey8", "tiff_lzw", 144_000_000),
        ("rgb8", "zstd", 432_000_000),  # Zstandard's most: 128 KiB from a 4-byte block
    ],
)
def test_an_eight_bit_tiff_claiming_more_pixels_than_it_holds_is_refused_before_pil_reads_it(
    tmp_path: Path, layout: str, compression: str | None, needed: int
) -> None:
    stored = write_small_tiff(tmp_path / "small.tif", layout, compression)
    claiming(tmp_path / "small.tif", tmp_path / "huge.tif", 12000, 12000)
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "huge.tif")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'huge.tif'}: its header gives 12000x12000 pixels ({needed:,} bytes), more "
        f"than the {stored} bytes of pixel data it holds can make (damaged or cut short?); skip or replace this file"
    )


@pytest.mark.parametrize(("layout", "pixel_bytes"), [("grey16", 2 * 8 * 8), ("rgb16", 6 * 8 * 8), ("rgb8", 3 * 8 * 8)])
def test_an_lzma_tiff_claiming_more_pixels_than_its_data_makes_is_refused_by_what_it_decompresses_to(
    tmp_path: Path, layout: str, pixel_bytes: int
) -> None:
    """LZMA has no most bytes per byte: its data is decompressed, a MiB at a time and dropped, and counted
    (before, PIL and tifffile set aside what the tags gave, 288, 864 and 432 MB, and failed after)."""
    write_small_tiff(tmp_path / "small.tif", layout, "lzma")
    claiming(tmp_path / "small.tif", tmp_path / "huge.tif", 12000, 12000)
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "huge.tif")
    needed = 12000 * 12000 * pixel_bytes // 64
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'huge.tif'}: its header gives 12000x12000 pixels ({needed:,} bytes), more "
        f"than the {pixel_bytes} bytes its LZMA data decompresses to (damaged or cut short?); skip or replace this file"
    )


class CountingLzmaDecompressor:
    """`lzma.LZMADecompressor`, adding up the bytes it makes in `made` (one list for all of them)."""

    made: ClassVar[list[int]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.decompressor = REAL_LZMA_DECOMPRESSOR(*args, **kwargs)

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self.decompressor.decompress(data, max_length)
        self.made.append(len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decompressor, name)


REAL_LZMA_DECOMPRESSOR = lzma.LZMADecompressor


def test_a_sound_lzma_tiff_is_checked_from_its_xz_index_not_decompressed_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check counted what an LZMA TIFF's data makes by decompressing all of it, which took twice as long as the
    reader's own decode (1.2 s of 2.0 for a 4000x3000 photo); a sound xz stream's index says it without that."""
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    tifffile.imwrite(tmp_path / "noise.tif", pixels, photometric="rgb", compression="lzma", rowsperstrip=64)
    monkeypatch.setattr(lzma, "LZMADecompressor", CountingLzmaDecompressor)
    CountingLzmaDecompressor.made = []
    assert np.array_equal(read_raw_image(tmp_path / "noise.tif").array, pixels)  # PIL's libtiff decodes it
    assert sum(CountingLzmaDecompressor.made) < pixels.nbytes // 100


def test_an_lzma_tiff_of_a_damaged_xz_index_claiming_more_pixels_is_refused_by_what_it_decompresses_to(
    tmp_path: Path,
) -> None:
    """An index whose CRC does not hold is not taken at its word: the data is counted as it decompresses. (Passes on
    the old code too, which always counted: it guards the index's reading from taking in a damaged one.)"""
    write_small_tiff(tmp_path / "small.tif", "rgb16", "lzma")
    claiming(tmp_path / "small.tif", tmp_path / "huge.tif", 12000, 12000)
    with tifffile.TiffFile(tmp_path / "huge.tif") as tiff:
        (offset,), (count,) = tiff.pages.first.dataoffsets, tiff.pages.first.databytecounts
    data = bytearray((tmp_path / "huge.tif").read_bytes())
    data[offset + count - 13] ^= 0xFF  # the index's CRC's last byte: the footer's 12 bytes follow
    (tmp_path / "huge.tif").write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "huge.tif")
    said = str(refused.value)  # what it made before its decoder found the CRC wrong: none, of so small a strip
    assert "its header gives 12000x12000 pixels" in said
    assert "bytes its LZMA data decompresses to (damaged or cut short?)" in said


def with_lzma_dictionary(path: Path, dictionary_bits: int) -> None:
    """The LZMA TIFF of one strip at `path` with its xz block header declaring a dictionary of code `dictionary_bits`
    (2 << (bits // 2 + 11) bytes, times 1.5 if odd), its CRC made again: the data, written with 8 MiB, still decodes
    with it; a decoder sets the declared size aside (xz --lzma2=dict=512MiB writes such a header)."""
    with tifffile.TiffFile(path) as tiff:
        (offset,) = tiff.pages.first.dataoffsets
    data = bytearray(path.read_bytes())
    block = offset + 12  # the xz stream header's 12 bytes, then the block header
    size = (data[block] + 1) * 4
    assert data[block + 1 : block + 4] == b"\x00\x21\x01"  # one filter, no sizes: LZMA2 and its one byte
    data[block + 4] = dictionary_bits
    struct.pack_into("<I", data, block + size - 4, zlib.crc32(data[block : block + size - 4]))
    path.write_bytes(bytes(data))


def test_an_lzma_tiff_whose_dictionary_is_past_the_memory_limit_is_said_so_not_damaged(
    tmp_path: Path, model_path: Path
) -> None:
    """Its decoder would set aside 512 MiB: past what srfeat allows (256 MiB), which had called it damaged and told
    to skip it. The page's message (`srfeat.web.worker`) is the command's, its advice for a damaged file not taken."""
    tifffile.imwrite(tmp_path / "big.tif", np.ones((8, 8, 3), np.uint16), photometric="rgb", compression="lzma")
    with_lzma_dictionary(tmp_path / "big.tif", 34)  # 2 << 28: 512 MiB
    problem = (
        "cannot read image big.tif: its LZMA data needs more memory to decompress than the 256 MiB srfeat allows "
        "(its LZMA dictionary is larger); save it again with another compression (Deflate or LZW), or with LZMA of "
        "a smaller dictionary"
    )
    child = srfeat_cli("upscale", "big.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == f"ERROR: {problem}"
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "big.tif")
    assert page_error(refused.value, lambda said: said.replace(str(tmp_path / "big.tif"), "big.tif")).args == (problem,)
    with_lzma_dictionary(tmp_path / "big.tif", 30)  # 2 << 26: 128 MiB, within the limit (`xz -9` takes 64 MiB)
    assert np.array_equal(read_raw_image(tmp_path / "big.tif").array, np.ones((8, 8, 3), np.uint16))


def test_flat_tiffs_compressed_past_deflates_most_are_still_read(tmp_path: Path) -> None:
    """LZMA, counted as it decompresses, and Zstandard, whose bound is 32768:1, of a flat image: no damaged file
    (a bound of Deflate's 1032:1 would have refused both)."""
    flat16 = np.full((1500, 1500, 3), 1234, np.uint16)
    tifffile.imwrite(tmp_path / "flat16.tif", flat16, photometric="rgb", compression="lzma", rowsperstrip=750)
    Image.new("L", (2000, 2000), 7).save(tmp_path / "flat8.tif", compression="zstd")
    for name, pixels in (("flat16.tif", flat16), ("flat8.tif", np.full((2000, 2000, 1), 7, np.uint8))):
        assert pixels.nbytes > 1032 * (tmp_path / name).stat().st_size, name
        assert np.array_equal(read_raw_image(tmp_path / name).array, pixels), name


# `srfeat upscale` in a child whose Path.stat gives the size of files named proc.png as 0, as the kernel gives a
# /proc or /sys file's whatever it holds (no test touches those files themselves)
_SIZE_GIVEN_AS_ZERO = """
import os, pathlib, sys
real_stat = pathlib.Path.stat
def stat(self, *args, **kwargs):
    result = real_stat(self, *args, **kwargs)
    return os.stat_result((*result[:6], 0, *result[7:10])) if self.name == "proc.png" else result
pathlib.Path.stat = stat
from srfeat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_file_whose_size_is_given_as_zero_but_holds_data_is_not_called_empty(
    tmp_path: Path, model_path: Path
) -> None:
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "proc.png")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, said in (
        (
            "proc.png",
            (
                "its size is given as 0 bytes, yet it holds data (a file of /proc or /sys?); copy it to a "
                "regular file first (cp), and give that"
            ),
        ),
        ("empty.png", "the file is empty (0 bytes); skip or replace this file"),
    ):
        child = python_code(_SIZE_GIVEN_AS_ZERO, "upscale", name, "-o", "out.png", "--model", model_path, cwd=tmp_path)
        assert one_input_error(child) == f"ERROR: cannot read image {name}: {said}"
        assert not (tmp_path / "out.png").exists()


def write_subsampled_ycbcr(path: Path, width: int, height: int, blocks: bytes) -> int:
    """A Deflate TIFF of YCbCr with 2x2 chroma subsampling (`blocks`: Y00 Y01 Y10 Y11 Cb Cr of each 2x2 block of
    pixels, as many as it has), its tags written by hand: neither PIL nor tifffile writes subsampled YCbCr but as
    JPEG. The bytes of pixel data it holds."""
    data = zlib.compress(blocks, 9)
    tags = [  # (code, type: 3 SHORT or 4 LONG, count, value, or where it is): in the order TIFF wants them
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 8 + 2 + 12 * 11 + 4),  # BitsPerSample 8, 8, 8: right after the tags
        (259, 3, 1, 8),  # Deflate
        (262, 3, 1, 6),  # YCbCr
        (273, 4, 1, 8 + 2 + 12 * 11 + 4 + 6),  # its one strip, after BitsPerSample
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
        (530, 3, 2, 2 | 2 << 16),  # YCbCrSubSampling 2, 2
    ]
    header = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    entries = b"".join(struct.pack("<HHII", code, kind, count, value) for code, kind, count, value in tags)
    path.write_bytes(header + entries + struct.pack("<I3H", 0, 8, 8, 8) + data)
    return len(data)


def test_a_tiff_of_subsampled_ycbcr_is_checked_by_the_samples_it_holds(tmp_path: Path) -> None:
    """Its 2x2 blocks hold 6 samples for 4 pixels (1.5 bytes a pixel, not 3): a flat one, Deflate near its most, is
    read (as 3 bytes a pixel it was past what its data can make), and one whose tags claim more is refused."""
    flat = bytes([100, 110, 120, 130, 90, 160]) * (1000 * 1000)
    stored = write_subsampled_ycbcr(tmp_path / "flat.tif", 2000, 2000, flat)
    assert 1032 * stored < 2000 * 2000 * 3  # all 3 samples of each pixel would be more than its data can make
    pixels = read_raw_image(tmp_path / "flat.tif").array
    assert pixels.shape == (2000, 2000, 3)
    red, green, blue = (int(value) for value in pixels[0, 0])
    assert red > green > blue  # Cr 160 over Cb 90: warm, and by its own Y (100 top left, 130 bottom right)
    assert (pixels[1::2, 1::2] > pixels[::2, ::2]).all()
    stored = write_subsampled_ycbcr(tmp_path / "huge.tif", 12000, 12000, flat[:6000])
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "huge.tif")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'huge.tif'}: its header gives 12000x12000 pixels (216,000,000 bytes), more "
        f"than the {stored} bytes of pixel data it holds can make (damaged or cut short?); skip or replace this file"
    )


def test_a_tiff_whose_exif_directory_lies_past_its_end_is_read_with_the_rest_of_its_exif(tmp_path: Path) -> None:
    """The EXIF of a TIFF (its camera, its Exif directory) is kept for the result: a directory that is not there is
    left out (PIL and tifffile each say so once), not the picture, nor the rest."""
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    pixels = samples.astronaut()[:8, :8]
    Image.fromarray(pixels).save(tmp_path / "photo.tif", exif=exif.tobytes())
    with tifffile.TiffFile(tmp_path / "photo.tif", mode="r+") as tiff:
        tiff.pages.first.tags[0x8769].overwrite(999_999)  # the Exif directory's offset, past the file's end
    raw = read_raw_image(tmp_path / "photo.tif")
    assert np.array_equal(raw.array, pixels)
    assert raw.exif is not None
    kept = Image.Exif()
    kept.load(raw.exif)
    assert dict(kept) == {0x010F: "camera maker"}
