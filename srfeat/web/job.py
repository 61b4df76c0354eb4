"""One job of the web app: an uploaded image, the setting it was asked for, what became of it.

The queue that runs jobs is `srfeat.web.jobs`, what its worker does with one `srfeat.web.worker`;
here are the job itself and what its card shows (`Job.describe`), the checks of what a client sent
(the upload, `inspect_upload`; the setting, `parse_choice`), the file names it is offered under,
which come from the upload and so are untrusted, alone or in the results' zip, and the queue's refusal
(`QueueFullError`). The format its result is written in is `srfeat.web.result_format`'s.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from PIL import Image

from srfeat.data import avif_check
from srfeat.data.colour_profiles import open_image_data
from srfeat.data.io import DECODE_ERRORS  # what a damaged file raises
from srfeat.data.unidentified import a_format, starts_as, webp_problem
from srfeat.errors import shown
from srfeat.inference.image_files import output_extension, over_format_limit
from srfeat.library_warnings import WARNINGS_LOCK
from srfeat.web.result_format import header_result_format

__all__ = [
    "Job",
    "JobCancelledError",
    "Limits",
    "ModelChoice",
    "QueueFullError",
    "State",
    "UploadError",
    "UploadedImage",
    "check_parameters",
    "inspect_upload",
    "oversized_result",
    "parse_choice",
    "safe_file_name",
    "zip_chunks",
]

State = Literal["queued", "running", "done", "failed", "cancelled"]
# A file name may have 255 bytes (Linux, macOS, Windows): a stem of 150 leaves room for the
# result's tag (`_x4_s0.50`), a de-duplicating count in the zip and the extension.
MAX_STEM_CHARACTERS = 100
MAX_STEM_BYTES = 150
MAX_SUFFIX_CHARACTERS = 10
MAX_SUFFIX_BYTES = 16
SCALE = 4  # the web app's results are the network's own 4x (no --outscale)


# What uploads may be. Pillow reads more (EPS, for one, through Ghostscript), but a server that
# takes files from a browser, perhaps from other machines, decodes only the common photo formats.
# (JPEG includes MPO, the camera JPEGs; AVIF where this Pillow reads it.)
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "AVIF")
# Those a file's first bytes tell (`starts_as`): one that starts so but does not open is damaged or cut short
# (BMP's `BM` is left out: too short to tell a damaged bitmap from a text starting "BM"). AVIF only where this
# Pillow reads it: elsewhere a sound AVIF would be called damaged.
SIGNED_UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "AVIF")


# What each request that makes a job takes in its query: any other parameter (a typo, `strenght=0.3`; an option of
# srfeat upscale, `outscale=2`) was ignored, and the job ran with the default setting without a word.
UPLOAD_PARAMETERS = ("session", "name", "ref", "model", "strength")
AGAIN_PARAMETERS = ("session", "model", "strength")
DECOMPRESSION_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # how PIL's DecompressionBombError names the size
# The page's advice for an upload of its whole length that its decoder refuses (a WebP): "upload the whole file" was
# for one cut short. The command line's is `ImageReadError.SAVE_AGAIN`.
WEB_SAVE_AGAIN = "save it again from the program that made it, or upload another copy"


# The values `srfeat serve --max-megapixels` takes (Limits.max_pixels / 1e6): under one pixel refuses everything;
# past 10 gigapixels a limit means nothing (an upload's 4x result would be 160 gigapixels, 480 GB as 8-bit RGB).
MEGAPIXELS_RANGE = (1e-6, 1e4)


@dataclass(frozen=True)
class Limits:
    """What the server accepts: bytes per upload, pixels per image, and how long an upload may
    send nothing before it is dropped."""

    max_upload_bytes: int
    max_pixels: int
    upload_timeout_seconds: float = 30.0


class UploadedImage(NamedTuple):
    """What `inspect_upload` found: the upload's size, the extension its result is written with and what that
    format keeps that the upload's own would drop, as its header tells them (`header_result_format`; the worker
    decides again from the pixels as read)."""

    width: int
    height: int
    result_extension: str
    result_keeps: tuple[str, ...] = ()


class UploadError(Exception):
    """An upload that will not be queued; the message is shown on the page."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def inspect_upload(data: bytes, name: str, limits: Limits, sent_as_form: bool = False) -> UploadedImage:
    """The size of an uploaded image and its result's format (`header_result_format`) from its header alone,
    or `UploadError` saying why not; `sent_as_form`: the request said its body was form data (`curl -d`, which
    drops a file's line breaks)."""
    if not data:
        raise UploadError(f"{name} is empty (0 bytes): nothing to upscale")
    Image.init()  # registers every plugin, so that `readable` can name them all
    readable = [image_format for image_format in UPLOAD_FORMATS if image_format in Image.OPEN]
    try:
        with WARNINGS_LOCK, warnings.catch_warnings():  # the filters are process-wide: the worker reads too
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with open_image_data(data, name, formats=readable) as image:
                width, height = image.size
                extension, keeps = header_result_format(name, data, image)
    except Image.DecompressionBombError as error:  # PIL's own limit, past this server's: said as this server's
        found = DECOMPRESSION_BOMB_PIXELS.search(str(error))
        pixels = int(found.group(1)) if found else None
        size = f"{pixels / 1e6:,.0f} megapixels" if pixels else "more pixels than PIL opens"
        raise UploadError(_over_pixel_limit(name, size, pixels, limits), 413) from error
    except DECODE_ERRORS as error:  # UnidentifiedImageError (an OSError) for a file of no format srfeat reads
        if sent_as_form:  # a PNG sent by `curl -d @photo.png` lost its line breaks: not "use PNG", nor "damaged"
            raise _sent_by_curl_d(name) from error
        if (kind := _signature(data, readable)) == "WebP" and (problem := webp_problem(data[:12], len(data))):
            advice = "upload the whole file" if problem.cut_short else WEB_SAVE_AGAIN
            raise UploadError(f"{name}: {problem.what}; {advice}", 422) from error
        if kind == "AVIF" and (missing := avif_check.cut_short(data)):  # how much is missing, as the CLI says
            raise UploadError(f"{name}: {missing}; upload the whole file", 422) from error
        if kind is not None:  # a PNG cut short was told to "use PNG"
            reason = "" if isinstance(error, Image.UnidentifiedImageError) else f": {error}"
            raise UploadError(
                f"{name} starts as {a_format(kind)} file but cannot be read: it is damaged or cut short "
                f"({len(data)} bytes{reason}); upload the whole file",
                422,
            ) from error
        raise UploadError(f"{name} is not an image srfeat can read (use PNG, JPEG, WebP, TIFF or BMP)", 415) from error
    if width * height > limits.max_pixels:
        raise UploadError(
            _over_pixel_limit(
                name, f"{width}x{height} ({width * height / 1e6:.0f} megapixels)", width * height, limits
            ),
            413,
        )
    if (oversized := oversized_result(name, width, height, extension)) is not None:
        raise UploadError(oversized, 413)
    # A JPEG's header may hold no line break: it opened above, and its job failed later as a damaged file. The
    # form label alone does not tell `curl -d` (`curl --data-binary` and Python's urllib send it too); a body with
    # no CR or LF byte (which nearly every image of more than a few bytes has) that does not decode does.
    if sent_as_form and b"\r" not in data and b"\n" not in data and not _decodes(data, name, readable):
        raise _sent_by_curl_d(name)
    return UploadedImage(width, height, extension, keeps)


