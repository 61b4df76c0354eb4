"""Shared test fixtures."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def _give_children_the_default_stop_signals() -> None:
    """Tests send SIGINT and SIGHUP to srfeat processes they start, which inherit an ignored signal: sh
    starts a background job (`python3 -m pytest ... &` in a script) with SIGINT ignored, nohup ignores
    SIGHUP, and srfeat then rightly goes on, failing those tests. A handler of this process's own is
    not inherited: its children start with the default action. SIGINT gets Python's usual one; SIGHUP
    one that does nothing, so that the test run itself still outlives a closed terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) == signal.SIG_IGN:
        signal.signal(hangup, lambda number, frame: None)


_give_children_the_default_stop_signals()

# `pytest -n auto` (pytest-xdist, as README and .ci/run run the suite): at most this many worker processes.
# Each imports PyTorch and some tests peak at a few GiB, so a many-core machine would run out of memory
# long before it ran out of cores.
MOST_TEST_WORKERS = 4


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker a core, up to MOST_TEST_WORKERS."""
    return max(1, min(usable_cores(), MOST_TEST_WORKERS))


def _share_the_cores_among_test_workers() -> None:
    """Under pytest-xdist each worker's PyTorch would start a thread for every core, so two workers on two
    cores ran four threads that waited on each other: the suite took 139 s on a sample of its files
    against 126 s with the cores shared out (and 213 s in one process)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, usable_cores() // workers))


_share_the_cores_among_test_workers()
DATASETS = Path(os.environ.get("SRFEAT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The benchmark/training sets (Set5, Set14, BSD100, T91, BSDS200), or a skip."""
    if not (DATASETS / "Set5").is_dir():
        pytest.skip(f"benchmark datasets not found at {DATASETS} (set SRFEAT_DATASETS to their folder)")
    return DATASETS


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks run faster on one thread, and the test machine's cores are shared.

    Training test modules use it for every test: `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train and validation folders of scikit-image crops (training_helpers.write_image_folders)."""
    from training_helpers import write_image_folders

    return write_image_folders(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random generator (8 features, 2 blocks) saved as safetensors: fast CLI and Upscaler runs."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2), path)
    return path
