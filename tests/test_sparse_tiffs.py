"""Sparse TIFFs: strips or tiles of no data (a byte count of 0), which GDAL writes for empty areas and readers fill
with zeros. They are read so (the check of tags against data had refused them as damaged, and PIL, for grey and
8-bit, read the file's first bytes into them), while a file whose other strips cannot hold their pixels is still
refused, and one of nothing but empty strips is bounded by the pixel limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from cli_helpers import one_input_error, srfeat_cli
from PIL import Image, ImageCms

from srfeat.data.io import open_image, read_raw_image
from srfeat.errors import ImageReadError

OFFSETS_OF = {279: 273, 325: 324}  # StripByteCounts: StripOffsets; TileByteCounts: TileOffsets


def write_sparse(path: Path, array: np.ndarray, empty: list[int], **options: Any) -> np.ndarray:
    """`array` written to `path` as tifffile writes it (`options`: tile or rowsperstrip, compression...), then its
    strips or tiles numbered in `empty` made empty as GDAL makes them (offset and byte count 0); `array` with
    zeros where they lie, as HxWxC."""
    tifffile.imwrite(path, array, metadata=None, **options)
    with tifffile.TiffFile(path, mode="r+") as tiff:
        tags = tiff.pages.first.tags
        counts_tag = tags[325] if 325 in tags else tags[279]
        offsets_tag = tags[OFFSETS_OF[counts_tag.code]]
        counts, offsets = list(counts_tag.value), list(offsets_tag.value)
        for index in empty:
            counts[index] = offsets[index] = 0
        counts_tag.overwrite(counts)
        offsets_tag.overwrite(offsets)
    expected = array.reshape(*array.shape[:2], -1).copy()
    rows, columns = options.get("tile", (options.get("rowsperstrip", array.shape[0]), array.shape[1]))
    across = -(-array.shape[1] // columns)
    for index in empty:
        top, left = index // across * rows, index % across * columns
        expected[top : top + rows, left : left + columns] = 0
    return expected


def ramp(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Pixels of no zero, each of its own value (as the type allows): what an empty strip read wrong would change."""
    return (np.arange(int(np.prod(shape))).reshape(shape) % (np.iinfo(dtype).max - 1) + 1).astype(dtype)


@pytest.mark.parametrize(
    ("shape", "dtype", "photometric", "options"),
    [
        ((64, 64, 3), np.uint16, "rgb", {"tile": (32, 32)}),  # tifffile reads it (16-bit colour)
        ((70, 64, 3), np.uint16, "rgb", {"rowsperstrip": 16}),  # a last strip of 6 rows
        ((64, 64), np.uint8, "minisblack", {"tile": (32, 32)}),  # PIL read these
        ((70, 64), np.uint8, "minisblack", {"rowsperstrip": 16}),
        ((64, 64), np.uint8, "minisblack", {"tile": (32, 32), "compression": "zlib"}),  # PIL: "decoder error -2"
        ((64, 64, 4), np.uint8, "rgb", {"tile": (32, 32), "extrasamples": ("unassalpha",)}),
        ((64, 64), np.uint16, "minisblack", {"rowsperstrip": 16, "compression": "lzma"}),
    ],
    ids=[
        "rgb16-tiles",
        "rgb16-strips",
        "grey8-tiles",
        "grey8-strips",
        "grey8-deflate-tiles",
        "rgba8-tiles",
        "grey16-lzma",
    ],
)
@pytest.mark.parametrize("empty", [[1], [0, 2]], ids=["second-empty", "first-and-third-empty"])
def test_a_sparse_tiff_reads_its_empty_strips_and_tiles_as_zeros(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    shape: tuple[int, ...],
    dtype: type,
    photometric: str,
    options: dict,
    empty: list[int],
) -> None:
    expected = write_sparse(tmp_path / "sparse.tif", ramp(shape, dtype), empty, photometric=photometric, **options)
    raw = read_raw_image(tmp_path / "sparse.tif")
    assert not caplog.records  # some strips hold data: a sparse file as GDAL writes it, nothing to say
    assert raw.array.dtype == dtype
    assert np.array_equal(raw.array, expected)
    # `open_image` (the API's PIL image) too: PIL had read the file's first bytes into them, or failed
    opened = np.asarray(open_image(tmp_path / "sparse.tif")).reshape(expected.shape)
    if dtype == np.uint16 and expected.shape[2] > 1:  # PIL holds 16-bit colour only with 8 bits
        expected = np.rint(expected / 257).astype(np.uint8)
    assert opened.dtype == expected.dtype
    assert np.array_equal(opened, expected)


