"""What the mutation fuzzers of srfeat's inputs share (`fuzz_video.py`, `fuzz_images.py`, `fuzz_models.py`,
`fuzz_states.py`): damaging a seed file at random, running srfeat on it (the upscale, or another command) in a forked
child under a memory limit and a timeout, and classing the outcome against the rules for untrusted input (a one-line
error or a success; never a traceback, a crash, a hang, a temporary file left, or the output the user had overwritten by
a failed run). Each fuzzer adds its seeds, the structure fields it enlarges, what it measures of the input and output,
and the classes that follow from those measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from srfeat.cli import main as srfeat_main

SENTINEL = b"an output the user had before the run"

# (rng, the seed's bytes to change in place) -> what was changed
FieldDamage = Callable[[random.Random, bytearray], str]
# (input, output or None where the run failed or left the sentinel) -> what is known of them, for the classes
Measure = Callable[[Path, Path | None], dict[str, Any]]


def extreme(rng: random.Random, old: int, bits: int) -> int:
    """A value a size field of `bits` bits, now `old`, is damaged to: its top, just past it, doubled, zero..."""
    top = (1 << bits) - 1
    choices = [top, top - 1, old + rng.randint(1, 64), old * 2, old + 1, 1 << (bits - 1), 0, max(0, old - 1)]
    return top & rng.choice([*choices, rng.randint(0, top), 0xFFFF])


def mutate(rng: random.Random, seed: bytes, field: FieldDamage) -> tuple[bytes, str]:
    """`seed` damaged one way at random (bits flipped, bytes overwritten, cut, removed or repeated, or one to four of
    its structure's fields changed by `field`); what was done."""
    data, size = bytearray(seed), len(seed)
    kind = rng.choice(["flip", "run", "cut", "remove", "repeat", "field", "field", "several"])
    if kind == "flip":
        for _ in range(count := rng.choice([1, 1, 2, 4, 8])):
            data[rng.randrange(size)] ^= 1 << rng.randrange(8)
        return bytes(data), f"{count} bit(s) flipped"
    at = rng.randrange(size)
    length = rng.choice([1, 2, 4, 16, 64, 188, 256, 512, 2048])
    if kind == "run":
        fill = rng.choice([b"\0", b"\xff", bytes(rng.randrange(256) for _ in range(length))])
        data[at : at + length] = (fill * length)[: min(length, size - at)]
        return bytes(data), f"{length} bytes at {at} overwritten"
    if kind == "cut":
        return bytes(data[: max(1, at)]), f"cut at {max(1, at)} of {size}"
    if kind == "remove":
        del data[at : at + length]
        return bytes(data), f"{length} bytes at {at} removed"
    if kind == "repeat":
        to = rng.randrange(size)
        data[to:to] = data[at : at + length]
        return bytes(data), f"{length} bytes at {at} repeated at {to}"
    if kind == "field":  # damaged before the copy is made (a tuple's copy came first: the file went undamaged)
        said = field(rng, data)
        return bytes(data), said
    done = [field(rng, data) for _ in range(rng.randint(2, 4))]
    return bytes(data), "; ".join(done)


def invert_a_byte(rng: random.Random, data: bytearray) -> str:
    """The field damage of last resort, where a file has none of the fields looked for."""
    at = rng.randrange(len(data))
    data[at] ^= 0xFF
    return f"byte {at} inverted"


def find_all(data: bytearray, pattern: bytes) -> list[int]:
    """Where `pattern` starts in `data`, each place (overlapping ones too)."""
    found, at = [], data.find(pattern)
    while at >= 0:
        found.append(at)
        at = data.find(pattern, at + 1)
    return found


def header_field(
    rng: random.Random, data: bytearray, fields: list[tuple[int, int]], order: Literal["little", "big"], what: str
) -> str:
    """One of `fields` ((offset, width in bytes), integers in byte `order`) of `data` damaged by `extreme`."""
    offset, width = rng.choice(fields)
    if offset + width > len(data):
        return invert_a_byte(rng, data)
    old = int.from_bytes(data[offset : offset + width], order)
    data[offset : offset + width] = (new := extreme(rng, old, 8 * width)).to_bytes(width, order)
    return f"{what} field at {offset}: {old}->{new}"


def srfeat_in_child(
    command: list[str], source: Path, target: Path, memory: int, record: Path, measure: Measure
) -> None:  # fmt: skip
    """In the forked child: `srfeat COMMAND`, its stderr to a log; then what `measure` finds of input and output."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    log = os.open(source.parent / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(source.parent)
    try:
        code = srfeat_main(command)
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else 2
    except BaseException:  # noqa: BLE001 - what escapes main is the finding
        traceback.print_exc()
        code = 99
    sys.stderr.flush()
    result: dict[str, Any] = {"code": code}
    record.write_text(json.dumps(result))  # kept if the measuring below dies
    written = code == 0 and target.exists() and target.read_bytes() != SENTINEL
    try:
        result.update(measure(source, target if written else None))
    except Exception as error:  # noqa: BLE001 - the fuzz's own measuring failed, not srfeat: said as such
        result["measuring"] = f"{type(error).__name__}: {error}"[:300]
    record.write_text(json.dumps(result))


def run_one(
    data: bytes, source_name: str, target_name: str, folder: Path, model: Path, memory: int, timeout: float,
    measure: Measure, files: dict[str, bytes] | None = None, command: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`data` upscaled as `folder/source_name` to `folder/target_name` (which holds the sentinel before), forked;
    `files` are written into `folder` first (a damaged model the run names by its path there). `command`: srfeat's
    arguments in place of the upscale's (`srfeat convert SOURCE -o TARGET`), run in `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source, target, record = folder / source_name, folder / target_name, folder / "record.json"
    source.write_bytes(data)
    for name, contents in (files or {}).items():
        (folder / name).write_bytes(contents)
    target.write_bytes(SENTINEL)
    start = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            upscale = ["upscale", source.name, "-o", target.name, "--model", str(model), "--overwrite"]
            srfeat_in_child(command or upscale, source, target, memory, record, measure)
        finally:
            os._exit(0)
    status: int | None = None
    while time.monotonic() - start < timeout:
        finished, status = os.waitpid(child, os.WNOHANG)
        if finished:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        status = None
    result: dict[str, Any] = json.loads(record.read_text()) if record.exists() else {}
    result["seconds"] = round(time.monotonic() - start, 2)
    if status is None:
        result["signal"] = "timeout"
    elif os.WIFSIGNALED(status):
        result["signal"] = signal.Signals(os.WTERMSIG(status)).name
    result["log"] = (folder / "log.txt").read_text(errors="replace")[-3000:]
    known = {source.name, target.name, "log.txt", record.name, *(files or {})}
    result["left"] = sorted(path.name for path in folder.iterdir() if path.name not in known)
    result["kept"] = target.exists() and target.read_bytes() == SENTINEL
    return result


def outcome_classes(result: dict[str, Any]) -> tuple[list[str], bool]:
    """What happened, in the rules every input keeps (the rule-breaking classes in capitals, `breaks_rules`), and
    whether it warned.
    A success gets `success` or `success, warned`; the fuzzer adds what its measurements say of it."""
    lines = [line for line in result["log"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") and line != "ERROR: 1 of 1 input(s) failed"]
    warned = any(line.startswith("WARNING") for line in lines)
    code, found = result.get("code"), []
    if "signal" in result:
        found.append("HANG" if result["signal"] == "timeout" else f"CRASH {result['signal']}")
        if code is not None:
            found[-1] += " (measuring, after srfeat)"
    if "Traceback" in result["log"] or code == 99:
        found.append("TRACEBACK")
    if code not in (None, 0):
        others = [line for line in lines if not line.startswith(("ERROR", "WARNING", "INFO"))]
        found.append("one-line error" if len(errors) == 1 and not others else "SEVERAL LINES")
        found += [] if result["kept"] else ["OUTPUT OVERWRITTEN"]
    if code == 0:
        found.append("success, warned" if warned else "success")
        if "measuring" in result:  # the fuzz's reading failed, so nothing is known of the output
            found.append(f"MEASURING FAILED ({result['measuring']})")
    if "Cannot allocate memory" in result["log"] or "MemoryError" in result["log"]:
        found.append("out of memory")
    return found + (["TEMPORARY LEFT"] if result["left"] else []), warned


def breaks_rules(kind: str) -> bool:
    """Whether an outcome class is one that breaks the rules: its first word in capitals (what follows may quote a
    message: "MEASURING FAILED (ValueError: ...)" was taken for a class to review, and went unreported)."""
    return kind.split(" ", 1)[0].isupper()


def address_space() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))


def arguments(description: str, per_seed: int, seeds: int, example: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("folder", type=Path, help="where the seeds, the runs and results.jsonl go")
    parser.add_argument("--per-seed", type=int, default=per_seed, help=f"damaged files per seed file ({seeds} seeds)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed: the same seed makes the same files")
    parser.add_argument("--only", default=None, metavar="SEED:NUMBER", help=f"rerun one file, e.g. {example}")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a run may take before it is a hang")
    parser.add_argument("--memory", type=float, default=3, help="GiB a run may set aside beyond srfeat's imports")
    return parser.parse_args()


def prepared(folder: Path, names: list[str], write_seed: Callable[[Path], None]) -> Path:
    """FOLDER/seeds made (`write_seed(path)` for each of `names` not there yet: a rerun keeps them) and a tiny model
    (8 features, 2 blocks, random but fixed: fast, and 4x like every srfeat model); the model's path."""
    import torch

    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    (folder / "seeds").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the model first: a model fuzz's seeds are made from it
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2), model := folder / "tiny.safetensors")
    for name in names:
        if not (folder / "seeds" / name).exists():
            write_seed(folder / "seeds" / name)
    return model


