"""`srfeat serve`: the web app as a user meets it, in headless Chromium, against a real server.

The server runs as `python -m srfeat.cli serve --no-browser` (a subprocess, as a user starts
it); the page is driven through Playwright with the system's Chromium (Debian's `chromium`
package; `.ci/run` installs it). Downloads are compared byte for byte with `srfeat upscale`.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import with_hangup
from PIL import Image, ImageCms, features

from srfeat.cli import main
from srfeat.data.io import read_raw_image, write_image
from srfeat.inference import Upscaler
from srfeat.inference.image_files import upscale_file

samples = pytest.importorskip("skimage.data")
pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright  # noqa: E402

from scripts.web_screenshot import CHROMIUM_ARGS  # noqa: E402 - the README screenshot's switches, one list for both
from srfeat.web.hosts import (  # noqa: E402 - needs the web extra, checked above
    HostHeaderError,
    LoopbackHostCheck,
    is_loopback_host,
    parse_host_header,
)
from srfeat.web.job import ModelChoice  # noqa: E402
from srfeat.web.jobs import JobQueue, QueueFullError, safe_file_name  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TILE = 64  # small tiles, so a 256x256 upload has 16 and shows progress
UPLOAD_LIMIT_MB = 1
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log: list[str]

    def log_text(self) -> str:
        return "\n".join(self.log)


def _environment() -> dict[str, str]:
    # The server computes on as many threads as this process, whose `cli_upscale` its downloads are compared
    # with byte for byte: float32 convolutions on another thread count may round a grey level apart (pytest-xdist
    # workers run on fewer threads than a server would start with).
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _dead_process_id() -> int:
    probe = subprocess.Popen([sys.executable, "-c", ""])
    probe.wait()
    return probe.pid


def start_server(*options: str, prelude: str = "", hangup_ignored: bool = False) -> Server:
    """`srfeat serve --no-browser` with small tiles and `options`, once it listens; `prelude` is
    Python run in the server's process first (to slow a part down); `hangup_ignored`: as under `nohup`."""
    program = ["-m", "srfeat.cli"] if not prelude else ["-c", f"{prelude}\nfrom srfeat.cli import main\nmain()"]
    command = [sys.executable, *program, "serve", "--no-browser", "--device", "cpu", "--tile", str(TILE)]
    process = subprocess.Popen(
        with_hangup([*command, *options], hangup_ignored),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
        cwd=ROOT,
    )
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(line.rstrip() for line in stderr), daemon=True)
    reader.start()
    first = stdout.readline()  # the URL line; blocks until the server listens (or exits)
    match = re.search(r"http://[\w.\[\]:]+/", first)
    if match is None:
        process.kill()
        process.wait()
        reader.join(5)
        pytest.fail(f"srfeat serve printed no URL: {first!r}; stderr: {log}")
    return Server(match.group(0), process, log)


def stop_server(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # What a server killed mid-job leaves behind; the next one removes it when it starts.
    stale = Path(tempfile.gettempdir()) / f"srfeat-serve-{_dead_process_id()}-left"
    stale.mkdir(exist_ok=True)
    (stale / "photo.png").write_bytes(b"partial")
    started = start_server("--max-upload-mb", str(UPLOAD_LIMIT_MB))
    assert not stale.exists()
    yield started
    stop_server(started)


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """Headless Chromium (named apart from its fixture name, so that other modules can import it)."""
    if not Path(CHROMIUM).exists():
        message = "Chromium not found: apt-get install -y chromium"
        if os.environ.get("SRFEAT_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    page: Page
    requests: list[str]
    console_errors: list[str]


def intercept_choosers(page: Page) -> None:
    """Keeps file-chooser interception on for the page's life. Playwright turns it on when a page gets its first
    "filechooser" listener and off when it loses its last, without waiting for the browser to confirm either (seen
    with 1.65): a chooser opened moments after `expect_file_chooser` starts may open unseen (1 run in 5)."""
    page.on("filechooser", lambda _chooser: None)


def open_tab(browser: Browser, server: Server) -> Tab:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 720})
    page = context.new_page()
    intercept_choosers(page)
    tab = Tab(page, [], [])
    page.on("request", lambda request: tab.requests.append(request.url))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.console_errors.append(message.text)

    page.on("console", on_console)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    return tab


def save_crop(path: Path, top: int, left: int, size: int) -> Path:
    Image.fromarray(samples.astronaut()[top : top + size, left : left + size]).save(path)
    return path


