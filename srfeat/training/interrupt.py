"""Ctrl-C, SIGTERM or SIGHUP during training: finish the step, save a checkpoint, then stop.

Without this, a signal stopped the run wherever the step was and lost every step since its
last checkpoint (up to `train.checkpoint_every` of them, often minutes), and a scheduler that
preempts jobs with SIGTERM (SLURM, Kubernetes) lost them every time. Now the first SIGINT or
SIGTERM only asks the loop to stop: it finishes the step in flight, saves a checkpoint as at
the end of a run, and raises `TrainingInterrupted`; `--resume` continues from exactly there.
SIGHUP (the terminal closed, the SSH session dropped) does the same unless it is ignored, as under
`nohup`: that run goes on; so does SIGINT, ignored in a script's background job (`srfeat train ... &`
in sh), so that the Ctrl-C that stops the script leaves the job running, as Python itself leaves it.
A hangup stops once: SIGHUP is ignored from the first on
(`ignore_further_hangups`), and a second is no request to stop at once.

In a single process a second signal does what it did before (KeyboardInterrupt; the CLI's
SIGTERM handler, which removes files being written): the last checkpoint on disk stays whole.
Under torchrun the launcher forwards every signal it gets to each worker, so a worker sees Ctrl-C
twice and cannot take the second as "at once"; there the ranks stop at the step rank 0 names (the
loop shares rank 0's request every few steps), and the launcher's SIGKILL after its shutdown
timeout (30 s by default) is the hard stop.

DataLoader workers leave the stop to the training process (`quiet_worker`): a scheduler signals
every process of the job, and a worker that died of it failed the step that was to be saved.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any

__all__ = [
    "STOP_SIGNALS",
    "StopRequest",
    "TrainingInterrupted",
    "ignore_further_hangups",
    "quiet_worker",
    "signal_name",
    "stop_on_signals",
    "stop_signals",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGINT unless ignored, and SIGHUP: `stop_signals()`
HANGUP: int | None = getattr(signal, "SIGHUP", None)  # none on Windows


def stop_signals() -> list[int]:
    """The signals that stop a training run or a server: SIGTERM, and SIGINT and SIGHUP unless they
    are ignored now: `nohup` ignores SIGHUP, and sh starts a script's background job (`srfeat train
    ... &`) with SIGINT ignored, so that the Ctrl-C that stops the script leaves the job running (as
    Python does, which sets no KeyboardInterrupt handler then). Such a run goes on."""
    return [
        number
        for number in (*STOP_SIGNALS, HANGUP)
        if number is not None and (number == signal.SIGTERM or signal.getsignal(number) != signal.SIG_IGN)
    ]


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped a run after its checkpoint was saved; the message says how to continue.

    A KeyboardInterrupt, so that a caller's `except Exception` does not swallow it.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


@dataclass
class StopRequest:
    """The first stop signal received in this process (None: none yet)."""

    signal_number: int | None = None


def signal_name(signal_number: int) -> str:
    """How a user knows the signal: Ctrl-C for SIGINT, else its name."""
    return "Ctrl-C" if signal_number == signal.SIGINT else signal.Signals(signal_number).name


def _call_previous(handler: Any, signal_number: int, frame: FrameType | None) -> None:
    """What the signal did before the loop began: a Python handler, ignored, or the default."""
    if callable(handler):
        handler(signal_number, frame)
    elif handler != signal.SIG_IGN:  # the default action, or a handler set outside Python
        signal.signal(signal_number, signal.SIG_DFL)
        os.kill(os.getpid(), signal_number)


def ignore_further_hangups() -> None:
    """Called by a SIGHUP handler: SIGHUP is ignored from now on, in this process.

    One closed terminal may send it twice: the shell passes its own on to its job, and the kernel
    signals the terminal's foreground group as the shell exits. A second, taken as a second request,
    cut short the clean stop the first began, or, once the command was done and its handlers put
    back, killed the process. One hangup is one stop."""
    if HANGUP is not None and threading.current_thread() is threading.main_thread():
        signal.signal(HANGUP, signal.SIG_IGN)


@contextmanager
def stop_on_signals(distributed: bool, announce: Callable[[str], None]) -> Iterator[StopRequest]:
    """Within the block the first stop signal (`stop_signals`) is recorded and `announce`d; a second
    SIGINT or SIGTERM acts as it would have outside the block (single process only; see the module's
    docstring). An announcement that cannot be written (a closed terminal; the stream busy with a
    write of the main thread's, which the handler interrupted) is dropped."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield request
        return
    owner = os.getpid()
    previous: dict[int, Any] = {}

    def handler(signal_number: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked DataLoader worker: the main process decides when to stop
            return
        if signal_number == HANGUP:
            ignore_further_hangups()
        if request.signal_number is not None:
            if not distributed and signal_number != HANGUP:
                _call_previous(previous[signal_number], signal_number, frame)
            return
        request.signal_number = signal_number
        at_once = not distributed and signal_number != HANGUP
        again = f" ({signal_name(signal_number)} again stops at once, losing them)" if at_once else ""
        # Raised here, it would fail the step in flight, which is to be saved: a closed terminal (EIO),
        # the stream in the middle of a write of the main thread's (RuntimeError: reentrant call).
        with suppress(Exception):
            announce(
                f"{signal_name(signal_number)}: finishing this step and saving a checkpoint of the steps "
                f"since the last one{again}"
            )

    for signal_number in stop_signals():
        previous[signal_number] = signal.signal(signal_number, handler)
    try:
        yield request
    finally:
        for signal_number, before in previous.items():
            if signal_number == HANGUP and signal.getsignal(signal_number) == signal.SIG_IGN:
                continue  # since the hangup the run stopped for: any later SIGHUP is that one
            # None: a handler set outside Python, which cannot be put back; the default is closest.
            signal.signal(signal_number, before if before is not None else signal.SIG_DFL)


def quiet_worker(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: SIGINT, SIGTERM and SIGHUP are for the training process.

    `timeout`, `kill -- -PGID`, Slurm and systemd send SIGTERM to every process of the job. PyTorch's
    SIGTERM handler in a worker (set in C, under Python's) dies of any SIGTERM but its parent's; the
    loader then raised "DataLoader worker ... is killed by signal" in the step that was to be saved,
    and the run ended with a traceback and no checkpoint; a closed terminal's SIGHUP reaches the
    workers too. So a worker ignores SIGINT and SIGHUP, and SIGTERM but its parent's: the training
    process stops it when done (or it sees that process gone), and the parent's SIGTERM still ends
    it at once, as PyTorch's handler does. Not every SIGTERM: the loader's last resort is one, and
    so is multiprocessing's at exit, which then waits for the worker without a timeout (a crash that
    left the loader alive would hang there forever).
    """
    del worker_id
    for ignored in (signal.SIGINT, HANGUP):
        if ignored is not None:
            signal.signal(ignored, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # macOS, Windows: no sender to tell apart; PyTorch's handler stays
        return
    parent = os.getppid()
    # Blocked SIGTERM waits for the thread below, which alone learns who sent it; the worker has one
    # thread now, and those it starts later inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def exit_on_parents_sigterm() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)  # as PyTorch's handler does: exit status 0 is no failure to the loader

    threading.Thread(target=exit_on_parents_sigterm, name="srfeat-sigterm", daemon=True).start()
