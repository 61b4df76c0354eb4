"""The video packets a decoder still holds: which one an error, or a frame dropped at the flush, is about.

A decoder in frame threads (FFmpeg's choice for H.264, HEVC, VP9 and others given "AUTO") takes `thread_count`
packets at once and hands back their results in the order they were sent: an error surfaces while a packet
`thread_count - 1` later is sent, and at the file's end among the last packets drained, where the threads may also
drop a damaged packet's frame without an error. There, the packets held are decoded again in one thread, which fails
on the damaged packet itself.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srfeat.video.probe import open_for_reading

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["PacketsInFlight"]

# AV_CODEC_CAP_FRAME_THREADS (libavcodec/codec.h): a decoder that works on several packets at once in threads.
FRAME_THREADS_CAPABILITY = 1 << 12
PACKETS_IN_FLIGHT_KEPT = 64  # more decoder threads than FFmpeg starts by itself (16 at most)


class PacketsInFlight:
    """The timestamps and file positions of the last video packets sent to the decoder, to name the one an error
    is about."""

    def __init__(self, av: ModuleType, source: Path, video: Any, frame_threads: bool) -> None:
        self.av = av
        self.source = source
        self.video = video
        self.frame_threads = frame_threads  # asked for: FFmpeg uses them where the codec has them
        self.held: deque[tuple[int | None, int | None]] = deque(maxlen=PACKETS_IN_FLIGHT_KEPT)  # (pts, pos)

    def sent(self, packet: Any) -> None:
        if packet.size:
            self.held.append((packet.pts, packet.pos))

    def threads(self) -> int:
        """The packets the decoder works on at once: 1 where it decodes each as it is sent."""
        context = self.video.codec_context
        threaded = self.frame_threads and context.codec.capabilities & FRAME_THREADS_CAPABILITY
        return max(1, context.thread_count) if threaded else 1

    def failed(self, packet: Any) -> tuple[int | None, bool]:
        """The timestamp of the packet whose error surfaced while `packet` was sent (the empty packet: the decoder
        drained, or its threads dropped a frame there), and whether it is that packet's for certain (else the
        earliest the decoder still held)."""
        threads = self.threads()
        if packet.size and threads == 1:
            return packet.pts, True
        held = threads if packet.size else threads - 1  # at the end: the ones sent after the last result
        if not self.held or held < 1:
            return None, False
        if not packet.size:
            found = self._failing_alone(list(self.held)[-held:])
            if found is not None:
                return found, True
        return self.held[-min(held, len(self.held))][0], bool(packet.size) and len(self.held) >= held

    def _failing_alone(self, held: list[tuple[int | None, int | None]]) -> int | None:
        """The timestamp of the packet among `held` (the ones the decoder still held at the file's end) that fails
        decoded again in one thread, from the keyframe before them: one thread fails on the damaged packet itself.
        Done only here, so that a whole file pays nothing for it. None where none of them fails so (a seek that lands
        past it, damage one thread decodes)."""
        av = self.av
        times = {pos: pts for pts, pos in held if pts is not None and pos is not None and pos >= 0}
        if not times:
            return None
        last = max(times)
        try:  # opened as the upscale opened it: a name like `pipe:0.mp4` is the file, not FFmpeg's stdin
            with open_for_reading(av, self.source) as container:
                video = container.streams[self.video.index]
                video.thread_type = "SLICE"  # each packet decoded as it is sent: an error is its own
                container.seek(min(times.values()), stream=video, backward=True)  # to the keyframe before
                for packet in container.demux(video):
                    if packet.pos is None or packet.pos > last:
                        break  # past the packets held (or the demuxer's last, empty one)
                    try:
                        video.decode(packet)
                    except av.error.FFmpegError:
                        if packet.pos in times:
                            return times[packet.pos]
                        # a packet before them (a leading frame of an open GOP, its references before the seek)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError):
            return None
        return None
