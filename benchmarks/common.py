"""Shared pieces of the benchmark scripts: interleaved timing, tables, the results file.

Timings on a shared or throttling machine drift; variants are therefore timed in interleaved
rounds (one run of each variant per round) and compared by the median of their per-round
ratios, which cancels drift slower than a round.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from srfeat.files import write_file_atomically

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def whole_number(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `low` (a count, a size), refused in one line."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def device_name(text: str) -> str:
    """An argparse type: a device torch knows (cpu, cuda, cuda:N, ...)."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N") from None
    return text


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=whole_number(1), default=None, help="intra-op threads (default: PyTorch's, one per core)"
    )
    parser.add_argument(
        "--rounds", type=whole_number(1), default=3, help="timed rounds, each running every variant once (default: 3)"
    )
    parser.add_argument(
        "--warmup", type=whole_number(0), default=1, help="untimed runs of each variant first (default: 1)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help=f"results file to update (default: {RESULTS_DIR}/<host>.json)"
    )
    parser.add_argument("--no-json", action="store_true", help="print only")


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    """The input size and weights of the benchmarks that time the generator on one image."""
    parser.add_argument("--size", type=whole_number(1), default=256, help="LR input height and width (default 256)")
    parser.add_argument(
        "--weights", default=None, help="bundled name or checkpoint (default: 'default' if installed, else random)"
    )


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What srfeat reports as a user's mistake (weights not found, not a generator) as the one line
    its commands print, not a traceback."""
    from srfeat.errors import SRFeatError

    try:
        yield
    except SRFeatError as error:
        raise SystemExit(f"ERROR: {error}") from None


def require_extra(extra: str, *modules: str) -> None:
    """Exits in one line naming the extra to install where one of `modules` does not import."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise SystemExit(f'this benchmark needs {name}: pip install -e ".[{extra}]" in srfeat\'s folder') from None


def setup(args: argparse.Namespace) -> torch.device:
    if not args.no_json:
        check_results_file(args.json)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but no CUDA GPU is available")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    variants: Mapping[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device, log: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each variant: `warmup` untimed calls each, then `rounds` rounds
    that call every variant once, in order."""
    for name, run in variants.items():
        for _ in range(warmup):
            run()
        synchronize(device)
        if log:
            print(f"  warmed up {name}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        for name, run in variants.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
        if log:
            print(
                f"  round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()),
                flush=True,
            )
    return times


def paired_speedup(times: dict[str, list[float]], variant: str, baseline: str) -> float:
    """Median over rounds of baseline time / variant time in the same round."""
    return statistics.median(b / v for b, v in zip(times[baseline], times[variant], strict=True))


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, Any]]:
    """Each variant's timing record; callers add their own fields (precision, losses) before writing it out."""
    return {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "speedup_vs_" + baseline: paired_speedup(times, name, baseline),
            "rounds": len(values),
        }
        for name, values in times.items()
    }


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_format(c) for c in row] for row in rows]
    numeric = [[isinstance(c, (int, float)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row, is_number in zip(cells, numeric, strict=True):
        aligned = (c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, is_number, strict=True))
        print("  ".join(aligned).rstrip())


def _format(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def host_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def results_path(path: Path | None) -> Path:
    return path if path is not None else RESULTS_DIR / f"{socket.gethostname()}.json"


def _read_results(target: Path) -> dict[str, Any]:
    """The sections already in `target` ({} for a new file); exits in one line where `target` is
    not a results file, which is kept as it is (it may be anything the user named by mistake)."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SystemExit(f"--json {target}: {ancestor} is not a folder")
    if target.is_dir():
        raise SystemExit(f"--json {target} is a folder: give a .json file")
    if not target.exists():
        return {}
    try:
        text = target.read_text()
        results = json.loads(text) if text.strip() else {}  # an empty file holds nothing to keep
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"--json {target} is not a benchmark results file ({error}): give another file") from None
    if not isinstance(results, dict):
        raise SystemExit(
            f"--json {target} holds a JSON {type(results).__name__}, not benchmark results: give another file"
        )
    return results


def check_results_file(path: Path | None) -> None:
    """Before any timing: exits in one line where the results file could not be updated."""
    _read_results(results_path(path))


def write_results(path: Path | None, section: str, data: dict[str, Any]) -> Path:
    """Update one section of the JSON results file (other sections are kept)."""
    target = results_path(path)
    results = _read_results(target)
    results[section] = data
    # written beside and renamed (srfeat's own writer): an interrupted write leaves the earlier sections whole
    text = (json.dumps(results, indent=2, sort_keys=True) + "\n").encode()
    write_file_atomically(target, lambda handle: handle.write(text), len(text))
    print(f"\nwrote {section} to {target}")
    return target


def conv_macs(model: torch.nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu") -> int:
    """Multiply-adds of the model's convolutions and linear layers for one input of this shape.

    Counted by hooks on a forward pass at a small size and scaled by the pixel count, which
    is exact for networks of 'same'-padded convolutions like the generator.
    """
    batch, channels, height, width = input_shape
    probe = 8
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, probe, probe, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total * batch * height * width // (probe * probe)
