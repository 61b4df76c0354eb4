"""The format of `srfeat serve`'s results: the upload's own, as `srfeat upscale` writes it, unless that
format would drop the upload's transparency or 16 bits (a PNG named `.jpg`): the result is then a PNG, named so;
or its float pixels (a float grey TIFF named `.jpg`): a TIFF then. Both are decided by what was read, as is what
its card says was kept."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from PIL import Image
from test_web import Server, call, cli_upscale, start_server, stop_server, upload, wait_for_result

from srfeat.data.io import RawImage, read_raw_image, write_image
from srfeat.inference import Upscaler
from srfeat.inference.image_files import upscale_file
from srfeat.web.job import Job, Limits, ModelChoice, inspect_upload
from srfeat.web.result_format import decoded_result_format
from srfeat.web.worker import upscale_job

LIMITS = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
PIXELS = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server()
    yield started
    stop_server(started)


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _keyed(mode: str) -> Image.Image:
    """An image of `mode` whose colour (or index, or grey level) 0 is see-through (a PNG tRNS chunk)."""
    image = Image.fromarray(PIXELS[..., 0]).convert(mode)
    image.info["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    return image


@pytest.mark.parametrize(
    ("name", "image", "image_format", "expected"),
    [
        ("logo.jpg", Image.fromarray(PIXELS, "RGBA"), "PNG", ".png"),
        ("logo.JPEG", Image.fromarray(PIXELS[..., 2:], "LA"), "PNG", ".png"),
        ("logo.jfif", Image.fromarray(PIXELS, "RGBA"), "WEBP", ".png"),
        ("logo.bmp", Image.fromarray(PIXELS, "RGBA"), "PNG", ".png"),
        ("keyed.jpg", _keyed("P"), "PNG", ".png"),
        ("keyed.jpg", _keyed("RGB"), "PNG", ".png"),
        ("keyed.jpg", _keyed("L"), "PNG", ".png"),
        ("keyed.jpg", _keyed("I;16"), "PNG", ".png"),
        # formats that hold the alpha keep the upload's; an opaque image keeps its JPEG name
        ("logo.webp", Image.fromarray(PIXELS, "RGBA"), "PNG", ".webp"),
        ("logo.tif", Image.fromarray(PIXELS, "RGBA"), "PNG", ".tif"),
        ("opaque.jpg", Image.fromarray(PIXELS[..., :3]), "PNG", ".jpg"),
        ("opaque.bmp", Image.fromarray(PIXELS[..., 0]), "PNG", ".bmp"),
        ("moving.gif", Image.fromarray(PIXELS, "RGBA"), "PNG", ".png"),  # GIF is not written: PNG, as before
    ],
)
def test_an_upload_whose_transparency_its_format_cannot_hold_gets_a_png_result(
    name: str, image: Image.Image, image_format: str, expected: str
) -> None:
    """A transparent image named `.jpg` or `.bmp` had its result written as JPEG or BMP, the alpha dropped."""
    assert inspect_upload(encoded(image, image_format), name, LIMITS).result_extension == expected


DEEP = np.random.default_rng(1).integers(0, 65536, (12, 10, 4), dtype=np.uint16)


@pytest.mark.parametrize(
    ("name", "written_as", "pixels", "expected"),
    [
        ("deep.jpg", ".png", DEEP[..., :3], (".png", ("16 bits per channel",))),
        ("deep.webp", ".png", DEEP[..., 0], (".png", ("16 bits per channel",))),  # PIL opens it as I;16
        ("deep.bmp", ".tif", DEEP[..., :3], (".png", ("16 bits per channel",))),  # PIL opens it as 8-bit RGB
        ("deep.jpeg", ".png", DEEP, (".png", ("an alpha channel (transparency)", "16 bits per channel"))),
        ("deep.webp", ".png", DEEP, (".png", ("16 bits per channel",))),  # WebP holds the alpha, not the 16 bits
        ("deep.tif", ".png", DEEP[..., :3], (".tif", ())),  # TIFF holds 16 bits: its own format
        ("deep.png", ".tif", DEEP[..., 0], (".png", ())),
        ("shallow.jpg", ".png", (DEEP[..., :3] >> 8).astype(np.uint8), (".jpg", ())),
        ("shallow.bmp", ".tif", (DEEP[..., :3] >> 8).astype(np.uint8), (".bmp", ())),
    ],
)
def test_a_16_bit_upload_whose_format_cannot_hold_16_bits_gets_a_png_result(
    name: str, written_as: str, pixels: np.ndarray, expected: tuple[str, tuple[str, ...]], tmp_path: Path
) -> None:
    """A 16-bit PNG or TIFF named `.jpg`, `.webp` or `.bmp` had its result written with 8 bits, its card saying to
    rename the file and upload it again, or to run `srfeat upscale --ext png`."""
    write_image(tmp_path / f"image{written_as}", pixels)
    found = inspect_upload((tmp_path / f"image{written_as}").read_bytes(), name, LIMITS)
    assert (found.result_extension, found.result_keeps) == expected


def test_a_16_bit_png_named_jpg_is_upscaled_to_a_16_bit_png(server: Server, tmp_path: Path) -> None:
    """The download is what `srfeat upscale --ext png` writes for it, all 16 bits, and its card says so in words."""
    write_image(tmp_path / "deep.png", DEEP[..., :3])
    data = (tmp_path / "deep.png").read_bytes()
    session = "deep"
    try:
        job, downloaded, headers = _result_of(server, session, "deep.jpg", data)
        _assert_written_as_png(job, headers, "deep_x4.png", "deep.jpg has 16 bits per channel", "to keep all 16")
        assert downloaded == cli_upscale(tmp_path / "deep.png", tmp_path / "cli")
        assert downloaded[24] == 16  # the IHDR's bit depth
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_a_jobs_result_format_follows_the_pixels_as_read_where_its_header_was_not_asked(
    model_path: Path, tmp_path: Path
) -> None:
    """A job whose upload was not inspected (its result format left to its name) had its 16 bits cut to a JPEG, its
    card saying so: the format is chosen once the upload is read, from what was read."""
    write_image(tmp_path / "deep.png", DEEP[..., :3])
    job = Job("j", "s", "deep.jpg", (tmp_path / "deep.png").read_bytes(), ModelChoice(), width=10, height=12)
    result, _, _, notes = upscale_job(Upscaler(model_path, device="cpu", tile=0), job)
    assert (job.result_name, result[:8], result[24]) == ("deep_x4.png", b"\x89PNG\r\n\x1a\n", 16)  # 16-bit PNG
    kept = "deep.jpg has 16 bits per channel, which JPEG cannot hold: the result is written as PNG (deep_x4.png)"
    assert notes == [f"{kept} to keep all 16"]


def _result_of(server: Server, session: str, name: str, data: bytes, *query: str) -> tuple[dict, bytes, dict]:
    """(the job as its page sees it, the downloaded result, the download's headers)."""
    job = json.loads(upload(server, session, name, data, *query).body)
    downloaded = wait_for_result(server, session, job["id"], "download=1")
    assert downloaded.status == 200, downloaded.body
    described = {
        each["id"]: each for each in json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
    }
    return described[job["id"]], downloaded.body, downloaded.headers


def _assert_written_as_png(job: dict, headers: dict, result_name: str, what: str, keep: str) -> None:
    """The job's result is `result_name`, a PNG, and its card says that the upload has `what`, which JPEG cannot hold,
    and what the PNG keeps (`keep`: "to keep it")."""
    assert job["result_name"] == result_name
    assert job["notes"] == [f"{what}, which JPEG cannot hold: the result is written as PNG ({result_name}) {keep}"]
    assert headers["content-type"] == "image/png"
    assert f"filename*=UTF-8''{result_name}" in headers["content-disposition"]


def test_a_transparent_png_named_jpg_is_upscaled_to_a_png_that_keeps_it(server: Server, tmp_path: Path) -> None:
    """The result was a JPEG, its card saying "the alpha is dropped (use .png or .webp to keep it)": advice
    for the command line, which on the page meant renaming the file and uploading it again."""
    data = encoded(Image.fromarray(PIXELS, "RGBA"), "PNG")
    session = "alpha"
    # Held open throughout: the `srfeat upscale` run below asks nothing of the server, and on a loaded
    # machine it took longer than the session's 10 s of allowed silence, which ended it before `/again`.
    events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events", timeout=120)
    try:
        job, downloaded, headers = _result_of(server, session, "logo.jpg", data)
        _assert_written_as_png(
            job, headers, "logo_x4.png", "logo.jpg has an alpha channel (transparency)", "to keep it"
        )
        # the file `srfeat upscale` writes for the same image named .png: alpha and all
        (tmp_path / "logo.png").write_bytes(data)
        assert downloaded == cli_upscale(tmp_path / "logo.png", tmp_path / "cli")
        assert Image.open(io.BytesIO(downloaded)).mode == "RGBA"
        # again with another setting: a PNG too, and the zip names both so
        path = f"/api/jobs/{job['id']}/again?session={session}&model=gan"
        again = json.loads(call(server, "POST", path, X_SRFeat_Upload="1").body)
        assert wait_for_result(server, session, again["id"]).status == 200
        archive = zipfile.ZipFile(io.BytesIO(call(server, "GET", f"/api/sessions/{session}/results.zip").body))
        assert sorted(archive.namelist()) == ["logo_x4.png", "logo_x4_gan.png"]
        assert all(archive.read(entry).startswith(b"\x89PNG") for entry in archive.namelist())
        # an opaque image named .jpg is still a JPEG, with nothing to say
        job, downloaded, headers = _result_of(
            server, session, "plain.jpg", encoded(Image.fromarray(PIXELS[..., :3]), "PNG")
        )
        assert (job["result_name"], job["notes"], headers["content-type"]) == ("plain_x4.jpg", [], "image/jpeg")
        assert Image.open(io.BytesIO(downloaded)).format == "JPEG"
    finally:
        events.close()
        call(server, "POST", f"/api/sessions/{session}/close")


def test_a_jpeg_named_png_is_upscaled_to_the_png_its_name_says(server: Server) -> None:
    """The result is written as the name says, as `srfeat upscale` writes it: a PNG named .png (a JPEG's
    content under that name would be a file that its name and its media type misdescribe)."""
    data = encoded(Image.fromarray(PIXELS[..., :3]), "JPEG", quality=90)
    session = "renamed"
    try:
        job, downloaded, headers = _result_of(server, session, "photo.png", data)
        assert (job["result_name"], job["notes"], headers["content-type"]) == ("photo_x4.png", [], "image/png")
        assert Image.open(io.BytesIO(downloaded)).format == "PNG"
        original = call(server, "GET", f"/api/jobs/{job['id']}/original?session={session}")
        assert original.status == 200 and Image.open(io.BytesIO(original.body)).size == (10, 12)
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


FLOAT_GREY = np.random.default_rng(2).random((12, 10)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float.jpg", (".tif", ("32-bit float pixels",))),
        ("float.png", (".tif", ("32-bit float pixels",))),  # a PNG keeps 16 bits of them, not the floats
        ("float.webp", (".tif", ("32-bit float pixels",))),
        ("float.gif", (".tif", ("32-bit float pixels",))),  # GIF is not written: its PNG would have 16 bits
        ("float.tiff", (".tiff", ())),  # its own format keeps them
    ],
)
def test_a_float_tiff_named_for_another_format_gets_a_tiff_result(
    name: str, expected: tuple[str, tuple[str, ...]], tmp_path: Path
) -> None:
    """A 32-bit float grey TIFF named `.jpg` had its result written as an 8-bit JPEG (a 16-bit PNG named `.png`),
    its card saying "float pixels are kept only in a gray TIFF": advice for the command line."""
    write_image(tmp_path / "float.tif", FLOAT_GREY)
    found = inspect_upload((tmp_path / "float.tif").read_bytes(), name, LIMITS)
    assert (found.result_extension, found.result_keeps) == expected


