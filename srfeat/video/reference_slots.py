"""The times of the reference pictures of an MPEG-4 Part 2 AVI with B-frames, where a damaged picture hid its type.

An AVI stores only decoding slots. FFmpeg gives a B-frame its own slot and a reference picture (I or P) the slot of
the next reference after it in decoding order, reading each picture's type; a damaged picture's type cannot be read
and is taken for a reference's. Where it was a B-frame, the reference before it was given the damaged picture's slot,
a frame early: the hole in the output's timing, and the frame named lost, came a frame late (the frame before the
one the viewer misses, and a picture shown early then held). Which it was, a B-frame or a reference, no timestamp
says; each picture's header states its own time, and the reference's time counted on from the frame shown before
it says which of the two slots is its own.

A packed AVI's frames come out a packet after their own, and later past a lost picture: each is shown a slot after
the packet it came from, a packed P-frame a slot after its placeholder, whose slot its B-frame takes (`PackedSlots`).

FFmpeg reads no picture types from H.264 in an AVI: each packet's time is the slot after its own, in decoding order,
and the frames, shown in presentation order, carry their packets' (`EarliestSlots`).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from srfeat.video.not_coded import B_VOP, VOP_START, BitReader, PictureCounter, vop_header

__all__ = ["EarliestSlots", "PackedSlots", "ReferenceSlots"]

GOV_START = b"\x00\x00\x01\xb3"
PACKETS_KEPT = 64  # the decoder gives a frame a few packets after its own at most


@dataclass(frozen=True)
class Sent:
    dts: int | None
    pts: int | None  # FFmpeg's: the frame it gives carries it
    reference: bool | None  # None: the header is damaged, its type unknown
    time: int | None  # the picture's own, in the layer's ticks (`PictureCounter.resolution` a second)


class ReferenceSlots:
    """Follows the video packets sent to the decoder (`sent`) and gives each frame that comes out its slot
    (`slot_of`): FFmpeg's, or the next reference's where a damaged picture between was a B-frame."""

    def __init__(self, pictures: PictureCounter, time_base: Fraction) -> None:
        self.pictures = pictures
        self.time_base = time_base
        self.sent_packets: deque[Sent] = deque(maxlen=PACKETS_KEPT)
        self.seconds = 0  # the time base of the last reference picture, in whole seconds
        self.seconds_before = 0  # the one before: a B-frame's seconds count from it
        self.last_shown: tuple[int, int] | None = None  # the slot and the picture time of the frame shown before
        self.ticks_per_slot: Fraction | None = None  # picture time ticks per stream tick: learned, else stated

    def sent(self, packet: Any) -> None:
        """A video packet is about to go to the decoder (an N-VOP too: its time counts on the seconds)."""
        if not packet.size or self.pictures.increment_bits is None or self.pictures.resolution is None:
            return
        data = bytes(packet)
        group = data.find(GOV_START)
        at = data.find(VOP_START)
        if at < 0:
            return
        if 0 <= group < at:  # a group of VOPs header sets the time base: hours, minutes, marker, seconds
            bits = BitReader(data[group + len(GOV_START) :])
            try:
                hours, minutes, _, seconds = bits.read(5), bits.read(6), bits.read(1), bits.read(6)
            except IndexError:
                pass
            else:
                self.seconds = seconds + 60 * (minutes + 60 * hours)
        header = vop_header(data[at + len(VOP_START) :], self.pictures.increment_bits)
        if header is None or not header.intact:
            self.sent_packets.append(Sent(packet.dts, packet.pts, None, None))
            return
        if header.coding_type == B_VOP:
            seconds = self.seconds_before + header.seconds
        else:
            self.seconds_before, self.seconds = self.seconds, self.seconds + header.seconds
            seconds = self.seconds
        time = seconds * self.pictures.resolution + header.increment
        self.sent_packets.append(Sent(packet.dts, packet.pts, header.coding_type != B_VOP, time))

    def slot_of(self, pts: int | None) -> int | None:
        """The slot the frame FFmpeg gave timestamp `pts` is shown at."""
        source = next((sent for sent in reversed(self.sent_packets) if sent.pts == pts), None)
        if pts is None or source is None or source.time is None:
            self.last_shown = None
            return pts
        slot = pts
        if source.reference:
            slot = self._reference_slot(pts, source.time)
        if self.last_shown is not None and slot > self.last_shown[0] and source.time > self.last_shown[1]:
            ticks = Fraction(source.time - self.last_shown[1], slot - self.last_shown[0])
            self.ticks_per_slot = ticks if self.ticks_per_slot is None else min(self.ticks_per_slot, ticks)
        self.last_shown = (slot, source.time)
        return slot

    def _reference_slot(self, pts: int, time: int) -> int:
        """FFmpeg's slot `pts`, or, where it is a damaged picture's, the next reference's after that one, whichever
        the picture's own `time`, counted on from the frame shown before, is nearer."""
        packets = list(self.sent_packets)
        damaged = next((at for at, sent in enumerate(packets) if sent.dts == pts and sent.reference is None), None)
        if damaged is None or self.last_shown is None:
            return pts
        later = next((sent.dts for sent in packets[damaged + 1 :] if sent.reference is not False), None)
        resolution = self.pictures.resolution
        ticks_per_slot = self.ticks_per_slot or (resolution * self.time_base if resolution else None)
        if later is None or not ticks_per_slot:
            return pts
        last_slot, last_time = self.last_shown
        expected = last_slot + (time - last_time) / ticks_per_slot
        return later if abs(later - expected) < abs(pts - expected) else pts