def cli_upscale(source: Path, out: Path, *options: str) -> bytes:
    """What `srfeat upscale` writes for `source` (run in this process: the same code, no second start-up)."""
    assert main(["upscale", str(source), "-o", str(out), "--device", "cpu", "--tile", str(TILE), *options]) == 0
    return (out / source.name).read_bytes()


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48x48 crop of `astronaut` (small: the full-size network runs on it in about a second)."""
    return save_crop(tmp_path_factory.mktemp("face") / "face.png", 100, 180, 48)


@pytest.fixture(scope="module")
def face_by_cli(face: Path) -> bytes:
    """`srfeat upscale face.png`, the reference for what the page downloads."""
    return cli_upscale(face, face.parent / "cli")


def job_card(page: Page, name: str) -> Locator:
    return page.locator("#jobs li", has=page.locator(".name", has_text=name))


def test_upload_compare_and_download_equal_the_cli(
    server: Server, browser: Browser, face: Path, face_by_cli: bytes
) -> None:
    photo = face
    tab = open_tab(browser, server)
    page = tab.page
    page.set_input_files("#files", str(photo))
    card = job_card(page, "face.png")
    expect(card).to_have_attribute("data-state", "done", timeout=120_000)
    expect(card.locator(".status")).to_contain_text("192\u00d7192")
    page.wait_for_function("() => document.getElementById('after').naturalWidth === 192")
    page.wait_for_function(
        "() => document.getElementById('before').naturalWidth === 48"
    )  # the original, enlarged by CSS

    # The split: drag its grip to a quarter of the frame; the result is clipped there.
    frame = page.locator("#frame").bounding_box()
    grip = page.locator("#split .grip").bounding_box()
    assert frame is not None and grip is not None
    assert page.get_attribute("#split", "aria-valuenow") == "50"
    clip_before = page.eval_on_selector("#after", "element => element.style.clipPath")
    page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.25, grip["y"] + grip["height"] / 2, steps=5)
    page.mouse.up()
    assert page.get_attribute("#split", "aria-valuenow") == "25"
    assert page.eval_on_selector("#after", "element => element.style.clipPath") != clip_before

    # Pan (drag the picture) and zoom (the wheel).
    transform = page.eval_on_selector("#stage", "element => element.style.transform")
    page.mouse.move(frame["x"] + frame["width"] * 0.7, frame["y"] + frame["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.6, frame["y"] + frame["height"] * 0.4, steps=4)
    page.mouse.up()
    panned = page.eval_on_selector("#stage", "element => element.style.transform")
    assert panned != transform and page.get_attribute("#split", "aria-valuenow") == "25"
    zoom = page.locator("#zoom-level").inner_text()
    page.mouse.wheel(0, -300)
    expect(page.locator("#zoom-level")).not_to_have_text(zoom)

    # 100% and the bicubic original.
    page.click("#actual")
    expect(page.locator("#zoom-level")).to_have_text("100%")
    page.check("input[name='resample'][value='bicubic']")
    page.wait_for_function(
        "() => document.getElementById('before').src.includes('/bicubic') && "
        "document.getElementById('before').naturalWidth === 192"
    )
    expect(page.locator("#before-label")).to_have_text("original, bicubic \u00d74")

    # Downloads: the result alone and all results as a zip; both are what the CLI writes.
    expected = face_by_cli
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "face_x4.png"
    assert Path(download.value.path()).read_bytes() == expected
    with page.expect_download() as download:
        page.click("#download-all")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.namelist() == ["face_x4.png"]
        assert archive.read("face_x4.png") == expected

    # Everything the page loaded came from the server itself, and the page raised no error.
    assert tab.requests and all(url.startswith(server.url) for url in tab.requests), tab.requests
    assert tab.console_errors == []
    page.context.close()


def test_a_strength_between_default_and_gan_and_again_with_another(
    server: Server, browser: Browser, tmp_path: Path, face: Path, face_by_cli: bytes
) -> None:
    photo = tmp_path / "eye.png"
    shutil.copy(face, photo)
    page = open_tab(browser, server).page
    page.check("input[name='model'][value='strength']")
    page.fill("#strength", "0.3")
    expect(page.locator("#strength-value")).to_have_text("0.30")
    page.set_input_files("#files", str(photo))
    first = page.locator("#jobs li", has_text="strength 0.30")
    expect(first).to_have_attribute("data-state", "done", timeout=120_000)
    with page.expect_download() as download:
        first.locator("a.download").click()
    assert download.value.suggested_filename == "eye_x4_s0.30.png"
    blended = Path(download.value.path()).read_bytes()
    # The reference: the same file function with the Python API's blend (srfeat upscale's path).
    reference = Upscaler("default", strength=0.3, device="cpu", tile=TILE)
    upscale_file(reference, photo, tmp_path / "reference.png")
    assert blended == (tmp_path / "reference.png").read_bytes()

    # The same upload again with gan: a second result beside the first, what the CLI gives for gan.
    page.check("input[name='model'][value='gan']")
    first.get_by_role("button", name="Again with the chosen detail").click()
    second = page.locator("#jobs li", has_text="eye.png \u00b7 gan")
    expect(second).to_have_attribute("data-state", "done", timeout=120_000)
    with page.expect_download() as download:
        second.locator("a.download").click()
    sharp = Path(download.value.path()).read_bytes()
    assert sharp == cli_upscale(photo, tmp_path / "cli", "--model", "gan")
    soft = face_by_cli
    assert len({soft, blended, sharp}) == 3
    # Between the two, pixel by pixel on the whole (network interpolation is not a pixel blend).
    arrays = [np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) for data in (soft, blended, sharp)]
    assert np.abs(arrays[1] - arrays[0]).mean() < np.abs(arrays[2] - arrays[0]).mean()
    page.context.close()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds almost no data (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def test_a_view_the_server_cannot_build_says_why_on_its_label(server: Server, browser: Browser, face: Path) -> None:
    """The server answers 507 with a reason when the free memory cannot hold the bicubic view; the page
    showed a broken-image icon and no word. (The answer is the server's own, replayed by the browser.)"""
    reason = "the bicubic comparison of a 192x192 result needs about 9.9 GB of memory and 1.0 GB is free"
    tab = open_tab(browser, server)
    page = tab.page
    page.route("**/bicubic?*", lambda route: route.fulfill(status=507, json={"error": reason}))
    page.set_input_files("#files", str(face))
    expect(job_card(page, "face.png")).to_have_attribute("data-state", "done", timeout=120_000)
    page.check("input[name='resample'][value='bicubic']")
    expect(page.locator("#before-label")).to_have_text(f"original, bicubic \u00d74: not shown: {reason}")
    expect(page.locator("#announce")).to_contain_text("not shown")
    # The label's end was under the other label; the broken picture's alt text was drawn, zoomed, across the frame.
    before, after = page.locator("#before-label").bounding_box(), page.locator("#after-label").bounding_box()
    assert before is not None and after is not None and before["x"] + before["width"] < after["x"], (before, after)
    expect(page.locator("#before")).to_be_hidden()
    page.check("input[name='resample'][value='nearest']")  # another view: the label is its own again
    expect(page.locator("#before-label")).to_have_text("original, nearest \u00d74")
    expect(page.locator("#before")).to_be_visible()
    tab.page.context.close()


def test_bad_uploads_show_their_error_in_the_page(server: Server, browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "huge.png").write_bytes(_png_header_only(5000, 4000))  # 20 MP: over the server's 16 MP limit
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # 900 MP: over Pillow's own limit
    whole = save_crop(tmp_path / "whole.png", 0, 0, 40).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # a header, then the data stops
    (tmp_path / "large.png").write_bytes(whole + bytes(UPLOAD_LIMIT_MB * 2**20))  # over the upload limit
    Image.open(tmp_path / "whole.png").save(tmp_path / "netpbm.ppm")  # an image, but not a format the server takes
    tab = open_tab(browser, server)
    page = tab.page
    # notes.txt is dropped on the page, as from a file manager; the others are picked.
    page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["not an image"], "notes.txt", { type: "text/plain" }));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
        }"""
    )
    job_card(page, "notes.txt").wait_for()
    names = ("huge.png", "bomb.png", "cut.png", "large.png", "netpbm.ppm")
    page.set_input_files("#files", [str(tmp_path / name) for name in names])
    expected = {
        "notes.txt": ("refused", "notes.txt is not an image srfeat can read"),
        "large.png": ("refused", "larger than this server's upload limit of 1 MB"),
        "netpbm.ppm": ("refused", "netpbm.ppm is not an image srfeat can read (use PNG, JPEG, WebP, TIFF or BMP)"),
        "huge.png": ("refused", "over this server's limit of 16 megapixels"),
        "bomb.png": ("refused", "a file made to take all memory"),
        "cut.png": ("failed", "cannot read image cut.png"),
    }
    for name, (state, message) in expected.items():
        card = job_card(page, name)
        expect(card).to_have_attribute("data-state", state, timeout=60_000)
        expect(card.locator(".status[role='alert']")).to_contain_text(message)
    assert "srfeat-serve-" not in page.locator("#jobs").inner_text()  # no temporary path in a message
    page.context.close()
    # The page checks the size before sending; the server checks it again, for any client. Only
    # the headers are sent: the server answers 413 at once, and a client still writing the body
    # when the connection closes would see a broken pipe instead of the answer.
    host, port = server.url.split("//", 1)[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/api/jobs?session=api&name=large.png")
    connection.putheader("X-SRFeat-Upload", "1")
    connection.putheader("Content-Length", str((tmp_path / "large.png").stat().st_size))
    connection.endheaders()
    refused = connection.getresponse()
    assert refused.status == 413
    assert "upload limit of 1 MB" in json.loads(refused.read())["error"]
    connection.close()


def test_uploads_queue_and_a_closed_tab_cancels_its_jobs(server: Server, browser: Browser, tmp_path: Path) -> None:
    big = save_crop(tmp_path / "big.png", 0, 100, 256)  # 16 tiles of 64: several seconds on a CPU
    small = save_crop(tmp_path / "small.png", 100, 180, 32)
    first = open_tab(browser, server).page
    first.set_input_files("#files", [str(big), str(small)])
    running = job_card(first, "big.png")
    expect(running.locator(".status")).to_contain_text(re.compile(r"tile \d+ of 16"), timeout=60_000)
    expect(running.locator(".status")).to_contain_text(re.compile(r"about .* left"), timeout=120_000)
    queued = job_card(first, "small.png")
    expect(queued).to_have_attribute("data-state", "queued")
    expect(queued.locator(".status")).to_contain_text("place 2 in line (1 ahead)")

    second = open_tab(browser, server).page
    gone = shutil.copy(small, tmp_path / "gone.png")
    second.set_input_files("#files", [str(small), str(gone)])
    # Pages take turns: the second page's first image goes before the first page's second one.
    waiting = job_card(second, "small.png")
    expect(waiting.locator(".status")).to_contain_text("place 2 in line (1 ahead)")
    expect(queued.locator(".status")).to_contain_text("place 3 in line (2 ahead)")
    expect(job_card(second, "gone.png").locator(".status")).to_contain_text("place 4 in line (3 ahead)")
    job_card(second, "gone.png").get_by_role("button", name="cancel").click()  # its x: taken off the queue
    expect(job_card(second, "gone.png")).to_have_count(0)
    first.context.close()  # the first tab goes away: its running job stops, its queued one is dropped
    expect(waiting).to_have_attribute("data-state", "done", timeout=120_000)
    deadline = time.monotonic() + 10
    while "big.png) cancelled" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = server.log_text()
    assert re.search(r"\(big\.png\) cancelled: its page was closed", log), log
    assert "big.png -> " not in log  # it never finished
    assert len(re.findall(r"small\.png -> small_x4\.png", log)) == 1  # only the second tab's
    assert "(gone.png) cancelled before it started: removed from its page" in log and "gone.png -> " not in log
    second.context.close()


def _post(url: str, data: bytes) -> dict[str, object]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"X-SRFeat-Upload": "1"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_mode_bit_depth_alpha_and_icc_are_kept_as_the_cli_keeps_them(server: Server, tmp_path: Path) -> None:
    # 16-bit RGBA with an ICC profile, through the same endpoints the page uses.
    rgb = samples.astronaut()[200:232, 200:232].astype(np.uint16) * 257
    alpha = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))[..., None]
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "deep.png"
    write_image(source, np.concatenate([rgb, alpha], axis=2), icc_profile=icc)
    session = "apitest"
    events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events")  # keeps the session open
    try:
        job = _post(f"{server.url}api/jobs?session={session}&name=deep.png&model=gan", source.read_bytes())
        url = f"{server.url}api/jobs/{job['id']}/result?session={session}&download=1"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url) as response:
                    downloaded = response.read()
                break
            except urllib.error.HTTPError as error:
                assert error.code == 409 and time.monotonic() < deadline  # no result yet
                time.sleep(0.3)
        # What the viewer shows beside it: the original, and the original enlarged by bicubic to the result's size.
        views = {}
        for kind in ("original", "bicubic"):
            with urllib.request.urlopen(f"{server.url}api/jobs/{job['id']}/{kind}?session={session}") as response:
                views[kind] = Image.open(io.BytesIO(response.read()))
    finally:
        events.close()
    assert views["original"].size == (32, 32) and views["bicubic"].size == (128, 128)
    assert downloaded == cli_upscale(source, tmp_path / "cli", "--model", "gan")
    (tmp_path / "web.png").write_bytes(downloaded)
    raw = read_raw_image(tmp_path / "web.png")
    assert raw.array.dtype == np.uint16 and raw.array.shape == (128, 128, 4) and raw.icc_profile == icc
    assert Image.open(io.BytesIO(downloaded)).format == "PNG"


def test_an_oversized_icc_profile_is_dropped_and_the_upload_still_upscaled(server: Server) -> None:
    """PIL refuses a PNG whose profile inflates past 1 MB: the upload was refused (415) as not an image."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() + bytes(1_100_000)
    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()[:8, :8]).save(buffer, format="PNG", icc_profile=profile)
    session = "bigicc"
    events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events")  # keeps the session open
    try:
        answer = upload(server, session, "bigicc.png", buffer.getvalue())
        assert answer.status == 201, answer.body
        job_id = json.loads(answer.body)["id"]
        result = wait_for_result(server, session, job_id)
        assert result.status == 200 and Image.open(io.BytesIO(result.body)).size == (32, 32)
        assert "icc_profile" not in Image.open(io.BytesIO(result.body)).info
        for kind in ("original", "bicubic"):
            assert call(server, "GET", f"/api/jobs/{job_id}/{kind}?session={session}").status == 200, kind
    finally:
        events.close()
    assert "bigicc.png: its ICC profile is 1,1" in server.log_text()


