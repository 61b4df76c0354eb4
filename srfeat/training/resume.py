"""What a resumed run is checked against before it loads anything: the state's entries and weights,
the optimizers' moments, the networks the config builds, and the config keys the resume changes.

A state is untrusted (hand-edited, from another tool, damaged, from another config): each check
turns what would have been a traceback, a crash in the first step or a run that trains on from
garbage into one line that says which entry is wrong. `srfeat train --resume` and its dry run
(`srfeat train --resume --dry-run`) go through the same checks, so the dry run refuses what the
resume would.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from srfeat.errors import ConfigError, WeightsError
from srfeat.training import checkpoint
from srfeat.training.config import TrainingConfig
from srfeat.training.config_checks import LARGEST_STEP_COUNT
from srfeat.training.networks import batchnorm_affine_parameters, check_saved_discriminators, wrong_kind
from srfeat.training.typed_yaml import MAX_CONFIG_BYTES, load_yaml
from srfeat.weights.checks import MAX_WEIGHT_MAGNITUDE, weight_problem

logger = logging.getLogger(__name__)


def read_resumable_state(config: TrainingConfig, out_dir: Path, *, command_line: bool = False) -> dict[str, Any]:
    """The run folder's state, read (`checkpoint.load_state`) and checked (`check_state`), of the
    config's stage, with random states that restore. Then, once the config's networks are built,
    `check_saved_networks` and `warn_of_config_changes`: in that order, so a resume that is refused is
    not first told it continues. `command_line`: messages name `srfeat train`'s flags, not `train`'s keywords."""
    path = out_dir / checkpoint.STATE_FILE
    saved = checkpoint.load_state(path, command_line=command_line)
    check_state(saved, path)
    _check_resumed_stage(saved, config, out_dir)
    _check_rng_states(saved["rng"], path)
    return saved


def restore_rng_states(states: dict[str, Any], path: Path) -> None:
    """The state's random states (`checkpoint.capture_rng_states`) restored, or one line says why not."""
    kinds = (("python", list), ("numpy", dict), ("torch", torch.Tensor))
    if not all(isinstance(states.get(key), kind) for key, kind in kinds):  # a tensor was indexed by a name
        raise WeightsError(
            f"{path}: its random states cannot be restored (not the python, numpy and torch states srfeat train "
            "saves): the file is damaged or edited"
        )
    try:
        checkpoint.restore_rng_states(states)
    # an edited state: a number out of a generator's range is an OverflowError
    except (KeyError, OverflowError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise WeightsError(
            f"{path}: its random states cannot be restored "
            f"({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}): "
            "the file is damaged or edited"
        ) from error


def _check_rng_states(states: dict[str, Any], path: Path) -> None:
    """The restore the resume makes once its networks are built, tried now and undone: the dry run passed
    random states that the resume then refused. The GPUs' states are left to the restore (it warns
    where their number differs, which would be said twice)."""
    own = checkpoint.capture_rng_states()
    try:
        restore_rng_states({key: value for key, value in states.items() if key != "cuda"}, path)
    finally:
        checkpoint.restore_rng_states(own)


# A step of 10**30 passed, and the resume's first log was TensorBoard's traceback (steps are int64 there).
# The config's bound on a run's length: no run the config allows counts further.
_LARGEST_COUNT = LARGEST_STEP_COUNT

# What a state must hold, and of what type, for a resume to use it: (key, types, low bound, high bound).
# best_psnr alone may be inf: the mean PSNR is inf once a validation image is matched exactly.
_STATE_COUNTERS: tuple[tuple[str, tuple[type, ...], float, float], ...] = (
    ("stage", (int,), 1, _LARGEST_COUNT),
    ("step", (int,), 0, _LARGEST_COUNT),
    ("epoch", (int,), 0, _LARGEST_COUNT),
    ("batch_in_epoch", (int,), 0, _LARGEST_COUNT),
    # inf: "time budget reached" on resume, or inf in the log; compared exactly, an int past a float's range fails
    ("elapsed_seconds", (int, float), 0, sys.float_info.max),
    ("best_psnr", (int, float), -math.inf, math.inf),
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
    for key, types, low, high in _STATE_COUNTERS:
        value = state.get(key)
        number = value if isinstance(value, types) and not isinstance(value, bool) else None
        if not isinstance(number, (int, float)) or not low <= number <= high:  # NaN fails too
            if high == _LARGEST_COUNT:
                wanted = f"a whole number from {low:g} to 2**53"
            else:
                wanted = f"a {'finite ' if high < math.inf else ''}number >= {low}"
            raise WeightsError(f"{where}: {key} is {repr(value)[:60]}, not {wanted}: the file is damaged or edited")
    for key in ("epoch", "batch_in_epoch"):  # each epoch takes a step at least (epoch 255 at step 1 trained nothing)
        if state[key] > state["step"]:
            raise WeightsError(
                f"{where}: {key} is {state[key]}, past its {state['step']} steps: the file is damaged or edited"
            )
    validated = state.get("validated_step", -1)  # optional: states of earlier versions lack it
    if not isinstance(validated, int) or isinstance(validated, bool) or not -1 <= validated <= _LARGEST_COUNT:
        raise WeightsError(
            f"{where}: validated_step is {repr(validated)[:60]}, not a step number: the file is damaged or edited"
        )
    best_ssim = state.get("best_ssim", -math.inf)  # optional too; NaN would never be beaten, nor would inf
    if not isinstance(best_ssim, (int, float)) or isinstance(best_ssim, bool) or not -math.inf <= best_ssim < math.inf:
        raise WeightsError(
            f"{where}: best_ssim is {repr(best_ssim)[:60]}, not a number below inf: the file is damaged or edited"
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
    for name, saved in state["optimizers"].items():
        if problem := _saved_optimizer_problem(saved, state["step"]):
            raise WeightsError(
                f"{where}: the {name} optimizer state {problem}: the file is damaged or edited; {RESTART}"
            )
    ema = state.get("ema")  # optional: a run without train.ema_decay keeps none
    if ema is not None and not (isinstance(ema, dict) and _tensor_dict(ema.get("averaged"))):
        raise WeightsError(
            f"{where}: its EMA entry holds no averaged weights: the file is damaged or edited; {RESTART}"
        )
    # The generators are bounded as a generator file is (a weight of 1e30 trained a step, and the save refused it);
    # a discriminator's statistics are not so well known (checkpoint.diverged_weights)
    weights = [("generator", state["generator"], MAX_WEIGHT_MAGNITUDE)]
    weights += [("EMA average", _averaged_generator(ema or {"averaged": {}}), MAX_WEIGHT_MAGNITUDE)]
    weights += [(name, tensors, math.inf) for name, tensors in state["discriminators"].items()]
    for name, tensors, bound in weights:
        if problem := weight_problem(tensors.items(), bound):
            raise WeightsError(
                f"{where}: the {name}'s {problem}, so the run cannot continue from it; "
                "start again from a good generator (train.init_generator=...) in a new run folder"
            )


def _averaged_generator(ema: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The generator weights of a saved EMA (`GeneratorEMA.state_dict`), by the generator's names."""
    return {key.removeprefix("module."): tensor for key, tensor in ema["averaged"].items() if key != "n_averaged"}


def _saved_optimizer_problem(saved: Any, steps: int) -> str | None:
    """What is wrong with the form of a saved optimizer state (torch's `state_dict()`: `param_groups`, each listing
    its parameters' ids, and `state`, their moments by id), or None. Checked before `load_state_dict`, which raised
    an AttributeError for a list in place of `state`, dropped the moments of an id no group lists (the parameter's
    Adam restarted without a word), took an entry emptied, or the moments all gone, as a parameter never updated
    (a frozen one has no entry), and cast integer moments to floats; each moment's `step` counts the run's steps.
    """
    groups, moments = (saved.get(key) if isinstance(saved, dict) else None for key in ("param_groups", "state"))
    if not isinstance(groups, (list, tuple)) or not isinstance(moments, dict):
        return "is not an optimizer's state (its param_groups and state)"
    ids: list[int] = []
    for group in groups:
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, (list, tuple)) or not all(type(index) is int for index in params):
            return "has a parameter group without its list of parameter ids"
        ids += params
    if len(set(ids)) != len(ids):
        return "lists a parameter id twice"
    if ids and not moments and steps:  # every parameter's Adam would restart
        return f"holds no moments, after {steps} steps"
    for index, values in moments.items():
        if type(index) is not int or index not in ids:
            return f"holds the moments of parameter {repr(index)[:40]}, which none of its parameter groups lists"
        if not isinstance(values, dict) or not values:  # torch never writes an empty entry: one that was emptied
            what = type(values).__name__ if values else "nothing"
            return f"holds moments of parameter {index} that are {what}, not Adam's"
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                return f"has {key} of parameter {index} as {value.dtype}, not floating point"
        step = values.get("step")
        if isinstance(step, torch.Tensor) and step.numel() == 1:
            count = float(step.reshape(()))
            if not 1 <= count <= steps or count != int(count):  # NaN fails too
                return f"has step {count:g} for parameter {index}, not a whole number from 1 to the run's {steps}"
    return None


# What to do with a state whose networks or optimizers cannot be trusted: its generator file is written from
# the same weights at every checkpoint, and checked when read.
RESTART = "start a new run folder with train.init_generator=<the run's generator_latest.safetensors>"
# Adam's options that change what a step computes, which srfeat train never sets: a saved value other than
# the built optimizer's is an edit (torch's fused step failed on them, with "Adam with fused=True does not
# support differentiable=True" or a TypeError). How a step runs (foreach, fused) is the built one's, set again.
_FIXED_ADAM_OPTIONS = ("weight_decay", "amsgrad", "maximize", "differentiable", "decoupled_weight_decay")
# The options every torch's Adam has saved, which `load_state_dict` does not fill in when they are missing (it
# gives the newer ones, amsgrad to fused, their defaults).
_SAVED_ADAM_OPTIONS = ("lr", "betas", "eps", "weight_decay")


def check_optimizer_options(saved: dict[str, Any], defaults: Mapping[str, Any], name: str, source: str) -> None:
    """Before `load_state_dict`, which takes the saved options as they are: those of `_FIXED_ADAM_OPTIONS`
    the saved state (past `check_state`: its form) has are Adam's `defaults`, srfeat train's, and it has those of
    `_SAVED_ADAM_OPTIONS`; else one line."""
    for group in saved["param_groups"]:
        for key in _SAVED_ADAM_OPTIONS:
            if key not in group:  # a renamed weight_decay was a KeyError traceback in the first step
                raise WeightsError(
                    f"{source}: the {name} optimizer state lacks Adam's {key} option: the file is damaged or edited; "
                    f"{RESTART}"
                )
        for key in _FIXED_ADAM_OPTIONS:
            if key not in group or key not in defaults:
                continue  # an older torch's state lacks the newer options: torch gives them their defaults
            value, wanted = group[key], defaults[key]
            if isinstance(value, bool) != isinstance(wanted, bool) or value != wanted:  # NaN differs too
                raise WeightsError(
                    f"{source}: the {name} optimizer state has {key}={repr(value)[:40]}, where srfeat train's "
                    f"Adam has {wanted!r}: the file is damaged or edited; {RESTART}"
                )


def check_optimizer_state(
    saved: dict[str, Any], parameters: Sequence[torch.Tensor], name: str, source: str, may_be_frozen: set[int]
) -> None:
    """Before `load_state_dict`: the saved state (past `check_state`: its form) fits `parameters`, the network's
    (which may be on the meta device: the dry run's), as torch maps them (the groups' ids in turn): Adam's betas
    and eps, each parameter's moments of its shape and finite as the load casts them, and every parameter's there
    but those whose `id` is in `may_be_frozen` (a frozen parameter is never updated: no entry); else one line.

    torch checks only the number of parameters: a moment of another shape crashed the first step
    (fused Adam: a segmentation fault), a missing one was a KeyError there, a NaN one became
    NaN weights that the run reported as a divergence, pointing back at this same checkpoint, and
    a parameter's entry removed restarted its Adam without a word.
    """
    where = f"{source}: the {name} optimizer state"
    groups = saved["param_groups"]
    ids = [index for group in groups for index in group["params"]]
    if len(groups) != 1 or len(ids) != len(parameters):  # srfeat train's Adam has one group of all of them
        raise WeightsError(
            f"{where} has {len(groups)} parameter group(s) of {len(ids)} parameters, where the {name} network has "
            f"one of {len(parameters)}: the file is damaged or edited; {RESTART}"
        )
    betas, eps = groups[0].get("betas"), groups[0].get("eps")
    numbers = [*betas, eps] if isinstance(betas, (tuple, list)) and len(betas) == 2 else [math.nan]
    usable = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
    if not usable or not all(0 <= beta < 1 for beta in numbers[:2]) or numbers[2] < 0:
        raise WeightsError(f"{where} has betas {betas!r} and eps {eps!r}, not Adam's: the file is damaged or edited")
    by_id = dict(zip(ids, parameters, strict=True))
    for index, moments in saved["state"].items():  # a parameter never updated (frozen) has no entry
        parameter, problem = by_id[index], None
        for key, low in (("exp_avg", -math.inf), ("exp_avg_sq", 0.0), ("step", 1.0)):
            value = moments.get(key)
            shape = () if key == "step" else tuple(parameter.shape)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                problem = f"has no {key} tensor"
            elif tuple(value.shape) != shape and not (key == "step" and value.numel() == 1):
                problem = f"has {key} of shape {tuple(value.shape)} for a parameter of shape {shape}"
            else:  # as the load casts it: a float64 moment past float32's range is inf
                value = value.to(torch.float32 if key == "step" else parameter.dtype)
                if not bool(torch.isfinite(value).all()) or bool((value < low).any()):
                    problem = f"has {key} values that are NaN, inf or below {low:g}"
            if problem is not None:
                raise WeightsError(f"{where} {problem}: the file is damaged or edited; {RESTART}")
    # Every parameter of srfeat's networks that is not frozen gets a gradient at every step (`check_state` has
    # refused a state of no moments at all after its steps; one of none before its first step is whole).
    for position, index in enumerate(ids):
        if saved["state"] and index not in saved["state"] and id(parameters[position]) not in may_be_frozen:
            raise WeightsError(
                f"{where} has no moments for parameter {index} (of shape {tuple(parameters[position].shape)}), "
                f"which learns at every step: the file is damaged or edited; {RESTART}"
            )


def check_generator_shapes(
    saved: Mapping[str, torch.Tensor], built: nn.Module, source: str, name: str = "generator", other: str = ""
) -> None:
    """The saved generator's tensors are those `built` has, with the same shapes and kinds of number (an
    integer weight was cast as it loaded: the run went on from truncated weights); else one line. `name`: what the
    tensors are called (the state's EMA average's, past a generator that fits: `other`, what to do of a mismatch)."""
    expected = built.state_dict()
    as_run = "set the model section as in that run (resume with its config.yaml), or choose another run folder"
    for key, tensor in saved.items():
        if key not in expected:
            raise WeightsError(
                f"{source}: the {name} has {key}, which the config's generator does not: "
                f"{other or as_run.replace('(resume with its', '(its')}"
            )
        if (wrong := wrong_kind(tensor, expected[key])) is not None:
            raise WeightsError(f"{source}: the {name}'s {key} {wrong}: the file is damaged or edited; {RESTART}")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"{source}: the {name}'s {key} is {tuple(tensor.shape)}, the config builds "
                f"{tuple(expected[key].shape)}: {other or as_run}"
            )
    missing = [key for key in expected if key not in saved]
    if missing:
        # a config of more blocks than the run's, most likely (model.num_blocks): it was called "damaged"
        raise WeightsError(
            f"{source}: the {name} lacks {missing[0]} ({len(missing)} tensors), which the config's generator "
            f"has: {other or as_run}"
        )


def check_saved_networks(
    saved: Mapping[str, Any], generator: nn.Module, discriminators: Mapping[str, nn.Module], source: str
) -> None:
    """A resumed state (past `check_state`, of the config's stage) holds the networks the config builds, and their
    optimizers' states fit them, or one line says why not; before any tensor is loaded. The networks may be on
    the meta device (the dry run's): only their tensors' names and shapes are read."""
    if saved["stage"] == 2:
        check_saved_discriminators(dict(saved), dict(discriminators), source)
    check_generator_shapes(saved["generator"], generator, source)
    if "ema" in saved:
        _check_saved_average(saved["ema"], generator, source)
    if saved["stage"] == 1 and list(saved["discriminators"]) != list(discriminators):
        raise ConfigError(f"{source} holds other discriminators than the config's: choose another run folder")
    defaults = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults  # srfeat train's Adam's options
    for name, network in {"generator": generator, **discriminators}.items():
        if (optimizer := saved["optimizers"].get(name)) is None:
            raise WeightsError(f"{source} has no {name} optimizer state: the file is damaged or edited; {RESTART}")
        check_optimizer_options(optimizer, defaults, name, source)
        parameters = list(network.parameters())
        # The generator's BatchNorms are frozen in stage 2 unless train.generator_bn_trainable (the run's own
        # setting: the config may change it), so theirs may have no moments
        frozen = batchnorm_affine_parameters(network) if name == "generator" and saved["stage"] == 2 else []
        check_optimizer_state(optimizer, parameters, name, source, {id(parameter) for parameter in frozen})


def _check_saved_average(ema: dict[str, Any], generator: nn.Module, source: str) -> None:
    """A saved EMA (past `check_state`) averages the generator the state holds, which fits the config's: the same
    tensors, shapes and kinds of number, and its count; else one line. torch's own refusal was its first line alone,
    "Error(s) in loading state_dict for AveragedModel:", and an integer average was cast as it loaded."""
    damaged = f"the file is damaged or edited; {RESTART}"
    check_generator_shapes(_averaged_generator(ema), generator, source, "EMA average", damaged)
    count = ema["averaged"].get("n_averaged")
    if count is None or count.numel() != 1 or count.is_floating_point() or count.is_complex():
        raise WeightsError(f"{source}: the EMA average lacks its count of averaged steps (n_averaged): {damaged}")


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
) -> list[str] | None:
    """`key: old -> new` for each config key that a resume changes and that changes the run
    (a batch size, a seed, the data: the resumed steps then differ from those it would have made);
    None when the saved config cannot be read (not YAML text of a mapping, or too large).

    With the saved run's resolved folders and this one's (`resolved_folders`), the image
    folders are compared as absolute paths: a relative `data.train_dirs` resumed from another
    working directory is other data, and another `datasets_dir` that finds the same folders is not.
    A key the saved config lacks (one added to srfeat since) counts as its value in `defaults`, the
    behaviour the run had.
    """
    # The state is untrusted: a YAML alias bomb of a few hundred bytes stood for billions of keys, which
    # the comparison walked (hours, and memory) before the resume began. Refused as a config file is.
    try:
        usable = isinstance(saved_config, str) and len(saved_config) <= MAX_CONFIG_BYTES
        saved = load_yaml(saved_config, "the saved config") if usable else None
    except (yaml.YAMLError, ConfigError):
        saved = None
    if not isinstance(saved, dict):
        return None
    old, new = _flat(defaults or {}) | _flat(saved), _flat(config)
    saved_folders = _folders(saved_folders)
    if saved_folders is not None and folders is not None:
        old.pop("datasets_dir", None)  # it matters only through the folders
        new.pop("datasets_dir", None)
        old.update(saved_folders)
        new.update(folders)
    keys = sorted(key for key in old.keys() | new.keys() if key not in RESUMABLE_CHANGES)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _check_resumed_stage(saved: dict[str, Any], config: TrainingConfig, out_dir: Path) -> None:
    """A resumed state (past `check_state`) is of the config's stage, or one line says so."""
    if saved["stage"] != config.stage:
        raise ConfigError(f"{out_dir} holds a stage-{saved['stage']} run; the config is stage {config.stage}")


def warn_of_config_changes(saved: dict[str, Any], config: TrainingConfig, out_dir: Path) -> None:
    """Each config key a resume from `saved` changes that changes the run, named in a warning
    (`config_changes`): by the resume and by its dry run (`srfeat train --resume --dry-run`)."""
    changes = config_changes(
        saved.get("config"),
        config.to_dict(),
        saved.get("folders"),
        resolved_folders(config),
        defaults=TrainingConfig().to_dict(),
    )
    if changes is None and saved.get("config") is not None:  # states of early versions hold none
        logger.warning(
            "resuming %s, whose %s holds a config that cannot be read (damaged or edited): whether this "
            "config differs from the run's cannot be said; resume with %s to continue it exactly",
            out_dir,
            checkpoint.STATE_FILE,
            out_dir / checkpoint.CONFIG_FILE,
        )
    elif changes:
        logger.warning(
            "resuming %s with a config that differs from its run's (%s): the run continues, but not as "
            "it would have; resume with %s to continue it exactly",
            out_dir,
            "; ".join(changes[:5]) + (f"; {len(changes) - 5} more" if len(changes) > 5 else ""),
            out_dir / checkpoint.CONFIG_FILE,
        )
