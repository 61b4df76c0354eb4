"""Generator inference: our path against a plain eager forward, side by side.

    python3 -m benchmarks.inference [--size 256] [--rounds 3] [--device cpu|cuda] [--compile]

Variants (interleaved, one run of each per round):
- "plain": `SRFeatGenerator` as trained (BatchNorm modules, eval mode), fp32, NCHW, under
  `torch.no_grad()`: what a straightforward reimplementation runs; the baseline;
- "folded, library convolutions": `srfeat.inference.InferenceGenerator(algorithm="direct")`
  (BatchNorm folded, channels_last), fp32: what folding alone gives;
- "ours": exactly what users run, `srfeat.inference.Upscaler(...).upscale_rgb` (an
  `InferenceGenerator` with algorithm "auto": on a CPU NNPACK's Winograd for the body where
  available and srfeat's Winograd F(4x4, 3x3) upsampler; on a GPU folded, channels_last), fp32;
  "ours, intra-op threads" (several threads): srfeat's band workers off, to compare the two
  ways of using the cores; "srfeat Winograd only": algorithm "winograd" (CPUs without NNPACK);
- "ours bf16" (CPU with avx512_bf16, or GPU), "ours fp16" (GPU): the Upscaler in that
  precision; with --compile the plain generator and the Upscaler's `compile=True`. Reduced
  precision is reported with its difference in grey levels;
- with --tta "ours, tta": the Upscaler's self-ensemble (`tta=True`: eight orientations, each
  through `upscale_rgb`, averaged), to put a number on its cost.

GFLOP/s counts the direct convolutions' FLOPs (2 x multiply-adds, 8.0 M multiply-adds per LR
pixel), whatever algorithm ran; "of conv" is that rate over the single-convolution rate
measured in the same run (benchmarks.limits), "of peak" over the CPU's computed peak.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from benchmarks.common import (
    add_common_arguments,
    add_generator_arguments,
    conv_macs,
    host_info,
    one_line_errors,
    print_table,
    setup,
    summarize,
    time_interleaved,
    write_results,
)
from benchmarks.limits import cpu_peak, measure_conv
from srfeat.archs.generator import SRFeatGenerator
from srfeat.hardware import cpu_has_native_bf16

T = TypeVar("T")


def load_weights(spec: str | None) -> tuple[SRFeatGenerator, str]:
    """A bundled model or checkpoint, or (none installed) a seeded random generator whose
    BatchNorm statistics are not the identity, so that folding them is exercised."""
    from srfeat.weights import bundled_names, load_generator

    if spec is None and "default" in bundled_names():
        spec = "default"
    if spec is not None:
        return load_generator(spec, "cpu"), spec
    torch.manual_seed(0)
    generator = SRFeatGenerator()
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return generator.eval(), "random (seed 0)"


def build_variants(
    generator: SRFeatGenerator,
    image: torch.Tensor,
    device: torch.device,
    compile_: bool,
    include_folded: bool,
    tta: bool = False,
) -> dict[str, tuple[Callable[[], torch.Tensor], str]]:
    """name -> (callable returning the output, precision)."""
    from srfeat.inference import InferenceGenerator, Upscaler
    from srfeat.inference.fused import Algorithm

    plain = generator.to(device).eval()
    x = image.to(device)

    def no_grad(model: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return model(inp)

        return run

    def upscale(upscaler: Upscaler) -> Callable[[], torch.Tensor]:
        # What `srfeat upscale` and `Upscaler(...)(image)` run: the image on the host, tiles
        # planned from the free memory (one tile at benchmark sizes), the result on the host.
        return lambda: upscaler.upscale_rgb(image[0])[None]

    def folded(algorithm: Algorithm) -> Callable[[], torch.Tensor]:
        model = InferenceGenerator(generator, algorithm=algorithm).to(device)
        # Module.to accepts memory_format at run time; torch's typed overloads leave it out.
        model = model.to(memory_format=model.memory_format)  # pyright: ignore[reportCallIssue]
        return lambda: model(x.contiguous(memory_format=model.memory_format))

    variants: dict[str, tuple[Callable[[], torch.Tensor], str]] = {"plain": (no_grad(plain, x), "fp32")}
    if include_folded:
        variants["folded, library convolutions (algorithm='direct')"] = (folded("direct"), "fp32")
    ours = Upscaler(generator, device=device)
    variants["ours"] = (upscale(ours), "fp32")
    if tta:
        from srfeat.inference.ensemble import self_ensemble

        variants["ours, tta"] = (lambda: self_ensemble(ours.upscale_rgb, image[0])[None], "fp32")
    if device.type == "cpu" and torch.get_num_threads() > 1:
        variants["ours, intra-op threads"] = (without_workers(upscale(ours)), "fp32")
    if device.type == "cpu" and isinstance(ours.model, InferenceGenerator) and ours.model.use_nnpack:
        # srfeat's Winograd kernels alone: what "auto" runs where PyTorch has no NNPACK.
        variants["srfeat Winograd only (algorithm='winograd')"] = (folded("winograd"), "fp32")
    low_precisions = [torch.bfloat16] if device.type == "cpu" and cpu_has_native_bf16() else []
    if device.type == "cuda":
        low_precisions = [torch.float16, torch.bfloat16]
    for dtype in low_precisions:
        label = "bf16" if dtype == torch.bfloat16 else "fp16"
        variants[f"ours {label}"] = (upscale(Upscaler(generator, device=device, dtype=dtype)), label)
    if compile_:
        variants["plain, compiled"] = (no_grad(torch.compile(plain), x), "fp32")
        # Upscaler(compile=True): the library-convolution path through torch.compile.
        variants["ours, compiled"] = (upscale(Upscaler(generator, device=device, compile=True)), "fp32")
        for dtype in low_precisions:
            label = "bf16" if dtype == torch.bfloat16 else "fp16"
            variants[f"ours {label}, compiled"] = (
                upscale(Upscaler(generator, device=device, dtype=dtype, compile=True)),
                label,
            )
    return variants


def without_workers(run: Callable[[], T]) -> Callable[[], T]:
    """`run` with srfeat's band workers off: each operation uses PyTorch's intra-op threads."""
    from srfeat.ops.workers import worker_threads_set

    def wrapped() -> T:
        with worker_threads_set(False):  # the setting it had after, even when `run` raises
            return run()

    return wrapped


def grey_level_difference(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Differences of the clamped outputs (the Upscaler clamps right after the network, the plain
    forward does not), and after converting both to 8-bit images (x255, round)."""
    output, reference = output.float().clamp(0, 1), reference.float().clamp(0, 1)
    diff = ((output * 255).round() - (reference * 255).round()).abs()
    return {
        "max_abs_diff": (output - reference).abs().max().item(),
        "max_grey_levels": diff.max().item(),
        "mean_grey_levels": diff.mean().item(),
        "pixels_differing": (diff > 0).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    add_generator_arguments(parser)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd forms")
    parser.add_argument("--no-folded", action="store_true", help="skip the folded-only variant (algorithm='direct')")
    parser.add_argument("--clock-ghz", type=float, default=None, help="core clock for the CPU peak")
    parser.add_argument("--tta", action="store_true", help="also time the self-ensemble (Upscaler(tta=True))")
    args = parser.parse_args(argv)
    device = setup(args)

    generator, weights = load_weights(args.weights)
    macs = conv_macs(generator, (1, 3, args.size, args.size))
    flops = 2 * macs
    out_pixels = (generator.scale * args.size) ** 2
    torch.manual_seed(1)
    image = torch.rand(1, 3, args.size, args.size)
    print(
        f"generator ({weights}) on a {args.size}x{args.size} LR input: {flops / 1e9:.0f} GFLOP, "
        f"{macs / args.size**2 / 1e6:.2f} M MAC per LR pixel"
    )

    conv = measure_conv(args.size, device, max(2, args.rounds), 1)
    variants = build_variants(generator, image, device, args.compile, not args.no_folded, args.tta)
    print(f"\ntiming {', '.join(variants)}")
    outputs = {name: run() for name, (run, _) in variants.items()}  # also the first warm-up
    times = time_interleaved(
        {name: run for name, (run, _) in variants.items()}, args.rounds, max(0, args.warmup - 1), device
    )
    summary = summarize(times, "plain")

    threads = torch.get_num_threads()
    peak = cpu_peak(args.clock_ghz) if device.type == "cpu" else None
    peak_used = peak.fp32_gflops_per_core * min(threads, peak.cores) if peak else None
    rows = []
    for name, entry in summary.items():
        precision = variants[name][1]
        entry["precision"] = precision
        entry["gflops"] = flops / entry["median_s"] / 1e9
        entry["output_mp_per_s"] = out_pixels / entry["median_s"] / 1e6
        entry["of_conv_rate"] = entry["gflops"] / conv["conv_gflops"]
        entry["of_peak"] = entry["gflops"] / peak_used if peak_used else None
        entry.update(grey_level_difference(outputs[name].cpu(), outputs["plain"].cpu()))
        rows.append(
            [
                name,
                precision,
                entry["median_s"],
                entry["gflops"],
                entry["output_mp_per_s"],
                entry["speedup_vs_plain"],
                entry["of_conv_rate"],
                entry["of_peak"] if entry["of_peak"] is not None else "-",
                entry["max_abs_diff"],
                entry["max_grey_levels"],
            ]
        )
    print_table(
        f"generator inference, {args.size}x{args.size} LR -> "
        f"{generator.scale * args.size}x{generator.scale * args.size}, "
        f"{device}, {threads} thread(s), median of {args.rounds} rounds",
        [
            "variant",
            "prec",
            "median s",
            "GFLOP/s",
            "out MP/s",
            "x plain",
            "of conv",
            "of peak",
            "max |diff|",
            "max grey lv",
        ],
        rows,
    )
    print(
        f"single-convolution rate: {conv['conv_gflops']:.1f} GFLOP/s ({conv['best_layout']})"
        + (f"; peak {peak_used:.0f} GFLOP/s" if peak_used else "")
    )
    result = {
        "host": host_info(device),
        "size": args.size,
        "weights": weights,
        "gflop": flops / 1e9,
        "conv": conv,
        "peak_gflops_threads_used": peak_used,
        "variants": summary,
    }
    if not args.no_json:
        write_results(args.json, f"inference_{device.type}", result)
    return result


if __name__ == "__main__":
    with one_line_errors():
        main()