def test_serve_listens_on_loopback_only_by_default_and_warns_for_another_host(server: Server, tmp_path: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    with urllib.request.urlopen(server.url) as response:
        assert "srfeat" in response.read().decode()
    # Bound to 127.0.0.1 itself, not to every address: another address of this machine is refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    # A page elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
    request = urllib.request.Request(server.url, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 400

    # --host 0.0.0.0 --port P, and without --no-browser: the browser ($BROWSER here) is given the URL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    opened_file = tmp_path / "opened.txt"
    browser_command = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\" {opened_file} %s"
    command = [sys.executable, "-m", "srfeat.cli", "serve", "--device", "cpu", "--host", "0.0.0.0"]
    opened = subprocess.Popen(
        [*command, "--port", str(free_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_environment(), "BROWSER": browser_command},
        cwd=ROOT,
    )
    assert opened.stdout is not None
    url = opened.stdout.readline()
    deadline = time.monotonic() + 30
    while not opened_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    opened.terminate()
    _, stderr = opened.communicate(timeout=30)
    # 0.0.0.0 is every address of this machine, no address to open: the page on this machine is 127.0.0.1's
    assert url.strip() == f"srfeat serve: http://127.0.0.1:{free_port}/"
    assert opened_file.read_text() == f"http://127.0.0.1:{free_port}/"
    assert "listening on 0.0.0.0 (all of this machine's addresses; from another machine open " in stderr
    assert "anyone who can reach this machine" in stderr and "there is no login" in stderr

    bad = subprocess.run(
        [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser", "--port", "70000"],
        check=False,
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "--port must be" in bad.stderr


def test_no_files_are_left_behind(server: Server) -> None:
    # Runs after the jobs above: each job's temporary folder is gone once it ends.
    assert list(Path(tempfile.gettempdir()).glob(f"srfeat-serve-{server.process.pid}-*")) == []


@pytest.mark.parametrize(
    ("uploaded", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\photos\\cat.JPG", "cat.JPG"),
        ("..", "image"),
        (".hidden.png", "hidden.png"),
        ("a<b>|c?.png", "a_b__c_.png"),
        ("out", "out"),
        ("a" * 5000 + ".png", "a" * 100 + ".png"),
        ("写真" * 45 + ".png", "写真" * 25 + ".png"),  # 150 bytes of UTF-8, not 100 characters (300 bytes)
        ("写" + "真" * 60 + ".tiff", "写" + "真" * 49 + ".tiff"),  # cut between characters, never inside one
        ("x.ééééééééééé", "x.éééééééé"),  # a suffix of at most 16 bytes
    ],
)
def test_upload_names_cannot_leave_the_temporary_folder(uploaded: str, kept: str) -> None:
    assert safe_file_name(uploaded) == kept
    assert len(kept.encode()) <= 167  # with `_x4_s0.50` and a 5-byte extension: far below 255


def test_without_the_web_extra_help_works_and_serve_says_what_to_install() -> None:
    # None in sys.modules makes `import starlette` fail, as it does where the extra is not installed.
    hide = "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; from srfeat.cli import main; "
    help_run = subprocess.run(
        [sys.executable, "-c", hide + "main(['--help'])"],
        check=False,
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,
    )
    assert help_run.returncode == 0 and "serve" in help_run.stdout
    serve_run = subprocess.run(
        [sys.executable, "-c", hide + "sys.exit(main(['serve', '--no-browser']))"],
        check=False,
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=ROOT,
    )
    assert serve_run.returncode == 1
    assert serve_run.stderr.strip().count("\n") == 0 and 'pip install -e ".[web]"' in serve_run.stderr


@pytest.mark.parametrize("taken", ["a port in use", "a host that does not resolve"])
def test_without_the_web_extra_serve_names_it_before_taking_the_port(taken: str) -> None:
    """The port was taken first: a port in use (or a bad --host) was the first error, and only once
    that was fixed did the user learn that the web extra was missing."""
    hide = "import sys; sys.modules.update(dict.fromkeys(['starlette', 'uvicorn', 'anyio'])); "
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        where = ["--port", str(held.getsockname()[1])] if taken == "a port in use" else ["--host", "no-such.invalid"]
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                hide + f"from srfeat.cli import main; sys.exit(main(['serve', '--no-browser', *{where!r}]))",
            ],
            check=False,
            capture_output=True,
            text=True,
            env=_environment(),
            cwd=ROOT,
            timeout=60,
        )
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(
        "ERROR: srfeat serve needs the web extra (uvicorn, starlette and anyio are missing)"
    )
    assert 'pip install -e ".[web]" in srfeat\'s folder' in result.stderr, result.stderr


# ---- hostile and careless input to the API (the page's calls, and any other client's) ------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        return str(json.loads(self.body)["error"])


def call(server: Server, method: str, path: str, body: bytes | None = None, **headers: str) -> Answer:
    """One request with http.client (Host: header as given, else the server's own address)."""
    address = urllib.parse.urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={key.replace("_", "-"): v for key, v in headers.items()})
        response = connection.getresponse()
        return Answer(response.status, {key.lower(): value for key, value in response.getheaders()}, response.read())
    finally:
        connection.close()


def upload(server: Server, session: str, name: str, data: bytes, *query: str, **headers: str) -> Answer:
    path = "/api/jobs?" + urllib.parse.urlencode({"session": session, "name": name}) + "".join(f"&{q}" for q in query)
    return call(server, "POST", path, data, X_SRFeat_Upload="1", **headers)


def wait_for_result(server: Server, session: str, job_id: str, *query: str) -> Answer:
    """GET the job's result until it is no longer 409 (no result yet)."""
    deadline = time.monotonic() + 120
    while True:
        answer = call(server, "GET", f"/api/jobs/{job_id}/result?session={session}" + "".join(f"&{q}" for q in query))
        if answer.status != 409:
            return answer
        assert time.monotonic() < deadline, answer.body
        time.sleep(0.2)


def wait_for_state(events: http.client.HTTPResponse, job_id: str, state: str) -> None:
    """Read a session's event stream until it shows the job in `state`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = events.readline().decode()
        if line.startswith("data: "):
            jobs = {job["id"]: job["state"] for job in json.loads(line[len("data: ") :])["jobs"]}
            if jobs.get(job_id) == state:
                return
    pytest.fail(f"job {job_id} was not {state} within 120 s")


def png_bytes(size: int, padding: int = 0) -> bytes:
    """A size x size crop of `astronaut` as PNG, with a private chunk of `padding` bytes (a large file, few pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()[100 : 100 + size, 180 : 180 + size]).save(buffer, format="PNG")
    data = buffer.getvalue()
    if padding:
        data = data[:-12] + _png_chunk(b"prVt", bytes(padding)) + data[-12:]  # before IEND
    return data


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("localhost:8000", ("localhost", 8000)),
        ("LocalHost", ("localhost", None)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", None)),
        ("[0:0:0:0:0:0:0:1]:80", ("0:0:0:0:0:0:0:1", 80)),
        ("attacker.example:8000", ("attacker.example", 8000)),
    ],
)
def test_host_headers_parse_with_ipv6_in_brackets(header: str, parsed: tuple[str, int | None]) -> None:
    assert parse_host_header(header) == parsed


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("::1:8000", "not a host name"),
        ("[::1", "without closing it"),
        ("[::1]8000", "after the IPv6 address"),
        ("[attacker.example]:80", "not an IPv6 address"),
        ("localhost:", "no port number"),
        ("localhost:70000", "no port number"),
        ("localhost:80x", "no port number"),
        ("", "not a host name"),
        ("local host", "not a host name"),
    ],
)
def test_bad_host_headers_are_named(header: str, reason: str) -> None:
    with pytest.raises(HostHeaderError, match=reason):
        parse_host_header(header)


