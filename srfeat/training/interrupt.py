"""Ctrl-C during training: finish the step, save a checkpoint, then stop.

Without this, Ctrl-C raised KeyboardInterrupt wherever the step was and the run lost every
step since its last checkpoint (up to `train.checkpoint_every` of them, often minutes). Now
the first Ctrl-C only asks the loop to stop: it finishes the step in flight, saves a
checkpoint as at the end of a run, and raises `TrainingInterrupted`; `--resume` continues from
exactly there. A second Ctrl-C stops at once, as before (files being written are removed by
the atomic writers, so the last checkpoint on disk stays whole).

Only in a single process's main thread: under torchrun the launcher answers Ctrl-C by
terminating its workers itself, so the ranks could not agree on a step to stop at.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

__all__ = ["StopRequest", "TrainingInterrupted", "stop_on_interrupt"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after its checkpoint was saved; the message says how to continue.

    A KeyboardInterrupt, so that a caller's `except Exception` does not swallow it.
    """


@dataclass
class StopRequest:
    """Set by the first Ctrl-C; the loop reads it after each step."""

    requested: bool = False


@contextmanager
def stop_on_interrupt(enabled: bool = True, announce: Callable[[str], None] = logger.warning) -> Iterator[StopRequest]:
    """Within the block the first SIGINT sets the request and `announce`s it; a second raises
    KeyboardInterrupt."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked DataLoader worker: the main process decides when to stop
            return
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True
        announce(
            "Ctrl-C: finishing this step and saving a checkpoint (Ctrl-C again stops at once, "
            "losing the steps since the last checkpoint)"
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield request
    finally:
        # None: a handler installed outside Python; the default is the closest we can restore.
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
