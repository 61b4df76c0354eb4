"""`srfeat serve` against a hostile or unlucky world: servers sharing a temporary folder, results past
--max-held-mb, and requests no page would send. Servers run as subprocesses (`test_web.start_server`)."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from test_web import (
    _dead_process_id,
    png_bytes,
    start_server,
    stop_server,
    upload,
    wait_for_result,
)


def _wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + 120
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} did not appear within 120 s"
        time.sleep(0.05)
    return path.read_text()


def _gated_upscale(entered: Path, gate: Path, pid: int) -> str:
    """A server's prelude: its jobs wait inside their temporary folder (after writing its path to `entered`)
    until `gate` exists, and it sees itself as process `pid` (as a server in another container would look)."""
    return f"""
import os, time
from pathlib import Path
import srfeat.inference.image_files as image_files
os.getpid = lambda: {pid}
upscale = image_files.upscale_file
def gated(upscaler, source, target, *args, **kwargs):
    Path({str(entered)!r}).write_text(str(source))
    while not Path({str(gate)!r}).exists():
        time.sleep(0.05)
    return upscale(upscaler, source, target, *args, **kwargs)
image_files.upscale_file = gated
"""


def test_a_server_starting_beside_another_in_another_container_leaves_its_job_folder_alone(tmp_path: Path) -> None:
    """Stale job folders were told by the process id in their name: a server in another container sharing
    /tmp (where that id is no process) removed a running job's folder as it started. Now the folder is its
    server's while the server holds its lock; a killed server's is still removed, lock and all."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    other_namespace_pid = _dead_process_id()
    running = start_server(prelude=_gated_upscale(entered, gate, other_namespace_pid))
    try:
        job = json.loads(upload(running, "shared", "photo.png", png_bytes(16)).body)
        folder = Path(_wait_for_file(entered)).parents[1]
        assert folder.parent == Path(tempfile.gettempdir()) and folder.is_dir()
        assert str(other_namespace_pid) in folder.name
        second = start_server()  # sweeps stale folders as it starts
        stop_server(second)
        assert folder.is_dir(), "a starting server removed the folder of another server's running job"
        gate.write_text("go")
        result = wait_for_result(running, "shared", job["id"])
        assert result.status == 200, result.body
        assert not folder.exists()
        assert list(folder.parent.glob(f".{folder.name}*")) == []  # its lock is gone with it

        # A server killed mid-job leaves its folder and lock: the next sweep removes both.
        gate.unlink()
        entered.write_text("")
        upload(running, "shared", "again.png", png_bytes(16))
        folder = Path(_wait_for_file(entered)).parents[1]
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(timeout=30)
        assert folder.is_dir() and list(folder.parent.glob(f".{folder.name}.*.tmp")) != []
        from srfeat.web.jobs import remove_stale_temporaries

        remove_stale_temporaries()
        assert not folder.exists()
        assert list(folder.parent.glob(f".{folder.name}*")) == []
    finally:
        gate.write_text("go")
        if running.process.poll() is None:
            stop_server(running)
