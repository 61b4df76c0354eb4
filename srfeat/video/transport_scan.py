"""An MPEG-TS's video frames and breaks, read from its transport packets: what FFmpeg's demuxer passes over unsaid.

A TS states no length and no frame count: its demuxer resyncs past a packet lost or cut short (a byte removed shifts
every packet after it) without an error, and the frames it could not put together are gone, at the file's end with no
trace at all. The packets' sync bytes (0x47 at each packet's start) say where one was cut short or bytes came between
two, and the video PID's continuity counters (4 bits, one up per packet with a payload) where one of its packets was
lost; each of its PES packets that starts with a presentation time is a frame listed (`ListedFrames`). The file is read
in fixed-size chunks and each parsed with numpy, a row per packet: memory stays bounded on a file of many gigabytes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from srfeat.video.listed_frames import Break, ListedFrames

__all__ = ["TRANSPORT_PACKETS", "cut_transport_packet", "scan_transport_stream"]

# MPEG-TS packet sizes FFmpeg's demuxer reads (plain, Blu-ray's M2TS with a 4-byte time before each, DVB's with
# 16 bytes of error correction after), each with where its sync byte sits.
TRANSPORT_PACKETS = ((188, 0), (192, 4), (204, 0))
TS_SYNC = 0x47
SYNCS_CHECKED = 5  # packets in a row whose sync byte fixes the packet size, or where packets start again
FEWEST_SYNCS = 3  # in a row at the file's start, where no more are: the packet size, the damage after them found
GRID_SEARCH_PACKETS = 4  # packets from the file's start in which the first of those is looked for
CHUNK_PACKETS = 1 << 16  # packets parsed at once: 12 MiB of 188-byte packets
RESYNC_WINDOW = 1 << 16  # bytes searched at once for where packets start again
BREAKS_KEPT = 100  # a file damaged all through: enough to say where
JOIN_WINDOW = 16  # frames before a counter that skips whose times say whether files were joined there
JOINED_GAP = 10 * 90_000  # ticks past the frames before it from which a PES's time does not follow them
LOST_BEFORE = " lost before it"
ADAPTATION_ROOM = 183  # bytes an adaptation field has in a packet: 188, less the header (4) and its length byte
TABLE_PIDS = 0x20  # PIDs below it carry tables (PAT, CAT, DVB's SDT, EIT, ...): sections, stuffed with 0xFF
ZEROS_INSIDE = 8  # zero bytes a packet ends with, followed by zeros to the file's end, that are damage, not padding
PTS_WRAP = 1 << 33  # a PES packet's presentation time: 33 bits of a 90 kHz clock, which start over every 26.5 hours


def cut_transport_packet(source: Path) -> int:
    """How many bytes of a transport packet `source` (an MPEG-TS) ends with: a muxer writes whole packets, so a
    last one begun (its sync byte there) and not finished is a file cut short. A TS states no length, and this is
    its only trace of a cut: one at a packet's boundary leaves none. 0 where none is found or it cannot be read."""
    try:
        with source.open("rb") as file:
            total = file.seek(0, 2)
            found = _packet_grid(file)
            if found is None:
                return 0
            size, sync, start = found
            left = (total - start) % size
            if left <= sync:  # an M2TS packet's time without its sync byte: nothing shows a packet began
                return 0
            file.seek(total - left + sync)
            return left if file.read(1)[0] == TS_SYNC else 0
    except OSError:
        return 0


class _StoppedError(Exception):
    """The scan was told to stop: its listing is no longer wanted."""


def scan_transport_stream(source: Path, video_pid: int, *, stop: threading.Event | None = None) -> ListedFrames | None:
    """The frames PID `video_pid` of `source` lists and where its packets were lost or cut short; None where no
    packet grid is found, the file cannot be read, or `stop` was set."""
    try:
        with source.open("rb") as file:
            found = _packet_grid(file)
            if found is None:
                return None
            scan = _Scan(file, video_pid, *found[:2], stop=stop)
            scan.run(found[2])
            return ListedFrames(scan.places, scan.without_joins(), wrap=PTS_WRAP)
    except (OSError, _StoppedError):
        return None


