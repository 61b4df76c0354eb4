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


def write_cgroup(folder, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


GIB = 2**30


def test_memory_room_is_what_a_v2_job_group_above_the_process_leaves(tmp_path) -> None:
    """A Slurm job's limit sits on a group above the one its task runs in; the root's memory.max (none there)
    was the only one read, and a limit was taken whole however much of it the job already used."""
    from srfeat.hardware import cgroup_memory_room

    mount = tmp_path / "cgroup"
    write_cgroup(mount, cgroup_controllers="cpu memory")
    job = mount / "slurm" / "job_7"
    write_cgroup(job, memory_max=str(8 * GIB), memory_current=str(6 * GIB), memory_stat=f"inactive_file {GIB}\n")
    write_cgroup(job / "step_0", memory_max="max", memory_current=str(5 * GIB))
    proc = tmp_path / "cgroup_of_process"
    proc.write_text("0::/slurm/job_7/step_0\n")
    assert cgroup_memory_room(proc, mount) == 3 * GIB  # 8 less 6 used, of which 1 is cache it can drop

    write_cgroup(job / "step_0", memory_max=str(2 * GIB), memory_current=str(GIB // 2))
    assert cgroup_memory_room(proc, mount) == GIB + GIB // 2  # the tighter of the two levels


def test_memory_room_of_a_v1_container_mounted_at_its_own_group(tmp_path) -> None:
    """Docker on cgroup v1 names the host's group (/docker/ID) but mounts the container's own at the root."""
    from srfeat.hardware import cgroup_memory_room

    mount = tmp_path / "cgroup"
    stat = f"cache {GIB}\ninactive_file 1\ntotal_inactive_file {GIB // 2}\n"
    write_cgroup(mount / "memory", memory_limit_in_bytes=str(4 * GIB), memory_usage_in_bytes=str(3 * GIB))
    (mount / "memory" / "memory.stat").write_text(stat)
    proc = tmp_path / "cgroup_of_process"
    proc.write_text("5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n")
    assert cgroup_memory_room(proc, mount) == GIB + GIB // 2

    (mount / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_memory_room(proc, mount) is None
    assert cgroup_memory_room(tmp_path / "not_linux", mount) is None


def test_available_memory_counts_the_cgroup_room(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srfeat import hardware

    mount = tmp_path / "cgroup"
    write_cgroup(mount, cgroup_controllers="memory", memory_max=str(GIB), memory_current=str(GIB - 2**20))
    proc = tmp_path / "cgroup_of_process"
    proc.write_text("0::/\n")
    monkeypatch.setattr(hardware, "PROC_CGROUP", proc)
    monkeypatch.setattr(hardware, "CGROUP_MOUNT", mount)
    assert hardware.host_available_memory() == 2**20
