"""Mutation fuzz of the training-config reader: every file in configs/ is mutated (each key given a wrong type, a huge,
negative, NaN or infinite number; unknown keys at each level; deep nesting, duplicate keys, an alias bomb, YAML tags;
non-UTF-8 bytes, byte-order marks, a huge or empty file, a folder or a pipe as the config) and odd `key=value`
overrides are given, and each case is read by `srfeat train CONFIG --dry-run` (`srfeat.cli.main` in a forked child
under a memory limit and a timeout) and by `load_config` from Python. An outcome breaks the rules for untrusted input
when it is a traceback, an error of several lines, an exception other than SRFeatError from Python, a crash, a hang
or a memory blow-up. What it finds is then checked with `python -m srfeat.cli` as a user runs it (`--cli`).

    PYTHONPATH=. python3 scripts/fuzz_configs.py /tmp/configfuzz                  # all 8 shipped configs: 9,500 cases
    PYTHONPATH=. python3 scripts/fuzz_configs.py /tmp/configfuzz --budget 3000    # an even sample of them

Every shipped config (configs/**/*.yaml) seeds the mutants unless --configs names files or folders. A hostile value
that is accepted (load_config returns) is listed for review, as is a refusal that does not say what to
do (no advice word in it): neither can be judged by a rule here. Results go to FOLDER/results.jsonl (one JSON object
a case), counts and the failures to stdout.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # not for a test importing it: the processes a test session starts would inherit it
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml

from srfeat.cli import main as srfeat_main
from srfeat.errors import SRFeatError
from srfeat.training import run_folder, sampling, schedule  # noqa: F401 - imported once, not in each child
from srfeat.training.config import load_config

MEMORY_LIMIT = 3 << 30
TIMEOUT_S = 60
# Values put in place of each key's: wrong types, huge and negative numbers, NaN and infinities (as YAML text).
HOSTILE_VALUES = [
    "'text'",
    "[1, 2]",
    "{a: 1}",
    "true",
    "null",
    "''",
    "-1",
    "0",
    "1e308",
    "1.0e308",
    "-1.0e308",
    "1" + "0" * 400,
    "-" + "9" * 30,
    ".nan",
    ".inf",
    "-.inf",
    "2024-01-01",
    "0x10",
    "0o17",
    "1_000",
    "!!binary aGVsbG8=",
    "!!python/object:os.system ls",
    "!custom 3",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!float 'x'",
    "!!float ''",
    "!!bool 'x'",
    "!!int ''",
    "!!timestamp 'x'",
    "!!map 1",
    "!!set [1]",
    "!!str 4",
    "[" * 50 + "]" * 50,
    "'\\x00'",
    '"\\ud800"',
    '"\\0"',
    "x" * 5000,
]
ODD_OVERRIDES = [
    ["a..b=1"],
    ["=1"],
    ["train.lr="],
    ["optim.lr="],
    ["optim.lr=1=2"],
    ["optim.lr"],
    ["="],
    ["..=1"],
    [".=1"],
    ["optim.=1"],
    [" optim.lr =1"],
    ["optim.lr=[1"],
    ["optim.lr={"],
    ["optim.lr=*a"],
    ["optim.lr=&a 1"],
    ["optim.lr=!!python/object:os.system x"],
    ["optim.lr=.nan"],
    ["optim.lr=.inf"],
    ["optim=1"],
    ["optim=[1]"],
    ["optim={lr: x}"],
    ["optim.lr.x=1"],
    ["model.scale.x=1"],
    ["x=1"],
    ["x.y.z=1"],
    ["train=null"],
    ["train.seed=1", "train.seed=x"],
    ["datasets_dir="],
    ["datasets_dir=[1]"],
    ["data.train_dirs=" + "[" * 2000],
    ["data.train_dirs=[" + ",".join(["a"] * 200_000) + "]"],
    ["optim.lr=" + "1" * 5000],
    ["a" * 10_000 + "=1"],
    ["optim.lr=1\n2"],
    ["optim.lr=a: b\n  c"],
    ["optim.lr=\udcff"],
    ["\udcff=1"],
    ["opt\udcffim.lr=1"],
    ["model.scale=4\x00"],
    ["optim.lr=--- 1\n--- 2"],
    ["optim.lr=%YAML 1.1\n--- 1"],
    ["optim.lr=\ufeff1"],
    ["train.seed=1e3"],
    ["train.seed=!!int 'x'"],
    ["stage=3"],
    ["stage=2.0"],
    ["__class__=1"],
    ["to_dict=1"],
]

# Overrides through Python that are not a list of strings.
API_OVERRIDES: list[Any] = [
    {"optim.lr": 2e-4},
    {"optim": {"lr": 2e-4}},
    {"optim.lr=2e-4"},
    "optim.lr=2e-4",
    (item for item in ["optim.lr=2e-4"]),
    5,
    [("optim.lr", 2e-4)],
    [["optim.lr=2e-4"]],
    [Path("optim.lr=2e-4")],
]
# A refusal with none of these does not say what to do (or says it in words this list lacks): listed for review.
ADVICE_WORDS = [
    "must",
    "give",
    " use",
    "e.g.",
    "remove",
    "write",
    "known",
    "one of",
    "set ",
    "put ",
    "quote",
    "type ",
    "rename",
    "copy",
    "choose",
    "expected",
    "at least",
    "at most",
    "drop",
    "add ",
    "see ",
    "check",
    "make ",
    "point",
    "only",
    "instead",
    "needs",
    "is a list",
    "such as",
    "indent",
    "keep one",
    "cannot be one",
]


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key of a config tree, sections included, as a path of names."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, str(key))
            yield from leaf_paths(value, (*prefix, str(key)))


def replaced(tree: dict[str, Any], path: tuple[str, ...], marker: str) -> str:
    """The tree dumped as YAML with the value at `path` replaced by raw YAML text (written via a marker)."""
    copy = json.loads(json.dumps(tree))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = "@@MARK@@"
    return yaml.safe_dump(copy, sort_keys=False).replace("'@@MARK@@'", marker)


def file_cases(config: Path) -> Iterator[tuple[str, bytes]]:
    """(name, file bytes) mutants of one config file."""
    text = config.read_text()
    tree = yaml.safe_load(text)
    for path in leaf_paths(tree):
        template = replaced(tree, path, "@@VALUE@@")  # dumped once a key, not once a value: 38 times faster
        for value in HOSTILE_VALUES:
            text = template.replace("@@VALUE@@", value)
            yield f"{'.'.join(path)}={value[:30]!r}", text.encode("utf-8", "surrogatepass")
    for section in [(), *((key,) for key, value in tree.items() if isinstance(value, dict))]:
        copy = json.loads(json.dumps(tree))
        node = copy
        for part in section:
            node = node[part]
        node["unknown_key"] = 1
        yield f"unknown key in {'.'.join(section) or 'top'}", yaml.safe_dump(copy).encode()
        node.pop("unknown_key")
        node[1] = 2
        yield f"integer key in {'.'.join(section) or 'top'}", yaml.safe_dump(copy).encode()
    raw = text.encode()
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            yield f"duplicate line {i + 1}", "".join(lines[: i + 1] + [line] + lines[i + 1 :]).encode()
            break
    yield "utf-8 BOM", codecs.BOM_UTF8 + raw
    yield "utf-16 LE", codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    yield "utf-16 BE", codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    yield "utf-32 LE", text.encode("utf-32")
    yield "utf-16 no BOM", text.encode("utf-16-le")
    yield "utf-16 BOM, odd length", codecs.BOM_UTF16_LE + text.encode("utf-16-le") + b"x"
    yield "latin-1 byte", raw.replace(b"stage", b"st\xe9ge", 1)
    yield "byte 0xff in a comment", b"# \xff\n" + raw
    yield "NUL byte", raw + b"\x00"
    yield "truncated", raw[: len(raw) // 2]
    yield "CR line ends", raw.replace(b"\n", b"\r")
    yield "tabs", raw.replace(b"  ", b"\t")
    yield "document twice", raw + b"\n---\n" + raw
    yield "anchor and merge", raw + b"\nextra: &a {x: 1}\nmore: {<<: *a}\n"
    yield "undefined alias", raw + b"\nextra: *nothing\n"
    yield "self-referencing alias", b"&a [*a]\n"
    yield "recursive mapping", b"a: &a {b: *a}\n"


def generic_cases() -> Iterator[tuple[str, bytes]]:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9)
    )
    yield "alias bomb", bomb.encode()
    yield "alias bomb in a section", ("train:\n  seed: 1\n" + bomb).encode()
    yield "empty", b""
    yield "only a comment", b"# nothing\n"
    yield "only ---", b"---\n"
    yield "only BOM", codecs.BOM_UTF8
    yield "utf-16 BOM only", codecs.BOM_UTF16_LE
    yield "a list", b"- 1\n- 2\n"
    yield "a scalar", b"3\n"
    yield "a string", b"hello\n"
    yield "deep lists", b"[" * 100_000 + b"]" * 100_000
    yield "deep mappings", b"{a: " * 5000 + b"1" + b"}" * 5000
    yield "deep indentation", "".join(" " * i + "a:\n" for i in range(3000)).encode()
    yield "huge file", b"# " + b"x" * (2 << 20) + b"\n"
    yield "just under the limit", b"stage: 1\n# " + b"x" * ((1 << 20) - 20) + b"\n"
    yield "long line of keys", ("{" + ", ".join(f"k{i}: {i}" for i in range(90_000)) + "}").encode()
    yield "many documents", b"---\n" * 200_000
    yield "png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    yield "tag on the document", b"!!python/object/apply:os.system [ls]\n"
    yield "python name tag", b"stage: !!python/name:os.system\n"
    yield "complex key", b"? [a, b]\n: 1\n"
    yield "mapping key", b"? {a: 1}\n: 1\n"
    yield "null key", b"~: 1\n"
    yield "bool key", b"true: 1\n"
    yield "float key", b".nan: 1\n"
    yield "directive", b"%YAML 1.2\n---\nstage: 1\n"
    yield "bad directive", b"%YAML 9.9\n---\nstage: 1\n"
    yield "tag directive", b"%TAG !e! tag:example.com,2000:\n---\nstage: !e!x 1\n"
    yield "surrogate escape", b'out_dir: "\\ud800"\n'
    yield "control character", b"stage: 1\x07\n"
    yield "lone CR", b"stage: 1\rx: 2\n"


def _child(action: str, config: str, overrides: Any, log: Path) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.alarm(TIMEOUT_S)
    # backslashreplace, as Python's own stderr: an undecodable name is shown, not a harness error
    with open(log, "w", errors="backslashreplace") as stream, redirect_stderr(stream), redirect_stdout(io.StringIO()):
        logging.basicConfig(stream=stream, force=True)
        try:
            if action == "cli":
                return srfeat_main(["train", config, "--dry-run", *overrides])
            load_config(config, overrides)
            return 0
        except SRFeatError as error:
            stream.write(f"ERROR: {error}\n")
            return 1
        except BaseException:  # noqa: BLE001 - what the fuzz is for
            traceback.print_exc(file=stream)
            return 2


def run_case(action: str, config: str, overrides: Any, folder: Path) -> dict[str, Any]:
    """`action` ("cli" or "api") in a forked child under the limits: its outcome classes and its stderr."""
    log = folder / "child.log"
    pid = os.fork()
    if pid == 0:  # the child: never returns, whatever happens in it
        code = 3
        try:
            code = _child(action, config, overrides, log)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = log.read_text(errors="replace")
    classes = []
    if os.WIFSIGNALED(status):
        classes.append("hang" if os.WTERMSIG(status) == signal.SIGALRM else f"signal {os.WTERMSIG(status)}")
    elif os.WEXITSTATUS(status) not in (0, 1):
        classes.append(f"exit {os.WEXITSTATUS(status)}")
    if "Traceback" in text or "MemoryError" in text:
        classes.append("traceback")
    errors = [line for line in text.splitlines() if line.strip() and not line.startswith("WARNING")]
    if len(errors) > 1:
        classes.append("several lines")
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return {"classes": classes, "code": code, "log": text[-2000:]}


def cli_subprocess(config: str, overrides: list[str]) -> dict[str, Any]:
    """The case as a user runs it, for the failures the fuzz found."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    try:
        done = subprocess.run(
            [sys.executable, "-m", "srfeat.cli", "train", config, "--dry-run", *overrides],
            capture_output=True,
            timeout=TIMEOUT_S,
            preexec_fn=limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"rc": None, "stderr": "timeout"}
    return {"rc": done.returncode, "stderr": done.stderr.decode(errors="replace")[-2000:]}


