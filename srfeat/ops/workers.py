"""Band workers: single-threaded threads that each run whole bands of a kernel's work.

Many small tensor operations each split over all cores make every core wait for the others
once per operation; workers that each run whole bands wait once per call. srfeat's Winograd
convolutions and the inference generator's upsampler hand their bands to `run_parallel`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["run_parallel", "set_worker_threads", "worker_threads"]

T = TypeVar("T")

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
_in_worker = threading.local()
_worker_threads = True


def _init_worker() -> None:
    # The intra-op thread count is per thread: each worker runs its operations on one core.
    torch.set_num_threads(1)
    _in_worker.active = True


def set_worker_threads(enabled: bool) -> None:
    """Band workers on (the default) or off: off, bands run one after the other and each
    tensor operation uses PyTorch's intra-op threads instead."""
    global _worker_threads
    _worker_threads = enabled


def worker_threads() -> int:
    """How many band workers `run_parallel` uses from this thread (1: none)."""
    return torch.get_num_threads() if _worker_threads and not getattr(_in_worker, "active", False) else 1


def run_parallel(work: Callable[[T], None], items: Sequence[T]) -> None:
    """work(item) for every item, spread over as many single-threaded workers as the calling
    thread has intra-op threads (inline when that is one, when called from a worker, or when
    `set_worker_threads(False)`).

    Many small tensor operations each split over all cores make every core wait for the
    others once per operation; workers that each run whole bands wait once per call. On a
    2-core machine with other work running, the upsampler ran 8x faster this way than with
    intra-op threads (benchmarks/README.md); `set_worker_threads(False)` is there to compare.
    """
    workers = min(worker_threads(), len(items))
    if workers <= 1:
        for item in items:
            work(item)
        return
    with _pool_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(
                workers, thread_name_prefix="srfeat-winograd", initializer=_init_worker
            )
    # Inference and grad mode are per thread: carry the caller's into the workers.
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run_share(share: Sequence[T]) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            for item in share:
                work(item)

    # Interleaved shares: bands next to each other run at the same time and share the input
    # rows they overlap on.
    futures = [pool.submit(run_share, items[k::workers]) for k in range(workers)]
    for future in futures:
        future.result()
