"""Frames FFmpeg's MPEG-TS and Matroska demuxers pass over without an error are named: a transport stream missing a
byte loses its last frames, a Matroska block whose size or ID is damaged is resynced past. The containers are read
apart from FFmpeg (`transport_scan`, `matroska_scan`); valid files of every kind they are written in are not called
damaged."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from srfeat.inference import Upscaler
from srfeat.video import VideoOptions

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from scripts.fuzz_video import SEEDS, write_seed  # noqa: E402 - needs PyAV, checked above
from srfeat.video import matroska_scan, transport_scan  # noqa: E402
from srfeat.video.background_listing import BackgroundListing  # noqa: E402
from srfeat.video.listed_frames import ListedFrames  # noqa: E402
from srfeat.video.matroska_scan import scan_matroska  # noqa: E402
from srfeat.video.pipeline import upscale_video  # noqa: E402
from srfeat.video.transport_scan import scan_transport_stream  # noqa: E402
from srfeat.video.upscaled_stream import UpscaledStream  # noqa: E402
from tests.video_helpers import cli, write_clip, write_encoded  # noqa: E402

VIDEO_PID, AUDIO_PID = 256, 257


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def video_packets(path: Path) -> list[int]:
    """The byte position of each video packet the demuxer gives."""
    with av.open(str(path)) as container:
        return [packet.pos for packet in container.demux(video=0) if packet.size]


def lost_at_end(source: Path, frames: int) -> str:
    """The warning for the frames after the last one `source` decodes to lost, of a clip of `frames`."""
    times = decoded_times(source)
    lost, last = frames - len(times), len(times) - 1
    plural = "s" if lost > 1 else ""
    return (
        f"WARNING: {source}: {lost} frame{plural} of the video could not be decoded and {'are' if lost > 1 else 'is'} "
        f"missing from the output (a damaged file?): {lost} after frame {last} ({times[-1]:.2f} s); the output ends "
        f"early, after frame {last}; repair or replace the file to get {'them' if lost > 1 else 'it'} back"
    )


def transport_stream_missing_a_byte(folder: Path) -> Path:
    """An MPEG-TS of 8 frames, a byte taken out before its last frame but one."""
    whole = folder / "whole.ts"
    write_encoded(whole, codec="mpeg2video", frames=8, size=(32, 24), container_format="mpegts")
    data = whole.read_bytes()
    cut = video_packets(whole)[-2] - 188 + 68  # inside the transport packet before the last frame but one
    source = folder / "damaged.ts"
    source.write_bytes(data[:cut] + data[cut + 1 :])
    return source


def test_a_transport_stream_missing_a_byte_names_the_frames_it_loses_at_its_end(
    tmp_path: Path, model_path: Path
) -> None:
    """One byte removed shifts every transport packet after it: FFmpeg's demuxer drops the frames it cannot put
    together, the last ones, and no later frame shows a gap: the output was two frames short with no word."""
    source = transport_stream_missing_a_byte(tmp_path)
    assert len(decoded_times(source)) < 8  # the damage is what the test says: frames lost at the end
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == [lost_at_end(source, 8)]


def test_a_transport_stream_whose_last_pes_start_code_is_damaged_warns_of_the_frame_it_loses(
    tmp_path: Path, model_path: Path
) -> None:
    """A packet that starts a PES packet without its start code (a byte that came into its adaptation field shifts
    it): FFmpeg's demuxer skips that PES without a word, the last frame here, and the output was a frame short."""
    whole = tmp_path / "whole.ts"
    write_encoded(whole, codec="mpeg2video", frames=8, size=(32, 24), container_format="mpegts")
    data = bytearray(whole.read_bytes())
    last = video_packets(whole)[-1]  # the transport packet the last frame's PES starts in
    adaptation = 1 + data[last + 4] if data[last + 3] & 0x20 else 0
    start = last + 4 + adaptation
    assert data[start : start + 3] == b"\x00\x00\x01"
    data[start] = 0xFF
    source = tmp_path / "damaged.ts"
    source.write_bytes(data)
    assert len(decoded_times(source)) == 7  # the damage is what the test says: the last frame lost
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    (warning,) = warnings_of(result)
    assert warning.startswith(f"WARNING: {source}: the file is damaged at byte {last}, after the frame at ")
    assert "(a PES packet whose start code is damaged); FFmpeg reads past it without an error" in warning


