"""`srfeat serve` asked what no page sends: query parameters it does not take, routes it does not have, and
images past PIL's own decompression-bomb limit. Each is refused in one line that says what to do."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from PIL import Image
from test_web import (
    Server,
    _environment,
    _png_header_only,
    call,
    png_bytes,
    start_server,
    stop_server,
    upload,
    wait_for_result,
)

from srfeat.web.job import Limits, UploadError, inspect_upload


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = start_server()
    yield started
    stop_server(started)


def test_an_image_past_pils_bomb_limit_is_refused_as_over_the_servers_limit() -> None:
    """Past twice PIL's MAX_IMAGE_PIXELS, PIL refuses an image before the server's own check: the page said
    "(Image size (900000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb DOS attack.)",
    PIL's limit, not the server's, and nothing of what to do."""
    limits = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
    with pytest.raises(UploadError) as refused:
        inspect_upload(_png_header_only(30000, 30000), "bomb.png", limits)
    assert refused.value.status == 413
    assert str(refused.value) == (
        "bomb.png is 900 megapixels, over this server's limit of 16 megapixels per image (a photo too large, "
        "or a file made to take all memory: start the server with a larger --max-megapixels)"
    )


@pytest.mark.parametrize("pil_limit", [None, 2 * 10**10])  # PIL's default, or raised by a server started for more
def test_an_image_past_the_largest_limit_a_server_takes_is_told_what_to_do(monkeypatch, pil_limit) -> None:
    """Past --max-megapixels's top (10,000), the refusal said to start the server with a larger --max-megapixels,
    which no value of it would take."""
    if pil_limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    limits = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
    with pytest.raises(UploadError) as refused:
        inspect_upload(_png_header_only(200_000, 60_000), "huge.png", limits)
    assert refused.value.status == 413
    assert str(refused.value).endswith(
        "over this server's limit of 16 megapixels per image (a photo too large, or a file made to take all memory: "
        "downscale it or cut it into parts first: no server takes it (--max-megapixels goes up to 10,000))"
    ), str(refused.value)
    assert "12,000 megapixels" in str(refused.value) or "200000x60000" in str(refused.value)
    with pytest.raises(UploadError, match="start the server with a larger --max-megapixels"):  # one a server takes
        inspect_upload(_png_header_only(100_000, 100_000), "large.png", limits)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("outscale=2", "unknown parameter 'outscale': this request takes session, name, ref, model, strength"),
        ("strenght=0.3", "unknown parameter 'strenght'"),  # a typo ran the default model without a word
        ("tta=1&tile=64", "unknown parameters 'tta', 'tile'"),
        ("strength=0.3&strength=0.9", "strength was given more than once ('0.3', '0.9'); give it once"),
        ("model=gan&model=default", "model was given more than once"),
    ],
)
def test_an_upload_with_a_parameter_it_would_ignore_is_refused(server: Server, query: str, expected: str) -> None:
    """Parameters the upload does not take were ignored, and of one given twice the last was taken: a script
    asking for `outscale=2` or `strenght=0.3` got the default model's 4x and no word of why."""
    refused = upload(server, "params", "photo.png", png_bytes(16), query)
    assert refused.status == 400, refused.body
    assert expected in refused.error()
    assert "results are always 4x" in refused.error() or "give it once" in refused.error()
    assert json.loads(call(server, "GET", "/api/sessions/params/jobs").body)["jobs"] == []  # nothing was queued


def test_a_long_refused_value_is_quoted_cut_short(server: Server) -> None:
    """A strength or a room size of thousands of characters was quoted whole: the error line was as long."""
    refused = upload(server, "long-values", "photo.png", png_bytes(16), "strength=" + "9" * 3000 + "x")
    assert refused.status == 400, refused.body
    assert "strength must be a number from 0 to 1, got '999" in refused.error() and len(refused.error()) < 200
    room = call(server, "GET", "/api/sessions/long-values/room?bytes=" + "1" * 3000)
    assert room.status == 400, room.body
    assert "bytes must be the upload's size in bytes, got '111" in room.error() and len(room.error()) < 200


