"""`srfeat serve` when things go wrong: stalled and vanishing clients, a server that stops or
restarts under an open page, a reload mid-job, many pages at once, a phone-sized screen.

Helpers and the browser come from test_web.py; this module starts its own servers.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from test_web import (
    Answer,
    Server,
    browser,  # noqa: F401  (the fixture)
    call,
    png_bytes,
    start_server,
    stop_server,
    upload,
    wait_for_state,
)

UPLOAD_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server("--upload-timeout", str(UPLOAD_TIMEOUT))
    yield started
    stop_server(started)


def _address(server: Server) -> tuple[str, int]:
    address = urllib.parse.urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    return address.hostname, address.port


def _begin_upload(server: Server, session: str, length: int, first_bytes: bytes) -> socket.socket:
    """A connection that sent an upload's headers and the start of its body, and then nothing."""
    host, port = _address(server)
    path = "/api/jobs?" + urllib.parse.urlencode({"session": session, "name": "stalled.png"})
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-SRFeat-Upload: 1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    connection = socket.create_connection((host, port), timeout=60)
    connection.sendall(head + first_bytes)
    return connection


def test_stalled_uploads_are_dropped_and_do_not_block_others(server: Server) -> None:
    from srfeat.web.app import MAX_UPLOADS_RECEIVING

    stalled = [_begin_upload(server, "stalled", 1000, b"\x89PNG") for _ in range(MAX_UPLOADS_RECEIVING)]
    try:
        started = time.monotonic()
        answer = upload(server, "stalled", "quick.png", png_bytes(8))  # waits for a free slot
        assert answer.status == 201, answer.body
        assert time.monotonic() - started < 30  # before the fix it waited as long as the stalled ones stayed
        reply = stalled[0].recv(4096).decode()
        assert reply.startswith("HTTP/1.1 408"), reply
        assert "stalled.png stopped arriving: nothing came for 2 s (this server's --upload-timeout)" in reply
    finally:
        for connection in stalled:
            connection.close()
        call(server, "POST", "/api/sessions/stalled/close")


def test_a_client_that_leaves_mid_upload_costs_one_log_line(server: Server) -> None:
    before = len(server.log)
    connection = _begin_upload(server, "gone", 100_000, b"\x89PNG" + bytes(1000))
    connection.close()
    deadline = time.monotonic() + 10
    while "went away" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    written = "\n".join(server.log[before:])
    assert "upload of stalled.png ended: the client went away before sending all of it" in written, written
    assert "Traceback" not in written and "Exception in ASGI application" not in written, written


def _stream(server: Server, session: str) -> http.client.HTTPResponse:
    """The session's event stream, open (the session lives while it is)."""
    return urllib.request.urlopen(f"{server.url}api/sessions/{session}/events", timeout=60)


def test_pages_take_turns_in_the_queue(server: Server) -> None:
    streams = [_stream(server, session) for session in ("many", "one")]
    try:
        big = json.loads(upload(server, "many", "big.png", png_bytes(256)).body)  # 16 tiles: the worker is busy
        wait_for_state(streams[0], big["id"], "running")
        many = [json.loads(upload(server, "many", f"m{n}.png", png_bytes(16)).body) for n in range(3)]
        assert [job["ahead"] for job in many] == [1, 2, 3]
        # One image of another page: next after the running one, not behind the first page's three.
        one = json.loads(upload(server, "one", "o.png", png_bytes(16)).body)
        assert one["ahead"] == 1, one
        places = {job["name"]: job["ahead"] for job in _latest_jobs(streams[0])}
        assert places == {"big.png": None, "m0.png": 2, "m1.png": 3, "m2.png": 4}, places
        assert call(server, "POST", f"/api/jobs/{big['id']}/remove?session=many").status == 204
        wait_for_state(streams[1], one["id"], "done")
        assert all(job["state"] == "queued" for job in _latest_jobs(streams[0]) if job["name"] != "m0.png")
    finally:
        for stream in streams:
            stream.close()
        for session in ("many", "one"):
            call(server, "POST", f"/api/sessions/{session}/close")


def _latest_jobs(events: http.client.HTTPResponse) -> list[dict[str, Any]]:
    """The jobs of the next update on a session's event stream (the stream repeats when anything changes)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = events.readline().decode()
        if line.startswith("data: "):
            return json.loads(line[len("data: ") :])["jobs"]
    pytest.fail("no update on the event stream within 30 s")


def test_the_zip_is_streamed_and_each_view_is_built_once(server: Server) -> None:
    session = "zipped"
    stream = _stream(server, session)
    try:
        jobs = [json.loads(upload(server, session, "same.png", png_bytes(16)).body) for _ in range(2)]
        _wait_until(stream, lambda described: all(job["state"] == "done" for job in described) and len(described) == 2)
        # The zip comes in pieces (no Content-Length: it is not built whole first), and is whole.
        answer = call(server, "GET", f"/api/sessions/{session}/results.zip")
        assert answer.status == 200 and answer.headers.get("transfer-encoding") == "chunked", answer.headers
        assert "content-length" not in answer.headers
        with zipfile.ZipFile(io.BytesIO(answer.body)) as archive:
            assert archive.testzip() is None and archive.namelist() == ["same_x4.png", "same_x4_2.png"]
            result = call(server, "GET", f"/api/jobs/{jobs[0]['id']}/result?session={session}&download=1")
            assert archive.read("same_x4.png") == result.body
        # Three pages (or a page and its reload) asking for the same view at once: it is built once.
        answers: list[Answer] = []
        path = f"/api/jobs/{jobs[0]['id']}/bicubic?session={session}"
        askers = [threading.Thread(target=lambda: answers.append(call(server, "GET", path))) for _ in range(3)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(60)
        assert [answer.status for answer in answers] == [200, 200, 200]
        assert len({answer.body for answer in answers}) == 1
        assert (
            len(re.findall(rf"job {re.escape(jobs[0]['id'])} \(same\.png\): bicubic view built", server.log_text()))
            == 1
        )
    finally:
        stream.close()
        call(server, "POST", f"/api/sessions/{session}/close")


def _wait_until(events: http.client.HTTPResponse, done: Callable[[list[dict[str, Any]]], bool]) -> None:
    """Read a session's event stream until its jobs satisfy `done`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if done(_latest_jobs(events)):
            return
    pytest.fail("the session's jobs did not get there within 120 s")
