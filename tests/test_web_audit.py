"""`srfeat serve` against a hostile or unlucky world: servers sharing a temporary folder, results past
--max-held-mb, and requests no page would send. Servers run as subprocesses (`test_web.start_server`)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, expect
from test_web import (
    Server,
    _can_listen_on,
    _dead_process_id,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    call,
    job_card,
    open_tab,
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
import srfeat.web.worker as worker
os.getpid = lambda: {pid}
upscale = worker.upscale_read_image
def gated(upscaler, image, target, *args, **kwargs):
    Path({str(entered)!r}).write_text(str(target))
    while not Path({str(gate)!r}).exists():
        time.sleep(0.05)
    return upscale(upscaler, image, target, *args, **kwargs)
worker.upscale_read_image = gated
"""


def test_a_server_starting_beside_another_in_another_container_leaves_its_job_folder_alone(tmp_path: Path) -> None:
    """Stale job folders were told by the process id in their name: a server in another container sharing
    /tmp (where that id is no process) removed a running job's folder as it started. Now the folder is its
    server's while the server holds its lock; a killed server's is still removed, lock and all."""
    entered, gate = tmp_path / "entered", tmp_path / "gate"
    other_namespace_pid = _dead_process_id()
    running = start_server(prelude=_gated_upscale(entered, gate, other_namespace_pid))
    # Held open throughout: nothing else asks for the session while the second server starts, and a start
    # slower than its 10 s of allowed silence (a loaded machine) ended it, cancelling the job this test watches.
    events = urllib.request.urlopen(f"{running.url}api/sessions/shared/events", timeout=60)
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
        events.close()
        gate.write_text("go")
        if running.process.poll() is None:
            stop_server(running)


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[Server]:
    """A server that holds at most 0.04 MB (41943 bytes): a 48x48 PNG's upload fits, its 192x192 result does not."""
    started = start_server("--max-upload-mb", "0.01", "--max-held-mb", "0.04")
    yield started
    stop_server(started)


def test_a_result_past_max_held_mb_fails_its_job_and_says_so_in_the_page(tiny_server: Server, browser: Browser) -> None:
    """A finished result was kept whatever the server held already: past --max-held-mb, and every later
    upload was refused (503) until the page was closed. Now the job fails, its card says why and what to
    do, and the next upload is taken."""
    tab = open_tab(browser, tiny_server)
    page = tab.page
    try:
        big = png_bytes(48)  # 4.6 kB; its result is about 45 kB
        page.set_input_files("#files", files=[{"name": "big.png", "mimeType": "image/png", "buffer": big}])
        card = job_card(page, "big.png")
        expect(card).to_have_attribute("data-state", "failed", timeout=120_000)
        status = card.locator(".status[role='alert']")
        expect(status).to_contain_text("its result, big_x4.png (0.04 MB), would take what this server holds")
        # Upload and result together are past the limit: removing other images would not make room.
        expect(status).to_contain_text("past its limit of 0.04 MB (--max-held-mb); start the server with a larger")
        # What the failed job held is freed: the next upload is taken and kept.
        page.set_input_files("#files", files=[{"name": "small.png", "mimeType": "image/png", "buffer": png_bytes(32)}])
        expect(job_card(page, "small.png")).to_have_attribute("data-state", "done", timeout=120_000)
        # One that would fit alone but not beside small.png: removing finished images makes room for it.
        page.set_input_files("#files", files=[{"name": "second.png", "mimeType": "image/png", "buffer": png_bytes(32)}])
        second = job_card(page, "second.png")
        expect(second).to_have_attribute("data-state", "failed", timeout=120_000)
        expect(second.locator(".status[role='alert']")).to_contain_text(
            "(--max-held-mb); remove finished images from the page and upload it again, or start the server"
        )
        assert tab.console_errors == []
    finally:
        page.context.close()


def _wait_for_log_line(server: Server, text: str) -> None:
    deadline = time.monotonic() + 60
    while not any(text in line for line in list(server.log)):
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)


@pytest.mark.parametrize("session", ["\nERROR: forged", "\x1b[2J\x1b[Hforged", "a b", "x" * 129, ""])
def test_a_session_id_that_could_forge_the_servers_log_is_refused(tiny_server: Server, session: str) -> None:
    """Session ids were taken as given and printed in the log ("session %s ended"): a newline in one
    forged a line of the server's log, and escape codes cleared or rewrote its terminal."""
    quoted = urllib.parse.quote(session, safe="")
    for method, path in [
        ("GET", f"/api/sessions/{quoted}/jobs?page=p"),
        ("POST", f"/api/sessions/{quoted}/close"),
        ("GET", f"/api/sessions/{quoted}/room?bytes=10"),
        ("GET", f"/api/sessions/{quoted}/results.zip"),
    ]:
        answer = call(tiny_server, method, path)
        if session:  # an empty one is no route at all
            assert answer.status == 400, (path, answer.body)
            assert answer.error().startswith("a session id is 1 to 128 letters, digits"), answer.body
    refused = upload(tiny_server, session, "a.png", png_bytes(8))
    assert refused.status == 400 and "a session id is 1 to 128 letters" in refused.error(), refused.body
    # A well-named session's end is logged: anything logged before it is there by then.
    assert call(tiny_server, "GET", "/api/sessions/well-named_1.0/jobs?page=p").status == 200
    assert call(tiny_server, "POST", "/api/sessions/well-named_1.0/close").status == 204
    _wait_for_log_line(tiny_server, "session well-nam ended")
    assert not [line for line in tiny_server.log if "forged" in line or "\x1b" in line], tiny_server.log_text()


