"""The input as the pipeline's decoder thread reads it: its packets in demuxing order, video decoded.

Iterating an `InputFrames` gives, in the order the file holds them, each frame of the `--frames`
range as a `Frame` (RGB pixels; its timestamp continued where a broken or joined file's goes back,
and moved to the range's start) and each packet of the copied streams (audio, subtitles: never
decoded; their timestamps continued, cut to the range, and their stream the output's copy). A
frame that does not decode, or a file that cannot be read further, is one line naming where.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from srfeat.errors import VideoError
from srfeat.video import FrameRange, frames_before_hint
from srfeat.video.avi_index import AviIndex
from srfeat.video.background_listing import BackgroundListing, container_scan
from srfeat.video.copied import CopiedStreams, cut_to_window
from srfeat.video.listed_frames import ListedFrames
from srfeat.video.lost_frames import LostFrames
from srfeat.video.not_coded import EmptyChunks, PictureCounter, not_coded_vop
from srfeat.video.packets_in_flight import PacketsInFlight
from srfeat.video.probe import FrameDefects, TimeWindow, continued_pts, error_reason, seconds_of, time_base_of
from srfeat.video.reference_slots import EarliestSlots, PackedSlots, ReferenceSlots
from srfeat.video.transport_scan import cut_transport_packet

if TYPE_CHECKING:
    from types import ModuleType

    from av.container import InputContainer
    from av.packet import Packet
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

__all__ = ["SLICE_MARGIN_S", "Frame", "InputFrames"]

# A copied stream's packets after the last frame's time are dropped; demuxing stops this far past it.
SLICE_MARGIN_S = 10.0
# Demuxers of raw frames, one after another to the file's end: a file cut inside its last frame ends
# their reading without an error, and that frame is gone (`InputFrames.cut_frame_bytes` counts what was left).
RAW_FRAME_DEMUXERS = frozenset({"yuv4mpegpipe"})
NO_PIXELS = np.zeros((0, 0, 3), np.uint8)  # a frame of the timing pass
# The most frames an open GOP's leading B-frames come before its keyframe (H.264's most B-frames in a row).
_MOST_LEADING_FRAMES = 16


@dataclass
class Frame:
    index: int
    pixels: np.ndarray  # HxWx3 uint8 RGB
    pts: int


class InputFrames:
    """The frames of `video` in `frames` and the copied streams' packets of `source_container`, in demuxing
    order (`copied_streams` and `defects` None: the frames alone, timed, not converted to pixels, for
    `range_times.time_window`, which times a range as this gives its frames); once it is read to the end,
    `decoded_frames`, `hidden_frames` and `last_frame_time` say how many frames the file held, how many of them were
    not to be shown, and when the last one given was shown; `cut_frame_bytes`, how much of a last frame cut short (a
    truncated .y4m) was left unread; `cut_packet_bytes`, how much of a last transport packet cut short (a truncated
    MPEG-TS) FFmpeg dropped. `abandoned`: the caller's stop, set when the reading is no longer wanted (Ctrl-C, a
    failed stage), which a wait for the container scan watches."""

    def __init__(
        self,
        av: ModuleType,
        source: Path,
        source_container: InputContainer,
        video: VideoStream,
        frames: FrameRange,
        window: TimeWindow | None,
        copied_streams: CopiedStreams | None,
        defects: FrameDefects | None,
        source_matrix: Any,
        step: int,
        *,
        command_line: bool = False,
        abandoned: threading.Event | None = None,
    ) -> None:
        self.av = av
        self.command_line = command_line  # a damaged frame's hint names --frames, else VideoOptions's frames
        self.source = source
        self.input = source_container
        self.video = video
        self.frames = frames
        self.window = window
        self.copied_streams = copied_streams
        self.copied = copied_streams.streams if copied_streams is not None else {}
        self.defects = defects
        # The frames' and the copied packets' alike; none for the timing pass: the upscale's own pass tells them.
        self.repairs = copied_streams.repairs if copied_streams is not None else None
        self.source_matrix = source_matrix  # the colour matrix the frames are converted to RGB by
        self.step = step  # one frame in the input's time base
        self.decoded_frames = 0
        self.read_to_end = False  # not stopped at the range's end
        # Listed, not shown (`check_length`): decoded before an edit list's start, or MPEG-4 N-VOPs and an AVI's
        # empty chunks (less the packets that hold two pictures).
        self.hidden_frames = 0
        self.first_packet_pts: int | None = None  # the first video packet's (in decoding order): where hiding starts
        self.pictures = PictureCounter(video)
        self.empty_chunks = EmptyChunks(source_container.format.name, step)
        self.avi_index = AviIndex.read(source, video.index) if self.empty_chunks.in_avi else None
        # FFmpeg's times for an AVI's reference pictures, a frame early past a damaged B-frame: mended.
        reordered = self.empty_chunks.in_avi and self.pictures.active and bool(video.codec_context.has_b_frames)
        self.reference_slots = ReferenceSlots(self.pictures, time_base_of(video)) if reordered else None
        self.packed_slots = PackedSlots(step) if self.empty_chunks.in_avi else None
        in_h264_avi = self.empty_chunks.in_avi and video.codec_context.name == "h264"
        self.earliest_slots = EarliestSlots() if in_h264_avi and video.codec_context.has_b_frames else None
        self.last_frame_time: float | None = None
        self.last_frame_duration: float | None = None  # as the file states it; None where it states none
        self.cut_frame_bytes = 0
        self.cut_packet_bytes = 0
        self.lost = LostFrames(source, video, frames, source_container.format.name, command_line=command_line)
        # The frames the container lists, to tell those its demuxer passed over unsaid (not in the timing pass),
        # scanned while the first frames decode: what the decoding tells `lost` goes through it, in order.
        scan = container_scan(source, source_container, video) if copied_streams is not None else None
        self.tracked = BackgroundListing(scan, self.lost, video, abandoned)
        self.listed: ListedFrames | None = None  # once read: the listing, where the container has one
        self.in_flight = PacketsInFlight(av, source, video, frame_threads=not self.pictures.active)

    def __iter__(self) -> Generator[Frame | Packet, None, None]:
        self.tracked.start()
        try:
            yield from self._read()
            self.listed = self.tracked.finish()
        finally:  # read, failed, or no longer wanted: a scan still running is stopped
            self.tracked.close()
        self._after_reading()

    def _read(self) -> Generator[Frame | Packet, None, None]:
        av, video, frames, window = self.av, self.video, self.frames, self.window
        # MPEG-4 Part 2 decodes in one thread, so that an error is the packet's that was sent (frame threads report
        # one a few packets late: `PacketsInFlight`): FFmpeg can fail an N-VOP after a damaged packet, which holds no
        # picture to lose.
        video.thread_type = "AUTO" if self.in_flight.frame_threads else "SLICE"
        time_base = time_base_of(video)
        video_shift = round(window.start / time_base) if window else 0
        step = self.step
        last_pts: int | None = None
        # A DivX-packed packet (a P-frame with the B-frame before it) in an AVI, whose timestamps are the
        # packets' decoding slots: the decoder shows the B-frame first, with the P-frame's slot, so the frames'
        # own timestamps go back and forth on a clean file; the slot each frame comes out at is its time.
        decode_order_times = False
        after_packed = False  # the packet before was a packed one: this one may be its placeholder N-VOP
        # The packet before was damaged past reading in a DivX-packed stream: a placeholder after it says it was a
        # packed one, its two pictures lost (else it is counted as one, as a damaged packet elsewhere).
        after_damaged = False
        index = 0
        done = False
        video_end: int | None = None  # the byte after the last video packet read
        last_slot: int | None = None  # where the last video packet's frame is shown (in an AVI: `AviIndex`)
        packets = self.input.demux([video, *(self.input.streams[index] for index in self.copied)])
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                self._passed_over_at_end(last_slot)
                self.tracked.after_last()
                self.cut_frame_bytes = self._bytes_after(video_end)
                if "mpegts" in self.input.format.name.split(","):
                    self.cut_packet_bytes = cut_transport_packet(self.source)
                break
            except av.error.FFmpegError as error:
                if done:  # every frame asked for came out: only audio or subtitles are lost
                    self._warn_copied_cut(error)
                    break
                read = (
                    f"no frame of {self.source} could be read"
                    if index == 0
                    else f"{self.source} cannot be read after frame {index - 1}"
                )
                raise VideoError(
                    f"{read} ({error_reason(error)}); the file is damaged "
                    f"({frames_before_hint(index, frames, command_line=self.command_line)})"
                ) from error
            if packet.stream.index == video.index:
                if done:  # past frame B: only the copied streams' packets up to its time are still wanted
                    if (
                        window
                        and window.stop is not None
                        and seconds_of(packet.dts, time_base) > window.stop + SLICE_MARGIN_S
                    ):
                        break
                    continue
                self.tracked.given(packet)
                if self.first_packet_pts is None:
                    self.first_packet_pts = packet.pts
                placeholder, slot, just_passed_over = self._chunks_before(
                    packet, after_packed or after_damaged, decode_order_times
                )
                last_slot = last_slot if slot is None else slot
                # A chunk passed over (its header damaged) is a packet damaged past reading.
                after_damaged = (after_damaged or just_passed_over) and self.pictures.packed_stream
                for sent in (packet,) if placeholder is None else (placeholder, packet):
                    if done:
                        break
                    not_coded = self.pictures.not_coded(sent, after_packed=after_packed)
                    held_two = after_damaged and not_coded > 0  # a damaged packet with its placeholder after it
                    self.hidden_frames += self._hidden_by_edit_list(sent) + not_coded - held_two
                    if sent.size and sent.pos is not None and sent.pos >= 0:
                        video_end = sent.pos + sent.size
                    # An N-VOP gives no frame: none is lost, except the placeholder after a packed packet, whose slot
                    # its P-frame is shown at (its B-frame takes the packed packet's own).
                    if not_coded <= 0 or after_packed or held_two:
                        # In a packed AVI a packet's frame is shown a slot on (`PackedSlots`), where FFmpeg's guess of
                        # its time is the next packet the demuxer gave, past any empty chunk.
                        in_slots = self.empty_chunks.in_avi and (decode_order_times or not_coded < 0)
                        slot_shown = sent.dts + step if in_slots and sent.dts is not None else None
                        self.tracked.sent(sent, slot_shown)
                    after_packed = not_coded < 0
                    after_damaged = self.pictures.packed_stream and not not_coded and self.pictures.damaged
                    decode_order_times = decode_order_times or after_packed
                    if self.reference_slots is not None:
                        self.reference_slots.sent(sent)
                    if self.earliest_slots is not None:
                        self.earliest_slots.sent(sent)
                    if self.packed_slots is not None:
                        self.packed_slots.sent(sent, not_coded)
                    for frame in self._decode_packet(sent, index, holds_picture=not_coded <= 0):
                        shown_at = self._shown_at(frame, decode_order_times)
                        # In slots too: a packed file's frames' own timestamps go back at every B-frame, which the
                        # tracker took for timestamps starting over, forgetting the frames sent before.
                        self.tracked.shown(shown_at, index)
                        pts = last_pts = self._monotonic_pts(shown_at, last_pts, step)
                        if index >= frames.start:
                            yield Frame(index, self._pixels(frame, index), pts - video_shift)
                            self.last_frame_time = seconds_of(pts, time_base)
                            self.last_frame_duration = seconds_of(frame.duration, time_base) if frame.duration else None
                        index += 1
                        # Frame B is not decoded: an error there, or at the decoder's flush, is past the range.
                        if frames.stop is not None and index >= frames.stop:
                            done = True
                            break
            elif packet.dts is not None and packet.size and self.copied_streams is not None:
                # Continued first, as the frames' are, so that the window cuts joined files' audio at
                # the frames' moment, not at each part's.
                self.copied_streams.continue_timestamps(packet)
                if window is not None and not cut_to_window(packet, window):
                    continue
                packet.stream = self.copied[packet.stream.index]
                yield packet
        # The demuxer ends with an empty packet per stream, which flushed the decoder above.
        self.decoded_frames = index
        self.read_to_end = not done

    def _after_reading(self) -> None:
        """The file was read to its end (not stopped at the range's end): frames lost after the last one shown are
        in the range. `lost` has been told all the decoding saw (`BackgroundListing.finish`)."""
        if not self.read_to_end:
            return
        self.lost.ended()
        if self.lost.lost_by_decoder_at_end() and self.in_flight.threads() > 1:
            # Frame threads drop a damaged packet's frame at the flush without an error, and the frames held
            # back behind it (one thread raises as the packet is sent): named as an error elsewhere is.
            raise self._undecodable(
                self.av.Packet(), self.decoded_frames, "its decoder threads dropped it at the file's end"
            )

    def _hidden_by_edit_list(self, packet: Any) -> bool:
        """Whether `packet` is one an MP4's edit list hides (FFmpeg flags it to be decoded, not shown): a frame
        before the edit's start, from the keyframe the file starts at (or, with an open GOP, the few B-frames
        shown before it). One flagged so whose time lies further back came from a damaged timestamp (a
        composition offset made -2^31: FFmpeg hid a frame from the middle of the video, unsaid), or that the
        video's stated length cannot hold, is not counted as hidden, so that `check_length` says a frame the file
        lists was lost."""
        if not packet.is_discard:
            return False
        # A sound file's edit list spans what it shows: a stated length unknown (its media header lost) or under a
        # frame (a timescale damaged) has FFmpeg hide every frame after the first, as past an edit that ends early.
        if self.video.duration is None or self.video.duration < self.step:
            return False
        if packet.pts is None or self.first_packet_pts is None:
            return True
        return packet.pts >= self.first_packet_pts - _MOST_LEADING_FRAMES * self.step

    def _chunks_before(
        self, packet: Any, packed_before: bool, decode_order_times: bool
    ) -> tuple[Any, int | None, bool]:
        """What lies between the video packet before and `packet` in an AVI: empty chunks (frames held: listed, not
        shown) and chunks the demuxer passed over, their headers damaged (`AviIndex`: their frames lost there, the
        packets after them put back in their places). After a packed packet the first is its placeholder, sent as
        the N-VOP it stands for: FFmpeg decodes the packed B-frame when the placeholder comes, and without one falls
        behind: the next packed packet fails, frames after it are lost or garbled. (Others are not: after a damaged
        packet FFmpeg can fail an N-VOP, and nothing waits for them.) The placeholder, if any, the slot `packet`'s
        frame is tracked at (as `LostFrames.sent` is told; None for the flush packet), and whether the chunk just
        before it was passed over."""
        step = self.step
        passed_over = self.avi_index.place(packet, step) if self.avi_index else []
        between = self.empty_chunks.before(packet)
        placeholder_passed = packed_before and bool(passed_over) and passed_over[0] == between
        if placeholder_passed:
            passed_over = passed_over[1:]
        empty = between - len(passed_over) - placeholder_passed
        placeholder = (
            self._placeholder_after(packet, passed_over=placeholder_passed)
            if packed_before and (empty or placeholder_passed)
            else None
        )
        # The placeholder sent counts itself as not shown (`PictureCounter.not_coded`): an empty one, not twice.
        self.hidden_frames += empty - (placeholder is not None and not placeholder_passed)
        slot = packet.pts if not decode_order_times or packet.dts is None else packet.dts + step
        just_passed_over = bool(passed_over) and passed_over[-1] == 1
        if not packet.size or slot is None:
            return placeholder, None, just_passed_over
        for back in passed_over:
            self.tracked.passed_over(slot - back * step)
            if self.pictures.packed_stream and self.avi_index and self.avi_index.empty_after(back):
                # an empty placeholder after it: it held two pictures, the one shown there too
                self.tracked.passed_over(slot - (back - 1) * step)
                self.hidden_frames -= 1
        return placeholder, slot, just_passed_over

    def _passed_over_at_end(self, last_slot: int | None) -> None:
        """Chunks the demuxer passed over after the last video packet (`AviIndex`): their frames lost at the end."""
        if self.avi_index and last_slot is not None:
            for ahead in self.avi_index.after_last():
                self.tracked.passed_over(last_slot + ahead * self.step)

    def _placeholder_after(self, packet: Any, *, passed_over: bool = False) -> Any:
        """The N-VOP the empty chunk after a packed packet stands for (or the chunk the demuxer `passed_over`), a slot
        after that one, before `packet`."""
        packed_dts, increment_bits = self.empty_chunks.previous_dts, self.pictures.increment_bits
        assert packed_dts is not None and increment_bits is not None  # a packed packet was read: its times, too
        placeholder = self.av.Packet(not_coded_vop(increment_bits))
        placeholder.time_base = packet.time_base
        placeholder.dts = packed_dts + self.step
        # FFmpeg stamps an AVI's packet with the next one's slot: the packed packet's is this placeholder's own where
        # the demuxer passed over its chunk (it counted none), and the placeholder takes the next, as in a whole file;
        # after an empty chunk (counted) the packed packet's is the next, and the placeholder's own is free.
        placeholder.pts = placeholder.dts + self.step * passed_over
        return placeholder

    def _shown_at(self, frame: Any, decode_order_times: bool) -> int | None:
        """The slot `frame` is shown at: a slot after its packet in a packed AVI (`PackedSlots`), the one it comes
        out at in another packed file, the earliest not yet shown in an H.264 AVI with B-frames (`EarliestSlots`), else
        its own (mended where a damaged B-frame made FFmpeg's a frame early: `ReferenceSlots`)."""
        if decode_order_times and self.packed_slots is not None:
            return self.packed_slots.slot_of(frame)
        if decode_order_times and frame.dts is not None:
            return frame.dts
        if self.earliest_slots is not None:
            return self.earliest_slots.slot_of(frame.pts)
        if self.reference_slots is not None and not decode_order_times:
            return self.reference_slots.slot_of(frame.pts)
        return frame.pts

    def _pixels(self, frame: Any, index: int) -> np.ndarray:
        """`frame` in RGB, its defects noted; nothing for the timing pass, which wants its time alone."""
        if self.defects is None:
            return NO_PIXELS
        self.defects.check(frame, index)
        return frame.to_ndarray(format="rgb24", src_colorspace=self.source_matrix)

    def _warn_copied_cut(self, error: BaseException) -> None:
        """The file fails to read past the range's frames, while its audio or subtitles were still read up to
        the range's end: what was not read is missing from the output."""
        if self.copied:
            logger.warning(
                "%s: reading failed past the frames asked for (%s); they were all upscaled, but the copied audio "
                "and subtitles may end early",
                self.source,
                error_reason(error),
            )

    def _bytes_after(self, video_end: int | None) -> int:
        """The bytes a raw-frame file holds past its last whole frame, read to its end: a frame cut short."""
        if self.input.format.name not in RAW_FRAME_DEMUXERS or video_end is None:
            return 0
        try:
            return max(0, self.source.stat().st_size - video_end)
        except OSError:
            return 0

    def _monotonic_pts(self, pts: int | None, last: int | None, step: int) -> int:
        """The frame's timestamp (`continued_pts`), a repair noted."""
        continued = continued_pts(pts, last, step)
        if last is not None and continued != pts and self.repairs is not None:
            self.repairs.note("frames without increasing timestamps; given one frame's spacing")
        return continued

    def _decode_packet(self, packet: Any, index: int, *, holds_picture: bool = True) -> list[Any]:
        """The frames a packet completes; `index` frames have come out before it."""
        self.in_flight.sent(packet)
        try:
            return self.video.decode(packet)
        except self.av.error.EOFError:
            return []  # the decoder was already flushed by the demuxer's final empty packet
        except self.av.error.FFmpegError as error:
            if not holds_picture:  # an N-VOP failed (after a damaged packet, whose frames are counted lost)
                return []
            raise self._undecodable(packet, index, error_reason(error)) from error

    def _undecodable(self, packet: Any, index: int, reason: str) -> VideoError:
        """The error of a frame that failed while `packet` was sent (`PacketsInFlight`), `index` frames out before."""
        pts, certain = self.in_flight.failed(packet)
        time = seconds_of(pts, time_base_of(self.video))
        at = "" if pts is None else f" {'at' if certain else 'near'} {time:.2f} s"
        return VideoError(
            f"{self.source}: a frame{at} cannot be decoded ({reason}); the file is damaged "
            f"({frames_before_hint(index, self.frames, command_line=self.command_line)})"
        )
