"""Damaged videos: frames lost without an error from FFmpeg are named, a failure past the frames asked for
does not fail them, a file that cannot be read says from where, and a frame size FFmpeg refuses in an AVI or
Matroska header is named; clean files (B-frames, variable frame rates, other codecs) are not called damaged."""

from __future__ import annotations

import logging
import struct
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from srfeat.errors import VideoError
from srfeat.inference import Upscaler
from srfeat.video import FrameRange, VideoOptions

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video.input_frames import cut_transport_packet  # noqa: E402
from srfeat.video.pipeline import upscale_video  # noqa: E402 - needs PyAV, checked above
from tests.video_helpers import (  # noqa: E402
    ContainerStandIn,
    cli,
    frame_times,
    read_frames,
    write_clip,
    write_encoded,
)


def lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"{level}:")]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def damaged_transport_stream(folder: Path) -> tuple[Path, list[tuple[int, float, int]]]:
    """A 24-frame H.264 MPEG-TS whose 9th packet is zeroed: the demuxer drops what it cannot parse, and the
    decoder raises nothing. With the places frames are missing from it: (the frame before, its time, how
    many), found by comparing its frames' timestamps with the whole clip's."""
    whole, damaged = folder / "whole.ts", folder / "damaged.ts"
    write_clip(whole, frames=24, audio=False)
    with av.open(str(whole)) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][8]
    data = bytearray(whole.read_bytes())
    data[position : position + size] = bytes(size)
    damaged.write_bytes(bytes(data))
    with av.open(str(whole)) as clean, av.open(str(damaged)) as broken:
        all_times = [frame.pts for frame in clean.decode(video=0)]
        times = [(frame.pts, float(frame.time)) for frame in broken.decode(video=0)]
    missing: dict[int, tuple[float, int]] = {}
    for lost in sorted(set(all_times) - {pts for pts, _ in times}):
        before = max(index for index, (pts, _) in enumerate(times) if pts < lost)
        missing[before] = (times[before][1], missing.get(before, (0.0, 0))[1] + 1)
    assert missing, "the zeroed packet lost no frame"
    return damaged, [(before, time, count) for before, (time, count) in sorted(missing.items())]


def said_places(places: list[tuple[int, float, int]]) -> str:
    return ", ".join(f"{count} after frame {before} ({time:.2f} s)" for before, time, count in places)


def said_missing(source: Path, places: list[tuple[int, float, int]], inside: str, first_part: str) -> str:
    total = sum(count for _, _, count in places)
    where = said_places(places)
    them = "them" if total > 1 else "it"
    return (
        f"{source}: {total} frame{'s' if total > 1 else ''} {inside} could not be decoded and "
        f"{'are' if total > 1 else 'is'} missing from the output (a damaged file?): {where}; the output jumps over "
        f"{them}, its timing kept; repair or replace the file to get {them} back, or {first_part} upscales the "
        "frames before the first gap"
    )


