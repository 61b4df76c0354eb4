"""Training state on disk: written atomically, read without running pickled code.

A run folder holds `state.pt`, the full training state (networks, optimizers, counters, random
states), next to the generator alone as safetensors. Every file is written to a temporary name
in the same folder, flushed to disk and then renamed over the old one (`os.replace` is atomic
on POSIX and Windows), so a process killed while saving leaves the previous file intact.

The state holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a checkpoint from someone else cannot run code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srfeat.errors import WeightsError

STATE_FILE = "state.pt"
LATEST_GENERATOR = "generator_latest.safetensors"
BEST_GENERATOR = "generator_best.safetensors"
STATE_FORMAT = "srfeat-training-state-v1"


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save to `path` via a temporary file and a rename: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state written by `save_state` (safely: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"no training state at {path}: run without --resume first, or give the run folder with --out"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise WeightsError(
            f"cannot read training state {path} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise WeightsError(f"{path} is not an srfeat training state")
    return state


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    atomic_torch_save({"format": STATE_FORMAT, **state}, path)


def capture_rng_states() -> dict[str, Any]:
    """Random states of python, numpy, torch and CUDA, as weights_only-loadable values."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # the legacy form: MT19937's (name, keys, pos, has_gauss, gauss)
    states: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate((3, tuple(states["python"]), None))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
