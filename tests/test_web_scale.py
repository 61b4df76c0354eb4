"""`srfeat serve` past one page on this machine and one small image: many tabs of one browser, a page
opened at a network address, uploads held back by a full queue, and results too large to convert for
the browser's viewer.

Helpers and the browser come from test_web.py; this module starts its own servers.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from PIL import Image

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, FilePayload, Page, Request, Route, expect
from test_web import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    call,
    job_card,
    png_bytes,
    start_server,
    stop_server,
    wait_for_result,
)

from srfeat.web.jobs import JobQueue

MAX_QUEUED = 2
# How long a page may fall silent before its jobs are cancelled (srfeat serve passes no other).
PAGE_GRACE_SECONDS = inspect.signature(JobQueue).parameters["grace_seconds"].default
TABS = 9  # Chromium opens 6 connections per server (HTTP/1.1): one stream per tab left a 7th tab unloaded


# Each upload body the server reads, logged with its size: what the server was sent.
COUNT_UPLOADS = """
import logging
import srfeat.web.app as app
read = app.read_body
async def counted(request, name, *args):
    data = await read(request, name, *args)
    logging.getLogger("srfeat.web.app").info("received %s: %d bytes", name, len(data))
    return data
app.read_body = counted
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server("--max-queued", str(MAX_QUEUED), prelude=COUNT_UPLOADS)
    yield started
    stop_server(started)


