"""Mutation fuzz of `srfeat train --resume` on damaged training states: the `state.pt` of a tiny one-step run of each
stage (stage 1 and stage 2, both with EMA) is damaged at random, as bytes (bits flipped, bytes overwritten, cut,
removed or repeated; its pickle's ints, storage types and bits with the CRC made right, its zip records' fields: as
`fuzz_models.py` damages a `.pt`) or by what it holds (read, one entry changed, written again: a number made extreme,
of another type or missing; a string, list or mapping emptied, cut, grown or renamed; a tensor of another kind of
number, shape, layout (sparse, quantized, meta, expanded) or with a NaN), then its run resumed for one step by
`srfeat.cli.main` in a child process under a memory limit and a timeout, after the same resume's dry run. Every outcome
is classed: a one-line refusal, a success (warned or not), or what breaks the rules for untrusted input (a traceback or
several error lines, a crash, a hang, a temporary file left, a resume that succeeded without saving its step or left
a state it cannot read, the run's best generator lost by a failed resume, a dry run that refused what the resume then
ran). What needs a reader's judgement is listed: a failed resume that changed the run folder (`folder changed`), a dry
run that passed a state the resume refused (`dry run passed`: the resumed step failed, as weights that diverge
in it do, which no check before it foresees).

    PYTHONPATH=. python3 scripts/fuzz_states.py /tmp/statefuzz --per-seed 300    # 600 states, about 5 minutes

Results go to FOLDER/results.jsonl (one JSON object a state: seed, mutation, classes, log), counts to stdout; a state
is made again from its seed, `--seed` and its number (`--only SEED:NUMBER` reruns it, keeping it as FOLDER/repro.pt).
"""

from __future__ import annotations

import io
import math
import os
import random
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one core a run: the fuzz runs beside other work
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
import yaml
from PIL import Image

from scripts.fuzz_models import pt_field
from scripts.fuzzing import SENTINEL, arguments, breaks_rules, fuzz, mutate, outcome_classes, prepared, run_one
from srfeat.cli import main as srfeat_main

SEEDS = ["stage1.pt", "stage2.pt"]
STATE, BEST = "state.pt", "generator_best.safetensors"
# What a run folder holds besides its state and best generator, written into each run's folder as the run left them
# (its TensorBoard log and plot are left out: a resume starts new ones).
RUN_FILES = ["config.yaml", "generator_latest.safetensors", "generator_ema.safetensors", "metrics.jsonl"]
# What a resume writes besides its checkpoint: not temporaries left.
RUN_OUTPUTS = {"tensorboard", "training.png", "samples"}
TENSOR_DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool, torch.complex64]


def tiny_run_values(folder: Path, stage: int) -> dict[str, Any]:
    """A config of a tiny run (8 features, 2 blocks, 32-pixel patches, one step, EMA) on FOLDER/images."""
    images = folder / "images"
    return {
        "stage": stage,
        "model": {"num_features": 8, "num_blocks": 2, "discriminator_channels": 8, "discriminator_dense_features": 16},
        "data": {
            "kind": "random_crop",
            "train_dirs": [str(images / "train")],
            "hr_patch_size": 32,
            "repeat": 2,
            "num_workers": 0,
        },
        "optim": {"lr": 1e-3, "lr_milestones": []},
        "train": {
            "device": "cpu",
            "batch_size": 2,
            "max_steps": 1,
            "log_every": 1,
            "checkpoint_every": 1,
            "deterministic": True,
            "ema_decay": 0.9,
            "init_generator": str(folder / "tiny.safetensors") if stage == 2 else None,
        },
        "validation": {"dir": str(images / "validation"), "every": 1, "max_images": 1, "niqe": False},
    }


def write_seed(path: Path) -> None:
    """A one-step run of the stage `path.name` names, in FOLDER/runs/<stage>; its state.pt copied to `path`."""
    from skimage import data

    folder = path.parent.parent
    photo = data.astronaut()
    for name, (top, left, height, width) in {
        "train/a": (40, 180, 64, 80),
        "validation/face": (100, 200, 48, 48),
    }.items():
        (folder / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(photo[top : top + height, left : left + width])).save(
            folder / "images" / f"{name}.png"
        )
    run, stage = folder / "runs" / path.stem, int(path.stem.removeprefix("stage"))
    config = folder / "runs" / f"{path.stem}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(tiny_run_values(folder, stage)))
    if srfeat_main(["train", str(config), "--out", str(run), "--overwrite", "--no-progress"]) != 0:
        raise SystemExit(f"the tiny stage-{stage} run failed: {run}")
    path.write_bytes((run / STATE).read_bytes())


