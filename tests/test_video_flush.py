"""The decoder's flush at a file's end: a damaged packet among the last ones, which frame threads drop there without
an error, is named as the same damage anywhere else is; a clean clip, and one whose edit list hides its last frames,
are read to their end without a word; a last chunk the demuxer passed over, never decoded, is still a frame lost."""

from __future__ import annotations

import re
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video import FrameRange  # noqa: E402
from srfeat.video.lost_frames import LostFrames  # noqa: E402 - needs PyAV, checked above
from srfeat.video.packets_in_flight import FRAME_THREADS_CAPABILITY, PacketsInFlight  # noqa: E402
from tests.video_helpers import cli, read_frames, write_clip, write_encoded  # noqa: E402

FPS = 12


def said(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    lines = result.stderr.splitlines()
    return [line for line in lines if line.startswith(f"{level}:") and "input(s) failed" not in line]


def decoder_threads(clip: Path) -> int:
    """The packets FFmpeg's H.264 decoder takes at once here, as srfeat opens it ("AUTO": one more than the cores)."""
    with av.open(str(clip)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        next(container.decode(video))
        return max(1, video.codec_context.thread_count)


def test_a_damaged_last_packet_that_frame_threads_drop_at_the_flush_is_an_error_named_as_elsewhere(
    tmp_path: Path, model_path: Path
) -> None:
    """With frame threads (3 or more) the decoder dropped a damaged packet among the last `threads - 1` at its flush,
    and the frames held back behind it, without an error: the output was written a few frames short, with a warning
    of frames lost, where one thread, or the same damage earlier, fails with the damaged packet's time named. Now
    it fails too, named at that time: the packets the decoder held are decoded again in one thread to find it."""
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=24, fps=FPS, audio=False)
    with av.open(str(clip)) as container:
        sent = [packet for packet in container.demux(video=0) if packet.size]  # in decoding order
    damaged = sent[-1]
    data = bytearray(clip.read_bytes())
    data[damaged.pos : damaged.pos + damaged.size] = bytes([0, 255]) * (damaged.size // 2) + bytes(damaged.size % 2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))

    result = cli(broken, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 1 and said(result, "WARNING") == [], result.stderr
    [line] = said(result, "ERROR")
    # Named at the damaged packet's own time, as one thread names it: in frame threads it was named near the earliest
    # of the packets the decoder still held (here one before it), the threads not saying which one failed.
    assert decoder_threads(clip) == 1 or damaged.pts != sent[-min(decoder_threads(clip) - 1, len(sent))].pts
    where = f"at {float(damaged.pts * damaged.time_base):.2f} s"
    found = re.fullmatch(
        rf"ERROR: {re.escape(str(broken))}: a frame {where} cannot be decoded \(.+\); the file is damaged "
        r"\(--frames 0:(\d+) upscales the \1 frames before it\)",
        line,
    )
    assert found is not None, line
    assert not (tmp_path / "out.mkv").exists()

    before = int(found.group(1))  # the range offered upscales those frames, without a word
    result = cli(
        broken, "-o", tmp_path / "part.mkv", "--model", model_path, "--codec", "ffv1", "--frames", f"0:{before}"
    )
    assert result.returncode == 0 and said(result, "WARNING") == [], result.stderr
    assert len(read_frames(tmp_path / "part.mkv")) == before


def hide_last_frames(clip: Path, hidden: int) -> Path:
    """`clip` with its MP4 edit list ending `hidden` frames before its last (as an editor's trim of the end leaves
    it): FFmpeg marks those packets to be decoded and not shown."""
    data = bytearray(clip.read_bytes())
    movie_header = data.index(b"mvhd")
    timescale = struct.unpack(">I", data[movie_header + 16 : movie_header + 20])[0]  # version 0: after two times
    entry = data.index(b"elst") + 12  # version 0: flags, entry count, then the first entry's duration
    duration = struct.unpack(">I", data[entry : entry + 4])[0]
    data[entry : entry + 4] = struct.pack(">I", duration - hidden * timescale // FPS)
    trimmed = clip.with_name(f"trimmed-{clip.name}")
    trimmed.write_bytes(bytes(data))
    return trimmed


def test_clean_clips_read_to_their_end_in_frame_threads_are_not_called_damaged(
    tmp_path: Path, model_path: Path
) -> None:
    """Guard: frames B-frames hold back to the flush, and frames an edit list hides at the end, are no lost frames."""
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=24, fps=FPS, audio=False)
    trimmed = hide_last_frames(clip, hidden=3)
    with av.open(str(trimmed)) as container:
        assert sum(packet.is_discard for packet in container.demux(video=0)) == 3
    for source, frames in ((clip, 24), (trimmed, 21)):
        output = tmp_path / f"out-{source.stem}.mkv"
        result = cli(source, "-o", output, "--model", model_path, "--codec", "ffv1")
        assert result.returncode == 0 and said(result, "WARNING") == [], result.stderr
        assert len(read_frames(output)) == frames


def test_a_last_avi_chunk_the_demuxer_passed_over_is_a_frame_lost_not_a_decoder_error(
    tmp_path: Path, model_path: Path
) -> None:
    """Guard: an H.264 AVI's last chunk whose header is damaged never reaches the decoder (`AviIndex` counts it), so
    its frame is lost at the end as one passed over mid-file is, with a warning, not dropped by decoder threads."""
    clean, damaged = tmp_path / "clean.avi", tmp_path / "damaged.avi"
    write_encoded(clean, codec="libx264", frames=12)
    with av.open(str(clean)) as container:
        position = [packet.pos for packet in container.demux(video=0) if packet.size][-1]
    data = bytearray(clean.read_bytes())
    data[position - 8 : position - 4] = bytes(4)  # the chunk's "00dc", before its size and data
    damaged.write_bytes(bytes(data))
    result = cli(damaged, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0 and said(result, "ERROR") == [], result.stderr
    missing = [line for line in said(result, "WARNING") if "missing from the output" in line]
    assert len(missing) == 1 and "1 after frame 10 (0.92 s); the output ends early" in missing[0], result.stderr
    assert len(read_frames(tmp_path / "out.mkv")) == 11


def test_a_frame_passed_over_before_timestamps_start_over_does_not_hide_a_later_one_the_decoder_dropped() -> None:
    """Timestamps that start over (files joined end to end) forget the part before's frames sent and not shown, and
    now its frames passed over too: a time passed over in the first part made the second part's frame at that time,
    dropped by the decoder at the end, count as passed over, so that decoder threads' loss there was no error.
    Fed to the watcher directly: the demuxer passes over chunks in an AVI only, whose timestamps never start over."""
    video = SimpleNamespace(average_rate=Fraction(12), time_base=Fraction(1, 12))
    # PyAV's stream stood in for: LostFrames reads only its time_base and average_rate
    lost = LostFrames(Path("joined.avi"), video, FrameRange(), "avi")  # pyright: ignore[reportArgumentType]

    def send(*times: int) -> None:
        for pts in times:
            lost.sent(SimpleNamespace(size=100, pts=pts, dts=pts, is_discard=False, is_keyframe=False))

    shown = iter(range(100))
    send(*range(8))
    lost.passed_over(8)  # the first part's chunk at 8 was passed over: its frame is lost, never decoded
    send(9)
    for pts in range(8):
        lost.shown(pts, next(shown))
    send(0, 1)  # the second part's first packets go in before the first part's last frame comes out
    lost.shown(9, next(shown))
    lost.shown(0, next(shown))  # the timestamps start over
    send(*range(2, 9))
    lost.passed_over(9)  # the second part's last chunk passed over: lost, never decoded
    for pts in range(1, 8):
        lost.shown(pts, next(shown))
    lost.ended()
    [at_end] = [count for gap, count in lost.missing() if gap.at_end]
    assert at_end == 2  # 8 and 9 of the second part
    assert lost.lost_by_decoder_at_end() == 1  # 8 went to the decoder and gave no frame; 9 was passed over


def test_held_packets_decoded_again_in_one_thread_name_the_damaged_one_else_the_earliest_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the flush of three frame threads, the two packets still held are decoded again in one thread: the one that
    fails is named for certain; where none fails (here a whole file), the earliest held is named, not certain."""
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=24, fps=FPS, audio=False)
    with av.open(str(clip)) as container:
        sent = [packet for packet in container.demux(video=0) if packet.size]
    damaged = sent[-1]
    data = bytearray(clip.read_bytes())
    data[damaged.pos : damaged.pos + damaged.size] = bytes([0, 255]) * (damaged.size // 2) + bytes(damaged.size % 2)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    threads = SimpleNamespace(thread_count=3, codec=SimpleNamespace(capabilities=FRAME_THREADS_CAPABILITY))
    video = SimpleNamespace(index=0, codec_context=threads)
    # A name FFmpeg would take for a protocol (`pipe:0.mp4`: its stdin) is the file here too, as in the upscale.
    protocol_like = tmp_path / "pipe:0.mp4"
    protocol_like.write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    named_by = ((broken, (damaged.pts, True)), (Path(protocol_like.name), (damaged.pts, True)))
    for source, named in (*named_by, (clip, (sent[-2].pts, False))):
        in_flight = PacketsInFlight(av, source, video, frame_threads=True)
        for packet in sent:
            in_flight.sent(packet)
        assert in_flight.failed(av.Packet()) == named, source
