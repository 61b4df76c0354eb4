"""All benchmarks in one run, one JSON file: limits, inference, training, peak memory, ONNX Runtime.

    python3 -m benchmarks.run_all [--device cpu|cuda] [--quick] [--skip training memory onnx] [--json PATH]

Full run on a quiet 2-core CPU: about 4 minutes on Zen 5 (benchmarks/README.md; the 1000x1000
`srfeat upscale` takes about one of them, 51 s), several times that on a busy machine. --quick
uses smaller sizes and fewer rounds. The ONNX
Runtime comparison runs on a CPU where the `onnx` extra is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from benchmarks import inference, limits, memory, training
from benchmarks.common import check_results_file, device_name, one_line_errors, results_path, whole_number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--threads", type=whole_number(1), default=None)
    parser.add_argument(
        "--rounds", type=whole_number(1), default=None, help="timed rounds per benchmark (default 3; 2 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="inference at 128x128, memory at 256x256, training batch 4"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=("limits", "inference", "training", "memory", "onnx"))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    check_results_file(args.json)
    path = str(results_path(args.json))
    rounds = str(args.rounds or (2 if args.quick else 3))
    common = ["--device", args.device, "--rounds", rounds, "--json", path]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    compile_ = ["--compile"] if args.compile else []
    if "limits" not in args.skip:
        limits.main([*common, "--size", "128" if args.quick else "256"])
    if "inference" not in args.skip:
        inference.main([*common, "--size", "128" if args.quick else "256", *compile_])
    if "training" not in args.skip:
        training.main([*common, *(["--batch", "4"] if args.quick else []), *compile_])
    if "memory" not in args.skip and args.device == "cpu":
        memory.main(["--size", "256" if args.quick else "1000", "--json", path])
    onnx_installed = all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnxscript"))
    if "onnx" not in args.skip and args.device == "cpu" and onnx_installed:
        from benchmarks import onnx_runtime

        onnx_runtime.main([*common, "--size", "128" if args.quick else "256"])
    print(f"\nall results in {path}")


if __name__ == "__main__":
    with one_line_errors():
        main()
