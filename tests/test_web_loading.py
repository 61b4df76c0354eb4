"""A setting whose network does not load as its page's job runs (the server loads only `default` as it starts):
the job fails, no longer loading, its card says so in one line and what its user can do, and the page takes
the next upload at once. Its JSON said `loading: true` to the end, and a damaged bundled model's error told
the page's user to copy the server's file again (its log now says to reinstall srfeat, where the file came from)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, Locator, expect
from test_web import (
    Server,
    Tab,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    call,
    face,  # noqa: F401  (the `face` fixture)
    job_card,
    open_tab,
    start_server,
    stop_server,
)
from test_web_out_of_memory import failed_job


def damaged_gan(folder: Path) -> str:
    """The server's prelude: the bundled models as it finds them in `folder`, `default` whole and `gan` cut in
    half (an install gone wrong)."""
    return f"""
import shutil
from pathlib import Path
import srfeat.weights
folder = Path({str(folder)!r})
shutil.copy(srfeat.weights.bundled_dir() / "default.safetensors", folder)
whole = (srfeat.weights.bundled_dir() / "gan.safetensors").read_bytes()
(folder / "gan.safetensors").write_bytes(whole[: len(whole) // 2])
srfeat.weights.bundled_dir = lambda: folder
"""


LOAD_FAILED = (
    "the server could not load the gan network; "
    "choose another setting, or ask whoever runs the server to look at its log"
)


def test_a_damaged_model_tells_the_page_it_did_not_load_and_the_log_why(tmp_path: Path) -> None:
    server = start_server(prelude=damaged_gan(tmp_path))
    job_id, job = failed_job(server, 16, "model=gan")
    assert job["error"] == LOAD_FAILED, job
    assert job["state"] == "failed" and job["loading"] is False, job
    errors = [line for line in server.log if line.startswith("ERROR")]
    reinstall = re.escape(
        "; it came with srfeat: restore it from srfeat's clone (git checkout -- srfeat/weights) or reinstall srfeat"
    )
    pattern = rf"ERROR: job {job_id} \(photo\.png\) failed: cannot read \S+/gan\.safetensors: .*{reinstall}"
    assert len(errors) == 1 and re.fullmatch(pattern, errors[0]), server.log_text()
    assert "Traceback" not in server.log_text()


def failed_gan_card(browser: Browser, server: Server, image: Path) -> tuple[Tab, Locator]:
    """A new tab of `server` that uploaded `image` with `gan` (which does not load), and its card, failed."""
    tab = open_tab(browser, server)
    tab.page.check("input[name='model'][value='gan']")
    tab.page.set_input_files("#files", str(image))
    failed = job_card(tab.page, f"{image.name} \u00b7 gan")
    expect(failed).to_have_attribute("data-state", "failed", timeout=120_000)
    return tab, failed


def test_a_setting_that_does_not_load_fails_its_card_and_the_page_goes_on(
    browser: Browser,
    face: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The page's whole path (one model that does not load stands for all: out of memory, the same path, is
    `test_web_out_of_memory`'s)."""
    server = start_server(prelude=damaged_gan(tmp_path))
    try:
        tab, failed = failed_gan_card(browser, server, face)
        page = tab.page
        status = failed.locator(".status")
        expect(status).to_have_attribute("role", "alert")
        expect(status).to_have_text(LOAD_FAILED)
        expect(page.locator("#jobs")).not_to_contain_text("loading the gan network")  # what a loading card says
        # Another setting, without reloading the page: the same image upscales.
        page.check("input[name='model'][value='default']")
        page.set_input_files("#files", str(face))
        expect(job_card(page, "face.png \u00b7 default")).to_have_attribute("data-state", "done", timeout=120_000)
        expect(status).to_have_text(LOAD_FAILED)  # the failed card stays as it was
        assert tab.console_errors == []
        page.context.close()
    finally:
        stop_server(server)


def test_a_card_that_failed_to_load_its_setting_tries_again_with_the_one_chosen_now(
    browser: Browser,
    face: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A failed card offered no way on: its user had to find the file and add it again. Its "Try again" sends the
    same file (the browser holds it; the server keeps no failed upload) with the detail chosen now, in its stead,
    by keyboard too."""
    server = start_server(prelude=damaged_gan(tmp_path))
    try:
        tab, failed = failed_gan_card(browser, server, face)
        page = tab.page
        failed_id = failed.get_attribute("data-job")
        try_again = failed.get_by_role("button", name="Try again with the chosen detail: face.png", exact=True)
        expect(try_again).to_be_visible()
        expect(failed.get_by_role("button", name="Compare face.png")).to_have_count(0)  # a done card's controls
        page.check("input[name='model'][value='default']")
        try_again.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#jobs li")).to_have_count(1)  # in the failed card's stead
        done = job_card(page, "face.png \u00b7 default")
        expect(done).to_have_attribute("data-state", "done", timeout=120_000)
        expect(page.locator(f"#jobs li[data-job='{failed_id}']")).to_have_count(0)
        expect(page.locator("#after")).to_have_js_property("naturalWidth", 4 * 48)  # its result, in the viewer
        # The keyboard's focus followed the image to its new card, from upload to job.
        assert done.evaluate("card => card.contains(document.activeElement)")
        # The failed job is gone from the server too, not only from the page.
        session = page.evaluate("session")
        jobs = json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
        assert [(job["label"], job["state"]) for job in jobs] == [("default", "done")], jobs
        assert tab.console_errors == []
        page.context.close()
    finally:
        stop_server(server)
