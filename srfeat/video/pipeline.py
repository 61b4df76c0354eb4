"""Upscale a video frame by frame, with PyAV (FFmpeg in its wheels; no `ffmpeg` program needed).

Three stages run at once, joined by short queues, so memory stays bounded whatever the length
and the decoder and encoder work while the network does: a decoder thread (demux, decode to
RGB: `srfeat.video.input_frames`), this thread (every frame through `Upscaler.upscale_array`, the
path images take), and an encoder thread (encode, mux: `srfeat.video.upscaled_stream`). Audio and
subtitle packets travel through the same queues in demuxing order and are muxed as they are, never
decoded (`srfeat.video.copied`). Each output frame keeps its input frame's timestamp, so a variable
frame rate survives. The output is written under a temporary name beside the target and renamed when
complete: an error or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from srfeat.errors import SRFeatError, VideoError, printable
from srfeat.files import move_into_place, writing_temporary
from srfeat.video import VideoOptions, frames_before_hint
from srfeat.video.copied import (
    CopiedStreams,
    TimestampRepairs,
    copy_chapters_and_tags,
    write_header,
)
from srfeat.video.input_frames import Frame, InputFrames
from srfeat.video.output import (
    check_call,
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
    error_reason,
    expected_frames,
    ffmpeg_name,
    main_video_stream,
    seconds_of,
    time_base_of,
)
from srfeat.video.range_times import time_window
from srfeat.video.upscaled_stream import UpscaledStream

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


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    width: int
    height: int
    codec: str
    copied_streams: int


def upscale_video(
    source: str | bytes | os.PathLike[str],
    target: str | bytes | os.PathLike[str],
    upscaler: Upscaler,
    options: VideoOptions,
    replace: bool = True,
    *,
    command_line: bool = False,
) -> VideoSummary:
    """Upscale every frame (or `options.frames`) of `source` into the video file `target`.

    Raises `VideoError` (one line naming the file) for an unreadable file, a file without a
    video stream, an image file named like a video, a frame that does not decode, a stream the
    output container cannot hold, or an output that cannot be written; `target` is then left
    as it was, and no temporary file stays behind. With `replace` False an existing `target` is kept,
    even one that appeared while `source` was upscaled: `srfeat.files.OutputExistsError` says so
    (before any frame is decoded for one that exists already). A `target` that is `source` itself (under
    another spelling, or a symbolic or hard link to it) is never written, `replace` or not:
    `srfeat.files.OutputIsInputError`, before the video is opened. Paths may be str, bytes or path-like (`~` expanded).
    Messages name `options`' fields (`codec`, `crf`, `frames=FrameRange(0, N)`); `command_line` (`srfeat
    upscale`'s) names its flags instead (`--codec`, `--crf`, `--frames 0:N`).
    """
    source, target = check_call(source, target, upscaler, options, replace, command_line=command_line)
    av = import_av(source)
    container_format = container_format_of(source, target)
    with closing(open_input(av, source, say_damage=True)) as source_container:
        check_is_video(source, source_container)
        window = (
            None if options.frames.is_everything else time_window(av, source, options.frames, command_line=command_line)
        )
        try:
            # the folder made, a stale temporary removed (a live writer's kept), this one removed at the end
            with writing_temporary(target) as temporary:
                output = av.open(ffmpeg_name(temporary), "w", format=container_format)
                try:
                    summary = _Transcoder(
                        av, source, source_container, output, upscaler, options, window, command_line
                    ).run()
                    output.close()  # writes the trailer: the file is complete only after this
                except BaseException:
                    with suppress(Exception):
                        output.close()
                    raise
                move_into_place(temporary, target, replace, command_line=command_line)
        except SRFeatError:  # already one line (VideoError and DiskFullError are OSErrors too)
            raise
        except (av.error.FFmpegError, OSError) as error:  # mkdir, the muxer, the rename: the output's problem
            raise write_error(source, target, error) from error
    return summary


_END = object()


class _Transcoder:
    """One video: the output's streams set up, then the decode / upscale / encode threads."""

    def __init__(
        self,
        av: ModuleType,
        source: Path,
        source_container: InputContainer,
        output: OutputContainer,
        upscaler: Upscaler,
        options: VideoOptions,
        window: TimeWindow | None,
        command_line: bool,
    ) -> None:
        self.av = av
        self.source = source
        self.command_line = command_line
        self.output = output
        self.upscaler = upscaler
        self.options = options
        video = main_video_stream(source_container)
        assert video is not None  # checked by the caller
        self.video: VideoStream = video
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        repairs = TimestampRepairs(source)
        self.defects = FrameDefects(source, command_line)
        self.upscaled = UpscaledStream(
            av, source, video, output, options, upscaler.scale, command_line=command_line
        )  # the output's first stream
        self.copied_streams = CopiedStreams(av, source, source_container, output, self.video.index, repairs)
        self.copied = self.copied_streams.streams
        copy_chapters_and_tags(av, source_container, output, window)
        write_header(av, source, output)
        matrix, step = self.upscaled.colours.source_matrix, self.upscaled.step  # the frames' RGB, their spacing
        self.decoded = InputFrames(
            av,
            source,
            source_container,
            video,
            options.frames,
            window,
            self.copied_streams,
            self.defects,
            matrix,
            step,
            command_line=command_line,
            abandoned=self.stop,  # Ctrl-C in the main thread stops the container scan the reading waits for
        )

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
                    if isinstance(item, Frame):
                        self._check_same_size(item)
                        pixels = self.upscaler.upscale_array(item.pixels, outscale=self.options.outscale)
                        item = Frame(item.index, pixels[: self.upscaled.height, : self.upscaled.width], item.pts)
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
        read = self.decoded
        check_length(
            self.source,
            self.video,
            self.options.frames,
            read.decoded_frames,
            read.last_frame_time,
            read.hidden_frames,
            read.cut_frame_bytes,
            cut_packet_bytes=read.cut_packet_bytes,
            last_frame_duration=read.last_frame_duration,
            command_line=self.command_line,
        )
        read.lost.report()
        if read.listed is not None:
            missing = bool(read.lost.missing() or read.lost.missing_before())
            read.listed.report(self.source, time_base_of(self.video), frames_missing=missing)
        self.defects.report(written)
        stream, copied = self.upscaled, len(self.copied) + self.copied_streams.attachments
        return VideoSummary(written, stream.width, stream.height, stream.codec_name, copied)

    def _check_same_size(self, frame: Frame) -> None:
        """A frame of another size than the first would come out cropped or short: refused, with the
        range that works (streams spliced from two sources, broadcasts changing resolution)."""
        height, width = frame.pixels.shape[:2]
        if (width, height) != self.upscaled.frame_size:
            first_width, first_height = self.upscaled.frame_size
            raise VideoError(
                f"{self.source}: frame {frame.index} is {width}x{height}, the frames before it {first_width}x"
                f"{first_height}; videos whose frame size changes are not supported "
                f"({frames_before_hint(frame.index, self.options.frames, command_line=self.command_line)})"
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
        # Closed at once when stopped, not when collected: the reading's container scan stops with it.
        with closing(iter(self.decoded)) as items:
            for item in items:
                self._put(channel, item)
        self._put(channel, _END)

    def _encode(self, channel: queue.Queue[Any]) -> None:
        upscaled, output = self.upscaled, self.output
        while (item := self._get(channel)) is not _END:
            if isinstance(item, Frame):
                for packet in upscaled.encode(item.pixels, item.pts):
                    output.mux(packet)
            else:
                self._mux_copied(cast("Packet", item))
        for packet in upscaled.flush():
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


class _StoppedError(Exception):
    """A worker was told to stop (the main thread failed or was interrupted)."""
