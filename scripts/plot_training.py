"""Plot validation PSNR (and NIQE, where logged) over a model's whole training history.

A bundled model is often trained in several runs, each starting from the last one's generator
(`train.init_generator`): CPU steps, then GPU steps. This script puts their `metrics.jsonl`
files end to end, counting steps from the first run, and marks where each run begins:

    python3 scripts/plot_training.py docs/training/default_cpu.jsonl docs/training/default_gpu.jsonl \
        --labels "CPU, batch 16" "GPU, batch 32" --title default -o docs/default_training.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `python3 scripts/NAME.py` puts scripts/ first on the path, not the checkout: this checkout's srfeat,
# not whichever is installed (another worktree's, a release).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from srfeat.training.run_log import read_records


def read_validation(path: Path) -> list[dict]:
    return [r for r in read_records(path) if r.get("kind") == "validation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each run, in training order")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the file names)")
    parser.add_argument("--title", default="validation on Set5")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    labels = args.labels or [path.stem for path in args.metrics]
    if len(labels) != len(args.metrics):
        parser.error(f"{len(args.metrics)} metrics files but {len(labels)} labels: give one label per file")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, psnr_axis = plt.subplots(figsize=(8, 4), layout="constrained")
    niqe_axis = None
    offset, start = 0, None
    for path, label in zip(args.metrics, labels, strict=True):
        try:
            validation = read_validation(path)
        except OSError as error:
            parser.error(f"cannot read {path}: {error.strerror or error}")
        if not validation:
            parser.error(f"{path} has no validation records: pass the metrics.jsonl of a validated run")
        steps = [offset + r["step"] for r in validation]
        psnr = [r["psnr"] for r in validation]
        if start is not None:  # the run starts where the last one ended: draw that stretch too
            steps, psnr = [offset, *steps], [start, *psnr]
        psnr_axis.plot(steps, psnr, marker="o", label=f"PSNR, {label}")
        if any("niqe" in r for r in validation):
            niqe_axis = niqe_axis or psnr_axis.twinx()
            points = [(offset + r["step"], r["niqe"]) for r in validation if "niqe" in r]
            steps, niqe = zip(*points, strict=True)
            niqe_axis.plot(steps, niqe, marker="s", linestyle="--", color="tab:red", label=f"NIQE, {label}")
        if offset:
            psnr_axis.axvline(offset, color="grey", linestyle=":")
        offset, start = steps[-1], psnr[-1]  # the next run starts from this run's last generator
    psnr_axis.set(xlabel="step (all runs)", ylabel="PSNR (dB, Y channel)", title=args.title)
    psnr_axis.grid(alpha=0.3)
    handles, names = psnr_axis.get_legend_handles_labels()
    if niqe_axis is not None:
        niqe_axis.set_ylabel("NIQE (lower is better)", color="tab:red")
        more_handles, more_names = niqe_axis.get_legend_handles_labels()
        handles, names = handles + more_handles, names + more_names
    # below the axes (a GAN run's curves fill every corner of them), in columns; the figure grows by the
    # legend's rows, so that the plot keeps its height however many runs are listed
    columns = min(3, len(handles))
    figure.set_size_inches(8, 4 + 0.25 * -(-len(handles) // columns))
    figure.legend(handles, names, loc="outside lower center", ncols=columns, frameon=False)
    figure.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
