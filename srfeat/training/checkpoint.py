"""Training state on disk: written atomically, read without running pickled code.

A run folder holds `state.pt`, the full training state (networks, optimizers, counters, random
states), next to the generator alone as safetensors. Every file is written to a temporary name
in the same folder, flushed to disk and then renamed over the old one (`os.replace` is atomic
on POSIX and Windows), so a process killed while saving leaves the previous file intact; the
next run in the folder removes such a process's temporaries (`clean_run_folder`). A checkpoint
writes both files before renaming either, so a failed save (a full disk) keeps the previous
`generator_latest` and `state.pt`, from the same step; a kill between the renames can leave the
generator one checkpoint ahead, so a resumed run rewrites it from the state it resumes. Weights
that are not finite or have exploded are never saved (`diverged_weights`).

The state holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a checkpoint from someone else cannot run code.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srfeat.errors import WeightsError
from srfeat.files import (
    DiskFullError,
    PendingFile,
    remove_stale_temporaries,
    write_file_atomically,
    write_files_atomically,
)
from srfeat.path_checks import unreadable_message
from srfeat.training.config import train_option
from srfeat.weights.checks import odd_tensor
from srfeat.weights.file_kinds import (
    DAMAGED_ZIP,
    DAMAGED_ZIP_ERRORS,
    PYTORCH,
    compressed_records,
    identify_file,
    tensor_records,
    torch_load_quietly,
    unpickling_problem,
)

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
LATEST_GENERATOR = "generator_latest.safetensors"
BEST_GENERATOR = "generator_best.safetensors"
# the averaged generator (train.ema_decay) at the last checkpoint
EMA_GENERATOR = "generator_ema.safetensors"
# the run's resolved config, which `--resume` can be given
CONFIG_FILE = "config.yaml"
STATE_FORMAT = "srfeat-training-state-v1"
# What killed runs of older versions left: the plot's temporary had no process id.
LEGACY_TEMPORARIES = (".training.png.tmp.png",)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state (what torch.save writes, less a little overhead)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def _torch_save(obj: Any, handle: Any) -> None:
    """torch.save into `handle`; an OSError of the file (a full disk or quota, a file size limit), or a
    second Ctrl-C or SIGTERM in the middle of a write, raised as itself: torch's archive writer, closing on
    it, replaced it with "RuntimeError: ... unexpected pos", which no full-disk or interrupt handling
    recognised (a traceback, where a quota fills past the free-space check or the user stops at once)."""
    try:
        torch.save(obj, handle)
    except RuntimeError as error:
        cause = error.__context__
        while cause is not None and isinstance(cause, Exception) and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None


def state_file(obj: Any, path: str | os.PathLike[str]) -> PendingFile:
    return PendingFile(Path(path), lambda handle: _torch_save(obj, handle), tensor_bytes(obj) + 64 * 1024)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save to `path` via a temporary file and a rename: all or nothing."""
    file = state_file(obj, path)
    write_file_atomically(file.path, file.write, file.size)


def clean_run_folder(out_dir: str | os.PathLike[str]) -> None:
    """Remove the temporaries that a killed run left in its folder (files of this module only)."""
    out_dir = Path(out_dir)
    for name in (STATE_FILE, LATEST_GENERATOR, BEST_GENERATOR, EMA_GENERATOR):
        remove_stale_temporaries(out_dir / name)
    for name in LEGACY_TEMPORARIES:
        (out_dir / name).unlink(missing_ok=True)


def diverged_weights(networks: Mapping[str, nn.Module]) -> str | None:
    """None when every network's weights are finite (and the generator's sane); else what is wrong.

    Only the generator has a magnitude bound (srfeat.weights.MAX_WEIGHT_MAGNITUDE): it is what
    gets saved and shipped, and a healthy one stays far below it; the discriminators' statistics
    are not so well known, so for them only NaN and inf count.
    """
    from srfeat.weights import MAX_WEIGHT_MAGNITUDE, weight_problem

    for name, network in networks.items():
        bound = MAX_WEIGHT_MAGNITUDE if name == "generator" else math.inf
        problem = weight_problem(network.state_dict().items(), bound)
        if problem is not None:
            return f"the {name}'s {problem}"
    return None


def last_good_checkpoint(out_dir: str | os.PathLike[str], step: int) -> str:
    """Where the last checkpoint a stopped run keeps is, for its error message."""
    if (Path(out_dir) / STATE_FILE).is_file():
        return f"the last good checkpoint (step {step}) is in {out_dir}"
    return f"no checkpoint was saved in {out_dir}"


def save_checkpoint(
    generator: nn.Module,
    state: dict[str, Any],
    out_dir: str | os.PathLike[str],
    ema_generator: nn.Module | None = None,
    *,
    command_line: bool = False,
) -> None:
    """generator_latest.safetensors and state.pt of one step (and generator_ema.safetensors when
    `ema_generator` is given): all written, then all renamed.

    A failure while writing any (a full disk: `srfeat.files.DiskFullError`, naming the file
    and the space needed) replaces none and leaves no temporary.
    """
    files = generator_files(generator, out_dir, ema_generator)
    try:
        write_files_atomically([*files, state_file({"format": STATE_FORMAT, **state}, Path(out_dir) / STATE_FILE)])
    except OSError as error:
        if error.errno != errno.EFBIG:
            raise
        raise DiskFullError(
            f"cannot write the checkpoint ({', '.join(file.path.name for file in files)}, {STATE_FILE}) in {out_dir}: "
            f"{error.strerror or error} (a file size limit, `ulimit -f`, or the file system's largest file); "
            "the previous checkpoint is kept: raise the limit or choose another run folder, then "
            f"{train_option('resume', command_line=command_line)}"
        ) from error


