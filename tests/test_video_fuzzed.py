"""Damaged videos a mutation fuzzer of `srfeat upscale` found escaping its rule (a frame lost to damage is named, with
its time; nothing wrong is passed on unsaid): each is built here from a small valid clip, as the fuzzer damaged it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from tests.video_helpers import cli, frame_times, write_encoded  # noqa: E402 - needs PyAV, checked above

VOP_START = b"\x00\x00\x01\xb6"


def warnings_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]


def one_frame_lost(source: Path, place: str, output: str) -> str:
    """The warning for one frame of the whole video lost to damage, at `place`, and what the output does."""
    return (
        f"WARNING: {source}: 1 frame of the video could not be decoded and is missing from the output (a damaged "
        f"file?): {place}; {output}"
    )


def frames_decoded(source: Path, decoded: int, listed: int) -> str:
    """The warning for a whole video of which only `decoded` of the `listed` frames came out."""
    return (
        f"WARNING: {source}: only {decoded} of the {listed} frames the file lists decoded (truncated or damaged?); "
        "the output has those"
    )


def first_picture_damaged(folder: Path, container_format: str, extension: str) -> Path:
    """A 6-frame MPEG-4 Part 2 clip whose first frame's header has its second marker bit cleared (the bit after
    `vop_time_increment`, at 12 frames a second in the VOP header's second byte): FFmpeg's decoder takes the packet,
    gives no frame and raises nothing, and decodes the frames after it."""
    clip = folder / f"clip{extension}"
    write_encoded(clip, codec="mpeg4", frames=6, container_format=container_format)
    with av.open(str(clip)) as container:
        first = next(packet.pos for packet in container.demux(video=0) if packet.size)
    data = bytearray(clip.read_bytes())
    header = data.index(VOP_START, first) + len(VOP_START)
    assert data[header + 1] & 0x80, "not the marker bit: the encoder wrote another header"
    data[header + 1] &= 0x7F
    damaged = folder / f"damaged{extension}"
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize(("container_format", "extension"), [("matroska", ".mkv"), ("mpegts", ".ts")])
def test_a_first_keyframe_that_decodes_to_nothing_is_named(
    tmp_path: Path, model_path: Path, container_format: str, extension: str
) -> None:
    """The decoder gave no frame for the file's first packet, a keyframe, and went on: the output started a frame
    late with no word, since frames before the first one shown were all taken for an open GOP's leading frames,
    which no decoder shows. A Matroska file and an MPEG-TS state no frame count, so nothing else saw it."""
    source = first_picture_damaged(tmp_path, container_format, extension)
    with av.open(str(tmp_path / f"clip{extension}")) as container:
        first_time = float(next(container.decode(video=0)).time)
    assert len(frame_times(source)) == 5  # the damage is what the test says: one frame lost, at the start
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    starts_late = "the output starts with the frame after it; repair or replace the file to get it back"
    assert warnings_of(result) == [one_frame_lost(source, f"1 before frame 0 ({first_time:.2f} s)", starts_late)]
    assert len(frame_times(tmp_path / "out.mkv")) == 5
    ranged = cli(source, "-o", tmp_path / "late.mkv", "--model", model_path, "--codec", "ffv1", "--frames", "2:4")
    assert ranged.returncode == 0, ranged.stderr
    late = (
        f"WARNING: {source}: 1 frame before --frames 2:4 could not be decoded (a damaged file?): 1 before frame 0 "
        f"({first_time:.2f} s); frames are counted as they decode, so the range starts 1 frame late, at "
        f"{frame_times(source)[2]:.2f} s; repair or replace the file to get the frames asked for"
    )
    assert warnings_of(ranged) == [late]


@pytest.mark.parametrize(("container_format", "extension"), [("matroska", ".mkv"), ("mpegts", ".ts")])
def test_a_clean_first_keyframe_is_not_called_lost(
    tmp_path: Path, model_path: Path, container_format: str, extension: str
) -> None:
    """The same clip undamaged: its first packet gives frame 0, and nothing is said. (Passes on the old code too: it
    guards the check above from taking in clean files.)"""
    clip = tmp_path / f"clip{extension}"
    write_encoded(clip, codec="mpeg4", frames=6, container_format=container_format)
    result = cli(clip, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0 and warnings_of(result) == [], result.stderr


def test_an_avi_chunk_whose_size_is_damaged_to_nothing_is_named_as_a_lost_frame(
    tmp_path: Path, model_path: Path
) -> None:
    """An AVI video chunk whose header's size field reads 0: FFmpeg's demuxer took it for an empty chunk (a frame the
    encoder dropped, the one before held over its time) and resynced past its data, so the frame was gone with no
    word, and the file's frame count was taken as met. The index lists the chunk with its data: it was lost."""
    clip = tmp_path / "clip.avi"
    write_encoded(clip, codec="mjpeg", pixel_format="yuvj420p", frames=8, container_format="avi")
    with av.open(str(clip)) as container:
        position = [packet.pos for packet in container.demux(video=0) if packet.size][5]
    data = bytearray(clip.read_bytes())
    data[position - 4 : position] = bytes(4)  # the 6th chunk's size, after its '00dc'
    source = tmp_path / "damaged.avi"
    source.write_bytes(bytes(data))
    assert len(frame_times(source)) == 7  # the damage is what the test says: one frame lost, the 6th
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    jumps = (
        "the output jumps over it, its timing kept; repair or replace the file to get it back, or --frames 0:5 "
        "upscales the frames before the first gap"
    )
    assert one_frame_lost(source, f"1 after frame 4 ({frame_times(clip)[4]:.2f} s)", jumps) in warnings_of(result)
    # the frames after it keep their times (Matroska's are in milliseconds)
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(frame_times(source), abs=0.001)


