"""Mutation fuzz of `srfeat upscale` on damaged videos: tiny seed clips (MP4, MOV, Matroska, WebM, AVI, MPEG-TS; H.264,
MPEG-4, VP8/VP9, MJPEG, MPEG-2; with and without audio) are damaged at random (bits flipped, bytes overwritten, cut,
chunks removed or repeated, size and frame-size fields of atoms, EBML elements and AVI chunks enlarged), each upscaled
by `srfeat.cli.main` in a child process under a memory limit and a timeout, and every outcome classed: a one-line error,
a success (warned or not), or what breaks the rules for untrusted input (a traceback or several error lines, a crash,
a hang, fewer frames than the clip had with no warning, a wrong output size, a temporary file left, the output the user
had overwritten by a failed run). The parent imports srfeat and torch once and forks a child per file, so a run takes
a fraction of a second; what it finds is then checked with `python -m srfeat.cli` as a user runs it.

    PYTHONPATH=. python3 scripts/fuzz_video.py /tmp/fuzz --per-seed 250    # 3,000 files, about 15 minutes

Results go to FOLDER/results.jsonl (one JSON object a file: seed, mutation, classes, log), counts to stdout; a file is
made again from its seed clip, `--seed` and its number (`--only SEED:NUMBER` reruns it, keeping it as FOLDER/repro.*).
"""

from __future__ import annotations

