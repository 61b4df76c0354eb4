"""Reading hostile and unusual image files: bounded memory, one line per problem, no silent wrong pixels.

Each test reproduces a finding of the image-reading audit (16-bit PNG bombs and damaged chunks,
float TIFFs, modes that formats cannot hold, multi-line library warnings) with files it makes
itself; the command line is run as a subprocess, as a user meets it.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import CHILD_ENV, REPO, srfeat_cli
from PIL import Image, ImageCms

from srfeat.data.io import FORMATS, open_image, pil_to_array, read_image, read_raw_image, write_image
from srfeat.data.png16 import PNG_SIGNATURE, read_png16, write_png16
from srfeat.errors import ImageReadError, InvalidImageError, SRFeatError
from srfeat.inference import Upscaler
from srfeat.inference.image_files import upscale_file

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def upscaler(model_path: Path) -> Upscaler:
    return Upscaler(model_path, device="cpu", tile=0)


def stderr_lines(child: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in child.stderr, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    # every line is one of srfeat's log lines: no warning printed by Python with its source line
    assert all(line.startswith(("INFO:", "WARNING:", "ERROR:")) for line in lines), child.stderr
    return lines


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """`png` with `chunks` inserted before its first IDAT."""
    idat = png.index(b"IDAT") - 4
    return png[:idat] + b"".join(chunks) + png[idat:]


def png16_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "made16.png"
    write_png16(path, array)
    return path.read_bytes()


def png_file(width: int, height: int, color_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zeros_deflated(size: int, unit: int = 1 << 22) -> bytes:
    """A zlib stream of `size` zero bytes, made in a second for any size: one fully flushed
    deflate segment of `unit` zeros repeated (each is independent of the ones before), then the
    rest, an empty final block and the Adler-32 of the whole."""
    compressor = zlib.compressobj(9)
    zeros = bytes(unit)
    whole, rest = divmod(size, unit)
    parts = []
    if whole:
        parts.append(compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH))  # the zlib header too
    if whole > 1:
        segment = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
        parts += [segment] * (whole - 1)
    parts.append(compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FULL_FLUSH))
    checksum = 1
    for _ in range(whole):
        checksum = zlib.adler32(zeros, checksum)
    checksum = zlib.adler32(bytes(rest), checksum)
    return b"".join(parts) + b"\x03\x00" + struct.pack(">I", checksum)


def peak_bytes_of(function, *args):
    """(result or exception, peak bytes Python and numpy allocated while `function` ran)."""
    tracemalloc.start()
    try:
        try:
            outcome = function(*args)
        except Exception as error:  # noqa: BLE001 - the caller checks which
            outcome = error
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- 16-bit PNG: bombs


@pytest.mark.parametrize("size", [17, 1000, 1017, 3017])
def test_zero_stream_helper_is_valid(size: int) -> None:
    assert zlib.decompress(zeros_deflated(size, unit=1000)) == bytes(size)


def address_space_after_import() -> int:
    """The bytes of address space a Python that imported torch and srfeat's upscale holds (VmSize)."""
    code = (
        "import torch, srfeat.commands.upscale\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmSize')))"
    )
    command = [sys.executable, "-c", code]
    child = subprocess.run(command, capture_output=True, text=True, check=True, env=CHILD_ENV, timeout=300)
    return int(child.stdout) * 1024


def test_a_16_bit_png_bomb_is_refused_in_one_line_before_its_data_is_inflated(tmp_path: Path, model_path: Path) -> None:
    # 15000x15000 RGB 16-bit, all zero: 1.3 MB on disk, 1.35 GB inflated, 225 M pixels > PIL's 179 M
    width = height = 15000
    bomb = tmp_path / "bomb16.png"
    bomb.write_bytes(png_file(width, height, 2, zeros_deflated(height * (1 + width * 6))))
    assert bomb.stat().st_size < 2_000_000
    # 2.4 GiB of address space past what torch takes to load (0.6 GiB for the CPU build, 3.1 GiB for PyPI's
    # CUDA one, whose libraries did not fit a flat 3 GiB): the old reader needed 3.5 GiB more and died with a
    # traceback
    limit = address_space_after_import() + int(2.4 * 2**30)
    child = srfeat_cli("upscale", bomb, "-o", tmp_path / "out.png", "--model", model_path, memory_limit=limit)
    errors = [line for line in stderr_lines(child) if line.startswith("ERROR:")]
    assert child.returncode == 1
    assert "bomb16.png" in errors[0] and "decompression bomb" in errors[0], child.stderr
    assert not (tmp_path / "out.png").exists()


def test_the_16_bit_reader_checks_the_pixel_count_against_pils_limit_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    width, height = 2000, 1000  # 16 MB of pixels (RGBA 16-bit); the limit is lowered below it
    path = tmp_path / "big16.png"
    path.write_bytes(png_file(width, height, 6, zeros_deflated(height * (1 + width * 8))))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    outcome, peak = peak_bytes_of(read_raw_image, path)
    assert isinstance(outcome, ImageReadError) and "decompression bomb" in str(outcome), outcome
    assert peak < 1_000_000, f"{peak:,} bytes allocated before refusing"
    # between the limit and twice it: read, with PIL's warning as one log line (not a Python warning)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_500_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = read_raw_image(path)
    assert raw.array.shape == (height, width, 4) and raw.array.dtype == np.uint16


@pytest.mark.parametrize(("declared", "made"), [((40, 30), 4_000_000), ((40, 30), 100)])
def test_16_bit_png_data_longer_or_shorter_than_its_header_is_one_error(
    tmp_path: Path, declared: tuple[int, int], made: int
) -> None:
    width, height = declared
    path = tmp_path / "mismatch16.png"
    path.write_bytes(png_file(width, height, 2, zeros_deflated(made, unit=1 << 16)))
    outcome, peak = peak_bytes_of(read_raw_image, path)
    assert isinstance(outcome, ImageReadError), outcome
    assert re.search(r"longer than its 40x30 header|truncated", str(outcome)), outcome
    assert peak < 500_000, f"{peak:,} bytes allocated for a 40x30 image"  # never the 4 MB it holds


def test_a_16_bit_png_still_reads_exactly(tmp_path: Path) -> None:
    array = RNG.integers(0, 65536, (7, 9, 3), dtype=np.uint16)
    path = tmp_path / "exact16.png"
    write_png16(path, array)
    decoded = read_png16(path)
    assert np.array_equal(decoded.array, array) and decoded.icc_profile is None


# ----------------------------------------------------------------------------- 16-bit PNG: damaged chunks


def icc_chunk(compressed_profile: bytes) -> bytes:
    return chunk(b"iCCP", b"profile\0\0" + compressed_profile)


def test_damaged_and_oversized_icc_profiles_of_16_bit_pngs_are_dropped_with_a_warning(
    tmp_path: Path, model_path: Path
) -> None:
    array = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    plain = png16_bytes(array, tmp_path)
    cases = {
        "garbage.png": icc_chunk(b"garbage garbage garbage"),
        "bomb.png": icc_chunk(zlib.compress(bytes(64 << 20), 9)),  # 64 MB profile in 64 kB
        "no_name_end.png": chunk(b"iCCP", b"profile without a terminator"),
    }
    for name, body in cases.items():
        (tmp_path / name).write_bytes(with_chunks(plain, body))
    # in process: the bomb is not inflated past PIL's 1 MB bound for such chunks
    outcome, peak = peak_bytes_of(read_raw_image, tmp_path / "bomb.png")
    assert not isinstance(outcome, Exception) and outcome.icc_profile is None, outcome
    assert np.array_equal(outcome.array, array)
    assert peak < 8 << 20, f"{peak:,} bytes allocated"
    # as the user meets it: each file upscaled, one warning line each, the profile dropped
    out = tmp_path / "out"
    child = srfeat_cli("upscale", *(tmp_path / name for name in cases), "-o", out, "--model", model_path)
    lines = stderr_lines(child)
    assert child.returncode == 0, child.stderr
    for name in cases:
        warned = [line for line in lines if line.startswith("WARNING:") and name in line]
        assert len(warned) == 1 and "ICC profile" in warned[0] and "dropped" in warned[0], child.stderr
        written = read_raw_image(out / name)
        assert written.array.shape == (24, 20, 3) and written.array.dtype == np.uint16 and written.icc_profile is None