def test_a_sparse_tiff_whose_other_strips_cannot_hold_their_pixels_is_still_refused(tmp_path: Path) -> None:
    """Its empty strip is zeros; the other three's 3,072 bytes of data are short of their 4,096 pixels."""
    write_sparse(tmp_path / "sparse.tif", ramp((64, 64), np.uint8), [1], photometric="minisblack", rowsperstrip=16)
    with tifffile.TiffFile(tmp_path / "sparse.tif", mode="r+") as tiff:
        tiff.pages.first.tags[257].overwrite(112)  # ImageLength: 112 rows, 7 strips' worth in 4 strip tags
        tiff.pages.first.tags[278].overwrite(28)  # RowsPerStrip: each strip holds 28 rows, where it has 16
    with pytest.raises(ImageReadError) as refused:
        read_raw_image(tmp_path / "sparse.tif")
    assert str(refused.value) == (
        f"cannot read image {tmp_path / 'sparse.tif'}: its header gives 64x112 pixels (5,376 bytes outside 1 empty "
        "strip(s) or tile(s)), more than the 3,072 bytes of pixel data it holds can make (damaged or cut short?); "
        "skip or replace this file"
    )


@pytest.mark.parametrize(("dtype", "photometric"), [(np.uint8, "minisblack"), (np.uint16, "rgb")])
def test_a_tiff_of_nothing_but_empty_strips_past_the_pixel_limit_is_refused_by_the_command(
    tmp_path: Path, model_path: Path, dtype: type, photometric: str
) -> None:
    """No data to check it against: the pixel limit (PIL's decompression-bomb rule) is what bounds it."""
    shape = (8, 8) if photometric == "minisblack" else (8, 8, 3)
    write_sparse(tmp_path / "empty.tif", ramp(shape, dtype), [0, 1], photometric=photometric, rowsperstrip=4)
    with tifffile.TiffFile(tmp_path / "empty.tif", mode="r+") as tiff:
        for code, value in ((256, 20000), (257, 20000), (278, 10000)):  # two empty strips of 20000x10000 pixels
            tiff.pages.first.tags[code].overwrite(value)
    child = srfeat_cli("upscale", "empty.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None and 20000 * 20000 > 2 * limit
    assert one_input_error(child) == (
        f"ERROR: cannot read image empty.tif: 20000x20000 pixels is more than {2 * limit:,} "
        "(a decompression bomb?); skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("options", "chunks"),
    [({"rowsperstrip": 8}, 4), ({"tile": (16, 16)}, 4), ({"rowsperstrip": 32}, 1)],
    ids=["strips", "tiles", "one-strip"],
)
@pytest.mark.parametrize(("dtype", "photometric"), [(np.uint8, "minisblack"), (np.uint16, "rgb")])
def test_a_tiff_of_nothing_but_empty_strips_or_tiles_reads_as_zeros_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dtype: type, photometric: str, options: dict, chunks: int
) -> None:
    """tifffile takes one empty strip at offset 0 for all of the data, and reads the file's first bytes as
    pixels. Legal, but what zeroed strip tables (damage) also look like: said."""
    shape = (32, 32) if photometric == "minisblack" else (32, 32, 3)
    write_sparse(tmp_path / "empty.tif", ramp(shape, dtype), [*range(chunks)], photometric=photometric, **options)
    raw = read_raw_image(tmp_path / "empty.tif")
    assert raw.array.dtype == dtype and raw.array.shape[:2] == (32, 32)
    assert not raw.array.any()
    said = (
        f"{tmp_path / 'empty.tif'} holds no pixel data: all {chunks} of its strips or tiles are empty (a sparse file "
        "left blank, or its strip tables damaged?); it is read as all zeros"
    )
    assert [record.getMessage() for record in caplog.records] == [said]


