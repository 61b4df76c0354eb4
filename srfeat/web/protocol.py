"""The HTTP/1.1 protocol `srfeat serve` runs uvicorn with: uvicorn's h11 one, answering a request that is not
valid HTTP as the API's errors are (JSON, one line saying what to do).

uvicorn answers a request line, header or chunked body it cannot parse before any route sees it, with a
plain-text "Invalid HTTP request received.": the one error of the server that was not JSON, and it named
nothing to do. h11 is chosen over httptools (uvicorn's pick when installed) so that this answer is the same
on every machine.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["INVALID_REQUEST", "JsonErrorH11Protocol"]

INVALID_REQUEST = (
    "the request is not valid HTTP/1.1 (a malformed request line, header, Content-Length or chunked body): "
    "send it as a browser, curl or an HTTP library does"
)


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        """uvicorn's own (`msg` is its log line, already logged), with the API's JSON body."""
        body = json.dumps({"error": INVALID_REQUEST}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
