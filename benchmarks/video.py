"""Video upscaling speed and fidelity: `srfeat upscale clip.mp4` on clips made on the spot.

    python3 -m benchmarks.video [--size 64x48 160x120] [--seconds 2] [--fps 12] [--model default] [--device cpu]
    python3 -m benchmarks.video --memory-frames 24 240     # peak memory against the clip's length

For each input size, writes a clip of the scikit-image astronaut panning under the frame with a
sine-wave audio track (as the tests do), then times the whole video path (decode, upscale,
encode, mux, in its pipeline; the model loaded beforehand) and, on the same decoded frames,
`Upscaler` alone: their ratio is what decoding and encoding cost on top. It also checks what
the output holds (size, frame count, frame rate, audio) and measures the codec's error: the
decoded output frames against `Upscaler` on the decoded input frames (PSNR and maximum
difference, for the default H.264 at CRF 18 in 4:2:0 and for lossless RGB H.264).

--memory-frames runs `srfeat upscale` under GNU time on 64x48 clips of each length and reports
the peak resident memory, which must not grow with the length. The network there is a small
random generator (8 features, 2 blocks): its own memory is constant, and what is measured is the
pipeline's, so a small one keeps the runs short.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    check_results_file,
    device_name,
    host_info,
    one_line_errors,
    print_table,
    require_extra,
    whole_number,
    write_results,
)
from benchmarks.memory import upscale_under_time

# The clip maker is the tests' own (imported where used, after main has checked for PyAV), so
# that the benchmark measures the clips the tests check.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: WxH, both at least 2 (a 4:2:0 encoder's smallest frame)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 2 or int(height) < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame size: give WxH, e.g. 64x48, both 2 or more")
    return int(width), int(height)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def measure_size(
    width: int, height: int, seconds: float, fps: int, upscaler: Any, rounds: int, folder: Path
) -> dict[str, Any]:
    import av

    from srfeat.video import VideoOptions
    from srfeat.video.pipeline import upscale_video
    from tests.video_helpers import audio_samples, read_frames, write_clip

    frames = round(seconds * fps)
    clip = folder / f"clip_{width}x{height}.mp4"
    write_clip(clip, frames=frames, fps=fps, size=(width, height))
    decoded = read_frames(clip)
    pipeline_s: list[float] = []
    upscaler_s: list[float] = []
    expected: list[np.ndarray] = []
    output = folder / f"out_{width}x{height}.mp4"
    for _ in range(rounds):  # interleaved, so that drift on a shared machine hits both alike
        start = time.perf_counter()
        upscale_video(clip, output, upscaler, VideoOptions())
        pipeline_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected = [upscaler(frame) for frame in decoded]
        upscaler_s.append(time.perf_counter() - start)
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        out_size = (stream.codec_context.width, stream.codec_context.height)
        out_rate = float(stream.average_rate or 0)
    with av.open(str(clip)) as container:
        in_rate = float(container.streams.video[0].average_rate or 0)
    default_frames = read_frames(output)
    lossless = folder / f"lossless_{width}x{height}.mp4"
    upscale_video(clip, lossless, upscaler, VideoOptions(codec="libx264rgb", crf=0))
    lossless_frames = read_frames(lossless)
    pipeline, alone = statistics.median(pipeline_s), statistics.median(upscaler_s)
    return {
        "input": f"{width}x{height}",
        "output": f"{out_size[0]}x{out_size[1]}",
        "frames_in": frames,
        "frames_out": len(default_frames),
        "fps_in": in_rate,
        "fps_out": out_rate,
        "audio_samples_in": audio_samples(clip),
        "audio_samples_out": audio_samples(output),
        "pipeline_s": pipeline,
        "pipeline_fps": frames / pipeline,
        "upscaler_fps": frames / alone,
        "pipeline_vs_upscaler": alone / pipeline,
        "h264_crf18_psnr_db": min(psnr(a, b) for a, b in zip(default_frames, expected, strict=True)),
        "h264_crf18_max_diff": max(
            int(np.abs(a.astype(int) - b).max()) for a, b in zip(default_frames, expected, strict=True)
        ),
        "lossless_max_diff": max(
            int(np.abs(a.astype(int) - b).max()) for a, b in zip(lossless_frames, expected, strict=True)
        ),
    }


def measure_memory(lengths: list[int], fps: int, folder: Path, time_program: str) -> list[dict[str, Any]]:
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator
    from tests.video_helpers import write_clip

    torch.manual_seed(0)
    model = folder / "small.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2).eval(), model)
    rows = []
    for frames in lengths:
        clip = folder / f"memory_{frames}.mp4"
        write_clip(clip, frames=frames, fps=fps)
        output = folder / f"memory_{frames}_x4.mp4"
        report = upscale_under_time(
            time_program, [str(clip), "-o", str(output), "--model", str(model), "--device", "cpu"]
        )
        rows.append({"frames": frames, "max_rss_mb": report["max_rss_bytes"] / 2**20, "wall_s": report.get("wall_s")})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size",
        nargs="+",
        type=frame_size,
        default=[(64, 48), (160, 120)],
        help="input sizes WxH (default: 64x48 160x120)",
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=whole_number(1), default=12)
    parser.add_argument("--model", default="default", help="bundled name or checkpoint (default: default)")
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--threads", type=whole_number(1), default=None)
    parser.add_argument("--rounds", type=whole_number(1), default=1, help="timed runs of each (median; default 1)")
    parser.add_argument(
        "--json", type=Path, default=None, help="results file to update (default: benchmarks/results/<host>.json)"
    )
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument(
        "--memory-frames",
        type=whole_number(1),
        nargs="+",
        default=None,
        metavar="N",
        help="peak memory for clips of N frames",
    )
    parser.add_argument("--time", default="/usr/bin/time", help="GNU time, for --memory-frames")
    args = parser.parse_args(argv)
    if not args.memory_frames and not (math.isfinite(args.seconds) and args.seconds * args.fps >= 0.5):
        parser.error(f"--seconds {args.seconds:g} at --fps {args.fps} is no frame: give a longer clip")
    if not args.no_json:
        check_results_file(args.json)
    require_extra("video", "av")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_frames:
        with tempfile.TemporaryDirectory() as folder:
            memory = measure_memory(args.memory_frames, args.fps, Path(folder), args.time)
        print_table(
            "srfeat upscale on a 64x48 clip: peak memory against its length",
            ["frames", "max RSS MB", "wall s"],
            [[row["frames"], row["max_rss_mb"], row["wall_s"]] for row in memory],
        )
        if not args.no_json:
            write_results(args.json, "video_memory", {"host": host_info(torch.device("cpu")), "clips": memory})
        return {"memory": memory}
    from srfeat.inference import Upscaler

    upscaler = Upscaler(args.model, device=args.device, dtype=args.dtype)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for width, height in args.size:
            print(f"{width}x{height}: {args.seconds:g} s at {args.fps} frames/s ...", flush=True)
            rows.append(measure_size(width, height, args.seconds, args.fps, upscaler, args.rounds, Path(folder)))
    print_table(
        f"video, model {args.model}, {args.device} {args.dtype}, {torch.get_num_threads()} threads",
        [
            "input",
            "output",
            "frames in/out",
            "fps in/out",
            "audio samples in/out",
            "video fps",
            "Upscaler fps",
            "H.264 CRF 18 PSNR / max",
            "lossless max",
        ],
        [
            [
                r["input"],
                r["output"],
                f"{r['frames_in']}/{r['frames_out']}",
                f"{r['fps_in']:g}/{r['fps_out']:g}",
                f"{r['audio_samples_in']}/{r['audio_samples_out']}",
                f"{r['pipeline_fps']:.2f}",
                f"{r['upscaler_fps']:.2f}",
                f"{r['h264_crf18_psnr_db']:.1f} dB / {r['h264_crf18_max_diff']}",
                str(r["lossless_max_diff"]),
            ]
            for r in rows
        ],
    )
    result = {
        "host": host_info(upscaler.device),
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "sizes": rows,
    }
    if not args.no_json:
        write_results(args.json, f"video_{args.device}", result)
    return result


if __name__ == "__main__":
    with one_line_errors():
        main()