def test_an_mp4_frame_whose_composition_offset_is_damaged_to_minus_2_31_is_not_taken_as_hidden(
    tmp_path: Path, model_path: Path
) -> None:
    """A ctts entry's offset made 0x80000000 (-2^31, read as signed): FFmpeg put that frame two days before the
    video's start and flagged it as one the edit list hides, so it was dropped from the middle of the video and
    counted as hidden, with no word. Frames an edit list hides lie from the keyframe the file starts at on."""
    clip = tmp_path / "clip.mp4"
    write_encoded(clip, frames=8, container_format="mp4")  # x264's B-frames: an offset per sample
    data = bytearray(clip.read_bytes())
    at = data.index(b"ctts")
    first, entries = at + 12, struct.unpack(">I", data[at + 8 : at + 12])[0]
    assert entries == 7  # the first entry covers two samples, then one a sample: entry 4 is the 6th frame
    data[first + 8 * 4 + 4 : first + 8 * 4 + 8] = struct.pack(">I", 0x80000000)
    source = tmp_path / "damaged.mp4"
    source.write_bytes(bytes(data))
    with av.open(str(source)) as container:  # the damage is what the test says: one frame hidden, unsaid
        hidden = [packet.pts for packet in container.demux(video=0) if packet.size and packet.is_discard]
    assert len(hidden) == 1 and hidden[0] < -(2**30)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == [frames_decoded(source, 7, 8)]


def test_an_mp4_whose_header_claims_gigabytes_says_so_not_only_that_memory_ran_out(
    tmp_path: Path, model_path: Path
) -> None:
    """An MP4's stts entry count made 2^28 (2 GiB of entries in a file of kilobytes): FFmpeg refuses it at once,
    as "Cannot allocate memory", which alone sent the user looking for memory to free."""
    clip = tmp_path / "clip.mp4"
    write_encoded(clip, frames=4, container_format="mp4")
    data = bytearray(clip.read_bytes())
    at = data.index(b"stts")
    data[at + 8 : at + 12] = struct.pack(">I", 0x10000000)
    source = tmp_path / "damaged.mp4"
    source.write_bytes(bytes(data))
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0] == (
        f"ERROR: cannot read video {source}: Cannot allocate memory as FFmpeg read its header: a damaged header "
        "claiming more than FFmpeg sets aside, or the machine's memory is spent; skip or replace this file"
    )
    assert not (tmp_path / "out.mkv").exists()


