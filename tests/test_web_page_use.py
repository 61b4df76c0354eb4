"""The page of `srfeat serve` as it is used: by mouse, by keyboard alone and through a screen reader, with files
dragged onto it, and what its notes advise. Helpers and the browser come from test_web.py."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from cli_helpers import srfeat_cli
from playwright.sync_api import Browser, Page, Route, expect
from test_web import (
    TILE,
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    call,
    job_card,
    open_tab,
    png_bytes,
    start_server,
    stop_server,
)
from test_web_formats import lzw_tiff16

from srfeat.data.io import write_image

VIEW_BUTTONS = ("fit", "actual", "zoom-out", "zoom-in")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server()
    yield started
    stop_server(started)


# The focused element named (its id, else its accessible label, else its text), or null once round.
FOCUSED = """(round) => {
    const element = document.activeElement;
    if (element.dataset.tabRound === String(round)) return null;
    element.dataset.tabRound = String(round);
    return element.id || element.getAttribute("aria-label") || `${element.tagName}: ${element.textContent.trim()}`;
}"""


def _tab_stops(page: Page) -> list[str]:
    """The elements Tab visits from the top of the page, in order, once round (named as `FOCUSED` says)."""
    page.click("h1")  # where Tab starts from
    round_ = page.evaluate("() => (window.tabRounds = (window.tabRounds || 0) + 1)")
    stops: list[str] = []
    for _ in range(80):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED, round_)
        if stop is None:
            return stops
        stops.append(stop)
    pytest.fail(f"Tab did not come round within 80 stops: {stops}")


def _upload(page: Page, name: str, data: bytes) -> None:
    page.set_input_files("#files", files=[{"name": name, "mimeType": "image/png", "buffer": data}])


def test_the_view_buttons_are_disabled_until_an_image_is_shown(server: Server, browser: Browser) -> None:
    """Fit, 100% and the zoom buttons were tab stops and clickable with no image to fit or zoom: a keyboard
    user passed four buttons that did nothing, and a screen reader called them usable."""
    page = open_tab(browser, server).page
    for button in VIEW_BUTTONS:
        expect(page.locator(f"#{button}")).to_be_disabled()
    stops = _tab_stops(page)
    assert "choose-files" in stops and not set(VIEW_BUTTONS) & set(stops), stops
    _upload(page, "shown.png", png_bytes(16))
    expect(job_card(page, "shown.png")).to_have_attribute("data-state", "done", timeout=60_000)
    page.wait_for_function("() => document.getElementById('after').naturalWidth === 64")
    for button in VIEW_BUTTONS:
        expect(page.locator(f"#{button}")).to_be_enabled()
    assert set(VIEW_BUTTONS) <= set(_tab_stops(page))
    fitted = page.locator("#zoom-level").inner_text()
    page.click("#zoom-in")
    expect(page.locator("#zoom-level")).not_to_have_text(fitted)
    page.click("#fit")
    expect(page.locator("#zoom-level")).to_have_text(fitted)
    # The image removed, the viewer is empty again, and so are its buttons.
    page.get_by_role("button", name="remove from the list: shown.png").click()
    expect(page.locator("#viewer-empty")).to_be_visible()
    for button in VIEW_BUTTONS:
        expect(page.locator(f"#{button}")).to_be_disabled()
    page.context.close()


def test_the_viewer_names_the_image_it_shows_and_is_no_tab_stop_while_empty(server: Server, browser: Browser) -> None:
    """Empty, the comparison frame was a tab stop whose keys did nothing. Showing one of several images, the frame
    was "comparison" and the toolbar's link "Download": a screen reader did not say which image either was."""
    page = open_tab(browser, server).page
    assert "frame" not in _tab_stops(page)
    page.set_input_files(
        "#files",
        files=[{"name": name, "mimeType": "image/png", "buffer": png_bytes(16)} for name in ("one.png", "two.png")],
    )
    for name in ("one.png", "two.png"):
        expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=60_000)
    frame = page.locator("#frame")
    expect(frame).to_have_accessible_name(
        "comparison of one.png \u00b7 default: arrow keys pan, + and - zoom, 0 fits it in the window"
    )
    expect(page.locator("#toolbar").get_by_role("link")).to_have_accessible_name(
        "Download one_x4.png, shown in the viewer"
    )
    page.get_by_role("button", name="Compare two.png").click()
    expect(frame).to_have_accessible_name(re.compile(r"^comparison of two\.png \u00b7 default: arrow keys pan"))
    expect(page.locator("#toolbar").get_by_role("link")).to_have_accessible_name(
        "Download two_x4.png, shown in the viewer"
    )
    assert "frame" in _tab_stops(page)
    # Both removed: the frame is empty, and no tab stop, again.
    for name in ("one.png", "two.png"):
        page.get_by_role("button", name=f"remove from the list: {name}").click()
    expect(page.locator("#viewer-empty")).to_be_visible()
    expect(frame).to_have_accessible_name(re.compile(r"^comparison: arrow keys pan"))
    assert "frame" not in _tab_stops(page)
    page.context.close()


