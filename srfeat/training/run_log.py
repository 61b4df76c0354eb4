"""The run's records: metrics.jsonl, TensorBoard event files and the PNG plot (main process only).

OUT/metrics.jsonl    one JSON object per log ("kind": "train") and validation ("validation");
                     a non-finite number (the PSNR of an output identical to its HR) is null
OUT/training.png     losses and validation PSNR (and NIQE in stage 2) over the run
OUT/tensorboard/     losses, lr, PSNR/SSIM and validation images
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from srfeat.files import FULL_DISK_ERRNOS, DiskFullError, write_file_atomically
from srfeat.path_checks import utf8_path
from srfeat.training.config import train_option

__all__ = ["METRICS_FILE", "PLOT_FILE", "RunLog"]

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def json_line(record: dict[str, Any]) -> str:
    """`record` as one line of strict JSON: non-finite floats become null.

    Python's json writes them as `Infinity` / `NaN`, which other JSON readers (jq, JavaScript's
    JSON.parse, pandas' strict mode) refuse, so one perfect validation image would make the whole
    log unreadable to them.
    """
    strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    return json.dumps(strict, allow_nan=False) + "\n"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, without the lines a killed or broken run left unreadable.

    A run killed while appending leaves a torn last line; it is dropped with a warning (the
    resumed run redoes that step and logs it again), as is any other line that is not a JSON
    record with a step, so that a damaged log never stops a resume.
    """
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            logger.warning("%s line %d is not JSON (%s; a run killed while writing it?): dropped", path, number, error)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "kind" not in record:
            logger.warning("%s line %d is not a record with a kind and a step: dropped", path, number)
            continue
        records.append(record)
    return records


