"""What is checked about a video job before and around the work: PyAV is there, the input is a
video (not an image under a video's name), the output's container, folder, encoder and --crf
can be written as asked; and the one line an error of writing becomes."""

from __future__ import annotations

import errno
import io
import logging
import os
import re
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from srfeat.data.io import IMAGE_EXTENSIONS
from srfeat.errors import InvalidOptionError, VideoError, check_flag, shown
from srfeat.files import DiskFullError, OutputExistsError, refuse_output_is_input, replace_option
from srfeat.path_checks import unwritable_file
from srfeat.video import WRITTEN_CONTAINERS, VideoOptions
from srfeat.video.encoding import choose_codec, codecs_held, quality_options
from srfeat.video.probe import error_reason, ffmpeg_log, main_video_stream, open_for_reading

if TYPE_CHECKING:
    from types import ModuleType

    from av.container import InputContainer

    from srfeat.inference import Upscaler

__all__ = [
    "IMAGE_DEMUXERS",
    "check_call",
    "check_folder",
    "check_frame_size",
    "check_is_video",
    "check_output",
    "container_format_of",
    "containers_holding",
    "extension_of",
    "import_av",
    "open_input",
    "write_error",
]

logger = logging.getLogger(__name__)


def import_av(source: Path) -> ModuleType:
    try:
        import av
    except ImportError as error:
        raise VideoError(
            f'{source}: videos need PyAV, which is not installed: pip install -e ".[video]" in srfeat\'s folder'
        ) from error
    return av


def open_input(av: ModuleType, source: Path, *, say_damage: bool = False) -> InputContainer:
    """`source` opened for reading; VideoError (one line) if FFmpeg cannot read it. `say_damage`: warn of damage
    FFmpeg logs as it reads the header and passes over (the upscale's own opening: once a video)."""
    try:
        with ffmpeg_log(av, av.logging.WARNING if say_damage else None) as logs:
            container = open_for_reading(av, source)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        # FFmpeg's raw-frame demuxer refuses a .y4m header's frame size as it opens, for a reason that
        # reads "Device or resource busy" (its log alone says "Picture size 20000x20000 is invalid").
        # Other demuxers refuse a frame size as "Invalid data" (Matroska's 0x12), said only in FFmpeg's log.
        if (size := y4m_frame_size(source) or refused_frame_size(av, source)) is not None:
            check_frame_size(source, *size)
            if not ffmpeg_takes_size(*size):
                raise unreadable_frame_size(source, *size) from error
        reason = error_reason(error)
        if getattr(error, "errno", None) == errno.ENOMEM:
            # FFmpeg refuses at once a table its header claims is gigabytes (an MP4's stts entry count made 2^28):
            # "Cannot allocate memory" alone had the user look for memory to free, for a file of kilobytes.
            reason += (
                " as FFmpeg read its header: a damaged header claiming more than FFmpeg sets aside, or the machine's "
                "memory is spent"
            )
        raise VideoError(f"cannot read video {source}: {reason}; skip or replace this file") from error
    # An MP4's sample table with a box twice (a flipped bit made its ctts an stts): FFmpeg reads the last, and
    # frames came out missing or out of time, without a word.
    for box in sorted({found[1] for line in logs if (found := DUPLICATED_BOX.search(str(line[2])))}):
        logger.warning(
            "%s: its sample table holds two %s boxes, of which FFmpeg reads the last (a damaged file?): frames may "
            "be missing or out of time",
            source,
            box.lower(),
        )
    return container


# What FFmpeg's MP4 reader logs of a sample table box it met twice.
DUPLICATED_BOX = re.compile(r"Duplicated ([A-Z]{4}) atom")


# What FFmpeg logs of a frame size that it refuses as it opens a file.
REFUSED_SIZE = re.compile(r"(?:Picture size|Invalid coded dimensions) (\d+)x(\d+)")


def refused_frame_size(av: ModuleType, source: Path) -> tuple[int, int] | None:
    """The frame size FFmpeg refused in `source`'s header, from its log on another opening: the failed one
    said only "Invalid data", and one that opens reads the size as 0x0 (an AVI or Matroska file's raw or
    FFV1 frames at 20000x20000), whereupon no frame decodes."""
    with ffmpeg_log(av) as logs, suppress(av.error.FFmpegError, OSError, UnicodeDecodeError):
        open_for_reading(av, source).close()
    for line in logs:
        if match := REFUSED_SIZE.search(str(line[2])):
            return int(match[1]), int(match[2])
    return None


def unreadable_frame_size(source: Path, width: int, height: int) -> VideoError:
    return VideoError(
        f"{source}: its header says {width}x{height} pixels a frame, a size FFmpeg cannot read "
        "(a damaged header?); skip or replace this file"
    )


