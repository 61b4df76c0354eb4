"""Frames missing inside what was upscaled: lost to damage without an error from FFmpeg.

Two ways a damaged file loses a frame silently. The decoder may take a packet and give no frame for it
(its timestamp never comes out), and a demuxer may skip a damaged packet altogether (MPEG-TS does:
nothing is sent, and only the frames' timestamps show the hole). Both are found between two frames that
came out, so frames a decoder never shows at a file's start (an open GOP's leading frames, an edit
list's hidden ones) and frames after the last one wanted are not counted (but the file's first keyframe is where
it never came out and later frames did: `_lost_first_keyframe`); packets sent that gave no frame
by the end of a file read to its end are (`ended`). Frames are counted as they decode, so frames lost before
the range's start move the range later in the file: said apart (`_report_late_start`). A skipped packet is counted
from the time between two frames only in a container whose demuxer skips packets so (`SILENT_SKIPS`), and
only where every interval of the stream is a whole number of frames: in a variable frame rate stream a long
interval is a frame held longer, not one lost. Elsewhere a gap of whole frames is the file's own (frames an
encoder had no time for, a video with repeated frames taken out) and damage makes FFmpeg's demuxer fail. Frames a
demuxer passed over where no later frame shows a gap (at a file's end; in Matroska, whose times say nothing) are
found from the container's own bytes (`ListedFrames`) and told here as `passed_over`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srfeat.video import FrameRange, frames_option
from srfeat.video.probe import seconds_of, time_base_of

if TYPE_CHECKING:
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

__all__ = ["LostFrames"]

# Places named in the warning; the rest are counted.
PLACES_SHOWN = 5

# Container formats (FFmpeg's names) whose demuxer drops a packet it cannot parse without a word.
SILENT_SKIPS = frozenset({"mpegts"})


def places_of(gaps: list[tuple[Gap, int]]) -> str:
    """Where frames were lost: "1 before frame 0 (0.00 s), 1 after frame 8 (0.75 s), ...", the first
    `PLACES_SHOWN` named."""
    places = ", ".join(
        f"{lost} {'before frame 0' if gap.after < 0 else f'after frame {gap.after}'} ({gap.time:.2f} s)"
        for gap, lost in gaps[:PLACES_SHOWN]
    )
    if len(gaps) > PLACES_SHOWN:
        places += f" and {len(gaps) - PLACES_SHOWN} more places"
    return places


@dataclass(frozen=True)
class Gap:
    """Frames missing between frame `after` (-1: before the first frame shown) and the next one shown: `dropped`
    sent to the decoder and never shown, `skipped` the whole frames of time beyond one between them (0 where the
    stream states no frame rate)."""

    after: int
    time: float
    interval: int  # ticks between the two frames shown
    dropped: int
    skipped: int
    at_end: bool = False  # after the last frame shown: no later frame, so the output ends early there


class LostFrames:
    """Watches the packets sent to the decoder and the frames it shows, in order, and says at the end how many
    frames of the range are missing and where (`report`)."""

    def __init__(
        self, source: Path, video: VideoStream, frames: FrameRange, container_format: str, *, command_line: bool = False
    ) -> None:
        self.source = source
        self.frames = frames
        self.command_line = command_line
        self.time_base = time_base_of(video)
        rate = video.average_rate
        # One frame's duration in ticks, exact (a 1/1000 time base at 12 frames a second: 83.33 ticks).
        # None where gaps in time are not counted (no rate, or a demuxer that fails on damage: `SILENT_SKIPS`).
        skips = SILENT_SKIPS.intersection(container_format.split(","))  # "mov,mp4,m4a,3gp,3g2,mj2": one demuxer
        self.period: Fraction | None = 1 / (Fraction(rate) * self.time_base) if rate and skips else None
        # Timestamps of packets sent whose frame has not come out, each with whether the demuxer passed it over
        # (never decoded): kept together, so that timestamps starting over forget both for the part before.
        self.sent_times: dict[int, bool] = {}
        self.decoder_lost_at_end = 0  # packets the decoder took after the last frame shown and gave no frame for
        self.next_part: dict[int, bool] | None = None  # the same, sent after the timestamps started over
        self.last_dts: int | None = None
        self.last_pts: int | None = None
        self.last_index: int | None = None
        self.first_keyframe: int | None = None  # the first packet's timestamp, where it is a keyframe
        self.any_sent = False
        self.start_time: float | None = None  # when the range's first frame is shown
        self.gaps: list[Gap] = []
        self.irregular = False  # an interval that is no whole number of frames: variable frame rate
        self.shortest: int | None = None  # the shortest interval between two frames shown

    def sent(self, packet: Any, shown_at: int | None = None) -> None:
        """A video packet is about to go to the decoder (not one the file marks as never shown); `shown_at`: where its
        frame comes out, where the packet's own timestamp is no guide."""
        if not packet.size or packet.pts is None or packet.is_discard:
            return
        if not self.any_sent:
            self.any_sent = True
            self.first_keyframe = (packet.pts if shown_at is None else shown_at) if packet.is_keyframe else None
        if packet.dts is not None:
            if self.last_dts is not None and packet.dts < self.last_dts:
                # Timestamps that start over (files joined end to end): the next part's packets go to the
                # decoder before the last of this part's frames come out, and are kept apart until its frames do.
                self.next_part = {}
            self.last_dts = packet.dts
        self._due(packet.pts if shown_at is None else shown_at)

    def passed_over(self, shown_at: int) -> None:
        """A frame was due to be shown at `shown_at` in a packet the demuxer passed over (an AVI's chunk whose header
        is damaged: `AviIndex`)."""
        self._due(shown_at, passed_over=True)

    def _due(self, shown_at: int, *, passed_over: bool = False) -> None:
        due = self.sent_times if self.next_part is None else self.next_part
        due[shown_at] = due.get(shown_at, False) or passed_over  # passed over once: never decoded

    def shown(self, pts: int | None, index: int) -> None:
        """Frame `index` came out of the decoder with timestamp `pts` (the file's, before any repair; in a file of
        packed B-frames, the decoding slot it came out at, as the packets' are: its own go back and forth)."""
        # Only the first frame shown tells whether the first keyframe came out (one without a time tells nothing).
        first_keyframe, self.first_keyframe = self.first_keyframe, None
        if pts is None:
            self.last_pts = None
            return
        self.sent_times.pop(pts, None)
        self.last_index = index
        if index == self.frames.start:
            self.start_time = seconds_of(pts, self.time_base)
        # Frames come out in presentation order: a packet sent earlier that should have come before this one
        # never will. Before the first frame shown, such frames are leading ones no decoder shows.
        missed = [sent for sent in self.sent_times if sent < pts]
        for sent in missed:
            del self.sent_times[sent]
        last, self.last_pts = self.last_pts, pts
        if last is not None and pts <= last:
            # Timestamps that start over: the packets of the part before that never came out are forgotten.
            next_part = self.next_part or {}
            self.sent_times = {sent: over for sent, over in next_part.items() if sent > pts}  # less: leading frames
            self.next_part = None
            return
        if last is None:
            self._lost_first_keyframe(first_keyframe, missed, pts)
            return
        interval = pts - last
        self.shortest = interval if self.shortest is None else min(self.shortest, interval)
        skipped = self._frames_skipped(interval)
        if missed or skipped:  # before the range's start too: the range then starts late
            self.gaps.append(Gap(index - 1, seconds_of(last, self.time_base), interval, len(missed), skipped))

    def _lost_first_keyframe(self, first: int | None, missed: list[int], pts: int) -> None:
        """The file's first packet, a keyframe, gave no frame and later ones did (its picture damaged, say): a frame
        lost before frame 0. Leading frames come after their keyframe and are shown before it; that keyframe is not
        one of them."""
        if first is not None and first in missed:
            self.gaps.append(Gap(-1, seconds_of(first, self.time_base), pts - first, 1, 0))

    def _frames_skipped(self, interval: int) -> int:
        if self.period is None:
            return 0
        whole = round(interval / self.period)
        if whole < 1 or abs(interval - whole * self.period) > 1 + self.period / 20:  # ticks are rounded
            self.irregular = True
            return 0
        return whole - 1

    def ended(self) -> None:
        """The file was read to its end (not stopped at the range's end) and the decoder flushed: packets sent
        after the last frame shown whose frames never came out are lost there, where no later frame shows it."""
        if self.last_pts is None or self.last_index is None:
            return
        after = [sent for sent in self.sent_times if sent > self.last_pts]
        self.decoder_lost_at_end = sum(not self.sent_times[sent] for sent in after)
        if after and self.shortest:
            interval = max(after) - self.last_pts + self.shortest  # to where the next frame would have been
            time = seconds_of(self.last_pts, self.time_base)
            self.gaps.append(Gap(self.last_index, time, interval, len(after), 0, at_end=True))

    def lost_by_decoder_at_end(self) -> int:
        """The range's frames lost after the last one shown (`ended`) whose packets went to the decoder."""
        return min(self.decoder_lost_at_end, sum(lost for gap, lost in self.missing() if gap.at_end))

    def missing(self) -> list[tuple[Gap, int]]:
        """Each gap in the range with the frames lost there."""
        return [(gap, lost) for gap, lost in self._counted() if self._in_range(gap)]

    def missing_before(self) -> list[tuple[Gap, int]]:
        """Each gap before the range's first frame with the frames lost there: the range starts that much late."""
        return [(gap, lost) for gap, lost in self._counted() if not self._in_range(gap)]

    def _in_range(self, gap: Gap) -> bool:
        """A gap before the first frame shown (the file's first keyframe lost) is the range's where it starts there."""
        return gap.after >= self.frames.start or (gap.after < 0 and self.frames.start == 0)

    def _counted(self) -> list[tuple[Gap, int]]:
        counted = [(gap, max(self._room_for(gap), 0 if self.irregular else gap.skipped)) for gap in self.gaps]
        return [(gap, lost) for gap, lost in counted if lost]

    def _room_for(self, gap: Gap) -> int:
        """The packets the decoder gave no frame for in `gap`, as many as the gap has room for as frames (of the
        shortest interval between frames shown): a field-coded stream sends its second fields as packets of
        their own, half a frame after the first, and the decoder gives one frame for the two."""
        if gap.after < 0:
            return gap.dropped  # the keyframe before the first frame shown, whose time it had
        if not self.shortest:
            return 0
        return min(gap.dropped, math.floor(gap.interval / self.shortest * 1.05) - 1)

    def report(self) -> None:
        self._report_late_start(self.missing_before())
        missing = self.missing()
        if not missing:
            return
        total = sum(lost for _, lost in missing)
        them = "them" if total > 1 else "it"
        logger.warning(
            "%s: %d frame%s %s could not be decoded and %s missing from the output (a damaged file?): %s; %s",
            self.source,
            total,
            "s" if total > 1 else "",
            "of the video"
            if self.frames.is_everything
            else f"inside {frames_option(self.frames, command_line=self.command_line)}",
            "are" if total > 1 else "is",
            places_of(missing),
            self._what_the_output_does(missing, them),
        )

    def _what_the_output_does(self, missing: list[tuple[Gap, int]], them: str) -> str:
        """Frames lost between two shown are jumped over; frames lost after the last one shown end it early,
        where pointing to the frames before the gap would name the output already made; a first keyframe lost
        starts it late, and no range leaves that out (no frame comes before it)."""
        get_back = f"repair or replace the file to get {them} back"
        first_lost = missing[0][0].after < 0
        inside = [gap for gap, _ in missing if not gap.at_end and gap.after >= 0]
        said = ["starts with the frame after it"] if first_lost else []
        if inside:
            jumps = f"jumps over {them}" if len(inside) == len(missing) else "jumps over the gaps between frames"
            said.append(f"{jumps}, its timing kept")
        if missing[-1][0].at_end:
            said.append(f"ends early, after frame {missing[-1][0].after}")
        if not inside or first_lost:
            return f"the output {', and '.join(said)}; {get_back}"
        before = frames_option(FrameRange(self.frames.start, inside[0].after + 1), command_line=self.command_line)
        return f"the output {', and '.join(said)}; {get_back}, or {before} upscales the frames before the first gap"

    def _report_late_start(self, before: list[tuple[Gap, int]]) -> None:
        """Frames are counted as they decode, so frames lost before the range's start move it later in the file."""
        if not before or self.start_time is None:
            return
        total = sum(lost for _, lost in before)
        places = places_of(before)
        logger.warning(
            "%s: %d frame%s before %s could not be decoded (a damaged file?): %s; frames are counted as they "
            "decode, so the range starts %d frame%s late, at %.2f s; repair or replace the file to get the frames "
            "asked for",
            self.source,
            total,
            "s" if total > 1 else "",
            frames_option(self.frames, command_line=self.command_line),
            places,
            total,
            "s" if total > 1 else "",
            self.start_time,
        )