def seed_configs(paths: list[Path]) -> list[Path]:
    """The config files named, and every `*.yaml` under the folders named (configs/: all the shipped ones)."""
    found: list[Path] = []
    for path in paths:
        found += sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
    return found


def all_cases(seeds: list[Path], folder: Path) -> list[tuple[str, str, str, bytes | None, Any]]:
    """(seed, kind, name, file bytes or None for the seed itself, overrides) for each case, in a fixed order."""
    cases: list[tuple[str, str, str, bytes | None, Any]] = []
    for config in seeds:
        for name, data in file_cases(config):
            cases.append((str(config), "value" if "=" in name else "file", name, data, []))
        cases += [(str(config), "override", f"override {items[0][:40]!r}", None, items) for items in ODD_OVERRIDES]
        # through Python only: overrides of a type other than a list of strings (a dict of dotted keys, as a
        # caller might well try; a set; one string; a generator)
        for overrides in API_OVERRIDES:
            cases.append((str(config), "api types", f"overrides {overrides!r}"[:60], None, overrides))
    cases += [("", "generic", name, data, []) for name, data in generic_cases()]
    special = folder / "special"
    special.mkdir(exist_ok=True)
    fifo = special / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)
    cases += [("", "special", "a folder", None, str(special)), ("", "special", "a fifo", None, str(fifo))]
    return cases


