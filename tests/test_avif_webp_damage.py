"""AVIF and WebP files damaged as a hostile file or a bad copy would be: a header that gives another size than the
data holds. libavif scaled an AVIF's decoded picture to its size property (`ispe`) without a word; libwebp refuses
a WebP's, and these tests keep it so. Each file is made here from a small valid one."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import one_input_error, srfeat_cli
from PIL import Image
from skimage import data as samples
from test_image_reading import address_space_after_import

from srfeat.data.io import read_image
from srfeat.errors import ImageReadError

CROP = samples.astronaut()[100:133, 150:190]  # 33x40: small, and not square
WITH_ALPHA = np.dstack([CROP, np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (33, 1))])


def encoded(pixels: np.ndarray, image_format: str, frames: int = 1, **options: Any) -> bytes:
    """`pixels` saved as `image_format`; with `frames`, an animation of them shifted along."""
    images = [Image.fromarray(np.roll(pixels, 5 * frame, axis=1)) for frame in range(frames)]
    buffer = io.BytesIO()
    extra = {"save_all": True, "append_images": images[1:], "duration": 100} if frames > 1 else {}
    images[0].save(buffer, format=image_format, **extra, **options)
    return buffer.getvalue()


def with_ispe(avif: bytes, width: int, height: int) -> bytes:
    """`avif` with its (first) size property, `ispe`, made `width` x `height`; its AV1 data as it was."""
    whole = bytearray(avif)
    at = whole.index(b"ispe") + 8  # past its type, version and flags
    assert struct.unpack(">II", whole[at : at + 8]) == (40, 33)
    whole[at : at + 8] = struct.pack(">II", width, height)
    return bytes(whole)


def test_an_avif_whose_size_property_gives_more_rows_than_its_data_holds_is_refused(
    tmp_path: Path, model_path: Path
) -> None:
    """Its `ispe` made 40x80 of 40x33: libavif stretched the decoded picture to 80 rows, which were upscaled
    without a word."""
    (tmp_path / "tall.avif").write_bytes(with_ispe(encoded(CROP, "AVIF"), 40, 80))
    child = srfeat_cli("upscale", "tall.avif", "-o", "out.png", "--model", model_path, cwd=tmp_path)
    assert one_input_error(child) == (
        "ERROR: cannot read image tall.avif: its data ends before the 80 rows its header gives (damaged?); "
        "skip or replace this file"
    )
    assert not (tmp_path / "out.png").exists()


def test_an_avif_whose_size_property_gives_176_million_pixels_is_refused_before_they_are_set_aside(
    tmp_path: Path, model_path: Path
) -> None:
    """16000x11000 pixels, just under PIL's limit: 528 MB of RGB (and libavif's scaled planes) were set aside and
    filled with the 40x33 picture stretched, for a file of under 1 KB; under this limit libavif said "Decoding of
    color planes failed"."""
    (tmp_path / "huge.avif").write_bytes(with_ispe(encoded(CROP, "AVIF"), 16000, 11000))
    limit = address_space_after_import() + 2**28  # what the upscale needs, and 256 MiB: not the 528 MB claimed
    child = srfeat_cli("upscale", "huge.avif", "-o", "out.png", "--model", model_path, cwd=tmp_path, memory_limit=limit)
    assert one_input_error(child) == (
        "ERROR: cannot read image huge.avif: its header gives 16000x11000 pixels, but its data holds 40x33 "
        "(damaged?); skip or replace this file"
    )


@pytest.mark.parametrize(("width", "height"), [(80, 33), (20, 16), (40, 20), (41, 33)])
@pytest.mark.parametrize("pixels", [CROP, WITH_ALPHA], ids=["rgb", "rgba"])
def test_an_avif_whose_size_property_is_not_its_datas_is_refused_by_the_api(
    tmp_path: Path, width: int, height: int, pixels: np.ndarray
) -> None:
    """Wider, smaller or a column off, the picture was read scaled to the property's size (a copy shrunk to
    20x16, one a column wider with every pixel shifted). With alpha, libavif gives both planes one `ispe`."""
    path = tmp_path / "damaged.avif"
    path.write_bytes(with_ispe(encoded(pixels, "AVIF"), width, height))
    with pytest.raises(ImageReadError) as raised:
        read_image(path)
    assert str(raised.value) == (
        f"cannot read image {path}: its header gives {width}x{height} pixels, but its data holds 40x33 (damaged?); "
        "skip or replace this file"
    )


VALID_AVIFS = {
    "quality-0": (CROP, {"quality": 0}),
    "quality-100": (CROP, {"quality": 100}),
    "4:4:4": (CROP, {"subsampling": "4:4:4"}),
    "4:0:0": (CROP, {"subsampling": "4:0:0"}),
    "alpha": (WITH_ALPHA, {}),
    "grey": (CROP[..., 0], {}),
    "1x1": (CROP[:1, :1], {}),
    "odd-17x255": (samples.astronaut()[:17, :255], {"speed": 10}),
}


@pytest.mark.parametrize(("pixels", "options"), VALID_AVIFS.values(), ids=VALID_AVIFS.keys())
def test_valid_avifs_are_still_read_as_pil_decodes_them(
    tmp_path: Path, pixels: np.ndarray, options: dict[str, Any]
) -> None:
    """(Passes on the old code too: it guards the refusal above from taking in good files, whose AV1 sequence
    header it reads.)"""
    path = tmp_path / "good.avif"
    path.write_bytes(encoded(pixels, "AVIF", **options))
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_an_animated_avif_whose_still_items_size_property_is_damaged_is_read_from_its_track(tmp_path: Path) -> None:
    """libavif decodes an animated AVIF's frames from its track, not from the still image (the item) it carries
    for readers of stills: a wrong `ispe` there changes nothing read, and is not refused. (Passes on the old code
    too: it guards the refusal from taking in files it need not.)"""
    good = encoded(CROP, "AVIF", frames=3)
    path = tmp_path / "animated.avif"
    path.write_bytes(with_ispe(good, 40, 80))
    with Image.open(io.BytesIO(good)) as image:
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def riff_chunk(webp: bytes, kind: bytes) -> int:
    """Where the data of the first chunk of `kind` of the WebP `webp` starts."""
    return webp.index(kind, 12) + 8