def fuzz(
    args: argparse.Namespace,
    names: list[str],
    damage: Callable[[random.Random, bytes, str], tuple[bytes, str]],
    run: Callable[[bytes, str, Path, int], dict[str, Any]],
    classes: Callable[[dict[str, Any]], list[str]],
) -> int:
    """Each seed file in FOLDER/seeds (`names`) damaged `--per-seed` times (`damage(rng, seed, name)`), upscaled
    (`run(data, name, run folder, memory limit)`), classed; results to FOLDER/results.jsonl, counts to stdout."""
    # a rerun (--only) in a folder of its own: beside a fuzz still running in FOLDER, the two took each other's files
    # for ones left behind
    seeds, run_folder = args.folder / "seeds", args.folder / ("run-only" if args.only else "run")
    memory = address_space() + int(args.memory * 2**30)
    wanted = [(name, number) for number in range(args.per_seed) for name in names]
    if args.only:
        name, number = args.only.rsplit(":", 1)
        wanted = [(name, int(number))]
    counts: Counter[str] = Counter()
    with (args.folder / "results.jsonl").open("a") as results:
        for name, number in wanted:
            data, mutation = damage(random.Random(f"{args.seed}-{name}-{number}"), (seeds / name).read_bytes(), name)
            if args.only:
                (args.folder / f"repro{Path(name).suffix}").write_bytes(data)
            result = run(data, name, run_folder, memory)
            result.update(seed=name, number=number, mutation=mutation, classes=classes(result))
            results.write(json.dumps(result) + "\n")
            counts.update(result["classes"])
            if args.only or any(breaks_rules(kind) for kind in result["classes"]):
                print(name, number, mutation, result["classes"], flush=True)  # the script's report
    print(json.dumps(dict(counts.most_common()), indent=1))
    return 0
