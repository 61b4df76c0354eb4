"""Peak memory of `srfeat upscale` on a large input, or on a folder of many sizes: the maximum
resident set size of the process.

    python3 -m benchmarks.memory [--size 1000] [--model PATH] [-- extra srfeat upscale arguments]
    python3 -m benchmarks.memory --sizes 200     # 200 images, each of its own size, in one run

Writes a size x size RGB test image (skimage's astronaut resized with bicubic, or a synthetic
pattern without scikit-image), runs `srfeat upscale` on it under GNU time (`/usr/bin/time -v`)
and reads "Maximum resident set size". With --sizes, the input is a folder of that many
small images of distinct sizes (40 to 119 pixels a side): what a process that runs on (a
folder, `srfeat serve`) keeps of the images it finished shows as growth over one image's peak.
Without --model a randomly initialised generator is saved to a temporary checkpoint (the
weights do not change the memory or the time). A 1000x1000 input takes minutes on a 2-core
CPU; --size 200 is a quick check.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import check_results_file, host_info, print_table, whole_number, write_results

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 2 * 1024**3  # the bound for a 1000x1000 input
SIDES = range(40, 120)  # the sides of the --sizes images: 80 x 80 distinct sizes


def test_image(size: int) -> np.ndarray:
    from PIL import Image

    try:
        from skimage import data

        return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BICUBIC))
    except ImportError:
        y, x = np.mgrid[0:size, 0:size] / max(1, size - 1)
        pattern = np.stack([x, y, 0.5 + 0.5 * np.sin(20 * x * y)], axis=-1)
        return (pattern * 255).round().astype(np.uint8)


def write_many_sizes(folder: Path, count: int) -> None:
    """`count` PNGs of distinct sizes, 40 to 119 pixels a side, cut from the test image."""
    from PIL import Image

    picture = test_image(256)
    sizes = np.random.default_rng(0).permutation([(h, w) for h in SIDES for w in SIDES])[:count]
    for number, (height, width) in enumerate(sizes):
        Image.fromarray(picture[:height, :width]).save(folder / f"{number:04d}_{height}x{width}.png")


def parse_time_v(stderr: str) -> dict[str, float]:
    """The numbers of GNU time's verbose report that matter here."""
    found: dict[str, float] = {}
    match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", stderr)
    if match:
        found["max_rss_bytes"] = int(match.group(1)) * 1024
    match = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(?:(\d+):)?(\d+):([\d.]+)", stderr)
    if match:
        hours, minutes, seconds = match.groups()
        found["wall_s"] = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    match = re.search(r"Exit status:\s*(\d+)", stderr)
    if match:
        found["exit_status"] = int(match.group(1))
    return found


def upscale_under_time(time_program: str, upscale_args: list[str]) -> dict[str, float]:
    """Run `srfeat upscale UPSCALE_ARGS` under GNU time and return parse_time_v's numbers; exits
    with the command's output when it fails.

    The command is this checkout's (`python -m srfeat.cli` with the checkout first on the path),
    not the `srfeat` on PATH, which may be another install or worktree: the numbers are recorded
    against the code beside the benchmark."""
    command = [time_program, "-v", sys.executable, "-m", "srfeat.cli", "upscale", *upscale_args]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    print("running:", " ".join(command), flush=True)
    completed = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": path}
    )
    report = parse_time_v(completed.stderr)
    if completed.returncode != 0 or "max_rss_bytes" not in report:
        # srfeat's own output, without GNU time's report of the failed run
        own = re.split(r"(?:Command exited with non-zero status \d+\n)?\tCommand being timed:", completed.stderr)[0]
        sys.stderr.write(completed.stdout + own)
        raise SystemExit(f"srfeat upscale failed (exit status {completed.returncode})")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=whole_number(1), default=1000, help="input height and width (default 1000)")
    parser.add_argument(
        "--sizes",
        type=whole_number(0),
        default=0,
        help=f"instead: a folder of this many images of distinct sizes (e.g. 200; at most {len(SIDES) ** 2})",
    )
    parser.add_argument(
        "--model", default=None, help="checkpoint or bundled name (default: a random generator in a temporary file)"
    )
    parser.add_argument("--time", default="/usr/bin/time", help="GNU time (default /usr/bin/time)")
    parser.add_argument(
        "--json", type=Path, default=None, help="results file to update (default benchmarks/results/<host>.json)"
    )
    parser.add_argument("--no-json", action="store_true", help="print only")
    parser.add_argument("extra", nargs="*", help="more `srfeat upscale` arguments (after --), e.g. -- --tile 256")
    args = parser.parse_args(argv)
    if args.sizes > len(SIDES) ** 2:
        parser.error(
            f"--sizes {args.sizes}: there are {len(SIDES) ** 2} distinct sizes of {SIDES[0]} to {SIDES[-1]} pixels"
        )
    if not args.no_json:
        check_results_file(args.json)
    if not Path(args.time).exists():
        raise SystemExit(f"{args.time} not found: install GNU time (apt-get install time) or give --time")

    import torch
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="srfeat-memory-") as tmp:
        work = Path(tmp)
        if args.sizes:
            source = work / "inputs"
            source.mkdir()
            write_many_sizes(source, args.sizes)
        else:
            source = work / f"input_{args.size}.png"
            Image.fromarray(test_image(args.size)).save(source)
        model = args.model
        if model is None:
            from srfeat.archs.generator import SRFeatGenerator
            from srfeat.weights import save_generator

            torch.manual_seed(0)
            model = str(work / "random.safetensors")
            save_generator(SRFeatGenerator().eval(), model)
        output = work / ("outputs" if args.sizes else "output.png")
        report = upscale_under_time(
            args.time, [str(source), "-o", str(output), "--model", model, "--device", "cpu", *args.extra]
        )
        if args.sizes:
            inputs, outputs = f"{args.sizes} images of distinct sizes", f"{len(list(output.iterdir()))} images"
        else:
            size = Image.open(output).size
            inputs, outputs = f"{args.size}x{args.size}", f"{size[0]}x{size[1]}"

    rss = report["max_rss_bytes"]
    rows = [
        ["input", inputs],
        ["output", outputs],
        ["max RSS MB", rss / 2**20],
        ["wall s", report.get("wall_s", float("nan"))],
        ["under 2 GB", "yes" if rss < LIMIT_BYTES else "NO"],
    ]
    print_table("srfeat upscale peak memory (CPU)", ["quantity", "value"], rows)
    result = {
        "host": host_info(torch.device("cpu")),
        "size": args.size,
        "sizes": args.sizes,
        "extra_args": args.extra,
        "max_rss_bytes": rss,
        "max_rss_mb": rss / 2**20,
        "wall_s": report.get("wall_s"),
        "under_2gb": rss < LIMIT_BYTES,
    }
    if not args.no_json:
        write_results(args.json, f"memory_{args.sizes}_sizes" if args.sizes else f"memory_{args.size}", result)
    return result


if __name__ == "__main__":
    main()