def test_a_good_icc_profile_of_a_16_bit_png_is_kept(tmp_path: Path) -> None:
    profile = srgb_profile()
    path = tmp_path / "icc16.png"
    write_png16(path, RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16), icc_profile=profile)
    assert read_raw_image(path).icc_profile == profile


def exif_with_orientation(value: bytes, kind: int, count: int) -> bytes:
    """A little-endian EXIF (TIFF) block with one Orientation entry, its value inline."""
    return b"II*\0\x08\0\0\0\x01\0" + struct.pack("<HHI", 0x0112, kind, count) + value.ljust(4, b"\0") + b"\0\0\0\0"


@pytest.mark.parametrize(
    ("name", "exif"),
    [
        ("text", exif_with_orientation(b"abc\0", 2, 4)),  # ASCII
        ("nine", exif_with_orientation(struct.pack("<H", 9), 3, 1)),  # SHORT, out of 1..8
        ("garbage", b"not a TIFF header at all"),
        ("short", b"II*\0"),  # struct.error, not caught: a traceback that ended the run
    ],
)
def test_an_invalid_exif_orientation_of_a_16_bit_png_is_ignored(tmp_path: Path, name: str, exif: bytes) -> None:
    array = RNG.integers(0, 65536, (3, 5, 4), dtype=np.uint16)
    path = tmp_path / f"{name}.png"
    path.write_bytes(with_chunks(png16_bytes(array, tmp_path), chunk(b"eXIf", exif)))
    raw = read_raw_image(path)
    assert np.array_equal(raw.array, array)  # as stored: not turned
    kept = Image.Exif()
    kept.load(raw.exif or b"")
    assert 0x0112 not in kept  # a viewer must not act on it either


def test_an_exif_block_that_is_not_tiff_structured_is_dropped_and_the_picture_read(
    tmp_path: Path, model_path: Path
) -> None:
    """PIL's getexif raises for these: a PNG or WebP was refused as unreadable, and a JPEG (or a
    struct.error from any of them) ended the whole run with a traceback."""
    pixels = Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    damaged = {"garbage": b"Exif\0\0not a TIFF header", "short": b"Exif\0\0II*\0"}
    for name, block in damaged.items():
        for extension in ("jpg", "png", "webp"):
            pixels.save(tmp_path / f"{name}.{extension}", exif=block)
    pixels.save(tmp_path / "good.png")
    child = srfeat_cli("upscale", tmp_path, "-o", tmp_path / "out", "--model", model_path)
    lines = stderr_lines(child)
    assert child.returncode == 0, child.stderr
    assert len(list((tmp_path / "out").iterdir())) == 7
    dropped = [line for line in lines if "its EXIF block is damaged" in line]
    assert len(dropped) == 6 and all(line.startswith("WARNING:") for line in dropped), child.stderr


def test_a_partly_damaged_exif_block_written_into_a_tiff_is_not_complained_of_again(
    tmp_path: Path, model_path: Path
) -> None:
    """PIL reads the block again to write a TIFF's tags: its warning came out a second time, as
    Python prints warnings (two lines, with PIL's source line), after srfeat's one line."""
    block = b"Exif\0\0II*\0\x08\0\0\0\xff\xff"  # an IFD of 65535 entries, none there
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", exif=block)
    child = srfeat_cli("upscale", tmp_path / "a.jpg", "-o", tmp_path / "a.tif", "--model", model_path)
    lines = stderr_lines(child)  # srfeat's log lines only
    assert child.returncode == 0 and sum("Corrupt EXIF data" in line for line in lines) == 1, child.stderr
    with Image.open(tmp_path / "a.tif") as result:
        assert result.size == (20, 24)


