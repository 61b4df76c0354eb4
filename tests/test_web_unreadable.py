"""An upload whose header is whole but whose image cannot be read fails its job; the page says what a
web user can do about it, not the command line's "skip or replace this file"."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from cli_helpers import srfeat_cli
from playwright.sync_api import Browser, expect
from test_web import (
    Server,
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    job_card,
    open_tab,
    png_bytes,
    server,  # noqa: F401  (the `server` fixture)
)


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
    finally:
        page.context.close()
    # the command line keeps its own advice: there the file can be skipped or replaced
    (tmp_path / "cut.png").write_bytes(cut)
    child = srfeat_cli("upscale", tmp_path / "cut.png", "-o", tmp_path / "out", "--device", "cpu")
    assert child.returncode == 1, child.stderr
    assert "cut.png: image file is truncated; skip or replace this file\n" in child.stderr, child.stderr
