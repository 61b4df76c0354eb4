"""The web app: one static page and a small JSON API over `JobQueue`.

Routes (all under the server's own origin; the page loads nothing from anywhere else; a session `S` is
`SESSION_ID`, 1 to 128 letters, digits, `.`, `_` or `-`, else 400):

- `GET /` and `/static/...`: the page, its script and style (package data, served from memory);
- `GET /api/config`: limits and the model choices;
- `POST /api/jobs?session=S&name=N&model=M[&strength=X][&ref=R]`: the image file as the request body;
  checked (size, that it is an image, its pixel count) before it is queued; any other parameter, or one
  given twice, is refused (400: it would have been ignored);
- `GET /api/sessions/S/jobs?page=P[&since=V][&hidden=1]`: the session's jobs and the queue's version `V`
  (only the version while it is still `since`), what the page asks every half second; a session
  lives while it is asked this (`hidden`: the page is hidden, its questions may come a minute
  apart), or while a client holds its event stream open, and its jobs are cancelled when it is not;
- `GET /api/sessions/S/events`: a stream of the session's jobs (server-sent events), for scripts;
- `GET /api/sessions/S/room?name=N&bytes=B`: 204 when an upload of B bytes would find room in the
  queue now, else its refusal (413 past the upload limit, 429, 503), so that a page holding an upload
  back sends it once;
- `POST /api/sessions/S/leave?page=P`: the page's goodbye (sent when the tab closes or reloads): ends
  the session unless a page other than `P` asks for it within `sessions.RELOAD_GRACE_SECONDS` (a reload);
- `POST /api/sessions/S/close`: ends the session at once (for scripts);
- `GET /api/jobs/ID/{original,bicubic,result}?session=S[&download=1]`: images (asking keeps the session alive too);
- `POST /api/jobs/ID/again?session=S&model=M[&strength=X]`: the same upload with another setting;
- `POST /api/jobs/ID/remove?session=S`; `GET /api/sessions/S/results.zip`.

Any other route or method is answered as the errors above are, JSON with one line (404, 405).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from functools import partial
from importlib import resources
from urllib.parse import quote

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from srfeat.data.io import DECODE_ERRORS, FORMATS  # DECODE_ERRORS: what a damaged file raises
from srfeat.web.hosts import LoopbackHostCheck
from srfeat.web.job import (
    AGAIN_PARAMETERS,
    UPLOAD_PARAMETERS,
    Limits,
    UploadError,
    check_parameters,
    inspect_upload,
    parse_choice,
    zip_chunks,
)
from srfeat.web.jobs import Job, JobQueue, QueueFullError, safe_file_name
from srfeat.web.views import ViewTooLargeError, bicubic_view, browser_view

logger = logging.getLogger(__name__)

__all__ = ["Limits", "create_app"]

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# The page's own origin only: no script, style, font or image from the internet, and no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}
# A header every upload must carry: a page on another site cannot add it without the browser
# asking this server first (CORS), and this server never says yes.
UPLOAD_HEADER = "X-SRFeat-Upload"
EVENT_KEEPALIVE_SECONDS = 1.0
# Upload bodies read at once. A body is held in memory as it arrives (up to --max-upload-mb), before
# the queue's --max-held-mb can count it: without a bound, N connections sending slowly would hold
# N times that. Further uploads wait, unread (flow control keeps their bytes with the client).
MAX_UPLOADS_RECEIVING = 4
UPLOAD_POLL_SECONDS = 0.25  # how often a waiting upload looks at the clock (--upload-timeout) and for Ctrl+C
EVENT_INTERVAL_SECONDS = 0.2  # how often a stream looks for news (updates are coalesced)
SESSION_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what names a session (the page's: 32 hex digits)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _bad_session(session: str) -> str:
    given = f"got {session[:40]!r}{'...' if len(session) > 40 else ''}" if session else "none was given"
    return f"a session id is 1 to 128 letters, digits, '.', '_' or '-' (the page makes one of 32 hex digits); {given}"


def _session_checked(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint`, answering 400 for a session id that is not `SESSION_ID` (it is printed in the server's
    log: a newline or a terminal's escape codes in it forged lines there, or rewrote the terminal)."""

    async def checked(request: Request) -> Response:
        session = request.path_params["session"]
        if SESSION_ID.fullmatch(session) is None:
            return _error(_bad_session(session), 400)
        return await endpoint(request)

    return checked


