"""What the web app's worker does with one job: upscale its upload through the files `srfeat upscale` uses.

The queue (`srfeat.web.jobs`) decides which job runs; here are the upscalers it keeps built, the
job's temporary folder (`upscale_file`'s steps work on files: the upload is written there, the result
read back, the folder removed when the job ends) and the sweep of folders left by killed servers,
and the warnings the upscale logged, kept as notes for the job's card.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from srfeat.data.image_writing import SIXTEEN_BITS_CUT, WEBP_GREY_AS_RGB
from srfeat.data.io import SIXTEEN_BIT_TIFF_READ_AS_8, read_raw_image
from srfeat.errors import (
    ImageReadError,
    InvalidImageError,
    ModelOutOfMemoryError,
    SRFeatError,
    TileOutOfMemoryError,
)
from srfeat.files import unless_held, writing_temporary
from srfeat.hardware import is_out_of_memory, one_line_if_out_of_memory
from srfeat.inference.image_files import upscale_read_image
from srfeat.inference.upscaler import Upscaler
from srfeat.locks import process_exists
from srfeat.web.job import SCALE, WEB_SAVE_AGAIN, Job, ModelChoice
from srfeat.web.result_format import decoded_result_format, format_note

__all__ = [
    "CACHED_UPSCALERS",
    "TEMPORARY_PREFIX",
    "PageError",
    "Upscalers",
    "job_notes",
    "loading",
    "loading_error",
    "page_error",
    "remove_stale_temporaries",
    "upscale_job",
]

logger = logging.getLogger(__name__)

# Two upscalers stay built (say `default` and `gan`, or two strengths): switching back and
# forth between settings on one image then costs no reload.
CACHED_UPSCALERS = 2
# A job's folder is `srfeat-serve-PID-TOKEN` in the system's temporary folder, and it is the server's while
# the server holds the lock of `.srfeat-serve-PID-TOKEN.PID.tmp` beside it (`files.writing_temporary`).
TEMPORARY_PREFIX = "srfeat-serve-"


def _locks_of(folder: Path) -> list[Path]:
    return list(folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"))


@contextmanager
def job_folder() -> Iterator[Path]:
    """A new, private folder for one job, removed after the block. It is this server's while its lock is
    held: the lock is claimed before the folder is made and let go after it is removed, so a server
    starting meanwhile (in another container too, where this process id means nothing) never takes it
    for one left by a killed server."""
    folder = Path(tempfile.gettempdir()) / f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    with writing_temporary(folder):
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temporaries() -> None:
    """Remove temporary folders (and their locks) left by servers that were killed mid-job: those whose lock
    no live process holds, whatever the process id in their name (a process of that id may be alive here,
    or the folder's server alive in another container sharing the folder). Where there are no locks, a
    folder whose process is gone is stale."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{TEMPORARY_PREFIX}*"):
        if folder.is_symlink() or not folder.is_dir():
            continue
        with ExitStack() as held:
            states = [held.enter_context(unless_held(lock)) for lock in _locks_of(folder)]
            if False in states:  # a live server's, or not ours to judge
                continue
            if None in states or not states:  # no locks here, or an older srfeat's folder: by its process id
                pid = folder.name[len(TEMPORARY_PREFIX) :].split("-", 1)[0]
                if not pid.isdigit() or process_exists(int(pid)):
                    continue
            logger.info("removing %s, left by a server that was stopped mid-job", folder)
            shutil.rmtree(folder, ignore_errors=True)
            for lock in _locks_of(folder):
                lock.unlink(missing_ok=True)
    # A lock alone: its server was killed after removing the folder, before letting the lock go.
    for lock in root.glob(f".{TEMPORARY_PREFIX}*.tmp"):
        name = lock.name[1:].split(".", 1)[0]
        if not (root / name).exists():
            with unless_held(lock) as free:
                if free:
                    lock.unlink(missing_ok=True)