def test_the_split_takes_a_sliders_keys(server: Server, browser: Browser) -> None:
    """The split is a slider to a screen reader, which tells its user to use a slider's keys; it took only left
    and right: Home, End, Page Up, Page Down and up and down did nothing."""
    page = open_tab(browser, server).page
    _upload(page, "split.png", png_bytes(16))
    expect(job_card(page, "split.png")).to_have_attribute("data-state", "done", timeout=60_000)
    split = page.get_by_role("slider", name="before/after split")
    split.focus()
    transform = page.eval_on_selector("#stage", "element => element.style.transform")
    for key, value in [("End", 100), ("PageDown", 90), ("ArrowDown", 88), ("Home", 0), ("PageUp", 10), ("ArrowUp", 12)]:
        page.keyboard.press(key)
        expect(split).to_have_attribute("aria-valuenow", str(value))
    left = page.eval_on_selector("#split", "element => element.getBoundingClientRect().left")
    frame = page.eval_on_selector("#frame", "element => element.getBoundingClientRect()")
    assert abs(left - (frame["left"] + 0.12 * frame["width"])) < 2, (left, frame)
    # The picture stays where it was: the split's keys are its own.
    assert page.eval_on_selector("#stage", "element => element.style.transform") == transform
    page.context.close()


def test_images_done_between_two_of_the_pages_questions_are_each_announced(server: Server, browser: Browser) -> None:
    """Two images done between two of the page's questions (small images, a busy browser) were announced each over
    the other in the live region: a screen reader heard that the second was done, never the first."""
    page = open_tab(browser, server).page
    session = page.evaluate("session")
    held: list[Route] = []
    page.route("**/api/sessions/*/jobs?*", lambda route: held.append(route))
    while not held:  # the page's next question waits here, and the page asks no other until it is answered
        page.wait_for_timeout(50)
    page.set_input_files(
        "#files",
        files=[
            {"name": name, "mimeType": "image/png", "buffer": png_bytes(16)} for name in ("first.png", "second.png")
        ],
    )
    deadline = time.monotonic() + 120
    while True:  # asked by the test meanwhile (which keeps the session open)
        jobs = json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
        if [job["state"] for job in jobs] == ["done", "done"]:
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)
    assert len(held) == 1 and page.locator("#jobs li[data-state='done']").count() == 0
    page.unroute("**/api/sessions/*/jobs?*")  # which sends the held question on: its answer has both done
    expect(page.locator("#jobs li[data-state='done']")).to_have_count(2)
    expect(page.locator("#announce")).to_have_text(
        re.compile(r"^first\.png: done, 64\u00d764, \d+ s\. second\.png: done, 64\u00d764, \d+ s$")
    )
    page.context.close()


def _shown(page: Page, name: str) -> None:
    """`name` uploaded, done and shown in the viewer."""
    _upload(page, name, png_bytes(16))
    expect(job_card(page, name)).to_have_attribute("data-state", "done", timeout=60_000)
    page.wait_for_function("() => document.getElementById('after').naturalWidth === 64")


def _has_focus(page: Page, selector: str) -> bool:
    return page.locator(selector).evaluate("element => element === document.activeElement")


def test_focus_in_the_viewer_goes_to_the_images_card_when_the_server_forgets_it(
    server: Server, browser: Browser
) -> None:
    """The server restarted, the viewer emptied, and the keyboard focus that was in it fell to the page's body: Tab
    started again from the top, and a screen reader said nothing of what had happened."""
    page = open_tab(browser, server).page
    _shown(page, "forgotten.png")
    page.focus("#frame")
    # The server's answers from here are those of a restarted server, which holds no jobs of this page.
    page.route("**/api/sessions/*/jobs?*", lambda route: route.fulfill(json={"version": "restarted", "jobs": []}))
    card = job_card(page, "forgotten.png")
    expect(card).to_contain_text("the server no longer holds this image")
    expect(page.locator("#viewer-empty")).to_be_visible()
    page.wait_for_function("() => document.activeElement !== document.body")
    assert card.evaluate("element => element === document.activeElement")
    page.context.close()


