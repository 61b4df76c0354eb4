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
import pickle
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from srfeat.errors import ConfigError, WeightsError
from srfeat.files import (
    DiskFullError,
    PendingFile,
    remove_stale_temporaries,
    write_file_atomically,
    write_files_atomically,
)
from srfeat.weights.file_kinds import PYTORCH, identify_file, torch_load_quietly, unpickling_problem

if TYPE_CHECKING:
    from srfeat.training.config import TrainingConfig

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
            "the previous checkpoint is kept: raise the limit or choose another run folder, then --resume"
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
    files = [generator_file(generator, out_dir / LATEST_GENERATOR)]  # type: ignore[arg-type]
    if ema_generator is not None:
        files.append(generator_file(ema_generator, out_dir / EMA_GENERATOR))  # type: ignore[arg-type]
    return files


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state written by `save_state` (safely: weights_only)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder: give the run folder with --out, whose {STATE_FILE} is resumed")
    if not path.is_file():
        raise WeightsError(
            f"no training state at {path}: run without --resume first, or give the run folder with --out"
        )
    try:
        kind = identify_file(path)
    except OSError as error:
        raise WeightsError(f"cannot read training state {path}: {error.strerror or error}") from error
    if kind.name != PYTORCH:  # torch.load would call a PNG "pickled objects" and a text file "KeyError"
        raise WeightsError(f"{path} is {kind.description}, not a training state ({STATE_FILE}) written by srfeat train")
    try:
        state = torch_load_quietly(path, map_location="cpu")
    except Exception as error:  # torch raises several types for corrupt or foreign files
        problem, reason = unpickling_problem(error)
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
        if not isinstance(error, pickle.UnpicklingError):
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise WeightsError(
            f"cannot read training state {path} ({reason}): the file is cut short or damaged; start a new run "
            "folder with train.init_generator=<the run's generator_latest.safetensors>"
        ) from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise WeightsError(f"{path} is not an srfeat training state")
    return state


# What a state must hold, and of what type, for a resume to use it: (key, types, low bound, finite).
# best_psnr alone may be inf: the mean PSNR is inf once a validation image is matched exactly.
_STATE_COUNTERS: tuple[tuple[str, tuple[type, ...], float, bool], ...] = (
    ("stage", (int,), 1, True),
    ("step", (int,), 0, True),
    ("epoch", (int,), 0, True),
    ("batch_in_epoch", (int,), 0, True),
    ("elapsed_seconds", (int, float), 0, True),  # inf: "time budget reached" on resume, or inf in the log
    ("best_psnr", (int, float), -math.inf, False),
)


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items()
    )