def _cut(image_format: str, keep: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, image_format)
    return buffer.getvalue()[:keep]


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        (
            "cut.png",
            _cut("PNG", 40),
            "cut.png starts as a PNG file but cannot be read: it is damaged or cut short (40 bytes)",
        ),
        (
            "cut.jpg",
            _cut("JPEG", 100),
            "cut.jpg starts as a JPEG file but cannot be read: it is damaged or cut short (100 bytes: ",
        ),
        (
            "cut.webp",
            _cut("WEBP", 24),
            f"cut.webp: the WebP file is cut short (24 of the {len(_cut('WEBP', 10**6)):,} bytes its header gives)",
        ),
        (
            "cut.tif",
            _cut("TIFF", 12),
            "cut.tif starts as a TIFF file but cannot be read: it is damaged or cut short (12 bytes",
        ),
        pytest.param(  # was "not an image srfeat can read (use PNG, JPEG, ...)": AVIF was left out of the signed
            "cut.avif",  # of how many bytes: test_web_damaged_uploads.py
            _cut("AVIF", 200) if features.check("avif") else b"",
            "cut.avif: the AVIF file is cut short (200 of the ",
            marks=pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF"),
            id="cut.avif",
        ),
    ],
)
def test_an_upload_cut_short_in_its_header_is_called_so(tiny_server: Server, name: str, data: bytes, said: str) -> None:
    """A PNG cut short within its header was refused as "not an image srfeat can read (use PNG, JPEG, ...)":
    the user was told to use the format the file was in, and not that it was incomplete."""
    refused = upload(tiny_server, "cut-short", name, data)
    assert refused.status == 422 and refused.error().startswith(said), refused.body
    assert refused.error().endswith("; upload the whole file"), refused.body
    not_an_image = upload(tiny_server, "cut-short", "notes.png", b"<html>not an image</html>")
    assert not_an_image.status == 415 and "is not an image srfeat can read" in not_an_image.error()


def test_a_lock_without_its_folder_is_removed_only_when_nobody_holds_it(tmp_path: Path) -> None:
    """A server claims a job's lock before it makes the folder, and lets it go after removing it: a lock
    alone is one about to get its folder (held: kept) or one left by a server killed between the two (removed)."""
    from srfeat.web.jobs import remove_stale_temporaries

    root = Path(tempfile.gettempdir())
    token = f"srfeat-serve-{_dead_process_id()}-{os.urandom(8).hex()}"
    held = f"{token}-held"
    ready = tmp_path / "ready"
    program = (
        "import time; from pathlib import Path; from srfeat.files import writing_temporary\n"
        f"with writing_temporary(Path({str(root / held)!r})):\n"
        f"    Path({str(ready)!r}).write_text('1'); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", program],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        _wait_for_file(ready)
        left = root / f".{token}.12345.tmp"  # its server killed: nobody holds it
        left.write_bytes(b"")
        remove_stale_temporaries()
        assert not left.exists()
        assert len(list(root.glob(f".{held}.*.tmp"))) == 1  # held by a live process: kept
    finally:
        holder.kill()
        holder.wait(timeout=30)
    remove_stale_temporaries()
    assert list(root.glob(f".{held}.*.tmp")) == []


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_a_server_on_every_address_prints_a_url_this_machine_opens(address: str) -> None:
    """`--host 0.0.0.0` printed http://0.0.0.0:PORT/ as the address to open (and `::` http://[::]:PORT/), which
    browsers on some systems cannot open: the page is shown at this machine's loopback address, and the
    warning says the server listens on all of this machine's addresses."""
    if not _can_listen_on(address):
        pytest.skip(f"this machine cannot listen on {address}")
    server = start_server("--host", address)
    try:
        loopback = "[::1]" if address == "::" else "127.0.0.1"
        assert server.url.startswith(f"http://{loopback}:"), server.url
        port = urllib.parse.urlsplit(server.url).port
        assert call(server, "GET", "/api/config").status == 200  # the URL shown is one that answers
    finally:
        stop_server(server)
    expected = f"listening on {address} (all of this machine's addresses; from another machine open "
    assert any(expected in line and f"ITS-ADDRESS:{port}/" in line for line in server.log), server.log
