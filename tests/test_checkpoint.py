"""Training state files: atomic writes survive a kill, loads are safe, random states round-trip."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from srfeat.errors import WeightsError
from srfeat.training import checkpoint

REPO = Path(__file__).resolve().parents[1]

# Saves a first state, then starts a second save whose writing stalls half-way (a slow
# disk), announcing it on stdout; the test kills the process with SIGKILL at that point.
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from srfeat.training import checkpoint

    path = sys.argv[1]
    checkpoint.save_state({"step": 1, "weights": torch.ones(1000)}, path)
    real_save = torch.save

    def stalling_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\\x03\\x04 partial zip header")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)

    torch.save = stalling_save
    checkpoint.save_state({"step": 2, "weights": torch.zeros(1000)}, path)
    """
)


def test_process_killed_while_saving_leaves_the_previous_state_loadable(tmp_path) -> None:
    path = tmp_path / checkpoint.STATE_FILE
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".*.tmp")), "the interrupted write should have been going to a temporary file"
    state = checkpoint.load_state(path)
    assert state["step"] == 1 and torch.equal(state["weights"], torch.ones(1000))


def test_truncated_or_foreign_state_fails_clearly(tmp_path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(WeightsError, match="cannot read training state"):
        checkpoint.load_state(broken)
    foreign = tmp_path / "foreign.pt"
    torch.save({"step": 3}, foreign)
    with pytest.raises(WeightsError, match="not an srfeat training state"):
        checkpoint.load_state(foreign)
    with pytest.raises(WeightsError, match="no training state"):
        checkpoint.load_state(tmp_path / "absent.pt")


class Payload:
    """Any object whose unpickling would run code."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pickled code ran",))


def test_states_load_without_running_pickled_code(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.STATE_FORMAT, "payload": Payload()}, path)
    with pytest.raises(WeightsError):
        checkpoint.load_state(path)


def test_random_states_round_trip_through_a_saved_state(tmp_path) -> None:
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    random.random(), np.random.rand(), torch.rand(1)  # move away from the seeded states
    checkpoint.save_state({"rng": checkpoint.capture_rng_states()}, tmp_path / "s.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    checkpoint.restore_rng_states(checkpoint.load_state(tmp_path / "s.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_atomic_save_replaces_the_file_in_one_step(tmp_path) -> None:
    path = tmp_path / "x.pt"
    checkpoint.atomic_torch_save({"a": torch.arange(3)}, path)
    before = time.time()
    checkpoint.atomic_torch_save({"a": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(4))
    assert not list(tmp_path.glob(".*.tmp")) and path.stat().st_mtime >= before - 1
