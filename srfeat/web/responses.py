"""What the web app answers with (`srfeat.web.app` has the routes): the headers every answer carries, the API's
one-line JSON errors, a session's event stream, and a result's file type and download name."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from srfeat.data.io import FORMATS
from srfeat.web.jobs import Job, JobQueue

__all__ = [
    "SECURITY_HEADERS",
    "SessionEvents",
    "attachment",
    "error_response",
    "mime_type",
    "no_result",
    "no_route",
]

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
EVENT_KEEPALIVE_SECONDS = 1.0
EVENT_INTERVAL_SECONDS = 0.2  # how often a stream looks for news (updates are coalesced)


def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class SessionEvents(StreamingResponse):
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


async def no_route(request: Request, error: Exception) -> Response:
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


def no_result(job: Job) -> JSONResponse:
    if job.state in ("failed", "cancelled"):
        return error_response(f"{job.name} has no result: its job {job.state} ({job.error})", 404)
    return error_response(f"{job.name} has no result yet ({job.state})", 409)


def mime_type(name: str) -> str:
    extension = "." + name.rsplit(".", 1)[-1].lower()
    return MIME_TYPES.get(FORMATS.get(extension, ""), "application/octet-stream")


def attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
