"""What an API request brings, checked: its session id, and an upload's body, read within the server's limits
(`srfeat.web.app` has the routes)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from srfeat.web.job import Limits, UploadError
from srfeat.web.responses import error_response

__all__ = [
    "SESSION_ID",
    "UPLOAD_POLL_SECONDS",
    "bad_session",
    "client_ref",
    "read_body",
    "session_checked",
    "upload_too_large",
]

UPLOAD_POLL_SECONDS = 0.25  # how often a waiting upload looks at the clock (--upload-timeout) and for Ctrl+C
# Past --upload-timeout, an upload must have averaged this much to go on (mod_reqtimeout's rule, with a floor
# fit for a slow network link): only stalling was dropped, so four connections each sending a byte every
# few seconds held every receiving place for as long as they liked, and no other upload was read.
UPLOAD_MIN_BYTES_PER_SECOND = 16 * 1024
SESSION_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # what names a session (the page's: 32 hex digits)


def bad_session(session: str) -> str:
    given = f"got {session[:40]!r}{'...' if len(session) > 40 else ''}" if session else "none was given"
    return f"a session id is 1 to 128 letters, digits, '.', '_' or '-' (the page makes one of 32 hex digits); {given}"


def session_checked(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint`, answering 400 for a session id that is not `SESSION_ID` (it is printed in the server's
    log: a newline or a terminal's escape codes in it forged lines there, or rewrote the terminal)."""

    async def checked(request: Request) -> Response:
        session = request.path_params["session"]
        if SESSION_ID.fullmatch(session) is None:
            return error_response(bad_session(session), 400)
        return await endpoint(request)

    return checked


def upload_too_large(name: str, limits: Limits) -> UploadError:
    return UploadError(
        f"{name} is larger than this server's upload limit of {limits.max_upload_bytes / 2**20:g} MB "
        "(start the server with a larger --max-upload-mb)",
        413,
    )


async def read_body(request: Request, name: str, limits: Limits, stopping: Callable[[], bool]) -> bytes:
    """The request's body, refused past `limits.max_upload_bytes`, when the client sends nothing for
    `limits.upload_timeout_seconds` (a stalled body would hold one of the few receiving slots forever),
    when it arrives slower than `UPLOAD_MIN_BYTES_PER_SECOND` once that time is up (a trickle would hold its
    slot as long as a stalled body would), or when the server is stopping (Ctrl+C need not wait for a slow upload)."""
    limit, too_large = limits.max_upload_bytes, upload_too_large(name, limits)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    started = last_arrived = time.monotonic()
    while True:
        # Looked at before each piece, not only when one is late: a byte every tenth of a second is never late.
        if time.monotonic() - started > limits.upload_timeout_seconds + size / UPLOAD_MIN_BYTES_PER_SECOND:
            raise UploadError(
                f"{name} arrived too slowly: {size:,} bytes in {time.monotonic() - started:.0f} s, under "
                f"{UPLOAD_MIN_BYTES_PER_SECOND // 1024} KB/s once this server's --upload-timeout of "
                f"{limits.upload_timeout_seconds:g} s had passed; send it again over a faster connection",
                408,
            )
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


def client_ref(request: Request) -> str:
    """The page's own name for an upload (`ref`), echoed in the job's description; letters, digits,
    `.`, `_` and `-` only, at most 64 (anything else is dropped: it is only a label)."""
    ref = request.query_params.get("ref", "")
    return ref if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", ref) else ""