def with_webp_size(webp: bytes, width: int, height: int) -> bytes:
    """`webp` with the size its first image header gives made `width` x `height`: a VP8 frame header, a VP8L
    header, or (for one with alpha) the VP8X canvas."""
    whole = bytearray(webp)
    if b"VP8X" in whole[12:16]:
        at = riff_chunk(webp, b"VP8X") + 4
        whole[at : at + 6] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif b"VP8L" in whole[12:16]:
        at = riff_chunk(webp, b"VP8L") + 1  # past its signature byte: 14 bits each, less one, then 4 others
        (bits,) = struct.unpack("<I", whole[at : at + 4])
        whole[at : at + 4] = struct.pack("<I", (bits & ~0x0FFFFFFF) | (width - 1) | (height - 1) << 14)
    else:
        at = riff_chunk(webp, b"VP8 ") + 6  # past its frame tag and start code
        whole[at : at + 4] = struct.pack("<HH", width, height)
    return bytes(whole)


WEBP_KINDS = {
    "lossy": (CROP, {"quality": 80}),
    "lossless": (CROP, {"lossless": True}),
    "alpha": (WITH_ALPHA, {"quality": 80}),
}


@pytest.mark.parametrize(("pixels", "options"), WEBP_KINDS.values(), ids=WEBP_KINDS.keys())
@pytest.mark.parametrize(("width", "height"), [(40, 80), (80, 33), (40, 3300)])
def test_a_webp_whose_header_gives_another_size_than_its_data_is_refused_in_one_line(
    tmp_path: Path, pixels: np.ndarray, options: dict[str, Any], width: int, height: int
) -> None:
    """libwebp checks its headers against its data: such a file is refused as damaged, not read as grey rows.
    (Passes on the old code too: it guards that against a change of reader.)"""
    path = tmp_path / "damaged.webp"
    path.write_bytes(with_webp_size(encoded(pixels, "WEBP", **options), width, height))
    with pytest.raises(ImageReadError) as raised:
        read_image(path)
    assert str(raised.value) == (
        f"cannot read image {path}: the WebP file is damaged (its decoder cannot read it); skip this file, or save "
        "it again from the program that made it"
    )


def test_an_animated_webp_whose_canvas_is_larger_than_its_frames_is_read_as_the_format_says(tmp_path: Path) -> None:
    """Frames smaller than the canvas are valid WebP (an animation's frames are placed on it): the rest of the
    canvas is read as it is given, see-through black, not refused. (Passes on the old code too.)"""
    whole = bytearray(encoded(CROP, "WEBP", frames=3, lossless=True))
    at = riff_chunk(bytes(whole), b"VP8X") + 4
    whole[at + 3 : at + 6] = (80 - 1).to_bytes(3, "little")
    path = tmp_path / "canvas.webp"
    path.write_bytes(bytes(whole))
    read = read_image(path)
    assert read.shape == (80, 40, 3)
    np.testing.assert_array_equal(read[:33], CROP)
    assert not read[33:].any()


def with_first_sequence_header_rows(avif: bytes, rows: int) -> bytes:
    """`avif` with the height its first AV1 item's data codes (a reduced still picture sequence header's
    max_frame_height, at the start of its `mdat`) made `rows`."""
    whole = bytearray(avif)
    at = whole.index(b"mdat") + 4
    while whole[at] >> 3 & 15 != 1:  # OBUs of one header byte and one size byte: a temporal delimiter, of 0
        at += 2 + whole[at + 1]
    size = whole[at + 1]  # the sequence header's
    fields, left = int.from_bytes(whole[at + 2 : at + 2 + size], "big"), 8 * size
    assert fields >> (left - 5) & 1  # reduced_still_picture_header: then 5 bits of level, 4 + 4 of field widths
    width_bits, height_bits = (fields >> (left - 14) & 15) + 1, (fields >> (left - 18) & 15) + 1
    shift = left - 18 - width_bits - height_bits
    fields = fields & ~(((1 << height_bits) - 1) << shift) | (rows - 1) << shift
    whole[at + 2 : at + 2 + size] = fields.to_bytes(size, "big")
    return bytes(whole)


def test_an_avif_whose_alpha_data_codes_fewer_rows_than_its_size_property_is_refused(tmp_path: Path) -> None:
    """The alpha plane's AV1 data (the first in the file, as libavif writes it) made to code 20 rows of the 33 its
    `ispe` gives: libavif stretched the alpha to 33 rows and the picture was read with it, without a word."""
    avif = encoded(WITH_ALPHA, "AVIF")
    path = tmp_path / "alpha.avif"
    path.write_bytes(with_first_sequence_header_rows(avif, 20))
    with Image.open(path) as image:  # the damage is to the alpha alone: the colour decodes as it did
        damaged = np.asarray(image)
    with Image.open(io.BytesIO(avif)) as image:
        good = np.asarray(image)
    np.testing.assert_array_equal(damaged[..., :3], good[..., :3])
    assert (damaged[..., 3] != good[..., 3]).any()
    with pytest.raises(ImageReadError) as raised:
        read_image(path)
    assert str(raised.value) == (
        f"cannot read image {path}: its data ends before the 33 rows its header gives (damaged?); "
        "skip or replace this file"
    )
