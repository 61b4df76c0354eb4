"""The `srfeat` command: upscale | eval | train | prepare | convert | blend | export | serve.

Each subcommand lives in `srfeat/commands/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> int`; this module only dispatches, so `srfeat --help` stays fast (the heavy
imports happen inside the chosen command).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from srfeat.commands.arguments import OneLineErrorParser
from srfeat.errors import SRFeatError, printable
from srfeat.training.interrupt import HANGUP, ignore_further_hangups

COMMANDS: dict[str, str] = {
    "upscale": "Upscale images 4x with a bundled model or a checkpoint.",
    "eval": "Evaluate models on benchmark folders (PSNR/SSIM/NIQE tables and figures).",
    "train": "Train SRFeat from a YAML config (stage 1: MSE, stage 2: GAN).",
    "prepare": "Cut HR/LR training patches by the authors' recipe.",
    "convert": "Convert the authors' released weights (SRFeat_full.npz) to a srfeat checkpoint.",
    "blend": "Blend two generators of the same architecture (network interpolation, e.g. default and gan).",
    "export": "Export a model to ONNX (for ONNX Runtime, chaiNNer, OpenVINO, TensorRT).",
    "serve": "Start the local web app: drop images, compare before/after, download.",
}


# Commands that upscale but do not train. Their OpenMP threads sleep at the end of a parallel
# region instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless the user set it): beside other
# work on the machine, a spinning thread holds the core its partner needs: a 64x64 upscale on
# 2 threads took 4.89 s beside a training run instead of 0.39 s, and alone it is no slower.
# Training keeps the default: its Winograd steps, many short parallel regions, were 1.6x
# slower with sleeping threads (benchmarks/README.md).
PASSIVE_OPENMP_COMMANDS = {"upscale", "eval", "blend", "export", "serve"}

# Commands that take images of many sizes in one process: a folder, a benchmark set, a server's
# day. oneDNN keeps the kernels it built for each matrix shape (1024 of them by default), about
# 0.5 MB more for every new image size, never given back; 16 hold what one image reuses, and
# rebuilding the rest costs nothing measurable (`benchmarks/memory.py --sizes`).
MANY_SIZES_COMMANDS = {"upscale", "eval", "serve"}
ONEDNN_CACHE_CAPACITY = "16"


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread: `finally` blocks run and remove partly written files.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    def __init__(self, signal_number: int = signal.SIGTERM) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def terminating_signals() -> list[int]:
    """The signals that stop a command as SIGTERM does: SIGTERM, and SIGHUP (the terminal closed, the
    SSH session dropped) where it has its default action, which killed the process at once, leaving
    a `.NAME.PID.tmp` and a training run's steps since its last checkpoint. An ignored SIGHUP (under
    `nohup`) stays ignored, and so does any a caller of `main` handles itself."""
    default = HANGUP is not None and signal.getsignal(HANGUP) == signal.SIG_DFL
    return [signal.SIGTERM, HANGUP] if default and HANGUP is not None else [signal.SIGTERM]


def _terminate_handler(owner: int) -> Callable[[int, FrameType | None], None]:
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if os.getpid() != owner:  # a forked worker (DataLoader): die as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if signum != signal.SIGTERM:  # SIGHUP: one hangup, one stop (a second cut this one's cleanup short)
            ignore_further_hangups()
            if stopping:
                return
        stopping = True
        raise Terminated(signum)

    return handler


class _StderrFile(io.FileIO):
    """Standard error that a closed terminal (EIO) or a reader gone (EPIPE: `2>&1 | tee log`, and tee
    hung up too) does not fail: what is left goes to /dev/null. The progress bar's next write raised
    BrokenPipeError in the middle of a training step (tqdm forgives EIO only): the run ended in a
    traceback, without the checkpoint the SIGHUP asked for. Other errors (`2> /dev/full`) are raised."""

    def write(self, data: Any) -> int | None:
        try:
            return super().write(data)
        except OSError as error:
            if error.errno not in (errno.EIO, errno.EPIPE):
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.fileno())
            os.close(devnull)
            return memoryview(data).nbytes


def _forgiving_stderr() -> None:
    """Standard error as Python opens it (line-buffered), on a `_StderrFile`."""
    stderr = sys.stderr
    if stderr is None or not hasattr(stderr, "fileno"):
        return
    try:
        fd = stderr.fileno()
        stderr.flush()
    except (OSError, ValueError):
        return
    raw = _StderrFile(fd, "w", closefd=False)
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(raw), encoding=stderr.encoding, errors=stderr.errors, line_buffering=True
    )


class OneLineFormatter(logging.Formatter):
    """Each record on one line: control characters in its message written as `\\n`, `\\x1b`
    (`srfeat.errors.printable`). Messages quote file names, and a name holding a newline printed a
    fake `ERROR:` line in a successful run, one holding an escape sequence rewrote the terminal. A
    traceback (`-v`, `exc_info`) keeps its lines: it is appended after the message is formatted."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging.Formatter's name, overridden
        return printable(super().formatMessage(record))