@contextmanager
def _writer_thread_errors_left_to_the_writer() -> Iterator[None]:
    """While the block runs, an error of TensorBoard's writer thread (a full disk) is not printed as the
    thread ends: the writer raises it again at its next call, where `RunLog` makes it one line. It was a
    traceback of "Exception in thread" in the middle of the run's output, before the run's own error."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        writers = type(args.thread).__module__.startswith("tensorboard.")
        if not (writers and isinstance(args.exc_value, OSError)):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        if threading.excepthook is hook:  # unless something set its own since
            threading.excepthook = previous


def _finite(value: Any) -> bool:
    """A number the plot can draw (records read back hold null where the run had inf)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class RunLog:
    """metrics.jsonl, TensorBoard and the PNG plot of one run (main process only)."""

    out_dir: Path
    enabled: bool
    # a resumed run's first step: TensorBoard hides the earlier process's events from it on (the
    # steps a kill lost after the checkpoint, which this run logs again)
    purge_step: int | None = None
    command_line: bool = False  # its messages name `srfeat train`'s flags, not `train`'s keywords
    writer: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)
    _held_open: ExitStack = field(default_factory=ExitStack)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        path = self.out_dir / METRICS_FILE
        if path.is_file():
            self.records = read_records(path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.out_dir / "tensorboard"
            folder.mkdir(exist_ok=True)
            # TensorBoard takes UTF-8 names only: a run folder named on a Latin-1 system (`caf\xe9`) was a
            # UnicodeEncodeError traceback; it writes through a descriptor of the folder instead.
            logdir = self._held_open.enter_context(utf8_path(folder))
            self._held_open.enter_context(_writer_thread_errors_left_to_the_writer())
            try:
                self.writer = self._tensorboard(lambda: SummaryWriter(logdir, purge_step=self.purge_step))
            except BaseException:  # no RunLog to close: what it holds open is let go here
                self._held_open.close()
                raise
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            logger.warning("tensorboard is not importable; TensorBoard logs are off")

    def truncate_after(self, step: int) -> None:
        """Forget records past `step` (a resumed run redoes those steps)."""
        if not self.enabled:
            return
        self.records = [r for r in self.records if r["step"] <= step]
        # Atomically: a run killed here keeps the history it had, not an empty or half file.
        text = "".join(json_line(r) for r in self.records).encode()
        write_file_atomically(self.out_dir / METRICS_FILE, lambda handle: handle.write(text), len(text))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        path = self.out_dir / METRICS_FILE
        line = memoryview(json_line(record).encode())
        with open(path, "ab", buffering=0) as handle:  # unbuffered: nothing left to flush at close
            end = handle.tell()
            try:
                while line:
                    line = line[handle.write(line) or 0 :]
            except OSError as error:  # a full disk was a traceback mid-run and a torn last line
                handle.truncate(end)
                if error.errno not in FULL_DISK_ERRNOS:
                    raise
                raise DiskFullError(
                    f"no disk space left to log step {record['step']} in {path}: free some space, then run again "
                    f"({self._resume_option()} continues from the last checkpoint, if one was saved)"
                ) from error
        if self.writer is not None:
            prefix = "validation/" if record["kind"] == "validation" else ""
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard(partial(self.writer.add_scalar, prefix + key, value, record["step"]))

    def images(self, tag: str, images: list[torch.Tensor], step: int) -> None:
        if self.enabled and self.writer is not None:
            for i, image in enumerate(images):
                self._tensorboard(partial(self.writer.add_image, f"{tag}/{i}", image, step))

    def _tensorboard(self, call: Callable[[], _Result]) -> _Result:
        """`call` to the TensorBoard writer; a full disk, met by it or by its thread since the last call,
        one line as metrics.jsonl's (it was a traceback)."""
        try:
            return call()
        except OSError as error:
            if error.errno not in FULL_DISK_ERRNOS:
                raise
            raise DiskFullError(
                f"no disk space left for the TensorBoard log in {self.out_dir / 'tensorboard'}: free some space, "
                f"then run again ({self._resume_option()} continues from the last checkpoint, if one was saved)"
            ) from error

    def _resume_option(self) -> str:
        return train_option("resume", command_line=self.command_line)

    def plot(self) -> None:
        if not self.enabled or not self.records:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r["kind"] == "train"]
        validation = [r for r in self.records if r["kind"] == "validation"]
        loss_keys = sorted({k for r in train for k in r if k.startswith("loss/")})
        figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
        for key in loss_keys:
            points = [(r["step"], r[key]) for r in train if _finite(r.get(key)) and r[key] > 0]
            if points:
                loss_axis.plot(*zip(*points, strict=True), label=key.removeprefix("loss/"))
        loss_axis.set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
        if loss_keys:
            loss_axis.legend()
        points = [(r["step"], r["psnr"]) for r in validation if _finite(r.get("psnr"))]
        if points:
            psnr_axis.plot(*zip(*points, strict=True), marker="o")
        psnr_axis.set(xlabel="step", ylabel="PSNR (dB, Y)", title="validation PSNR")
        psnr_axis.grid(alpha=0.3)
        points = [(r["step"], r["niqe"]) for r in validation if _finite(r.get("niqe"))]
        if points:  # stage 2 trades PSNR for what NIQE measures: show both
            psnr_axis.set_title("validation PSNR and NIQE")
            niqe_axis = psnr_axis.twinx()
            niqe_axis.plot(*zip(*points, strict=True), marker="s", color="tab:red")
            niqe_axis.set_ylabel("NIQE (lower is better)", color="tab:red")
        figure.tight_layout()
        image = io.BytesIO()
        try:
            figure.savefig(image, format="png", dpi=100)
        finally:
            plt.close(figure)
        # as the checkpoints: a full disk was a traceback mid-run (and a half-written temporary)
        data = image.getvalue()
        write_file_atomically(self.out_dir / PLOT_FILE, lambda handle: handle.write(data), len(data))

    def close(self) -> None:
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                # flush first: close does not raise what the writer's thread met, and its last events would
                # be lost without a word
                self._tensorboard(writer.flush)
                self._tensorboard(writer.close)
        finally:
            self._held_open.close()