def transport_packet(pid: int, counter: int, *, payload: bool = True, discontinuity: bool = False) -> bytes:
    control = 0x30 if discontinuity else 0x10 if payload else 0x20
    header = bytes([0x47, pid >> 8, pid & 0xFF, control | counter % 16])
    if discontinuity or not payload:
        header += bytes([183 if not payload else 1, 0x80 if discontinuity else 0])
    return header + b"\xff" * (188 - len(header))


def breaks_in(folder: Path, packets: list[bytes], tail: bytes = b"") -> list[str]:
    source = folder / "synthetic.ts"
    source.write_bytes(b"".join(packets) + tail)
    listed = scan_transport_stream(source, VIDEO_PID)
    assert listed is not None
    return [place.what for place in listed.breaks]


def test_transport_packets_lost_or_cut_short_are_found_by_sync_bytes_and_the_video_counters(tmp_path: Path) -> None:
    """Only the video PID's packets count: an audio packet lost or cut short loses no frame."""
    video = [transport_packet(VIDEO_PID, counter) for counter in range(20)]
    audio = [transport_packet(AUDIO_PID, counter) for counter in range(20)]
    both = [packet for pair in zip(video, audio, strict=True) for packet in pair]
    assert breaks_in(tmp_path, both) == []
    assert breaks_in(tmp_path, both[:11] + both[12:]) == []  # an audio packet lost
    assert breaks_in(tmp_path, both[:10] + both[11:]) == ["1 transport packet(s) lost before it"]
    assert breaks_in(tmp_path, [*both[:11], both[10], *both[11:]]) == []  # a packet sent twice
    restart = [transport_packet(VIDEO_PID, 9, discontinuity=True), transport_packet(VIDEO_PID, 10)]
    assert breaks_in(tmp_path, [*video[:5], transport_packet(VIDEO_PID, 5, payload=False), *restart]) == []
    assert breaks_in(tmp_path, [*both[:9], audio[4][:100], *both[9:]]) == []  # an audio packet cut short
    assert breaks_in(tmp_path, [*both[:8], video[4][:100], *both[8:]]) == ["a transport packet cut short by 88 bytes"]
    damaged_sync = [b"\x46" + packet[1:] for packet in both[20:22]]
    assert breaks_in(tmp_path, both[:20] + damaged_sync[1:]) == []  # the last packet, audio, lost
    assert breaks_in(tmp_path, both[:20] + damaged_sync) == ["a transport packet whose sync byte is damaged"]
    # Bytes that are no packet: after an audio packet, the video's next counter says whether one of its was lost.
    assert breaks_in(tmp_path, [*both[:20], bytes(188), *both[20:]]) == []
    assert breaks_in(tmp_path, [*both[:10], bytes(100), *both[12:]]) == ["1 transport packet(s) lost before it"]
    after_video = breaks_in(tmp_path, [*both[:19], bytes(188), *both[19:]])  # its end may be among them
    assert after_video == ["188 bytes that hold no whole transport packet"]
    assert breaks_in(tmp_path, both, tail=b"\xff" * 400) == []  # stuffing at the end, written so
    assert breaks_in(tmp_path, both, tail=bytes(range(200))) == ["200 bytes at the end that hold no transport packet"]
    assert breaks_in(tmp_path, both, tail=video[0][:100]) == []  # a last packet cut short: said elsewhere


def pes_start(pid: int, counter: int, pts: int, *, start_code: bytes = b"\x00\x00\x01") -> bytes:
    """A transport packet that starts a video PES packet timed `pts` (payload unit start set)."""
    time = bytes([0x21 | (pts >> 29) & 0x0E, pts >> 22 & 0xFF, 0x01 | (pts >> 14) & 0xFE, pts >> 7 & 0xFF])
    pes = start_code + b"\xe0\x00\x00\x80\x80\x05" + time + bytes([0x01 | (pts << 1) & 0xFE])
    header = bytes([0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10 | counter % 16])
    return header + pes + b"\xff" * (188 - len(header) - len(pes))