@pytest.mark.parametrize("damaged", [True, False], ids=["timescale-damaged", "sound-end-trim"])
def test_an_mp4_whose_edit_list_spans_under_a_frame_is_not_taken_as_trimmed(
    tmp_path: Path, model_path: Path, damaged: bool
) -> None:
    """The movie's timescale made 65535 (from 1000): its edit list, in that timescale, then spans 10 ms, FFmpeg hid
    every frame after the first, as it hides a sound file's frames past an edit that ends early, and the one frame was
    written without a word. A sound end-trimmed file (its edit, movie and track lengths made 4 frames) states a
    length that holds what it shows, and is written so with nothing said."""
    clip = tmp_path / "clip.mp4"
    write_encoded(clip, frames=8, container_format="mp4")
    data = bytearray(clip.read_bytes())
    movie = data.index(b"mvhd")
    if damaged:
        data[movie + 16 : movie + 20] = struct.pack(">I", 65535)
    else:  # 4 of the 8 frames, in the movie's timescale of 1000: elst's segment, mvhd's and tkhd's durations
        (timescale,) = struct.unpack(">I", data[movie + 16 : movie + 20])
        length = struct.pack(">I", 4 * timescale // 12)
        edit, track = data.index(b"elst"), data.index(b"tkhd")
        data[edit + 12 : edit + 16] = data[movie + 20 : movie + 24] = data[track + 24 : track + 28] = length
    source = tmp_path / "source.mp4"
    source.write_bytes(bytes(data))
    with av.open(str(source)) as container:  # the damage is what the test says: frames flagged hidden
        hidden = [packet.pts for packet in container.demux(video=0) if packet.size and packet.is_discard]
    assert len(hidden) == (7 if damaged else 4)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == ([frames_decoded(source, 1, 8)] if damaged else [])
    assert len(frame_times(tmp_path / "out.mkv")) == (1 if damaged else 4)


def test_an_mp4_whose_sample_table_holds_a_box_twice_says_so(tmp_path: Path, model_path: Path) -> None:
    """A flipped bit made the ctts box's type "stts" (scripts/fuzz_video.py): FFmpeg read the composition offsets
    as the frames' durations, hid 5 of the 8 frames as past the edit list's span, and the 3 others were written
    without a word. FFmpeg logs "Duplicated STTS atom", which now comes out as a warning."""
    clip = tmp_path / "clip.mp4"
    write_encoded(clip, frames=8, container_format="mp4")  # x264's B-frames: a ctts box
    data = bytearray(clip.read_bytes())
    at = data.index(b"ctts")
    data[at : at + 1] = b"s"
    sources = [tmp_path / "damaged.mp4", tmp_path / "again.mp4"]
    for source in sources:
        source.write_bytes(bytes(data))
    # two in one run: PyAV drops a log line that repeats the last one, and the second went unsaid
    result = cli(*sources, "-o", tmp_path / "out", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    for source in sources:
        assert (
            f"WARNING: {source}: its sample table holds two stts boxes, of which FFmpeg reads the last (a damaged "
            "file?): frames may be missing or out of time"
        ) in warnings_of(result), result.stderr
    plain = cli(clip, "-o", tmp_path / "plain.mkv", "--model", model_path, "--codec", "ffv1")
    assert plain.returncode == 0 and not warnings_of(plain), plain.stderr


def mpeg2_transport_stream(folder: Path) -> bytes:
    """An 8-frame MPEG-2 clip in MPEG-TS, as fuzz_video's seed is (its first packets: PAT, PMT, then video)."""
    clip = folder / "clip.ts"
    write_encoded(clip, codec="mpeg2video", frames=8, container_format="mpegts")
    data = clip.read_bytes()
    assert len(data) % 188 == 0 and all(data[at] == 0x47 for at in range(0, len(data), 188))
    return data


def test_a_ts_whose_fourth_packet_took_bytes_in_says_where(tmp_path: Path, model_path: Path) -> None:
    """16 bytes came into the video's first packet, the file's fourth (`fuzz_video --seed 1818`, mpeg2.ts:56): the
    packets' sync bytes were in place for only 4 packets from the start, where 5 were looked for, so the transport
    scan found no packet grid, and the frame the bytes damaged was lost without a word."""
    data = mpeg2_transport_stream(tmp_path)
    packet = 3 * 188
    assert ((data[packet + 1] & 0x1F) << 8) | data[packet + 2] == 256  # the video's PID: its first packet
    source = tmp_path / "damaged.ts"
    source.write_bytes(data[: packet + 64] + data[1000:1016] + data[packet + 64 :])
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    (warning,) = warnings_of(result)
    assert warning.startswith(f"WARNING: {source}: the file is damaged at byte 752, "), warning
    assert "(16 bytes that hold no whole transport packet)" in warning, warning


def test_a_ts_that_ends_in_less_than_a_packet_of_other_bytes_says_where(tmp_path: Path, model_path: Path) -> None:
    """Bytes removed before the end (`fuzz_video --seed 1818`, mpeg2.ts:17): the last packets were gone, and what was
    left of one after them, fewer bytes than a packet and no sync byte first, was passed over as nothing, with the
    frames those packets held. A tail of one byte value (a writer's padding) is still taken for none."""
    data = mpeg2_transport_stream(tmp_path)
    kept = len(data) - 3 * 188
    source, padded = tmp_path / "damaged.ts", tmp_path / "padded.ts"
    source.write_bytes(data[:kept] + data[-52:])
    padded.write_bytes(data + bytes(52))
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    (warning,) = warnings_of(result)
    assert warning.startswith(f"WARNING: {source}: the file is damaged at byte {kept}, "), warning
    assert "(52 bytes at the end that hold no transport packet)" in warning, warning
    plain = cli(padded, "-o", tmp_path / "plain.mkv", "--model", model_path, "--codec", "ffv1")
    assert plain.returncode == 0 and not warnings_of(plain), plain.stderr


@pytest.mark.parametrize("pid", [0, 256], ids=["pat", "video"])
def test_a_ts_zeroed_to_its_end_from_inside_a_packet_says_where(tmp_path: Path, model_path: Path, pid: int) -> None:
    """The file's last 1,692 bytes and 88 of the packet before them written over with zeros (`fuzz_video --seed 31`,
    mpeg2.ts:14: from inside a PAT packet; a crash that left a file zeroed from a disk block's start, in a packet):
    half the frames were lost without a word, as the zeros were taken for a writer's padding. Padding begins after
    a whole packet; a table's stuffing is 0xFF and the video's coded data ends in no run of zeros."""
    data = mpeg2_transport_stream(tmp_path)
    starts = [at for at in range(0, len(data) // 2, 188) if ((data[at + 1] & 0x1F) << 8) | data[at + 2] == pid]
    zeroed = starts[-1] + 100  # inside the packet of that PID before the file's middle
    source = tmp_path / "damaged.ts"
    source.write_bytes(data[:zeroed] + bytes(len(data) - zeroed))
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    warning = warnings_of(result)[0]  # the frame whose packet was cut then decodes with errors, which is said too
    assert warning.startswith(f"WARNING: {source}: the file is damaged at byte {zeroed}, "), warning
    assert f"({len(data) - zeroed} bytes of zeros to the end, from inside a transport packet)" in warning, warning
    # zeros from a packet's end: a writer's padding, as before
    padded = tmp_path / "padded.ts"
    padded.write_bytes(data + bytes(4 * 188))
    plain = cli(padded, "-o", tmp_path / "plain.mkv", "--model", model_path, "--codec", "ffv1")
    assert plain.returncode == 0 and not warnings_of(plain), plain.stderr