def _inspected_job(name: str, data: bytes) -> Job:
    """A job of the upload `data` named `name`, with the result format `inspect_upload` finds for it."""
    found = inspect_upload(data, name, LIMITS)
    job = Job("j", "s", name, data, ModelChoice(), width=found.width, height=found.height)
    job.result_extension, job.result_keeps = found.result_extension, found.result_keeps
    return job


def test_a_float_tiff_named_jpg_is_upscaled_to_the_float_tiff_srfeat_upscale_writes(
    model_path: Path, tmp_path: Path
) -> None:
    """The download is what `srfeat upscale` writes for the same file named `.tif`: float pixels, and a card
    that says why it is a TIFF."""
    write_image(tmp_path / "float.tif", FLOAT_GREY)
    upscaler = Upscaler(model_path, device="cpu", tile=0)
    job = _inspected_job("float.jpg", (tmp_path / "float.tif").read_bytes())
    result, _, _, notes = upscale_job(upscaler, job)
    assert job.result_name == "float_x4.tif"
    assert notes == [
        (
            "float.jpg has 32-bit float pixels, which JPEG cannot hold: the result is written as TIFF "
            "(float_x4.tif) to keep them"
        )
    ]
    assert Image.open(io.BytesIO(result)).mode == "F"
    upscale_file(upscaler, tmp_path / "float.tif", tmp_path / "cli.tif")
    assert result == (tmp_path / "cli.tif").read_bytes()