def evenly(cases: list[Any], budget: int) -> list[Any]:
    """`budget` of `cases`, spread over the whole list (every seed and kind keeps its share)."""
    if budget >= len(cases):
        return cases
    return [cases[i * len(cases) // budget] for i in range(budget)]


def without_advice(log: str) -> bool:
    """Whether a refusal's one line lacks every word that says what to do (a heuristic, for review)."""
    errors = [line for line in log.splitlines() if line.startswith("ERROR")]
    return bool(errors) and not any(word in errors[-1] for word in ADVICE_WORDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--configs", type=Path, nargs="+", default=[Path("configs")], help="files or folders")
    parser.add_argument("--budget", type=int, default=None, help="at most this many cases, spread evenly")
    parser.add_argument("--api", action="store_true", help="also read every case with load_config from Python")
    parser.add_argument("--cli", action="store_true", help="check each failure again with python -m srfeat.cli")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    seeds = seed_configs(args.configs)
    print(f"{len(seeds)} seed configs: {', '.join(map(str, seeds))}")
    counts: Counter[str] = Counter()
    failures, accepted, unadvised = [], Counter(), Counter()
    with open(args.folder / "results.jsonl", "w") as results:
        for seed, kind, name, data, overrides in evenly(all_cases(seeds, args.folder), args.budget or 10**9):
            path = args.folder / "case.yaml"
            target = seed
            if kind == "special":
                target, overrides = overrides, []
            elif data is not None:
                path.write_bytes(data)
                target = str(path)
            # a hostile value is read by load_config too: the dry run stops at the first missing folder (the paper's
            # COCO), which would hide a value taken as it is
            actions = ["api"] if kind == "api types" else ["cli", "api"] if args.api or kind == "value" else ["cli"]
            for action in actions:
                outcome = run_case(action, target, overrides, args.folder)
                counts["cases"] += 1
                for outcome_class in outcome["classes"] or ["ok"]:
                    counts[outcome_class] += 1
                record = {"seed": seed, "case": name, "action": action, **outcome}
                if kind == "value" and action == "api" and outcome["code"] == 0:
                    accepted[name] += 1
                if without_advice(outcome["log"]):
                    unadvised[outcome["log"].strip().splitlines()[-1][:200]] += 1
                if outcome["classes"]:
                    if args.cli and action == "cli":
                        record["subprocess"] = cli_subprocess(target, overrides)
                    failures.append(record)
                    if data is not None and target == str(path):
                        (args.folder / f"failure_{len(failures)}.yaml").write_bytes(data)
                results.write(json.dumps(record, default=repr) + "\n")
    print("hostile values accepted (review: is each a value the key may take?):")
    for name, times in sorted(accepted.items()):
        print(f"  {name} ({times} seeds)")
    print("refusals with no advice word (review: does each say what to do?):")
    for line, times in unadvised.most_common():
        print(f"  {times}x {line}")
    for failure in failures:
        last = [line for line in failure["log"].splitlines() if line.strip()][-1:]
        print(f"{failure['seed']} | {failure['case']} | {failure['action']} | {failure['classes']} | {last}")
    print(json.dumps(counts))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
