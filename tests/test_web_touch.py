"""The viewer of `srfeat serve` on a phone's touch screen, in headless Chromium with touch emulated: a swipe scrolls
the page unless the picture is zoomed in, where it pans; two fingers pinch to zoom. The fingers are sent through the
DevTools protocol (Input.dispatchTouchEvent), as a touch screen sends them, so the browser's own touch-action and
scrolling decide what happens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, CDPSession, Page, expect
from test_web import (
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    job_card,
    png_bytes,
    start_server,
    stop_server,
)

Point = tuple[float, float]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server()
    yield started
    stop_server(started)


def _phone_showing_a_result(browser: Browser, server: Server) -> Page:
    """A 360x640 touch screen with a 128x128 result in the viewer, the page scrolled to its end (the viewer)."""
    context = browser.new_context(viewport={"width": 360, "height": 640}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#files", files=[{"name": "face.png", "mimeType": "image/png", "buffer": png_bytes(32)}])
    expect(job_card(page, "face.png")).to_have_attribute("data-state", "done", timeout=60_000)
    page.wait_for_function("() => document.getElementById('after').naturalWidth === 128")
    page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
    return page


@dataclass
class Stage:
    """Where the picture is drawn: its top left corner in the frame, and its zoom."""

    x: float
    y: float
    zoom: float


def _stage(page: Page) -> Stage:
    transform = page.eval_on_selector("#stage", "stage => stage.style.transform")
    match = re.fullmatch(r"translate\(([-\d.e]+)px, ([-\d.e]+)px\) scale\(([\d.e-]+)\)", transform)
    assert match is not None, transform
    return Stage(*map(float, match.groups()))


def _frame_point(page: Page, left: float, top: float) -> Point:
    """The point `left` and `top` of the way across the viewer's frame, on the screen."""
    box = page.locator("#frame").bounding_box()
    assert box is not None
    return box["x"] + box["width"] * left, box["y"] + box["height"] * top


def _fingers(session: CDPSession, kind: str, *points: Point) -> None:
    touch_points = [{"x": x, "y": y, "id": finger} for finger, (x, y) in enumerate(points)]
    session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})


def _swipe(page: Page, start: Point, end: Point, steps: int = 8) -> None:
    """One finger down at `start`, moved to `end` in `steps`, and lifted."""
    session = page.context.new_cdp_session(page)
    _fingers(session, "touchStart", start)
    for step in range(1, steps + 1):
        done = step / steps
        _fingers(session, "touchMove", (start[0] + (end[0] - start[0]) * done, start[1] + (end[1] - start[1]) * done))
    _fingers(session, "touchEnd")


def _pinch(page: Page, centre: Point, apart: float, to_apart: float, drift: float = 0, steps: int = 8) -> None:
    """Two fingers `apart` above and below `centre` (the second landing after the first, as fingers do), moved to
    `to_apart` while their midpoint drifts `drift` down (no two fingers spread evenly), and lifted."""
    session = page.context.new_cdp_session(page)
    x, y = centre

    def fingers_at(distance: float, down: float = 0) -> tuple[Point, Point]:
        return (x, y + down - distance / 2), (x, y + down + distance / 2)

    first, second = fingers_at(apart)
    _fingers(session, "touchStart", first)
    _fingers(session, "touchStart", first, second)
    for step in range(1, steps + 1):
        _fingers(session, "touchMove", *fingers_at(apart + (to_apart - apart) * step / steps, drift * step / steps))
    _fingers(session, "touchEnd")


def _scroll_y(page: Page) -> float:
    return page.evaluate("() => window.scrollY")


# Resolves once the page's scroll has not moved for 10 frames: a swipe's fling goes on after the finger is lifted.
SCROLL_AT_REST = """() => new Promise((resolve) => {
    let last = window.scrollY, still = 0;
    const frame = () => {
        still = window.scrollY === last ? still + 1 : 0;
        last = window.scrollY;
        if (still >= 10) resolve(last); else requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
})"""


