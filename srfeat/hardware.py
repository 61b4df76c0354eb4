"""What the machine can do fast: checks that choose between code paths."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX) and PyTorch can use them.

    PyTorch also runs bf16 on CPUs without them (oneDNN emulates it on AVX-512), but slower
    than float32 there; so this reads the CPU's flags rather than asking PyTorch.
    """
    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
