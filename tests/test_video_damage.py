"""Damaged videos: frames lost without an error from FFmpeg are named, a failure past the frames asked for
does not fail them, a file that cannot be read says from where, and a frame size FFmpeg refuses in an AVI or
Matroska header is named; clean files (B-frames, variable frame rates, other codecs) are not called damaged."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from srfeat.errors import VideoError
from srfeat.inference import Upscaler
from srfeat.video import VideoOptions

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video.pipeline import upscale_video  # noqa: E402 - needs PyAV, checked above
from tests.video_helpers import write_encoded  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "srfeat.cli", "upscale", *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


def lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"{level}:")]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def avi_of_size(path: Path, width: int, height: int, codec: str = "rawvideo") -> Path:
    """A 16x12 AVI whose headers (the main one and the stream's) are made to state `width`x`height`."""
    write_encoded(path, codec=codec, frames=2, size=(16, 12), container_format="avi")
    data = bytearray(path.read_bytes())
    main, stream = data.find(b"avih"), data.find(b"strf")
    data[main + 40 : main + 48] = struct.pack("<ii", width, height)
    data[stream + 12 : stream + 20] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(data))
    return path


def matroska_of_size(path: Path, width: int, height: int) -> Path:
    """A 256x256 raw Matroska clip whose track header is made to state `width`x`height` (two bytes each)."""
    write_encoded(path, codec="rawvideo", frames=1, size=(256, 256), container_format="matroska")
    data = path.read_bytes()
    for element in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight
        old = element + b"\x82\x01\x00"
        assert data.count(old) == 1
        data = data.replace(old, element + b"\x82" + struct.pack(">H", width if element == b"\xb0" else height))
    path.write_bytes(data)
    return path


def test_a_frame_size_ffmpeg_refuses_in_an_avi_or_matroska_header_is_named(tmp_path: Path, model_path: Path) -> None:
    """FFmpeg refuses such a size and reads it as 0x0 (AVI) or fails to open the file with "Invalid data"
    (Matroska): "the video stream has no frame size" came after the model loaded, and "cannot read video ...:
    Invalid data found when processing input", neither naming the size or a hostile header."""
    huge = avi_of_size(tmp_path / "huge.avi", 20000, 20000)
    huge_ffv1 = avi_of_size(tmp_path / "huge_ffv1.avi", 20000, 20000, codec="ffv1")
    thin = avi_of_size(tmp_path / "thin.avi", 1, 2100000)
    huge_mkv = matroska_of_size(tmp_path / "huge_track.mkv", 20000, 20000)
    zero_mkv = matroska_of_size(tmp_path / "zero_track.mkv", 0, 256)
    result = cli(huge, huge_ffv1, thin, huge_mkv, zero_mkv, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = lines(result, "ERROR")
    for source in (huge, huge_ffv1, huge_mkv):
        assert f"ERROR: {source}: its frames are 20000x20000 pixels, more than " in "\n".join(errors), errors
    for source, size in ((thin, "1x2100000"), (zero_mkv, "0x256")):
        assert (
            f"ERROR: {source}: its header says {size} pixels a frame, a size FFmpeg cannot read (a damaged header?); "
            "skip or replace this file"
        ) in errors, errors
    assert "Loading" not in result.stderr and "Upscaler(" not in result.stderr  # refused before the model loads
    with pytest.raises(VideoError, match="its frames are 20000x20000 pixels"):
        upscale_video(huge, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.mkv").exists()


def test_an_avi_header_of_no_frame_size_says_what_to_do(tmp_path: Path, model_path: Path) -> None:
    """ "the video stream has no frame size; the file is damaged" said nothing of what to do."""
    zero = avi_of_size(tmp_path / "zero.avi", 0, 0)
    result = cli(zero, "-o", tmp_path / "out.mkv", "--model", model_path)
    assert lines(result, "ERROR")[0] == (
        f"ERROR: {zero}: its video stream states no frame size and no frame of it decodes; the file is damaged: "
        "skip or replace this file"
    ), result.stderr
