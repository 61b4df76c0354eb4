"""The run's records (srfeat/training/run_log.py): metrics.jsonl stays strict JSON; a full disk under
TensorBoard's log is one line."""

from __future__ import annotations

import errno
import json
import math
import os
import threading

import pytest

from srfeat.files import DiskFullError
from srfeat.training.run_log import METRICS_FILE, PLOT_FILE, RunLog


def strict_json(line: str) -> dict[str, object]:
    """A line of metrics.jsonl, read as JavaScript's JSON.parse or jq read it: no Infinity or NaN; one object."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not strict JSON: {constant}")

    record = json.loads(line, parse_constant=refuse)
    assert isinstance(record, dict), record
    return record


def test_an_infinite_psnr_is_written_as_null_and_the_log_reads_back_and_plots(tmp_path) -> None:
    # An output identical to its HR image has an infinite PSNR; Python's json would write it as
    # `Infinity`, which no strict JSON reader accepts.
    log = RunLog(tmp_path, enabled=True)
    log.write({"kind": "train", "step": 1, "loss/mse": 0.01})
    log.write({"kind": "validation", "step": 1, "psnr": math.inf, "ssim": 1.0})
    log.write({"kind": "validation", "step": 2, "psnr": 30.5, "ssim": 0.9})
    log.truncate_after(2)  # the rewrite path as well as the append path
    log.write({"kind": "validation", "step": 3, "psnr": -math.inf, "ssim": 0.5})
    log.close()

    records = [strict_json(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["psnr"] for r in records if r["kind"] == "validation"] == [None, 30.5, None]

    resumed = RunLog(tmp_path, enabled=True)  # a resume reads the nulls back and still plots
    resumed.plot()
    resumed.close()
    assert len(resumed.records) == 4
    assert (tmp_path / PLOT_FILE).stat().st_size > 0


def test_a_nan_in_a_record_is_not_written_as_nan(tmp_path) -> None:
    log = RunLog(tmp_path, enabled=True)
    log.write({"kind": "train", "step": 1, "loss/mse": math.nan})
    log.close()
    (record,) = [strict_json(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert record == {"kind": "train", "step": 1, "loss/mse": None}


@pytest.mark.parametrize("value", [0, 1.5, "text", None, True])
def test_finite_values_are_written_unchanged(tmp_path, value: object) -> None:
    log = RunLog(tmp_path, enabled=True)
    log.write({"kind": "train", "step": 1, "x": value})
    log.close()
    (record,) = [strict_json(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert record["x"] == value and type(record["x"]) is type(value)


def test_a_full_disk_that_the_tensorboard_thread_met_after_the_last_write_is_one_line_at_close(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the writer's thread failed on the run's last events: close said nothing, and they were lost
    from tensorboard.summary.writer.record_writer import RecordWriter

    disk_full, written = False, threading.Event()
    write = RecordWriter.write

    def full_disk_write(self: RecordWriter, data: bytes) -> None:
        if disk_full:
            written.wait(timeout=60)  # once log.write has returned: the failure is met by the thread only
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(self, data)

    monkeypatch.setattr(RecordWriter, "write", full_disk_write)
    log = RunLog(tmp_path, enabled=True)
    log.write({"kind": "train", "step": 1, "loss/mse": 0.01})
    assert log.writer is not None
    log.writer.flush()
    disk_full = True
    log.write({"kind": "train", "step": 2, "loss/mse": 0.01})
    written.set()
    with pytest.raises(DiskFullError, match=r"no disk space left for the TensorBoard log in .*tensorboard: free some"):
        log.close()
    assert [record["step"] for record in log.records] == [1, 2]
