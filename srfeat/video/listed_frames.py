"""The video frames a container lists, read from its bytes apart from FFmpeg: those its demuxer never gave were lost.

FFmpeg's MPEG-TS and Matroska demuxers resync past damage without an error (Matroska's says so only at its debug log
level), and the frames they pass over leave no trace where no later frame shows a gap in time: at a file's end, or in
a variable frame rate. A scan of the container (`transport_scan`, `matroska_scan`) lists each video frame's byte
position and time, and the places where its structure was broken; the frames listed whose time no packet the demuxer
gave had are lost (`LostFrames.passed_over`), and a break that lost no frame named is said as damage where the video
may be missing frames.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srfeat.video.probe import seconds_of

logger = logging.getLogger(__name__)

__all__ = ["FAR_S", "Break", "ListedFrames"]

# Timestamps of the packets given lately, to match a listed frame against: a demuxer's parser may give a frame a
# little after the place the container lists it at (B-frames reordered, a frame split over two packets).
RECENT_PACKETS = 256
BREAKS_SHOWN = 3  # places named in the warning; the rest are counted
# A lost frame listed this far in time from the last packet given has its time damaged: not placed among the frames.
FAR_S = 10.0


@dataclass(frozen=True)
class Break:
    """A place where the container's structure is broken for the video: `where` its byte offset, `what` happened."""

    where: int
    what: str


@dataclass
class ListedFrames:
    """The video frames a container lists (`places`: byte position and timestamp, in the file's order) and where the
    video's structure was broken (`breaks`); `given` follows the demuxer's video packets against them."""

    places: list[tuple[int, int]]
    breaks: list[Break]
    wrap: int | None = None  # where the timestamps start over (MPEG-TS: 33 bits), which FFmpeg's continue past
    far: int | None = None  # ticks from the last packet given past which a lost frame's time is its damage's
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_PACKETS))  # wrapped as listed
    recent_times: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_PACKETS))  # as FFmpeg's go on
    last_given: int | None = None  # the last packet's timestamp, on FFmpeg's timeline
    next_place: int = 0
    matched: int = 0  # frames listed that a packet given had: none, and the scan misreads the file (no frame is lost)
    lost_any: bool = False
    read_to: int = 0  # the place of the last video packet given: breaks past it were not read

    def given(self, packet: Any) -> list[int]:
        """The demuxer gave video `packet`: the timestamps of the frames listed before its place that no packet
        had (passed over by the demuxer); at the stream's end (an empty packet), all the rest."""
        place: int | None = packet.pos if packet.pos is not None and packet.pos >= 0 else None
        if not packet.size and place is None:  # the stream's end, before the decoder's flush: frames lost due in order
            return self.after_last()
        if packet.pts is not None:
            self.recent.append(packet.pts % self.wrap if self.wrap else packet.pts)
            self.recent_times.append(packet.pts)
            self.last_given = packet.pts
        if place is None:
            return []
        self.read_to = max(self.read_to, place)
        return self._passed(place)

    def after_last(self) -> list[int]:
        """The file was read to its end: the timestamps of the frames listed after the last packet given."""
        lost = self._passed(None)
        self.read_to = max([self.read_to, *(place.where + 1 for place in self.breaks)])
        return lost

    def _passed(self, before: int | None) -> list[int]:
        lost: list[int] = []
        while self.next_place < len(self.places) and (before is None or self.places[self.next_place][0] < before):
            place, time = self.places[self.next_place]
            if time in self.recent:
                self.matched += 1
            elif self._time_damaged(self._on_timeline(time)):
                self.breaks.append(Break(place, "a frame whose time is damaged"))  # lost, but not when
            else:
                lost.append(self._on_timeline(time))
            self.next_place += 1
        if not self.matched:  # the first frames listed are not the ones given: the times are read otherwise
            return []
        self.lost_any = self.lost_any or bool(lost)
        return lost

    def _time_damaged(self, time: int) -> bool:
        """Whether a lost frame's `time` cannot be where it is listed: before every packet given lately (B-frames
        come before the frames decoded just before them, not before all), or `far` past the last one."""
        if self.last_given is None:
            return False
        return time < min(self.recent_times) or (self.far is not None and time > self.last_given + self.far)

    def _on_timeline(self, time: int) -> int:
        """A listed frame's time as FFmpeg's timestamps have it: the wrap nearest the last packet given."""
        if not self.wrap or self.last_given is None:
            return time
        ahead = (time - self.last_given) % self.wrap
        return self.last_given + (ahead - self.wrap if ahead > self.wrap // 2 else ahead)

    def report(self, source: Path, time_base: Any, *, frames_missing: bool) -> None:
        """Breaks in the video's structure where no lost frame was named (`frames_missing`: some were): the
        frames there may be damaged or missing, and nothing else says so."""
        breaks = [place for place in self.breaks if place.where < self.read_to]
        if not breaks or frames_missing or self.lost_any:
            return
        places = ", ".join(
            f"at byte {place.where}{self._time_at(place.where, time_base)} ({place.what})"
            for place in breaks[:BREAKS_SHOWN]
        )
        if len(breaks) > BREAKS_SHOWN:
            places += f" and {len(breaks) - BREAKS_SHOWN} more places"
        logger.warning(
            "%s: the file is damaged %s; FFmpeg reads past it without an error, and frames there may be "
            "damaged or missing from the output; repair or replace the file",
            source,
            places,
        )

    def _time_at(self, where: int, time_base: Any) -> str:
        """The time of the last frame listed before byte `where`."""
        before = [time for place, time in self.places if place < where]
        return f", after the frame at {seconds_of(before[-1], time_base):.2f} s" if before else ""
