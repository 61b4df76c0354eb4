"""The Host-header check of a server that listens on a loopback address (DNS rebinding).

A page on another site can point its own name at 127.0.0.1 or ::1 (DNS rebinding); the browser
then sends that page's requests to this server as same-origin ones, so no header or CORS rule
stops them. What gives such a request away is its Host header, which names the other site. A
loopback server therefore serves only requests whose Host is a loopback address, `localhost`,
or a name it was told to accept.

Starlette's `TrustedHostMiddleware` cannot do this for IPv6: it cuts the header at the first
':', so `[::1]:8000` never matches. Hence this small parser of `host[:port]` and `[v6]:port`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostHeaderError", "LoopbackHostCheck", "is_loopback_host", "parse_host_header"]

# A registered name (RFC 3986 reg-name, as browsers send it: letters, digits, '-', '.', '_')
# or an IPv4 address; an IPv6 address comes in brackets and is matched apart.
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")


class HostHeaderError(ValueError):
    """A Host header that is not `host[:port]`; the message says what is wrong with it."""


def parse_host_header(value: str) -> tuple[str, int | None]:
    """(host, port) of a Host header: `name`, `name:port`, `1.2.3.4:port`, `[v6]` or `[v6]:port`.

    The host comes back lower-case and, for IPv6, without its brackets.
    """
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise HostHeaderError(f"{value!r} opens '[' without closing it")
        host, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HostHeaderError(f"{host!r} in brackets is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise HostHeaderError(f"{value!r} has {rest!r} after the IPv6 address")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
        if not _NAME.fullmatch(host):
            raise HostHeaderError(f"{value!r} is not a host name (an IPv6 address goes in brackets: [::1]:8000)")
    port = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
            raise HostHeaderError(f"{value!r} has no port number after ':' (0 to 65535)")
        port = int(port_text)
    return host.lower(), port


def is_loopback_host(host: str) -> bool:
    """Whether `host` (as `parse_host_header` returns it) is a loopback address or `localhost`."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # 127.0.0.1 written as IPv6 (a browser sends [::ffff:127.0.0.1] as [::ffff:7f00:1]), which Python
    # before 3.13 does not count as loopback: a server on --host ::ffff:127.0.0.1 refused its own page.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class LoopbackHostCheck:
    """ASGI middleware: 400 with a one-line reason unless the request's Host is a loopback
    address, `localhost` or one of `names` (say the name given to --host)."""

    def __init__(self, app: ASGIApp, names: Iterable[str] = ()) -> None:
        self.app = app
        self.names = frozenset(name.lower() for name in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
        reason = self.refusal(values)
        if reason is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def refusal(self, values: list[str]) -> str | None:
        """Why a request with these Host headers is refused (None: it is served)."""
        if len(values) != 1:
            return f"refused: a request needs exactly one Host header, this one has {len(values)}"
        try:
            host, _ = parse_host_header(values[0])
        except HostHeaderError as error:
            return f"refused: bad Host header: {error}"
        if host in self.names or is_loopback_host(host):
            return None
        return (
            f"refused: this server listens on this machine only and answers to localhost or its address, "
            f"not to {host!r} (a page elsewhere pointing its name here: DNS rebinding)"
        )