def ffmpeg_takes_size(width: int, height: int) -> bool:
    """FFmpeg's test of a picture size (`av_image_check_size`): each side positive, and a padded frame's
    bytes at 8 a pixel within a C int."""
    return width > 0 and height > 0 and (width + 128) * 8 * (height + 128) < 2**31 - 1


def y4m_frame_size(source: Path) -> tuple[int, int] | None:
    """The frame size a YUV4MPEG2 (.y4m) file's header line states (`YUV4MPEG2 W640 H480 ...`), else None."""
    try:
        with source.open("rb") as file:
            header = file.read(256).split(b"\n", 1)[0]  # FFmpeg reads at most 256 bytes of it, too
    except OSError:
        return None
    words = header.split(b" ")
    if words[0] != b"YUV4MPEG2":
        return None
    sides = {word[:1]: word[1:] for word in words[1:] if word[:1] in (b"W", b"H")}
    try:
        return int(sides[b"W"]), int(sides[b"H"])
    except (KeyError, ValueError):
        return None


def check_call(
    source: str | bytes | os.PathLike[str],
    target: str | bytes | os.PathLike[str],
    upscaler: Upscaler,
    options: VideoOptions,
    replace: bool,
    *,
    command_line: bool = False,
) -> tuple[Path, Path]:
    """`upscale_video`'s arguments checked before the video opens; the paths as Paths, `~` expanded. A
    `target` that is `source` (another spelling, a link or a hard link to it) is refused, `replace` or not;
    an existing one without `replace` names replace=True (`command_line`: --overwrite)."""
    from srfeat.inference import Upscaler as Upscaler_  # torch: loaded by whoever made the upscaler

    if not isinstance(upscaler, Upscaler_):  # "default": AttributeError 'scale' once the video was open
        raise InvalidOptionError(
            f"upscaler must be an srfeat.Upscaler (e.g. Upscaler('default')), got {shown(upscaler)}"
        )
    if not isinstance(options, VideoOptions):
        raise InvalidOptionError(f"options must be an srfeat.video.VideoOptions, got {shown(options)}")
    from srfeat.weights import as_path  # torch, as above

    source, target = as_path(source, "the video"), as_path(target, "the output video")  # 5: pathlib's TypeError
    replace = check_flag(replace, "replace")  # "no" replaced the target
    refuse_output_is_input(source, target)
    check_not_folder(source, target)
    if not replace and (target.exists() or target.is_symlink()):  # not after minutes of upscaling
        option = replace_option(command_line)  # the command checked first: this is a file saved since
        raise OutputExistsError(f"{target} exists; it is kept: remove it, or pass {option} to replace it")
    return source, target


def check_output(source: Path, target: Path, options: VideoOptions, *, command_line: bool = False) -> None:
    """What would stop `source` being upscaled into `target`, found before the model loads: an input
    FFmpeg cannot read or that holds no video (`check_is_video`; nothing is decoded), a container we
    do not write, a folder where the output goes, an output folder that cannot be made, an encoder or
    crf this FFmpeg or container does not take. Raises `VideoError` (one line; `command_line`: a bad
    codec or crf is named `--codec` or `--crf`)."""
    av = import_av(source)
    with closing(open_input(av, source)) as container:
        check_is_video(source, container)
    container_format = container_format_of(source, target)
    check_not_folder(source, target)
    check_folder(source, target)
    # An output container in memory answers which codecs it holds, as the real one will.
    with av.open(io.BytesIO(), "w", format=container_format) as probe:
        codec = choose_codec(av, probe, source, options.codec, command_line=command_line)
        quality_options(codec.name, options.crf, command_line=command_line)


# FFmpeg's demuxers of still images: a PNG or JPEG named .mp4 opens as a one-frame "video".
IMAGE_DEMUXERS = frozenset({"image2", "image2pipe"})


