"""The video chunks an AVI's index lists: where a chunk whose header is damaged was passed over.

FFmpeg's AVI demuxer reads the chunks in order, and one whose header it cannot read (its stream number, type or size
damaged) it passes over without an error, resyncing at the next header it knows. Counting the chunks read, it gives
every later packet a timestamp a frame early: the frame is lost without a trace but the frame count the header
states, and the frames after it are shown early. A chunk whose size is damaged to 0 it counts as an empty chunk (a
frame dropped by the encoder: the one before is held) and resyncs past its data: that frame is lost as quietly. The
index (`idx1`) lists each chunk's place and size: a packet read past chunks the index lists with data between it and
the one before says which were passed over or taken for empty, and where.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

__all__ = ["AviIndex"]

CHUNK_HEADER = 8  # fourcc, then size
INDEX_ENTRY = 16  # ckid, flags, offset, size
VIDEO_CHUNK_TYPES = (b"dc", b"db")  # compressed, uncompressed frames


class AviIndex:
    """Follows the video packets FFmpeg's demuxer gives (`place`) against the chunks the index lists."""

    def __init__(self, chunk_sizes: dict[int, tuple[int, int]]) -> None:
        self.chunks = chunk_sizes  # a chunk's data's byte offset (FFmpeg's packet position): its number, its size
        self.sizes = [size for _, size in sorted(chunk_sizes.values())]  # by number
        self.last_number: int | None = None
        self.last_dts: int | None = None
        self.shift = 0  # ticks added to the timestamps, past the chunks passed over so far

    @classmethod
    def read(cls, source: Path, stream_number: int) -> AviIndex | None:
        """The index of `source`'s stream `stream_number`; None where the file has none, or it cannot be read."""
        try:
            with source.open("rb") as file:
                return cls(_video_chunks(file, stream_number)) or None
        except (OSError, struct.error, ValueError):
            return None

    def __bool__(self) -> bool:
        return bool(self.chunks)

    def place(self, packet: Any, step: int) -> list[int]:
        """Move `packet`'s timestamps past the chunks passed over before it (FFmpeg's count a frame short for each);
        how many chunks before it each one lost was (1: the one just before), nearest last."""
        if packet.pos is None or packet.dts is None:
            return []
        number = self.chunks.get(packet.pos, (None, 0))[0]
        lost: list[int] = []
        if number is not None and self.last_number is not None and self.last_dts is not None:
            gap = (number - self.last_number) * step - (packet.dts + self.shift - self.last_dts)
            if gap > 0:  # the index puts it further on than FFmpeg's count: chunks were passed over
                self.shift += gap
            if gap >= 0:  # and chunks counted as empty (a dropped frame) whose data the index lists: size damaged
                lost = [number - at for at in range(self.last_number + 1, number) if self._size(at)]
        packet.dts += self.shift
        if packet.pts is not None:
            packet.pts += self.shift
        self.last_number, self.last_dts = number, packet.dts
        return lost

    def after_last(self) -> list[int]:
        """The chunks passed over after the last packet (the file read to its end): how many chunks after it each
        was, nearest first."""
        if self.last_number is None:
            return []
        return [at - self.last_number for at in range(self.last_number + 1, len(self.sizes)) if self.sizes[at]]

    def empty_after(self, back: int) -> bool:
        """Whether the chunk after the one `back` chunks before the last packet placed is empty (not the packet)."""
        return self.last_number is not None and back > 1 and not self._size(self.last_number - back + 1)

    def _size(self, number: int) -> int:
        return self.sizes[number] if 0 <= number < len(self.sizes) else 0


def _video_chunks(file: Any, stream_number: int) -> dict[int, tuple[int, int]]:
    """The video chunks of `idx1`, by the offset of their data: (their number in the stream, their size). An AVI's
    offsets count from the `movi` list's type, or, written by some muxers, from the file's start: the first one's
    header says which."""
    total = file.seek(0, 2)
    file.seek(0)
    if file.read(4) != b"RIFF":
        return {}
    at, movi, entries = 12, None, b""
    while at + CHUNK_HEADER <= total:
        file.seek(at)
        fourcc, size = struct.unpack("<4sI", file.read(CHUNK_HEADER))
        if fourcc == b"LIST" and file.read(4) == b"movi":
            movi = at + CHUNK_HEADER
        elif fourcc == b"idx1":
            entries = file.read(min(size, total - at - CHUNK_HEADER))  # no more than the file holds
            break
        at += CHUNK_HEADER + size + (size & 1)
    if movi is None or not entries:
        return {}
    wanted = f"{stream_number:02d}".encode()
    video = [
        (offset, size)
        for ckid, _, offset, size in struct.iter_unpack("<4sIII", entries[: len(entries) // INDEX_ENTRY * INDEX_ENTRY])
        if ckid[:2] == wanted and ckid[2:] in VIDEO_CHUNK_TYPES
    ]
    if not video:
        return {}
    # the first entries' headers: one of them may be the damaged one
    base = next((base for base in (movi, 0) if any(_header_at(file, base + at, wanted) for at, _ in video[:3])), None)
    if base is None:
        return {}
    return {base + offset + CHUNK_HEADER: (number, size) for number, (offset, size) in enumerate(video)}


def _header_at(file: Any, at: int, wanted: bytes) -> bool:
    file.seek(at)
    header = file.read(4)
    return header[:2] == wanted and header[2:] in VIDEO_CHUNK_TYPES