class _SessionEvents(StreamingResponse):
    """The session's event stream (for scripts; the page polls `/jobs`): the session counts as open while
    this response runs, as it does while it is polled."""

    def __init__(self, queue: JobQueue, session: str) -> None:
        super().__init__(self._events(), media_type="text/event-stream", headers=SECURITY_HEADERS)
        self._queue = queue
        self._session = session

    async def _events(self) -> AsyncIterator[str]:
        version, sent = -1, ""
        last_sent = time.monotonic()
        yield "retry: 1000\n\n"
        while not self._queue.stopping:  # the server is stopping: end, so that it need not wait
            if self._queue.version != version:
                version = self._queue.version
                text = json.dumps({"jobs": self._queue.describe_session(self._session)})
                # Any page's change moves the version: the page hears only of changes to its own list.
                if text != sent:
                    yield f"data: {text}\n\n"
                    sent, last_sent = text, time.monotonic()
            if time.monotonic() - last_sent > EVENT_KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"  # a closed tab shows up as a failed write
                last_sent = time.monotonic()
            await anyio.sleep(EVENT_INTERVAL_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._queue.stream_opened(self._session)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._queue.stream_closed(self._session)


def create_app(
    queue: JobQueue,
    limits: Limits,
    allowed_hosts: Collection[str] | None = None,
    device: str = "cpu",
) -> Starlette:
    """The Starlette app. `allowed_hosts` guards a loopback server against DNS rebinding: when
    given, only requests naming a loopback address, `localhost` or one of these names are served
    (None: any host, for a server open to the network)."""
    static = {name: (resources.files("srfeat.web") / "static" / name).read_bytes() for name in STATIC_FILES}
    receiving = anyio.Semaphore(MAX_UPLOADS_RECEIVING)
    # Views are built one at a time: the bicubic one needs about 50 bytes per pixel of the result
    # at its peak, so several pages asking at once could need several times that.
    building_view = anyio.Lock()

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in static:
            return Response("not found", status_code=404)
        return Response(static[name], media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    async def config(request: Request) -> Response:
        return JSONResponse(
            {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "models": ["default", "gan"],
                "device": device,
                "upload_header": UPLOAD_HEADER,
            }
        )

    async def submit(request: Request) -> Response:
        session = request.query_params.get("session", "")
        if SESSION_ID.fullmatch(session) is None:
            return _error(_bad_session(session), 400)
        if request.headers.get(UPLOAD_HEADER) != "1":
            return _error(f"uploads must carry the {UPLOAD_HEADER} header (the page sends it)", 403)
        name = safe_file_name(request.query_params.get("name", "image"))
        try:
            if request.headers.get("content-type", "").lower().startswith("multipart/"):
                raise UploadError(
                    f"{name} was sent as a form (multipart/form-data); this API takes the image file itself as "
                    "the request body (curl --data-binary @photo.png, not curl -F)",
                    415,
                )
            check_parameters(request.query_params.multi_items(), UPLOAD_PARAMETERS)
            choice = parse_choice(dict(request.query_params))
            try:
                receiving.acquire_nowait()
            except anyio.WouldBlock:  # the log says why this upload is slow to start
                logger.info(
                    "upload of %s waits: %d others are being received, the most read at once",
                    name,
                    MAX_UPLOADS_RECEIVING,
                )
                await receiving.acquire()
            try:
                data = await _read_body(request, name, limits, lambda: queue.stopping)
            finally:
                receiving.release()
            form = request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded")
            width, height, extension = await anyio.to_thread.run_sync(inspect_upload, data, name, limits, form)
            # Room in the queue is checked once the body is read (at most --max-upload-mb): a
            # client refused while still sending would see a broken connection, not the reason.
            job = queue.submit(session, name, data, choice, width, height, _client_ref(request), extension)
        except (UploadError, QueueFullError) as refusal:
            logger.info("upload refused: %s", refusal)
            return _error(str(refusal), refusal.status)
        except ClientDisconnect:  # a tab closed mid-upload: nobody is left to answer
            logger.info("upload of %s ended: the client went away before sending all of it", name)
            return Response(status_code=400)
        return JSONResponse(queue.describe(job), status_code=201)

    async def again(request: Request) -> Response:
        """The same upload once more with another setting (to compare settings on one image)."""
        job = _job(request)
        if request.headers.get(UPLOAD_HEADER) != "1":
            return _error(f"requests must carry the {UPLOAD_HEADER} header (the page sends it)", 403)
        if job is None or not job.data:
            return _error("that image is no longer here; upload it again", 404)
        try:
            check_parameters(request.query_params.multi_items(), AGAIN_PARAMETERS)
            choice = parse_choice(dict(request.query_params))
            copy = queue.again(job, choice)
        except (UploadError, QueueFullError) as refusal:
            return _error(str(refusal), refusal.status)
        return JSONResponse(queue.describe(copy), status_code=201)

    async def jobs(request: Request) -> Response:
        # Asked, not streamed: a page that held a stream open held one of the 6 connections a browser
        # allows per server (HTTP/1.1) for as long as it was open, and a 7th tab never loaded (`app.js`).
        hidden = request.query_params.get("hidden") == "1"
        since = request.query_params.get("since", "")
        page = request.query_params.get("page", "")
        version, described = queue.poll(request.path_params["session"], page, hidden, since)
        answer = (
            {"version": version, "unchanged": True} if described is None else {"version": version, "jobs": described}
        )
        return JSONResponse(answer, headers=SECURITY_HEADERS)

    async def room(request: Request) -> Response:
        name = safe_file_name(request.query_params.get("name", "image"))
        size = request.query_params.get("bytes", "")
        if re.fullmatch(r"[0-9]{1,15}", size) is None:
            return _error(f"bytes must be the upload's size in bytes, got {size!r}", 400)
        if int(size) > limits.max_upload_bytes:  # the upload itself would be refused: no room would take it
            refusal = _too_large(name, limits)
            return _error(str(refusal), refusal.status)
        try:
            queue.check_room(request.path_params["session"], name, int(size))
        except QueueFullError as refusal:
            return _error(str(refusal), refusal.status)
        return Response(status_code=204)

    async def events(request: Request) -> Response:
        return _SessionEvents(queue, request.path_params["session"])

    async def leave(request: Request) -> Response:
        queue.session_leaving(request.path_params["session"], request.query_params.get("page", ""))
        return Response(status_code=204)

    async def close(request: Request) -> Response:
        queue.close_session(request.path_params["session"], "its page was closed")
        return Response(status_code=204)

    def _job(request: Request) -> Job | None:
        return queue.get(request.query_params.get("session", ""), request.path_params["job"])

    async def remove(request: Request) -> Response:
        session = request.query_params.get("session", "")
        if queue.remove(session, request.path_params["job"]):
            return Response(status_code=204)
        # A script was answered 404 and nothing else: a wrong id and a job already gone looked like a broken server.
        return _error("no such job in this session (removed already, or its page closed): nothing to remove", 404)

    async def image(request: Request) -> Response:
        job = _job(request)
        kind = request.path_params["kind"]
        if job is None or kind not in ("original", "bicubic", "result"):
            return _error("no such image (the job was removed or its page closed)", 404)
        headers = dict(SECURITY_HEADERS)
        result = job.result
        data = job.data  # taken once: the worker frees it when a job fails or is cancelled
        if kind == "result" and result is not None:
            if request.query_params.get("download", "").lower() in ("1", "true", "yes"):
                headers["Content-Disposition"] = _attachment(job.result_name)
                return Response(result, media_type=_mime(job.result_name), headers=headers)
            make: Callable[[], tuple[bytes, str]] = partial(browser_view, result)
        elif kind != "original" and result is None:
            return _no_result(job)
        elif not data:
            reason = f"its job {job.state}: {job.error}" if job.error else f"its job {job.state}"
            return _error(f"the original of {job.name} is no longer held ({reason}); upload it again", 404)
        elif kind == "original":
            make = partial(browser_view, data, "original")
        else:
            make = partial(bicubic_view, data, job.result_width, job.result_height)
        if kind not in job.views:
            async with building_view:
                if kind not in job.views:  # not built while this request waited
                    started = time.monotonic()
                    try:
                        built = await _unless_stopping(make, lambda: queue.stopping)
                        if built is None:
                            return _error(
                                f"the {kind} view of {job.name} was not finished: the server is stopping", 503
                            )
                        queue.keep_view(job, kind, built)  # refused past --max-held-mb
                    except (ViewTooLargeError, QueueFullError) as error:
                        logger.info("job %s (%s): no %s view: %s", job.id, job.name, kind, error)
                        return _error(str(error), 507)
                    except DECODE_ERRORS as error:  # the header passed `inspect_upload`, the data is damaged
                        logger.info("job %s (%s): no %s view: %s", job.id, job.name, kind, error)
                        return _error(f"{job.name} cannot be shown: the file does not decode ({error})", 422)
                    seconds = time.monotonic() - started
                    logger.info("job %s (%s): %s view built in %.2f s", job.id, job.name, kind, seconds)
        view, media_type = job.views[kind]
        return Response(view, media_type=media_type, headers=headers)

    async def results_zip(request: Request) -> Response:
        jobs = [job for job in queue.session_jobs(request.path_params["session"]) if job.result is not None]
        if not jobs:
            return _error("no results to download yet", 404)
        headers = dict(SECURITY_HEADERS)
        headers["Content-Disposition"] = _attachment("srfeat_results.zip")
        # Streamed, one result at a time: a zip built whole would be a second copy of every result,
        # once per request, beyond what --max-held-mb counts.
        return StreamingResponse(zip_chunks(jobs), media_type="application/zip", headers=headers)

    routes = [
        Route("/", page),
        Route("/static/{name}", page),
        Route("/api/config", config),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/sessions/{session}/jobs", _session_checked(jobs)),
        Route("/api/sessions/{session}/room", _session_checked(room)),
        Route("/api/sessions/{session}/events", _session_checked(events)),
        Route("/api/sessions/{session}/leave", _session_checked(leave), methods=["POST"]),
        Route("/api/sessions/{session}/close", _session_checked(close), methods=["POST"]),
        Route("/api/sessions/{session}/results.zip", _session_checked(results_zip)),
        Route("/api/jobs/{job}/remove", remove, methods=["POST"]),
        Route("/api/jobs/{job}/again", again, methods=["POST"]),
        Route("/api/jobs/{job}/{kind}", image),
    ]
    middleware = [] if allowed_hosts is None else [Middleware(LoopbackHostCheck, names=allowed_hosts)]
    handlers = {404: _no_route, 405: _no_route}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


async def _no_route(request: Request, error: Exception) -> Response:
    """A request no route takes, answered as the API's other errors are (JSON, one line saying what to do):
    a script got Starlette's plain "Not Found" or "Method Not Allowed", which named neither the route nor the fix."""
    method, path = request.method, request.url.path[:100]
    if not isinstance(error, HTTPException):  # registered for 404 and 405, which Starlette raises as HTTPException
        raise error
    if error.status_code == 405:
        # Allow is built from a set (its order changes from run to run) and names HEAD beside every GET.
        methods = sorted(m.strip() for m in (error.headers or {}).get("Allow", "").split(",") if m.strip() != "HEAD")
        allowed = " or ".join(methods) or "another method"
        message = f"{path} does not take {method}: use {allowed} (the routes are listed in srfeat/web/app.py)"
    else:
        message = f"no such route: {method} {path} (the routes are listed in srfeat/web/app.py)"
    return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)


async def _unless_stopping(
    make: Callable[[], tuple[bytes, str]], stopping: Callable[[], bool]
) -> tuple[bytes, str] | None:
    """`make()` in a worker thread, or None as soon as the server is stopping: Ctrl+C then answers
    at once, instead of cancelling the request with a traceback and a 500 after uvicorn's 5 s of
    graceful shutdown. The thread cannot be stopped; it finishes unseen, before the process exits."""
    outcome: list[tuple[bytes, str] | BaseException] = []

    def attempt() -> None:
        try:
            outcome.append(make())
        except Exception as error:  # noqa: BLE001 - raised below, as it is (a task group would wrap it)
            outcome.append(error)

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while not stopping():
                await anyio.sleep(UPLOAD_POLL_SECONDS)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await anyio.to_thread.run_sync(attempt, abandon_on_cancel=True)
        group.cancel_scope.cancel()  # built: the watch ends
    if not outcome:
        return None
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _too_large(name: str, limits: Limits) -> UploadError:
    return UploadError(
        f"{name} is larger than this server's upload limit of {limits.max_upload_bytes / 2**20:g} MB "
        "(start the server with a larger --max-upload-mb)",
        413,
    )


async def _read_body(request: Request, name: str, limits: Limits, stopping: Callable[[], bool]) -> bytes:
    """The request's body, refused past `limits.max_upload_bytes`, when the client sends nothing for
    `limits.upload_timeout_seconds` (a stalled body would hold one of the few receiving slots forever),
    or when the server is stopping (Ctrl+C need not wait for a slow upload)."""
    limit, too_large = limits.max_upload_bytes, _too_large(name, limits)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    last_arrived = time.monotonic()
    while True:
        # ASGI's receive, not Request.stream(): a wait for the next piece can be given up and taken
        # up again (to look at the clock and at Ctrl+C) without losing anything.
        with anyio.move_on_after(UPLOAD_POLL_SECONDS):
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            last_arrived = time.monotonic()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            continue
        if stopping():
            raise UploadError(f"{name} was not taken: the server is stopping", 503)
        if time.monotonic() - last_arrived > limits.upload_timeout_seconds:
            raise UploadError(
                f"{name} stopped arriving: nothing came for {limits.upload_timeout_seconds:g} s "
                "(this server's --upload-timeout); send it again",
                408,
            )


def _client_ref(request: Request) -> str:
    """The page's own name for an upload (`ref`), echoed in the job's description; letters, digits,
    `.`, `_` and `-` only, at most 64 (anything else is dropped: it is only a label)."""
    ref = request.query_params.get("ref", "")
    return ref if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", ref) else ""


def _no_result(job: Job) -> JSONResponse:
    if job.state in ("failed", "cancelled"):
        return _error(f"{job.name} has no result: its job {job.state} ({job.error})", 404)
    return _error(f"{job.name} has no result yet ({job.state})", 409)


def _mime(name: str) -> str:
    extension = "." + name.rsplit(".", 1)[-1].lower()
    return MIME_TYPES.get(FORMATS.get(extension, ""), "application/octet-stream")


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
