"""Band workers: single-threaded threads that each run whole bands of a kernel's work.

Many small tensor operations each split over all cores make every core wait for the others
once per operation; workers that each run whole bands wait once per call. srfeat's Winograd
convolutions and the inference generator's upsampler hand their bands to `run_parallel`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["run_parallel", "set_worker_threads", "worker_threads", "worker_threads_set"]

T = TypeVar("T")

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
_in_worker = threading.local()
_worker_threads = True


def _nothing() -> None:
    pass


def _start_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads, each set to one intra-op thread, all started before it is returned.

    The intra-op thread count is per thread, but `torch.set_num_threads` also sets the count
    every thread started afterwards begins with, process-wide: the workers' 1 was then the count
    of every thread a program started after its first parallel upscale (a web server's, a
    user's), each left on one core. The process's count is put back once they are set.
    """
    ready = threading.Barrier(workers + 1)
    counts: list[int] = []

    def init_worker() -> None:
        try:
            # A new thread starts with the process's count; the first to read it reads it
            # before any worker has changed it.
            counts.append(torch.get_num_threads())
            torch.set_num_threads(1)
            _in_worker.active = True
        finally:
            ready.wait()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="srfeat-winograd", initializer=init_worker)
    try:
        for _ in range(workers):  # none is idle (each waits for the others): every task starts a worker
            pool.submit(_nothing)
        ready.wait()
    except BaseException:
        ready.abort()
        pool.shutdown(wait=False)
        raise
    if counts:  # from a thread of its own: `set_num_threads` sets the calling thread's count too
        restore = threading.Thread(target=torch.set_num_threads, args=(counts[0],), name="srfeat-threads")
        restore.start()
        restore.join()
    return pool


def set_worker_threads(enabled: bool) -> None:
    """Band workers on (the default) or off: off, bands run one after the other and each
    tensor operation uses PyTorch's intra-op threads instead."""
    global _worker_threads
    _worker_threads = enabled


@contextmanager
def worker_threads_set(enabled: bool) -> Iterator[None]:
    """`set_worker_threads(enabled)` for the block, and the setting it had after it."""
    before = _worker_threads
    set_worker_threads(enabled)
    try:
        yield
    finally:
        set_worker_threads(before)


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
            pool = _pools[workers] = _start_pool(workers)
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