def test_a_swipe_scrolls_the_page_over_a_fitted_picture_and_pans_a_zoomed_one(server: Server, browser: Browser) -> None:
    """On a phone the viewer is most of the screen, and it took every swipe: the page could not be scrolled there,
    and a swipe moved the fitted picture off its place. Fitted, a vertical swipe scrolls the page and leaves the
    picture be; zoomed in, the same swipe pans the picture and the page stays."""
    page = _phone_showing_a_result(browser, server)
    try:
        fitted = _stage(page)
        scrolled = _scroll_y(page)
        assert scrolled > 100, "the page should be taller than the phone's screen"
        start, end = _frame_point(page, 0.25, 0.3), _frame_point(page, 0.25, 0.8)
        _swipe(page, start, end)  # the finger moves down: the page scrolls up
        assert page.evaluate(SCROLL_AT_REST) < scrolled - 50
        assert _stage(page) == fitted

        page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
        page.evaluate(SCROLL_AT_REST)
        page.locator("#zoom-in").click()
        zoomed = _stage(page)
        assert zoomed.zoom > fitted.zoom
        scrolled = _scroll_y(page)
        start, end = _frame_point(page, 0.25, 0.3), _frame_point(page, 0.25, 0.6)
        _swipe(page, start, end)
        panned = _stage(page)
        assert panned.y - zoomed.y == pytest.approx(end[1] - start[1], abs=2)
        assert panned.x == pytest.approx(zoomed.x, abs=1) and panned.zoom == zoomed.zoom
        assert _scroll_y(page) == scrolled
    finally:
        page.context.close()


def test_two_fingers_pinch_to_zoom_about_their_midpoint_within_the_zoom_limits(
    server: Server, browser: Browser
) -> None:
    """There was no pinch zoom on a touch screen, only the zoom buttons. Two fingers spread zoom in as far as they
    spread, holding the picture's point under their midpoint there; the zoom is the buttons' and the label's (the
    zoom out button goes on from it), and stops at the wheel's limit of 3200%."""
    page = _phone_showing_a_result(browser, server)
    try:
        fitted = _stage(page)
        scrolled = _scroll_y(page)
        frame = page.locator("#frame").bounding_box()
        assert frame is not None
        centre = _frame_point(page, 0.25, 0.5)  # clear of the split, in the middle
        # The picture's point under the midpoint, in image pixels.
        image_x = (centre[0] - frame["x"] - fitted.x) / fitted.zoom
        image_y = (centre[1] - frame["y"] - fitted.y) / fitted.zoom
        _pinch(page, centre, 40, 120, drift=60)
        pinched = _stage(page)
        assert pinched.zoom == pytest.approx(fitted.zoom * 3, rel=0.02)
        # That point is where the midpoint went.
        assert frame["x"] + pinched.x + image_x * pinched.zoom == pytest.approx(centre[0], abs=2)
        assert frame["y"] + pinched.y + image_y * pinched.zoom == pytest.approx(centre[1] + 60, abs=2)
        assert _scroll_y(page) == scrolled
        device_pixels = page.evaluate("() => devicePixelRatio")
        expect(page.locator("#zoom-level")).to_have_text(f"{round(pinched.zoom * device_pixels * 100)}%")
        expect(page.locator("#zoom-said")).to_have_text(f"zoom {round(pinched.zoom * device_pixels * 100)}%")

        page.locator("#zoom-out").click()
        assert _stage(page).zoom == pytest.approx(pinched.zoom / 1.5, rel=1e-4)  # as the style writes it: 6 digits

        for _ in range(3):
            _pinch(page, _frame_point(page, 0.25, 0.5), 20, 200)
        assert _stage(page).zoom == 32
        expect(page.locator("#zoom-level")).to_have_text(f"{round(32 * device_pixels * 100)}%")
    finally:
        page.context.close()
