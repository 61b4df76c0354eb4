"""What a video's upscale copies as it is: audio and subtitle streams, attachments, chapters and tags.

None of it is decoded: packets go from the input's demuxer to the output's muxer, in demuxing order
beside the upscaled frames (`srfeat.video.pipeline`). What is mended on the way is their timestamps,
where files joined end to end start over, since muxers refuse a packet earlier than the one before.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srfeat.errors import VideoError
from srfeat.video.encoding import codecs_held
from srfeat.video.output import containers_holding, extension_of
from srfeat.video.probe import ffmpeg_log, logged_reason, seconds_of, time_base_of

if TYPE_CHECKING:
    from types import ModuleType

    from av.container import InputContainer, OutputContainer
    from av.stream import Stream

    from srfeat.video.probe import TimeWindow

logger = logging.getLogger(__name__)

__all__ = [
    "CopiedStreams",
    "TimestampRepairs",
    "carried_tags",
    "copy_chapters_and_tags",
    "cut_to_window",
    "write_header",
]

# A stream's tags that count its packets: the length (the muxer writes its own) and mkvmerge's statistics.
COUNTING_TAGS = frozenset({"DURATION", "BPS", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES"})
# What FFmpeg reads off an MP4's or MOV's `ftyp` box as file tags: they describe that file's format.
MP4_FILE_TAGS = frozenset({"MAJOR_BRAND", "MINOR_VERSION", "COMPATIBLE_BRANDS"})


def carried_tags(metadata: dict[str, str], encoded: bool) -> dict[str, str]:
    """A stream's tags for its counterpart in the output, less those the output would make untrue: the
    counts of its packets (mkvmerge's frames, bytes and bit rate, with the app and date that counted
    them; `NAME-eng` where it gave them a language), and for the re-encoded video its encoder and
    WebM's alpha flag (the output is opaque)."""
    names = {key: key.upper().partition("-")[0] for key in metadata}
    stale = COUNTING_TAGS | {"ENCODER", "ALPHA_MODE"} if encoded else COUNTING_TAGS
    for key, name in names.items():
        if name == "_STATISTICS_TAGS":  # the names of the statistics, where there are others
            stale |= set(metadata[key].upper().split())
    return {k: v for k, v in metadata.items() if names[k] not in stale and not names[k].startswith("_STATISTICS_")}


@dataclass
class TimestampRepairs:
    """Timestamps mended so far in one video (broken or joined files), frames' and copied packets'
    alike; the first repair is warned about, once, and the rest only counted."""

    source: Path
    count: int = 0

    def note(self, what: str) -> None:
        if not self.count:
            logger.warning("%s: %s", self.source, what)
        self.count += 1


class CopiedStreams:
    """The input's audio and subtitle streams (and, into Matroska, its attachments) added to the
    output as they are; `streams` maps an input stream's index to its copy in the output."""

    def __init__(
        self,
        av: ModuleType,
        source: Path,
        source_container: InputContainer,
        output: OutputContainer,
        video_index: int,
        repairs: TimestampRepairs,
    ) -> None:
        self.av = av
        self.source = source
        self.output = output
        self.repairs = repairs
        self.attachments = 0
        self.timestamp_offsets: dict[int, int] = {}  # per copied stream, in its time base
        self.last_dts: dict[int, int] = {}
        self.streams: dict[int, Stream] = {}
        for stream in source_container.streams:
            if stream.index != video_index:
                self._add(stream)

    def _add(self, stream: Any) -> None:
        # The codec's name (mp3), not its decoder's (mp3float).
        name = stream.codec_context.codec.canonical_name if stream.codec_context is not None else "unknown"
        if stream.type == "attachment":
            if not self._copy_attachment(stream):
                logger.warning(
                    "%s: attachment #%d (%s) is not copied: only .mkv holds attachments (fonts of styled subtitles)",
                    self.source,
                    stream.index,
                    stream.name,
                )
            return
        if stream.type not in ("audio", "subtitle"):
            logger.warning("%s: stream #%d (%s %s) is not copied", self.source, stream.index, stream.type, name)
            return
        if stream.codec_context is None or stream.codec_context.codec.id == 0:  # no decoder: not even a name
            example = " (DVB teletext, say)" if stream.type == "subtitle" else ""
            raise VideoError(
                f"{self.source}: its {stream.type} stream #{stream.index} is in a codec this FFmpeg cannot "
                f"read{example}, so it cannot be copied; remove that stream first (e.g. ffmpeg -map)"
            )
        if name not in codecs_held(self.av, self.output.format.name):
            raise VideoError(
                f"{self.source}: its {stream.type} stream #{stream.index} ({name}) cannot be copied into a "
                f"{extension_of(self.output.format.name)} file; {containers_holding(self.av, name)}"
            )
        copy = self.output.add_stream_from_template(stream)
        copy.disposition = stream.disposition  # which audio plays by default, which subtitles are forced
        copy.metadata.update(carried_tags(stream.metadata, encoded=False))
        self.streams[stream.index] = copy

    def _copy_attachment(self, stream: Any) -> bool:
        """Copy a Matroska attachment (the fonts its styled subtitles are drawn with) into a Matroska
        output; False where it cannot go (other containers), for the warning that it is left out."""
        if self.output.format.name != "matroska" or not isinstance(stream.data, bytes):
            return False
        name = stream.name or f"attachment{stream.index}"
        self.output.add_attachment(name, stream.mimetype or "application/octet-stream", stream.data)
        self.attachments += 1
        return True

    def continue_timestamps(self, packet: Any) -> None:
        """A copied stream's timestamps that go back (files joined end to end, as TV recordings and
        camcorder segments are) or repeat continue from its last packet instead, as the frames' do:
        muxers refuse a packet earlier than the one before it (MP4: not later)."""
        index = packet.stream.index
        offset = self.timestamp_offsets.get(index, 0)
        last = self.last_dts.get(index)
        # Audio packets never share a time; subtitle lines may (two speakers at once).
        if last is not None and (
            packet.dts + offset < last or (packet.dts + offset == last and packet.stream.type == "audio")
        ):
            self.repairs.note("timestamps go back (joined files?); continued from the last ones")
            offset = self.timestamp_offsets[index] = last + max(packet.duration or 0, 1) - packet.dts
        packet.dts += offset
        if packet.pts is not None:
            packet.pts += offset
        self.last_dts[index] = packet.dts