def test_the_web_apps_views_of_an_image_with_a_damaged_exif_block_are_built(tmp_path: Path) -> None:
    """`srfeat serve` upscales such an image (above); its views went through PIL's exif_transpose
    directly: a 422 "does not decode" for a not-TIFF block, an uncaught struct.error for a short one."""
    pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
    from srfeat.web import views

    for block in (b"Exif\0\0not a TIFF header", b"Exif\0\0II*\0"):
        buffer = io.BytesIO()
        Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(buffer, format="WEBP", exif=block)
        for data, _ in (views.bicubic_view(buffer.getvalue(), 20, 24), views.browser_view(buffer.getvalue())):
            assert Image.open(io.BytesIO(data)).size in ((20, 24), (5, 6))


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_an_invalid_exif_orientation_of_an_8_bit_jpeg_is_not_written_out(
    tmp_path: Path, model_path: Path, orientation: int
) -> None:
    """PIL ignores it when reading, but kept it in the block that the output carries over."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "a camera"
    Image.fromarray(RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", exif=exif.tobytes())
    child = srfeat_cli("upscale", tmp_path / "a.jpg", "-o", tmp_path / "out.jpg", "--model", model_path)
    assert child.returncode == 0, child.stderr
    with Image.open(tmp_path / "out.jpg") as result:
        written = result.getexif()
        assert result.size == (24, 32) and 0x0112 not in written and written[0x010F] == "a camera"


def test_a_valid_exif_orientation_of_a_16_bit_png_is_applied(tmp_path: Path) -> None:
    array = RNG.integers(0, 65536, (3, 5, 3), dtype=np.uint16)
    path = tmp_path / "six.png"
    exif = exif_with_orientation(struct.pack("<H", 6), 3, 1)
    path.write_bytes(with_chunks(png16_bytes(array, tmp_path), chunk(b"eXIf", exif)))
    assert np.array_equal(read_raw_image(path).array, np.rot90(array, k=-1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16_bit_colour_files_turn_upright_as_8_bit_ones_do(tmp_path: Path, orientation: int) -> None:
    """srfeat turns 16-bit colour PNG and TIFF upright itself; PIL turns the 8-bit ones. 5 (the
    transpose) and 7 (the transverse) came out swapped: the 16-bit picture upside down and mirrored."""
    eight = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(eight).save(tmp_path / "eight.png", exif=exif.tobytes())
    expected = read_raw_image(tmp_path / "eight.png").array.astype(np.uint16) * 257  # PIL's exif_transpose
    png = tmp_path / "sixteen.png"
    png.write_bytes(with_chunks(png16_bytes(sixteen, tmp_path), chunk(b"eXIf", exif.tobytes())))
    tiff = tmp_path / "sixteen.tif"
    tifffile.imwrite(tiff, sixteen, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    for path in (png, tiff):
        assert np.array_equal(read_raw_image(path).array, expected), path.name


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("layout", ["grey", "grey16", "rgba"])
def test_an_uncompressed_tiff_turned_a_quarter_is_read_upright_not_scrambled(
    tmp_path: Path, layout: str, orientation: int
) -> None:
    """PIL memory-maps such a file (one strip, a mode it can map) with the turned size: the pixels
    came out in stripes, neither stored nor upright, without a word."""
    grey = RNG.integers(0, 256, (6, 4), dtype=np.uint8)
    stored = {"grey": grey, "grey16": grey.astype(np.uint16) * 257, "rgba": np.dstack([grey] * 4)}[layout]
    path = tmp_path / "turned.tif"
    photometric = "rgb" if layout == "rgba" else "minisblack"
    tifffile.imwrite(path, stored, photometric=photometric, extratags=[(274, 3, 1, orientation, True)])
    upright = {5: stored.swapaxes(0, 1), 6: np.rot90(stored, -1), 7: np.rot90(stored, -1)[::-1], 8: np.rot90(stored)}
    expected = upright[orientation] if layout == "rgba" else upright[orientation][..., None]
    read = read_raw_image(path).array
    assert read.shape == expected.shape and np.array_equal(read, expected)


def test_a_see_through_colour_of_a_1_bit_or_16_bit_png_becomes_alpha(tmp_path: Path, model_path: Path) -> None:
    """A tRNS colour key was honoured in 8-bit grey, RGB and palette PNGs only: in a 1-bit, a 16-bit
    grey or a 16-bit RGB one the see-through pixels came out opaque, without a word."""
    left = np.zeros((8, 12), dtype=bool)
    left[:, :6] = True  # the see-through half
    Image.fromarray(~left).save(tmp_path / "bits.png", transparency=0)  # mode 1: black is see-through
    grey16 = np.where(left, 1234, 50000).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png", transparency=1234)
    rgb16 = np.where(left[..., None], np.array([1, 2, 3]), np.array([60000, 30000, 100])).astype(np.uint16)
    key = chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))
    (tmp_path / "rgb16.png").write_bytes(with_chunks(png16_bytes(rgb16, tmp_path), key))
    (tmp_path / "made16.png").unlink()
    child = srfeat_cli("upscale", tmp_path, "-o", tmp_path / "out", "--model", model_path)
    assert child.returncode == 0, child.stderr
    for name, channels, top in (("bits", 2, 255), ("grey16", 2, 65535), ("rgb16", 4, 65535)):
        result = read_raw_image(tmp_path / "out" / f"{name}.png").array
        assert result.shape == (32, 48, channels) and result.max() <= top, name
        assert result[0, 0, -1] == 0 and result[0, -1, -1] == top, name  # see-through on the left only
    with Image.open(tmp_path / "grey16.png") as image:
        assert Upscaler(model_path, device="cpu")(image).mode == "LA"


def interlaced_png16(array: np.ndarray) -> bytes:
    """An Adam7-interlaced 16-bit PNG of HxWxC `array` (C = 2..4), every row unfiltered: PIL writes none."""
    raw = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        part = np.ascontiguousarray(array[y0::dy, x0::dx], dtype=">u2")
        if part.size:
            raw += b"".join(b"\0" + row.tobytes() for row in part)
    color_type = {2: 4, 3: 2, 4: 6}[array.shape[2]]
    header = struct.pack(">IIBBBBB", array.shape[1], array.shape[0], 16, color_type, 0, 0, 1)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("height", "width", "channels"), [(1, 1, 3), (5, 3, 4), (13, 11, 3), (9, 17, 2)])
def test_an_interlaced_16_bit_png_keeps_16_bits(tmp_path: Path, height: int, width: int, channels: int) -> None:
    """It went to PIL, which reads it with 8 bits, without the warning the reader's docstring promised."""
    array = RNG.integers(0, 65536, (height, width, channels), dtype=np.uint16)
    path = tmp_path / "interlaced.png"
    path.write_bytes(interlaced_png16(array))
    raw = read_raw_image(path)
    assert raw.array.dtype == np.uint16 and np.array_equal(raw.array, array)
    with Image.open(path) as image:  # PIL's own decoding of the same file, with 8 bits
        eight = np.asarray(image.convert("RGBA" if channels in (2, 4) else "RGB"))
    if channels != 2:
        assert np.abs(eight.astype(int) - (array >> 8)).max() <= 1


def test_a_16_bit_colour_png_keeps_its_exif(tmp_path: Path, model_path: Path) -> None:
    """The 16-bit writers took no EXIF: a camera's make, date and place were lost without a word
    (8-bit outputs kept them). A 16-bit colour TIFF still cannot hold it, and says so."""
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    exif[0x0112] = 6  # applied on reading, so not written out
    source = tmp_path / "deep.png"
    source.write_bytes(with_chunks(png16_bytes(RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16), tmp_path),
                                   chunk(b"eXIf", exif.tobytes().removeprefix(b"Exif\0\0"))))  # fmt: skip
    child = srfeat_cli("upscale", source, "-o", tmp_path / "out.png", "--model", model_path)
    assert child.returncode == 0, child.stderr
    with Image.open(tmp_path / "out.png") as result:
        assert result.size == (24, 20) and result.getexif().get(0x010F) == "camera maker"
        assert 0x0112 not in result.getexif()
    assert read_raw_image(tmp_path / "out.png").array.dtype == np.uint16
    child = srfeat_cli("upscale", source, "-o", tmp_path / "out.tif", "--model", model_path)
    assert child.returncode == 0 and "written without the EXIF data (.png keeps it)" in child.stderr, child.stderr


# ----------------------------------------------------------------------------- float (mode F) images


def float_tiff(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.float32), "F").save(path)
    return path


def test_float_tiffs_are_read_as_0_to_1_and_stay_float(tmp_path: Path, model_path: Path) -> None:
    pixels = RNG.random((12, 10), dtype=np.float32)
    source = float_tiff(tmp_path / "f01.tif", pixels)
    raw = read_raw_image(source)
    assert raw.mode == "F" and raw.array.dtype == np.float32 and np.array_equal(raw.array[..., 0], pixels)
    # the same picture as 16-bit gray: its result is the reference (the old reader made it black)
    sixteen = tmp_path / "g16.png"
    Image.fromarray(np.rint(pixels * 65535).astype(np.uint16)).save(sixteen)
    out = tmp_path / "out"
    child = srfeat_cli("upscale", source, sixteen, "-o", out, "--model", model_path)
    assert child.returncode == 0 and not [line for line in stderr_lines(child) if "WARNING" in line], child.stderr
    with Image.open(out / "f01.tif") as result, Image.open(out / "g16.png") as reference:
        assert result.mode == "F" and result.size == (40, 48) and reference.mode == "I;16"
        values, expected = np.asarray(result), np.asarray(reference) / 65535.0
    assert np.abs(values - expected).max() < 1e-3