def test_a_pes_start_without_its_start_code_is_a_break_and_a_sound_one_a_frame_listed(tmp_path: Path) -> None:
    frames = [pes_start(VIDEO_PID, counter, 3000 * counter) for counter in range(6)]
    source = tmp_path / "timed.ts"
    source.write_bytes(b"".join(frames))
    listed = scan_transport_stream(source, VIDEO_PID)
    assert listed is not None
    assert ([time for _, time in listed.places], listed.breaks) == ([3000 * counter for counter in range(6)], [])
    frames[4] = pes_start(VIDEO_PID, 4, 12000, start_code=b"\xff\x00\x00")
    assert breaks_in(tmp_path, frames) == ["a PES packet whose start code is damaged"]


def test_an_adaptation_field_longer_than_its_packet_is_a_break_and_its_flags_are_not_read(tmp_path: Path) -> None:
    """Its payload is dropped by FFmpeg; here its fourth byte is 0xFF, so its counter (15) and discontinuity flag
    are damage too: the skip they would show, or excuse, is not said."""
    video = [transport_packet(VIDEO_PID, counter) for counter in range(8)]
    damaged = bytes([0x47, VIDEO_PID >> 8, VIDEO_PID & 0xFF, 0xFF]) + b"\xff" * 184
    overlong = ["a transport packet whose adaptation field runs past its end"]
    assert breaks_in(tmp_path, [*video, damaged]) == overlong
    assert breaks_in(tmp_path, [*video[:4], damaged, *video[4:]]) == overlong  # the counters go on in order
    assert breaks_in(tmp_path, [*video[:4], damaged, *video[5:]]) == [*overlong, "1 transport packet(s) lost before it"]


def block_header(data: bytes | bytearray, position: int) -> tuple[int, int]:
    """Where the SimpleBlock whose data starts at `position` begins, and its size field's length."""
    for length in range(1, 9):
        at = position - length - 1
        if data[at] == 0xA3 and 9 - data[at + 1].bit_length() == length:
            return at, length
    raise AssertionError(f"no SimpleBlock before {position}")


def matroska_with_a_block_a_byte_long(folder: Path) -> Path:
    """A Matroska clip of 12 frames with audio, its fifth video block's size one byte more than it holds."""
    whole = folder / "whole.mkv"
    write_clip(whole, frames=12, audio=True)
    data = bytearray(whole.read_bytes())
    at, length = block_header(data, video_packets(whole)[4])
    size = int.from_bytes(data[at + 1 : at + 1 + length], "big") & ((1 << 7 * length) - 1)
    data[at + 1 : at + 1 + length] = ((1 << 7 * length) | (size + 1)).to_bytes(length, "big")
    source = folder / "damaged.mkv"
    source.write_bytes(bytes(data))
    return source


def test_a_matroska_block_whose_size_is_one_byte_long_names_the_frames_ffmpeg_resynced_past(
    tmp_path: Path, model_path: Path
) -> None:
    """FFmpeg's demuxer resyncs at the next Cluster and says so only at its debug level: seven frames of twelve
    were lost, and only a video shorter than the file's duration was said. The Cluster's blocks after the damaged one
    are found again by their chain of elements, and the frames lost named."""
    source = matroska_with_a_block_a_byte_long(tmp_path)
    lost = 12 - len(decoded_times(source))
    assert lost > 1  # the damage is what the test says
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    named = f"WARNING: {source}: {lost} frames of the video could not be decoded and are missing from the output"
    assert next(line for line in warnings_of(result) if "could not be decoded" in line).startswith(named), result.stderr