def cut_to_window(packet: Any, window: TimeWindow) -> bool:
    """Whether a copied packet belongs to the `--frames` span; if so it is moved to the span's clock,
    which starts at 0. A subtitle line still on screen when the span starts (shown before it) is kept,
    from the span's start for the rest of its time: a preview from mid-sentence shows the sentence."""
    time_base = time_base_of(packet)
    start = packet.pts if packet.pts is not None else packet.dts
    time = seconds_of(start, time_base)
    if window.stop is not None and time >= window.stop:
        return False
    shift = round(window.start / time_base)
    if time < window.start:
        end = start + (packet.duration or 0)
        if packet.stream.type != "subtitle" or seconds_of(end, time_base) <= window.start:
            return False
        packet.pts = packet.dts = shift
        packet.duration = end - shift
    packet.dts -= shift
    if packet.pts is not None:
        packet.pts -= shift
    return True


def copy_chapters_and_tags(
    av: ModuleType, source_container: InputContainer, output: OutputContainer, window: TimeWindow | None
) -> None:
    """The file's title and other tags, and its chapters (those in a `--frames` span, shifted as the
    frames are): without them a film's chapter menu would be gone from the output. An MP4's or MOV's
    brand tags (which the MP4 and MOV muxers write anew) are not written into Matroska or WebM."""
    dropped = {"DURATION", "ENCODER"} | (set() if output.format.name in ("mp4", "mov") else MP4_FILE_TAGS)
    tags = {k: v for k, v in source_container.metadata.items() if k.upper() not in dropped}
    output.metadata.update(tags)
    chapters = []
    for chapter in source_container.chapters():
        time_base = chapter["time_base"]
        if not time_base:  # a damaged file's chapter without times: nothing to place
            continue
        start, end = chapter["start"] * time_base, chapter["end"] * time_base
        if window is not None:
            offset = Fraction(window.start)
            stop = Fraction(window.stop) if window.stop is not None else end
            if end <= offset or start >= stop:
                continue
            start, end = max(start, offset) - offset, min(end, stop) - offset
        chapters.append({**chapter, "start": round(start / time_base), "end": round(end / time_base)})
    if chapters:
        with suppress(av.error.FFmpegError, ValueError):  # a container without chapters (WebM): left out
            output.set_chapters(chapters)


def write_header(av: ModuleType, source: Path, output: OutputContainer) -> None:
    """Write the output's header once every stream is added, before a frame is decoded: a muxer that
    refuses a stream there (MOV takes FLAC and Opus audio only in MP4) is named as the container's
    refusal, not, at the first packet, as the input's broken timestamps."""
    logs: list[Any] = []
    try:
        with ffmpeg_log(av) as logs:
            output.start_encoding()
    except av.error.FFmpegError as error:
        extension = extension_of(output.format.name)
        other = ".mkv" if extension != ".mkv" else ".mp4"
        raise VideoError(
            f"{source}: its streams cannot be written into a {extension} file ({logged_reason(logs, error)}); "
            f"write {other} instead (-o NAME{other})"
        ) from error
