"""Small videos made on the spot: a scikit-image photo panning under a 64x48 window, with a
sine-wave audio track and, in Matroska, a subtitle track."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream
from skimage import data as samples

REPO = Path(__file__).resolve().parents[1]
AUDIO_RATE = 48000
AUDIO_FRAME = 1024  # samples per AAC frame


def pan_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """`count` RGB frames: a window moving over the astronaut photo by (3, 2) pixels a frame (and
    starting over every 100 frames)."""
    photo = samples.astronaut()
    frames = []
    for i in range(count):
        top, left = 100 + 2 * (i % 100), 150 + 3 * (i % 100)
        frames.append(np.ascontiguousarray(photo[top : top + height, left : left + width]))
    return frames


def write_clip(
    path: Path,
    frames: int = 24,
    fps: int = 12,
    size: tuple[int, int] = (64, 48),
    audio: bool = True,
    video: bool = True,
    variable_rate: bool = False,
    subtitles: tuple[str, ...] = (),
    rotation: int = 0,
    mirrored: bool = False,
    display_matrix: list[int] | None = None,
) -> list[float]:
    """Write an H.264 clip (AAC audio, SubRip subtitles one a second) and return its frame times.

    `variable_rate`: frame intervals cycle through 0.5, 1 and 1.5 times 1/fps; `rotation`: degrees
    counter-clockwise that players turn the frames (as phones store portrait video), then mirror
    them left to right if `mirrored`; `display_matrix`: FFmpeg's nine integers, written as given.
    """
    times = [0.0]
    for i in range(1, frames):
        times.append(times[-1] + (0.5 + 0.5 * ((i - 1) % 3) if variable_rate else 1.0) / fps)
    with av.open(str(path), "w") as container:  # every stream is added before the first packet
        time_base = Fraction(1, 1000) if variable_rate else Fraction(1, fps)
        picture = _video_stream(container, fps, size, time_base) if video else None
        if picture is not None and (rotation or mirrored):
            picture.set_display_rotation(rotation, hflip=mirrored)
        if picture is not None and display_matrix is not None:
            picture.set_display_matrix(display_matrix)
        sound = _audio_stream(container) if audio else None
        text = container.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if subtitles else None
        if picture is not None:
            for pixels, time in zip(pan_frames(len(times), *size), times, strict=True):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = round(time / time_base), time_base
                container.mux(picture.encode(frame))
            container.mux(picture.encode(None))
        if sound is not None:
            _write_sine(container, sound, round(AUDIO_RATE * frames / fps))
        if text is not None:
            for second, line in enumerate(subtitles):  # one a second, shown for 0.9 s, muxed as they are
                packet = av.Packet(line.encode())
                packet.stream, packet.time_base = text, Fraction(1, 1000)
                packet.pts = packet.dts = second * 1000
                packet.duration = 900
                container.mux(packet)
    return times


def _video_stream(container: OutputContainer, fps: int, size: tuple[int, int], time_base: Fraction) -> VideoStream:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
    stream.codec_context.time_base = time_base
    return stream


def _audio_stream(container: OutputContainer) -> AudioStream:
    sound = container.add_stream("aac", rate=AUDIO_RATE)
    sound.layout = "mono"
    return sound


def _write_sine(container: OutputContainer, sound: AudioStream, samples_total: int) -> None:
    """A 440 Hz tone."""
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples_total) / AUDIO_RATE)).astype(np.float32)
    for start in range(0, samples_total, AUDIO_FRAME):
        chunk = av.AudioFrame.from_ndarray(wave[None, start : start + AUDIO_FRAME], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE, start
        container.mux(sound.encode(chunk))
    container.mux(sound.encode(None))


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def packets(path: Path, kind: str) -> list[tuple[float, bytes]]:
    """(time in seconds, payload) of every packet of the first stream of `kind` ('audio', 'subtitle')."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        time_base = stream.time_base or Fraction(1)
        return [(float((p.pts or 0) * time_base), bytes(p)) for p in container.demux(stream) if p.size]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def write_encoded(
    path: str | Path,
    codec: str = "libx264",
    pixel_format: str = "yuv420p",
    frames: int = 4,
    size: tuple[int, int] = (64, 48),
    colour_matrix: int | None = None,
    container_format: str | None = None,
    still: np.ndarray | None = None,
) -> None:
    """A video-only clip of `frames` pan frames in any encoder and pixel format; `colour_matrix`:
    FFmpeg's AVColorSpace to tag it with (1: BT.709, as cameras and phones tag HD video); `still`:
    one RGB picture for every frame instead."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = *size, pixel_format
        if colour_matrix is not None:
            stream.codec_context.colorspace = colour_matrix
            stream.codec_context.color_primaries = stream.codec_context.color_trc = colour_matrix
        pictures = pan_frames(frames, *size) if still is None else [still] * frames
        for index, pixels in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_captioned(path: Path, frames: int = 3) -> None:
    """A 16x16 H.264 clip in Matroska whose every frame carries a CEA-608 closed caption code the way
    US broadcasts do: in an SEI message (ATSC A/53 `GA94` user data) inside the video stream."""
    cc_data = bytes([0xFC, 0x94, 0x20])  # valid, field 1: RCL ("resume caption loading")
    payload = bytes([0xB5, 0x00, 0x31]) + b"GA94" + bytes([0x03, 0x40 | 1, 0xFF]) + cc_data + bytes([0xFF])
    sei = b"\x00\x00\x00\x01\x06" + bytes([4, len(payload)]) + payload + b"\x80"  # type 4: registered user data
    raw = io.BytesIO()
    with av.open(raw, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.codec_context.max_b_frames = 0
        for index, pixels in enumerate(pan_frames(frames, 16, 16)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    annex_b = bytearray()
    for unit in raw.getvalue().split(b"\x00\x00\x00\x01"):
        if unit and unit[0] & 0x1F in (1, 5):  # before each slice
            annex_b += sei
        if unit:
            annex_b += b"\x00\x00\x00\x01" + unit
    with av.open(io.BytesIO(bytes(annex_b)), format="h264") as source, av.open(str(path), "w") as container:
        stream = container.add_stream_from_template(source.streams.video[0])
        for index, packet in enumerate(p for p in source.demux(video=0) if p.size):
            packet.stream, packet.time_base = stream, Fraction(1, 12)
            packet.pts = packet.dts = index
            packet.duration = 1
            container.mux(packet)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`srfeat upscale ARGS` as a user runs it: a subprocess of this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "srfeat.cli", "upscale", *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


class ContainerStandIn:
    """A PyAV container whose methods a test overrides in a subclass (PyAV's own are read-only)."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self.container, name)
