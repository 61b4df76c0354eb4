"""A Matroska (or WebM) file's video frames and breaks, read from its Clusters: what FFmpeg's demuxer passes over.

FFmpeg's Matroska demuxer meets a damaged block (its EBML size one byte off) by resyncing at the next Cluster, and
the blocks it passed over are lost with a word only at its debug log level. Gaps in the frames' times cannot show it:
a variable frame rate file (decimated, or recorded so) holds frames for any time. So the Clusters are walked here,
element by element (a block's payload skipped, so the cost is per element, not per byte): each video block is a frame
listed (`ListedFrames`), and an element that runs past its Cluster or an ID no Cluster holds is a break, past which
the rest of the Cluster is searched for blocks whose chain of elements holds (the frames the demuxer lost there).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import BinaryIO

from srfeat.video.listed_frames import Break, ListedFrames

__all__ = ["scan_matroska"]

EBML_HEADER, SEGMENT, CLUSTER, TRACKS = 0x1A45DFA3, 0x18538067, 0x1F43B675, 0x1654AE6B
TRACK_ENTRY, TRACK_NUMBER, TRACK_TYPE, VIDEO_TRACK = 0xAE, 0xD7, 0x83, 1
TIMECODE, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK = 0xE7, 0xA3, 0xA0, 0xA1
# The Segment's children (SeekHead, Info, Tracks, Cues, Attachments, Chapters, Tags, Cluster) and the elements
# that start a file: a Cluster of unknown size (written live) ends where one begins, as FFmpeg's ends it.
TOP_LEVEL = {0x114D9B74, 0x1549A966, TRACKS, 0x1C53BB6B, 0x1941A469, 0x1043A770, 0x1254C367, CLUSTER}
TOP_LEVEL |= {EBML_HEADER, SEGMENT}
VOID, CRC = 0xEC, 0xBF
# Timecode, SilentTracks, Position, PrevSize, SimpleBlock, BlockGroup, EncryptedBlock
CLUSTER_CHILDREN = {TIMECODE, 0x5854, 0xA7, 0xAB, SIMPLE_BLOCK, BLOCK_GROUP, 0xAF, VOID, CRC}
HEADER_READ = 16  # an element's ID (4 bytes at most) and size (8), and a block's track, timecode and flags
RESYNC_WINDOW = 1 << 20  # bytes searched at once for where the elements hold again
RESYNC_CANDIDATES = re.compile(rb"\x1f\x43\xb6\x75|[\xa3\xa0]")  # a Cluster's ID, a block's, a BlockGroup's
BREAKS_KEPT = 100


class _DamagedError(Exception):
    """The elements do not hold at a place: raised inside a Cluster's walk."""


class _StoppedError(Exception):
    """The scan was told to stop: its listing is no longer wanted."""


def scan_matroska(source: Path, video_rank: int, *, stop: threading.Event | None = None) -> ListedFrames | None:
    """The frames the `video_rank`-th video track of `source` (0: the first) lists, and where its Clusters are
    broken; None where the file is no Matroska file it can read, or has no such track, or `stop` was set."""
    try:
        with source.open("rb") as file:
            scan = _Scan(file, video_rank, stop)
            scan.run()
            return ListedFrames(scan.places, scan.breaks) if scan.track is not None else None
    except (OSError, _StoppedError):
        return None


