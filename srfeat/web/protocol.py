"""The HTTP/1.1 protocol `srfeat serve` runs uvicorn with, and what it does when connections run out.

uvicorn's h11 protocol, with two changes a local server needs (every request is untrusted: other users
of the machine, and pages in its browser, can reach it):

- a request uvicorn cannot parse (a request line, header or chunked body) is answered as the API's errors
  are, JSON with one line saying what to do; it was a plain-text "Invalid HTTP request received.";
- a connection that has not sent a whole request head within `REQUEST_HEAD_SECONDS` of opening (or of
  its last answer) is closed: uvicorn kept it open for as long as the client liked, so a few hundred
  connections that sent nothing, or a header a minute, held every file descriptor the process had, and
  no other request was accepted.

h11 is chosen over httptools (uvicorn's pick when installed) so that both hold on every machine. When the
process runs out of file descriptors all the same, asyncio's traceback per
refused connection (tens of thousands a minute) one warning line every `ACCEPT_ERROR_LOG_SECONDS`
(`BriefAcceptErrors`), and `raise_open_files_limit` makes that less likely.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from srfeat.web.responses import error_response

__all__ = ["INVALID_REQUEST", "REQUEST_HEAD_SECONDS", "BriefAcceptErrors", "ServeH11Protocol", "raise_open_files_limit"]

logger = logging.getLogger(__name__)

INVALID_REQUEST = (
    "the request is not valid HTTP/1.1 (a malformed request line, header, Content-Length or chunked body): "
    "send it as a browser, curl or an HTTP library does"
)
# Long for a browser or a script on this machine or a LAN (a request head is a few hundred bytes);
# a browser's idle preconnected sockets closed by it are opened again when needed.
REQUEST_HEAD_SECONDS = 10.0
ACCEPT_ERROR_LOG_SECONDS = 10.0
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ServeH11Protocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._await_request_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_request_head()  # the next request on this connection has as long

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _await_request_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(REQUEST_HEAD_SECONDS, self._close_unless_asked, self.cycle)

    def _close_unless_asked(self, cycle_then: RequestResponseCycle | None) -> None:
        """Closes the connection unless a request began (a new cycle) since the timer was set."""
        self._head_timer = None
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's own (`msg` is its log line, already logged), with the API's JSON body, as its other errors
        render it."""
        body = bytes(error_response(INVALID_REQUEST, 400).body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


class BriefAcceptErrors:
    """A loop's exception handler: asyncio logs a traceback for each connection it cannot accept for want of
    file descriptors (and tries again every second, for each one waiting); those become one warning every
    ACCEPT_ERROR_LOG_SECONDS. Anything else goes to asyncio's own handler."""

    def __init__(self) -> None:
        self.last_logged = -ACCEPT_ERROR_LOG_SECONDS

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not isinstance(error, OSError) or error.errno not in OUT_OF_DESCRIPTORS:
            loop.default_exception_handler(context)
            return
        if time.monotonic() - self.last_logged >= ACCEPT_ERROR_LOG_SECONDS:
            self.last_logged = time.monotonic()
            logger.warning(
                "new connections wait: this process has too many open (%s); they are accepted as others close",
                error.strerror,
            )


def raise_open_files_limit() -> None:
    """The soft limit on open files raised to the hard one (often 1024 of 524288 on Linux): each
    connection, open page and upload holds one."""
    try:
        import resource  # POSIX only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # refused (macOS caps it below the hard limit): the soft one stays
            pass
