"""ONNX Runtime against srfeat's own inference path, in the same run: which runs the model faster here.

    python3 -m benchmarks.onnx_runtime [--size 256] [--rounds 3] [--threads N] [--fp16]

Variants (interleaved, one run of each per round; ratios are paired per round against "ours"):
- "ours": `Upscaler(...).upscale_rgb`, what `srfeat upscale` runs by default (BatchNorm folded,
  NNPACK's Winograd body and srfeat's Winograd upsampler on a CPU);
- "onnxruntime, whole image": an `InferenceSession` on the `srfeat export` model with ONNX
  Runtime's defaults (all graph optimisations, its memory arena), the image in one call: what
  another app running the exported file does;
- "onnxruntime backend, untiled": `Upscaler(..., backend="onnxruntime", tile=0)`, i.e.
  `srfeat upscale --backend onnxruntime --tile 0`;
- "onnxruntime backend, auto tiles": `Upscaler(..., backend="onnxruntime")`, tiles from the
  memory plan (ONNX Runtime runs the whole network per tile, so its tiles are smaller than
  srfeat's and overlap more);
- with --fp16, "onnxruntime fp16 file, whole image": the `--fp16` export.

All share one thread count (`--threads`, default PyTorch's). The difference from "ours" is given
in 8-bit grey levels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import (
    add_common_arguments,
    add_generator_arguments,
    host_info,
    one_line_errors,
    print_table,
    require_extra,
    setup,
    summarize,
    time_interleaved,
    write_results,
)
from benchmarks.inference import grey_level_difference, load_weights
from srfeat.archs.generator import SRFeatGenerator


def build_variants(
    generator: SRFeatGenerator, image: torch.Tensor, fp16: bool
) -> dict[str, Callable[[], torch.Tensor]]:
    import onnxruntime

    from srfeat.export.onnx import ModelInfo, onnx_model
    from srfeat.inference import Upscaler

    info = ModelInfo("benchmark", "-", "-")

    def session(model_bytes: bytes) -> Callable[[], torch.Tensor]:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        run = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]).run
        batch = image.numpy()
        return lambda: torch.from_numpy(run(None, {"input": batch})[0])

    def upscale(upscaler: Upscaler) -> Callable[[], torch.Tensor]:
        return lambda: upscaler.upscale_rgb(image[0])[None]

    variants: dict[str, Callable[[], torch.Tensor]] = {
        "ours": upscale(Upscaler(generator, device="cpu")),
        "onnxruntime, whole image": session(onnx_model(generator, info).SerializeToString()),
        "onnxruntime backend, untiled": upscale(Upscaler(generator, device="cpu", backend="onnxruntime", tile=0)),
        "onnxruntime backend, auto tiles": upscale(Upscaler(generator, device="cpu", backend="onnxruntime")),
    }
    if fp16:
        variants["onnxruntime fp16 file, whole image"] = session(
            onnx_model(generator, info, fp16=True).SerializeToString()
        )
    return variants


def idle_cpu_after_one_image(model_bytes: bytes, image: torch.Tensor, idle_s: float = 0.5) -> dict[str, float]:
    """CPU seconds this process takes in the `idle_s` after one image (a warm session, its second
    image), with ONNX Runtime's threads spinning while they wait (its default) and sleeping (srfeat's
    sessions, `SPINNING_KEY` "0"): what a `serve` between images costs the machine."""
    import time

    import onnxruntime

    from srfeat.inference.onnx_runner import SPINNING_KEY

    idle = {}
    for name, spinning in (("spinning (ONNX Runtime's default)", "1"), ("sleeping (srfeat's sessions)", "0")):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry(SPINNING_KEY, spinning)
        session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        for _ in range(2):
            session.run(None, {"input": image.numpy()})
        start = time.process_time()
        time.sleep(idle_s)
        idle[name] = time.process_time() - start
    return idle


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_generator_arguments(parser)
    parser.add_argument("--fp16", action="store_true", help="also time the --fp16 export")
    args = parser.parse_args(argv)
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("the onnxruntime comparison runs on the CPU (the CPU build of onnxruntime)")
    require_extra("onnx", "onnxruntime", "onnx", "onnxscript")

    generator, weights = load_weights(args.weights)
    torch.manual_seed(1)
    image = torch.rand(1, 3, args.size, args.size)
    variants = build_variants(generator, image, args.fp16)
    print(f"{weights} on a {args.size}x{args.size} LR input, {torch.get_num_threads()} thread(s)")
    print(f"timing {', '.join(variants)}")
    outputs = {name: run() for name, run in variants.items()}  # also the first warm-up
    times = time_interleaved(
        {name: run for name, run in variants.items()}, args.rounds, max(0, args.warmup - 1), device
    )
    summary = summarize(times, "ours")
    out_pixels = (generator.scale * args.size) ** 2
    rows = []
    for name, entry in summary.items():
        entry["output_mp_per_s"] = out_pixels / entry["median_s"] / 1e6
        entry.update(grey_level_difference(outputs[name].clamp(0, 1), outputs["ours"].clamp(0, 1)))
        rows.append(
            [
                name,
                entry["median_s"],
                entry["min_s"],
                entry["output_mp_per_s"],
                entry["speedup_vs_ours"],  # > 1: faster than ours (median of per-round ratios)
                entry["max_grey_levels"],
            ]
        )
    print_table(
        f"{args.size}x{args.size} LR -> {generator.scale * args.size}x{generator.scale * args.size}, cpu, "
        f"{torch.get_num_threads()} thread(s), median of {args.rounds} rounds",
        ["variant", "median s", "min s", "out MP/s", "x ours", "max grey lv vs ours"],
        rows,
    )
    fastest = max(summary, key=lambda name: summary[name]["speedup_vs_ours"])
    print(f"fastest: {fastest} ({summary[fastest]['speedup_vs_ours']:.2f}x ours)")
    from srfeat.export.onnx import ModelInfo, onnx_model

    idle = idle_cpu_after_one_image(onnx_model(generator, ModelInfo("benchmark", "-", "-")).SerializeToString(), image)
    print(
        "CPU time of the idle process in the 0.5 s after one image: "
        + "; ".join(f"{k} {v:.3f} s" for k, v in idle.items())
    )
    import onnxruntime

    result = {
        "host": host_info(device),
        "onnxruntime": onnxruntime.__version__,
        "size": args.size,
        "weights": weights,
        "variants": summary,
        "idle_cpu_s_after_one_image": idle,
    }
    if not args.no_json:
        # one section per size and thread count: the README's table is four runs of one file
        threads = torch.get_num_threads()
        section = f"onnxruntime_cpu_{args.size}_{threads}thread{'s' if threads > 1 else ''}"
        write_results(args.json, section, result)
    return result


if __name__ == "__main__":
    with one_line_errors():
        main()
