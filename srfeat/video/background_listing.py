"""The container's listing of its frames (`ListedFrames`), scanned in a thread of its own while the first frames decode.

A scan reads the whole file (a 2-hour Matroska file's walk takes seconds: about 20 µs an element), and the frames it
names lost are told to `LostFrames` among the packets sent and the frames shown, whose order places them. So what the
decoding tells `LostFrames` is held, in order, until the scan is done, then told with the listing's findings in their
places, as if the listing had been there from the first frame: the frames named lost, and when they are said, are the
same. A scan that fails raises its error where the listing is next needed; one no longer wanted (the upscale failed or
was interrupted) is stopped and waited for, its file closed. The reading waits for the scan in the decoding thread,
which Ctrl-C never reaches: the wait also watches the upscale's own stop (`abandoned`), set when the main thread is
interrupted or a stage fails, and tells the scan to stop then, rather than waiting for the whole file to be walked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srfeat.video.listed_frames import FAR_S, ListedFrames
from srfeat.video.lost_frames import LostFrames
from srfeat.video.matroska_scan import scan_matroska
from srfeat.video.probe import time_base_of
from srfeat.video.transport_scan import scan_transport_stream

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

__all__ = ["BackgroundListing", "container_scan"]

WAIT_S = 0.1  # how often a wait for the scan looks at `abandoned` (the pipeline's queues wait as long)

Scan = Callable[[threading.Event], "ListedFrames | None"]  # told to stop by the event: then None


def container_scan(source: Path, container: InputContainer, video: VideoStream) -> Scan | None:
    """The scan that lists `video`'s frames in `source`: its container's (MPEG-TS, Matroska), or None."""
    formats = container.format.name.split(",")
    if "mpegts" in formats:
        return lambda stop: scan_transport_stream(source, video.id, stop=stop)
    if "matroska" in formats:
        rank = [stream.index for stream in container.streams.video].index(video.index)
        return lambda stop: scan_matroska(source, rank, stop=stop)
    return None


@dataclass(frozen=True)
class PacketFacts:
    """What `LostFrames.sent` and `ListedFrames.given` read of a packet, kept while it is held (not its data)."""

    size: int
    pts: int | None
    dts: int | None
    pos: int | None
    is_discard: bool
    is_keyframe: bool

    @classmethod
    def of(cls, packet: Any) -> PacketFacts:
        return cls(packet.size, packet.pts, packet.dts, packet.pos, packet.is_discard, packet.is_keyframe)


class BackgroundListing:
    """Tells `lost` what the decoding sees (`sent`, `shown`, `passed_over`, and `given`: the demuxer's video packets
    against the listing), held while `scan` runs in a daemon thread (`start`); `finish` waits for it and gives the
    listing (None: the container lists none, or no scan, or `abandoned` was set: the upscale is stopping)."""

    def __init__(
        self, scan: Scan | None, lost: LostFrames, video: VideoStream, abandoned: threading.Event | None = None
    ) -> None:
        self.lost = lost
        self.far = round(FAR_S / time_base_of(video))
        self.listed: ListedFrames | None = None
        self._held: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = None  # None: told at once
        self._scan = scan
        self._scanned: ListedFrames | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._abandoned = abandoned
        self._done = threading.Event()  # set after `_scanned` or `_error`: the decoding thread reads them then
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._scan is None or self._thread is not None:
            return
        self._held = []
        self._thread = threading.Thread(target=self._run, args=(self._scan,), name="srfeat-scan", daemon=True)
        self._thread.start()

    def _run(self, scan: Scan) -> None:
        try:
            self._scanned = scan(self._stop)
        except BaseException as error:  # noqa: BLE001 - raised in the decoding thread, where the listing is needed
            self._error = error
        finally:
            self._done.set()

    def given(self, packet: Any) -> None:
        """The demuxer gave video `packet`: the frames listed before it that no packet had are lost there."""
        self._tell(self._given, self._kept(packet))

    def after_last(self) -> None:
        """The file was read to its end: the frames listed after the last packet given are lost there."""
        self.finish()
        for time in self.listed.after_last() if self.listed is not None else ():
            self.lost.passed_over(time)

    def sent(self, packet: Any, shown_at: int | None = None) -> None:
        self._tell(self.lost.sent, self._kept(packet), shown_at)

    def shown(self, pts: int | None, index: int) -> None:
        self._tell(self.lost.shown, pts, index)

    def passed_over(self, shown_at: int) -> None:
        self._tell(self.lost.passed_over, shown_at)

    def finish(self) -> ListedFrames | None:
        """Waits for the scan and tells what was held: `lost` has been told all; the listing."""
        if self._held is not None:
            # in a loop with a timeout, not one wait: a Ctrl-C or a failure elsewhere is seen while the scan runs
            while not self._done.wait(WAIT_S):
                if self._abandoned is not None and self._abandoned.is_set():
                    self._stop.set()  # the scan stops at its next element and gives no listing
            self._catch_up()
        return self.listed

    def close(self) -> None:
        """The listing is no longer wanted (or was had): a scan still running is stopped and waited for."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _given(self, packet: Any) -> None:
        for time in self.listed.given(packet) if self.listed is not None else ():
            self.lost.passed_over(time)

    def _kept(self, packet: Any) -> Any:
        """`packet`, or while events are held what is read of it: the packet may be reused, and its data is big."""
        return packet if self._held is None else PacketFacts.of(packet)

    def _tell(self, event: Callable[..., object], *args: Any) -> None:
        if self._held is not None and self._done.is_set():
            self._catch_up()
        if self._held is None:
            event(*args)
        else:
            self._held.append((event, args))

    def _catch_up(self) -> None:
        """The scan is done: the listing taken (its error raised), and what was held told in order."""
        held, self._held = self._held or [], None
        if self._error is not None:
            raise self._error
        self.listed = self._scanned
        if self.listed is not None:
            self.listed.far = self.far
        for event, args in held:
            event(*args)