def check_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Every entry a resume reads is there, of its type, and every weight is finite; else one line.

    A state is untrusted (hand-edited, from another tool, damaged): without this a missing key or a
    NaN weight would surface as a traceback, or as a run that trains on from garbage.
    """
    where = f"training state {path}"
    for key, types, low, finite in _STATE_COUNTERS:
        value = state.get(key)
        number = value if isinstance(value, types) and not isinstance(value, bool) else None
        high = sys.float_info.max if finite else math.inf  # compared exactly: an int past a float's range fails
        if not isinstance(number, (int, float)) or not low <= number <= high:  # NaN fails too
            raise WeightsError(
                f"{where}: {key} is {repr(value)[:60]}, not a {'finite ' if finite else ''}number >= {low}: "
                "the file is damaged or edited"
            )
    validated = state.get("validated_step", -1)  # optional: states of earlier versions lack it
    if not isinstance(validated, int) or isinstance(validated, bool) or validated < -1:
        raise WeightsError(
            f"{where}: validated_step is {repr(validated)[:60]}, not a step number: the file is damaged or edited"
        )
    if not _tensor_dict(state.get("generator")):
        raise WeightsError(f"{where} holds no generator weights: the file is damaged or not from srfeat train")
    for key in ("discriminators", "optimizers", "rng"):
        if not isinstance(state.get(key), dict):
            raise WeightsError(f"{where} has no {key} entry: the file is damaged or not from srfeat train")
    if not all(_tensor_dict(weights) for weights in state["discriminators"].values()):
        raise WeightsError(f"{where}: a discriminator's weights are not tensors: the file is damaged")
    if "generator" not in state["optimizers"]:
        raise WeightsError(f"{where} has no generator optimizer state: the file is damaged")
    for name, weights in [("generator", state["generator"]), *state["discriminators"].items()]:
        for key, tensor in weights.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WeightsError(
                    f"{where}: the {name}'s {key} holds NaN or inf values, so the run cannot continue from it; "
                    "start again from a good generator (train.init_generator=...) in a new run folder"
                )


def check_optimizer_state(optimizer: torch.optim.Optimizer, name: str, source: str) -> None:
    """After `load_state_dict`: each parameter's Adam state fits it, finite; else one line.

    torch checks only the number of parameters: a moment of another shape crashed the first step
    (fused Adam: a segmentation fault), a missing one was a KeyError there, and a NaN one became
    NaN weights that the run reported as a divergence, pointing back at this same checkpoint.
    """
    where = f"{source}: the {name} optimizer state"
    for group in optimizer.param_groups:
        betas, eps = group.get("betas"), group.get("eps")
        numbers = [*betas, eps] if isinstance(betas, (tuple, list)) and len(betas) == 2 else [math.nan]
        usable = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
        if not usable or not all(0 <= beta < 1 for beta in numbers[:2]) or numbers[2] < 0:
            raise WeightsError(
                f"{where} has betas {betas!r} and eps {eps!r}, not Adam's: the file is damaged or edited"
            )
        for parameter in group["params"]:
            state = optimizer.state.get(parameter)
            if state is None or (isinstance(state, dict) and not state):
                continue  # never updated (frozen, or a network this stage does not train)
            problem = None if isinstance(state, dict) else f"is {type(state).__name__}, not Adam's"
            for key, low in (("exp_avg", -math.inf), ("exp_avg_sq", 0.0), ("step", 1.0)):
                if problem is not None:
                    break
                value = state.get(key)
                shape = () if key == "step" else tuple(parameter.shape)
                if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                    problem = f"has no {key} tensor"
                elif tuple(value.shape) != shape and not (key == "step" and value.numel() == 1):
                    problem = f"has {key} of shape {tuple(value.shape)} for a parameter of shape {shape}"
                elif not bool(torch.isfinite(value).all()) or bool((value < low).any()):
                    problem = f"has {key} values that are NaN, inf or below {low:g}"
            if problem is not None:
                raise WeightsError(
                    f"{where} {problem}: the file is damaged or edited; start a new run folder with "
                    "train.init_generator=<the run's generator_latest.safetensors>"
                )


def check_generator_shapes(saved: Mapping[str, torch.Tensor], built: nn.Module, source: str) -> None:
    """The saved generator's tensors are those `built` has, with the same shapes; else one line."""
    expected = built.state_dict()
    for key, tensor in saved.items():
        if key not in expected:
            raise WeightsError(
                f"{source}: the generator has {key}, which the config's generator does not: set the model "
                "section as in that run (its config.yaml), or choose another run folder"
            )
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"{source}: the generator's {key} is {tuple(tensor.shape)}, the config builds "
                f"{tuple(expected[key].shape)}: set the model section as in that run (resume with its "
                "config.yaml), or choose another run folder"
            )
    missing = [key for key in expected if key not in saved]
    if missing:
        # a config of more blocks than the run's, most likely (model.num_blocks): it was called "damaged"
        raise WeightsError(
            f"{source}: the generator lacks {missing[0]} ({len(missing)} tensors), which the config's generator "
            "has: set the model section as in that run (resume with its config.yaml), or choose another run folder"
        )