def check_is_video(source: Path, container: InputContainer) -> None:
    """Refuse an input with no film in it, a still image under a video's name (which would come
    back as a one-frame lossy video, not the lossless image it is: renamed, it goes the image path),
    a film this FFmpeg has no decoder for, or one whose header states frames too large: before
    anything is decoded (`--frames` decodes up to its range first, to learn where to cut)."""
    demuxer = container.format.name
    still_gif = demuxer == "gif" and _at_most_one_frame(source)  # an animated one is a film (a GIF named .mp4)
    if demuxer in IMAGE_DEMUXERS or demuxer.endswith("_pipe") or still_gif:
        kind = f" ({demuxer.removesuffix('_pipe').upper()})" if demuxer.endswith("_pipe") or still_gif else ""
        if source.suffix.lower() in IMAGE_EXTENSIONS:  # given to upscale_video by name: the CLI sends it the images way
            raise VideoError(
                f"{source} is an image{kind}, not a video: upscale it as an image (srfeat.upscale_file, or "
                "srfeat upscale), where it stays lossless (as a video it would become one lossy frame)"
            )
        raise VideoError(
            f"{source} is an image{kind}, not a video; rename it with its image extension to upscale it "
            "as an image (as a video it would become one lossy frame)"
        )
    video = main_video_stream(container)
    if video is None:
        raise VideoError(f"{source} has no video stream (audio only?); nothing to upscale")
    if video.codec_context is None:  # PyAV makes none where FFmpeg has no decoder (an unknown codec)
        raise VideoError(
            f"{source}: its video stream #{video.index} is in a codec this FFmpeg cannot decode; "
            "convert it to a common one (e.g. H.264) first, or skip this file"
        )
    width, height = video.codec_context.width, video.codec_context.height
    if not (width and height):  # unknown until a frame is decoded (raw H.264), or refused by FFmpeg
        import av

        if (size := refused_frame_size(av, source)) is not None:
            check_frame_size(source, *size)
            raise unreadable_frame_size(source, *size)
    check_frame_size(source, width, height)


def _at_most_one_frame(source: Path) -> bool:
    """Whether the film holds one frame or none, from its packets (a GIF's frame each), not decoded. On a
    second opening: the caller's container goes on to be decoded from its start."""
    import av
    from av.error import FFmpegError

    with closing(open_for_reading(av, source)) as probe:
        video = main_video_stream(probe)
        packets = (packet for packet in probe.demux(video) if packet.size) if video is not None else iter(())
        try:
            return next(packets, None) is None or next(packets, None) is None
        except FFmpegError:
            return False  # the upscale reports it, with where


def container_format_of(source: Path, target: Path) -> str:
    container_format = WRITTEN_CONTAINERS.get(target.suffix.lower())
    if container_format is None:
        raise VideoError(
            f"{source}: cannot write a video as {target.name}; name the output .mp4, .m4v, .mkv, .mov or .webm"
        )
    return container_format


def check_not_folder(source: Path, target: Path) -> None:
    """A folder at the output's name is never replaced (the final rename would fail after the whole upscale)."""
    if target.is_dir() and not target.is_symlink():
        raise VideoError(f"cannot write {target} (from {source}): a folder of that name exists; give another -o")


def check_folder(source: Path, target: Path) -> None:
    """`target`'s name must fit its file system, and the nearest existing folder above it must be a
    folder we may write in (the rest is made)."""
    if problem := unwritable_file(target):
        raise VideoError(f"cannot write {target} (from {source}): {problem}; give another -o")


def write_error(source: Path, target: Path, error: Exception) -> VideoError | DiskFullError:
    """One line for an error of writing `target`: which file, and the system's reason and path."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"not enough disk space to write {target.name} in {target.parent} ({error_reason(error)}); "
            "free some space and run again (nothing was replaced)"
        )
    where = getattr(error, "filename2", None) or getattr(error, "filename", None)  # a rename's target, else the path
    reason = error_reason(error) + (f": {where}" if isinstance(where, str) and where != str(target) else "")
    return VideoError(f"cannot write {target} (from {source}): {reason}")


def check_frame_size(source: Path, width: int, height: int) -> None:
    """Frames larger than an image may be (PIL's decompression-bomb limit, which images get) are
    refused from the header, before a frame is decoded or the encoder allocates."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise VideoError(
            f"{source}: its frames are {width}x{height} pixels, more than {2 * limit:,} (a damaged or hostile "
            "header?); skip or replace this file"
        )


def extension_of(container_format: str) -> str:
    """The extension a written container goes by (.mkv for FFmpeg's "matroska")."""
    return next((ext for ext, name in WRITTEN_CONTAINERS.items() if name == container_format), container_format)


def containers_holding(av: ModuleType, codec_name: str) -> str:
    """What to do with a stream the output cannot hold: the written containers that hold
    `codec_name` (mov_text: .mp4 and .mov; not .mkv, which holds most others)."""
    holders: dict[str, str] = {}  # container -> its first extension (.mp4, not .m4v as well)
    for extension, container_format in WRITTEN_CONTAINERS.items():
        if container_format not in holders and codec_name in codecs_held(av, container_format):
            holders[container_format] = extension
    if not holders:
        return "no container srfeat writes holds it; remove that stream first (e.g. ffmpeg -map)"
    extensions = list(holders.values())
    return f"write {' or '.join(extensions)} instead (-o NAME{extensions[0]})"