def write_output(text: str) -> None:
    """A command's output (eval's table, the URL serve listens on) on stdout, flushed.

    A reader that went away (`srfeat eval ... | head -1`) is no error: what is left goes to
    /dev/null and the command does the rest of its work (eval's --json, serving); it was a
    BrokenPipeError traceback. Any other failure (`> /dev/full`) is one line and exit status 1.
    """
    try:
        try:
            sys.stdout.write(text)
        except UnicodeEncodeError:  # a name that is not UTF-8 (`caf\xe9`), under a UTF-8 locale's strict stdout:
            sys.stdout.flush()  # its own bytes, as `ls` shows it; it was a traceback after the work was done
            encoding = sys.stdout.encoding or "utf-8"
            try:
                data = text.encode(encoding, "surrogateescape")
            except UnicodeEncodeError:
                data = text.encode(encoding, "backslashreplace")
            sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except OSError as error:
        _stdout_to_devnull()  # else the flush at exit fails again, with "Exception ignored" and a traceback
        if not isinstance(error, BrokenPipeError):
            raise SRFeatError(f"could not write to standard output: {error.strerror or error}") from None


def _stdout_to_devnull() -> None:
    target = 1 if sys.stdout is None else sys.stdout.fileno()
    devnull = os.open(os.devnull, os.O_WRONLY)  # fd 1 itself where standard output was closed
    if devnull != target:
        os.dup2(devnull, target)
        os.close(devnull)
    if sys.stdout is None:  # started with standard output closed (`>&-`)
        sys.stdout = open(target, "w", closefd=False)  # noqa: SIM115 - the program's stdout, open until it exits


def version_line() -> str:
    """srfeat's version and what it runs on, for bug reports; read from the installed packages'
    metadata, so that `--version` does not wait for torch to import."""
    from importlib import metadata

    from srfeat import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"srfeat {__version__} (PyTorch {installed('torch')}, Python {python})"


VERBOSE_HELP = "log debug messages"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="srfeat", description=__doc__.splitlines()[0] if __doc__ else None
    )  # None under python -OO
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=version_line(), help="show versions (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"srfeat.commands.{name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        # After the command too (`srfeat upscale -v photo.jpg`), where it was "unrecognized arguments: -v".
        # SUPPRESS: not given here, it leaves the top-level flag's value (`srfeat -v upscale ...`) alone.
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        sub.set_defaults(run=module.run, command_parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _forgiving_stderr()
    if argv is None and sys.stdout is None:
        # Standard output closed (`srfeat ... >&-`): output goes nowhere, as to /dev/null, where it
        # was a traceback (serve) or nothing said; and fd 1 is taken, so no file srfeat opens gets it.
        _stdout_to_devnull()
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # named by the command's parser, whose --help lists what it takes (not the top one's)
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:  # Ctrl-C in the first tenth of a second, while the commands import
        sys.stderr.write("ERROR: interrupted\n")
        return 128 + signal.SIGINT
    # Only as the program (argv from the command line): a caller's own process and environment,
    # which its later subprocesses inherit, are not ours to change. Before torch loads libgomp,
    # which reads the variable once; oneDNN reads its own when it first builds a kernel.
    if argv is None and args.command in PASSIVE_OPENMP_COMMANDS:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv is None and args.command in MANY_SIZES_COMMANDS:
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    handler = logging.StreamHandler()
    handler.setFormatter(
        OneLineFormatter(
            "%(levelname)s: %(message)s" if not args.verbose else "%(asctime)s %(name)s %(levelname)s: %(message)s"
        )
    )
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    if argv is None and not args.verbose:
        # PyTorch's own INFO records are not for users: an import cut short by Ctrl-C left its exit
        # hook printing "FakeTensor cache stats" after srfeat's last line. (A caller's loggers are its own.)
        logging.getLogger("torch").setLevel(logging.WARNING)
    in_main_thread = threading.current_thread() is threading.main_thread()
    on_signal = _terminate_handler(os.getpid())
    previous = {number: signal.signal(number, on_signal) for number in terminating_signals()} if in_main_thread else {}
    try:
        try:
            return int(args.run(args) or 0)
        except SRFeatError as error:
            logging.getLogger("srfeat").error("%s", error)
            return 1
        except KeyboardInterrupt as interrupt:  # training's own says where it stopped and how to resume
            logging.getLogger("srfeat").error("%s", str(interrupt) or "interrupted")
            return 128 + getattr(interrupt, "signal_number", signal.SIGINT)  # SIGTERM, SIGHUP too, once saved
    except Terminated as stop:  # in the command, or while its error or interruption above was reported
        name = signal.Signals(stop.signal_number).name
        logging.getLogger("srfeat").error("terminated (%s); files being written were removed", name)
        return 128 + stop.signal_number
    finally:
        for number, before in previous.items():
            if number != signal.SIGTERM and signal.getsignal(number) == signal.SIG_IGN:
                continue  # SIGHUP, since the hangup the command stopped for: a later one is the same
            signal.signal(number, before)


if __name__ == "__main__":
    sys.exit(main())
