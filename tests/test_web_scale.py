"""`srfeat serve` past one page and one small image: results too large to convert for the browser's viewer.

Helpers and the browser come from test_web.py; this module starts its own servers.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from playwright.sync_api import Browser, expect
from test_web import (
    browser_fixture,  # noqa: F401  (the `browser` fixture)
    job_card,
    png_bytes,
    start_server,
    stop_server,
)

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
