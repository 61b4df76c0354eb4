"""The output's video stream: set up from the input's, its encoder opened, upscaled frames encoded.

Its frames are the input's first frame (not the header's size: some streams state it only in the
frames) times the scale, cropped to even sizes where the pixel format needs them, in the codec and
pixel format `srfeat.video.encoding` chose. It keeps the input's time base (every frame keeps its
timestamp, so a variable frame rate survives), sample aspect ratio, colour tags, display matrix (a
portrait phone video stays upright), tags and disposition; an interlaced or transparent input is
warned about. The encoder is opened at once, so that a size it refuses is refused before a frame is
decoded. `srfeat.video.pipeline` feeds it the upscaled frames from its encoder thread.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from srfeat.errors import VideoError
from srfeat.inference.checks import scaled_size
from srfeat.video import VideoOptions
from srfeat.video.copied import carried_tags
from srfeat.video.encoding import (
    choose_codec,
    choose_pixel_format,
    colour_tags,
    even_size,
    quality_options,
    repaired_decode_time,
    stream_tag,
)
from srfeat.video.output import check_frame_size
from srfeat.video.probe import (
    display_matrix,
    error_reason,
    ffmpeg_log,
    first_frame,
    frame_step,
    has_alpha,
    logged_reason,
)

if TYPE_CHECKING:
    from types import ModuleType

    from av.container import OutputContainer
    from av.packet import Packet
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

__all__ = ["UpscaledStream"]


class UpscaledStream:
    """The upscaled video stream of `output`, made from the input's `video` stream of `source`: added to
    `output` (before any other stream) and its encoder opened, or a one-line `VideoError`."""

    def __init__(
        self,
        av: ModuleType,
        source: Path,
        video: VideoStream,
        output: OutputContainer,
        options: VideoOptions,
        model_scale: int,
        *,
        command_line: bool = False,
    ) -> None:
        self.av = av
        self.source = source
        self.command_line = command_line  # a refusal names --codec and --outscale, else VideoOptions's fields
        self.video = video
        self.output = output
        self.step = frame_step(video)  # one frame in the input's time base, which the encoder keeps
        self.last_dts: int | None = None  # of the encoded video
        context = video.codec_context  # the header's frame size was checked with the input (check_is_video)
        first = first_frame(av, source)
        # The first frame's size, not the header's: some streams (raw H.264) state it only in the frames.
        self.frame_size = (first.width, first.height) if first is not None else (context.width, context.height)
        if not all(self.frame_size):
            raise VideoError(  # an AVI or Matroska header of width 0: no frame decodes either
                f"{source}: its video stream states no frame size and no frame of it decodes; the file is damaged: "
                "skip or replace this file"
            )
        check_frame_size(source, *self.frame_size)
        scale = options.outscale if options.outscale is not None else model_scale
        if scale <= 0:
            raise VideoError(f"outscale must be positive, got {scale}")
        height, width = scaled_size(
            self.frame_size[1], self.frame_size[0], scale, what="video", command_line=command_line
        )
        codec = choose_codec(av, output, source, options.codec, command_line=command_line)
        pixel_format = choose_pixel_format(codec, options.crf)
        if (even := even_size(source, width, height, pixel_format, command_line=command_line)) != (width, height):
            width, height = even
            logger.info("%s: output cropped to %dx%d (%s needs even sizes)", source, width, height, pixel_format)
        self.width, self.height, self.pixel_format = width, height, pixel_format
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        stream = output.add_stream(codec.name, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        if tag := stream_tag(codec.canonical_name, output.format.name):
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
            av.VideoFormat(pixel_format).is_rgb,
        )
        for tag, value in (("colorspace", self.colours.matrix), ("color_range", self.colours.colour_range)):
            if value is not None:
                with suppress(AttributeError, ValueError, TypeError):
                    setattr(stream.codec_context, tag, value)
        stream.codec_context.options = quality_options(codec.name, options.crf, command_line=command_line)
        if first is not None and first.interlaced_frame:
            logger.warning(
                "%s is interlaced: each frame's two fields (taken 1/%d s apart) are upscaled as one picture, so "
                "moving edges come out combed, 4x as large; deinterlace it first (ffmpeg -vf bwdif)",
                source,
                round(2 * rate),
            )
        if has_alpha(video, first):
            logger.warning(
                "%s has an alpha channel (transparency): video frames are upscaled as RGB, so the output is "
                "opaque; for the transparency, upscale its frames as PNG images",
                source,
            )
        if first is not None and (matrix := display_matrix(first, source)) is not None:
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
        dash = "--" if self.command_line else ""  # the flags, or VideoOptions's fields
        try:
            with ffmpeg_log(self.av) as logs:
                self.encoder.codec_context.open()
        except self.av.error.FFmpegError as error:  # FFmpeg's reason: the size, the frame rate, the colour range
            raise VideoError(
                f"{self.source}: the {self.codec_name} encoder refuses {self.width}x{self.height} frames "
                f"({logged_reason(logs, error)}); give another {dash}codec ({', '.join(others)}), or a smaller "
                f"{dash}outscale if the size is what it refuses"
            ) from error

    def encode(self, pixels: np.ndarray, pts: int) -> list[Packet]:
        """The packets an upscaled frame (HxWx3 uint8 RGB, shown at `pts`) completes (often none yet)."""
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame = frame.reformat(
            format=self.pixel_format,
            dst_colorspace=self.colours.matrix or None,
            dst_color_range=self.colours.colour_range,
        )
        frame.pts, frame.time_base = pts, self.encoder.codec_context.time_base
        return self._encoded(frame)

    def flush(self) -> list[Packet]:
        """The packets the encoder still holds once the last frame is in."""
        return self._encoded(None)

    def _encoded(self, frame: Any) -> list[Packet]:
        try:
            packets = self.encoder.encode(frame)
        except self.av.error.FFmpegError as error:
            raise VideoError(f"{self.source}: the {self.codec_name} encoder failed: {error_reason(error)}") from error
        for packet in packets:  # the output is right either way: no warning
            packet.dts = self.last_dts = repaired_decode_time(packet.pts, packet.dts, self.last_dts, self.step)
        return packets
