"""Upscale a video frame by frame, with PyAV (FFmpeg in its wheels; no `ffmpeg` program needed).

Three stages run at once, joined by short queues, so memory stays bounded whatever the length
and the decoder and encoder work while the network does: a decoder thread (demux, decode to
RGB), this thread (every frame through `Upscaler.upscale_array`, the path images take), and an
encoder thread (encode, mux). Audio and subtitle packets travel through the same queues in
demuxing order and are muxed as they are, never decoded (`srfeat.video.copied`). Each output
frame keeps its input frame's timestamp, so a variable frame rate survives. The output is written under a temporary
name beside the target and renamed when complete: an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from contextlib import closing, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from srfeat.errors import SRFeatError, VideoError, printable
from srfeat.files import move_into_place, writing_temporary
from srfeat.video import VideoOptions
from srfeat.video.copied import (
    CopiedStreams,
    TimestampRepairs,
    carried_tags,
    copy_chapters_and_tags,
    cut_to_window,
    write_header,
)
from srfeat.video.encoding import (
    choose_codec,
    choose_pixel_format,
    colour_tags,
    even_size,
    quality_options,
    repaired_decode_time,
    stream_tag,
)
from srfeat.video.output import (
    check_call,
    check_frame_size,
    check_is_video,
    container_format_of,
    import_av,
    open_input,
    write_error,
)
from srfeat.video.probe import (
    FrameDefects,
    TimeWindow,
    check_length,
    continued_pts,
    display_matrix,
    error_reason,
    expected_frames,
    ffmpeg_log,
    ffmpeg_name,
    first_frame,
    frame_step,
    has_alpha,
    logged_reason,
    main_video_stream,
    seconds_of,
    time_base_of,
    time_window,
)

if TYPE_CHECKING:
    from types import ModuleType

    from av.container import InputContainer, OutputContainer
    from av.packet import Packet
    from av.video.stream import VideoStream

    from srfeat.inference import Upscaler

logger = logging.getLogger(__name__)

__all__ = ["VideoSummary", "upscale_video"]

# Frames in flight between two stages: enough to keep every stage busy, few enough that 4x
# frames of a long 4K video do not pile up.
QUEUE_SIZE = 4
# A copied stream's packets after the last frame's time are dropped; demuxing stops this far past it.
SLICE_MARGIN_S = 10.0


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    width: int
    height: int
    codec: str
    copied_streams: int


def upscale_video(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    upscaler: Upscaler,
    options: VideoOptions,
    replace: bool = True,
) -> VideoSummary:
    """Upscale every frame (or `options.frames`) of `source` into the video file `target`.

    Raises `VideoError` (one line naming the file) for an unreadable file, a file without a
    video stream, an image file named like a video, a frame that does not decode, a stream the
    output container cannot hold, or an output that cannot be written; `target` is then left
    as it was, and no temporary file stays behind. With `replace` False an existing `target` is kept,
    even one that appeared while `source` was upscaled: `srfeat.files.OutputExistsError` says so
    (before any frame is decoded for one that exists already). Paths may be str (`~` expanded).
    """
    source, target = check_call(source, target, upscaler, options, replace)
    av = import_av(source)
    container_format = container_format_of(source, target)
    with closing(open_input(av, source)) as source_container:
        check_is_video(source, source_container)
        window = None if options.frames.is_everything else time_window(av, source, options.frames)
        try:
            # the folder made, a stale temporary removed (a live writer's kept), this one removed at the end
            with writing_temporary(target) as temporary:
                output = av.open(ffmpeg_name(temporary), "w", format=container_format)
                try:
                    summary = _Transcoder(av, source, source_container, output, upscaler, options, window).run()
                    output.close()  # writes the trailer: the file is complete only after this
                except BaseException:
                    with suppress(Exception):
                        output.close()
                    raise
                move_into_place(temporary, target, replace)
        except SRFeatError:  # already one line (VideoError and DiskFullError are OSErrors too)
            raise
        except (av.error.FFmpegError, OSError) as error:  # mkdir, the muxer, the rename: the output's problem
            raise write_error(source, target, error) from error
    return summary


@dataclass
class _Frame:
    index: int
    pixels: np.ndarray  # HxWx3 uint8 RGB
    pts: int


_END = object()


class _Transcoder:
    """One video: stream setup, then the decode / upscale / encode threads."""

    def __init__(
        self,
        av: ModuleType,
        source: Path,
        source_container: InputContainer,
        output: OutputContainer,
        upscaler: Upscaler,
        options: VideoOptions,
        window: TimeWindow | None,
    ) -> None:
        self.av = av
        self.source = source
        self.input = source_container
        self.output = output
        self.upscaler = upscaler
        self.options = options
        self.window = window
        video = main_video_stream(source_container)
        assert video is not None  # checked by the caller
        self.video: VideoStream = video
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.decoded_frames = 0
        self.hidden_frames = 0  # decoded, not shown: before an edit list's start (`check_length`)
        self.repairs = TimestampRepairs(source)
        self.defects = FrameDefects(source)
        self.last_frame_time: float | None = None
        self.last_dts: int | None = None  # of the encoded video
        self.step = frame_step(video)  # one frame in the input's time base, which the encoder keeps
        self._setup_video()
        self.copied_streams = CopiedStreams(av, source, source_container, output, self.video.index, self.repairs)
        self.copied = self.copied_streams.streams
        copy_chapters_and_tags(av, source_container, output, window)
        write_header(av, source, output)

    # -- streams ----------------------------------------------------------------------------

    def _setup_video(self) -> None:
        video, options = self.video, self.options
        context = video.codec_context  # the header's frame size was checked with the input (check_is_video)
        first = first_frame(self.av, self.source)
        # The first frame's size, not the header's: some streams (raw H.264) state it only in the frames.
        self.frame_size = (first.width, first.height) if first is not None else (context.width, context.height)
        if not all(self.frame_size):
            raise VideoError(f"{self.source}: the video stream has no frame size; the file is damaged")
        check_frame_size(self.source, *self.frame_size)
        scale = options.outscale if options.outscale is not None else self.upscaler.scale
        if scale <= 0:
            raise VideoError(f"outscale must be positive, got {scale}")
        width, height = (max(1, round(side * scale)) for side in self.frame_size)
        codec = choose_codec(self.av, self.output, self.source, options.codec)
        pixel_format = choose_pixel_format(codec, options.crf)
        if (even := even_size(self.source, width, height, pixel_format)) != (width, height):
            width, height = even
            logger.info("%s: output cropped to %dx%d (%s needs even sizes)", self.source, width, height, pixel_format)
        self.width, self.height, self.pixel_format = width, height, pixel_format
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        stream = self.output.add_stream(codec.name, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        if tag := stream_tag(codec.canonical_name, self.output.format.name):
            stream.codec_context.codec_tag = tag
        # The input's time base: every frame keeps its timestamp exactly, so variable frame rates survive.
        stream.time_base = video.time_base
        stream.codec_context.time_base = video.time_base
        if video.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = video.sample_aspect_ratio
        for tag in ("color_primaries", "color_trc"):
            with suppress(AttributeError, ValueError, TypeError):
                setattr(stream.codec_context, tag, getattr(context, tag))
        self.colours = colour_tags(
            context.colorspace,
            context.color_range,
            self.frame_size,
            self.av.VideoFormat(pixel_format).is_rgb,
        )
        for tag, value in (("colorspace", self.colours.matrix), ("color_range", self.colours.colour_range)):
            if value is not None:
                with suppress(AttributeError, ValueError, TypeError):
                    setattr(stream.codec_context, tag, value)
        stream.codec_context.options = quality_options(codec.name, options.crf)
        if first is not None and first.interlaced_frame:
            logger.warning(
                "%s is interlaced: each frame's two fields (taken 1/%d s apart) are upscaled as one picture, so "
                "moving edges come out combed, 4x as large; deinterlace it first (ffmpeg -vf bwdif)",
                self.source,
                round(2 * rate),
            )
        if has_alpha(video, first):
            logger.warning(
                "%s has an alpha channel (transparency): video frames are upscaled as RGB, so the output is "
                "opaque; for the transparency, upscale its frames as PNG images",
                self.source,
            )
        if first is not None and (matrix := display_matrix(first, self.source)) is not None:
            stream.set_display_matrix(matrix)  # a portrait phone video stays upright, a selfie mirrored
        stream.metadata.update(carried_tags(video.metadata, encoded=True))
        stream.disposition = video.disposition
        self.encoder = stream
        self.codec_name = codec.name
        self._open_encoder()

    def _open_encoder(self) -> None:
        """Open the encoder now: its limits (x264: 16384 pixels a side) refuse a size before a frame
        is decoded or upscaled, not after the first frame's minutes on the network."""
        logs: list[Any] = []
        others = [name for name in ("libx264", "ffv1", "libvpx-vp9") if name != self.codec_name]
        try:
            with ffmpeg_log(self.av) as logs:
                self.encoder.codec_context.open()
        except self.av.error.FFmpegError as error:  # FFmpeg's reason: the size, the frame rate, the colour range
            raise VideoError(
                f"{self.source}: the {self.codec_name} encoder refuses {self.width}x{self.height} frames "
                f"({logged_reason(logs, error)}); give another --codec ({', '.join(others)}), or a smaller "
                "--outscale if the size is what it refuses"
            ) from error

    # -- the pipeline -----------------------------------------------------------------------

    def run(self) -> VideoSummary:
        from tqdm import tqdm

        decoded: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        upscaled: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        workers = [
            threading.Thread(target=self._guard, args=(self._decode, decoded), name="srfeat-decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._encode, upscaled), name="srfeat-encode", daemon=True),
        ]
        for worker in workers:
            worker.start()
        tile_progress, self.upscaler.progress = self.upscaler.progress, False  # one bar: frames, not tiles
        written = 0
        try:
            with tqdm(
                total=expected_frames(self.video, self.options.frames),
                unit="frame",
                desc=printable(self.source.name),  # a name may hold an escape sequence
                disable=None,
            ) as bar:
                while (item := self._get(decoded)) is not _END:
                    if isinstance(item, _Frame):
                        self._check_same_size(item)
                        pixels = self.upscaler.upscale_array(item.pixels, outscale=self.options.outscale)
                        item = _Frame(item.index, pixels[: self.height, : self.width], item.pts)
                        written += 1
                        bar.update()
                    self._put(upscaled, item)
            self._put(upscaled, _END)
            workers[1].join()
        except BaseException:
            self.stop.set()
            raise
        finally:
            self.upscaler.progress = tile_progress
            self.stop.set()
            for worker in workers:
                worker.join()
        if self.failure is not None:
            raise self.failure
        if written == 0:
            raise VideoError(f"{self.source}: no frame decoded; the video stream is empty or damaged")
        check_length(
            self.source,
            self.video,
            self.options.frames,
            self.decoded_frames,
            self.last_frame_time,
            self.hidden_frames,
        )
        self.defects.report(written)
        return VideoSummary(
            written, self.width, self.height, self.codec_name, len(self.copied) + self.copied_streams.attachments
        )

    def _check_same_size(self, frame: _Frame) -> None:
        """A frame of another size than the first would come out cropped or short: refused, with the
        range that works (streams spliced from two sources, broadcasts changing resolution)."""
        height, width = frame.pixels.shape[:2]
        if (width, height) != self.frame_size:
            first_width, first_height = self.frame_size
            raise VideoError(
                f"{self.source}: frame {frame.index} is {width}x{height}, the frames before it {first_width}x"
                f"{first_height}; videos whose frame size changes are not supported (--frames 0:{frame.index} "
                "upscales the frames before it)"
            )

    def _guard(self, stage: Any, *args: Any) -> None:
        """Run a worker stage; its error stops the others and is raised by `run`."""
        try:
            stage(*args)
        except _StoppedError:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            if self.failure is None:
                self.failure = error
            self.stop.set()

    def _put(self, channel: queue.Queue[Any], item: object) -> None:
        while not self.stop.is_set():
            try:
                channel.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        if self.failure is not None:
            raise self.failure
        raise _StoppedError

    def _get(self, channel: queue.Queue[Any]) -> object:
        while not self.stop.is_set():
            try:
                return channel.get(timeout=0.1)
            except queue.Empty:
                continue
        if self.failure is not None:
            raise self.failure
        raise _StoppedError

    def _decode(self, channel: queue.Queue[Any]) -> None:
        av, video, frames, window = self.av, self.video, self.options.frames, self.window
        video.thread_type = "AUTO"
        time_base = time_base_of(video)
        video_shift = round(window.start / time_base) if window else 0
        step = self.step
        last_pts: int | None = None
        index = 0
        done = False
        packets = self.input.demux([video, *(self.input.streams[index] for index in self.copied)])
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                raise VideoError(
                    f"{self.source}: cannot read past frame {index} ({error_reason(error)}); the file is damaged"
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
                self.hidden_frames += packet.is_discard
                for frame in self._decode_packet(packet, index):
                    if frames.stop is not None and index >= frames.stop:
                        done = True
                        break
                    pts = last_pts = self._monotonic_pts(frame.pts, last_pts, step)
                    if index >= frames.start:
                        self.defects.check(frame, index)
                        pixels = frame.to_ndarray(format="rgb24", src_colorspace=self.colours.source_matrix)
                        self._put(channel, _Frame(index, pixels, pts - video_shift))
                        self.last_frame_time = seconds_of(pts, time_base)
                    index += 1
            elif packet.dts is not None and packet.size:
                # Continued first, as the frames' are, so that the window cuts joined files' audio at
                # the frames' moment, not at each part's.
                self.copied_streams.continue_timestamps(packet)
                if window is not None and not cut_to_window(packet, window):
                    continue
                packet.stream = self.copied[packet.stream.index]
                self._put(channel, packet)
        # The demuxer ends with an empty packet per stream, which flushed the decoder above.
        self.decoded_frames = index
        self._put(channel, _END)

    def _monotonic_pts(self, pts: int | None, last: int | None, step: int) -> int:
        """The frame's timestamp (`continued_pts`), a repair noted."""
        continued = continued_pts(pts, last, step)
        if last is not None and continued != pts:
            self.repairs.note("frames without increasing timestamps; given one frame's spacing")
        return continued

    def _decode_packet(self, packet: Any, index: int) -> list[Any]:
        """The frames a packet completes; `index` frames have come out before it."""
        try:
            return self.video.decode(packet)
        except self.av.error.EOFError:
            return []  # the decoder was already flushed by the demuxer's final empty packet
        except self.av.error.FFmpegError as error:
            # Decoder threads report an error a few packets late: the time is where it surfaced.
            at = (
                ""
                if packet is None or packet.pts is None
                else f" near {seconds_of(packet.pts, time_base_of(packet)):.2f} s"
            )
            raise VideoError(
                f"{self.source}: a frame{at} cannot be decoded ({error_reason(error)}); the file is damaged "
                f"(--frames 0:{index} upscales the {index} frames before it)"
            ) from error

    def _encode(self, channel: queue.Queue[Any]) -> None:
        av, encoder, output = self.av, self.encoder, self.output
        while (item := self._get(channel)) is not _END:
            if isinstance(item, _Frame):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item.pixels), format="rgb24")
                frame = frame.reformat(
                    format=self.pixel_format,
                    dst_colorspace=self.colours.matrix or None,
                    dst_color_range=self.colours.colour_range,
                )
                frame.pts, frame.time_base = item.pts, encoder.codec_context.time_base
                for packet in self._encoded(frame):
                    output.mux(packet)
            else:
                self._mux_copied(cast("Packet", item))
        for packet in self._encoded(None):
            output.mux(packet)

    def _mux_copied(self, packet: Packet) -> None:
        """A muxer refuses a copied packet for what it holds (its timestamps), not for the file it writes."""
        try:
            self.output.mux(packet)
        except self.av.error.ArgumentError as error:  # EINVAL; a full disk is the file's, reported as such
            time = seconds_of(packet.dts, time_base_of(packet))
            raise VideoError(
                f"{self.source}: its {packet.stream.type} packet at {time:.2f} s cannot be copied "
                f"({error_reason(error)}); its timestamps are broken"
            ) from error

    def _encoded(self, frame: Any) -> list[Any]:
        try:
            packets = self.encoder.encode(frame)
        except self.av.error.FFmpegError as error:
            raise VideoError(f"{self.source}: the {self.codec_name} encoder failed: {error_reason(error)}") from error
        for packet in packets:  # the output is right either way: no warning
            packet.dts = self.last_dts = repaired_decode_time(packet.pts, packet.dts, self.last_dts, self.step)
        return packets


class _StoppedError(Exception):
    """A worker was told to stop (the main thread failed or was interrupted)."""