def _sent_by_curl_d(name: str) -> UploadError:
    return UploadError(
        f"{name} does not open as an image as it arrived: it was sent as form data "
        "(application/x-www-form-urlencoded), as curl -d sends a file, with its line breaks dropped; "
        f"send the file itself: curl --data-binary @{name}",
        415,
    )


def _decodes(data: bytes, name: str, formats: list[str]) -> bool:
    """Whether `data`, whose header opened as one of `formats`, decodes to the end (a JPEG at 1/8 scale: its
    whole stream is read at a 64th of the memory). Only for the rare upload `inspect_upload` suspects."""
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit was checked already
        image = open_image_data(data, name, formats=formats, warn=False)
    with image:
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        try:
            image.load()
        except DECODE_ERRORS:
            return False
    return True


def _over_pixel_limit(name: str, size: str, pixels: int | None, limits: Limits) -> str:
    """The refusal of an upload of `pixels` (None: unknown) over the server's limit; past the largest
    --max-megapixels no restart takes it, and saying to start with a larger one sent the user round."""
    largest = MEGAPIXELS_RANGE[1]
    what_to_do = (
        f"downscale it or cut it into parts first: no server takes it (--max-megapixels goes up to {largest:,g})"
        if pixels is not None and pixels > largest * 1e6
        else "start the server with a larger --max-megapixels"
    )
    return (
        f"{name} is {size}, over this server's limit of {limits.max_pixels / 1e6:g} megapixels per image "
        f"(a photo too large, or a file made to take all memory: {what_to_do})"
    )


