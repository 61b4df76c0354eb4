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

import argparse
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import time
import traceback
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one core a run: the fuzz runs beside other work (not set for a test importing it:
    # every process the test session starts after would inherit it, and a web server's output differed from the CLI's)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import av
import numpy as np
from av.error import FFmpegError

from srfeat.cli import main as srfeat_main

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
SENTINEL = b"an output the user had before the run"
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


def extreme(rng: random.Random, old: int, bits: int) -> int:
    top = (1 << bits) - 1
    choices = [top, top - 1, old + rng.randint(1, 64), old * 2, old + 1, 1 << (bits - 1), 0, max(0, old - 1)]
    return top & rng.choice([*choices, rng.randint(0, top), 0xFFFF])


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
    at = rng.randrange(len(data))
    data[at] ^= 0xFF
    return f"byte {at} inverted"


def mutate(rng: random.Random, seed: bytes, extension: str) -> tuple[bytes, str]:
    """`seed` damaged one way at random; what was done."""
    data, size = bytearray(seed), len(seed)
    kind = rng.choice(["flip", "run", "cut", "remove", "repeat", "field", "field", "several"])
    if kind == "flip":
        for _ in range(count := rng.choice([1, 1, 2, 4, 8])):
            data[rng.randrange(size)] ^= 1 << rng.randrange(8)
        return bytes(data), f"{count} bit(s) flipped"
    at = rng.randrange(size)
    length = rng.choice([1, 2, 4, 16, 64, 188, 256, 512, 2048])
    if kind == "run":
        fill = rng.choice([b"\0", b"\xff", bytes(rng.randrange(256) for _ in range(length))])
        data[at : at + length] = (fill * length)[: min(length, size - at)]
        return bytes(data), f"{length} bytes at {at} overwritten"
    if kind == "cut":
        return bytes(data[: max(1, at)]), f"cut at {max(1, at)} of {size}"
    if kind == "remove":
        del data[at : at + length]
        return bytes(data), f"{length} bytes at {at} removed"
    if kind == "repeat":
        to = rng.randrange(size)
        data[to:to] = data[at : at + length]
        return bytes(data), f"{length} bytes at {at} repeated at {to}"
    if kind == "field":
        return bytes(data), enlarge_field(rng, data, extension)
    done = [enlarge_field(rng, data, extension) for _ in range(rng.randint(2, 4))]
    return bytes(data), "; ".join(done)


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


def upscale_in_child(source: Path, target: Path, model: Path, memory: int, record: Path) -> None:
    """In the forked child: `srfeat upscale`, its stderr to a log; then what the input and output hold."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    log = os.open(source.parent / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(source.parent)
    try:
        code = srfeat_main(["upscale", source.name, "-o", target.name, "--model", str(model), "--overwrite"])
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else 2
    except BaseException:  # noqa: BLE001 - what escapes main is the finding
        traceback.print_exc()
        code = 99
    sys.stderr.flush()
    result: dict[str, Any] = {"code": code}
    record.write_text(json.dumps(result))  # kept if the measuring below dies
    try:
        result["input"] = frames_of(source)
        if code == 0 and target.exists() and target.read_bytes() != SENTINEL:
            result["output"] = frames_of(target)
    except Exception as error:  # noqa: BLE001 - the fuzz's own measuring failed, not srfeat: said as such
        result["measuring"] = f"{type(error).__name__}: {error}"[:300]
    record.write_text(json.dumps(result))


def run_one(data: bytes, extension: str, folder: Path, model: Path, memory: int, timeout: float) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = folder / f"in{extension}"
    source.write_bytes(data)
    target = folder / f"out{extension if extension in WRITTEN else '.mkv'}"
    target.write_bytes(SENTINEL)
    record = folder / "record.json"
    start = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            upscale_in_child(source, target, model, memory, record)
        finally:
            os._exit(0)
    status: int | None = None
    while time.monotonic() - start < timeout:
        finished, status = os.waitpid(child, os.WNOHANG)
        if finished:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        status = None
    result: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {}
    result["seconds"] = round(time.monotonic() - start, 2)
    if status is None:
        result["signal"] = "timeout"
    elif os.WIFSIGNALED(status):
        result["signal"] = signal.Signals(os.WTERMSIG(status)).name
    result["log"] = (folder / "log.txt").read_text(errors="replace")[-3000:]
    known = {source.name, target.name, "log.txt", record.name}
    result["left"] = sorted(path.name for path in folder.iterdir() if path.name not in known)
    result["kept"] = target.exists() and target.read_bytes() == SENTINEL
    return result


def classes_of(result: dict[str, Any], seed_frames: int) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    lines = [line for line in result["log"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") and line != "ERROR: 1 of 1 input(s) failed"]
    warned = any(line.startswith("WARNING") for line in lines)
    code, found = result.get("code"), []
    if "signal" in result:
        found.append("HANG" if result["signal"] == "timeout" else f"CRASH {result['signal']}")
        if code is not None:
            found[-1] += " (measuring, after srfeat)"
    if "Traceback" in result["log"] or code == 99:
        found.append("TRACEBACK")
    if code not in (None, 0):
        others = [line for line in lines if not line.startswith(("ERROR", "WARNING", "INFO"))]
        found.append("one-line error" if len(errors) == 1 and not others else "SEVERAL LINES")
        found += [] if result["kept"] else ["OUTPUT OVERWRITTEN"]
    if code == 0:
        output, source = result.get("output") or {}, result.get("input") or {}
        found.append("success, warned" if warned else "success")
        if "measuring" in result:  # the fuzz's reading failed, so nothing is known of the frames or their size
            found.append(f"MEASURING FAILED ({result['measuring']})")
        elif not output:
            found.append("NO OUTPUT")
        elif not warned and output["frames"] < max(seed_frames, source.get("frames", 0)):
            found.append("FRAMES LOST UNSAID")
        if output and source.get("size") and output.get("size") != [SCALE * side for side in source["size"]]:
            found.append("WRONG SIZE")
    if "Cannot allocate memory" in result["log"] or "MemoryError" in result["log"]:
        found.append("out of memory")
    return found + (["TEMPORARY LEFT"] if result["left"] else [])


def address_space() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the seeds, the runs and results.jsonl go")
    parser.add_argument("--per-seed", type=int, default=250, help="damaged files per seed clip (12 seeds)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed: the same seed makes the same files")
    parser.add_argument("--only", default=None, metavar="SEED:NUMBER", help="rerun one file, e.g. mpeg4.mkv:38")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a run may take before it is a hang")
    parser.add_argument("--memory", type=float, default=3, help="GiB a run may set aside beyond srfeat's imports")
    args = parser.parse_args()
    seeds, model = args.folder / "seeds", args.folder / "tiny.safetensors"
    seeds.mkdir(parents=True, exist_ok=True)
    import torch

    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    torch.manual_seed(0)
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2), model)
    for name, *how in SEEDS:
        if not (seeds / name).exists():
            write_seed(seeds / name, *how)
    memory, run_folder = address_space() + int(args.memory * 2**30), args.folder / "run"
    wanted = [(name, number) for number in range(args.per_seed) for name, *_ in SEEDS]
    if args.only:
        name, number = args.only.rsplit(":", 1)
        wanted = [(name, int(number))]
    counts: Counter[str] = Counter()
    with (args.folder / "results.jsonl").open("a") as results:
        for name, number in wanted:
            seed = (seeds / name).read_bytes()
            data, mutation = mutate(random.Random(f"{args.seed}-{name}-{number}"), seed, Path(name).suffix)
            if args.only:
                (args.folder / f"repro{Path(name).suffix}").write_bytes(data)
            result = run_one(data, Path(name).suffix, run_folder, model, memory, args.timeout)
            result.update(seed=name, number=number, mutation=mutation, classes=classes_of(result, SEED_FRAMES))
            results.write(json.dumps(result) + "\n")
            counts.update(result["classes"])
            if args.only or any(kind.isupper() for kind in result["classes"]):
                print(name, number, mutation, result["classes"], flush=True)  # the script's report
    print(json.dumps(dict(counts.most_common()), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