def test_only_loopback_hosts_localhost_and_the_given_name_pass_the_host_check() -> None:
    check = LoopbackHostCheck(app=None, names=["MyMachine"])  # pyright: ignore[reportArgumentType]  # refusal() needs no app
    served_hosts = ("127.0.0.1:1", "127.0.0.2", "[::1]:80", "localhost:8000", "mymachine:8000", "[::ffff:7f00:1]:80")
    for served in served_hosts:
        assert check.refusal([served]) is None, served
    refused_hosts = (
        "attacker.example:8000",
        "0.0.0.0",
        "[::]:80",
        "localhost.attacker.example",
        "10.0.0.1",
        "[::ffff:a00:1]",
    )
    for refused in refused_hosts:
        reason = check.refusal([refused])
        assert reason is not None and "DNS rebinding" in reason and "\n" not in reason, refused
    assert "exactly one Host header" in str(check.refusal([])) + str(check.refusal(["localhost", "localhost"]))
    assert is_loopback_host("::1") and is_loopback_host("127.255.0.1") and not is_loopback_host("::")


def _can_listen_on(address: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("address", ["::1", "127.0.0.2"])
def test_a_server_on_another_loopback_address_refuses_requests_naming_another_host(address: str) -> None:
    if not _can_listen_on(address):
        pytest.skip(f"this machine cannot listen on the loopback address {address}")
    server = start_server("--host", address)
    try:
        assert server.url.startswith(f"http://{'[::1]' if address == '::1' else address}:")
        port = urllib.parse.urlsplit(server.url).port
        assert call(server, "GET", "/api/config").status == 200  # Host: the address and port, as a browser sends it
        assert call(server, "GET", "/api/config", Host=f"localhost:{port}").status == 200
        # DNS rebinding: a page whose name now resolves here is same-origin, and adds the upload header itself.
        for method, path, body in [("GET", "/api/config", None), ("POST", "/api/jobs?session=z&name=a.png", b"x")]:
            refused = call(server, method, path, body, Host=f"attacker.example:{port}", X_SRFeat_Upload="1")
            assert refused.status == 400, refused.body
            assert "not to 'attacker.example'" in refused.error() and "DNS rebinding" in refused.error()
        assert call(server, "GET", "/", Host="[::1").status == 400
    finally:
        stop_server(server)
    assert "anyone who can reach this machine" not in server.log_text()  # loopback: no warning


def test_without_a_display_no_text_browser_takes_over_the_terminal(tmp_path: Path) -> None:
    """Over SSH (no display), Python's webbrowser ran a text browser (www-browser: lynx, w3m) in the server's
    terminal, in front of its log, until it was quit; the page needs JavaScript anyway."""
    opened = tmp_path / "opened"
    fake = tmp_path / "bin" / "www-browser"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {opened}\n')
    fake.chmod(0o755)
    env = {key: value for key, value in _environment().items() if key not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}
    env.update(TERM="xterm", PATH=f"{fake.parent}{os.pathsep}{env.get('PATH', '')}")
    command = [sys.executable, "-m", "srfeat.cli", "serve", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("srfeat serve: http://127.0.0.1:")
        time.sleep(2)  # the browser is opened 0.5 s after the URL is printed
        assert not opened.exists(), opened.read_text()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "no display to open a browser on: open http://127.0.0.1:" in stderr, stderr


def test_bad_serve_options_are_one_line_errors_before_anything_loads() -> None:
    cases = {
        ("--max-upload-mb", "1e308"): "--max-upload-mb must be a number from 0.001 to 1e+06, got 1e+308",
        ("--max-megapixels", "1e308"): "--max-megapixels must be a number from 1e-06 to 10000",
        ("--max-megapixels", "1e-7"): "--max-megapixels must be a number from 1e-06",
        ("--max-held-mb", "inf"): "--max-held-mb must be a number",
        ("--max-held-mb", "50", "--max-upload-mb", "100"): "--max-held-mb (50) is below --max-upload-mb (100)",
        ("--max-queued", "0"): "--max-queued must be a number from 1 to 100000, got 0",
        ("--half",): "--half (fp16) needs a GPU; on the CPU leave it out (fp32) or use --bf16",
        ("--host", "garbage..host"): "cannot listen on host 'garbage..host': not a valid host name",
        ("--host", "a" * 70): "each part between dots needs 1 to 63 characters",
        # An address of another machine (TEST-NET-1): the advice was to choose another --port.
        ("--host", "192.0.2.1"): "192.0.2.1 is not an address of this machine; give one of its own",
    }
    command = [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser", "--device", "cpu"]
    runs = {
        options: subprocess.Popen(
            [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment()
        )
        for options in cases
    }
    for options, process in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, (options, stderr)
        assert stderr.strip().count("\n") == 0 and cases[options] in stderr, (options, stderr)
        assert stdout == "", options  # it never listened, nor built the network


def test_serve_bf16_upscales_in_bf16_and_says_so_on_the_page() -> None:
    """`srfeat serve` took no precision: the page upscaled in fp32 where --bf16 is 1.3-3x faster."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("bf16 on the CPU needs PyTorch with oneDNN")
    started = start_server("--bf16")
    try:
        config = json.loads(call(started, "GET", "/api/config").body)
        assert config["device"] == "cpu (bf16)", config  # "upscaling on cpu (bf16)" under the drop zone
        job = upload(started, "bf16", "a.png", png_bytes(16))
        assert job.status == 201, job.body
        result = wait_for_result(started, "bf16", json.loads(job.body)["id"])
        assert result.status == 200, result.body
    finally:
        stop_server(started)
    served = np.asarray(Image.open(io.BytesIO(result.body)))
    photo = Image.open(io.BytesIO(png_bytes(16)))
    in_bf16 = np.asarray(Upscaler("default", device="cpu", dtype="bf16", tile=TILE)(photo))
    in_fp32 = np.asarray(Upscaler("default", device="cpu", tile=TILE)(photo))
    # bf16's rounding, not fp32's (the server's threads may round a level apart)
    off_bf16, off_fp32 = (np.abs(served.astype(np.int16) - other) for other in (in_bf16, in_fp32))
    assert off_bf16.max() <= 1 and off_bf16.mean() < off_fp32.mean(), (off_bf16.mean(), off_fp32.mean())
    assert "--bf16 upscales" not in started.log_text()  # the hint is for fp32 runs


def test_an_fp32_server_on_a_cpu_with_native_bf16_is_told_of_bf16(server: Server) -> None:
    from srfeat.hardware import cpu_has_native_bf16

    told = "INFO: this CPU has native bf16 (AVX512-BF16 or AMX): --bf16 upscales 1.3-3x faster"
    assert (told in server.log_text()) == cpu_has_native_bf16(), server.log_text()


def test_an_upload_whose_result_its_format_cannot_hold_is_refused_at_once(server: Server) -> None:
    """A WebP 4100 pixels wide upscales to 16400, over WebP's 16383 (a JPEG's limit is 65500): the job ran
    its whole upscale, then failed with "internal error (ValueError: encoding error 5 ...)" and a traceback."""
    session = "formats"
    try:
        for name, width, image_format, fits in (
            ("wide.webp", 4096, "WEBP", False),
            ("long.jpg", 16376, "JPEG", False),
            ("fits.webp", 4095, "WEBP", True),
        ):
            buffer = io.BytesIO()
            Image.new("RGB", (1, width)).save(buffer, format=image_format)  # tall: the limit is per side
            answer = upload(server, session, name, buffer.getvalue())
            if fits:
                assert answer.status == 201, answer.body
                continue
            kind, most = ("WebP", 16383) if image_format == "WEBP" else ("JPEG", 65500)
            assert answer.status == 413, answer.body
            assert answer.error() == (
                f"{name} would be upscaled to 4x{4 * width}, over {kind}'s limit of {most} pixels per side "
                "(the result is written in the upload's format): convert it to PNG or TIFF and upload that"
            )
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_a_long_non_ascii_name_is_kept_within_file_name_limits(server: Server) -> None:
    name = "写真" * 45 + ".png"  # 90 characters, 274 bytes of UTF-8
    job = upload(server, "names", name, png_bytes(16))
    assert job.status == 201, job.body
    described = json.loads(job.body)
    assert described["name"] == "写真" * 25 + ".png"
    result = wait_for_result(server, "names", described["id"], "download=1")
    assert result.status == 200, result.body  # it failed with "File name too long" when cut by characters
    assert result.headers["content-disposition"].endswith("''" + urllib.parse.quote("写真" * 25 + "_x4.png"))
    assert Image.open(io.BytesIO(result.body)).size == (64, 64)
    # download=0 is not a download: the viewer's copy, with no attachment header.
    shown = call(server, "GET", f"/api/jobs/{described['id']}/result?session=names&download=0")
    assert shown.status == 200 and "content-disposition" not in shown.headers
    call(server, "POST", "/api/sessions/names/close")


def test_api_misuse_gets_a_reason_that_says_what_to_do(server: Server) -> None:
    form = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + png_bytes(16) + b"\r\n--b--"
    )
    refused = upload(server, "misuse", "a.png", form, Content_Type="multipart/form-data; boundary=b")
    assert refused.status == 415 and "takes the image file itself as the request body" in refused.error()
    gan_with_strength = upload(server, "misuse", "a.png", png_bytes(16), "model=gan", "strength=0.3")
    assert gan_with_strength.status == 400 and "strength goes with model=default" in gan_with_strength.error()
    between_steps = upload(server, "misuse", "a.png", png_bytes(16), "strength=0.005")
    assert between_steps.status == 400 and "steps of 0.01" in between_steps.error()
    # -0 is 0: its result was named photo_x4_s-0.00.png and labelled "strength -0.00".
    negative_zero = upload(server, "misuse", "a.png", png_bytes(16), "strength=-0")
    assert negative_zero.status == 201 and json.loads(negative_zero.body)["label"] == "strength 0.00"
    call(server, "POST", "/api/sessions/misuse/close")


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_an_upload_whose_decoder_raises_an_unusual_error_is_refused_not_a_server_error(server: Server) -> None:
    """The AVIF decoder raises RuntimeError for a file without its primary item: the upload check let it
    through as a server error (500, and a traceback in the log) instead of refusing the file."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(buffer, format="AVIF")
    damaged = buffer.getvalue().replace(b"pitm", b"xitm", 1)  # no primary item box
    refused = upload(server, "odd", "photo.avif", damaged)
    # an AVIF by its first bytes: damaged (422), not "not an image srfeat can read (use PNG, ...)" (415)
    said = "photo.avif starts as an AVIF file but cannot be read: it is damaged or cut short"
    assert refused.status == 422 and refused.error().startswith(said), refused.body
    call(server, "POST", "/api/sessions/odd/close")
    assert "Traceback" not in server.log_text(), server.log_text()


def tiff_with_strip_offset(offset: int) -> bytes:
    """A 20x24 BigTIFF whose one strip starts at `offset` (a LONG8, so any 64-bit value)."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 24), (1, 2, 3)).save(buffer, "TIFF", big_tiff=True)
    data = bytearray(buffer.getvalue())
    (ifd,) = struct.unpack("<Q", data[8:16])
    (count,) = struct.unpack("<Q", data[ifd : ifd + 8])
    for entry in range(ifd + 8, ifd + 8 + 20 * count, 20):  # tag, type, count, value: 2 + 2 + 8 + 8 bytes
        if struct.unpack("<H", data[entry : entry + 2])[0] == 273:  # StripOffsets
            data[entry + 2 : entry + 4] = struct.pack("<H", 16)
            data[entry + 12 : entry + 20] = struct.pack("<Q", offset)
    return bytes(data)


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Server]:
    """A server with small queue limits: 2 images waiting per page, 1.5 MB held in all (and a pixel limit
    over PIL's own)."""
    started = start_server(
        "--max-upload-mb", "1", "--max-held-mb", "1.5", "--max-queued", "2", "--max-megapixels", "200"
    )
    yield started
    stop_server(started)


def test_images_of_a_damaged_upload_and_of_a_failed_job_are_errors_not_crashes(limited_server: Server) -> None:
    server, session = limited_server, "damaged"
    events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events")  # keeps the session open
    try:
        blocker = json.loads(upload(server, session, "big.png", png_bytes(256)).body)  # 16 tiles: the worker is busy
        buffer = io.BytesIO()
        Image.fromarray(samples.astronaut()[:32, :32]).save(buffer, format="TIFF")
        cut = upload(server, session, "cut.tif", buffer.getvalue()[: len(buffer.getvalue()) // 2])
        assert cut.status == 201, cut.body  # its header is whole: it passes the upload check
        cut_id = json.loads(cut.body)["id"]
        # Waiting behind big.png, its data still held: the view cannot decode it.
        original = call(server, "GET", f"/api/jobs/{cut_id}/original?session={session}")
        assert original.status == 422 and "cut.tif cannot be shown: the file does not decode" in original.error()
        # A strip offset past what a file can hold: PIL's OverflowError was a 500
        far = upload(server, session, "far.tif", tiff_with_strip_offset(2**63 + 5))
        assert far.status == 201, far.body
        far_view = call(server, "GET", f"/api/jobs/{json.loads(far.body)['id']}/original?session={session}")
        assert far_view.status == 422 and "far.tif cannot be shown: the file does not decode" in far_view.error()
        # A running job taken off its page is gone for it at once (not only after its current tile).
        wait_for_state(events, blocker["id"], "running")
        assert call(server, "POST", f"/api/jobs/{blocker['id']}/remove?session={session}").status == 204
        assert call(server, "GET", f"/api/jobs/{blocker['id']}/original?session={session}").status == 404
        result = wait_for_result(server, session, cut_id)  # cut.tif runs now, and fails
        assert result.status == 404 and result.error().startswith("cut.tif has no result: its job failed (cannot")
        for kind in ("original", "bicubic"):
            view = call(server, "GET", f"/api/jobs/{cut_id}/{kind}?session={session}")
            assert view.status == 404, (kind, view.body)
            assert view.error().startswith(("the original of cut.tif is no longer held", "cut.tif has no result"))
    finally:
        events.close()
        call(server, "POST", f"/api/sessions/{session}/close")
    assert "Traceback" not in server.log_text(), server.log_text()


def test_max_megapixels_over_pils_own_limit_is_the_limit(limited_server: Server) -> None:
    """PIL refuses an image over 179 MP as a possible decompression bomb: with --max-megapixels 200, a 182 MP
    upload was refused all the same, "(... exceeds limit of 178956970 pixels ...)", and not a word of the option."""
    session = "megapixels"
    try:
        accepted = upload(limited_server, session, "pano.png", _png_header_only(13500, 13500))  # 182 MP
        assert accepted.status == 201, accepted.body
        over = upload(limited_server, session, "over.png", _png_header_only(15000, 15000))  # 225 MP
        assert over.status == 413
        assert "over.png is 15000x15000 (225 megapixels), over this server's limit of 200 megapixels" in over.error()
    finally:
        call(limited_server, "POST", f"/api/sessions/{session}/close")


def test_queued_uploads_and_bytes_held_are_bounded(limited_server: Server, browser: Browser) -> None:
    server = limited_server
    streams = [urllib.request.urlopen(f"{server.url}api/sessions/{session}/events") for session in ("one", "two")]
    try:
        # Bytes held by all pages together: two uploads of 0.95 MB do not fit in 1.5 MB.
        padded = png_bytes(16, padding=1_000_000)
        first = upload(server, "two", "p1.png", padded)
        assert first.status == 201, first.body
        # A running job removed holds its bytes until its upscale stops: the removal below is of a finished one.
        wait_for_state(streams[1], json.loads(first.body)["id"], "done")
        over = upload(server, "two", "p2.png", padded)
        assert over.status == 503 and "p2.png is refused: this server holds 1.0 MB" in over.error()
        assert "its limit is 1.5 MB (--max-held-mb)" in over.error()
        # The page shows the reason on the refused image's card.
        tab = open_tab(browser, server)
        tab.page.set_input_files("#files", files=[{"name": "p3.png", "mimeType": "image/png", "buffer": padded}])
        card = job_card(tab.page, "p3.png")
        expect(card).to_have_attribute("data-state", "refused", timeout=60_000)
        expect(card.locator(".status[role='alert']")).to_contain_text("its limit is 1.5 MB (--max-held-mb)")
        tab.page.context.close()
        # Removing an image frees what it held: the next upload fits.
        assert call(server, "POST", f"/api/jobs/{json.loads(first.body)['id']}/remove?session=two").status == 204
        again = upload(server, "two", "p2.png", padded)
        assert again.status == 201, again.body
        assert call(server, "POST", f"/api/jobs/{json.loads(again.body)['id']}/remove?session=two").status == 204

        # Images waiting per page: 2 here.
        big = upload(server, "one", "big.png", png_bytes(256))
        assert big.status == 201
        wait_for_state(streams[0], json.loads(big.body)["id"], "running")  # 16 tiles: the others wait
        assert [upload(server, "one", f"s{n}.png", png_bytes(16)).status for n in range(2)] == [201, 201]
        third = upload(server, "one", "s2.png", png_bytes(16))
        assert third.status == 429 and "2 images of this page are already waiting" in third.error()
        assert "--max-queued" in third.error()
        assert upload(server, "two", "s2.png", png_bytes(16)).status == 201  # another page's queue is its own
    finally:
        for stream in streams:
            stream.close()
        for session in ("one", "two"):
            call(server, "POST", f"/api/sessions/{session}/close")


def test_a_view_that_would_pass_max_held_mb_is_refused_and_says_why(limited_server: Server, browser: Browser) -> None:
    """Views were counted in --max-held-mb but never checked against it: a JPEG's bicubic view (a PNG of
    16 times its pixels) was built and kept however much the server held, past the limit the README promises."""
    server, session = limited_server, "views"
    events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events")  # keeps the session open
    tab = open_tab(browser, server)
    page = tab.page
    try:
        sizes = (1_000_000, 400_000)
        padding = [upload(server, session, f"pad{n}.png", png_bytes(16, padding=size)) for n, size in enumerate(sizes)]
        assert [answer.status for answer in padding] == [201, 201], [answer.body for answer in padding]
        buffer = io.BytesIO()
        Image.fromarray(samples.astronaut()[100:228, 180:308]).save(buffer, format="JPEG", quality=90)
        # 128x128: its bicubic view is a 512x512 PNG of about 0.2 MB, past the 1.5 MB with the 1.3 MB held above.
        page.set_input_files(
            "#files", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}]
        )
        expect(job_card(page, "photo.jpg")).to_have_attribute("data-state", "done", timeout=120_000)
        page.check("input[name='resample'][value='bicubic']")
        label = page.locator("#before-label")
        expect(label).to_contain_text("original, bicubic \u00d74: not shown: the bicubic view of photo.jpg (")
        expect(label).to_contain_text("past its limit of 1.5 MB (--max-held-mb); remove finished images")
        expect(page.locator("#before")).to_be_hidden()
        # Removing an image frees room: the view is built and shown.
        removed = call(server, "POST", f"/api/jobs/{json.loads(padding[1].body)['id']}/remove?session={session}")
        assert removed.status == 204
        page.check("input[name='resample'][value='nearest']")
        page.check("input[name='resample'][value='bicubic']")
        expect(label).to_have_text("original, bicubic \u00d74")
        expect(page.locator("#before")).to_be_visible()
        expect(page.locator("#before")).to_have_js_property("naturalWidth", 512, timeout=60_000)
    finally:
        page.context.close()
        events.close()
        call(server, "POST", f"/api/sessions/{session}/close")


def test_upload_bodies_are_read_a_few_at_a_time() -> None:
    """Connections that send slowly cannot make the server hold --max-upload-mb each: past four (the
    README's number), an upload waits unread until one of them ends. The server's log says when one waits."""
    read_at_once = 4
    # Its own server: the slow uploads are not dropped by --upload-timeout however slow this machine is.
    server = start_server("--max-upload-mb", "1", "--upload-timeout", "3600")
    address = urllib.parse.urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    slow: list[socket.socket] = []
    try:
        for n in range(read_at_once + 1):
            path = "/api/jobs?" + urllib.parse.urlencode({"session": "slow", "name": f"slow{n}.png"})
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {address.hostname}:{address.port}\r\nX-SRFeat-Upload: 1\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
            slow.append(socket.create_connection((address.hostname, address.port), timeout=120))
            slow[-1].sendall(head + b"\x89PNG")  # a body begun, not ended
        # One of the five waits: the other four hold every receiving place, and keep them (their bodies never end).
        waiting_one = int(_wait_for_log_match(server, r"upload of slow(\d)\.png waits: 4 others are being received"))
        slow[waiting_one].sendall(bytes(996))  # its body ends: once read, it is refused (not an image) at once
        holding = [connection for n, connection in enumerate(slow) if n != waiting_one]
        answers: list[Answer] = []
        thread = threading.Thread(target=lambda: answers.append(upload(server, "slow", "quick.png", png_bytes(8))))
        thread.start()
        _wait_for_log_match(server, r"upload of quick\.png (waits)")
        assert not answers, "an upload was read while all the receiving places were taken"
        holding[0].sendall(bytes(996))  # that body ends: it is refused, and frees its place for the ones waiting
        assert holding[0].recv(4096).startswith(b"HTTP/1.1 415")
        assert slow[waiting_one].recv(4096).startswith(b"HTTP/1.1 415")
        thread.join(120)
        assert answers and answers[0].status == 201, answers
    finally:
        for connection in slow:
            connection.close()
        stop_server(server)


def _wait_for_log_match(server: Server, pattern: str) -> str:
    """The first group of `pattern`'s first match in the server's log, once it is there."""
    deadline = time.monotonic() + 120
    while (match := re.search(pattern, server.log_text())) is None:
        assert time.monotonic() < deadline, f"{pattern!r} not in the log: {server.log_text()[-2000:]}"
        time.sleep(0.1)
    return match.group(1)


def test_the_worker_hands_freed_memory_back_after_every_job_done_or_failed(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = JobQueue(lambda _choice: Upscaler(str(model_path), device="cpu"))
    states_at_each_hand_back: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "srfeat.web.jobs.return_freed_memory", lambda: states_at_each_hand_back.append((good.state, bad.state))
    )
    try:
        good = queue.submit("s", "good.png", png_bytes(16), ModelChoice(), 16, 16)
        bad = queue.submit("s", "bad.png", b"not a PNG", ModelChoice(), 16, 16)
        deadline = time.monotonic() + 60
        while len(states_at_each_hand_back) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        queue.stop()
        queue.join()
    assert states_at_each_hand_back == [("done", "queued"), ("done", "failed")]


def test_an_upload_that_arrives_as_the_server_stops_is_refused_not_left_queued(model_path: Path) -> None:
    """An upload whose body was read as Ctrl+C came was queued after the worker had ended: its card
    said "queued" until the page gave up on the server. Now it is refused, saying why."""
    queue = JobQueue(lambda _choice: Upscaler(str(model_path), device="cpu"))
    queue.stop()
    queue.join()
    for ask in (
        lambda: queue.submit("s", "late.png", png_bytes(16), ModelChoice(), 16, 16),
        lambda: queue.check_room("s", "late.png", 100),
    ):
        with pytest.raises(QueueFullError, match="^late.png was not taken: the server is stopping$") as refusal:
            ask()
        assert refusal.value.status == 503
    assert queue.session_jobs("s") == []


def test_what_a_result_lost_or_changed_is_said_on_its_card(server: Server, browser: Browser, tmp_path: Path) -> None:
    """An animated GIF lost all but its first frame: the command line warns, the page said nothing. A PNG with
    transparency saved as .jpg is written as PNG, to keep it (it was a JPEG, its card telling the user to
    "use .png or .webp", which on the page meant renaming the file and uploading it again)."""
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "logo.jpg", format="PNG")
    frames = [Image.new("RGB", (10, 10), (60 * n, 0, 0)) for n in range(3)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(pixels[..., :3]).save(tmp_path / "plain.png")
    page = open_tab(browser, server).page
    page.set_input_files("#files", [str(tmp_path / name) for name in ("logo.jpg", "moving.gif", "plain.png")])
    for name in ("logo.jpg", "moving.gif", "plain.png"):
        expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=120_000)
    expect(job_card(page, "logo.jpg").locator(".status")).to_contain_text(
        "note: logo.jpg has an alpha channel (transparency), which JPEG cannot hold: "
        "the result is written as PNG (logo_x4.png) to keep it"
    )
    expect(job_card(page, "logo.jpg").locator(".status")).not_to_contain_text("alpha is dropped")
    download = job_card(page, "logo.jpg").get_by_role("link", name="Download logo_x4.png")
    expect(download).to_have_attribute("download", "logo_x4.png")
    expect(job_card(page, "moving.gif").locator(".status")).to_contain_text(
        "note: moving.gif has 3 frames (animated): only the first is read"
    )
    expect(job_card(page, "plain.png").locator(".status")).not_to_contain_text("note")
    page.context.close()


def test_the_views_carry_the_colour_profile_the_result_keeps(server: Server) -> None:
    """The result keeps the upload's ICC profile and the browser shows it through it; the bicubic view
    had none, so beside a Display P3 or Adobe RGB photo's result it was shown as sRGB, its colours
    changed as if by the upscale (the left and right of the comparison disagreed)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # any RGB profile: its bytes are checked
    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()[:8, :8]).save(buffer, format="PNG", icc_profile=icc)
    session = "colours"
    job = json.loads(upload(server, session, "wide.png", buffer.getvalue()).body)
    try:
        assert wait_for_result(server, session, job["id"]).status == 200
        for kind in ("result", "original", "bicubic"):
            view = call(server, "GET", f"/api/jobs/{job['id']}/{kind}?session={session}")
            assert view.status == 200, view.body
            assert Image.open(io.BytesIO(view.body)).info.get("icc_profile") == icc, kind
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_the_views_of_a_cmyk_upload_show_the_colours_of_its_result(server: Server) -> None:
    """srfeat reads a CMYK file through its own profile (a press's cyan is a deep blue); the bicubic view
    used PIL's plain formula (0, 255, 255): beside the blue result, a cyan original."""
    from test_image_reading import press_profile

    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(buffer, format="TIFF", icc_profile=press_profile())
    session = "cmyk"
    job = json.loads(upload(server, session, "print.tif", buffer.getvalue()).body)
    try:
        result = wait_for_result(server, session, job["id"])
        assert result.status == 200
        colours = {}
        for kind in ("result", "original", "bicubic"):
            view = call(server, "GET", f"/api/jobs/{job['id']}/{kind}?session={session}")
            assert view.status == 200, view.body
            colours[kind] = np.asarray(Image.open(io.BytesIO(view.body)).convert("RGB"), dtype=int)[2, 2]
        assert 150 < colours["result"][2] and colours["result"][1] < 170, colours  # the deep blue
        for kind in ("original", "bicubic"):
            assert np.abs(colours[kind] - colours["result"]).max() <= 8, colours
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_the_views_of_a_float_tiff_are_not_black(server: Server) -> None:
    """srfeat reads a float grey TIFF as 0 to 1, and its result keeps it so; the original, bicubic and result
    views took those values as 0 to 255: a black comparison."""
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    buffer = io.BytesIO()
    Image.fromarray(ramp, mode="F").save(buffer, format="TIFF")
    session = "float"
    try:
        job = json.loads(upload(server, session, "ramp.tif", buffer.getvalue()).body)
        assert wait_for_result(server, session, job["id"]).status == 200
        for kind in ("original", "bicubic", "result"):
            view = call(server, "GET", f"/api/jobs/{job['id']}/{kind}?session={session}")
            assert view.status == 200, (kind, view.body)
            pixels = np.asarray(Image.open(io.BytesIO(view.body)).convert("L"))
            assert pixels.min() <= 5 and pixels.max() >= 250, (kind, pixels.min(), pixels.max())
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_an_animation_is_shown_as_the_frame_that_was_upscaled(server: Server) -> None:
    """The original of an animated GIF was sent as it was: the browser played it beside a still result."""
    frames = [Image.new("RGB", (10, 10), (60 * n, 0, 0)) for n in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    session = "animated"
    job = json.loads(upload(server, session, "moving.gif", buffer.getvalue()).body)
    try:
        assert wait_for_result(server, session, job["id"]).status == 200
        shown = call(server, "GET", f"/api/jobs/{job['id']}/original?session={session}")
        assert shown.status == 200 and shown.headers["content-type"] == "image/png"
        still = Image.open(io.BytesIO(shown.body))
        assert getattr(still, "n_frames", 1) == 1 and still.convert("RGB").getpixel((5, 5)) == (0, 0, 0)
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")