def test_a_sparse_tiff_tifffile_cannot_read_is_refused_in_one_line(tmp_path: Path) -> None:
    """PIL read neither right: LZW ("decoder error -2") without imagecodecs, which tifffile decodes it with; a
    palette (uncompressed), the file's first bytes in its empty strip."""
    Image.fromarray(ramp((64, 64), np.uint8)).save(tmp_path / "lzw.tif", compression="tiff_lzw", strip_size=1024)
    with tifffile.TiffFile(tmp_path / "lzw.tif", mode="r+") as tiff:
        counts, offsets = list(tiff.pages.first.tags[279].value), list(tiff.pages.first.tags[273].value)
        counts[1] = offsets[1] = 0
        tiff.pages.first.tags[279].overwrite(counts)
        tiff.pages.first.tags[273].overwrite(offsets)
    colours = np.repeat(np.arange(256, dtype=np.uint16)[None] * 257, 3, axis=0)
    write_sparse(
        tmp_path / "palette.tif",
        ramp((64, 64), np.uint8),
        [1],
        photometric="palette",
        colormap=colours,
        rowsperstrip=16,
    )
    for name, said in (
        ("lzw.tif", "compressed with LZW; pip install imagecodecs to read it"),
        (
            "palette.tif",
            (
                "of a layout srfeat reads sparse only as grey or RGB(A) of 8 or 16 bits; save it again without empty "
                "areas (GDAL: -co SPARSE_OK=FALSE)"
            ),
        ),
    ):
        for read in (read_raw_image, open_image):  # open_image gave PIL's wrong pixels, or its "decoder error -2"
            with pytest.raises(ImageReadError) as refused:
                read(tmp_path / name)
            assert str(refused.value) == (
                f"cannot read image {tmp_path / name}: a sparse TIFF (1 strip(s) or tile(s) of no data) {said}"
            ), (name, read)


def empty_strip(path: Path, index: int) -> None:
    """The TIFF at `path` with its strip numbered `index` made empty, as GDAL makes one (offset and byte count 0)."""
    with tifffile.TiffFile(path, mode="r+") as tiff:
        counts, offsets = list(tiff.pages.first.tags[279].value), list(tiff.pages.first.tags[273].value)
        counts[index] = offsets[index] = 0
        tiff.pages.first.tags[279].overwrite(counts)
        tiff.pages.first.tags[273].overwrite(offsets)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "not-sparse"])
def test_a_tiffs_exif_and_colour_profile_are_carried_into_the_upscale(
    tmp_path: Path, model_path: Path, sparse: bool
) -> None:
    """PIL gives a TIFF's EXIF as its tags only, and tifffile (which reads a sparse one) none: the camera, the date
    taken and the place were not written into the result, either way; its colour profile was, and still is. Its
    orientation is applied, and left out."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "camera maker", "camera model", 6  # 6: turned a quarter clockwise
    exif[0x010E] = '{"shape": [16, 12, 3]}'  # ImageDescription, as tifffile writes it: the input's, not the result's
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"  # date taken (the Exif directory)
    exif.get_ifd(0x8825)[0x0001] = "N"  # GPS latitude reference
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.fromarray(ramp((16, 12, 3), np.uint8))
    photo.save(tmp_path / "photo.tif", exif=exif.tobytes(), icc_profile=profile, strip_size=12 * 3 * 4)
    if sparse:
        empty_strip(tmp_path / "photo.tif", 0)
    with tifffile.TiffFile(tmp_path / "photo.tif") as tiff:
        assert (0 in tiff.pages.first.databytecounts) == sparse
    child = srfeat_cli("upscale", "photo.tif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    with Image.open(tmp_path / "out.png") as result:
        written = result.getexif()
        assert result.size == (64, 48)  # upright: 16 rows of 12 became 12 rows of 16, times 4
        assert result.info.get("icc_profile") == profile
    assert (written[0x010F], written[0x0110]) == ("camera maker", "camera model")
    assert 0x0112 not in written and 0x010E not in written
    assert written.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"
    assert written.get_ifd(0x8825)[0x0001] == "N"
    with open_image(tmp_path / "photo.tif") as opened:  # the API's PIL image holds them as a JPEG's does
        assert opened.size == (16, 12) and opened.info.get("icc_profile") == profile
        assert opened.getexif()[0x010F] == "camera maker" and 0x0112 not in opened.getexif()