def _packet_grid(file: BinaryIO) -> tuple[int, int, int] | None:
    """The packet size, where its sync byte sits, and the first packet's offset whose sync byte and those of the
    packets after it are in place (a recording picked up mid-stream begins inside one; a damaged file's first sync
    bytes may be off: one flipped bit in the first had the whole scan skipped). Failing that, where fewer in a row
    are: bytes that came into the file's fourth packet broke the grid before `SYNCS_CHECKED` packets, the scan was
    skipped, and the frame they damaged was lost unsaid."""
    file.seek(0)
    head = file.read(max(size for size, _ in TRANSPORT_PACKETS) * (SYNCS_CHECKED + GRID_SEARCH_PACKETS))
    for in_a_row in (SYNCS_CHECKED, FEWEST_SYNCS):
        for size, sync in TRANSPORT_PACKETS:
            start = next(
                (at for at in range(size * GRID_SEARCH_PACKETS) if _synced(head, at + sync, size, in_a_row)), None
            )
            if start is not None:
                return size, sync, start
    return None


def _synced(head: bytes, at: int, size: int, in_a_row: int = SYNCS_CHECKED) -> bool:
    positions = range(at, at + size * in_a_row, size)
    return positions[-1] < len(head) and all(head[position] == TS_SYNC for position in positions)