def test_focus_on_the_viewers_buttons_goes_to_choose_files_when_its_image_is_removed(
    server: Server, browser: Browser
) -> None:
    """The shown image removed where the focus was not on its card (a screen reader's browse mode clicks its x
    and leaves the focus where it was), the viewer's disabled buttons dropped the focus to the page's body."""
    page = open_tab(browser, server).page
    _shown(page, "removed.png")
    page.focus("#zoom-in")
    page.get_by_role("button", name="remove from the list: removed.png").dispatch_event("click")
    expect(page.locator("#viewer-empty")).to_be_visible()
    page.wait_for_function("() => document.activeElement !== document.body")
    assert _has_focus(page, "#choose-files")
    page.context.close()


def test_the_zoom_is_announced_after_its_buttons_and_keys_and_once_the_wheel_rests(
    server: Server, browser: Browser
) -> None:
    """The zoom level changed without a word to a screen reader: the toolbar's percentage is no live region (made
    one, it would say each step of the wheel)."""
    page = open_tab(browser, server).page
    _shown(page, "zoomed.png")
    said = page.get_by_role("status").filter(has_text=re.compile("^zoom"))
    level = page.locator("#zoom-level")
    before = level.inner_text()
    page.click("#zoom-in")
    expect(level).not_to_have_text(before)
    expect(page.locator("#zoom-said")).to_have_text(f"zoom {level.inner_text()}")
    expect(said).to_have_count(1)
    page.focus("#frame")
    page.keyboard.press("-")
    expect(level).to_have_text(before)
    expect(page.locator("#zoom-said")).to_have_text(f"zoom {before}")
    # Steps of the wheel are not said each; their end is.
    quiet = page.eval_on_selector(
        "#frame",
        """frame => {
            for (let step = 0; step < 3; step++) {
                frame.dispatchEvent(new WheelEvent("wheel", { deltaY: -100, bubbles: true, cancelable: true }));
            }
            return document.getElementById("zoom-said").textContent;
        }""",
    )
    assert quiet == f"zoom {before}"
    expect(level).not_to_have_text(before)
    expect(page.locator("#zoom-said")).to_have_text(f"zoom {level.inner_text()}")
    page.context.close()


# Synthetic drag events, as the browser sends them for files dragged in from another program (Playwright
# cannot drag a file from outside the page). `target` is an element id, `leaving_for` one or null.
DRAG = """([kind, target, leavingFor]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array([1, 2, 3])], "dragged.png", { type: "image/png" }));
    const related = leavingFor ? document.getElementById(leavingFor) : null;
    document.getElementById(target).dispatchEvent(new DragEvent(kind, {
        dataTransfer: transfer, bubbles: true, cancelable: true, relatedTarget: related }));
}"""


def _drag(page: Page, kind: str, target: str, leaving_for: str | None = None) -> None:
    page.evaluate(DRAG, [kind, target, leaving_for])


def _highlighted(page: Page) -> bool:
    """Whether the page shows that it takes the drop: the drop zone lit and the page-wide overlay shown."""
    drop_lit = page.evaluate("() => document.getElementById('drop').classList.contains('over')")
    overlay = page.evaluate("() => getComputedStyle(document.body, '::after').content")
    assert drop_lit == (overlay not in ("none", "normal", "")), (drop_lit, overlay)
    return drop_lit


