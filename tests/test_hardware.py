"""CPU feature checks that pick code paths."""

from __future__ import annotations

from srfeat.hardware import cpu_flags


def test_cpu_flags_reads_the_first_processor(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}


def test_cpu_flags_without_cpuinfo_is_empty(tmp_path) -> None:
    assert cpu_flags(tmp_path / "missing") == frozenset()
    (tmp_path / "no_flags").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "no_flags") == frozenset()