class _Scan:
    """One pass over the packets, from the first, resyncing where the grid breaks as FFmpeg's demuxer does."""

    def __init__(self, file: BinaryIO, pid: int, size: int, sync: int, *, stop: threading.Event | None = None) -> None:
        self.file, self.pid, self.size, self.sync = file, pid, size, sync
        self.stop = stop
        self.total = file.seek(0, 2)
        self.places: list[tuple[int, int]] = []
        self.breaks: list[Break] = []
        self.last_counter: int | None = None
        self.pending: list[Break] = []  # bytes that are no packet, since which no video packet came

    def run(self, at: int) -> None:
        if at >= self.size:  # a packet's worth or more before the first in place: damage, not a recording's start
            self._before_grid(at)
        self._walk(at)
        for junk in self.pending:  # no video packet after them: one may have been among them
            self._broke(junk.where, junk.what)

    def _walk(self, at: int) -> None:
        size = self.size
        while at + size <= self.total:  # `at`: a packet's start whose sync byte is in its place
            self._check_stop()
            self.file.seek(at)
            data = self.file.read(size * CHUNK_PACKETS)
            count = len(data) // size
            rows = np.frombuffer(data, np.uint8, count * size).reshape(count, size)
            off_grid = np.flatnonzero(rows[:, self.sync] != TS_SYNC)
            whole = int(off_grid[0]) if off_grid.size else count
            self._packets(rows[:whole], at)
            # The file's last bytes, less than a packet: a packet cut short (`cut_transport_packet`), or none begun.
            tail_begun = len(data) - count * size <= self.sync or data[count * size + self.sync] == TS_SYNC
            if whole == count and tail_begun:
                at += count * size
                continue
            last = at + (whole - 1) * size  # the last packet in its place: cut short, or bytes after it
            again = self._resync(last + 1)
            if again is None:  # no packet after it: bytes that are none to the file's end
                self._junk_at_end(last + size)
                return
            self._grid_broken(last, again)
            at = again

    def without_joins(self) -> list[Break]:
        """The breaks, less the counters that skip where files were joined end to end: there the packet starts a
        PES whose time does not follow the frames before it (before all of the last `JOIN_WINDOW`, which B-frames
        never are, or far past them), as a packet lost cannot make it."""
        index = {place: number for number, (place, _) in enumerate(self.places)}
        kept = []
        for damage in self.breaks:
            number = index.get(damage.where) if damage.what.endswith(LOST_BEFORE) else None
            before = [time for _, time in self.places[max(0, (number or 0) - JOIN_WINDOW) : number or 0]]
            time = self.places[number][1] if number is not None else 0
            if not before or not (time <= min(before) or time > max(before) + JOINED_GAP):
                kept.append(damage)
        return sorted(kept, key=lambda damage: damage.where)  # found a chunk and a kind at a time

    def _packets(self, rows: np.ndarray, at: int) -> None:
        """The video PID's packets among `rows` (the packets from byte `at`): counters that skip, PES starts."""
        sync = self.sync
        pid = ((rows[:, sync + 1].astype(np.int32) & 0x1F) << 8) | rows[:, sync + 2]
        mine = np.flatnonzero(pid == self.pid)
        if not mine.size:
            return
        header = rows[mine, sync : sync + 6].astype(np.int64)
        control = (header[:, 3] >> 4) & 3  # adaptation field control: 1 payload, 2 adaptation field, 3 both
        with_payload = (control & 1) == 1
        # An adaptation field longer than its packet (a damaged length byte): FFmpeg's demuxer drops the payload, and
        # the field's flags (below) are no packet's own.
        overlong = with_payload & ((control & 2) == 2) & (header[:, 4] > ADAPTATION_ROOM)
        for row in np.flatnonzero(overlong)[: BREAKS_KEPT - len(self.breaks)]:
            self._broke(at + int(mine[row]) * self.size, "a transport packet whose adaptation field runs past its end")
        # An adaptation field's discontinuity indicator lets the counter start anywhere (a splice).
        discontinuity = ((control & 2) == 2) & (header[:, 4] > 0) & ((header[:, 5] & 0x80) == 0x80) & ~overlong
        counted = np.flatnonzero(with_payload & ~overlong)  # its counter shares the damaged byte, or the next says
        if counted.size:
            self.pending.clear()  # the counter below says whether a video packet was lost among them
            counters = header[counted, 3] & 0x0F
            before = np.concatenate(([counters[0] if self.last_counter is None else self.last_counter], counters[:-1]))
            # 0: a packet sent twice, allowed; a counter 16 packets on cannot be told from one in order
            skipped = ((counters - before) % 16 > 1) & ~discontinuity[counted]
            for row in np.flatnonzero(skipped)[: BREAKS_KEPT - len(self.breaks)]:
                missing = int((counters[row] - before[row]) % 16) - 1
                self._broke(at + int(mine[counted[row]]) * self.size, f"{missing} transport packet(s){LOST_BEFORE}")
            self.last_counter = int(counters[-1])
        self._pes_starts(rows, at, mine[with_payload & ((header[:, 1] & 0x40) == 0x40)])

    def _pes_starts(self, rows: np.ndarray, at: int, starts: np.ndarray) -> None:
        """The presentation time of each PES packet starting in rows `starts` (payload unit start set)."""
        if not starts.size:
            return
        sync = self.sync
        control = rows[starts, sync + 3] >> 4
        payload = sync + 4 + np.where(control & 2, 1 + rows[starts, sync + 4].astype(np.int64), 0)
        fits = payload + 14 <= self.size  # start code, stream id, length, two flag bytes, header length, PTS
        starts, payload = starts[fits], payload[fits]

        def byte(offset: int) -> np.ndarray:
            return rows[starts, payload + offset].astype(np.int64)

        coded = (byte(0) == 0) & (byte(1) == 0) & (byte(2) == 1)
        # A packet that says a PES packet starts in it, but whose payload does not begin with the start code (a byte
        # that came into its adaptation field, say): FFmpeg's demuxer skips to the next start, losing the frame, and
        # its time is unreadable, so the listing cannot name it.
        for row in np.flatnonzero(~coded)[: BREAKS_KEPT - len(self.breaks)]:
            self._broke(at + int(starts[row]) * self.size, "a PES packet whose start code is damaged")
        timed = coded & ((byte(7) & 0x80) == 0x80)
        pts = ((byte(9) >> 1) & 7) << 30 | byte(10) << 22 | (byte(11) >> 1) << 15 | byte(12) << 7 | byte(13) >> 1
        places = at + starts[timed] * self.size
        self.places.extend(zip(places.tolist(), pts[timed].tolist(), strict=True))

    def _resync(self, start: int) -> int | None:
        """The first packet's start from byte `start` on with sync bytes in place after it (as many as the file
        holds, up to `SYNCS_CHECKED`)."""
        size, sync = self.size, self.sync
        span = size * SYNCS_CHECKED
        while start + size <= self.total:
            self._check_stop()
            self.file.seek(start + sync)
            window = self.file.read(RESYNC_WINDOW + span)
            for found in np.flatnonzero(np.frombuffer(window, np.uint8)[:RESYNC_WINDOW] == TS_SYNC).tolist():
                packets = min(SYNCS_CHECKED, (self.total - start - found) // size)
                if packets and all(
                    found + step * size < len(window) and window[found + step * size] == TS_SYNC
                    for step in range(packets)
                ):
                    return start + found
            start += RESYNC_WINDOW
        return None

    def _grid_broken(self, last: int, again: int) -> None:
        """Packets start again at `again`, not a packet after the one at `last`: that packet was cut short (its
        PID says whether it was the video's), or bytes came after it that are no packet. Whole packets with only
        their sync bytes damaged (FFmpeg drops them) say their PIDs; other bytes may have held the video's."""
        size = self.size
        if again < last + size:
            if self._pid_at(last) == self.pid:
                self._broke(last, f"a transport packet cut short by {last + size - again} bytes")
        elif not self._sync_damaged(last + size, again):
            junk = Break(last + size, f"{again - last - size} bytes that hold no whole transport packet")
            # The packet before them was the video's: its end may be among them. Else the video's next packet says
            # by its counter whether one of its own was (`_packets`); none after them, and they may have been.
            if self._pid_at(last) == self.pid:
                self._broke(junk.where, junk.what)
            else:
                self.pending.append(junk)

    def _before_grid(self, at: int) -> None:
        """The bytes before `at`, the first packet in place, past the part of one a recording may begin with: whole
        packets whose sync bytes are damaged (their PIDs say whether the video lost one), or bytes that are none."""
        lead = at % self.size
        if not self._sync_damaged(lead, at):  # the video's next counter says whether one of its packets was there
            self.pending.append(Break(lead, f"{at - lead} bytes that hold no whole transport packet"))

    def _sync_damaged(self, start: int, end: int) -> bool:
        """Whether the bytes from `start` to `end` are a few whole packets of which only the sync bytes are damaged
        (a bit or two off): FFmpeg drops them, and the video lost one where one has its PID."""
        if (end - start) % self.size or end - start > self.size * SYNCS_CHECKED:
            return False
        heads = [self._head_at(at) for at in range(start, end, self.size)]
        if any((sync ^ TS_SYNC).bit_count() > 2 for sync, _ in heads):
            return False  # bytes written over packets
        if any(pid == self.pid for _, pid in heads):
            self._broke(start, "a transport packet whose sync byte is damaged")
        return True

    def _junk_at_end(self, start: int) -> None:
        """Bytes from `start` (the end of the last packet in place) to the file's end that hold no packet: damage
        (packets overwritten, or bytes removed before the end: the file's last packets gone, and what was left of one
        after them), unless it is padding of one byte value (zeros, or the 0xFF of stuffing) a writer may add after
        its last packet, or an M2TS packet's time cut short. Zeros that begin inside that packet are no padding
        (`_zeros_inside`): a file whose end was zeroed from a disk block's start, which lies inside a packet."""
        length = self.total - start
        if length <= self.sync:
            return
        if self._sync_damaged(start, self.total):  # too few packets after them to resync on
            return
        self.file.seek(start)
        head = self.file.read(RESYNC_WINDOW)
        self.file.seek(max(start, self.total - RESYNC_WINDOW))
        tail = self.file.read(RESYNC_WINDOW)
        values = set(head) | set(tail)
        if len(values) > 1:
            self._broke(start, f"{length} bytes at the end that hold no transport packet")
        elif values == {0} and (inside := self._zeros_inside(start - self.size)):
            self._broke(start - inside, f"{length + inside} bytes of zeros to the end, from inside a transport packet")

    def _zeros_inside(self, at: int) -> int:
        """How many zero bytes the packet at `at` ends with where they cannot be its own: the video's (whose coded
        data holds no run of zeros: H.264's and HEVC's emulation prevention, MPEG-2's start codes) or a table's (PAT,
        DVB's SDT, ...: their stuffing is 0xFF); 0 for fewer than `ZEROS_INSIDE`, and for other PIDs (audio's last
        frame may end in many zeros: AAC's silent ones did)."""
        pid = self._pid_at(at)
        if pid != self.pid and pid >= TABLE_PIDS:
            return 0
        self.file.seek(at)
        packet = self.file.read(self.size)
        zeros = len(packet) - len(packet.rstrip(b"\0"))
        return zeros if zeros >= ZEROS_INSIDE else 0

    def _pid_at(self, at: int) -> int:
        return self._head_at(at)[1]

    def _head_at(self, at: int) -> tuple[int, int]:
        """The sync byte and PID of the packet at `at`."""
        self.file.seek(at + self.sync)
        head = self.file.read(3)
        return (head[0], ((head[1] & 0x1F) << 8) | head[2]) if len(head) == 3 else (-1, -1)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _StoppedError

    def _broke(self, where: int, what: str) -> None:
        if len(self.breaks) < BREAKS_KEPT:
            self.breaks.append(Break(where, what))