def check_parameters(params: list[tuple[str, str]], accepted: tuple[str, ...]) -> None:
    """`UploadError` naming a query parameter outside `accepted`, which would otherwise be ignored, or one given
    twice (`strength=0.3&strength=0.9`: one of them would be ignored)."""
    keys = [key for key, _ in params]
    unknown = [key for key in keys if key not in accepted]
    if unknown:
        named = ", ".join(repr(key[:40]) for key in unknown[:3]) + (" and more" if len(unknown) > 3 else "")
        raise UploadError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {named}: this request takes {', '.join(accepted)} "
            f"(results are always {SCALE}x; srfeat upscale has --outscale, --tile and its other options)"
        )
    if repeated := next((key for key in keys if keys.count(key) > 1), None):
        values = ", ".join(repr(value[:40]) for key, value in params if key == repeated)
        raise UploadError(f"{repeated} was given more than once ({values}); give it once")


def _signature(data: bytes, readable: list[str]) -> str | None:
    """The upload format `data` starts as (by its first bytes), if any and this Pillow reads it (`readable`),
    as the page names it ("WebP")."""
    kind = starts_as(data)
    if kind not in SIGNED_UPLOAD_FORMATS or kind not in readable:
        return None
    return "WebP" if kind == "WEBP" else kind


def parse_choice(params: dict[str, str]) -> ModelChoice:
    model = params.get("model", "default")
    if model not in ("default", "gan"):
        raise UploadError(f"unknown model {model!r}: use default or gan")
    text = params.get("strength")
    if text is None or text == "":
        return ModelChoice(model)
    if model == "gan":
        raise UploadError("strength goes with model=default (it blends default toward gan); leave it out for gan")
    try:
        strength = float(text)
    except ValueError:
        raise UploadError(f"strength must be a number from 0 to 1, got {shown(text)}") from None
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise UploadError(f"strength must be from 0 (default) to 1 (gan), got {shown(text)}")
    # Strengths come in steps of 0.01 (the page's slider, the `_s0.30` of the file name, the
    # cached networks); another value is refused rather than silently rounded.
    if abs(strength * 100 - round(strength * 100)) > 1e-6:
        raise UploadError(f"strength is taken in steps of 0.01 (0.30, not 0.305), got {text}")
    return ModelChoice("default", round(strength, 2) + 0.0)  # + 0.0: -0 is 0 (not `_s-0.00` in the file name)


class JobCancelledError(Exception):
    """Raised inside a running job (between tiles) when its session has gone away."""


class QueueFullError(Exception):
    """A job or view refused because the queue is at one of its limits; `status` is the HTTP answer
    (429: this page has too many waiting, 503: the server holds too much, 507: a view would pass it)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelChoice:
    """What the page asked for: a bundled model, or a strength between `default` (0) and `gan` (1)."""

    model: str = "default"
    strength: float | None = None

    @property
    def label(self) -> str:
        return self.model if self.strength is None else f"strength {self.strength:.2f}"

    @property
    def file_tag(self) -> str:
        """Added to the output's file name, so results of several settings can sit in one folder."""
        if self.strength is not None:
            return f"_x4_s{self.strength:.2f}"
        return "_x4" if self.model == "default" else f"_x4_{self.model}"


def safe_file_name(name: str) -> str:
    """An uploaded file's name reduced to something safe to create and to offer as a download name.

    The stem is cut to `MAX_STEM_BYTES` of UTF-8 as well as to `MAX_STEM_CHARACTERS`: a name of CJK
    letters (3 bytes each) must still fit a file system's 255-byte limit with the result's tag and extension added.
    """
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^\w.\- ()+,]", "_", base).strip(" .")
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = _cut_utf8(stem[:MAX_STEM_CHARACTERS], MAX_STEM_BYTES) or "image"
    suffix = _cut_utf8(suffix[:MAX_SUFFIX_CHARACTERS], MAX_SUFFIX_BYTES)
    return f"{stem}.{suffix}" if suffix else stem


def oversized_result(name: str, width: int, height: int, extension: str | None = None) -> str | None:
    """Why the result of a `width`x`height` upload named `name` cannot be written in its format, or as
    `extension` if given (None: it can), found at the upload: the job failed after its whole upscale, with the
    encoder's "internal error"."""
    extension = output_extension(name) if extension is None else extension
    if (problem := over_format_limit(extension, SCALE * width, SCALE * height)) is None:
        return None
    return (
        f"{name} would be upscaled to {SCALE * width}x{SCALE * height}, {problem} "
        "(the result is written in the upload's format): convert it to PNG or TIFF and upload that"
    )


def _cut_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


