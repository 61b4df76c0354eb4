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
- `POST /api/jobs/ID/again?session=S&model=M[&strength=X]`: the same upload with another setting (201; 200 and
  the upload's job of that setting, where it has one already);
- `POST /api/jobs/ID/remove?session=S`; `GET /api/sessions/S/results.zip`.

Any other route or method is answered as the errors above are, JSON with one line (404, 405).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from functools import partial
from importlib import resources

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from srfeat.data.io import DECODE_ERRORS  # what a damaged file raises
from srfeat.errors import shown
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
from srfeat.web.receiving import (
    SESSION_ID,
    UPLOAD_POLL_SECONDS,
    bad_session,
    client_ref,
    read_body,
    session_checked,
    upload_too_large,
)
from srfeat.web.responses import (
    SECURITY_HEADERS,
    SessionEvents,
    attachment,
    error_response,
    mime_type,
    no_result,
    no_route,
)
from srfeat.web.views import ViewTooLargeError, bicubic_view, browser_view

logger = logging.getLogger(__name__)

__all__ = ["Limits", "create_app"]

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# A header every upload must carry: a page on another site cannot add it without the browser
# asking this server first (CORS), and this server never says yes.
UPLOAD_HEADER = "X-SRFeat-Upload"
# Upload bodies read at once. A body is held in memory as it arrives (up to --max-upload-mb), before
# the queue's --max-held-mb can count it: without a bound, N connections sending slowly would hold
# N times that. Further uploads wait, unread (flow control keeps their bytes with the client).
MAX_UPLOADS_RECEIVING = 4


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
        if name not in static:  # answered as the API's errors are (it was a plain "not found")
            return error_response(f"no such file: {name[:100]!r} (the page's files are {', '.join(static)})", 404)
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
            return error_response(bad_session(session), 400)
        if request.headers.get(UPLOAD_HEADER) != "1":
            return error_response(f"uploads must carry the {UPLOAD_HEADER} header (the page sends it)", 403)
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
                data = await read_body(request, name, limits, lambda: queue.stopping)
            finally:
                receiving.release()
            form = request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded")
            width, height, extension, keeps = await anyio.to_thread.run_sync(inspect_upload, data, name, limits, form)
            # Room in the queue is checked once the body is read (at most --max-upload-mb): a
            # client refused while still sending would see a broken connection, not the reason.
            job = queue.submit(session, name, data, choice, width, height, client_ref(request), extension, keeps)
        except (UploadError, QueueFullError) as refusal:
            logger.info("upload refused: %s", refusal)
            return error_response(str(refusal), refusal.status)
        except ClientDisconnect:  # a tab closed mid-upload: nobody is left to answer
            logger.info("upload of %s ended: the client went away before sending all of it", name)
            return Response(status_code=400)
        return JSONResponse(queue.describe(job), status_code=201)

    async def again(request: Request) -> Response:
        """The same upload once more with another setting (to compare settings on one image)."""
        job = _job(request)
        if request.headers.get(UPLOAD_HEADER) != "1":
            return error_response(f"requests must carry the {UPLOAD_HEADER} header (the page sends it)", 403)
        if job is None or not job.data:
            return error_response("that image is no longer here; upload it again", 404)
        try:
            check_parameters(request.query_params.multi_items(), AGAIN_PARAMETERS)
            choice = parse_choice(dict(request.query_params))
            copy, queued = queue.again(job, choice)
        except (UploadError, QueueFullError) as refusal:
            return error_response(str(refusal), refusal.status)
        # 200: the upload's job of that setting, which it has already (nothing was queued)
        return JSONResponse(queue.describe(copy), status_code=201 if queued else 200)

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
            return error_response(f"bytes must be the upload's size in bytes, got {shown(size)}", 400)
        if int(size) > limits.max_upload_bytes:  # the upload itself would be refused: no room would take it
            refusal = upload_too_large(name, limits)
            return error_response(str(refusal), refusal.status)
        try:
            queue.check_room(request.path_params["session"], name, int(size))
        except QueueFullError as refusal:
            return error_response(str(refusal), refusal.status)
        return Response(status_code=204)

    async def events(request: Request) -> Response:
        return SessionEvents(queue, request.path_params["session"])

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
        return error_response(
            "no such job in this session (removed already, or its page closed): nothing to remove", 404
        )

    async def image(request: Request) -> Response:
        job = _job(request)
        kind = request.path_params["kind"]
        if job is None or kind not in ("original", "bicubic", "result"):
            return error_response("no such image (the job was removed or its page closed)", 404)
        headers = dict(SECURITY_HEADERS)
        result = job.result
        data = job.data  # taken once: the worker frees it when a job fails or is cancelled
        if kind == "result" and result is not None:
            if request.query_params.get("download", "").lower() in ("1", "true", "yes"):
                headers["Content-Disposition"] = attachment(job.result_name)
                return Response(result, media_type=mime_type(job.result_name), headers=headers)
            make: Callable[[], tuple[bytes, str]] = partial(browser_view, result)
        elif kind != "original" and result is None:
            return no_result(job)
        elif not data:
            reason = f"its job {job.state}: {job.error}" if job.error else f"its job {job.state}"
            return error_response(f"the original of {job.name} is no longer held ({reason}); upload it again", 404)
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
                            return error_response(
                                f"the {kind} view of {job.name} was not finished: the server is stopping", 503
                            )
                        queue.keep_view(job, kind, built)  # refused past --max-held-mb
                    except (ViewTooLargeError, QueueFullError) as error:
                        logger.info("job %s (%s): no %s view: %s", job.id, job.name, kind, error)
                        return error_response(str(error), 507)
                    except DECODE_ERRORS as error:  # the header passed `inspect_upload`, the data is damaged
                        logger.info("job %s (%s): no %s view: %s", job.id, job.name, kind, error)
                        return error_response(f"{job.name} cannot be shown: the file does not decode ({error})", 422)
                    seconds = time.monotonic() - started
                    logger.info("job %s (%s): %s view built in %.2f s", job.id, job.name, kind, seconds)
        view, media_type = job.views[kind]
        return Response(view, media_type=media_type, headers=headers)

    async def results_zip(request: Request) -> Response:
        jobs = [job for job in queue.session_jobs(request.path_params["session"]) if job.result is not None]
        if not jobs:
            return error_response("no results to download yet", 404)
        headers = dict(SECURITY_HEADERS)
        headers["Content-Disposition"] = attachment("srfeat_results.zip")
        # Streamed, one result at a time: a zip built whole would be a second copy of every result,
        # once per request, beyond what --max-held-mb counts.
        return StreamingResponse(zip_chunks(jobs), media_type="application/zip", headers=headers)

    routes = [
        Route("/", page),
        Route("/static/{name}", page),
        Route("/api/config", config),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/sessions/{session}/jobs", session_checked(jobs)),
        Route("/api/sessions/{session}/room", session_checked(room)),
        Route("/api/sessions/{session}/events", session_checked(events)),
        Route("/api/sessions/{session}/leave", session_checked(leave), methods=["POST"]),
        Route("/api/sessions/{session}/close", session_checked(close), methods=["POST"]),
        Route("/api/sessions/{session}/results.zip", session_checked(results_zip)),
        Route("/api/jobs/{job}/remove", remove, methods=["POST"]),
        Route("/api/jobs/{job}/again", again, methods=["POST"]),
        Route("/api/jobs/{job}/{kind}", image),
    ]
    middleware = [] if allowed_hosts is None else [Middleware(LoopbackHostCheck, names=allowed_hosts)]
    handlers = {404: no_route, 405: no_route}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


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
