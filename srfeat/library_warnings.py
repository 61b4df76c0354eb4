"""Library warnings as srfeat's own one-line messages, the lock over Python's warning filters, and
warnings given once a process.

PIL warns through `warnings`, and it and tifffile log through `logging`, while a file is read; both are
process-wide state, so a reader that changes them (`warnings.catch_warnings`, a logger's handlers)
holds `WARNINGS_LOCK`: the web app's worker thread and a caller's own thread would otherwise
restore each other's filters wrongly.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from srfeat import libtiff_messages

__all__ = ["WARNINGS_LOCK", "one_line_messages", "warn_once"]

logger = logging.getLogger("srfeat.data.io")  # the reader's messages keep the logger they always had


class _ListHandler(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name.split('.')[0]}: {record.getMessage()}")


# Libraries that log while a file is read: tifffile, and PIL's TIFF reader ("More samples per pixel than can be
# decoded", at ERROR: it printed as a second error line above srfeat's own).
_READER_LOGGERS = ("tifffile", "PIL")


# The (logger, key) pairs `warn_once` has logged in this process.
_warned: set[tuple[str, str]] = set()


def warn_once(log: logging.Logger, key: str, message: str) -> None:
    """Log `message` as a warning through `log` the first time this process meets `key` there: a loop over
    hundreds of images, or every call to a kernel, would otherwise repeat the same line for each of them."""
    if (log.name, key) not in _warned:
        _warned.add((log.name, key))
        log.warning("%s", message)


# `warnings.catch_warnings` and a logger's handlers are process-wide: two threads reading at once
# (the web app's worker and a caller's own) would otherwise restore each other's state wrongly: whoever
# changes the warning filters holds this lock.
WARNINGS_LOCK = threading.RLock()


@contextmanager
def one_line_messages(path: str | os.PathLike[str]) -> Iterator[None]:
    """While reading `path`: PIL's warnings, tifffile's and PIL's log records and libtiff's messages
    (`libtiff_messages`) -> one srfeat warning line each.

    Repeats are logged once. When the read fails, they are logged at debug level only: the error
    line names the cause, and tifffile's complaints about a file PIL then refuses are noise.
    """
    caught_logs: list[str] = []
    caught_warnings: list[warnings.WarningMessage] = []
    libtiff_lines: list[str] = []
    handler = _ListHandler(caught_logs)
    loggers = [logging.getLogger(name) for name in _READER_LOGGERS]
    failed = True
    try:
        with WARNINGS_LOCK, warnings.catch_warnings(record=True) as recorded, libtiff_messages.caught() as libtiff:
            caught_warnings, libtiff_lines = recorded, libtiff
            warnings.simplefilter("always")
            propagates = [reader_logger.propagate for reader_logger in loggers]
            for reader_logger in loggers:
                reader_logger.addHandler(handler)
                reader_logger.propagate = False
            try:
                yield
            finally:
                for reader_logger, propagate in zip(loggers, propagates, strict=True):
                    reader_logger.removeHandler(handler)
                    reader_logger.propagate = propagate
        failed = False
    finally:
        messages = [str(warning.message) for warning in caught_warnings] + caught_logs + libtiff_lines
        for message in dict.fromkeys(" ".join(message.split()) for message in messages):
            logger.log(logging.DEBUG if failed else logging.WARNING, "%s: %s", path, message)