def _lzw_literals(data: bytes) -> bytes:
    """`data` as TIFF LZW of literal codes alone, a Clear code every 250 so that every code stays 9 bits wide:
    what a reader of LZW decodes, written without the imagecodecs package."""
    codes: list[int] = []
    for start in range(0, len(data), 250):
        codes += [256, *data[start : start + 250]]
    codes.append(257)  # End of Information
    bits = "".join(format(code, "09b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def lzw_tiff16(pixels: np.ndarray, path: Path) -> bytes:
    """A 16-bit colour TIFF of `pixels` in one LZW strip, which tifffile reads only with imagecodecs."""
    tifffile.imwrite(path, pixels, photometric="rgb", rowsperstrip=pixels.shape[0])
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages.first.tags
        places = {code: (tags[code].valueoffset, tags[code].dtype) for code in (259, 273, 279)}
    packed = _lzw_literals(pixels.tobytes())
    for code, value in ((259, 5), (273, len(data)), (279, len(packed))):  # Compression LZW, the strip appended
        offset, kind = places[code]
        struct.pack_into("<I" if kind == tifffile.DATATYPE.LONG else "<H", data, offset, value)
    return bytes(data) + packed


@pytest.mark.skipif(importlib.util.find_spec("imagecodecs") is not None, reason="imagecodecs reads all 16 bits")
@pytest.mark.parametrize("name", ["lzw.jpg", "lzw.tif", "lzw.webp"])
def test_a_16_bit_tiff_read_with_8_bits_keeps_its_own_format(name: str, model_path: Path, tmp_path: Path) -> None:
    """Its header says 16 bits, so a `.jpg` one got a PNG "to keep all 16" that had 8 (its pixels were read with 8
    bits), and its card said so, then to pip install imagecodecs, which a page's user cannot do on the server. Its
    result is now in its own format, the file `srfeat upscale` writes for it, and its card says what was read."""
    data = lzw_tiff16(DEEP[..., :3], tmp_path / "plain.tif")
    job = _inspected_job(name, data)
    assert job.result_extension == (".png" if name != "lzw.tif" else ".tif")  # its header's 16 bits, at the upload
    upscaler = Upscaler(model_path, device="cpu", tile=0)
    result, _, _, said = upscale_job(upscaler, job)
    result_name = name.replace(".", "_x4.")
    assert (job.result_name, job.result_keeps) == (result_name, ())  # "again" takes them from the job
    assert said == [
        (
            f"{name} is a 16-bit colour TIFF compressed with LZW, which this server reads with 8 bits per channel "
            f"(it lacks the imagecodecs package): the download ({result_name}) has 8"
        )
    ]
    (tmp_path / name).write_bytes(data)
    upscale_file(upscaler, tmp_path / name, tmp_path / f"cli{Path(name).suffix}")
    assert result == (tmp_path / f"cli{Path(name).suffix}").read_bytes()
    assert Image.open(io.BytesIO(result)).mode == "RGB"  # 8 bits, as said


@pytest.mark.skipif(importlib.util.find_spec("imagecodecs") is not None, reason="imagecodecs reads all 16 bits")
def test_a_16_bit_tiff_read_with_8_bits_too_wide_for_its_own_format_stays_a_png(tmp_path: Path) -> None:
    """Its own format, WebP, cannot hold its 4x result (16400 pixels wide, over 16383): the upload was let in for the
    PNG its header called for, and a PNG it stays, said to keep nothing (it has 8 bits)."""
    pixels = np.random.default_rng(3).integers(0, 65536, (1, 4100, 3), dtype=np.uint16)
    (tmp_path / "wide.webp").write_bytes(lzw_tiff16(pixels, tmp_path / "plain.tif"))
    chosen = inspect_upload((tmp_path / "wide.webp").read_bytes(), "wide.webp", LIMITS)[2:]
    assert chosen == (".png", ("16 bits per channel",))
    assert decoded_result_format("wide.webp", read_raw_image(tmp_path / "wide.webp"), 4, chosen) == (".png", ())
    narrow = read_raw_image(tmp_path / "wide.webp")  # the same pixels at a width WebP holds: its own format
    narrow = RawImage(narrow.array[:, :100], narrow.mode)
    assert decoded_result_format("wide.webp", narrow, 4, chosen) == (".webp", ())