@pytest.mark.parametrize(
    ("name", "pixels", "expected"),
    [
        (
            "nan.tif",
            np.where(RNG.random((8, 6)) < 0.25, np.nan, 0.5),
            r"\d+ of its 48 float pixel values are not finite",
        ),
        ("inf.tif", np.full((8, 6), np.inf), "48 of its 48 float pixel values are not finite"),
        (
            "byte_range.tif",
            RNG.random((8, 6)) * 255,
            r"in \[[\d.e-]+, [\d.e+]+\], not in \[0, 1\].*divide 0..255 data by 255",
        ),
        ("signed.tif", RNG.random((8, 6)) * 2 - 1, r"in \[-[\d.e-]+, [\d.e-]+\], not in \[0, 1\]"),
    ],
)
def test_float_pixels_that_are_not_finite_or_outside_0_1_are_refused_in_one_line(
    tmp_path: Path, name: str, pixels: np.ndarray, expected: str
) -> None:
    source = float_tiff(tmp_path / name, pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old reader's numpy "invalid value encountered in cast"
        with pytest.raises(ImageReadError, match=expected) as raised:
            read_raw_image(source)
    assert name in str(raised.value) and "\n" not in str(raised.value)


def test_float_pixels_a_rounding_error_outside_0_1_are_read_as_the_api_takes_them(tmp_path: Path) -> None:
    pixels = np.clip(RNG.random((8, 6)) * 1.002 - 0.001, -0.001, 1.001).astype(np.float32)
    raw = read_raw_image(float_tiff(tmp_path / "rounded.tif", pixels))
    assert np.array_equal(raw.array[..., 0], pixels)


def test_float_refusal_on_the_command_line(tmp_path: Path, model_path: Path) -> None:
    source = float_tiff(tmp_path / "fnan.tif", np.full((8, 6), np.nan))
    child = srfeat_cli("upscale", source, "-o", tmp_path / "out", "--model", model_path)
    errors = [line for line in stderr_lines(child) if line.startswith("ERROR:")]
    assert child.returncode == 1 and "fnan.tif" in errors[0] and "not finite" in errors[0], child.stderr
    assert not (tmp_path / "out" / "fnan.tif").exists()


def test_a_sound_tiff_of_a_layout_srfeat_does_not_read_is_named_as_such(tmp_path: Path, model_path: Path) -> None:
    """A float RGB TIFF (a 32-bit HDR export), a 64-bit float one or one of 5 samples is a sound file that PIL
    does not open: the error was PIL's 'cannot identify image file ...; skip or replace this file', as for
    a damaged one. It says what the file holds and what to do now; a damaged TIFF is named as before."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "hdr.tif", RNG.random((6, 5, 3), dtype=np.float32), photometric="rgb")
    tifffile.imwrite(folder / "double.tif", RNG.random((6, 5)))
    five = RNG.integers(0, 65536, (6, 5, 5), dtype=np.uint16)
    tifffile.imwrite(folder / "five.tif", five, photometric="rgb", extrasamples=("unassalpha", "unspecified"))
    (folder / "cut.tif").write_bytes((folder / "hdr.tif").read_bytes()[:8])
    child = srfeat_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_path)
    assert child.returncode == 1, child.stderr
    errors = [line for line in stderr_lines(child) if line.startswith("ERROR: cannot read image")]
    expected = {
        "hdr.tif": "a TIFF of 3 sample(s) of 32-bit float per pixel, which srfeat does not read",
        "double.tif": "a TIFF of 1 sample(s) of 64-bit float per pixel, which srfeat does not read",
        "five.tif": "a TIFF of 5 sample(s) of 16-bit unsigned integer per pixel, which srfeat does not read",
        "cut.tif": "skip or replace this file",
    }
    for name, said in expected.items():
        line = next(line for line in errors if f"{folder / name}:" in line)
        assert said in line and ("save it with 16 bits" in line) == (name != "cut.tif"), line


def test_an_unsigned_32_bit_tiff_is_refused_with_its_own_range(tmp_path: Path, model_path: Path) -> None:
    """PIL reads unsigned 32-bit samples into its signed mode I: the refusal gave the range as wrapped values,
    [-2134967296, 2144000000] for [0, 4080000000]. A signed one's range is its own; one within 16 bits is read."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "wide.tif", (np.arange(30, dtype=np.uint32) * 136_000_000 + 70_000).reshape(6, 5))
    tifffile.imwrite(folder / "signed.tif", np.full((6, 5), -5, dtype=np.int32))
    tifffile.imwrite(folder / "narrow.tif", np.full((6, 5), 60_000, dtype=np.uint32))
    child = srfeat_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_path)
    errors = [line for line in stderr_lines(child) if line.startswith("ERROR: cannot read image")]
    said = "\n".join(errors)
    assert child.returncode == 1 and len(errors) == 2, child.stderr
    assert f"{folder / 'wide.tif'}: its unsigned 32-bit pixels are in [70000, 3944070000], outside 16 bits" in said
    assert f"{folder / 'signed.tif'}: its I pixels are in [-5, -5], outside 16 bits" in said
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["narrow.tif"]


def test_a_mode_f_pil_image_comes_back_as_mode_f(upscaler: Upscaler) -> None:
    pixels = RNG.random((6, 5), dtype=np.float32)
    result = upscaler(Image.fromarray(pixels, "F"))
    assert result.mode == "F" and result.size == (20, 24)
    # the same as the 16-bit gray image of these pixels gives (the old code rounded them to 0 and 1)
    reference = upscaler(Image.fromarray(np.rint(pixels * 65535).astype(np.uint16)))
    assert np.abs(np.asarray(result) - np.asarray(reference) / 65535.0).max() < 1e-3
    with pytest.raises(InvalidImageError, match="not finite"):
        upscaler(Image.fromarray(np.full((6, 5), np.nan, np.float32), "F"))
    with pytest.raises(SRFeatError, match=r"not in \[0, 1\]"):
        pil_to_array(Image.fromarray(np.full((6, 5), 200.0, np.float32), "F"))


# ----------------------------------------------------------------------------- modes and output formats


