"""Small videos made on the spot: a scikit-image photo panning under a 64x48 window, with a
sine-wave audio track and, in Matroska, a subtitle track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from skimage import data as samples

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
) -> list[float]:
    """Write an H.264 clip (AAC audio, SubRip subtitles one a second) and return its frame times.

    `variable_rate`: frame intervals cycle through 0.5, 1 and 1.5 times 1/fps.
    """
    times = [0.0]
    for i in range(1, frames):
        times.append(times[-1] + (0.5 + 0.5 * ((i - 1) % 3) if variable_rate else 1.0) / fps)
    with av.open(str(path), "w") as container:
        if video:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
            time_base = Fraction(1, 1000) if variable_rate else Fraction(1, fps)
            stream.codec_context.time_base = time_base
        if audio:
            sound = container.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        if subtitles:
            text = container.add_mux_stream("subrip")
            text.time_base = Fraction(1, 1000)
        if video:
            for pixels, time in zip(pan_frames(frames, *size), times, strict=True):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = round(time / time_base), time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        if audio:
            samples_total = round(AUDIO_RATE * frames / fps)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples_total) / AUDIO_RATE)).astype(np.float32)
            for start in range(0, samples_total, AUDIO_FRAME):
                chunk = av.AudioFrame.from_ndarray(
                    wave[None, start : start + AUDIO_FRAME], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = AUDIO_RATE, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
        for second, line in enumerate(subtitles):
            packet = av.Packet(line.encode())
            packet.stream = text
            packet.pts = packet.dts = second * 1000
            packet.duration = 900
            packet.time_base = Fraction(1, 1000)
            container.mux(packet)
    return times


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
        return [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(stream) if p.size]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))