def test_files_dragged_anywhere_over_the_page_light_it_up_until_they_leave_drop_or_escape(
    server: Server, browser: Browser
) -> None:
    """A drop anywhere is taken, but only a drag over the small drop zone lit it up: over the viewer, most of
    the page, nothing said that the files would be taken."""
    page = open_tab(browser, server).page
    assert not _highlighted(page)
    _drag(page, "dragenter", "frame")
    _drag(page, "dragover", "frame")
    assert _highlighted(page)
    # Over a child: its dragenter comes before the parent's dragleave; no flicker off in between.
    _drag(page, "dragenter", "zoom-in")
    _drag(page, "dragleave", "frame", "zoom-in")
    assert _highlighted(page)
    _drag(page, "dragenter", "toolbar")
    _drag(page, "dragleave", "zoom-in", "toolbar")
    assert _highlighted(page)
    # Out of the window: off.
    _drag(page, "dragleave", "toolbar")
    assert not _highlighted(page)
    # Dropped: off, and the file taken.
    _drag(page, "dragenter", "viewer-empty")
    assert _highlighted(page)
    _drag(page, "drop", "viewer-empty")
    assert not _highlighted(page)
    expect(job_card(page, "dragged.png")).to_have_count(1)
    # Escape: off.
    _drag(page, "dragenter", "sidebar")
    assert _highlighted(page)
    page.keyboard.press("Escape")
    assert not _highlighted(page)
    # Text dragged within the page is no upload: nothing lights up.
    page.evaluate("() => document.getElementById('limits').dispatchEvent(new DragEvent('dragstart', {bubbles: true}))")
    _drag(page, "dragenter", "frame")
    assert not _highlighted(page)
    page.context.close()


def test_what_the_download_lost_is_noted_with_what_a_web_user_can_do(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """A 16-bit PNG named `.jpg` was a JPEG result with 8 bits, as `srfeat upscale` writes it; its card said
    "use .png to keep 16", advice for naming the output file, which the page's user does not do, and then to
    rename the file and upload it again, or run srfeat upscale. Its result is now a 16-bit PNG, and its card says
    so; a float grey TIFF named `.jpg`, a float TIFF. A grey image named `.webp` is the same grey as RGB (its card
    said "use .png to keep one channel")."""
    pixels = np.random.default_rng(0).integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    write_image(tmp_path / "deep.png", pixels)
    (tmp_path / "deep.png").rename(tmp_path / "deep.jpg")
    write_image(tmp_path / "grey.png", (pixels[..., 0] >> 8).astype(np.uint8))
    (tmp_path / "grey.png").rename(tmp_path / "grey.webp")
    write_image(tmp_path / "scan.tif", pixels[..., 0] / 65535.0)  # float grey
    (tmp_path / "scan.tif").rename(tmp_path / "scan.jpg")
    notes = {
        "deep.jpg": "note: deep.jpg has 16 bits per channel, which JPEG cannot hold: the result is written as PNG "
        "(deep_x4.png) to keep all 16",
        "grey.webp": "note: grey.webp is grey, and WebP has no grey mode: the download (grey_x4.webp) has the same "
        "grey as RGB",
        # its card said "float pixels are kept only in a gray TIFF", over an 8-bit JPEG
        "scan.jpg": "note: scan.jpg has 32-bit float pixels, which JPEG cannot hold: the result is written as TIFF "
        "(scan_x4.tif) to keep them",
    }
    if (
        importlib.util.find_spec("imagecodecs") is None
    ):  # a 16-bit TIFF read with 8 bits: a JPEG, not a PNG "to keep 16"
        (tmp_path / "lzw.jpg").write_bytes(lzw_tiff16(pixels, tmp_path / "plain.tif"))
        notes["lzw.jpg"] = (
            "note: lzw.jpg is a 16-bit colour TIFF compressed with LZW, which this server reads with 8 bits per "
            "channel (it lacks the imagecodecs package): the download (lzw_x4.jpg) has 8"
        )
    page = open_tab(browser, server).page
    page.set_input_files("#files", [str(tmp_path / name) for name in notes])
    for name, note in notes.items():
        card = job_card(page, name)
        expect(card).to_have_attribute("data-state", "done", timeout=60_000)
        expect(card.locator(".status")).to_contain_text(note)
        expect(card.locator(".status")).not_to_contain_text("use .png")
        expect(card.locator(".status")).not_to_contain_text("srfeat upscale")
        expect(card.locator(".status")).not_to_contain_text("gray TIFF")
        expect(card.locator(".status")).not_to_contain_text("keep all 16" if name == "lzw.jpg" else "imagecodecs")
    page.context.close()
    # The command line keeps its own advice, for the output name its user gives.
    child = srfeat_cli("upscale", tmp_path / "deep.jpg", "-o", tmp_path / "out", "--device", "cpu", "--tile", str(TILE))
    assert child.returncode == 0, child.stderr
    assert "JPEG cannot hold these 16-bit pixels; writing 8 bits (use .png to keep 16)" in child.stderr