def _file(name: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": "image/png", "buffer": data}


def _wait_for_log(server: Server, text: str) -> None:
    deadline = time.monotonic() + 120
    while text not in server.log_text():
        assert time.monotonic() < deadline, f"{text!r} not in the log: {server.log_text()[-2000:]}"
        time.sleep(0.2)


def _set_hidden(page: Page, hidden: bool) -> None:
    """What the browser does when the tab goes to the background (or comes back): headless pages are
    always visible, so `document.hidden` is set by hand and the event sent."""
    page.evaluate(
        "(hidden) => { Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });"
        " document.dispatchEvent(new Event('visibilitychange')); }",
        hidden,
    )


def test_many_tabs_of_one_browser_all_load_and_upscale(server: Server, browser: Browser) -> None:
    """Each tab held an event stream open: Chromium's 6 connections per server were taken by 6 tabs, the
    7th never loaded, and the others' uploads waited. A hidden tab, whose questions the browser slows to
    one a minute, keeps its images past the 10 s a silent page is given, and catches up when shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})  # one profile: one connection pool
    try:
        pages = []
        for _ in range(TABS):
            page = context.new_page()
            page.goto(server.url, timeout=60_000)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            pages.append(page)
        last, first, hidden = pages[-1], pages[0], pages[TABS // 2]
        last.set_input_files("#files", files=[_file("last.png", png_bytes(32))])
        expect(job_card(last, "last.png")).to_have_attribute("data-state", "done", timeout=120_000)
        last.wait_for_function("() => document.getElementById('after').naturalWidth === 128")  # the viewer shows it
        first.set_input_files("#files", files=[_file("first.png", png_bytes(16))])
        expect(job_card(first, "first.png")).to_have_attribute("data-state", "done", timeout=120_000)

        # A tab in the background: it says so, then its questions stop coming (the browser's throttling,
        # held here) for longer than a silent visible page is given, while its image is upscaled.
        hidden.set_input_files("#files", files=[_file("behind.png", png_bytes(256))])  # 16 tiles
        card = job_card(hidden, "behind.png")
        expect(card).to_have_attribute("data-state", "running", timeout=120_000)
        with hidden.expect_request(re.compile(r"/jobs\?.*hidden=1")):
            _set_hidden(hidden, True)
        held: list[Route] = []
        shown = False

        def throttle(route: Route) -> None:
            route.continue_() if shown else held.append(route)

        hidden.route(re.compile(r"/api/sessions/[0-9a-f]+/jobs\?"), throttle)
        silent_since = time.monotonic()
        while not held:
            hidden.wait_for_timeout(100)
        _wait_for_log(server, "behind.png -> behind_x4.png")
        hidden.wait_for_timeout(max(0.0, PAGE_GRACE_SECONDS + 2 - (time.monotonic() - silent_since)) * 1000)
        expect(card).to_have_attribute("data-state", "running")  # it heard nothing meanwhile
        shown = True
        _set_hidden(hidden, False)
        for route in held:
            route.continue_()
        expect(card).to_have_attribute("data-state", "done", timeout=10_000)
        assert "(behind.png) cancelled" not in server.log_text()
        expect(hidden.locator("#jobs li")).to_have_count(1)  # no card saying the server lost it
    finally:
        context.close()


def test_a_closing_tabs_last_question_does_not_take_its_goodbye_back(server: Server) -> None:
    """A tab that closes is hidden first, and asks once more as it goes (`hidden=1`): arriving after its
    goodbye, that question took the goodbye back, and its session lived on for the 3 minutes a hidden page
    is given (its running job with it). A reload's new page is what takes a goodbye back."""
    assert call(server, "GET", "/api/sessions/goodbye1/jobs?page=one").status == 200
    assert call(server, "POST", "/api/sessions/goodbye1/leave?page=one").status == 204
    assert call(server, "GET", "/api/sessions/goodbye1/jobs?page=one&hidden=1").status == 200
    _wait_for_log(server, "session goodbye1 ended: its page was closed")


def test_a_script_that_keeps_asking_without_a_page_keeps_its_session(server: Server) -> None:
    """The README's `curl .../api/sessions/S/jobs` names no page: such questions were taken for the goodbye
    of a page named '' (which no page had said), so they never kept the session open, and a script asking
    every second lost its jobs and results after the 10 s a silent page is given."""
    answer = call(server, "POST", "/api/jobs?session=script1&name=kept.png", png_bytes(16), X_SRFeat_Upload="1")
    assert answer.status == 201, answer.body
    asking_until = time.monotonic() + PAGE_GRACE_SECONDS + 4
    while time.monotonic() < asking_until:
        assert call(server, "GET", "/api/sessions/script1/jobs").status == 200
        time.sleep(1)
    jobs = json.loads(call(server, "GET", "/api/sessions/script1/jobs").body)["jobs"]
    assert [job["name"] for job in jobs] == ["kept.png"]
    assert "session script1 ended" not in server.log_text()


def test_room_for_an_upload_over_the_upload_limit_is_refused_as_too_large(server: Server) -> None:
    """`/room` answered 204 (room now) for an upload that the upload limit refuses (413) whatever the room."""
    answer = call(server, "GET", f"/api/sessions/room1/room?name=big.png&bytes={101 * 2**20}")
    assert answer.status == 413, answer.body
    assert "big.png is larger than this server's upload limit of 100 MB" in answer.error(), answer.body
    assert call(server, "GET", f"/api/sessions/room1/room?name=big.png&bytes={100 * 2**20}").status == 204


# Each job takes longer than a silent page is given (the upscale waits first).
SLOW_JOBS = f"""
import time
import srfeat.web.worker as worker
upscale = worker.upscale_read_image
def slow(*args, **kwargs):
    time.sleep({PAGE_GRACE_SECONDS + 4})
    return upscale(*args, **kwargs)
worker.upscale_read_image = slow
"""


def test_a_script_waiting_on_its_result_keeps_its_session() -> None:
    """The README's script asks for a job's result until it is no longer 409: those questions did not count
    as the session being asked for, so any job longer than 10 s was cancelled as its page closed, and the
    script got 404 'no such image'."""
    slow = start_server(prelude=SLOW_JOBS)
    try:
        answer = call(slow, "POST", "/api/jobs?session=waiting1&name=slow.png", png_bytes(16), X_SRFeat_Upload="1")
        assert answer.status == 201, answer.body
        result = wait_for_result(slow, "waiting1", json.loads(answer.body)["id"], "download=1")
        assert result.status == 200, result.body
        assert Image.open(io.BytesIO(result.body)).size == (64, 64)
        assert "session waiting1 ended" not in slow.log_text()
    finally:
        stop_server(slow)


def test_a_page_opened_at_a_network_address_uploads(browser: Browser) -> None:
    """A page of `--host 0.0.0.0` opened at the machine's network address is no secure context, and there
    a browser offers no crypto.randomUUID: every upload threw before it was sent, and nothing happened."""
    open_server = start_server("--host", "0.0.0.0")
    port = urllib.parse.urlsplit(open_server.url).port
    # This machine under a name that is not its own (loopback) one: the page is then what it is at a network address.
    other = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP srfeat.test 127.0.0.1"]
    )
    try:
        page = other.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://srfeat.test:{port}/")
        assert page.evaluate("window.isSecureContext") is False
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#files", files=[_file("far.png", png_bytes(16))])
        expect(job_card(page, "far.png")).to_have_attribute("data-state", "done", timeout=120_000)
        assert not errors
    finally:
        other.close()
        stop_server(open_server)


