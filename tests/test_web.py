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
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from srfeat.cli import main
from srfeat.data.io import read_raw_image, write_image
from srfeat.inference import Upscaler
from srfeat.inference.image_files import upscale_file
from srfeat.web.jobs import safe_file_name

samples = pytest.importorskip("skimage.data")
pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and quiet: without the background-networking switches Chromium keeps calling home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _dead_process_id() -> int:
    probe = subprocess.Popen([sys.executable, "-c", ""])
    probe.wait()
    return probe.pid


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # What a server killed mid-job leaves behind; the next one removes it when it starts.
    stale = Path(tempfile.gettempdir()) / f"srfeat-serve-{_dead_process_id()}-left"
    stale.mkdir(exist_ok=True)
    (stale / "photo.png").write_bytes(b"partial")
    command = [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser", "--device", "cpu", "--tile", str(TILE)]
    command += ["--max-upload-mb", str(UPLOAD_LIMIT_MB)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(), cwd=ROOT
    )
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(line.rstrip() for line in stderr), daemon=True).start()
    first = stdout.readline()  # the URL line; blocks until the server listens (or exits)
    match = re.search(r"http://[\w.\[\]:]+/", first)
    if match is None:
        process.kill()
        pytest.fail(f"srfeat serve printed no URL: {first!r}; stderr: {stderr.read()}")
    assert not stale.exists()
    yield Server(match.group(0), process, log)
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
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


def open_tab(browser: Browser, server: Server) -> Tab:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 720})
    page = context.new_page()
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


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


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
        "bomb.png": ("refused", "decompression bomb"),
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
    waiting = job_card(second, "small.png")
    expect(waiting.locator(".status")).to_contain_text("place 3 in line (2 ahead)")
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
    assert url.strip() == f"srfeat serve: http://0.0.0.0:{free_port}/"
    assert opened_file.read_text() == f"http://0.0.0.0:{free_port}/"
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
    ],
)
def test_upload_names_cannot_leave_the_temporary_folder(uploaded: str, kept: str) -> None:
    assert safe_file_name(uploaded) == kept


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