def test_a_webm_block_whose_id_is_damaged_names_the_frame_passed_over(tmp_path: Path, model_path: Path) -> None:
    """An element of an ID no Cluster holds is skipped by FFmpeg: a block whose ID lost a bit is a frame lost in the
    middle of a VP9 stream, whose frames' times FFmpeg's timestamps in Matroska cannot be trusted to show."""
    whole = tmp_path / "whole.webm"
    write_encoded(whole, codec="libvpx-vp9", frames=8, size=(32, 24), container_format="webm")
    data = bytearray(whole.read_bytes())
    at, _ = block_header(data, video_packets(whole)[2])
    data[at] = 0xE3
    source = tmp_path / "damaged.webm"
    source.write_bytes(bytes(data))
    times = decoded_times(source)
    assert len(times) == 7
    result = cli(source, "-o", tmp_path / "out.webm", "--model", model_path)
    assert result.returncode == 0, result.stderr
    said = (
        f"WARNING: {source}: 1 frame of the video could not be decoded and is missing from the output (a damaged "
        f"file?): 1 after frame 1 ({times[1]:.2f} s); the output jumps over it, its timing kept; repair or replace "
        "the file to get it back, or --frames 0:2 upscales the frames before the first gap"
    )
    assert warnings_of(result) == [said]


class Pipe(io.RawIOBase):
    """A file that cannot seek: FFmpeg's Matroska muxer writes a Segment of unknown size, as to a live stream."""

    def __init__(self) -> None:
        self.written = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # pyright: ignore[reportIncompatibleMethodOverride]
        self.written += bytes(data)
        return len(data)