class _Scan:
    def __init__(self, file: BinaryIO, video_rank: int, stop: threading.Event | None = None) -> None:
        self.file = file
        self.stop = stop
        self.total = file.seek(0, 2)
        self.video_rank = video_rank
        self.track: int | None = None
        self.places: list[tuple[int, int]] = []
        self.breaks: list[Break] = []

    def run(self) -> None:
        """Each Segment (files joined end to end hold several) walked from its first child."""
        at = 0
        while (element := self._element(at)) is not None:
            ident, data, size = element
            if ident == SEGMENT:
                at = self._segment(data, self.total if size is None else min(data + size, self.total))
            elif ident == EBML_HEADER and size is not None:
                at = data + size
            else:
                return

    def _segment(self, start: int, end: int) -> int:
        at = start
        while at < end and (element := self._element(at)) is not None:
            ident, data, size = element
            if ident == CLUSTER and self.track is not None:
                at = self._cluster(data, None if size is None else data + size, end)
            elif ident in (EBML_HEADER, SEGMENT):
                return at  # the next file joined on
            elif size is None or data + size > end:
                return end  # FFmpeg cannot go on past it either: the file's end, or a damage read as its cut
            else:
                if ident == TRACKS:
                    self.track = self._video_track(data, data + size)
                at = data + size
        return end

    def _cluster(self, start: int, end: int | None, segment_end: int) -> int:
        """Walks a Cluster's children from `start` (`end` None: of unknown size); where the Segment's walk goes on."""
        limit = segment_end if end is None else min(end, segment_end)
        timecode, at = 0, start
        while at < limit:
            element = self._element(at)
            if element is None:
                return limit
            ident, data, size = element
            if ident in TOP_LEVEL:  # a Cluster of unknown size ends here; a known size one past here was enlarged
                return at
            try:
                if ident not in CLUSTER_CHILDREN or size is None:
                    self._block_renamed(at, limit, timecode)
                    raise _DamagedError(f"an element of unknown ID 0x{ident:X} inside a Cluster")
                if data + size > limit:
                    if data + size > self.total:
                        return limit  # the file ends inside it: cut short, which the length check says
                    raise _DamagedError(f"an element of {size} bytes that runs past its Cluster's end")
                if ident == TIMECODE:
                    timecode = self._unsigned(data, size)
                elif ident == SIMPLE_BLOCK:
                    self._block(data, timecode)
                elif ident == BLOCK_GROUP:
                    self._group(data, data + size, timecode)
                at = data + size
            except _DamagedError as damage:
                if len(self.breaks) < BREAKS_KEPT:
                    self.breaks.append(Break(at, str(damage)))
                at = self._resync(at + 1, limit)
        return limit

    def _block_renamed(self, at: int, limit: int, timecode: int) -> None:
        """An element of unknown ID whose size holds (the elements after it do): a block whose ID was damaged, which
        FFmpeg passes over. Its frame is listed where it is the video track's."""
        element = self._sized(at)
        if element is not None and self._holds(at, limit, depth=2, any_id=True):
            self._block(element[1], timecode)

    def _group(self, start: int, end: int, timecode: int) -> None:
        at = start
        while at < end:
            element = self._sized(at)
            if element is None or element[1] + element[2] > end:
                raise _DamagedError("a BlockGroup whose elements run past its end")
            ident, data, size = element
            if ident == BLOCK:
                self._block(data, timecode)
            at = data + size

    def _block(self, data: int, timecode: int) -> None:
        """A block's frame, where it is the video track's: its place and time (the Cluster's, plus its own)."""
        self.file.seek(data)
        head = self.file.read(HEADER_READ)
        track = _vint(head, 0)
        if track is None or track[0] != self.track or track[1] + 2 > len(head):
            return
        relative = int.from_bytes(head[track[1] : track[1] + 2], "big", signed=True)
        self.places.append((data, timecode + relative))

    def _resync(self, start: int, limit: int) -> int:
        """The first place from `start` on where a block or group begins whose elements hold to its Cluster's end,
        or a Cluster begins (FFmpeg's demuxer resyncs there: the blocks before it are lost to it); `limit` where none
        is found."""
        while start < limit:
            self._check_stop()
            self.file.seek(start)
            window = self.file.read(min(RESYNC_WINDOW, limit - start))
            for found in RESYNC_CANDIDATES.finditer(window):
                at = start + found.start()
                if len(found.group()) == 4 or self._holds(at, limit, depth=2):
                    return at
            start += max(len(window) - 3, 1)  # a Cluster's ID across the window's end
        return limit

    def _holds(self, at: int, limit: int, depth: int, *, any_id: bool = False) -> bool:
        """Whether an element of a Cluster begins at `at` (`any_id`: the first of any ID), ends by `limit`, and is
        followed by `depth` - 1 more."""
        element = self._sized(at)
        if element is None:
            return False
        ident, data, size = element
        end = data + size
        if ident in TOP_LEVEL and not any_id:
            return True
        if (ident not in CLUSTER_CHILDREN and not any_id) or end > limit:
            return False
        return end == limit or depth <= 1 or self._holds(end, limit, depth - 1)

    def _video_track(self, start: int, end: int) -> int | None:
        """The track number of the `video_rank`-th video TrackEntry in Tracks."""
        videos: list[int] = []
        for ident, data, size in self._children(start, end):
            if ident == TRACK_ENTRY:
                fields = {child: (at, length) for child, at, length in self._children(data, data + size)}
                if TRACK_NUMBER in fields and self._unsigned(*fields.get(TRACK_TYPE, (0, 0))) == VIDEO_TRACK:
                    videos.append(self._unsigned(*fields[TRACK_NUMBER]))
        return videos[self.video_rank] if self.video_rank < len(videos) else None

    def _children(self, start: int, end: int) -> list[tuple[int, int, int]]:
        children: list[tuple[int, int, int]] = []
        at = start
        while at < end and (element := self._sized(at)) is not None:
            ident, data, size = element
            children.append((ident, data, size))
            at = data + size
        return children

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _StoppedError

    def _unsigned(self, data: int, size: int) -> int:
        self.file.seek(data)
        return int.from_bytes(self.file.read(min(size, 8)), "big")

    def _sized(self, at: int) -> tuple[int, int, int] | None:
        """The element at `at`, where its size is known."""
        element = self._element(at)
        if element is None or element[2] is None:
            return None
        return element[0], element[1], element[2]

    def _element(self, at: int) -> tuple[int, int, int | None] | None:
        """The element at `at`: its ID, where its data starts, its size (None: unknown); None where none can be
        read there."""
        self._check_stop()  # every walk reads its elements here
        self.file.seek(at)
        head = self.file.read(HEADER_READ)
        if not head or not head[0] or head[0] < 0x10:  # an ID is 4 bytes at most
            return None
        id_length = 9 - head[0].bit_length()
        size = _vint(head, id_length)
        if size is None:
            return None
        ident = int.from_bytes(head[:id_length], "big")
        unknown = size[0] == (1 << (7 * size[1])) - 1
        return ident, at + id_length + size[1], None if unknown else size[0]


def _vint(data: bytes, at: int) -> tuple[int, int] | None:
    """An EBML variable-length integer at `at`: its value (the length marker taken off) and its length."""
    if at >= len(data) or not data[at]:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    return int.from_bytes(data[at : at + length], "big") & ((1 << (7 * length)) - 1), length
