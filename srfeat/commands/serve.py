"""`srfeat serve`: the local web app (drop images, compare before/after, download).

The web stack (Starlette, uvicorn) is an optional extra, imported only when this command runs,
so `srfeat --help` and the other commands work without it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
import ipaddress
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import urllib.parse
import webbrowser
from types import FrameType

from srfeat.commands.arguments import (
    DEVICE_HELP,
    TILE_HELP,
    add_precision_arguments,
    precision,
    tell_of_bf16,
    tile_problem,
)
from srfeat.errors import SRFeatError, bytes_shown, shown

logger = logging.getLogger(__name__)

# (lowest, highest) accepted: beyond these a limit means nothing (no upload of a terabyte is held
# in memory; a limit under one pixel refuses everything) or overflows when converted to bytes.
# (--max-megapixels's range is srfeat.web.job.MEGAPIXELS_RANGE: the server's refusals name its top.)
UPLOAD_MB_RANGE = (0.001, 1e6)
HELD_MB_RANGE = (0.001, 1e7)
QUEUED_RANGE = (1, 100_000)
UPLOAD_TIMEOUT_RANGE = (0.1, 3600.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network, no login)",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open the page in a browser (without a display, as over SSH, it is not opened anyway)",
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=100.0, metavar="MB", help="largest file accepted (default 100 MB)"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=16.0,
        metavar="MP",
        help="largest image accepted, in input megapixels (default 16; the 4x result is 16 times that)",
    )
    parser.add_argument(
        "--max-held-mb",
        type=float,
        default=2048.0,
        metavar="MB",
        help=(
            "most memory all uploads, results and their views in the page may hold (default 2048 MB); "
            "uploads and views past it are refused, and a job whose result would pass it fails"
        ),
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=100,
        metavar="N",
        help="most images one page may have waiting in the queue (default 100); more are refused until some are done",
    )
    parser.add_argument(
        "--upload-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="an upload that sends nothing for S seconds, or averages under 16 KB/s past them, is dropped "
        "(default 30), so stalled or trickling ones cannot block others",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_precision_arguments(parser)
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help=TILE_HELP,
    )


def _check_options(args: argparse.Namespace) -> None:
    from srfeat.web.job import MEGAPIXELS_RANGE  # PIL and srfeat's own modules, not the web stack

    if not 0 <= args.port <= 65535:
        raise SRFeatError(f"--port must be from 0 (a free port) to 65535, got {args.port}")
    for flag, value, (lowest, highest) in (
        ("--max-upload-mb", args.max_upload_mb, UPLOAD_MB_RANGE),
        ("--max-megapixels", args.max_megapixels, MEGAPIXELS_RANGE),
        ("--max-held-mb", args.max_held_mb, HELD_MB_RANGE),
        ("--max-queued", args.max_queued, QUEUED_RANGE),
        ("--upload-timeout", args.upload_timeout, UPLOAD_TIMEOUT_RANGE),
    ):
        if not (math.isfinite(value) and lowest <= value <= highest):
            raise SRFeatError(f"{flag} must be a number from {lowest:g} to {highest:g}, got {value:g}")
    if args.max_held_mb < args.max_upload_mb:
        raise SRFeatError(
            f"--max-held-mb ({args.max_held_mb:g}) is below --max-upload-mb ({args.max_upload_mb:g}): "
            "the server could not hold even one upload of the largest size it accepts"
        )
    if problem := tile_problem(args.tile):
        raise SRFeatError(problem)


def _host_mistake(host: str) -> str | None:
    """What is wrong with a --host written as more than an address (a URL, a port, IPv6 in brackets), which
    the resolver refused as 'Name or service not known', with 'give an address such as 127.0.0.1' the advice."""
    if "://" in host:
        address, port = urllib.parse.urlsplit(host).hostname or "127.0.0.1", re.search(r":(\d+)(?:/|$)", host)
        return f"it is a URL; give the address alone: --host {address}" + (f" --port {port[1]}" if port else "")
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::(\d+))?", host)
    if bracketed:
        address, port = bracketed.groups()
        return f"give an IPv6 address without its brackets: --host {address}" + (f" --port {port}" if port else "")
    address, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in address:  # one colon: IPv6 addresses have several
        return f"it names a port; give that with --port: --host {address} --port {port}"
    return None


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: the system picks a free one), so the URL is known before serving."""
    if (mistake := _host_mistake(host)) is not None:
        raise SRFeatError(f"cannot listen on host {shown(host)}: {mistake}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SRFeatError(f"cannot listen on host {shown(host)}: {error}; give an address such as 127.0.0.1") from error
    except UnicodeError as error:  # the IDNA codec: an empty label (a..b) or one over 63 characters
        reason = "each part between dots needs 1 to 63 characters" if "label" in str(error) else bytes_shown(str(error))
        raise SRFeatError(
            f"cannot listen on host {shown(host)}: not a valid host name ({reason}); give an address such as 127.0.0.1"
        ) from error
    family, kind, protocol, _, address = infos[0]
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        # What to change: the port for a port in use, but the address for one this machine does not have
        # (an address it had on another network), where "choose another --port" sent the user the wrong way.
        if error.errno == errno.EADDRNOTAVAIL:
            advice = (
                f"{host} is not an address of this machine; give one of its own (leave out --host for "
                "127.0.0.1, this machine only)"
            )
        else:
            advice = "choose another --port (or leave it out for a free one)"
        raise SRFeatError(f"cannot listen on {host}:{port}: {error.strerror}; {advice}") from error
    listener.listen(64)
    return listener


def is_loopback_address(address: str) -> bool:
    """Whether a bound socket's address (127.0.0.0/8, ::1, ::ffff:127.x.y.z) is this machine only."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _unspecified(address: str) -> bool:
    """Whether a bound socket's address is a wildcard (0.0.0.0, ::): every address of this machine."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_unspecified
    except ValueError:
        return False


def page_url(address: str, port: int) -> str:
    """The page's URL on this machine for a bound socket's address: a wildcard (0.0.0.0, ::) is no address to
    open (`http://0.0.0.0:P/` fails in some browsers and on other systems), so its family's loopback is shown."""
    if _unspecified(address):
        address = "::1" if ":" in address else "127.0.0.1"
    return f"http://{f'[{address}]' if ':' in address else address}:{port}/"


def _open_browser(url: str) -> None:
    """Open the page in the browser, unless there is no display to show one on (a session over SSH): Python's
    webbrowser then runs a text browser (lynx, w3m) in this terminal, over the server's log, until it is quit,
    and the page needs JavaScript. $BROWSER, when set, is the user's own choice and is used."""
    graphical = sys.platform in ("win32", "darwin") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not graphical and not os.environ.get("BROWSER"):
        logger.info("no display to open a browser on: open %s in a browser", url)
        return
    opener = threading.Timer(0.5, webbrowser.open, args=(url,))
    opener.daemon = True  # a browser that has not returned does not keep the stopped server from exiting
    opener.start()


def _web_extra_error(missing: list[str]) -> SRFeatError:
    listed = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    return SRFeatError(
        f"srfeat serve needs the web extra ({listed} {'is' if len(missing) == 1 else 'are'} missing): "
        'pip install -e ".[web]" in srfeat\'s folder'
    )


def run(args: argparse.Namespace) -> int:
    _check_options(args)
    # A missing extra is the first thing to fix: named before the port is taken, not after a port in
    # use (or a bad --host) was fixed first. find_spec only: the web stack is imported in `_serve`.
    missing = [name for name in ("uvicorn", "starlette", "anyio") if importlib.util.find_spec(name) is None]
    if missing:
        raise _web_extra_error(missing)
    listener = _listen(args.host, args.port)  # a bad host or a port in use fails before anything loads
    try:
        return _serve(args, listener)
    finally:
        listener.close()


def _serve(args: argparse.Namespace, listener: socket.socket) -> int:
    try:
        import uvicorn

        from srfeat.cli import write_output
        from srfeat.web.app import Limits, create_app
        from srfeat.web.protocol import BriefAcceptErrors, ServeH11Protocol, raise_open_files_limit
    except ImportError as error:  # installed, but broken: what failed to import
        raise _web_extra_error([error.name or str(error)]) from error
    from PIL import Image

    from srfeat.inference import Upscaler
    from srfeat.inference.upscaler import resolve_device, resolve_dtype
    from srfeat.training.interrupt import HANGUP, STOP_SIGNALS, ignore_further_hangups, stop_signals
    from srfeat.web.jobs import JobQueue, ModelChoice, remove_stale_temporaries

    device = resolve_device(args.device, command_line=True)
    dtype = precision(args)
    resolve_dtype(dtype, device, command_line=True)  # --half on the CPU: one line now, not on the page's first job
    tell_of_bf16(device, dtype)

    def make_upscaler(choice: ModelChoice) -> Upscaler:
        return Upscaler(
            choice.model, device=device, dtype=dtype, tile=args.tile, strength=choice.strength, command_line=True
        )

    host, port = listener.getsockname()[:2]
    url = page_url(host, port)
    loopback = is_loopback_address(host)
    if not loopback:
        logger.warning(
            "listening on %s%s: anyone who can reach this machine on port %d can use this server and see the "
            "images uploaded to it (there is no login); leave out --host to keep it to this machine",
            args.host,
            f" (all of this machine's addresses; from another machine open http://ITS-ADDRESS:{port}/)"
            if _unspecified(host)
            else "",
            port,
        )
    max_pixels = int(args.max_megapixels * 1e6)
    # PIL refuses an image over twice its MAX_IMAGE_PIXELS (179 MP) as a possible decompression bomb, and
    # warns over it: with a larger --max-megapixels, that image was refused all the same. This server's own
    # limit, checked from the header before anything is decoded, decides (raised, never lowered).
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    remove_stale_temporaries()
    queue = JobQueue(
        make_upscaler, max_waiting_per_session=args.max_queued, max_held_bytes=int(args.max_held_mb * 2**20)
    )
    queue.prepare(ModelChoice("default"))
    app = create_app(
        queue,
        Limits(
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=max_pixels,
            upload_timeout_seconds=args.upload_timeout,
        ),
        # On a loopback address, a page elsewhere that points its own name here (DNS rebinding) is
        # refused: only loopback addresses, localhost and the name given to --host are served.
        allowed_hosts=[args.host] if loopback else None,
        device=str(device) if dtype == "fp32" else f"{device} ({dtype})",
    )

    left_ignored = set(STOP_SIGNALS) - set(stop_signals())

    class Server(uvicorn.Server):
        stop_signal: int | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            asyncio.get_running_loop().set_exception_handler(BriefAcceptErrors())
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if sig in left_ignored:  # SIGINT ignored when srfeat started (a script's `srfeat serve &`): uvicorn
                return  # sets this handler for it all the same, which stopped the server the script left running
            if sig == HANGUP:
                ignore_further_hangups()
            self.stop_signal = self.stop_signal or sig
            queue.stop()  # Ctrl+C: the event streams end and the running job stops after its tile
            super().handle_exit(sig, frame)

    raise_open_files_limit()
    server = Server(uvicorn.Config(app, http=ServeH11Protocol, log_level="warning", timeout_graceful_shutdown=5))
    # Ctrl+C and SIGTERM (systemd, `docker stop`) are how a server is stopped, and so is SIGHUP (its
    # terminal closed) unless it is ignored (`nohup`: the server goes on), and Ctrl+C too (ignored in a
    # script's background job, which the Ctrl-C that stops the script leaves running). uvicorn shuts down
    # gracefully, then raises the signal again under the handlers it found, which made a clean stop
    # "ERROR: terminated" (exit 143) or "ERROR: interrupted". It finds this one: a signal before
    # uvicorn listens stops it as it starts, and one raised again after the shutdown is no error.
    # The handlers srfeat had are back before the running job is waited for: a second signal
    # still cuts that short (not SIGHUP, ignored from the first on: one hangup, one stop). Set
    # before the URL is shown: whoever reads it may stop the server at once.
    in_main_thread = threading.current_thread() is threading.main_thread()
    found = {sig: signal.signal(sig, server.handle_exit) for sig in stop_signals()} if in_main_thread else {}
    try:
        write_output(f"srfeat serve: {url}\n")
        # Where Ctrl+C was left ignored (a script's background job) it stops nothing: say what does.
        stopped_by = "SIGTERM (kill PID)" if signal.SIGINT in left_ignored else "Ctrl+C"
        logger.info("upscaling on %s; %s stops the server", device, stopped_by)
        if not args.no_browser:
            _open_browser(url)
        server.run(sockets=[listener])
    finally:
        for sig, handler in found.items():
            if sig != HANGUP or signal.getsignal(sig) != signal.SIG_IGN:  # ignored: since a hangup, for good
                signal.signal(sig, handler)
        queue.stop()
        queue.join()
    if server.stop_signal is not None:
        logger.info("stopped (%s)", signal.Signals(server.stop_signal).name)
    return 0
