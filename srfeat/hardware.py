"""What the machine has and can do: checks that choose between code paths, free memory, and handing memory back."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from srfeat.errors import SRFeatError

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


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation that failed: Python's `MemoryError`, a GPU's
    `torch.OutOfMemoryError`, or the CPU allocator's, which is a plain `RuntimeError` (under a
    memory limit: `ulimit -v`, a container without overcommit, Windows)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


@contextmanager
def one_line_if_out_of_memory(message: Callable[[], str | SRFeatError]) -> Iterator[None]:
    """An allocation that fails in the block (`is_out_of_memory`) raised as `SRFeatError(message())`, one
    line for the user (or as `message()` itself, where that is an `SRFeatError` of its own kind); any other
    error as it is. `message` is called only then (it may look at files)."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        said = message()
        raise (said if isinstance(said, SRFeatError) else SRFeatError(said)) from error


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX) and PyTorch can use them.

    PyTorch also runs bf16 on CPUs without them (oneDNN emulates it on AVX-512), but slower
    than float32 there; so this reads the CPU's flags rather than asking PyTorch.
    """
    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_MOUNT = Path("/sys/fs/cgroup")


def _read_bytes(path: Path) -> int | None:
    """A number of bytes from a cgroup file, or None where it is missing, `max` or unlimited (v1's 2**63 - 4096)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < 1 << 60 else None


def _stat_bytes(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == field and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_levels(proc_cgroup: Path, mount: Path) -> Iterator[tuple[Path, bool]]:
    """Each folder of this process's memory cgroup, from its own up to the mount's root, with whether it is
    cgroup v2. A group named in /proc/self/cgroup but not under the mount (a container that sees only its own
    group, mounted at the root) is skipped; the root is always read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" and (mount / "cgroup.controllers").is_file():  # v2 (unified) at the mount
            root, unified = mount, True
        elif "memory" in controllers.split(",") and (mount / "memory").is_dir():  # v1's memory controller
            root, unified = mount / "memory", False
        else:
            continue
        folder = root / group.strip("/")
        while folder != root and root in folder.parents:
            if folder.is_dir():
                yield folder, unified
            folder = folder.parent
        yield root, unified
        return


def cgroup_memory_room(proc_cgroup: Path | None = None, mount: Path | None = None) -> int | None:
    """Bytes this process's memory cgroups still let it use, or None where none sets a limit.

    A container's or a batch job's limit is what matters there, not the host's free memory; and what is
    left of it, not the limit: a container already using 3 of its 4 GB has 1 GB for an image, and the
    kernel's OOM killer ends the process past it. At each level from the process's own group up (a Slurm
    job's limit is set on a group above the one it runs in), the room is the limit less what the group
    uses, its inactive file cache counted as free (the kernel drops that before it kills).
    """
    room = None
    for folder, unified in _cgroup_levels(proc_cgroup or PROC_CGROUP, mount or CGROUP_MOUNT):
        names = (
            ("memory.max", "memory.current", "inactive_file")
            if unified
            else ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        )
        limit = _read_bytes(folder / names[0])
        if limit is None:
            continue
        used = max(0, (_read_bytes(folder / names[1]) or 0) - _stat_bytes(folder / "memory.stat", names[2]))
        left = max(0, limit - used)
        room = left if room is None else min(room, left)
    return room


def _process_status(field: str) -> int | None:
    """A size in bytes from /proc/self/status (`VmSize`, `VmData`), or None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _room_under_address_space_limits() -> int | None:
    """Bytes this process may still map under its `ulimit -v` (RLIMIT_AS) and `ulimit -d` (RLIMIT_DATA), or
    None where neither is set.

    Batch systems and containers set these, and the kernel refuses an allocation past them however much
    memory the host has free: MemAvailable alone let a check pass and the work fail at an allocation later.
    What counts is the limit less what the process has mapped already (VmSize, VmData), not the limit:
    PyTorch's libraries map 0.6 GB at import (PyPI's CUDA build about 3 GB, most never touched).
    """
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    room = None
    for limit_kind, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _hard = resource.getrlimit(limit_kind)
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        left = max(0, soft - (_process_status(field) or 0))
        room = left if room is None else min(room, left)
    return room


def host_available_memory() -> int:
    """Bytes of the host's memory available to this process: MemAvailable, within the room left under its
    container's or job's memory limit (`cgroup_memory_room`) and under its address-space limits (`ulimit -v`,
    `ulimit -d`)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 << 30  # no way to ask (not Linux): assume a modest machine
    limits = [limit for limit in (cgroup_memory_room(), _room_under_address_space_limits()) if limit is not None]
    return min([available, *limits])


@functools.cache
def _glibc_malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the system: glibc's `malloc_trim` (nothing elsewhere), and
    the GPU memory PyTorch's caching allocator keeps unused (`torch.cuda.empty_cache`).

    glibc keeps what a finished image freed inside its arenas, shaped by that image's sizes;
    over a folder or a server's day of images of many sizes the process then holds hundreds of
    MB it no longer uses (`benchmarks/memory.py --sizes`). Called between images, it costs
    milliseconds against an upscale's seconds.
    """
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)
    if torch.cuda.is_initialized():  # a shared GPU gets back what PyTorch's allocator kept (a server idles)
        torch.cuda.empty_cache()