def test_frames_a_damaged_file_loses_without_an_error_are_named(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame the demuxer dropped left the output a frame short, in the range or the whole file, unsaid."""
    source, places = damaged_transport_stream(tmp_path)
    first = places[0][0]
    result = cli(source, "-o", tmp_path / "all.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert lines(result, "WARNING") == [
        "WARNING: " + said_missing(source, places, "of the video", f"--frames 0:{first + 1}")
    ], result.stderr

    start = 2
    result = cli(source, "-o", tmp_path / "part.mkv", "--model", model_path, "--codec", "ffv1", "--frames", "2:20")
    assert result.returncode == 0, result.stderr
    inside = [place for place in places if start <= place[0] < 19]
    assert lines(result, "WARNING") == [
        "WARNING: " + said_missing(source, inside, "inside --frames 2:20", f"--frames 2:{inside[0][0] + 1}")
    ], result.stderr
    assert len(read_frames(tmp_path / "part.mkv")) == 18

    options = VideoOptions(codec="ffv1", frames=FrameRange(start, 20))
    with caplog.at_level(logging.WARNING):
        upscale_video(source, tmp_path / "python.mkv", Upscaler(model_path, device="cpu"), options)
    part = f"frames=FrameRange(2, {inside[0][0] + 1})"
    assert warnings_of(caplog) == [said_missing(source, inside, "inside frames=FrameRange(2, 20)", part)]

    caplog.clear()  # a range that ends before the first gap loses nothing
    options = VideoOptions(codec="ffv1", frames=FrameRange(0, first + 1))
    with caplog.at_level(logging.WARNING):
        upscale_video(source, tmp_path / "before.mkv", Upscaler(model_path, device="cpu"), options)
    assert warnings_of(caplog) == []


CLEAN = {
    "b-frames.mp4": {},
    "b-frames.mkv": {},
    "b-frames.ts": {},
    "variable.mkv": {"variable_rate": True},
    "variable.mp4": {"variable_rate": True},
    "variable.ts": {"variable_rate": True},
}
ENCODED = {"vp9.webm": "libvpx-vp9", "mpeg4.avi": "mpeg4", "mpeg2.mpg": "mpeg2video", "ffv1.nut": "ffv1"}


@pytest.mark.parametrize("name", [*CLEAN, *ENCODED, "joined-variable.ts"])
def test_clean_videos_are_not_said_to_miss_frames(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """B-frames come out of order, variable frame rates hold frames 0.5 to 1.5 frames long, MPEG-TS and AVI
    state no frame count, joined files' timestamps start over: none of it is a lost frame."""
    source = tmp_path / name
    if name in ENCODED:
        write_encoded(source, codec=ENCODED[name], frames=12)
    elif name == "joined-variable.ts":  # the second part's packets reach the decoder before the first's last frames
        for part, frames in (("a.ts", 12), ("b.ts", 9)):
            write_clip(tmp_path / part, frames=frames, audio=False, variable_rate=True)
        source.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    else:
        write_clip(source, frames=12, audio=False, **CLEAN[name])
    for frames in (FrameRange(), FrameRange(2, 9)):
        with caplog.at_level(logging.WARNING):
            upscale_video(
                source, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions("ffv1", frames=frames)
            )
        said = warnings_of(caplog)
        if name.startswith("joined"):  # its timestamps that start over are repaired, and said so
            said = [line for line in said if "missing from the output" in line]
        assert said == [], name


def test_a_transport_stream_cut_inside_a_packet_says_it_seems_cut_short(tmp_path: Path, model_path: Path) -> None:
    """An MPEG-TS states no length, and FFmpeg drops a last transport packet cut short without a word: a download
    that stopped half way was upscaled as a whole video. A cut at a packet's boundary leaves no trace."""
    whole = tmp_path / "whole.ts"
    write_clip(whole, frames=24, audio=False)
    data = whole.read_bytes()
    middle = len(data) // 2 // 188 * 188
    (tmp_path / "cut.ts").write_bytes(data[: middle + 100])
    (tmp_path / "even.ts").write_bytes(data[:middle])
    runs = [("whole.ts", ()), ("cut.ts", ()), ("even.ts", ()), ("cut.ts", ("--frames", "0:5"))]
    said = []
    for index, (name, options) in enumerate(runs):
        output = tmp_path / f"out{index}.mkv"
        result = cli(tmp_path / name, "-o", output, "--model", model_path, "--codec", "ffv1", *options)
        assert result.returncode == 0, result.stderr
        said.append((lines(result, "WARNING"), frame_times(output)))
    times = said[1][1]
    assert 0 < len(times) < 24
    cut = (
        f"WARNING: {tmp_path / 'cut.ts'}: the file seems cut short at {times[-1] - times[0] + 1 / 12:.2f} s: it ends "
        f"100 bytes into a transport packet (truncated?); the video has {len(times)} frames up to there, and "
        "whatever the file held after is not in the output"
    )
    assert cut in said[1][0]
    # The B-frames before the last P-frame kept are lost to the cut either way, and named as missing (in both).
    assert [[line for line in warned if "cut short" in line] for warned, _ in said] == [[], [cut], [], []]
    assert said[0][0] == said[3][0] == []  # the whole file, and a range that ends before the cut


@pytest.mark.parametrize(("size", "sync"), [(188, 0), (192, 4), (204, 0)])
def test_a_transport_packet_cut_short_is_found_in_each_packet_size(tmp_path: Path, size: int, sync: int) -> None:
    """Plain, Blu-ray M2TS (a 4-byte time before each sync byte) and DVB (16 bytes of error correction after),
    and a file whose first packet was cut off at its start (a recording picked up mid-stream)."""
    packet = bytes(sync) + b"\x47" + bytes(size - sync - 1)
    source = tmp_path / "v.ts"
    for head in (b"", bytes(range(1, 61))):  # bytes of a packet cut off at the start
        source.write_bytes(head + packet * 8 + packet[: sync + 30])
        assert cut_transport_packet(source) == sync + 30
        source.write_bytes(head + packet * 8)
        assert cut_transport_packet(source) == 0
    source.write_bytes(packet * 8 + bytes(sync + 30))  # trailing zeros: no packet began there
    assert cut_transport_packet(source) == 0
    source.write_bytes(b"not a transport stream" * 100)
    assert cut_transport_packet(source) == 0


def packet(pts: int, dts: int | None = None) -> SimpleNamespace:
    """A video packet that is no keyframe (a leading frame never shown is none)."""
    return SimpleNamespace(size=100, pts=pts, dts=dts, is_discard=False, is_keyframe=False)


def test_frames_a_decoder_takes_and_never_gives_are_counted_where_they_were(tmp_path: Path) -> None:
    """A decoder may take a damaged packet and give nothing for it: its timestamp never comes out. Counted
    between the frames shown, in any frame rate; leading frames (before the first shown) and frames still in
    the decoder at the range's end are not lost."""
    from srfeat.video.lost_frames import LostFrames

    video = SimpleNamespace(time_base=Fraction(1, 1000), average_rate=None)  # no rate: no timing checks
    lost = LostFrames(tmp_path / "v.mkv", video, FrameRange(1, 6), "matroska,webm")  # pyright: ignore[reportArgumentType]  # video: a stand-in
    # Decoding order I P B B P, with B at 20 lost and a leading frame at -40 never shown; 120 still decoding.
    for pts in (-40, 0, 60, 20, 40, 90, 120):
        lost.sent(packet(pts))
    for index, pts in enumerate((0, 40, 60, 90)):
        lost.shown(pts, index)
    assert [(gap.after, gap.dropped) for gap, _ in lost.missing()] == []  # the gap after frame 0: before the range
    assert [(gap.after, count) for gap, count in lost.missing_before()] == [(0, 1)]  # which starts late
    lost = LostFrames(tmp_path / "v.mkv", video, FrameRange(0, 6), "matroska,webm")  # pyright: ignore[reportArgumentType]
    for pts in (-40, 0, 60, 20, 40, 90, 120):
        lost.sent(packet(pts))
    for index, pts in enumerate((0, 40, 60, 90)):
        lost.shown(pts, index)
    assert [(gap.after, count) for gap, count in lost.missing()] == [(0, 1)]
    # Field-coded: each frame's second field is a packet of its own, half a frame later, and no frame comes out
    # for it; that is no loss. A frame lost there leaves room for it (two frames' time between frames shown).
    for shown, lost_count in (((0, 40, 80, 120, 160), 0), ((0, 40, 120, 160), 1)):
        lost = LostFrames(tmp_path / "v.mkv", video, FrameRange(), "matroska,webm")  # pyright: ignore[reportArgumentType]
        for pts in range(0, 200, 20):  # the last frame's second field (180) is after the last frame shown
            lost.sent(packet(pts))
        for index, pts in enumerate(shown):
            lost.shown(pts, index)
        lost.ended()
        assert sum(count for _, count in lost.missing()) == lost_count, shown
    # Two files joined end to end, timestamps starting over: the second part's first packets (0, 120, 40) go to
    # the decoder before the first part's last frames (80, 160) come out, and 160 is held two frames' time. None
    # of those is lost; a frame dropped later in the second part (160) is.
    lost = LostFrames(tmp_path / "v.mkv", video, FrameRange(), "matroska,webm")  # pyright: ignore[reportArgumentType]
    steps = [("sent", 0, -50), ("shown", 0), ("sent", 40, -10), ("shown", 40), ("sent", 80, 30), ("sent", 160, 70)]
    steps += [("sent", 0, -60), ("shown", 80), ("sent", 120, -50), ("sent", 40, -40), ("shown", 160)]
    steps += [("sent", 80, -30), ("shown", 0), ("sent", 200, -20), ("shown", 40), ("shown", 80), ("shown", 120)]
    steps += [("sent", 160, -10), ("sent", 240, 0), ("shown", 200), ("shown", 240)]
    index = 0
    for step, pts, *dts in steps:
        if step == "sent":
            lost.sent(packet(pts, dts=dts[0]))
        else:
            lost.shown(pts, index)
            index += 1
    assert [(gap.time, count) for gap, count in lost.missing()] == [(0.12, 1)]


def test_gaps_of_whole_frames_are_lost_frames_only_where_the_demuxer_drops_damage_silently(tmp_path: Path) -> None:
    """A gap of two frames' time in a steady 25 frames/s: in MPEG-TS a packet its demuxer dropped, in MP4 or
    Matroska the file's own (an encoder that dropped a frame it had no time for), whose demuxers fail on damage.
    One frame in a hundred is missing, so the average rate stays within the check's tolerance of 25."""
    from srfeat.video.lost_frames import LostFrames

    video = SimpleNamespace(time_base=Fraction(1, 90000), average_rate=Fraction(2500, 100))
    times = [frame * 3600 for frame in range(100) if frame != 50]
    for container_format, lost_count in (("mpegts", 1), ("mov,mp4,m4a,3gp,3g2,mj2", 0), ("matroska,webm", 0)):
        # PyAV's stream stood in for: LostFrames reads only its time_base and average_rate
        lost = LostFrames(tmp_path / "v", video, FrameRange(), container_format)  # pyright: ignore[reportArgumentType]
        for index, pts in enumerate(times):
            lost.sent(packet(pts))
            lost.shown(pts, index)
        assert sum(count for _, count in lost.missing()) == lost_count, container_format


def broken_frame_marker(folder: Path, frame: int) -> Path:
    """A 4-frame .y4m whose `frame`th FRAME marker is overwritten: FFmpeg's demuxer fails there."""
    whole = folder / "whole.y4m"
    write_encoded(whole, codec="rawvideo", container_format="yuv4mpegpipe", frames=4, size=(16, 12))
    data = bytearray(whole.read_bytes())
    marker = [i for i in range(len(data)) if data.startswith(b"FRAME", i)][frame]
    data[marker : marker + 5] = b"XXXXX"
    source = folder / f"broken{frame}.y4m"
    source.write_bytes(bytes(data))
    return source


def test_a_file_that_fails_past_a_range_upscales_that_range(tmp_path: Path, model_path: Path) -> None:
    """`--frames 0:2` of a file that fails at frame 2 was refused: "(--frames 0:2 upscales the 2 frames before
    it)", the range given. Frame B is read only to time the range's end."""
    source = broken_frame_marker(tmp_path, 2)
    for frames, count in (("0:2", 2), ("1:2", 1)):
        output = tmp_path / f"out{count}.mkv"
        result = cli(source, "-o", output, "--model", model_path, "--frames", frames, "--codec", "ffv1")
        assert result.returncode == 0 and not lines(result, "WARNING"), result.stderr
        assert len(read_frames(output)) == count
    summary = upscale_video(
        source, tmp_path / "py.mkv", Upscaler(model_path, device="cpu"), VideoOptions("ffv1", frames=FrameRange(0, 2))
    )
    assert summary.frames == 2


def test_a_file_that_cannot_be_read_says_from_where(tmp_path: Path, model_path: Path) -> None:
    """It said "cannot read past frame 0" where no frame was read, and "past frame 2" where frame 2 was not."""
    first, third = broken_frame_marker(tmp_path, 0), broken_frame_marker(tmp_path, 2)
    upscaler, reason = Upscaler(model_path, device="cpu"), "(Invalid data found when processing input)"
    with pytest.raises(VideoError) as refused:
        upscale_video(first, tmp_path / "out.mkv", upscaler, VideoOptions())
    assert str(refused.value) == (  # "(no frame decoded before it, ...)": "it" was nothing in this message
        f"no frame of {first} could be read {reason}; the file is damaged (no frame comes before this point, "
        "and every frame range is decoded from the file's start: skip or replace this file)"
    )
    with pytest.raises(VideoError) as refused:
        upscale_video(third, tmp_path / "out.mkv", upscaler, VideoOptions())
    assert str(refused.value) == (
        f"{third} cannot be read after frame 1 {reason}; the file is damaged "
        "(frames=FrameRange(0, 2) upscales the 2 frames before it)"
    )
    result = cli(third, "-o", tmp_path / "out.mkv", "--model", model_path, "--frames", "1:")
    assert lines(result, "ERROR")[0].endswith("(--frames 1:2 upscales the 1 frame before it)"), result.stderr
    assert not (tmp_path / "out.mkv").exists()


def avi_of_size(path: Path, width: int, height: int, codec: str = "rawvideo") -> Path:
    """A 16x12 AVI whose headers (the main one and the stream's) are made to state `width`x`height`."""
    write_encoded(path, codec=codec, frames=2, size=(16, 12), container_format="avi")
    data = bytearray(path.read_bytes())
    main, stream = data.find(b"avih"), data.find(b"strf")
    data[main + 40 : main + 48] = struct.pack("<ii", width, height)
    data[stream + 12 : stream + 20] = struct.pack("<ii", width, height)
    path.write_bytes(bytes(data))
    return path


def matroska_of_size(path: Path, width: int, height: int) -> Path:
    """A 256x256 raw Matroska clip whose track header is made to state `width`x`height` (two bytes each)."""
    write_encoded(path, codec="rawvideo", frames=1, size=(256, 256), container_format="matroska")
    data = path.read_bytes()
    for element in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight
        old = element + b"\x82\x01\x00"
        assert data.count(old) == 1
        data = data.replace(old, element + b"\x82" + struct.pack(">H", width if element == b"\xb0" else height))
    path.write_bytes(data)
    return path


def test_a_frame_size_ffmpeg_refuses_in_an_avi_or_matroska_header_is_named(tmp_path: Path, model_path: Path) -> None:
    """FFmpeg refuses such a size and reads it as 0x0 (AVI) or fails to open the file with "Invalid data"
    (Matroska): "the video stream has no frame size" came after the model loaded, and "cannot read video ...:
    Invalid data found when processing input", neither naming the size or a hostile header."""
    huge = avi_of_size(tmp_path / "huge.avi", 20000, 20000)
    huge_ffv1 = avi_of_size(tmp_path / "huge_ffv1.avi", 20000, 20000, codec="ffv1")
    thin = avi_of_size(tmp_path / "thin.avi", 1, 2100000)
    huge_mkv = matroska_of_size(tmp_path / "huge_track.mkv", 20000, 20000)
    zero_mkv = matroska_of_size(tmp_path / "zero_track.mkv", 0, 256)
    result = cli(huge, huge_ffv1, thin, huge_mkv, zero_mkv, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = lines(result, "ERROR")
    for source in (huge, huge_ffv1, huge_mkv):
        assert f"ERROR: {source}: its frames are 20000x20000 pixels, more than " in "\n".join(errors), errors
    for source, size in ((thin, "1x2100000"), (zero_mkv, "0x256")):
        assert (
            f"ERROR: {source}: its header says {size} pixels a frame, a size FFmpeg cannot read (a damaged header?); "
            "skip or replace this file"
        ) in errors, errors
    assert "Loading" not in result.stderr and "Upscaler(" not in result.stderr  # refused before the model loads
    with pytest.raises(VideoError, match="its frames are 20000x20000 pixels"):
        upscale_video(huge, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.mkv").exists()


def test_an_avi_header_of_no_frame_size_says_what_to_do(tmp_path: Path, model_path: Path) -> None:
    """ "the video stream has no frame size; the file is damaged" said nothing of what to do."""
    zero = avi_of_size(tmp_path / "zero.avi", 0, 0)
    result = cli(zero, "-o", tmp_path / "out.mkv", "--model", model_path)
    assert lines(result, "ERROR")[0] == (
        f"ERROR: {zero}: its video stream states no frame size and no frame of it decodes; the file is damaged: "
        "skip or replace this file"
    ), result.stderr


def test_a_file_that_fails_to_read_past_a_range_keeps_the_range_and_says_what_may_be_short(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past frame B only the audio and subtitles are still read, up to the range's end: a read error there
    failed the whole range ("cannot read past frame 6"), though every frame asked for had been upscaled."""
    from srfeat.video import pipeline

    source = tmp_path / "clip.mkv"
    write_clip(source, frames=24)  # with audio
    opened = pipeline.open_input

    class FailingAfter12Frames(ContainerStandIn):  # fails the demuxer
        def demux(self, *args: Any) -> Iterator[Any]:
            video = 0
            for packet in self.container.demux(*args):
                video += packet.stream.type == "video" and packet.size > 0
                if video > 12:
                    raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
                yield packet

    monkeypatch.setattr(
        pipeline,
        "open_input",
        lambda av_module, path, **options: FailingAfter12Frames(opened(av_module, path, **options)),
    )
    options = VideoOptions("ffv1", frames=FrameRange(0, 6))
    with caplog.at_level(logging.WARNING):
        summary = upscale_video(source, tmp_path / "part.mkv", Upscaler(model_path, device="cpu"), options)
    assert summary.frames == 6 and len(read_frames(tmp_path / "part.mkv")) == 6
    said = (
        f"{source}: reading failed past the frames asked for (Invalid data found when processing input); they were "
        "all upscaled, but the copied audio and subtitles may end early"
    )
    assert warnings_of(caplog) == [said]


@pytest.mark.parametrize(
    ("damaged_chunk", "place"),
    [
        (5, "1 after frame 4 (0.33 s); the output jumps over it"),
        (11, "1 after frame 10 (0.83 s); the output ends early"),
    ],
    ids=["inside", "last"],
)
def test_an_avi_chunk_whose_header_is_damaged_is_named_where_it_was(
    tmp_path: Path, model_path: Path, damaged_chunk: int, place: str
) -> None:
    """FFmpeg's AVI demuxer passes over a chunk whose header it cannot read, without an error, and counts the frames
    on without it: the frame was said only to be missing from the count ("only 11 of the 12 frames the file lists"),
    and every frame after it came out a frame early. The file's index says where it was."""
    clean, damaged = tmp_path / "clean.avi", tmp_path / "damaged.avi"
    write_encoded(clean, codec="mpeg4", frames=12)
    with av.open(str(clean)) as container:
        position = [packet.pos for packet in container.demux(video=0) if packet.size][damaged_chunk]
    data = bytearray(clean.read_bytes())
    data[position - 8 : position - 4] = bytes(4)  # the chunk's "00dc", before its size and data
    damaged.write_bytes(bytes(data))
    result = cli(damaged, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    missing = [line for line in lines(result, "WARNING") if "missing from the output" in line]
    assert len(missing) == 1 and "1 frame of the video could not be decoded" in missing[0], result.stderr
    assert place in missing[0]
    shown = [index / 12 for index in range(12) if index != damaged_chunk]
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(shown, abs=0.002)
