"""A `--frames` range is timed as the upscale gives its frames: a frame that stops the timing is named as the
upscale names it, and the audio of a range in an AVI past a chunk the demuxer passed over is cut where the range's
frames are shown, not FFmpeg's frame early."""

from __future__ import annotations

import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from tests.video_helpers import cli, frame_times, packets, pan_frames, write_clip  # noqa: E402

FPS = 12
AUDIO_RATE = 8000
AUDIO_PACKET = 160  # samples: 20 ms, a quarter of a frame's time, so a cut a frame off moves it 4 or 5 packets


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR:") and "input(s) failed" not in line]


def test_a_frame_that_stops_the_timing_of_a_range_is_named_as_the_whole_upscale_names_it(
    tmp_path: Path, model_path: Path
) -> None:
    """The range's timing pass said "frame 8 cannot be decoded" of a clip whose frame at 0.83 s (frame 10) is
    damaged: H.264's B-frames hold frames back, so 8 frames had come out, in one decoder thread or in several;
    the same file upscaled whole named the damaged frame's own time. Both now name it by its time."""
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=24, fps=FPS, audio=False)
    with av.open(str(clip)) as container:
        damaged = [packet for packet in container.demux(video=0) if packet.size][10]
        damaged_time = float(damaged.pts * damaged.time_base)
    data = bytearray(clip.read_bytes())
    data[damaged.pos : damaged.pos + damaged.size] = bytes([0, 255]) * (damaged.size // 2) + bytes(damaged.size % 2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    said = {}
    for frames in ("", "0:20", "2:12"):
        options = ("--frames", frames) if frames else ()
        result = cli(broken, "-o", tmp_path / "out.mp4", "--model", model_path, *options)
        lines = error_lines(result)
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        said[frames] = lines[0]
        at = re.search(r"a frame at ([0-9.]+) s cannot be decoded", lines[0])
        assert at is not None and at.group(1) == f"{damaged_time:.2f}", lines[0]
    assert said["0:20"] == said[""]  # the same hint too: the frames before the failure, from the range's start
    assert said["2:12"].endswith("(--frames 2:8 upscales the 6 frames before it)"), said["2:12"]
    assert not (tmp_path / "out.mp4").exists()


def avi_with_sound(path: Path, frames: int) -> None:
    """MPEG-4 video at 12 frames/s and a PCM tone in AVI, the tone's packets a quarter of a frame."""
    with av.open(str(path), "w") as container:
        picture = container.add_stream("mpeg4", rate=FPS)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=AUDIO_RATE)
        sound.layout = "mono"
        samples = AUDIO_RATE * frames // FPS
        wave = (8000 * np.sin(2 * np.pi * 440 * np.arange(samples) / AUDIO_RATE)).astype(np.int16)
        chunks = range(0, samples, AUDIO_PACKET)
        for index, pixels in enumerate(pan_frames(frames)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(picture.encode(frame))
            # the tone's packets of this frame's time, interleaved with it as a camera writes them
            for start in (at for at in chunks if index / FPS <= at / AUDIO_RATE < (index + 1) / FPS):
                chunk = av.AudioFrame.from_ndarray(
                    wave[None, start : start + AUDIO_PACKET], format="s16", layout="mono"
                )
                chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
                container.mux(sound.encode(chunk))
        container.mux(picture.encode(None))
        container.mux(sound.encode(None))


def test_the_audio_of_a_range_past_a_passed_over_avi_chunk_is_cut_where_its_frames_are(
    tmp_path: Path, model_path: Path
) -> None:
    """FFmpeg's AVI demuxer passes over a chunk whose header is damaged and times every later frame a frame early;
    the upscale puts those frames back in their places (the file's index), but the range was timed by FFmpeg's
    times: its audio started and ended a frame early, and its first frame came a frame after the audio's start."""
    clean, damaged = tmp_path / "clean.avi", tmp_path / "damaged.avi"
    avi_with_sound(clean, frames=24)
    with av.open(str(clean)) as container:
        position = [packet.pos for packet in container.demux(video=0) if packet.size][5]
    data = bytearray(clean.read_bytes())
    data[position - 8 : position - 4] = bytes(4)  # chunk 5's "00dc", before its size and data
    damaged.write_bytes(bytes(data))
    first, stop = 8, 14
    output = tmp_path / "range.mkv"
    result = cli(damaged, "-o", output, "--model", model_path, "--codec", "ffv1", "--frames", f"{first}:{stop}")
    assert result.returncode == 0, result.stderr
    assert frame_times(output) == pytest.approx([index / FPS for index in range(stop - first)], abs=0.002)
    # Frames are counted as they decode: frame 8 is the one shown at 9/12 s, the 9th after the chunk lost.
    shown = [index / FPS for index in range(24) if index != 5]
    start, end = shown[first], shown[stop]
    # The tone's packets from there to frame 14's time, moved to 0: copied as they are, so cut whole, the first
    # from within a packet (20 ms) after the video's start, the last ending within one of its end; a frame's time
    # off (83 ms) is 4 or 5 packets off.
    source_audio = packets(damaged, "audio")
    kept = [(time - start, payload) for time, payload in source_audio if start <= time < end]
    audio = packets(output, "audio")
    assert [time for time, _ in audio] == pytest.approx([time for time, _ in kept], abs=0.001)
    assert [payload for _, payload in audio] == [payload for _, payload in kept]
    packet_time = AUDIO_PACKET / AUDIO_RATE
    assert 0 <= audio[0][0] < packet_time
    assert audio[-1][0] + packet_time == pytest.approx(end - start, abs=packet_time)
