"""Fuzz `srfeat`'s command-line flags with hostile values and report every run that is not a clean outcome.

Each case is `srfeat.cli.main(argv)` in a forked child (the parent imported torch and the commands once, so a
case costs milliseconds, not an interpreter start), in a scratch folder of tiny inputs, under a time and memory
limit. Clean: exit 0, or an error of one line (exit 1, or 2 for argparse's usage error). A violation: a traceback,
more than one error line, a signal, a timeout (serve, which runs until stopped, excepted once it says it serves).

    PYTHONPATH=. python3 scripts/fuzz_arguments.py [--only upscale] [--timeout 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NUMBERS = ["-1", "0", "1e999", "nan", "inf", "-inf", "", " ", "\uff11", " 2 ", "0x10", "9" * 30, "1.5", "abc", "\n"]
PATHS = ["folder", "missing.png", "fifo", "new\nline.png", "text.png", "-", "image.png", "\u00e9t\u00e9.png"]
MODELS = ["default:", "strength=", "blend=a,b", "-", "folder", "missing.safetensors", "text.safetensors", "", "gan "]
MODELS += ["image.png", "fifo", "DEFAULT"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its arguments that run cleanly, and which flags take numbers, paths or models."""

    base: list[str]
    numbers: list[str]
    paths: list[str]
    models: list[str]
    texts: list[str]


COMMANDS = {
    "upscale": Command(
        ["upscale", "image.png", "-o", "out", "--device", "cpu", "--tile", "0"],
        ["--outscale", "--strength", "--tile", "--tile-pad", "--crf"],
        ["-o"],
        ["--model"],
        ["--suffix", "--device", "--codec", "--frames", "--ext", "--backend"],
    ),
    "eval": Command(
        ["eval", "--model", "bicubic", "--data", "data", "--device", "cpu"],
        ["--strength", "--figure-crop"],
        ["--data", "--json", "--figure", "--plane"],
        ["--model"],
        ["--device", "--figure-image", "--metrics", "--scale"],
    ),
    "train": Command(["train", "config.yaml", "--dry-run", "-o", "run"], ["--max-steps"], ["-o", "--resume"], [], []),
    "prepare": Command(
        ["prepare", "data", "patches", "--hr-patch-size", "8", "--workers", "1"],
        ["--seed", "--hr-patch-size", "--workers"],
        [],
        [],
        ["--scale"],
    ),
    "convert": Command(["convert", "text.npz", "-o", "converted.safetensors"], [], ["-o"], [], []),
    "blend": Command(
        ["blend", "default", "gan", "--alpha", "0.5", "-o", "blend.safetensors"], ["--alpha"], ["-o"], [], []
    ),
    "export": Command(
        ["export", "-o", "model.onnx", "--opset", "17"],
        ["--strength", "--opset"],
        ["-o"],
        ["--model"],
        ["--training-data", "--license"],
    ),
    "serve": Command(
        ["serve", "--no-browser", "--port", "0", "--device", "cpu"],
        [
            "--port",
            "--max-upload-mb",
            "--max-megapixels",
            "--max-held-mb",
            "--max-queued",
            "--upload-timeout",
            "--tile",
        ],
        [],
        [],
        ["--host", "--device"],
    ),
}


def cases(name: str, command: Command) -> Iterator[list[str]]:
    """The base run, then each flag given each hostile value of its kind, once and twice in conflict."""
    yield command.base
    kinds = [(command.numbers, NUMBERS), (command.paths, PATHS), (command.models, MODELS), (command.texts, NUMBERS)]
    for flags, values in kinds:
        for flag in flags:
            for value in values:
                yield [*command.base, flag, value]
            yield [*command.base, flag, values[0], flag, values[-1]]
    positional = {"upscale": 1, "eval": None, "train": 1, "prepare": 1, "convert": 1, "blend": 1}.get(name)
    if positional is not None:
        for value in PATHS + ["", "*.png", "[", "folder/"]:
            argv = list(command.base)
            argv[positional] = value
            yield argv


def make_scratch(folder: Path) -> None:
    """The inputs cases name: a 16x16 PNG, a folder of them, a fifo, text posing as other kinds, a tiny config."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "image.png")
    (folder / "folder").mkdir()
    (folder / "data").mkdir()
    for index in range(2):
        Image.fromarray(np.roll(pixels, index, 0)).resize((32, 32)).save(folder / "data" / f"{index}.png")
    os.mkfifo(folder / "fifo")
    for name in ("text.png", "text.safetensors", "text.npz"):
        (folder / name).write_text("not what the name says\n")
    (folder / "config.yaml").write_text("train:\n  max_steps: 1\n")


def run_case(argv: list[str], folder: Path, timeout: float) -> tuple[str, str]:
    """(outcome, stderr) of `srfeat argv` in a forked child in `folder`."""
    err_path = folder / ".stderr"
    pid = os.fork()
    if pid == 0:  # the child: its own folder, output and limits; any exit path ends in os._exit
        code = 70
        try:
            os.chdir(folder)
            resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
            descriptor = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(descriptor, 2)
            os.dup2(descriptor, 1)
            from srfeat.cli import main

            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - any escape from main is the violation this reports
            import traceback

            traceback.print_exc()
            code = 70
        finally:
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", err_path.read_text(errors="replace")
        time.sleep(0.02)
    text = err_path.read_text(errors="replace")
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}", text
    return classify(os.WEXITSTATUS(status), text), text


def classify(code: int, text: str) -> str:
    # upscale's closing "N of M input(s) failed" follows each input's own line by design; eval's table is stdout
    errors = [
        line for line in text.splitlines() if line.startswith(("ERROR", "usage")) and "input(s) failed" not in line
    ]
    if "Traceback" in text or code == 70:
        return "traceback"
    if code == 0:
        return "ok"
    if len(errors) != 1:
        return "many lines"
    return "usage" if code == 2 else "error"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=sorted(COMMANDS), help="fuzz only these subcommands")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a case may run")
    parser.add_argument("--list-ok", action="store_true", help="also name the cases that exited 0, to judge them")
    args = parser.parse_args()
    import srfeat.cli

    srfeat.cli.build_parser()  # imports every command module once, before the forks
    counts: dict[str, dict[str, int]] = {}
    for name in args.only or sorted(COMMANDS):
        tally = counts.setdefault(name, {})
        for argv in cases(name, COMMANDS[name]):
            with tempfile.TemporaryDirectory(prefix="fuzz_") as scratch:
                make_scratch(Path(scratch))
                outcome, text = run_case(argv, Path(scratch), min(args.timeout, 8) if name == "serve" else args.timeout)
            if name == "serve" and outcome == "timeout" and "Traceback" not in text:
                outcome = "ok"  # it serves until stopped
            tally[outcome] = tally.get(outcome, 0) + 1
            if args.list_ok and outcome == "ok":
                print(f"ok: {argv!r}", flush=True)
            if outcome not in ("ok", "error", "usage"):
                tail = " | ".join(text.strip().splitlines()[-3:])[:400]
                print(f"VIOLATION {outcome}: {argv!r}\n    {tail}", flush=True)
    for name, tally in counts.items():
        print(name, sum(tally.values()), tally)
    return 0


if __name__ == "__main__":
    sys.exit(main())