def entries(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every entry of a nested state with its path of keys and indices; of a long list (a random state), the list
    and three of its items."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from entries(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        indices = range(len(value)) if len(value) <= 16 else (0, len(value) // 2, len(value) - 1)
        for index in indices:
            yield from entries(value[index], (*path, index))


def changed_number(rng: random.Random, value: float) -> Any:
    """A number made extreme, of another type, or something else in its place."""
    if isinstance(value, bool):
        return rng.choice([not value, 2, None, "true", 1.0])
    others = [None, "1", [value], True, {}]
    if isinstance(value, int):
        return rng.choice([0, -1, value + 1, value * 2, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, -(2**63), 1.5, *others])
    return rng.choice([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, value * 1e10, int(value), *others])


def changed_tensor(rng: random.Random, tensor: torch.Tensor) -> tuple[Any, str]:
    """A tensor of another kind of number, shape, layout or device, or with a value made NaN or huge."""
    what = rng.choice(["dtype", "shape", "value", "value", "layout", "nothing"])
    if what == "dtype":
        dtype = rng.choice(TENSOR_DTYPES)
        return tensor.to(dtype), f"as {dtype}"
    if what == "shape":
        shapes = {
            "flattened": lambda: tensor.flatten(),
            "a dim added": lambda: tensor.unsqueeze(0),
            "emptied": lambda: tensor.flatten()[:0],
            "a scalar": lambda: tensor.flatten()[:1].reshape(()),
            "doubled": lambda: torch.cat([tensor.flatten(), tensor.flatten()]) if tensor.dim() else tensor,
        }
        name = rng.choice(list(shapes))
        return shapes[name](), name
    if what == "value" and tensor.numel() and (tensor.is_floating_point() or tensor.is_complex()):
        changed, new = tensor.clone(), rng.choice([math.nan, math.inf, -math.inf, 1e30, -1e30, 3e38])
        changed.view(-1)[rng.randrange(changed.numel())] = new
        return changed, f"one value {new}"
    if what == "layout":
        layouts = {
            "sparse": lambda: tensor.to_sparse(),
            "meta": lambda: torch.empty_like(tensor, device="meta"),
            "expanded": lambda: tensor.flatten()[:1].expand(tensor.shape) if tensor.dim() else tensor,
            "transposed": lambda: tensor.transpose(0, -1) if tensor.dim() > 1 else tensor,
            "quantized": lambda: torch.quantize_per_tensor(tensor.float(), 0.1, 0, torch.qint8),
            "a parameter": lambda: torch.nn.Parameter(tensor.float()),
        }
        name = rng.choice(list(layouts))
        try:
            return layouts[name](), name
        except RuntimeError:  # a layout this tensor cannot take (a sparse scalar)
            return tensor.to(torch.float64), "as torch.float64"
    return rng.choice([None, 0.5, [tensor], {"x": tensor}, tensor.tolist() if tensor.numel() < 64 else 1]), "replaced"


def changed_entry(rng: random.Random, value: Any) -> tuple[Any, str]:
    """`value` changed by its type; what was done."""
    if isinstance(value, torch.Tensor):
        return changed_tensor(rng, value)
    if isinstance(value, (bool, int, float)):
        new = changed_number(rng, value)
        return new, f"{value!r}->{new!r}"[:80]
    if isinstance(value, str):
        new = rng.choice(["", "x", value * 2, value[: len(value) // 2], value.upper(), 5, None, "\udcff", "a: [1"])
        return new, f"text -> {new!r}"[:80]
    if isinstance(value, (list, tuple)):
        choices = {"emptied": [], "cut": value[:-1], "grown": [*value, *value[-1:]], "reversed": value[::-1]}
        choices |= {"made a tuple": tuple(value), "made a dict": {str(i): v for i, v in enumerate(value)}}
        name = rng.choice(list(choices))
        return choices[name], f"list {name}"
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        changed = dict(value)
        what = rng.choice(["removed", "renamed", "unknown key", "emptied", "made a list"])
        if what == "removed":
            del changed[key]
        elif what == "renamed":
            changed[f"{key}x" if isinstance(key, str) else key + 1000] = changed.pop(key)
        elif what == "unknown key":
            changed["unknown"] = 1
        return (
            {} if what == "emptied" else list(value.values()) if what == "made a list" else changed
        ), f"{what} {key!r}"
    return rng.choice([None, 0, "x", {}]), "replaced"


def state_field(rng: random.Random, data: bytearray) -> str:
    """One entry of the state (`entries`) changed through torch itself, which writes the file back well-formed; or
    (one time in three) the `.pt`'s bytes as fuzz_models damages them (`pt_field`)."""
    if rng.random() < 0.33:
        return pt_field(rng, data)
    try:
        state = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    except Exception:  # noqa: BLE001 - damaged before: its bytes instead
        return pt_field(rng, data)
    path, value = rng.choice(list(entries(state))[1:])
    new, said = changed_entry(rng, value)
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):  # a tuple's item: the tuple is made again with it
        grand = state
        for key in path[:-2]:
            grand = grand[key]
        grand[path[-2]] = (*parent[: path[-1]], new, *parent[path[-1] + 1 :])
    else:
        parent[path[-1]] = new
    written = io.BytesIO()
    torch.save(state, written)
    data[:] = written.getvalue()
    return f"{'.'.join(map(str, path))}: {said}"


def damage(rng: random.Random, seed: bytes, name: str) -> tuple[bytes, str]:
    """The seed state damaged one way at random, half the time by what it holds (`state_field`); what was done."""
    if rng.random() < 0.5:
        data = bytearray(seed)
        with warnings.catch_warnings():  # torch's on making quantized tensors and storages: not srfeat's
            warnings.simplefilter("ignore")
            said = "; ".join(state_field(rng, data) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        return bytes(data), said
    return mutate(rng, seed, pt_field)


def measure(source: Path, target: Path | None) -> dict[str, Any]:
    """The state the run left in its folder: its step, or why srfeat cannot read it."""
    from srfeat.training.checkpoint import load_state
    from srfeat.training.resume import check_state

    try:
        state = load_state(source)
        check_state(state, source)
    except Exception as error:  # noqa: BLE001 - any refusal is noted; on a success it is the finding
        return {"state after": f"{type(error).__name__}: {error}"[:300]}
    return {"state after": f"step {state['step']}"}


def classes_of(result: dict[str, Any]) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    found, _ = outcome_classes(result)
    dry_code, code = result.get("dry run"), result.get("code")
    after = str(result.get("state after"))
    if code == 0 and not (after.startswith("step ") and int(after.removeprefix("step ")) >= 2):
        found.append(f"STATE AFTER SUCCESS: {after}")
    if code not in (None, 0) and result.get("changed"):
        found.append("folder changed")
    if dry_code not in (None, 0) and code == 0:
        found.append("DRY RUN REFUSED, RESUME RAN")
    if dry_code == 0 and code not in (None, 0):
        found.append("dry run passed")
    found += [f"DRY RUN {kind}" for kind in result.get("dry run classes", [])]
    return found


def read_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def main() -> int:
    args = arguments((__doc__ or "").split("\n\n")[0], 300, len(SEEDS), "stage2.pt:38")
    prepared(args.folder, SEEDS, write_seed)
    runs = args.folder / "runs"

    def run(data: bytes, name: str, folder: Path, memory: int) -> dict[str, Any]:
        # the run's files as it left them, its best generator as the sentinel a failed resume must keep
        files = {file: (runs / Path(name).stem / file).read_bytes() for file in RUN_FILES}
        resume = ["train", "config.yaml", "--out", ".", "--resume", "--max-steps", "2", "--no-progress"]
        dry_run = [*resume, "--dry-run"]
        dry = run_one(data, STATE, BEST, folder, folder / STATE, memory, args.timeout, measure, files, dry_run)
        result = run_one(data, STATE, BEST, folder, folder / STATE, memory, args.timeout, measure, files, resume)
        result["dry run"] = dry.get("code", dry.get("signal"))
        # the dry run's own traceback, crash or hang, with its log
        if broken := [kind for kind in outcome_classes(dry)[0] if breaks_rules(kind)]:
            result.update({"dry run classes": broken, "dry run log": dry["log"]})
        result["left"] = [name for name in result["left"] if name not in RUN_OUTPUTS]
        before = {STATE: data, BEST: SENTINEL, **files}
        result["changed"] = [file for file, contents in before.items() if read_or_none(folder / file) != contents]
        return result

    return fuzz(args, SEEDS, damage, run, classes_of)


if __name__ == "__main__":
    sys.exit(main())