import os
import random
import struct
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one core a run: the fuzz runs beside other work (not set for a test importing it:
    # every process the test session starts after would inherit it, and a web server's output differed from the CLI's)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import av
import numpy as np
from av.error import FFmpegError

from scripts.fuzzing import arguments, extreme, fuzz, invert_a_byte, mutate, outcome_classes, prepared, run_one

SEED_FRAMES, FPS, SIZE, SCALE = 8, 12, (32, 24), 4  # the tiny model upscales 4x
# name, container, video codec, pixel format, audio codec or None
SEEDS = [
    ("h264.mp4", "mp4", "libx264", "yuv420p", None),
    ("h264_aac.mp4", "mp4", "libx264", "yuv420p", "aac"),
    ("mpeg4.mp4", "mp4", "mpeg4", "yuv420p", None),
    ("h264_aac.mov", "mov", "libx264", "yuv420p", "aac"),
    ("h264_aac.mkv", "matroska", "libx264", "yuv420p", "aac"),
    ("mpeg4.mkv", "matroska", "mpeg4", "yuv420p", None),
    ("vp8_opus.webm", "webm", "libvpx", "yuv420p", "libopus"),
    ("vp9.webm", "webm", "libvpx-vp9", "yuv420p", None),
    ("mjpeg.avi", "avi", "mjpeg", "yuvj420p", None),
    ("mpeg4_mp3.avi", "avi", "mpeg4", "yuv420p", "mp3"),
    ("h264_aac.ts", "mpegts", "libx264", "yuv420p", "aac"),
    ("mpeg2.ts", "mpegts", "mpeg2video", "yuv420p", None),
]
WRITTEN = {".mp4", ".m4v", ".mov", ".mkv", ".webm"}  # other inputs are written as Matroska
# Size fields worth enlarging: MP4 atoms (4-byte big-endian size before the type), AVI chunks (little-endian after),
# EBML element IDs (a variable-length size after).
MP4_ATOMS = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsz", b"stco", b"stts", b"stss", b"ctts", b"stsc"]
MP4_ATOMS += [b"mdat", b"avcC", b"esds", b"tkhd", b"mdhd", b"elst", b"edts", b"stsd", b"avc1", b"mp4v", b"mvhd"]
AVI_CHUNKS = [b"RIFF", b"LIST", b"00dc", b"01wb", b"idx1", b"strh", b"strf", b"avih", b"movi", b"JUNK"]
EBML_IDS = [bytes.fromhex(h) for h in ("18538067", "1F43B675", "A3", "A0", "A1", "1654AE6B", "AE", "63A2", "B0")]
EBML_IDS += [bytes.fromhex(h) for h in ("BA", "E0", "E7", "9B", "86", "23E383")]


def write_seed(path: Path, container_format: str, codec: str, pixel_format: str, audio: str | None) -> None:
    """A clip of a photo panning under a 32x24 window, with a 440 Hz tone if `audio` names an encoder."""
    from skimage import data as samples

    photo = samples.astronaut()
    with av.open(str(path), "w", format=container_format) as container:
        video = container.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = *SIZE, pixel_format
        sound = container.add_stream(audio, rate=44100 if audio == "mp3" else 48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for index in range(SEED_FRAMES):
            top, left = 100 + 2 * index, 150 + 3 * index
            pixels = np.ascontiguousarray(photo[top : top + SIZE[1], left : left + SIZE[0]])
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            rate, chunk = sound.codec_context.sample_rate, sound.codec_context.frame_size or 1024
            total = rate * SEED_FRAMES // FPS
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
            integer = sound.codec_context.format.name.startswith("s16")
            for start in range(0, total, chunk):
                part = wave[None, start : start + chunk]
                samples_of = (part * 32767).astype(np.int16) if integer else part
                audio_frame = av.AudioFrame.from_ndarray(samples_of, format="s16" if integer else "fltp", layout="mono")
                audio_frame.sample_rate, audio_frame.pts = rate, start
                audio_frame.time_base = Fraction(1, rate)
                container.mux(sound.encode(audio_frame))
            container.mux(sound.encode(None))


def enlarge_field(rng: random.Random, data: bytearray, extension: str) -> str:
    """Change one size or frame-size field of the container's structure; what was changed."""
    if extension in (".mp4", ".mov"):
        atom = rng.choice(MP4_ATOMS)
        places = [at for at in range(len(data)) if data.startswith(atom, at) and at >= 4]
        if places:
            at = rng.choice(places)
            # the atom's size, or a 32-bit field in its first 40 bytes (counts, entries), or a sample entry's size
            offset = at - 4 if rng.random() < 0.5 else at + 4 + 4 * rng.randint(0, 9)
            if atom in (b"avc1", b"mp4v") and rng.random() < 0.5:
                offset = at + 28 + rng.choice([0, 2]) - 2  # the visual sample entry's width, height (16 bits)
                (old,) = struct.unpack(">H", data[offset : offset + 2])
                data[offset : offset + 2] = struct.pack(">H", new := extreme(rng, old, 16))
                return f"{atom.decode()} frame size field {old}->{new}"
            if offset + 4 <= len(data):
                (old,) = struct.unpack(">I", data[offset : offset + 4])
                data[offset : offset + 4] = struct.pack(">I", new := extreme(rng, old, 32))
                return f"{atom.decode()} field at {offset - at:+d}: {old}->{new}"
    if extension == ".avi":
        chunk = rng.choice(AVI_CHUNKS)
        places = [at for at in range(len(data)) if data.startswith(chunk, at)]
        if places:
            at = rng.choice(places)
            offset = at + 4 if rng.random() < 0.6 else at + 8 + 4 * rng.randint(0, 12)  # size; avih, strf: sizes
            if offset + 4 <= len(data):
                (old,) = struct.unpack("<I", data[offset : offset + 4])
                data[offset : offset + 4] = struct.pack("<I", new := extreme(rng, old, 32))
                return f"{chunk.decode()} field at {offset - at:+d}: {old}->{new}"
    if extension in (".mkv", ".webm"):
        element = rng.choice(EBML_IDS)
        places = [at + len(element) for at in range(len(data)) if data.startswith(element, at)]
        if places and (at := rng.choice(places)) < len(data) and data[at]:
            length = 8 - data[at].bit_length() + 1  # a variable-length size: its leading zeros say how long
            if at + length <= len(data):
                bits = 7 * length
                old = int.from_bytes(data[at : at + length], "big") & ((1 << bits) - 1)
                new = min(extreme(rng, old, bits), (1 << bits) - 2)  # all ones: "unknown size"
                data[at : at + length] = ((1 << bits) | new).to_bytes(length, "big")
                return f"EBML {element.hex()} size {old}->{new}"
    return invert_a_byte(rng, data)


def damage(rng: random.Random, seed: bytes, name: str) -> tuple[bytes, str]:
    """The seed clip `name` damaged one way at random; what was done."""
    return mutate(rng, seed, lambda rng, data: enlarge_field(rng, data, Path(name).suffix))


def frames_of(path: Path) -> dict[str, Any]:
    """The frames PyAV decodes from `path`, packet by packet past errors, and the first one's size."""
    found: dict[str, Any] = {"frames": 0, "size": None}
    try:  # tags that are not UTF-8 are skipped, as srfeat's own probe does: PyAV raised UnicodeDecodeError for them
        with av.open(str(path), metadata_errors="ignore") as container:
            video = container.streams.video[0]
            for packet in container.demux(video):
                try:
                    for frame in video.decode(packet):
                        found["frames"] += 1
                        found["size"] = found["size"] or [frame.width, frame.height]
                except FFmpegError:
                    continue
    except (FFmpegError, IndexError, OSError, MemoryError) as error:  # the demuxer's own, a missing stream
        found["error"] = str(error)[:200]
    return found


def measure(source: Path, target: Path | None) -> dict[str, Any]:
    return {"input": frames_of(source)} | ({"output": frames_of(target)} if target else {})


def classes_of(result: dict[str, Any], seed_frames: int) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    found, warned = outcome_classes(result)
    if result.get("code") == 0 and "measuring" not in result:
        output, source = result.get("output") or {}, result.get("input") or {}
        if not output:
            found.append("NO OUTPUT")
        elif not warned and output["frames"] < max(seed_frames, source.get("frames", 0)):
            found.append("FRAMES LOST UNSAID")
        if output and source.get("size") and output.get("size") != [SCALE * side for side in source["size"]]:
            found.append("WRONG SIZE")
    return found


def main() -> int:
    args = arguments((__doc__ or "").split("\n\n")[0], 250, len(SEEDS), "mpeg4.mkv:38")
    how = {name: how for name, *how in SEEDS}
    model = prepared(args.folder, list(how), lambda path: write_seed(path, *how[path.name]))

    def run(data: bytes, name: str, folder: Path, memory: int) -> dict[str, Any]:
        extension = Path(name).suffix
        target = f"out{extension if extension in WRITTEN else '.mkv'}"
        return run_one(data, f"in{extension}", target, folder, model, memory, args.timeout, measure)

    return fuzz(args, [name for name, *_ in SEEDS], damage, run, lambda result: classes_of(result, SEED_FRAMES))


if __name__ == "__main__":
    sys.exit(main())