class Upscalers:
    """The last `CACHED_UPSCALERS` upscalers built by `make(choice)`, the least recently used dropped first."""

    def __init__(self, make: Callable[[ModelChoice], Upscaler]) -> None:
        self._make = make
        self._built: OrderedDict[ModelChoice, Upscaler] = OrderedDict()

    def __contains__(self, choice: ModelChoice) -> bool:
        return choice in self._built

    def get(self, choice: ModelChoice) -> Upscaler:
        """The upscaler for `choice`, built where none is kept. It is built before the least recently used one
        is dropped: a build that fails (a damaged file) leaves the kept ones as they were; dropping first lost
        one that worked, for nothing. A build that runs out of memory beside the kept ones is tried again after
        dropping them, least recently used first, one at a time (dropping first also made room for the build)."""
        if choice in self._built:
            self._built.move_to_end(choice)
            return self._built[choice]
        while True:
            try:
                upscaler = self._make(choice)
                break
            except (RuntimeError, MemoryError, ModelOutOfMemoryError) as error:
                if not self._built or not (isinstance(error, ModelOutOfMemoryError) or is_out_of_memory(error)):
                    raise
            # Retried here, past the `except`: its traceback held the failed build's frames, and their memory.
            dropped = self._built.popitem(last=False)[0]  # the key alone: the upscaler itself is let go
            logger.info(
                "no memory to load the %s network beside the %s one: dropped that one", choice.label, dropped.label
            )
        while len(self._built) >= CACHED_UPSCALERS:
            self._built.popitem(last=False)
        self._built[choice] = upscaler
        return upscaler


# The page's advice for an upload it cannot read, where the command line's is to skip the file in the
# batch or replace it on disk: there is no batch, and no file of the user's on the server.
_WEB_ADVICE = "upload another file, or this one again if it was cut short"
# The page's advice for a tile out of memory, where the server's log says to free memory or restart the
# server with a smaller --tile: the page's user can do neither.
_WEB_MEMORY_ADVICE = "try a smaller image, or ask whoever runs the server to restart it with a smaller --tile"
# The page's advice for a model (a setting not loaded yet) that did not fit on the server's device, where the
# server's log says to free memory, choose another GPU or --device cpu: the page's user can do none of these.
_WEB_LOADING_ADVICE = "try again later, or ask whoever runs the server to free memory for the model"
# The page's advice for a model that did not load for another reason (its file damaged): the log says why.
_WEB_LOAD_FAILED_ADVICE = "choose another setting, or ask whoever runs the server to look at its log"
# The server log's advice for a network that ran out of memory as it loaded outside the Upscaler's own check (which
# knows its device and says so): the queue does not know the device.
_FREE_MEMORY_TO_LOAD = "free memory (other programs, or the processes nvidia-smi lists on a GPU), then try again"
# Errors of the upload itself (not an image srfeat reads, or pixels it cannot upscale): sending it again fails again.
_UPLOAD_ERRORS = (ImageReadError, InvalidImageError)
# Errors whose advice only whoever runs the server can follow: the log keeps it, the page says its own.
_SERVERS_ADVICE = (TileOutOfMemoryError, ModelOutOfMemoryError)


class PageError(SRFeatError):
    """A job's error as its page says it; `logged` is how the server's log says it (the same, but for advice
    that only whoever runs the server can follow); `upload_unreadable`: the upload itself is at fault (not an
    image srfeat reads), so that its page offers no "Try again" with the same file."""

    def __init__(self, message: str, logged: str, upload_unreadable: bool = False) -> None:
        super().__init__(message)
        self.logged = logged
        self.upload_unreadable = upload_unreadable


def _web_message(error: SRFeatError) -> str:
    """`error`'s message as the page says it: the advice for a damaged file, a tile out of memory or a model
    that did not fit, made the page's."""
    if isinstance(error, ImageReadError) and error.advice == ImageReadError.SKIP_OR_REPLACE:
        return f"{error.problem}; {_WEB_ADVICE}"
    if isinstance(error, ImageReadError) and error.advice == ImageReadError.SAVE_AGAIN:
        return f"{error.problem}; {WEB_SAVE_AGAIN}"
    if isinstance(error, TileOutOfMemoryError):
        return f"{error.problem}; {_WEB_MEMORY_ADVICE}"
    if isinstance(error, ModelOutOfMemoryError):
        return f"{error.problem}; {_WEB_LOADING_ADVICE}"
    return str(error)


def page_error(error: SRFeatError, renamed: Callable[[str], str] = str) -> PageError:
    """A job's `error` as its page says it and as the server's log does (`renamed`: a message's temporary
    file names made the upload's): the log keeps advice that only whoever runs the server can follow."""
    page = renamed(_web_message(error))
    logged = renamed(str(error)) if isinstance(error, _SERVERS_ADVICE) else page
    return PageError(page, logged, upload_unreadable=isinstance(error, _UPLOAD_ERRORS))


