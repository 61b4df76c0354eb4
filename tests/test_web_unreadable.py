"""An upload whose header is whole but whose image cannot be read fails its job; the page says what a
web user can do about it, not the command line's "skip or replace this file"."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
import numpy as np
import tifffile
from cli_helpers import srfeat_cli
from playwright.sync_api import Browser, expect
from test_web import (
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    call,
    job_card,
    open_tab,
    png_bytes,
    server,  # noqa: F401  (the `server` fixture)
)

from srfeat.inference import Upscaler
from srfeat.web.job import Job, ModelChoice
from srfeat.web.worker import PageError, upscale_job


def test_an_upload_that_cannot_be_read_tells_the_web_user_to_upload_another(
    server: Server,  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    whole = png_bytes(40)
    cut = whole[: len(whole) // 2]  # the header, then the data stops: it passes the upload check
    tab = open_tab(browser, server)
    page = tab.page
    try:
        page.set_input_files("#files", files=[{"name": "cut.png", "mimeType": "image/png", "buffer": cut}])
        card = job_card(page, "cut.png")
        expect(card).to_have_attribute("data-state", "failed", timeout=120_000)
        status = card.locator(".status[role='alert']")
        expect(status).to_contain_text("cannot read image cut.png")
        expect(status).to_contain_text("; upload another file, or this one again if it was cut short")
        expect(status).not_to_contain_text("skip or replace")
        # Sending the same file again would fail again: its card offers no "Try again" (the page holds the file).
        expect(card.get_by_role("button")).to_have_text(["\u00d7"])  # its x alone
        assert page.evaluate("sentFiles.size") == 1
    finally:
        page.context.close()
    # the command line keeps its own advice: there the file can be skipped or replaced
    (tmp_path / "cut.png").write_bytes(cut)
    child = srfeat_cli("upscale", tmp_path / "cut.png", "-o", tmp_path / "out", "--device", "cpu")
    assert child.returncode == 1, child.stderr
    assert "cut.png: image file is truncated; skip or replace this file\n" in child.stderr, child.stderr


def test_a_card_of_an_unreadable_upload_the_server_forgot_still_says_to_upload_another(
    server: Server,  # noqa: F811
    browser: Browser,
) -> None:
    """A server that forgot a page's jobs (restarted, or the page away too long) turned each card into "the
    server no longer holds this image; add it again", the unreadable upload's too: adding that file again
    fails again. Its card keeps saying what is wrong and to upload another file; a readable image's card
    still offers to send it again."""
    whole = png_bytes(40)
    tab = open_tab(browser, server)
    page = tab.page
    try:
        page.set_input_files(
            "#files",
            files=[
                {"name": "cut.png", "mimeType": "image/png", "buffer": whole[: len(whole) // 2]},
                {"name": "fine.png", "mimeType": "image/png", "buffer": png_bytes(16)},
            ],
        )
        expect(job_card(page, "cut.png")).to_have_attribute("data-state", "failed", timeout=120_000)
        expect(job_card(page, "fine.png")).to_have_attribute("data-state", "done", timeout=120_000)
        session = page.evaluate("session")
        assert call(server, "POST", f"/api/sessions/{session}/close").status == 204  # the server forgets them
        fine = page.locator("#jobs li[data-state='failed']", has_text="fine.png")
        expect(fine.locator(".status")).to_contain_text(
            "no longer holds this image (it was restarted, or this page was away too long); "
            "this page still has it: try again"
        )
        cut = page.locator("#jobs li[data-state='failed']", has_text="cut.png")
        expect(cut).to_have_count(1)
        assert cut.get_attribute("data-job") is None  # the page's own card (forgotten in the same update as fine.png)
        status = cut.locator(".status[role='alert']")
        expect(status).to_contain_text("cannot read image cut.png")
        expect(status).to_contain_text("; upload another file")
        expect(status).not_to_contain_text("add it again")
        expect(cut.get_by_role("button")).to_have_text(["\u00d7"])  # no "Try again"
    finally:
        page.context.close()


def test_the_web_changes_only_the_advice_for_a_damaged_file(model_path: Path) -> None:
    """The page's message is built from the read error's parts (what went wrong, what to do): a damaged
    upload gets the page's advice after the problem, in place of the command line's; an error with advice
    of its own (a TIFF layout srfeat does not read: save it with 16 bits) keeps it, and the temporary
    file's path is the upload's name in both."""
    upscaler = Upscaler(model_path, device="cpu", tile=0)

    def web_error(name: str, data: bytes) -> str:
        job = Job(id="j", session="s", name=name, data=data, choice=ModelChoice(), width=8, height=8)
        with pytest.raises(PageError) as caught:
            upscale_job(upscaler, job)
        assert caught.value.upload_unreadable  # sending it again would fail again: its page offers no "Try again"
        return str(caught.value)

    whole = png_bytes(40)
    assert web_error("cut.png", whole[: len(whole) // 2]) == (
        "cannot read image cut.png: image file is truncated; upload another file, or this one again if it was cut short"
    )
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((6, 5, 3), np.float32), photometric="rgb")
    assert web_error("hdr.tif", buffer.getvalue()) == (
        "cannot read image hdr.tif: a TIFF of 3 sample(s) of 32-bit float per pixel, which srfeat does not read "
        "(it reads 8 and 16 bits, and 32-bit float grey); save it with 16 bits, as TIFF or PNG"
    )