def save_generators(
    generator: nn.Module, out_dir: str | os.PathLike[str], ema_generator: nn.Module | None = None
) -> None:
    """generator_latest.safetensors (and generator_ema.safetensors) alone, atomically.

    A resumed run writes them from the state it resumes: a run killed between the renames of a
    checkpoint can leave them one checkpoint ahead of state.pt, and the folder should not hold
    weights from steps that the resumed run discards.
    """
    write_files_atomically(generator_files(generator, out_dir, ema_generator))


def generator_files(
    generator: nn.Module, out_dir: str | os.PathLike[str], ema_generator: nn.Module | None
) -> list[PendingFile]:
    from srfeat.weights import generator_file

    out_dir = Path(out_dir)
    # the training state holds its networks as nn.Module; the generators are always SRFeatGenerators
    files = [generator_file(generator, out_dir / LATEST_GENERATOR)]  # pyright: ignore[reportArgumentType]
    if ema_generator is not None:
        # as above: an SRFeatGenerator held as nn.Module
        files.append(generator_file(ema_generator, out_dir / EMA_GENERATOR))  # pyright: ignore[reportArgumentType]
    return files


def load_state(path: str | os.PathLike[str], *, command_line: bool = False) -> dict[str, Any]:
    """Read a training state written by `save_state` (safely: weights_only). Its refusals name `train`'s
    keywords (out_dir, resume=True), or with `command_line` `srfeat train`'s flags."""
    path = Path(path)
    resume, out = (train_option(name, command_line=command_line) for name in ("resume", "out_dir"))
    if path.is_dir():
        raise WeightsError(f"{path} is a folder: give the run folder with {out}, whose {STATE_FILE} is resumed")
    if not path.is_file():
        raise WeightsError(
            f"no training state at {path}: run without {resume} first, or give the run folder with {out}"
        )
    try:
        kind = identify_file(path)
    except OSError as error:
        raise WeightsError(unreadable_message(path, error, STATE_AGAIN, what="training state")) from error
    if kind.name == DAMAGED_ZIP:  # torch said "[Errno 22] Invalid argument", or its zip reader's paragraph
        raise _unreadable_state(path, f"it is {kind.description}")
    if kind.name != PYTORCH:  # torch.load would call a PNG "pickled objects" and a text file "KeyError"
        raise WeightsError(f"{path} is {kind.description}, not a training state ({STATE_FILE}) written by srfeat train")
    try:
        compressed = compressed_records(tensor_records(path))
    except (*DAMAGED_ZIP_ERRORS, OSError):
        compressed = False  # torch's older format (no zip), or a damaged zip: torch.load says which
    if compressed:
        raise WeightsError(
            f"refusing training state {path}: it holds its tensors compressed, which srfeat train never writes "
            "(zipped again? torch would inflate them whole before checking them); give the state.pt srfeat train "
            "wrote, or start a new run folder with train.init_generator=<the run's generator_latest.safetensors>"
        )
    try:
        state = torch_load_quietly(path, map_location="cpu")
    except Exception as error:  # torch raises several types for corrupt or foreign files
        problem, reason = unpickling_problem(error, path)
        if problem == "objects":  # never pass on torch's advice to load it unsafely
            raise WeightsError(
                f"refusing training state {path}: it holds pickled Python objects, not only tensors and numbers, "
                "and loading them could run code; it was not written by srfeat train"
            ) from error
        if problem == "opcodes":
            raise WeightsError(
                f"refusing training state {path}: its pickle uses instructions torch's safe loader does not read "
                f"({reason}); it was not written by srfeat train"
            ) from error
        damage = reason if problem == "incomplete" else f"the file is cut short or damaged ({reason})"
        raise _unreadable_state(path, damage) from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise WeightsError(f"{path} is not an srfeat training state")
    if problem := odd_tensor(_named_tensors(state, "")):
        raise _unreadable_state(path, f"it is damaged: {problem}")
    return state


def _named_tensors(obj: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a nested state, each with its path of keys (`generator.head.weight`)."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _named_tensors(value, f"{name}.{key}" if name else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _named_tensors(value, f"{name}[{index}]")


# What to do about a state.pt that is damaged or cannot be read.
STATE_AGAIN = (
    "copy it again if it is a copy, or start a new run folder with "
    "train.init_generator=<the run's generator_latest.safetensors>"
)


def _unreadable_state(path: Path, damage: str) -> WeightsError:
    return WeightsError(f"cannot read training state {path}: {damage}; {STATE_AGAIN}")


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
        else:
            logger.warning(
                "the run was saved with %d GPU(s) and this machine has %d: their random states are not "
                "restored, so the resumed steps will not repeat the original run's exactly",
                len(cuda_states),
                torch.cuda.device_count(),
            )
