"""A WebP upload of its whole length that its decoder refuses is said to be damaged, with advice for a damaged file
(save it again, or upload another copy): "upload the whole file" is for one cut short, which keeps it. An AVIF
upload cut short says how much of it arrived, as the command line says of the file."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
from PIL import Image, features

from srfeat.data.io import read_raw_image
from srfeat.errors import ImageReadError
from srfeat.inference import Upscaler
from srfeat.web.job import Job, Limits, ModelChoice, UploadError, inspect_upload
from srfeat.web.worker import PageError, upscale_job

LIMITS = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
DAMAGED_ADVICE = "save it again from the program that made it, or upload another copy"


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "WEBP", quality=80
    )
    return buffer.getvalue()


def _damaged_webp() -> bytes:
    damaged = bytearray(_webp())
    damaged[20:60] = bytes(40)  # the VP8 frame's header, after the RIFF and chunk headers
    return bytes(damaged)


def test_a_damaged_webp_upload_is_refused_with_advice_for_a_damaged_file() -> None:
    """It was told "upload the whole file", which it was."""
    with pytest.raises(UploadError) as refused:
        inspect_upload(_damaged_webp(), "photo.webp", LIMITS)
    assert refused.value.status == 422
    assert str(refused.value) == f"photo.webp: the WebP file is damaged (its decoder cannot read it); {DAMAGED_ADVICE}"


def test_a_webp_upload_cut_short_is_still_told_to_upload_the_whole_file() -> None:
    whole = _webp()
    with pytest.raises(UploadError) as refused:
        inspect_upload(whole[: len(whole) // 2], "photo.webp", LIMITS)
    assert str(refused.value) == (
        f"photo.webp: the WebP file is cut short ({len(whole) // 2:,} of the {len(whole):,} bytes its header gives); "
        "upload the whole file"
    )


def test_a_damaged_webp_job_says_the_same_on_its_card(model_path: Path) -> None:
    """A job whose upload was not inspected (read by the worker alone): its card said "upload another file, or this
    one again if it was cut short", for a file that was whole."""
    job = Job("j", "s", "photo.webp", _damaged_webp(), ModelChoice(), width=64, height=64)
    with pytest.raises(PageError) as failed:
        upscale_job(Upscaler(model_path, device="cpu", tile=0), job)
    assert str(failed.value) == (
        f"cannot read image photo.webp: the WebP file is damaged (its decoder cannot read it); {DAMAGED_ADVICE}"
    )


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
@pytest.mark.parametrize("kept", [20, 100, 400])
def test_an_avif_upload_cut_short_says_how_much_arrived_as_the_command_line_does(tmp_path: Path, kept: int) -> None:
    """It said "starts as an AVIF file but cannot be read: it is damaged or cut short (100 bytes)", where the
    command line says of the same bytes how many of how many its boxes give arrived."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "AVIF")
    whole = buffer.getvalue()
    box_ends = [0]  # where each top-level box (ftyp, meta, mdat) ends, by the size its header gives
    while box_ends[-1] < len(whole):
        box_ends.append(box_ends[-1] + struct.unpack(">I", whole[box_ends[-1] : box_ends[-1] + 4])[0])
    stated = next(end for end in box_ends if end > kept)  # the end of the box the upload ends inside
    with pytest.raises(UploadError) as refused:
        inspect_upload(whole[:kept], "photo.avif", LIMITS)
    problem = f"the AVIF file is cut short ({kept:,} of the {stated:,} bytes its boxes give)"
    assert refused.value.status == 422
    assert str(refused.value) == f"photo.avif: {problem}; upload the whole file"
    (tmp_path / "photo.avif").write_bytes(whole[:kept])
    with pytest.raises(ImageReadError) as read:
        read_raw_image(tmp_path / "photo.avif")
    assert read.value.problem == f"cannot read image {tmp_path / 'photo.avif'}: {problem}"
