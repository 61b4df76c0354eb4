"""The benchmark scripts run end to end at toy sizes and write their JSON sections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

# benchmarks/ is not an installed package: import it from the checkout even under a bare `pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import inference, limits, memory, training

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python3 -m benchmarks.NAME ARGS` from the checkout, as the README runs it."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args],
        check=False,
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cpu_peak_comes_from_the_table_or_the_flags() -> None:
    peak = limits.cpu_peak(clock_override=2.0, cores=3)
    assert peak.fp32_flop_per_cycle in {16, 32, 64} or peak.flop_per_cycle_source.startswith("flags")
    assert peak.fp32_gflops == pytest.approx(2.0 * 3 * peak.fp32_flop_per_cycle)


def test_limits_and_inference_write_their_sections(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    limits.main(["--size", "16", "--rounds", "1", "--warmup", "0", "--json", str(results)])
    outcome = inference.main(["--size", "8", "--rounds", "1", "--warmup", "1", "--no-folded", "--json", str(results)])
    written = json.loads(results.read_text())
    assert set(written) == {"limits_cpu", "inference_cpu"}
    assert outcome["gflop"] == pytest.approx(2 * 8.0e6 * 64 / 1e9, rel=0.01)  # 8.0 M MAC per LR pixel
    ours = written["inference_cpu"]["variants"]["ours"]
    assert ours["max_abs_diff"] < 1e-4 and ours["speedup_vs_plain"] > 0


def test_training_benchmark_checks_the_first_step(tmp_path: Path) -> None:
    outcome = training.main(
        ["--stage", "1", "--batch", "1", "--hr-size", "32", "--rounds", "1", "--warmup", "1", "--no-json"]
    )
    variants = outcome["stage1"]["variants"]
    assert variants["ours"]["first_loss_rel_diff"] < 1e-4


def test_gnu_time_report_is_parsed() -> None:
    report = (
        "\tMaximum resident set size (kbytes): 1048576\n"
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50\n"
        "\tExit status: 0\n"
    )
    assert memory.parse_time_v(report) == {"max_rss_bytes": 1024**3, "wall_s": 62.5, "exit_status": 0}


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="GNU time not installed (apt-get install time)")
def test_memory_over_many_sizes_upscales_a_folder_of_distinct_sizes(tmp_path: Path, model_path: Path) -> None:
    folder = tmp_path / "sizes"
    folder.mkdir()
    memory.write_many_sizes(folder, 50)
    assert len({Image.open(path).size for path in folder.iterdir()}) == 50
    result = memory.main(["--sizes", "3", "--model", str(model_path), "--json", str(tmp_path / "results.json")])
    assert result["sizes"] == 3 and result["max_rss_mb"] > 0
    assert "memory_3_sizes" in json.loads((tmp_path / "results.json").read_text())


def test_onnx_runtime_benchmark_runs_every_variant(tmp_path: Path, model_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from benchmarks import onnx_runtime

    results = tmp_path / "results.json"
    common = ["--size", "12", "--rounds", "1", "--warmup", "1", "--weights", str(model_path), "--json", str(results)]
    threads = torch.get_num_threads()
    try:
        outcome = onnx_runtime.main([*common, "--threads", "1"])
        onnx_runtime.main([*common, "--threads", "2"])
    finally:
        torch.set_num_threads(threads)
    # each size and thread count keeps its own section, as the README's table needs
    assert set(json.loads(results.read_text())) == {"onnxruntime_cpu_12_1thread", "onnxruntime_cpu_12_2threads"}
    variants = outcome["variants"]
    assert set(variants) == {
        "ours",
        "onnxruntime, whole image",
        "onnxruntime backend, untiled",
        "onnxruntime backend, auto tiles",
    }
    assert all(entry["max_grey_levels"] <= 1 and entry["speedup_vs_ours"] > 0 for entry in variants.values())


@pytest.mark.parametrize(
    "content", ["my notes, not JSON\n", '[{"model": "default", "psnr": 31.65}]\n', None], ids=["text", "list", "folder"]
)
def test_a_json_option_that_is_not_a_results_file_is_refused_before_timing_and_kept(
    tmp_path: Path, content: str | None
) -> None:
    target = tmp_path / "notes.txt"
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    result = run_benchmark("benchmarks.limits", "--size", "8", "--rounds", "1", "--json", str(target))
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(target) in result.stderr
    assert "convolution" not in result.stdout  # refused before anything was timed
    assert content is None or target.read_text() == content


@pytest.mark.parametrize(
    "command",
    [
        ["limits", "--rounds", "0", "--no-json"],
        ["limits", "--device", "gpu", "--no-json"],
        ["inference", "--threads", "0", "--no-json"],
        ["inference", "--size", "0", "--no-json"],
        ["training", "--hr-size", "30", "--stage", "1", "--no-json"],
        ["onnx_runtime", "--warmup", "-1", "--no-json"],
        ["memory", "--sizes", "-1", "--no-json"],
        ["video", "--size", "64by48", "--no-json"],
        ["video", "--rounds", "0", "--no-json"],
        ["run_all", "--threads", "0"],
    ],
)
def test_bad_option_values_are_refused_in_one_line(command: list[str]) -> None:
    result = run_benchmark(f"benchmarks.{command[0]}", *command[1:])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: argument {command[1]}" in result.stderr or f"error: {command[1]}" in result.stderr


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="GNU time not installed (apt-get install time)")
def test_memory_measures_the_checkouts_srfeat_not_the_one_on_path(tmp_path: Path, model_path: Path) -> None:
    """Another install or worktree's `srfeat` first on PATH: the numbers are still this checkout's."""
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / "srfeat").write_text("#!/bin/sh\necho 'srfeat of another install' >&2\nexit 3\n")
    (elsewhere / "srfeat").chmod(0o755)
    path = f"{elsewhere}{os.pathsep}{os.environ['PATH']}"
    result = run_benchmark(
        "benchmarks.memory", "--size", "16", "--model", str(model_path), "--no-json", cwd=tmp_path, env={"PATH": path}
    )
    assert result.returncode == 0 and "another install" not in result.stderr, result.stderr
    assert "64x64" in result.stdout  # the 4x output of the 16x16 input


@pytest.mark.parametrize("command, module, extra", [("video", "av", "video"), ("onnx_runtime", "onnxruntime", "onnx")])
def test_a_missing_extra_is_named_in_one_line(tmp_path: Path, command: str, module: str, extra: str) -> None:
    """Without PyAV or ONNX Runtime (a package that does not import stands in for one not installed)."""
    (tmp_path / module).mkdir()
    (tmp_path / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module}'!r}, name={module!r})\n"
    )
    result = run_benchmark(f"benchmarks.{command}", "--no-json", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f'this benchmark needs {module}: pip install -e ".[{extra}]" in srfeat\'s folder'


@pytest.mark.parametrize(
    "command",
    [
        ["inference", "--weights", "missing.safetensors", "--size", "8", "--no-json"],
        ["onnx_runtime", "--weights", "missing.safetensors", "--size", "8", "--no-json"],
        ["video", "--model", "missing.safetensors", "--no-json"],
        ["memory", "--model", "missing.safetensors", "--size", "8", "--no-json"],
    ],
)
def test_weights_that_are_not_there_are_one_line_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    if command[0] == "memory" and not Path("/usr/bin/time").exists():
        pytest.skip("GNU time not installed (apt-get install time)")
    if command[0] == "onnx_runtime":
        pytest.importorskip("onnxruntime")
    result = run_benchmark(f"benchmarks.{command[0]}", *command[1:], cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "ERROR: generator weights not found: missing.safetensors" in result.stderr
    assert "Maximum resident set size" not in result.stderr  # memory: not GNU time's report of the failure


@pytest.mark.parametrize("enabled", [True, False])
def test_the_run_without_workers_leaves_the_setting_it_found(enabled: bool) -> None:
    """The benchmark's "intra-op threads" run turns srfeat's band workers off for the run only: after it, raising
    or not, they are as they were (they were turned on after it whatever the setting before)."""
    from srfeat.ops import workers

    def fails() -> None:
        assert workers.worker_threads() == 1  # off during the run
        raise RuntimeError("mid-benchmark")

    torch.set_num_threads(2)  # with one thread there is never more than one worker
    with workers.worker_threads_set(enabled):
        assert inference.without_workers(lambda: workers.worker_threads())() == 1
        assert workers.worker_threads() == (2 if enabled else 1)
        with pytest.raises(RuntimeError, match="mid-benchmark"):
            inference.without_workers(fails)()
        assert workers.worker_threads() == (2 if enabled else 1)