def test_an_upload_held_back_by_a_full_queue_is_sent_once(server: Server, browser: Browser) -> None:
    """Held back (the page's queue was full), an upload sent its whole file again every 2 s, each time to be
    refused, until there was room: now the page asks for room, and sends the file when there is."""
    page = browser.new_context().new_page()
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    held_file = png_bytes(16, padding=200_000)
    sent: list[str] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and "name=held.png" in request.url:
            sent.append(request.url)

    page.on("request", on_request)
    files = [_file("big.png", png_bytes(256))] + [_file(f"q{n}.png", png_bytes(16)) for n in range(MAX_QUEUED)]
    page.set_input_files("#files", files=[*files, _file("held.png", held_file)])
    expect(job_card(page, "held.png")).to_have_attribute("data-state", "held", timeout=120_000)
    expect(job_card(page, "held.png")).to_have_attribute("data-state", "done", timeout=120_000)
    assert len(sent) == 1, sent  # the page sent it once
    assert re.findall(r"received held\.png: (\d+) bytes", server.log_text()) == [str(len(held_file))]
    assert "upload refused: held.png" not in server.log_text()
    page.context.close()


# The free memory as the server sees it: room for a 48x48 upload's PNG copy, not for its 192x192 result's.
SMALL_MEMORY = """
import srfeat.web.views as views
views.host_available_memory = lambda: 400_000
"""


def test_a_result_too_large_to_convert_for_the_browser_is_named_not_built(browser: Browser) -> None:
    """A TIFF result was converted to PNG for the viewer whatever its size (a 16-megapixel upload's
    result is 256 megapixels, about 2 GB decoded): now the label says why it is not shown, and the
    download is the whole file."""
    small = start_server(prelude=SMALL_MEMORY)
    page = browser.new_context(accept_downloads=True).new_page()
    try:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png_bytes(48))).save(buffer, format="TIFF")
        page.goto(small.url)
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files(
            "#files", files=[{"name": "face.tif", "mimeType": "image/tiff", "buffer": buffer.getvalue()}]
        )
        expect(job_card(page, "face.tif")).to_have_attribute("data-state", "done", timeout=120_000)
        expect(page.locator("#after-label")).to_have_text(
            "srfeat default: not shown: the PNG copy of this 192x192 TIFF that the browser would show needs "
            "about 0.0 GB of memory and 0.0 GB is free; the download is the whole file",
            timeout=30_000,
        )
        page.wait_for_function("() => document.getElementById('before').naturalWidth === 48")  # the original fits
        with page.expect_download() as download:
            page.locator("#download").click()
        with Image.open(download.value.path()) as result:
            assert (result.format, result.size) == ("TIFF", (192, 192))
    finally:
        page.context.close()
        stop_server(small)
    assert "Traceback" not in small.log_text(), small.log_text()
