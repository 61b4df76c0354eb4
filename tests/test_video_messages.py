"""What a video's refusals and warnings tell the two kinds of caller: `srfeat upscale` its flags, Python
`upscale_video` its keywords; and hints that point somewhere (no empty frame range, no errno of FFmpeg's)."""

from __future__ import annotations

import os
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
from tests.video_helpers import write_clip  # noqa: E402 - needs PyAV, checked above

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "srfeat.cli", "upscale", *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


def the_error_line(result: subprocess.CompletedProcess[str], source: Path) -> str:
    """A failed run's one error line about `source`, with no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ERROR:") and str(source) in line]
    return line


def test_a_first_frame_that_does_not_decode_suggests_no_empty_frame_range(tmp_path: Path, model_path: Path) -> None:
    """A video whose first frame does not decode was told "--frames 0:0 upscales the 0 frames before it", a range
    the command refuses (and one that would leave nothing); no range helps there, as frames decode from the start."""
    whole = tmp_path / "whole.mp4"
    write_clip(whole, frames=6, audio=False)
    with av.open(str(whole)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
    broken = bytearray(whole.read_bytes())
    broken[first.pos : first.pos + first.size] = bytes([0, 255]) * (first.size // 2) + bytes(first.size % 2)
    source = tmp_path / "broken.mp4"
    source.write_bytes(bytes(broken))
    hint = "(no frame decoded before it, and every frame range is decoded from the start: skip or replace this file)"
    with pytest.raises(VideoError) as refused:
        upscale_video(source, tmp_path / "out" / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    message = str(refused.value)
    assert "cannot be decoded" in message and message.endswith(f"the file is damaged {hint}"), message
    line = the_error_line(cli(source, "-o", tmp_path / "out" / "out.mkv", "--model", model_path), source)
    assert line.endswith(f"the file is damaged {hint}") and "--frames 0:0" not in line, line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
