"""libtiff's errors and warnings, caught where PIL decodes a compressed TIFF through it.

libtiff's default handlers print to stderr: a damaged TIFF's upscale printed "tempfile.tif: Using code not yet in
table." or "ZIPDecode: Decoding error at scanline 8, incorrect data check" above srfeat's one error line, which
itself said only PIL's "decoder error -2". Handlers set here (once a process, through the libtiff that PIL's
`_imaging` links) collect them for the reader in that thread (`caught`), which makes them its warnings, or logs them
at debug level where no reader collects. Where that libtiff is not reachable (a Windows wheel links it in without
exporting it), libtiff keeps its own handlers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["caught", "errors_caught"]

logger = logging.getLogger(__name__)

# void handler(const char *module, const char *fmt, va_list ap): the va_list arrives as a pointer on the platforms
# Pillow ships libtiff for in a shared library (an array on x86-64, a struct passed by reference on AArch64, a
# char * on macOS), and goes on so to vsnprintf.
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_MESSAGE_BYTES = 512
_PIL_FILE_NAME = "tempfile.tif"  # the name PIL gives libtiff for every file: the user's file's is not it

_state = threading.local()  # `messages`: (is an error, text) of the `caught` block running in this thread
_install_lock = threading.Lock()
_installed: list[object] = []  # the handlers and the libraries: kept alive as long as libtiff may call them


def _format(vsnprintf: Callable[..., int], module: bytes | None, fmt: bytes | None, arguments: int | None) -> str:
    buffer = ctypes.create_string_buffer(_MESSAGE_BYTES)
    if fmt is not None:  # (vsnprintf of no format would crash)
        vsnprintf(buffer, _MESSAGE_BYTES, fmt, arguments)
    text = buffer.value.decode("utf-8", "replace").strip().rstrip(".").replace(f"{_PIL_FILE_NAME}: ", "")
    name = (module or b"").decode("utf-8", "replace")
    return text if name in ("", _PIL_FILE_NAME) else f"{name}: {text}"


def _handler(vsnprintf: Callable[..., int], error: bool) -> object:
    def handle(module: bytes | None, fmt: bytes | None, arguments: int | None) -> None:
        try:
            text = _format(vsnprintf, module, fmt, arguments)
        except Exception:  # noqa: BLE001 - an exception cannot go back through libtiff's C frames
            return
        messages = getattr(_state, "messages", None)
        if messages is None:
            logger.debug("libtiff: %s", text)
        else:
            messages.append((error, text))

    return _HANDLER(handle)


def _install() -> None:
    """Set libtiff's handlers, once a process; nothing where PIL's libtiff or the C library is not found."""
    with _install_lock:
        if _installed:
            return
        try:
            # PIL's stubs leave out its C extension module, which every installed PIL has
            from PIL import _imaging  # pyright: ignore[reportAttributeAccessIssue]

            pil = ctypes.CDLL(_imaging.__file__)  # its symbols, and those of the libraries it links (libtiff)
            c_library = ctypes.CDLL(ctypes.util.find_library("c"))
            vsnprintf = c_library.vsnprintf
            set_error, set_warning = pil.TIFFSetErrorHandler, pil.TIFFSetWarningHandler
        except (OSError, AttributeError, ImportError, TypeError):
            _installed.append(None)  # looked for once
            return
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vsnprintf.restype = ctypes.c_int
        errors, warnings = _handler(vsnprintf, error=True), _handler(vsnprintf, error=False)
        set_error.argtypes = set_warning.argtypes = [_HANDLER]
        set_error.restype = set_warning.restype = ctypes.c_void_p
        set_error(errors)
        set_warning(warnings)
        _installed.extend([errors, warnings, pil, c_library])


@contextmanager
def caught() -> Iterator[list[str]]:
    """libtiff's messages while the block runs in this thread, as "libtiff: ..." lines, in the list it gives once
    the block ends (`errors_caught` has the errors so far within it)."""
    _install()
    outer = getattr(_state, "messages", None)
    _state.messages = messages = []
    lines: list[str] = []
    try:
        yield lines
    finally:  # a reader within a reader: the inner one's messages are its own, as PIL's warnings are
        lines.extend(f"libtiff: {text}" for _, text in messages)
        _state.messages = outer


def errors_caught() -> list[str]:
    """The errors libtiff gave so far in this thread's `caught` block, for the error line of a read that failed."""
    return [text for error, text in getattr(_state, "messages", None) or [] if error]