@contextmanager
def loading(label: str) -> Iterator[None]:
    """Building the network for a setting (`label`) in the block: an allocation that fails there and that the
    `Upscaler` did not word (a step of the server's own, the ONNX backend's load) is a `ModelOutOfMemoryError`
    (it was worded as out of memory upscaling the job's image, whose size had nothing to do with it)."""
    problem = f"out of memory loading the {label} network"
    with one_line_if_out_of_memory(lambda: ModelOutOfMemoryError(problem, _FREE_MEMORY_TO_LOAD)):
        yield


def loading_error(error: SRFeatError, label: str) -> PageError:
    """The error of a job whose setting's network (`label`) did not load, as its page says it and as the server's
    log does. Out of memory, the page has its advice (`page_error`); otherwise (a bundled model's file damaged)
    the error names the server's file and says to copy it again, or to give another checkpoint, which only
    whoever runs the server can do: the page says that the network did not load, and what its user can do."""
    if isinstance(error, ModelOutOfMemoryError):
        return page_error(error)
    page = f"the server could not load the {label} network; {_WEB_LOAD_FAILED_ADVICE}"
    return PageError(page, str(error))


def upscale_job(upscaler: Upscaler, job: Job) -> tuple[bytes, int, int, list[str]]:
    """`job`'s upload upscaled as `srfeat upscale` writes it: (the result file's bytes, its width and
    height, the notes for the card); errors are a `PageError`, naming the upload, not the temporary file.
    The result's format is decided once the upload is read, by what was read (`decoded_result_format`), and
    kept in `job` for its card, its download and its "again"."""
    with job_folder() as folder:
        source = folder / "in" / job.name
        source.parent.mkdir()
        source.write_bytes(job.data)
        try:
            with job_notes() as logged:
                raw = read_raw_image(source)
                chosen = (job.result_extension, job.result_keeps)
                job.result_extension, job.result_keeps = decoded_result_format(job.name, raw, SCALE, chosen)
                target = folder / "out" / job.result_name
                width, height = upscale_read_image(upscaler, raw, target)
        except SRFeatError as error:
            # Messages name the temporary file; the user knows it by its upload name.
            raise page_error(error, lambda message: message.replace(str(source), job.name)) from error
        result = target.read_bytes()
        notes = [_page_note(record, job, source, target) for record in logged]
    # the result is not in the format its upload was named
    if (note := format_note(job.name, job.result_extension, job.result_name, job.result_keeps)) is not None:
        notes.insert(0, note)
    return result, width, height, notes


def _page_note(record: logging.LogRecord, job: Job, source: Path, target: Path) -> str:
    """A warning the upscale logged, as `job`'s card says it: with the upload's names, not the temporary files'.
    16 bits cut to 8 and grey written as RGB have the page's own words: the command line's advice, "use .png", means
    naming the output file, which the page's user does not do; so has a 16-bit TIFF read with 8 bits, whose advice is
    to install a package on the server. A 16-bit upload named `.jpg` gets a PNG result
    (`srfeat.web.result_format`), chosen by what was read: 16 bits are cut only in a result not chosen so."""
    if record.msg == SIXTEEN_BITS_CUT and isinstance(record.args, tuple) and len(record.args) == 2:
        image_format = record.args[1]
        return (
            f"{job.name} has 16 bits per channel, which {image_format} cannot hold: the download "
            f"({job.result_name}) has 8"
        )
    if record.msg == SIXTEEN_BIT_TIFF_READ_AS_8 and isinstance(record.args, tuple) and len(record.args) == 2:
        return (
            f"{job.name} is a 16-bit colour TIFF compressed with {record.args[1]}, which this server reads with 8 bits "
            f"per channel (it lacks the imagecodecs package): the download ({job.result_name}) has 8"
        )
    if record.msg == WEBP_GREY_AS_RGB:
        return (
            f"{job.name} is grey, and WebP has no grey mode: the download ({job.result_name}) has the same grey as RGB"
        )
    note = record.getMessage().replace("\n", " ")
    return note.replace(str(source), job.name).replace(str(target), job.result_name)


class _ThreadWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.records.append(record)


@contextmanager
def job_notes() -> Iterator[list[logging.LogRecord]]:
    """The warnings srfeat logs in this thread within the block (what `srfeat upscale` prints for a
    file: 16 bits cut to 8 for a JPEG name, only the first frame read), for the notes on the job's
    card (`_page_note`): the page showed such a result as if nothing had been lost."""
    handler = _ThreadWarnings()
    logging.getLogger("srfeat").addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger("srfeat").removeHandler(handler)