@dataclass(eq=False)  # compared by identity: two uploads of one file are two jobs
class Job:
    """One uploaded image and what became of it."""

    id: str
    session: str
    name: str  # the upload's (sanitised) file name
    data: bytes
    choice: ModelChoice
    width: int
    height: int
    state: State = "queued"
    loading: bool = False  # building the network for its setting (a new strength takes a moment)
    removed: bool = False  # taken off its page while running: forgotten when the worker lets go of it
    tiles_done: int = 0
    tiles_total: int = 0
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    tiles_started: float | None = None
    finished: float | None = None
    error: str | None = None
    upload_unreadable: bool = False  # it failed as its file is no image srfeat reads: no "Try again" on its card
    result: bytes | None = None
    result_width: int = 0
    result_height: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    notes: list[str] = field(default_factory=list)  # what was lost in the result, said on its card
    client_ref: str = ""  # the page's own name for the upload, so that it knows the job when the stream shows it first
    # What `inspect_upload` found from the header ("": the upload's own, `output_extension`), made what the pixels
    # as read call for when the job runs (`srfeat.web.result_format.decoded_result_format`).
    result_extension: str = ""
    result_keeps: tuple[str, ...] = ()  # what the result's format keeps that the upload's own would drop
    views: dict[str, tuple[bytes, str]] = field(
        default_factory=dict
    )  # (data, media type) the page shows, made on request

    @property
    def result_name(self) -> str:
        stem = Path(self.name).stem or "image"
        return f"{stem}{self.choice.file_tag}{self.result_extension or output_extension(self.name)}"

    def seconds_left(self, now: float, seconds_per_pixel: float | None) -> float | None:
        """Time left: from the pace of this job's tiles once one is done, before that from the
        pace of the last job (None when there is neither)."""
        if self.state != "running" or self.tiles_started is None:
            return None
        elapsed = now - self.tiles_started
        if self.tiles_done > 0:
            return elapsed / self.tiles_done * (self.tiles_total - self.tiles_done)
        if seconds_per_pixel is None:
            return None
        return max(0.0, seconds_per_pixel * self.width * self.height - elapsed)

    def describe(self, now: float, ahead: int | None, seconds_per_pixel: float | None) -> dict[str, Any]:
        """What the page shows for the job (JSON): `ahead`, the jobs before it in the queue (None unless
        it is queued), `seconds_per_pixel` the pace of the queue's last finished job (`seconds_left`)."""
        finished = self.finished if self.finished is not None else now
        return {
            "id": self.id,
            "ref": self.client_ref,
            "name": self.name,
            "model": self.choice.model,
            "strength": self.choice.strength,
            "label": self.choice.label,
            "width": self.width,
            "height": self.height,
            "state": self.state,
            "loading": self.loading,
            "ahead": ahead,
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "seconds_left": self.seconds_left(now, seconds_per_pixel),
            "seconds": None if self.started is None else round(finished - self.started, 2),
            "error": self.error,
            "upload_unreadable": self.upload_unreadable,
            "notes": self.notes,
            "result_name": self.result_name if self.state == "done" else None,
            "result_width": self.result_width,
            "result_height": self.result_height,
            "result_bytes": len(self.result) if self.result is not None else None,
        }


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable file that keeps what is written until `take` hands it on."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    # RawIOBase.write takes any buffer (typeshed's ReadableBuffer, not nameable on Python 3.10);
    # the bytes-like objects spelled here are the ones a writer hands it.
    def write(self, data: bytes | bytearray | memoryview) -> int:  # pyright: ignore[reportIncompatibleMethodOverride]
        self._chunks.append(bytes(data))  # the same object when it is bytes already (a result): no copy
        return len(data)

    def take(self) -> list[bytes]:
        chunks, self._chunks = self._chunks, []
        return [chunk for chunk in chunks if chunk]


def zip_chunks(jobs: list[Job]) -> Iterator[bytes]:
    """The results as a zip (stored: images are compressed already), in pieces as it is written;
    duplicate names get `_2`, `_3`, also those that differ only in case (`Photo.png`, `photo.png`),
    which Windows and macOS would unpack as one file."""
    sink = _ChunkSink()
    used: set[str] = set()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED)  # unseekable: sizes go after each file
    for job in jobs:
        name = job.result_name
        stem, dot, extension = name.rpartition(".")
        count = 2
        while name.casefold() in used:
            name = f"{stem}_{count}{dot}{extension}"
            count += 1
        used.add(name.casefold())
        archive.writestr(name, job.result or b"")
        yield from sink.take()
    archive.close()
    yield from sink.take()