def readme_mode_table() -> dict[str, str]:
    """The README's table of what `Upscaler` returns for each PIL mode: {input mode: output mode}."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("| PIL mode in |") :].split("\n\n")[0]
    mapping = {}
    for row in section.splitlines()[2:]:
        modes_in, mode_out = (cell.strip() for cell in row.strip("|").split("|")[:2])
        for mode in re.findall(r"`([^`]+)`", modes_in):
            mapping[mode] = mode if mode_out.startswith("the same") else re.findall(r"`([^`]+)`", mode_out)[0]
    return mapping


def image_in_mode(mode: str) -> Image.Image:
    rgb = Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    if mode.endswith("+transparency"):  # a PNG's tRNS chunk: an index, or a colour, that is see-through
        base = mode.split("+")[0]
        image = image_in_mode(base) if base == "I;16" else rgb.convert(base)
        image.info["transparency"] = image.getpixel((0, 0))
        return image
    if mode in ("I", "I;16", "I;16B"):
        return Image.fromarray(RNG.integers(0, 65536, (6, 5)).astype(np.int32), "I").convert(mode)
    if mode == "F":
        return Image.fromarray(RNG.random((6, 5), dtype=np.float32), "F")
    if mode in ("LAB", "La"):  # PIL converts to these from few modes
        return Image.new(mode, (5, 6))
    return rgb.convert(mode)


def test_the_readme_states_the_mode_each_pil_mode_comes_back_in(upscaler: Upscaler) -> None:
    table = readme_mode_table()
    modes = ["1", "L", "LA", "La", "P", "P+transparency", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"]
    modes += ["HSV", "LAB", "I", "I;16", "I;16B", "F", "RGB+transparency", "L+transparency", "1+transparency"]
    modes += ["I;16+transparency"]
    assert set(table) == set(modes)
    for mode in modes:
        assert upscaler(image_in_mode(mode)).mode == table[mode], mode


def test_a_palette_image_with_an_rgba_palette_keeps_its_transparency(upscaler: Upscaler) -> None:
    """What `quantize()` of an RGBA image gives has no `transparency` entry: only that was looked for,
    and the see-through half came back opaque RGB."""
    rgba = np.zeros((8, 10, 4), dtype=np.uint8)
    rgba[..., 0], rgba[:, 5:, 3] = 200, 255  # the left half is see-through
    palette = Image.fromarray(rgba, "RGBA").quantize()
    result = upscaler(palette)
    assert result.mode == "RGBA" and result.size == (40, 32)
    alpha = np.asarray(result)[..., 3]
    assert alpha[:, 0].max() == 0 and alpha[:, -1].min() == 255


@pytest.mark.parametrize("extension", sorted(FORMATS))
@pytest.mark.parametrize("layout", ["uint8x1", "uint8x2", "uint8x3", "uint8x4", "uint16x1", "uint16x2", "uint16x3",
                                    "uint16x4", "float32x1"])  # fmt: skip
def test_every_pixel_layout_can_be_written_in_every_format(tmp_path: Path, layout: str, extension: str) -> None:
    dtype, channels = layout.split("x")
    if dtype == "float32":
        array = RNG.random((5, 7, int(channels)), dtype=np.float32)
    else:
        array = RNG.integers(0, np.iinfo(dtype).max, (5, 7, int(channels)), endpoint=True).astype(dtype)
    path = tmp_path / f"written{extension}"
    write_image(path, array)
    back = read_raw_image(path).array
    assert back.shape[:2] == (5, 7)
    if layout == "float32x1" and extension == ".png":  # 16 bits of it
        array = np.rint(array * 65535).astype(np.uint16)
    if extension in (".png", ".tif", ".tiff"):  # lossless formats that hold every layout given
        assert back.shape == array.shape and back.dtype == array.dtype and np.array_equal(back, array)


def test_gray_alpha_to_bmp_is_converted_with_a_warning(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "la.png"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 2), dtype=np.uint8), "LA").save(source)
    child = srfeat_cli("upscale", source, "-o", tmp_path / "la.bmp", "--model", model_path)
    lines = stderr_lines(child)
    assert child.returncode == 0, child.stderr
    assert any(line.startswith("WARNING:") and "BMP has no alpha channel" in line for line in lines), child.stderr
    with Image.open(tmp_path / "la.bmp") as result:
        assert result.mode == "L" and result.size == (20, 24)


def test_an_unknown_output_extension_is_refused_before_the_network_runs(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "a.png"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(source)
    tiles: list[int] = []
    counting = Upscaler(model_path, device="cpu", tile=0, on_tile=lambda done, total: tiles.append(done))
    with pytest.raises(SRFeatError, match="unknown image extension"):
        upscale_file(counting, source, tmp_path / "a_x4" / ".png")
    assert tiles == []
    upscale_file(counting, source, tmp_path / "a_x4.png")  # the same upscaler does run the network
    assert tiles


def test_a_folder_at_the_outputs_name_is_refused_before_the_network_runs(tmp_path: Path, model_path: Path) -> None:
    """The final rename onto a folder failed, after the whole upscale."""
    source = tmp_path / "a.png"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(source)
    (tmp_path / "a_x4.png").mkdir()
    tiles: list[int] = []
    counting = Upscaler(model_path, device="cpu", tile=0, on_tile=lambda done, total: tiles.append(done))
    with pytest.raises(SRFeatError, match="a_x4.png: a folder of that name exists; give another output name"):
        upscale_file(counting, source, tmp_path / "a_x4.png")
    assert tiles == [] and list((tmp_path / "a_x4.png").iterdir()) == []


# ----------------------------------------------------------------------------- what the libraries report


def test_pil_and_tifffile_warnings_are_one_srfeat_line_each(tmp_path: Path, model_path: Path) -> None:
    jpeg = tmp_path / "plain.jpg"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(jpeg, quality=90)
    data = jpeg.read_bytes()
    exif = b"Exif\0\0" + b"MM\0*\0\0\0\x08\xff\xff" + b"garbage" * 5  # 65535 entries promised, 35 bytes there
    (tmp_path / "badexif.jpg").write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:])
    array = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "orient99.tif", array, photometric="rgb", extratags=[(274, 3, 1, 99, True)])
    child = srfeat_cli("upscale", tmp_path / "badexif.jpg", tmp_path / "orient99.tif", "-o", tmp_path / "out",
                   "--model", model_path)  # fmt: skip
    lines = stderr_lines(child)
    assert child.returncode == 0, child.stderr
    warned = [line for line in lines if line.startswith("WARNING:")]
    assert len(warned) == 2, child.stderr  # tifffile's orientation complaint once, though the file is opened twice
    assert "badexif.jpg" in warned[0] and "Corrupt EXIF data" in warned[0], child.stderr
    assert "orient99.tif" in warned[1] and "ORIENTATION" in warned[1], child.stderr
    assert np.array_equal(read_raw_image(tmp_path / "orient99.tif").array, array)  # 99 ignored: as stored


def test_a_decompression_bomb_warning_is_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "largish.png"
    Image.fromarray(RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # 30 pixels: over the limit, under twice it
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        read_raw_image(path)
        open_image(path)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and all("largish.png" in m and "decompression bomb" in m for m in messages), messages


def test_a_failed_read_reports_only_its_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "nopages.tif"
    path.write_bytes(b"II*\0\0\0\0\0")  # a TIFF header whose first page is at offset 0: no pages
    with caplog.at_level(logging.WARNING), pytest.raises(ImageReadError, match="nopages.tif"):
        read_raw_image(path)
    assert not caplog.records, [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("sixteen_bit", [False, True])
def test_a_multi_page_tiff_is_said_to_have_pages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sixteen_bit: bool
) -> None:
    path = tmp_path / "pages.tif"
    if sixteen_bit:
        pages = RNG.integers(0, 65536, (2, 6, 5, 3), dtype=np.uint16)
        tifffile.imwrite(path, pages, photometric="rgb")
    else:
        pages = RNG.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
        Image.fromarray(pages[0]).save(path, save_all=True, append_images=[Image.fromarray(pages[1])])
    with caplog.at_level(logging.WARNING):
        raw = read_raw_image(path)
    assert np.array_equal(raw.array, pages[0])
    assert [record.getMessage() for record in caplog.records] == [f"{path} has 2 pages: only the first is read"]


def test_a_16_bit_cmyk_tiff_is_read_as_its_colours_not_as_rgba(tmp_path: Path) -> None:
    """Its four inks were taken for R, G, B and alpha: pure cyan came out a fully transparent red."""
    inks = np.zeros((4, 5, 4), dtype=np.uint16)
    inks[..., 0] = 65535  # cyan, no other ink
    tifffile.imwrite(tmp_path / "cmyk16.tif", inks, photometric="separated")
    tifffile.imwrite(tmp_path / "cmyk8.tif", (inks >> 8).astype(np.uint8), photometric="separated")
    sixteen, eight = read_raw_image(tmp_path / "cmyk16.tif"), read_raw_image(tmp_path / "cmyk8.tif")
    assert sixteen.array.shape == (4, 5, 3) and np.array_equal(sixteen.array, eight.array)
    assert tuple(sixteen.array[0, 0]) == (0, 255, 255)


def test_a_16_bit_tiff_with_premultiplied_alpha_is_unpremultiplied(tmp_path: Path) -> None:
    """Associated alpha (ExtraSamples 1): the colour is stored multiplied by the alpha, as PIL's
    8-bit RGBa; read as it was stored, half-transparent red came out half as bright."""
    straight = RNG.integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    straight[0, 0, 3] = 0
    stored = straight.copy()
    stored[..., :3] = np.rint(straight[..., :3] * (straight[..., 3:] / 65535.0))
    tifffile.imwrite(tmp_path / "assoc.tif", stored, photometric="rgb", extrasamples=("assocalpha",))
    raw = read_raw_image(tmp_path / "assoc.tif")
    assert raw.array.dtype == np.uint16  # 16 bits kept
    read = raw.array.astype(np.int64)
    opaque_enough = straight[..., 3] >= 1024  # below, the stored colour has too few levels to recover
    error = np.abs(read[..., :3] - straight[..., :3])[opaque_enough]
    assert error.max() <= 64, error.max()
    assert np.array_equal(read[..., 3], straight[..., 3]) and not read[0, 0, :3].any()


@pytest.mark.parametrize("channels", [2, 4])
def test_a_16_bit_tiffs_unspecified_extra_sample_is_not_taken_for_alpha(tmp_path: Path, channels: int) -> None:
    """ExtraSamples 0 (not alpha: PIL reads 8-bit ones as RGBX and LX, and leaves it out): an extra
    channel of zeros made the whole 16-bit picture transparent."""
    stored = RNG.integers(0, 65536, (4, 5, channels), dtype=np.uint16)
    stored[..., -1] = 0
    path = tmp_path / "extra.tif"
    photometric = "rgb" if channels == 4 else "minisblack"
    tifffile.imwrite(path, stored, photometric=photometric, extrasamples=("unspecified",))
    raw = read_raw_image(path)
    assert raw.array.dtype == np.uint16 and np.array_equal(raw.array, stored[..., :-1])


def test_a_16_bit_grey_and_alpha_tiff_that_srfeat_reads_is_scored_by_eval(tmp_path: Path) -> None:
    """PIL does not open a 16-bit grey + alpha TIFF (what `write_image` makes of one: an upscale of a
    16-bit grey PNG with alpha to .tif), but srfeat reads it: eval's scan by file headers skipped it
    as 'cannot identify image file', as training's scan did."""
    folder = tmp_path / "set"
    grey_alpha = RNG.integers(0, 65536, (24, 28, 2), dtype=np.uint16)
    write_image(folder / "scan.tif", grey_alpha)
    assert read_raw_image(folder / "scan.tif").mode == "LA;16"
    Image.fromarray(RNG.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(folder / "photo.png")
    child = srfeat_cli("eval", "--model", "bicubic", "--data", folder, "--metrics", "psnr", cwd=tmp_path)
    assert child.returncode == 0 and "cannot read" not in child.stderr, child.stderr
    assert "| bicubic | set | 2 |" in child.stdout, child.stdout


def test_a_16_bit_min_is_white_tiff_is_not_read_inverted(tmp_path: Path) -> None:
    grey_alpha = np.zeros((4, 5, 2), dtype=np.uint16)
    grey_alpha[..., 1] = 65535  # zero is white in this photometric
    path = tmp_path / "miniswhite.tif"
    tifffile.imwrite(path, grey_alpha, photometric="miniswhite", extrasamples=("unassalpha",))
    try:
        raw = read_raw_image(path)
    except ImageReadError as error:  # PIL does not read it either: one line naming the file
        assert str(path) in str(error) and "\n" not in str(error)
    else:
        assert raw.array[0, 0, 0] == raw.array.max() and raw.array[0, 0, 0] > 0


def test_an_animated_16_bit_png_is_said_to_have_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PIL's animated files are named in a warning; a 16-bit colour APNG, which srfeat reads itself,
    gave its first frame without a word."""
    first, second = RNG.integers(0, 65536, (2, 4, 5, 3), dtype=np.uint16)
    control = struct.pack(">IIIIIHHBB", 0, 5, 4, 0, 0, 1, 10, 0, 0)  # fcTL: sequence 0, the whole 5x4 canvas
    png = with_chunks(png16_bytes(first, tmp_path), chunk(b"acTL", struct.pack(">II", 2, 0)), chunk(b"fcTL", control))
    rows = b"".join(b"\0" + row.tobytes() for row in second.astype(">u2"))
    extra = chunk(b"fcTL", struct.pack(">I", 1) + control[4:]) + chunk(
        b"fdAT", struct.pack(">I", 2) + zlib.compress(rows)
    )
    path = tmp_path / "animated.png"
    path.write_bytes(png[: png.index(b"IEND") - 4] + extra + png[png.index(b"IEND") - 4 :])
    with caplog.at_level(logging.WARNING):
        raw = read_raw_image(path)
    assert raw.array.dtype == np.uint16 and np.array_equal(raw.array, first)
    assert [record.getMessage() for record in caplog.records] == [
        f"{path} has 2 frames (animated): only the first is read"
    ]


def test_a_multi_picture_jpeg_is_not_called_animated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera's MPO (a photo with a depth map, or a 3D pair) was said to be 'animated'."""
    first, second = (Image.new("RGB", (8, 6), colour) for colour in ((200, 10, 10), (10, 10, 200)))
    path = tmp_path / "camera.jpg"
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with caplog.at_level(logging.WARNING):
        array = read_image(path)
    assert array[0, 0, 0] > 150 and array[0, 0, 2] < 60  # the first picture
    assert [record.getMessage() for record in caplog.records] == [
        f"{path} has 2 pictures (a multi-picture JPEG): only the first is read"
    ]


def ppm_bytes(samples: np.ndarray, maxval: int, header: bytes | None = None) -> bytes:
    height, width = samples.shape[:2]
    return (header or f"P6\n{width} {height}\n{maxval}\n".encode()) + samples.astype(">u2").tobytes()


def test_a_16_bit_ppm_keeps_its_16_bits_and_is_upscaled_to_a_16_bit_png(tmp_path: Path) -> None:
    """dcraw -4 writes 16-bit PPMs; PIL read them with 8 bits, and the output lost the other 8."""
    pixels = RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    (tmp_path / "raw.ppm").write_bytes(ppm_bytes(pixels, 65535, b"P6 # dcraw\n7\t6\n# a comment\n65535\n"))
    raw = read_raw_image(tmp_path / "raw.ppm")
    assert raw.mode == "RGB;16" and np.array_equal(raw.array, pixels)
    ten_bit = np.array([[[0, 512, 1023]]], dtype=np.uint16)  # a maxval below 65535 fills the 16-bit range
    (tmp_path / "ten.ppm").write_bytes(ppm_bytes(ten_bit, 1023))
    assert read_raw_image(tmp_path / "ten.ppm").array.tolist() == [[[0, round(512 * 65535 / 1023), 65535]]]
    result = srfeat_cli("upscale", tmp_path / "raw.ppm", "-o", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    upscaled = read_raw_image(tmp_path / "out" / "raw.png")
    assert upscaled.mode == "RGB;16" and upscaled.array.shape == (24, 28, 3)


def test_a_16_bit_ascii_ppm_keeps_its_16_bits_as_a_binary_one_does(tmp_path: Path, model_path: Path) -> None:
    """A P3 (ASCII) PPM with a maxval above 255 was read with 8 bits; P2 (grey) PIL reads with 16."""
    pixels = RNG.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    rows = "\n".join(" ".join(map(str, row.ravel())) for row in pixels)
    (tmp_path / "plain.ppm").write_text(f"P3\n# made by hand\n5 4\n65535\n{rows}\n")
    raw = read_raw_image(tmp_path / "plain.ppm")
    assert raw.mode == "RGB;16" and np.array_equal(raw.array, pixels)
    (tmp_path / "ten.ppm").write_text("P3 1 1 1023\n0 # a comment\n512\t1023\n")
    assert read_raw_image(tmp_path / "ten.ppm").array.tolist() == [[[0, round(512 * 65535 / 1023), 65535]]]
    (tmp_path / "grey.pgm").write_text("P2 3 1 1023\n0 512 1023\n")
    assert read_raw_image(tmp_path / "grey.pgm").array.ravel().tolist() == [0, round(512 * 65535 / 1023), 65535]
    for text, problem in (
        ("P3 2 1 1023\n1 2 3 4 5\n", "the file ends after 5 of its 6 samples"),
        ("P3 2 1 1023\n1 2 3 4 5 1024\n", "a sample is 1024, above the file.s maxval 1023"),
        ("P3 2 1 1023\n1 2 3 4 5 -6\n", "'-' where a sample belongs"),
    ):
        (tmp_path / "bad.ppm").write_text(text)
        with pytest.raises(ImageReadError, match=rf"cannot read image .*bad.ppm: {problem} \(") as caught:
            read_raw_image(tmp_path / "bad.ppm")
        assert "\n" not in str(caught.value)
    result = srfeat_cli("upscale", tmp_path / "plain.ppm", "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0, result.stderr
    assert read_raw_image(tmp_path / "out" / "plain.png").mode == "RGB;16"


def test_a_damaged_16_bit_ppm_is_one_line_and_an_8_bit_one_is_read_as_before(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 1000, (4, 5, 3), dtype=np.uint16)
    (tmp_path / "short.ppm").write_bytes(ppm_bytes(pixels, 999)[:-10])
    (tmp_path / "over.ppm").write_bytes(ppm_bytes(np.full((4, 5, 3), 1000, np.uint16), 999))
    for name, problem in (
        ("short.ppm", "the file ends after 55 of its 60 samples"),
        ("over.ppm", "a sample is 1000, above the file.s maxval 999"),
    ):
        with pytest.raises(ImageReadError, match=rf"cannot read image .*{name}: {problem}") as caught:
            read_raw_image(tmp_path / name)
        assert "\n" not in str(caught.value)
    eight_bit = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(eight_bit).save(tmp_path / "eight.ppm")
    raw = read_raw_image(tmp_path / "eight.ppm")
    assert raw.mode == "RGB" and np.array_equal(raw.array, eight_bit)


# ----------------------------------------------------------------------------- colour profiles


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def press_profile() -> bytes:
    """A CMYK input profile (ICC v2, lut8 A2B0 on a 2-point grid) of a press whose cyan ink is a deep
    blue (Lab 50, -20, -60), where PIL's plain conversion makes cyan (0, 255, 255); the other inks
    are neutral, black is black."""
    grid = []
    for cyan in (0, 1):
        for magenta in (0, 1):
            for yellow in (0, 1):
                for black in (0, 1):
                    lightness, a, b = (max(100 - 40 * (cyan + magenta + yellow), 0), 0, 0)
                    if black:
                        lightness = 0
                    elif (cyan, magenta, yellow) == (1, 0, 0):
                        lightness, a, b = 50, -20, -60
                    grid += [round(lightness * 255 / 100), a + 128, b + 128]
    identity = bytes(range(256))
    matrix = b"".join(_s15f16(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + matrix + identity * 4 + bytes(grid) + identity * 3
    return icc_v2_profile(b"prtrCMYKLab ", b"srfeat test press", [(b"A2B0", lut)])


def icc_v2_profile(class_and_spaces: bytes, name: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 profile: the header (`class_and_spaces`: device class, colour space, connection space,
    e.g. b"mntrGRAYXYZ "), a description `name`, the D50 white point, then `tags` (signature, data)."""
    text = name + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 2 + 1 + 67)
    white = b"XYZ " + bytes(4) + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249)
    tags = [(b"desc", desc), (b"wtpt", white), *tags]
    table, body, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        body += bytes(-(offset + len(body)) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    payload = struct.pack(">I", len(tags)) + table + body
    header = struct.pack(">I", 128 + len(payload)) + b"lcms" + bytes([2, 0x10, 0, 0]) + class_and_spaces
    header += bytes(12) + b"acsp" + bytes(28) + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249) + bytes(48)
    return header + payload


def test_cmyk_colours_go_through_their_own_profile_and_no_cmyk_profile_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a press's cyan came out as PIL's (0, 255, 255), and the RGB output carried the CMYK profile."""
    source = tmp_path / "print.tif"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(source, icc_profile=press_profile())
    raw = read_raw_image(source)
    red, green, blue = (int(v) for v in raw.array[0, 0])
    assert blue > 200 and red < 40 and 100 < green < 170, raw.array[0, 0]  # the deep blue (0, 133, 222)
    assert raw.icc_profile is None  # sRGB, as untagged RGB is read
    through_api = pil_to_array(Image.open(source))  # the API and the web app read PIL images so
    assert np.array_equal(through_api, raw.array)
    plain = tmp_path / "plain.tif"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(plain)  # no profile: PIL's conversion, as before
    assert tuple(read_raw_image(plain).array[0, 0]) == (0, 255, 255)
    with caplog.at_level(logging.WARNING):
        grey = tmp_path / "grey.png"
        Image.new("L", (8, 8), 128).save(grey, icc_profile=press_profile())
        assert read_raw_image(grey).icc_profile is None
    assert "its colour profile describes CMYK colours, not the grey pixels srfeat writes" in caplog.text


def test_the_api_does_not_tag_its_rgb_result_with_a_cmyk_or_rgb_on_grey_profile(
    upscaler: Upscaler, caplog: pytest.LogCaptureFixture
) -> None:
    """Files dropped these; `Upscaler` on a PIL image copied the input's profile whatever it was: a
    CMYK image's RGB result, its colours already converted through the profile, still carried it,
    and `result.save("x.png")` wrote an RGB PNG tagged CMYK."""
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(buffer, format="TIFF", icc_profile=press_profile())
    with Image.open(buffer) as cmyk:
        result = upscaler(cmyk)
    assert result.mode == "RGB" and "icc_profile" not in result.info
    saved = io.BytesIO()
    result.save(saved, format="PNG")
    assert "icc_profile" not in Image.open(saved).info
    grey = Image.new("L", (8, 8), 128)
    grey.info["icc_profile"] = srgb_profile()
    with caplog.at_level(logging.WARNING):
        assert "icc_profile" not in upscaler(grey).info
    assert "describes RGB colours, not the grey pixels" in caplog.text
    rgb = Image.new("RGB", (8, 8))
    rgb.info["icc_profile"] = srgb_profile()
    assert upscaler(rgb).info["icc_profile"] == srgb_profile()  # one that fits is kept


def grey_profile() -> bytes:
    """A grey display profile (ICC v2, gamma 2.2), as Photoshop's "Gray Gamma 2.2" tags grey scans."""
    curve = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", 0x0233) + bytes(2)  # gamma 2.2 (u8f8)
    return icc_v2_profile(b"mntrGRAYXYZ ", b"srfeat test grey", [(b"kTRC", curve)])


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_a_grey_image_written_as_rgb_webp_does_not_carry_its_grey_profile(
    tmp_path: Path, model_path: Path, mode: str
) -> None:
    """WebP has no grey mode, so grey is written as RGB; its grey profile went with it: an RGB WebP tagged
    GRAY, which a viewer reads through the wrong profile or not at all."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(grey_profile())).profile
    assert isinstance(profile, ImageCms.core.CmsProfile) and profile.xcolor_space.strip() == "GRAY"  # a sound one
    source = tmp_path / "scan.png"
    Image.fromarray(RNG.integers(0, 256, (8, 10, len(mode)), dtype=np.uint8).squeeze(), mode).save(
        source, icc_profile=grey_profile()
    )
    child = srfeat_cli("upscale", source, "-o", tmp_path / "scan.webp", "--model", model_path)
    lines = stderr_lines(child)
    assert child.returncode == 0
    assert any("the grey colour profile cannot describe RGB pixels; it is left out" in line for line in lines), lines
    with Image.open(tmp_path / "scan.webp") as result:
        assert result.mode in ("RGB", "RGBA") and "icc_profile" not in result.info
    kept = srfeat_cli("upscale", source, "-o", tmp_path / "scan_x4.png", "--model", model_path)
    assert kept.returncode == 0, kept.stderr
    with Image.open(tmp_path / "scan_x4.png") as result:  # a format that holds grey keeps the profile
        assert result.mode == mode and result.info["icc_profile"] == grey_profile()


@functools.cache
def srgb_profile() -> bytes:
    """One profile for the whole run: lcms stamps the second it was made into the header (bytes 24-35), so two
    made either side of a second compared unequal, and a test that compared them failed under load."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_an_icc_profile_over_1_mb_is_dropped_with_one_warning_in_every_format(tmp_path: Path, model_path: Path) -> None:
    """Before: PIL refused the whole PNG (8-bit, and 16-bit grey, which PIL reads), as its profile inflates
    past PngImagePlugin.MAX_TEXT_CHUNK; JPEG and TIFF kept the 1.1 MB profile and wrote it out, without a word."""
    big = srgb_profile() + bytes(1_100_000)  # a sound header, padded
    size = f"{len(big):,} bytes"
    rgb = RNG.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    deep = rgb.astype(np.uint16) * 257
    Image.fromarray(rgb).save(tmp_path / "big.png", icc_profile=big)
    Image.fromarray(deep[..., 0]).save(tmp_path / "grey16.png", icc_profile=big)  # I;16: PIL reads it
    write_png16(tmp_path / "big16.png", deep, icc_profile=big)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", icc_profile=big)
    Image.fromarray(rgb).save(tmp_path / "big.tif", icc_profile=big)
    tifffile.imwrite(tmp_path / "big16.tif", deep, photometric="rgb", extratags=[(34675, 7, len(big), big, True)])
    # 80 MB of zeros in 80 kB: PIL refuses it like the profile above; it is never inflated whole
    bomb = zlib.compress(bytes(80 << 20), 9)
    plain = tmp_path / "plain.png"
    Image.fromarray(rgb).save(plain)
    (tmp_path / "bomb.png").write_bytes(with_chunks(plain.read_bytes(), icc_chunk(bomb)))
    sizes = {name: size for name in ("big.png", "grey16.png", "big16.png", "big.jpg", "big.tif", "big16.tif")}
    sizes["bomb.png"] = "more than 64 MB (a decompression bomb?)"
    outcome, peak = peak_bytes_of(read_raw_image, tmp_path / "bomb.png")
    assert not isinstance(outcome, Exception) and outcome.icc_profile is None, outcome
    assert np.array_equal(outcome.array, rgb) and peak < 8 << 20, f"{peak:,} bytes allocated"
    out = tmp_path / "out"
    child = srfeat_cli("upscale", *(tmp_path / name for name in sizes), "-o", out, "--model", model_path)
    lines = stderr_lines(child)
    assert child.returncode == 0, child.stderr
    for name, said in sizes.items():
        warned = [line for line in lines if line.startswith("WARNING:") and name in line]
        assert len(warned) == 1 and "ICC profile" in warned[0] and said in warned[0], (name, child.stderr)
        assert "dropped" in warned[0], warned[0]
        written = read_raw_image(out / name)
        assert written.array.shape[:2] == (128, 160) and written.icc_profile is None, name
        with Image.open(out / name) as image:
            assert "icc_profile" not in image.info or not image.info["icc_profile"], name
    assert len([line for line in lines if line.startswith("WARNING:")]) == len(sizes), child.stderr


def test_a_png_reopened_without_its_oversized_profile_still_refuses_truncated_pixels(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(RNG.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(
        path, icc_profile=srgb_profile() + bytes(1_100_000)
    )
    path.write_bytes(path.read_bytes()[:-200])  # into the pixel data
    with pytest.raises(ImageReadError, match="truncated"):
        read_raw_image(path)


def test_a_damaged_icc_profile_is_dropped_with_one_plain_sentence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "describes b'\\x01\\x01\\x01\\x01' colours" or "describes no colour space colours"."""
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    header = bytearray(srgb_profile())
    header[16:20] = b"\x01" * 4
    cases: dict[str, tuple[bytes | None, str]] = {
        "short.jpg": (b"\x01" * 4, "4 bytes, shorter than the 128-byte ICC header"),
        "no_signature.png": (b"\x01" * 300, "its header lacks the 'acsp' signature of an ICC profile"),
        "no_space.tif": (bytes(header), "its header names no colour space (bytes 16-19 are 01 01 01 01)"),
    }
    plain = tmp_path / "plain.png"
    Image.fromarray(rgb).save(plain)
    # PIL dropped this one without a word
    (tmp_path / "corrupt.png").write_bytes(with_chunks(plain.read_bytes(), icc_chunk(b"garbage garbage garbage")))
    cases["corrupt.png"] = (None, "its iCCP chunk does not inflate")
    for name, (profile, reason) in cases.items():
        if profile is not None:
            Image.fromarray(rgb).save(tmp_path / name, icc_profile=profile)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert read_raw_image(tmp_path / name).icc_profile is None
        assert [record.getMessage() for record in caplog.records] == [
            f"{tmp_path / name}: its ICC profile is damaged ({reason}); it is dropped and the pixels are read as sRGB"
        ]


@pytest.mark.parametrize(("mode", "key", "out"), [("RGB", (1, 2, 3), "RGBA"), ("L", 7, "LA")])
def test_a_png_colour_key_keeps_its_transparency(
    tmp_path: Path, mode: str, key: int | tuple[int, int, int], out: str
) -> None:
    """A tRNS colour key (one RGB colour, or one grey level, that is see-through) was dropped: the
    transparent pixels came back opaque."""
    image = Image.new(mode, (4, 4), (10, 20, 30) if mode == "RGB" else 50)
    image.putpixel((0, 0), key)
    image.save(tmp_path / "keyed.png", transparency=key)
    array = read_raw_image(tmp_path / "keyed.png").array
    assert array.shape == (4, 4, len(out)) and array[0, 0, -1] == 0 and (array[1:, 1:, -1] == 255).all()


def test_a_benchmark_folder_names_an_oversized_profile_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Reading the size from the header warned, and reading the image warned again."""
    from srfeat.data.benchmark import BenchmarkDataset

    big = srgb_profile() + bytes(1_100_000)
    Image.fromarray(RNG.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / "big.png", icc_profile=big)
    with caplog.at_level(logging.WARNING):
        dataset = BenchmarkDataset(tmp_path)
    assert len(dataset) == 1
    warning = f"{tmp_path / 'big.png'}: its ICC profile is {len(big):,} bytes, over srfeat's 1 MB limit"
    assert sum(record.getMessage().startswith(warning) for record in caplog.records) == 1, caplog.text


def test_a_read_error_carries_what_went_wrong_and_the_advice_apart(tmp_path: Path) -> None:
    """`ImageReadError` keeps the problem and the advice apart (the web page says its own advice from them);
    its message, the command line's, is the two joined as before, and survives a process pool's pickling."""
    import pickle

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (9, 99, 199)).save(buffer, format="PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(buffer.getvalue()[:-30])  # the pixels stop short
    with pytest.raises(ImageReadError) as caught:
        read_raw_image(cut)
    error = caught.value
    assert error.problem.startswith(f"cannot read image {cut}: ") and "skip or replace" not in error.problem
    assert error.advice == ImageReadError.SKIP_OR_REPLACE == "skip or replace this file"
    assert str(error) == f"{error.problem}; skip or replace this file"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.problem, copy.advice) == (str(error), error.problem, error.advice)
    with pytest.raises(ImageReadError) as caught:
        read_raw_image(tmp_path / "absent.png")
    assert (str(caught.value), caught.value.advice) == (f"image not found: {tmp_path / 'absent.png'}", "")
