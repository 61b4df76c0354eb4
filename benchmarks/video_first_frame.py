"""How long a long video's first frame waits before it reaches the upscaler: the container's frame scan.

    python3 -m benchmarks.video_first_frame [--minutes 120] [--rounds 3]

Writes, with PyAV, a long clip of tiny frames (32x32 MPEG-2, intra only, 25 frames/s) beside an MP2 audio track, as
Matroska and as MPEG-TS, then times `upscale_video` from its call to the first frame handed to the upscaler (the
upscale then stopped), and the container's scan alone (`scan_matroska`, `scan_transport_stream`: about 20 µs a
Matroska element, each frame and audio packet one), which the first frame no longer waits for. The network is a small
random generator (8 features, 2 blocks): what is timed is what comes before it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    check_results_file,
    host_info,
    one_line_errors,
    print_table,
    require_extra,
    write_results,
)

FPS = 25
SIZE = 32
AUDIO_RATE = 48000
MPEG_TS_VIDEO_PID = 256  # FFmpeg's muxer's first PID


class _FirstFrameError(Exception):
    """The first frame reached the upscaler: the upscale is stopped there."""


def write_long_clip(path: Path, minutes: float) -> int:
    """`minutes` of 32x32 frames and MP2 audio, interleaved by time as a muxer writes them; the frames written."""
    import av

    frames = round(minutes * 60 * FPS)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg2video", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = 1  # intra only: quick to encode and decode
        audio = container.add_stream("mp2", rate=AUDIO_RATE, layout="mono")
        audio_frame = audio.codec_context.frame_size or 1152
        silence = np.zeros((1, audio_frame), np.int16)
        picture = av.VideoFrame.from_ndarray(rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8), format="rgb24")
        samples = 0
        for index in range(frames):
            picture.pts, picture.time_base = index, Fraction(1, FPS)
            container.mux(video.encode(picture))
            while samples * FPS <= index * AUDIO_RATE:
                sound = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
                sound.sample_rate, sound.pts, sound.time_base = AUDIO_RATE, samples, Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(sound))
                samples += audio_frame
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return frames


def seconds_to_first_frame(source: Path, folder: Path, upscaler: Any) -> float:
    """From `upscale_video`'s call to the first frame given to `upscaler`."""
    from srfeat.video import VideoOptions
    from srfeat.video.pipeline import upscale_video

    started = time.perf_counter()
    reached: list[float] = []

    def first_frame(*_: Any, **__: Any) -> Any:
        reached.append(time.perf_counter())
        raise _FirstFrameError

    upscaler.upscale_array = first_frame
    try:
        upscale_video(source, folder / "out.mkv", upscaler, VideoOptions("ffv1"))
    except _FirstFrameError:
        pass
    return reached[0] - started


def seconds_to_scan(source: Path) -> float:
    from srfeat.video.matroska_scan import scan_matroska
    from srfeat.video.transport_scan import scan_transport_stream

    started = time.perf_counter()
    listed = scan_matroska(source, 0) if source.suffix == ".mkv" else scan_transport_stream(source, MPEG_TS_VIDEO_PID)
    assert listed is not None and listed.places, f"{source}: the scan listed no frame"
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0, help="the clips' length (default: 120)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each (median; default 3)")
    parser.add_argument(
        "--json", type=Path, default=None, help="results file to update (default: benchmarks/results/<host>.json)"
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    if not args.minutes > 0 or args.rounds < 1:
        parser.error("--minutes must be above 0 and --rounds 1 or more")
    if not args.no_json:
        check_results_file(args.json)
    require_extra("video", "av")
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.inference import Upscaler
    from srfeat.weights import save_generator

    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        torch.manual_seed(0)
        save_generator(SRFeatGenerator(num_features=8, num_blocks=2), folder / "tiny.safetensors")
        upscaler = Upscaler(folder / "tiny.safetensors", device="cpu")
        for suffix in (".mkv", ".ts"):
            source = folder / f"long{suffix}"
            print(f"writing {args.minutes:g} minutes as {suffix} ...", file=sys.stderr, flush=True)
            frames = write_long_clip(source, args.minutes)
            first = [seconds_to_first_frame(source, folder, upscaler) for _ in range(args.rounds)]
            scan = [seconds_to_scan(source) for _ in range(args.rounds)]
            rows.append(
                {
                    "container": suffix[1:],
                    "frames": frames,
                    "mib": round(source.stat().st_size / 2**20, 1),
                    "first_frame_s": round(statistics.median(first), 3),
                    "scan_s": round(statistics.median(scan), 3),
                }
            )
    print_table(
        f"the first frame's wait: {args.minutes:g} minutes of 32x32 frames and audio, median of {args.rounds}",
        ["container", "frames", "MiB", "to first frame s", "scan alone s"],
        [[r["container"], r["frames"], r["mib"], r["first_frame_s"], r["scan_s"]] for r in rows],
    )
    result = {"host": host_info(torch.device("cpu")), "minutes": args.minutes, "clips": rows}
    if not args.no_json:
        write_results(args.json, "video_first_frame", result)
    return result


if __name__ == "__main__":
    with one_line_errors():
        main()