class EarliestSlots:
    """The slots of an H.264 AVI with B-frames: a clean file fills each slot with one frame, and the decoder gives
    them in presentation order, so each frame is shown at the earliest slot sent and not yet shown. (Its own
    timestamp, its packet's slot in decoding order, went back at every B-frame: said to be a repair, and every frame
    after the first B-frame a frame late.) A packet that holds no picture fails FFmpeg's H.264 decoder ("no frame"),
    so none is sent without a frame coming of it."""

    def __init__(self) -> None:
        self.pending: list[int] = []  # a heap of the slots of packets sent whose frames have not come out

    def sent(self, packet: Any) -> None:
        if packet.size and packet.pts is not None:
            heapq.heappush(self.pending, packet.pts)

    def slot_of(self, pts: int | None) -> int | None:
        """The slot the next frame (FFmpeg's timestamp `pts`) is shown at."""
        return heapq.heappop(self.pending) if self.pending else pts


@dataclass(frozen=True)
class Source:
    pts: int
    dts: int
    not_coded: int  # `PictureCounter.not_coded`'s: 1 a placeholder N-VOP, -1 a packed packet


class PackedSlots:
    """The slots the frames of a DivX-packed AVI are shown at, from the packets they came from (FFmpeg gives a frame
    its packet's timestamp; a packed B-frame its placeholder's). Timed by the packet each came out at instead, the
    picture before a lost one was shown late, where the lost one was."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sources: deque[Source] = deque(maxlen=PACKETS_KEPT)

    def sent(self, packet: Any, not_coded: int) -> None:
        if packet.pts is not None and packet.dts is not None:
            self.sources.append(Source(packet.pts, packet.dts, not_coded))

    def slot_of(self, frame: Any) -> int | None:
        """The slot `frame` is shown at: a slot after its packet's, or the placeholder's for a packed B-frame; where a
        placeholder or an empty chunk follows its packet (a dropped frame, or the placeholder of a packed packet whose
        damage hid its B-frame), the slot it came out at."""
        sources = list(self.sources)
        at = next((at for at in range(len(sources) - 1, -1, -1) if sources[at].pts == frame.pts), None)
        if at is None:
            return frame.dts
        source = sources[at]
        after_own = source.dts + self.step
        if source.not_coded > 0:  # the B-frame held back from the packed packet before
            return source.dts
        if source.not_coded < 0:  # the packed P-frame, after its B-frame
            return source.dts + 2 * self.step
        following = sources[at + 1] if at + 1 < len(sources) else None
        if following is None or (following.dts == after_own and following.not_coded <= 0):
            return after_own  # the last packet's at the decoder's flush, which gives the frames no slot
        return frame.dts if frame.dts is not None else after_own