def test_again_with_a_parameter_it_would_ignore_is_refused(server: Server) -> None:
    session = "again-params"
    try:
        job = json.loads(upload(server, session, "photo.png", png_bytes(16)).body)
        assert wait_for_result(server, session, job["id"]).status == 200
        path = f"/api/jobs/{job['id']}/again?session={session}&model=default"
        refused = call(server, "POST", path + "&strength=0.5&outscale=2", X_SRFeat_Upload="1")
        assert refused.status == 400, refused.body
        assert "unknown parameter 'outscale': this request takes session, model, strength" in refused.error()
        assert call(server, "POST", path + "&strength=0.5", X_SRFeat_Upload="1").status == 201  # the same, without
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_again_with_a_setting_the_upload_has_a_job_of_answers_with_that_job(server: Server) -> None:
    """`again` with the setting of a job the upload has already ran that job again: the same network on the
    same file, the same result. It answers 200 with that job now, and queues nothing; another setting, 201."""
    session = "again-same"
    try:
        job = json.loads(upload(server, session, "photo.png", png_bytes(16)).body)
        path = f"/api/jobs/{job['id']}/again?session={session}"
        same = call(server, "POST", path + "&model=default", X_SRFeat_Upload="1")
        assert (same.status, json.loads(same.body)["id"]) == (200, job["id"]), same.body
        gan = call(server, "POST", path + "&model=gan", X_SRFeat_Upload="1")
        assert gan.status == 201, gan.body
        gan_id = json.loads(gan.body)["id"]
        again_from_gan = f"/api/jobs/{gan_id}/again?session={session}&model=default"
        for asked in (path + "&model=gan", again_from_gan):  # either card's "again" finds the other's setting
            answer = call(server, "POST", asked, X_SRFeat_Upload="1")
            assert answer.status == 200, answer.body
        assert json.loads(call(server, "POST", path + "&model=gan", X_SRFeat_Upload="1").body)["id"] == gan_id
        strength = call(server, "POST", path + "&model=default&strength=0.5", X_SRFeat_Upload="1")
        assert strength.status == 201, strength.body  # a setting of its own
        jobs = json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
        assert sorted(job["label"] for job in jobs) == ["default", "gan", "strength 0.50"]
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/api/jobs", 405, "/api/jobs does not take GET: use POST (the routes are listed in srfeat/web/app.py)"),
        ("POST", "/api/config", 405, "/api/config does not take POST: use GET"),
        ("GET", "/api/sessions/s/result.zip", 404, "no such route: GET /api/sessions/s/result.zip (the routes are"),
        ("GET", "/api", 404, "no such route: GET /api"),
    ],
)
def test_a_route_or_method_the_api_lacks_is_a_one_line_json_error(
    server: Server, method: str, path: str, status: int, expected: str
) -> None:
    """Starlette answered these in plain text, "Not Found" or "Method Not Allowed": a script reading the
    API's JSON errors failed to parse it, and neither named the route or what to use instead."""
    answer = call(server, method, path)
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.error().startswith(expected), answer.error()


def _jpeg_bytes(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(size))).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("photo.png", png_bytes),
        # A JPEG's size is read before the line breaks curl -d drops matter: it was queued, and failed as damaged.
        ("photo.jpg", _jpeg_bytes),
    ],
)
def test_an_image_sent_by_curl_d_is_told_to_use_data_binary(
    server: Server, name: str, make: Callable[[int], bytes]
) -> None:
    """`curl -d @photo.png`, the form-data habit, drops the file's line breaks and labels it form data: the PNG
    no longer opened and the user of a PNG was told to "use PNG, JPEG, WebP, TIFF or BMP"."""
    session, form = "form", "application/x-www-form-urlencoded"
    try:
        whole = make(16)
        as_curl_d_sends_it = whole.replace(b"\r", b"").replace(b"\n", b"")
        assert as_curl_d_sends_it != whole
        refused = upload(server, session, name, as_curl_d_sends_it, Content_Type=form)
        assert refused.status == 415
        assert refused.error() == (
            f"{name} does not open as an image as it arrived: it was sent as form data "
            "(application/x-www-form-urlencoded), as curl -d sends a file, with its line breaks dropped; "
            f"send the file itself: curl --data-binary @{name}"
        )
        # Python's urllib labels any body so: an image that arrived whole is taken whatever its label.
        assert upload(server, session, name, whole, Content_Type=form).status == 201
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")


def test_an_image_with_no_line_break_bytes_sent_as_form_data_is_taken() -> None:
    """The curl -d hint is for a form-labelled body with no CR or LF byte that does not decode: one that has
    none and decodes (a flat bitmap, sent by curl --data-binary, which labels it form data too) is taken."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buffer, format="BMP")
    data = buffer.getvalue()
    assert b"\r" not in data and b"\n" not in data
    limits = Limits(max_upload_bytes=2**20, max_pixels=16_000_000)
    assert inspect_upload(data, "flat.bmp", limits, sent_as_form=True) == (16, 16, ".bmp", ())


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://127.0.0.1:8000/", "it is a URL; give the address alone: --host 127.0.0.1 --port 8000"),
        ("127.0.0.1:8000", "it names a port; give that with --port: --host 127.0.0.1 --port 8000"),
        ("[::1]", "give an IPv6 address without its brackets: --host ::1"),
        ("[::1]:8000", "give an IPv6 address without its brackets: --host ::1 --port 8000"),
    ],
)
def test_a_host_written_as_more_than_an_address_is_told_what_to_give(host: str, expected: str) -> None:
    """A URL, an address with its port, or IPv6 in brackets (as a browser writes them) went to the resolver:
    "Name or service not known; give an address such as 127.0.0.1", which does not say what was wrong."""
    command = [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser", "--device", "cpu", "--host", host]
    run = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=120, check=False)
    assert run.returncode == 1 and run.stdout == ""  # it never listened
    assert run.stderr.strip() == f"ERROR: cannot listen on host {host!r}: {expected}"


def test_removing_a_job_that_is_not_there_says_so(server: Server) -> None:
    """A remove of a job id that never existed, or of another session's job, was answered 404 with no body."""
    session = "removing"
    try:
        job = json.loads(upload(server, session, "photo.png", png_bytes(16)).body)
        for path in (
            f"/api/jobs/{job['id']}/remove?session=another",
            f"/api/jobs/no-such-job/remove?session={session}",
        ):
            answer = call(server, "POST", path)
            assert answer.status == 404 and answer.error() == (
                "no such job in this session (removed already, or its page closed): nothing to remove"
            )
        assert call(server, "POST", f"/api/jobs/{job['id']}/remove?session={session}").status == 204
    finally:
        call(server, "POST", f"/api/sessions/{session}/close")
