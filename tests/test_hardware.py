"""CPU feature checks that pick code paths, and handing freed memory back."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from srfeat.hardware import cpu_flags, is_out_of_memory


def test_cpu_flags_reads_the_first_processor(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}


def test_cpu_flags_without_cpuinfo_is_empty(tmp_path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()
    (tmp_path / "no_flags").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "no_flags") == frozenset()


# Run in a child, on a fresh heap: 3000 blocks of 96 KB (under glibc's mmap threshold, so on the
# heap) are freed but the newest, which keeps glibc from shrinking the heap's top on its own.
FRAGMENTED_HEAP = textwrap.dedent(
    """
    import numpy as np
    from srfeat.hardware import return_freed_memory

    def resident_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    blocks = [np.ones(12_000) for _ in range(3000)]
    del blocks[:-1]
    before = resident_mb()
    return_freed_memory()
    print(before, resident_mb())
    """
)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's (Linux)"
)
def test_freed_memory_goes_back_to_the_system() -> None:
    completed = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True)
    before_mb, after_mb = map(float, completed.stdout.split())
    # 275 MB were freed: before, the process still holds them; after, at most a few MB of it.
    assert before_mb - after_mb > 250, (before_mb, after_mb)


@pytest.mark.parametrize("gpu_in_use", [True, False])
def test_memory_pytorch_keeps_on_a_gpu_goes_back_between_images(monkeypatch, gpu_in_use: bool) -> None:
    """`srfeat serve --device cuda` idles between jobs holding its largest tile's memory unless
    the caching allocator hands it back; a CPU-only process must not start CUDA to do so."""
    import torch

    from srfeat.hardware import return_freed_memory

    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: gpu_in_use)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    return_freed_memory()
    assert emptied == ([True] if gpu_in_use else [])


def test_is_out_of_memory_knows_the_cpu_allocators_error_from_other_runtime_errors() -> None:
    with pytest.raises(RuntimeError) as refused:
        torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator's own refusal, a plain RuntimeError
    assert is_out_of_memory(refused.value)
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/status")
@pytest.mark.parametrize(("limit", "mapped"), [("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")])
def test_available_memory_is_the_room_left_under_an_address_space_limit(limit: str, mapped: str) -> None:
    """`ulimit -v` (or `-d`) refuses an allocation past it whatever the host has free: the checks and the tile plan
    that count on `host_available_memory` passed, and the work failed at an allocation."""
    code = textwrap.dedent(
        f"""
        import resource
        from srfeat.hardware import host_available_memory

        mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("{mapped}:"))
        resource.setrlimit(resource.{limit}, (mapped + 2**29, resource.RLIM_INFINITY))
        print(host_available_memory())
        """
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 2**28 < int(child.stdout) <= 2**29, child.stdout  # 512 MiB were left to map
