"""The machine's limits: peak GFLOP/s from clock and vector width, and what one convolution gets.

    python3 -m benchmarks.limits [--size 256] [--rounds 5] [--clock-ghz 3.7]

Peak fp32 GFLOP/s = cores x clock x FLOP per cycle per core, with FLOP per cycle from a table
of known microarchitectures (below), else from the widest vector extension in the CPU flags.
The measured part is the generator's dominant layer, one 3x3 128 -> 128 convolution at the
generator's working size (batch 1), in NCHW and channels_last (the better one is "the
single-convolution rate"), plus, for reference, the same convolution by Winograd F(4x4, 3x3)
(its GFLOP/s counts the direct convolution's FLOPs, so it can exceed the peak) and in bfloat16.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import (
    add_common_arguments,
    host_info,
    print_table,
    setup,
    summarize,
    time_interleaved,
    write_results,
)
from srfeat.hardware import cpu_has_native_bf16

# FLOP per cycle per core in float32 = FMA units x vector lanes x 2 (an FMA is two FLOPs).
# (vendor, family, first model, last model, name, fp32 FLOP/cycle, note)
MICROARCHITECTURES: tuple[tuple[str, int, int, int, str, int, str], ...] = (
    ("AuthenticAMD", 0x17, 0x00, 0x2F, "Zen / Zen+", 16, "2 x 128-bit FMA pipes"),
    ("AuthenticAMD", 0x17, 0x30, 0xFF, "Zen 2", 32, "2 x 256-bit FMA pipes"),
    ("AuthenticAMD", 0x19, 0x00, 0x0F, "Zen 3", 32, "2 x 256-bit FMA pipes"),
    ("AuthenticAMD", 0x19, 0x20, 0x5F, "Zen 3", 32, "2 x 256-bit FMA pipes"),
    # Zen 4 has AVX-512 but executes a 512-bit FMA as two 256-bit halves on its two FMA pipes:
    # 16 fp32 FMAs per cycle, the same as AVX2.
    ("AuthenticAMD", 0x19, 0x10, 0x1F, "Zen 4", 32, "AVX-512 as 2 x 256-bit FMA pipes"),
    ("AuthenticAMD", 0x19, 0x60, 0xAF, "Zen 4", 32, "AVX-512 as 2 x 256-bit FMA pipes"),
    ("AuthenticAMD", 0x1A, 0x00, 0xFF, "Zen 5", 64, "2 x 512-bit FMA pipes (mobile parts: 256-bit, half this)"),
    ("GenuineIntel", 6, 0x55, 0x55, "Skylake/Cascade Lake-SP", 64, "2 x 512-bit FMA units (some SKUs have one)"),
    ("GenuineIntel", 6, 0x6A, 0x6C, "Ice Lake-SP", 64, "2 x 512-bit FMA units"),
    ("GenuineIntel", 6, 0x8F, 0x8F, "Sapphire Rapids", 64, "2 x 512-bit FMA units; AMX for bf16"),
    ("GenuineIntel", 6, 0xCF, 0xCF, "Emerald Rapids", 64, "2 x 512-bit FMA units; AMX for bf16"),
    ("GenuineIntel", 6, 0xAD, 0xAE, "Granite Rapids", 64, "2 x 512-bit FMA units; AMX for bf16"),
)
# Fallback: vector lanes from the widest extension in the flags, times an assumed two FMA
# units per core (true of most x86 cores since Haswell and of big Arm cores), times 2.
LANES_BY_FLAG = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4), ("asimd", 4), ("neon", 4))
ASSUMED_FMA_UNITS = 2


@dataclass
class CpuPeak:
    model_name: str
    microarchitecture: str
    cores: int
    clock_ghz: float
    clock_source: str
    fp32_flop_per_cycle: int
    flop_per_cycle_source: str
    fp32_gflops: float
    fp32_gflops_per_core: float
    bf16_gflops: float | None
    bf16_note: str


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> list[dict[str, str]]:
    processors: list[dict[str, str]] = []
    try:
        text = path.read_text()
    except OSError:
        return processors
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            if ":" in line:
                key, _, value = line.partition(":")
                entry[key.strip()] = value.strip()
        processors.append(entry)
    return processors


def physical_cores(processors: list[dict[str, str]]) -> int:
    pairs = {(p.get("physical id", "0"), p.get("core id", str(i))) for i, p in enumerate(processors)}
    return max(1, len(pairs)) if processors else max(1, torch.get_num_threads())


def cpu_clock_ghz(processors: list[dict[str, str]], override: float | None) -> tuple[float, str]:
    if override is not None:
        return override, "--clock-ghz"
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(max_freq.read_text()) / 1e6, str(max_freq)
    except (OSError, ValueError):
        pass
    if processors:
        match = re.search(r"@\s*([\d.]+)\s*GHz", processors[0].get("model name", ""))
        if match:
            return float(match.group(1)), "model name"
        if "cpu MHz" in processors[0]:
            return float(
                processors[0]["cpu MHz"]
            ) / 1000, "/proc/cpuinfo cpu MHz (nominal in a VM; boost may be higher)"
    return 0.0, "unknown"


def cpu_peak(clock_override: float | None = None, cores: int | None = None) -> CpuPeak:
    processors = read_cpuinfo()
    first = processors[0] if processors else {}
    flags = set(first.get("flags", first.get("Features", "")).split())
    vendor = first.get("vendor_id", "")
    family = int(first.get("cpu family", "0") or 0)
    model = int(first.get("model", "0") or 0) if first.get("model", "0").isdigit() else 0
    name, per_cycle, source = "unknown", 0, ""
    for table_vendor, table_family, low, high, arch, flop, note in MICROARCHITECTURES:
        if vendor == table_vendor and family == table_family and low <= model <= high:
            name, per_cycle, source = arch, flop, f"table: {arch}, {note}"
            break
    if not per_cycle:
        lanes = next((n for flag, n in LANES_BY_FLAG if flag in flags), 1)
        per_cycle = lanes * ASSUMED_FMA_UNITS * 2
        source = f"flags: {lanes} fp32 lanes x {ASSUMED_FMA_UNITS} FMA units (assumed) x 2"
    clock, clock_source = cpu_clock_ghz(processors, clock_override)
    core_count = cores if cores is not None else physical_cores(processors)
    per_core = clock * per_cycle
    bf16: float | None = None
    bf16_note = "no native bf16 arithmetic"
    if "amx_bf16" in flags:
        bf16, bf16_note = per_core * core_count * 32, "AMX tiles: 1024 bf16 FLOP/cycle/core"
    elif "avx512_bf16" in flags:
        # vdpbf16ps: two bf16 products summed into each fp32 lane per instruction.
        bf16, bf16_note = per_core * core_count * 2, "avx512_bf16 dot products: 2x the fp32 rate"
    return CpuPeak(
        model_name=first.get("model name", "unknown"),
        microarchitecture=name,
        cores=core_count,
        clock_ghz=clock,
        clock_source=clock_source,
        fp32_flop_per_cycle=per_cycle,
        flop_per_cycle_source=source,
        fp32_gflops=per_core * core_count,
        fp32_gflops_per_core=per_core,
        bf16_gflops=bf16,
        bf16_note=bf16_note,
    )


def conv_variants(size: int, device: torch.device, channels: int = 128) -> dict[str, Any]:
    """Callables running one 3x3 conv (channels -> channels) on a (1, channels, size, size) input."""
    from srfeat.ops.winograd import padded_buffer, winograd_conv3x3, winograd_filter

    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size, device=device)
    weight = torch.randn(channels, channels, 3, 3, device=device) * (2.0 / (9 * channels)) ** 0.5
    bias = torch.zeros(channels, device=device)
    x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), weight.contiguous(memory_format=torch.channels_last)
    variants: dict[str, Any] = {
        "direct fp32 NCHW": lambda: F.conv2d(x, weight, bias, padding=1),
        "direct fp32 channels_last": lambda: F.conv2d(x_cl, w_cl, bias, padding=1),
    }
    if device.type == "cpu":
        padded = padded_buffer(1, size, size, channels, x)
        padded[:, 1 : 1 + size, 1 : 1 + size] = x.permute(0, 2, 3, 1)
        filters = winograd_filter(weight)
        out = x.new_empty(1, padded.shape[1] - 2, padded.shape[2] - 2, channels)
        variants["Winograd F(4x4,3x3) fp32 (ours)"] = lambda: winograd_conv3x3(padded, filters, bias, out)
        if cpu_has_native_bf16():
            xb, wb = x_cl.bfloat16(), w_cl.bfloat16()
            variants["direct bf16 channels_last"] = lambda: F.conv2d(xb, wb, padding=1)
    else:
        for dtype, label in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
            xl, wl = x_cl.to(dtype), w_cl.to(dtype)
            variants[f"direct {label} channels_last"] = lambda xl=xl, wl=wl: F.conv2d(xl, wl, padding=1)
    return variants


def measure_conv(size: int, device: torch.device, rounds: int, warmup: int) -> dict[str, Any]:
    channels = 128
    flops = 2 * channels * channels * 9 * size * size
    print(f"\none 3x3 {channels}->{channels} convolution on (1, {channels}, {size}, {size}): {flops / 1e9:.2f} GFLOP")
    times = time_interleaved(conv_variants(size, device, channels), rounds, warmup, device)
    summary = summarize(times, "direct fp32 NCHW")
    for entry in summary.values():
        entry["gflops"] = flops / entry["median_s"] / 1e9
    direct = {k: v for k, v in summary.items() if k.startswith("direct fp32")}
    best = max(direct, key=lambda k: direct[k]["gflops"])
    return {
        "size": size,
        "channels": channels,
        "gflop": flops / 1e9,
        "variants": summary,
        "best_layout": best,
        "conv_gflops": direct[best]["gflops"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument(
        "--size",
        type=int,
        default=256,
        help="height and width of the conv input (default 256: the generator's LR size)",
    )
    parser.add_argument(
        "--clock-ghz", type=float, default=None, help="core clock for the peak (default: from sysfs or /proc/cpuinfo)"
    )
    args = parser.parse_args(argv)
    device = setup(args)

    threads = torch.get_num_threads()
    peak = cpu_peak(args.clock_ghz)
    used_cores = min(threads, peak.cores)
    peak_used = peak.fp32_gflops_per_core * used_cores
    print_table(
        "CPU peak (fp32)",
        ["quantity", "value"],
        [
            ["model", peak.model_name],
            ["microarchitecture", peak.microarchitecture],
            ["FLOP/cycle/core", f"{peak.fp32_flop_per_cycle} ({peak.flop_per_cycle_source})"],
            ["clock GHz", f"{peak.clock_ghz:.3f} ({peak.clock_source})"],
            ["physical cores", peak.cores],
            ["threads used", threads],
            ["peak GFLOP/s, all cores", peak.fp32_gflops],
            [f"peak GFLOP/s, {used_cores} core(s) used", peak_used],
            ["bf16 peak GFLOP/s", f"{peak.bf16_gflops:.0f} ({peak.bf16_note})" if peak.bf16_gflops else peak.bf16_note],
        ],
    )
    conv = measure_conv(args.size, device, args.rounds, args.warmup)
    rows = []
    for name, entry in conv["variants"].items():
        share = entry["gflops"] / peak_used if device.type == "cpu" and peak_used else float("nan")
        rows.append([name, entry["median_s"], entry["gflops"], share, entry["speedup_vs_direct fp32 NCHW"]])
    print_table(
        f"3x3 conv, {conv['gflop']:.2f} GFLOP (Winograd counted at the direct FLOPs)",
        ["variant", "median s", "GFLOP/s", "of peak", "x NCHW"],
        rows,
    )
    print(f"\nsingle-convolution rate (best layout, {conv['best_layout']}): {conv['conv_gflops']:.1f} GFLOP/s")
    if device.type == "cpu" and conv["conv_gflops"] > peak_used:
        implied = conv["conv_gflops"] / (peak.fp32_flop_per_cycle * used_cores)
        print(
            f"note: above the computed peak: the cores run at least {implied:.2f} GHz (boost), not {peak.clock_ghz:.2f}"
        )
    result = {"host": host_info(device), "cpu_peak": asdict(peak), "peak_gflops_threads_used": peak_used, "conv": conv}
    if not args.no_json:
        write_results(args.json, f"limits_{device.type}", result)
    return result


if __name__ == "__main__":
    main()