def write_piped(path: Path) -> None:
    pipe = Pipe()
    with av.open(pipe, "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(30):  # more than one Cluster
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 8, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    path.write_bytes(bytes(pipe.written))


def clusters_of_unknown_size(path: Path) -> None:
    """`path` with each Cluster's size written as unknown (all ones), as a live writer leaves them."""
    data = bytearray(path.read_bytes())
    cluster = bytes.fromhex("1F43B675")
    places = [at + len(cluster) for at in range(len(data)) if data.startswith(cluster, at)]
    assert len(places) > 1
    for at in places:
        length = 9 - data[at].bit_length()
        data[at : at + length] = ((1 << 8 * length) - 1 >> length - 1).to_bytes(length, "big")
    path.write_bytes(bytes(data))


def write_valid(folder: Path, name: str) -> Path:
    path = folder / name
    seeds = {seed: how for seed, *how in SEEDS}
    if name in seeds:
        write_seed(path, *seeds[name])
    elif name == "subtitles.mkv":  # subtitles are muxed as BlockGroups with a BlockDuration
        write_clip(path, frames=24, subtitles=("one", "two"))
    elif name == "variable.mkv":
        write_clip(path, frames=24, variable_rate=True)
    elif name == "unknown-size.mkv":
        write_piped(path)
        clusters_of_unknown_size(path)
    elif name == "piped.mkv":
        write_piped(path)
    elif name == "joined.mkv":  # two files end to end: two Segments
        write_clip(folder / "a.mkv", frames=12, audio=False)
        path.write_bytes((folder / "a.mkv").read_bytes() * 2)
    elif name == "audio.ts":
        write_clip(path, frames=24, audio=True)
    elif name == "joined.ts":  # the second file's continuity counters start over
        write_clip(folder / "a.ts", frames=12, audio=True)
        path.write_bytes((folder / "a.ts").read_bytes() * 2)
    return path


VALID = [name for name, *_ in SEEDS if name.endswith((".mkv", ".webm", ".ts"))]
VALID += ["subtitles.mkv", "variable.mkv", "unknown-size.mkv", "piped.mkv", "joined.mkv", "audio.ts", "joined.ts"]


@pytest.mark.parametrize("name", VALID)
def test_valid_matroska_files_and_transport_streams_are_not_called_damaged(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Audio beside the video, BlockGroups, Clusters of unknown size, a Segment of unknown size, files joined end to
    end, variable frame rates: the scans list every frame FFmpeg gives, and find no break."""
    source = write_valid(tmp_path, name)
    with caplog.at_level(logging.WARNING):
        upscale_video(source, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions("ffv1"))
    said = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert [line for line in said if "damaged" in line] == [], name
    # and the scan read them: every frame listed
    listed = scan_transport_stream(source, VIDEO_PID) if name.endswith(".ts") else scan_matroska(source, 0)
    assert listed is not None
    assert (len(listed.places), listed.breaks) == (len(decoded_times(source)), [])


def test_frames_listed_are_matched_on_ffmpegs_timeline_and_not_at_all_where_none_is_given() -> None:
    """A TS's presentation times start over every 26.5 hours and FFmpeg's go on past the wrap: a frame listed after
    it is not lost for its smaller number, and one lost there is placed on FFmpeg's timeline. A scan whose first
    frames are none of the packets given misreads the file: it loses no frame."""
    wrap = 1 << 33
    places = [(0, wrap - 3000), (188, wrap - 1500), (376, 0), (564, 1500)]
    listed = ListedFrames(places, [], wrap=wrap)
    given = [SimpleNamespace(size=1, pos=pos, pts=pts) for pos, pts in ((0, wrap - 3000), (188, wrap - 1500))]
    given.append(SimpleNamespace(size=1, pos=564, pts=wrap + 1500))
    assert [listed.given(packet) for packet in given] == [[], [], [wrap]]
    listed = ListedFrames(places, [])
    assert [listed.given(SimpleNamespace(size=1, pos=pos, pts=pts + 7)) for pos, pts in places] == [[]] * 4


def upscale_warnings(source: Path, output: Path, upscaler: Upscaler, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        upscale_video(source, output, upscaler, VideoOptions("ffv1"))
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("container", ["mkv", "ts"])
def test_frames_are_upscaled_while_the_container_is_scanned_and_the_same_lost_frames_named(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    """A 2-hour Matroska file's scan takes seconds: the first frame is not kept waiting for it. Here the scan is held
    until the upscaler has had every frame, and the frames named lost (in a Cluster, at a TS's end) are the same."""
    damaged = matroska_with_a_block_a_byte_long if container == "mkv" else transport_stream_missing_a_byte
    source = damaged(tmp_path)
    upscaler = Upscaler(model_path, device="cpu")
    expected = upscale_warnings(source, tmp_path / "plain.mkv", upscaler, caplog)
    assert any("could not be decoded" in line for line in expected)  # the listing named frames lost
    frames, upscaled, all_upscaled = len(decoded_times(source)), 0, threading.Event()
    upscale_array = upscaler.upscale_array

    def counted(pixels: np.ndarray, **options: Any) -> np.ndarray:
        nonlocal upscaled
        upscaled += 1
        if upscaled == frames:
            all_upscaled.set()
        return upscale_array(pixels, **options)

    scan = matroska_scan._Scan if container == "mkv" else transport_scan._Scan  # its walk held
    run = scan.run
    scanned_after_upscale: list[bool] = []

    def held(self: Any, *args: Any) -> None:
        scanned_after_upscale.append(all_upscaled.wait(timeout=10))  # a scan before the first frame waits in vain
        run(self, *args)

    monkeypatch.setattr(upscaler, "upscale_array", counted)
    monkeypatch.setattr(scan, "run", held)
    assert upscale_warnings(source, tmp_path / "held.mkv", upscaler, caplog) == expected
    assert scanned_after_upscale == [True]


def files_open() -> set[str]:
    """The files this process holds open (Linux's /proc, read only)."""
    descriptors = Path("/proc/self/fd")
    opened = set()
    for descriptor in descriptors.iterdir() if descriptors.is_dir() else ():
        with contextlib.suppress(OSError):  # closed since it was listed
            opened.add(os.readlink(descriptor))
    return opened


@pytest.mark.parametrize("failing", ["upscaler", "encoder"])
def test_an_upscale_that_fails_or_is_interrupted_stops_the_container_scan_and_closes_its_file(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The scan of a long file is not left running (and holding the file) after Ctrl-C or an encoder's error: it
    stops where it is. Here each element takes 2 ms, and the upscale fails at the first frame."""
    source = tmp_path / "long.mkv"
    write_clip(source, frames=240, audio=True)  # 20 s: a thousand audio blocks
    elements_read = 0
    element = matroska_scan._Scan._element  # counted, then slowed

    def counted(self: Any, at: int) -> Any:
        nonlocal elements_read
        elements_read += 1
        return element(self, at)

    monkeypatch.setattr(matroska_scan._Scan, "_element", counted)
    assert scan_matroska(source, 0) is not None
    elements, elements_read = elements_read, 0
    assert elements > 1000

    def slow(self: Any, at: int) -> Any:
        time.sleep(0.002)
        return counted(self, at)

    monkeypatch.setattr(matroska_scan._Scan, "_element", slow)
    upscaler = Upscaler(model_path, device="cpu")
    error: type[BaseException] = KeyboardInterrupt if failing == "upscaler" else RuntimeError

    def fail(*_: Any, **__: Any) -> Any:
        raise error("stopped")

    if failing == "upscaler":
        monkeypatch.setattr(upscaler, "upscale_array", fail)
    else:
        monkeypatch.setattr(UpscaledStream, "encode", fail)
    threads = set(threading.enumerate())
    with pytest.raises(error, match="stopped"):
        upscale_video(source, tmp_path / "out.mkv", upscaler, VideoOptions("ffv1"))
    assert set(threading.enumerate()) <= threads  # no scan left running
    assert str(source) not in files_open()
    assert elements_read < elements / 2, (elements_read, elements)  # stopped, not run to its end


def test_a_scan_that_fails_raises_its_error_from_the_upscale(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a scan running beside the decoding is not lost, nor does the upscale wait for it forever."""
    source = tmp_path / "clip.mkv"
    write_clip(source, frames=12, audio=True)

    def failing(*_: Any) -> None:
        raise RuntimeError("a scan that fails")

    monkeypatch.setattr(matroska_scan._Scan, "run", failing)
    threads = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="a scan that fails"):
        upscale_video(source, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions("ffv1"))
    assert set(threading.enumerate()) <= threads
    assert not (tmp_path / "out.mkv").exists()


def test_ctrl_c_while_the_reading_waits_for_the_container_scan_stops_the_scan_at_once(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame read, the decoding thread waits for the scan of a long file (its elements slowed to 2 ms each);
    Ctrl-C (SIGINT to the main thread) then stops the upscale promptly, the scan with it, not when the scan ends."""
    source = tmp_path / "long.mkv"
    write_clip(source, frames=24, audio=True)
    elements_read = 0
    element = matroska_scan._Scan._element

    def slow(self: Any, at: int) -> Any:
        nonlocal elements_read
        elements_read += 1
        time.sleep(0.02)  # the whole scan: seconds
        return element(self, at)

    monkeypatch.setattr(matroska_scan._Scan, "_element", slow)
    finish = BackgroundListing.finish
    interrupted_at: list[float] = []

    def interrupted(self: BackgroundListing) -> Any:
        interrupted_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)  # as Ctrl-C, while this waits
        return finish(self)

    monkeypatch.setattr(BackgroundListing, "finish", interrupted)
    upscaler = Upscaler(model_path, device="cpu")
    threads = set(threading.enumerate())
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            upscale_video(source, tmp_path / "out.mkv", upscaler, VideoOptions("ffv1"))
    finally:
        signal.signal(signal.SIGINT, previous)
    stopped_after = time.monotonic() - interrupted_at[0]
    assert stopped_after < 1.0, (stopped_after, elements_read)  # the scan alone would take seconds more
    # no scan left running (the upscaler's own workers, started by its first frame, stay for the next upscale)
    assert [thread for thread in set(threading.enumerate()) - threads if thread.name == "srfeat-scan"] == []
    assert str(source) not in files_open()


def test_a_transport_stream_whose_first_sync_bytes_are_damaged_is_still_scanned(tmp_path: Path) -> None:
    """The packet grid was looked for within the first packet only: one flipped bit in the file's first byte had the
    whole scan skipped, and the damage after it unsaid."""
    video = [transport_packet(VIDEO_PID, counter) for counter in range(8)]
    audio = [transport_packet(AUDIO_PID, counter) for counter in range(8)]
    both = [packet for pair in zip(audio, video, strict=True) for packet in pair]
    first_damaged = [b"\x46" + both[0][1:], *both[1:]]
    assert breaks_in(tmp_path, first_damaged) == []  # an audio packet: no frame of the video's lost
    assert breaks_in(tmp_path, first_damaged[:5] + first_damaged[6:]) == ["1 transport packet(s) lost before it"]
    video_first = [b"\x46" + video[0][1:], *video[1:]]
    assert breaks_in(tmp_path, video_first) == ["a transport packet whose sync byte is damaged"]