def check_saved_networks(
    saved: Mapping[str, Any], generator: nn.Module, discriminators: Mapping[str, nn.Module], source: str
) -> None:
    """A resumed state (past `check_state`, of the config's stage) holds the networks the config builds, or
    one line says why not; before any tensor is loaded. The networks may be on the meta device (the dry
    run's): only their tensors' names and shapes are read."""
    from srfeat.training.networks import check_saved_discriminators

    if saved["stage"] == 2:
        check_saved_discriminators(dict(saved), dict(discriminators), source)
    check_generator_shapes(saved["generator"], generator, source)
    if saved["stage"] == 1 and list(saved["discriminators"]) != list(discriminators):
        raise ConfigError(f"{source} holds other discriminators than the config's: choose another run folder")


# Config keys a resume may change without changing what the steps compute or how the best generator
# is chosen (the run's length, how often it logs, validates and saves, how the data is loaded); a
# change to any other is named in a warning.
RESUMABLE_CHANGES = frozenset(
    {
        "out_dir",
        "train.max_steps",
        "train.max_minutes",
        "train.epochs",
        "train.log_every",
        "train.checkpoint_every",
        "train.device",
        "data.num_workers",
        "data.pin_memory",
        "data.prefetch_factor",
        "validation.sample_images",
        "validation.every",
        "validation.niqe",
    }
)


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix.removesuffix("."): values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


# The config keys that name image folders: with both runs' resolved folders at hand (states written
# since they are saved), those are compared, not the text, which can mean other folders elsewhere.
FOLDER_KEYS = ("data.train_dirs", "validation.dir")


def resolved_folders(config: TrainingConfig) -> dict[str, Any]:
    """The image folders the run reads, as absolute paths: what its relative paths and {datasets_dir}
    meant where it ran. A resume from another working directory can find other folders by the same text."""
    validation = config.validation.dir
    return {
        "data.train_dirs": [str(config.resolve_path(folder).resolve()) for folder in config.data.train_dirs],
        "validation.dir": str(config.resolve_path(validation).resolve()) if validation is not None else None,
    }


def _folders(value: Any) -> dict[str, Any] | None:
    """A state's resolved folders (`resolved_folders`), or None if it has none that look right."""
    if not isinstance(value, dict) or set(value) != set(FOLDER_KEYS):
        return None
    train, validation = value["data.train_dirs"], value["validation.dir"]
    if not isinstance(train, list) or not all(isinstance(folder, str) for folder in train):
        return None
    return value if validation is None or isinstance(validation, str) else None


def config_changes(
    saved_config: Any,
    config: dict[str, Any],
    saved_folders: Any = None,
    folders: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """`key: old -> new` for each config key that a resume changes and that changes the run
    (a batch size, a seed, the data: the resumed steps then differ from those it would have made).

    With the saved run's resolved folders and this one's (`resolved_folders`), the image
    folders are compared as absolute paths: a relative `data.train_dirs` resumed from another
    working directory is other data, and another `datasets_dir` that finds the same folders is not.
    A key the saved config lacks (one added to srfeat since) counts as its value in `defaults`, the
    behaviour the run had.
    """
    import yaml

    from srfeat.training.typed_yaml import MAX_CONFIG_BYTES, load_yaml

    # The state is untrusted: a YAML alias bomb of a few hundred bytes stood for billions of keys, which
    # the comparison walked (hours, and memory) before the resume began. Refused as a config file is.
    try:
        usable = isinstance(saved_config, str) and len(saved_config) <= MAX_CONFIG_BYTES
        saved = load_yaml(saved_config, "the saved config") if usable else None
    except (yaml.YAMLError, ConfigError):
        saved = None
    if not isinstance(saved, dict):
        return []
    old, new = _flat(defaults or {}) | _flat(saved), _flat(config)
    saved_folders = _folders(saved_folders)
    if saved_folders is not None and folders is not None:
        old.pop("datasets_dir", None)  # it matters only through the folders
        new.pop("datasets_dir", None)
        old.update(saved_folders)
        new.update(folders)
    keys = sorted(key for key in old.keys() | new.keys() if key not in RESUMABLE_CHANGES)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


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
