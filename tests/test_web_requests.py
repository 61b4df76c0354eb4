"""`srfeat serve` asked what no page sends: query parameters it does not take, routes it does not have, and
images past PIL's own decompression-bomb limit. Each is refused in one line that says what to do."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from test_web import _png_header_only

from srfeat.web.job import Limits, UploadError, inspect_upload


def test_an_image_past_pils_bomb_limit_is_refused_as_over_the_servers_limit() -> None:
    """Past twice PIL's MAX_IMAGE_PIXELS, PIL refuses an image before the server's own check: the page said
    "(Image size (900000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb DOS attack.)",
    PIL's limit, not the server's, and nothing of what to do."""
    limits = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
    with pytest.raises(UploadError) as refused:
        inspect_upload(_png_header_only(30000, 30000), "bomb.png", limits)
    assert refused.value.status == 413
    assert str(refused.value) == (
        "bomb.png is 900 megapixels, over this server's limit of 16 megapixels per image (a decompression bomb, "
        "or a photo too large: start the server with a larger --max-megapixels)"
    )
