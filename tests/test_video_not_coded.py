"""MPEG-4 Part 2 AVIs as Xvid and DivX write them: not-coded VOPs (N-VOPs) for dropped or repeated frames, and
"packed" packets of a P-frame with the B-frame before it. FFmpeg gives no frame for an N-VOP; that is no frame
lost, while a damaged packet in such a file still is."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video.not_coded import coded_pictures, time_increment_bits  # noqa: E402 - after the skips
from tests.video_helpers import cli, frame_times, pan_frames, read_frames, write_encoded  # noqa: E402

RATE = 12  # frames a second, and FFmpeg's mpeg4 encoder's vop_time_increment_resolution at it
NOT_CODED = (5, 8)  # the frames written as N-VOPs


def not_coded_vop(index: int, rate: int = RATE) -> bytes:
    """An N-VOP for frame `index`: start code, P type, its time (whole seconds, then ticks), vop_coded 0,
    stuffing to a whole byte."""
    seconds, tick = divmod(index, rate)
    header = "01" + "1" * seconds + "0" + "1" + format(tick, f"0{(rate - 1).bit_length()}b") + "1" + "0"
    header += "0" + "1" * (-(len(header) + 1) % 8)
    return b"\x00\x00\x01\xb6" + int(header, 2).to_bytes(len(header) // 8, "big")


def write_packets(source: Path, target: Path, payloads: list[bytes]) -> None:
    """`target`: `source`'s video stream with these packets, one a frame."""
    with av.open(str(source)) as template, av.open(str(target), "w") as container:
        stream = container.add_stream_from_template(template.streams.video[0])
        for index, payload in enumerate(payloads):
            packet = av.Packet(payload)
            packet.stream, packet.time_base = stream, Fraction(1, RATE)
            packet.pts = packet.dts = index
            container.mux(packet)


def payloads_of(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(video=0) if packet.size]


def empty_chunk(index: int) -> bytes:
    """A zero-length AVI chunk for frame `index`: VirtualDub's dropped frame, some muxers' placeholder."""
    return b""


def with_not_coded_frames(folder: Path, placeholder: Callable[[int], bytes] = not_coded_vop) -> Path:
    """A 12-frame AVI whose frames 5 and 8 are N-VOPs, as Xvid writes a frame it dropped (or `placeholder`s)."""
    coded, target = folder / "coded.avi", folder / "not-coded.avi"
    write_encoded(coded, codec="mpeg4", frames=12)
    payloads = payloads_of(coded)
    for index in NOT_CODED:
        payloads[index] = placeholder(index)
    write_packets(coded, target, payloads)
    return target


def b_frames(target: Path, between: int = 2, codec: str = "mpeg4") -> Path:
    """A 12-frame AVI with `between` B-frames between references, stored one picture a packet in decoding order
    as FFmpeg writes them (`ffmpeg -c:v mpeg4 -bf 2 out.avi`, nothing packed; or `-c:v libx264`)."""
    with av.open(str(target), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.max_b_frames = between
        for index, pixels in enumerate(pan_frames(12)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return target


def packed(folder: Path, placeholder: Callable[[int], bytes] = not_coded_vop) -> Path:
    """A 12-frame AVI with B-frames packed as DivX 5 does: each P-frame with the B-frame before it in one
    packet, an N-VOP (or `placeholder`) in the B-frame's place, and DivX's user data saying so."""
    coded, target = b_frames(folder / "b-frames.avi", between=1), folder / "packed.avi"
    stored = payloads_of(coded)  # decoding order: I0 P2 B1 P4 B3 ...
    first_vop = stored[0].find(b"\x00\x00\x01\xb6")
    payloads = [stored[0][:first_vop] + b"\x00\x00\x01\xb2DivX503b1393p" + stored[0][first_vop:]]
    for position in range(1, len(stored) - 1, 2):
        payloads += [stored[position] + stored[position + 1], placeholder(position + 1)]
    payloads += stored[len(payloads) :]
    write_packets(coded, target, payloads)
    return target


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]


def test_the_time_increment_width_and_not_coded_vops_are_read() -> None:
    """The layer header's 16-bit tick rate sets the VOP's time field width: 12 ticks need 4 bits."""
    # random access 0, simple profile, no layer id, square pixels, no control parameters, rectangular, marker,
    # 12 ticks a second, marker; padded with 1s to whole bytes
    fields = "0" + "00000001" + "0" + "0001" + "0" + "00" + "1" + format(12, "016b") + "1"
    fields += "1" * (-len(fields) % 8)
    extradata = b"\x00\x00\x01\x20" + int(fields, 2).to_bytes(len(fields) // 8, "big")
    assert time_increment_bits(extradata) == 4
    assert time_increment_bits(b"\x00\x00\x01\x20\x00") is None  # cut short
    assert coded_pictures(not_coded_vop(5), 4) == 0
    assert coded_pictures(not_coded_vop(13), 4) == 0  # a second past: modulo_time_base 1
    assert coded_pictures(b"\x00\x00\x01\xb6\x51\xe1\x05", 4) == 1  # a P-VOP, coded
    assert coded_pictures(b"\x00\x00\x01\xb6" + bytes(4), 4) == 1  # marker bits unset: damage, no N-VOP
    assert coded_pictures(not_coded_vop(5) + b"\x7f\x7f\x00\x00", 4) == 0  # stuffing after it
    assert coded_pictures(not_coded_vop(5) + not_coded_vop(6), 4) == 0  # two in a packet
    assert coded_pictures(not_coded_vop(5) + b"\x3c\x91\x7f", 4) == 1  # a picture's data: a damaged header
    assert coded_pictures(b"\x00\x00\x01\xb3\x00", 4) is None  # no VOP


@pytest.mark.parametrize("placeholder", [not_coded_vop, empty_chunk], ids=["n-vop", "empty-chunk"])
def test_not_coded_frames_are_not_called_lost(
    tmp_path: Path, model_path: Path, placeholder: Callable[[int], bytes]
) -> None:
    """FFmpeg gives no frame for an N-VOP, nor any packet for an empty AVI chunk: the file was said to lose 2
    frames, and to decode 10 of 12; the frame before each is held in the output as in the file."""
    source = with_not_coded_frames(tmp_path, placeholder)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    shown = [index / RATE for index in range(12) if index not in NOT_CODED]
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(shown, abs=0.002)


def test_packed_b_frames_are_not_called_lost(tmp_path: Path, model_path: Path) -> None:
    source = packed(tmp_path)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert not [line for line in warnings(result) if "decoded" in line], result.stderr
    assert len(frame_times(tmp_path / "out.mkv")) == 12


@pytest.mark.parametrize("empty", [(4,), (2, 4, 6, 8, 10)], ids=["one", "every"])
def test_packed_b_frames_with_empty_placeholders_decode_as_with_n_vops(
    tmp_path: Path, model_path: Path, empty: tuple[int, ...]
) -> None:
    """A packed file whose placeholders are empty chunks: FFmpeg's demuxer gives no packet for them, and its
    decoder, given no placeholder to decode the held-back B-frame at, failed the next packed packet: of 12 frames 7
    (or 10 for one empty chunk) came out, some of them garbled, and the file was said to be damaged. The placeholder
    is sent as the N-VOP it stands for: the frames, and their times, are the N-VOP file's."""
    with_n_vops = packed(tmp_path)
    (tmp_path / "empty").mkdir()
    source = packed(tmp_path / "empty", lambda index: b"" if index in empty else not_coded_vop(index))
    result = cli(with_n_vops, "-o", tmp_path / "n-vops.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    assert frame_times(tmp_path / "out.mkv") == frame_times(tmp_path / "n-vops.mkv")
    for frame, expected in zip(read_frames(tmp_path / "out.mkv"), read_frames(tmp_path / "n-vops.mkv"), strict=True):
        assert (frame == expected).all()


@pytest.mark.parametrize("damage", ["zeroed", "header-not-coded"])
def test_a_damaged_frame_among_not_coded_ones_is_still_lost(tmp_path: Path, model_path: Path, damage: str) -> None:
    """A picture's packet zeroed after its start code gives no frame and no error: that one frame is lost, the
    N-VOPs are not. So is a P-VOP whose header was damaged to read "not coded" (`fuzz_video --seed 32`, mpeg4.mp4:82:
    its first byte inverted, a B-VOP a second on), which was taken for an N-VOP: an N-VOP's header is followed by
    stuffing alone, not by a picture's data."""
    source = with_not_coded_frames(tmp_path)
    with av.open(str(source)) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][10]
    data = bytearray(source.read_bytes())
    header = not_coded_vop(10)[4:]
    replaced = bytes(size - 4) if damage == "zeroed" else header  # this: its picture's data left after it
    data[position + 4 : position + 4 + len(replaced)] = replaced
    source.write_bytes(bytes(data))
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    counted = "only 9 of the 10 frames the file lists decoded (truncated or damaged?); the output has those"
    lost = (
        "1 frame of the video could not be decoded and is missing from the output (a damaged file?): 1 after "
        "frame 7 (0.75 s); the output jumps over it, its timing kept; repair or replace the file to get it back, "
        "or --frames 0:8 upscales the frames before the first gap"
    )
    assert warnings(result) == [f"WARNING: {source}: {counted}", f"WARNING: {source}: {lost}"]


def test_packed_b_frames_keep_their_times_without_a_repair_note(tmp_path: Path, model_path: Path) -> None:
    """The decoder shows each B-frame with its packed P-frame's slot: the frames' timestamps went back and forth,
    a clean file was said to have "frames without increasing timestamps", and every frame after the first B-frame
    came out a frame late."""
    source = packed(tmp_path)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    first = frame_times(tmp_path / "out.mkv")[0]
    shown = [first + index / RATE for index in range(12)]
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(shown, abs=0.002)


def test_timestamps_that_do_not_increase_are_still_repaired_and_said(tmp_path: Path, model_path: Path) -> None:
    """A frame stamped with its predecessor's time (no packed B-frames): mended to one frame's spacing, said."""
    coded, source = tmp_path / "coded.avi", tmp_path / "repeated.mkv"
    write_encoded(coded, codec="mpeg4", frames=8)
    with av.open(str(coded)) as template, av.open(str(source), "w") as container:
        stream = container.add_stream_from_template(template.streams.video[0])
        for index, payload in enumerate(payloads_of(coded)):
            packet = av.Packet(payload)
            packet.stream, packet.time_base = stream, Fraction(1, RATE)
            packet.pts = packet.dts = index - (index >= 5)  # frames 4 and 5 at the same time
            container.mux(packet)
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert f"WARNING: {source}: frames without increasing timestamps; given one frame's spacing" in warnings(result)
    assert len(frame_times(tmp_path / "out.mkv")) == 8


def zero_tail_of_packet(source: Path, target: Path, packet_index: int) -> None:
    """`target`: `source` with the second half of its `packet_index`th video packet zeroed, where a packed
    packet holds its B-frame: that one picture is lost, the rest decode."""
    with av.open(str(source)) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][packet_index]
    data = bytearray(source.read_bytes())
    data[position + size // 2 : position + size] = bytes(size - size // 2)
    target.write_bytes(bytes(data))


def lost_line(source: Path, after: int, time: float) -> str:
    return (
        f"WARNING: {source}: 1 frame of the video could not be decoded and is missing from the output (a damaged "
        f"file?): 1 after frame {after} ({time:.2f} s); the output jumps over it, its timing kept; repair or replace "
        f"the file to get it back, or --frames 0:{after + 1} upscales the frames before the first gap"
    )


@pytest.mark.parametrize("placeholder", [not_coded_vop, empty_chunk], ids=["n-vop", "empty-chunk"])
def test_a_b_frame_lost_from_a_packed_packet_is_named(
    tmp_path: Path, model_path: Path, placeholder: Callable[[int], bytes]
) -> None:
    """The frames of a packed file come out with timestamps that go back at every B-frame: the lost-frame
    tracker took each for timestamps starting over and forgot what was sent, so the B-frame of a damaged
    packed packet was lost without a word (or, lost early in the file, named a frame late). With empty chunks for
    placeholders, FFmpeg's guess of a packed packet's time is two frames on, and the lost frame went unnamed."""
    clean, damaged = packed(tmp_path, placeholder), tmp_path / "damaged.avi"
    # P4 with B3 (after I0, P2 with B1 and, if not empty, a placeholder): frame 3 is lost, after frame 2
    zero_tail_of_packet(clean, damaged, 2 if placeholder is empty_chunk else 3)
    result = cli(clean, "-o", tmp_path / "clean.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    times = frame_times(tmp_path / "clean.mkv")
    result = cli(damaged, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    patched = (
        f"WARNING: {damaged}: 1 of the 11 frames upscaled decoded with errors (a damaged file?), the first at frame 3; "
        "they are upscaled as the decoder patched them up (--frames can leave them out)"
    )  # P4, its B-frame's bytes read as its own
    assert warnings(result) == [lost_line(damaged, 2, times[2]), patched], result.stderr
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(times[:3] + times[4:], abs=0.002)


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_b_frames_stored_unpacked_in_an_avi_are_tracked_in_order(tmp_path: Path, model_path: Path, codec: str) -> None:
    """FFmpeg's own B-frames in an AVI come out of the decoder in presentation order: a clean file loses nothing,
    and its frames keep their times. H.264's came out with their packets' decoding slots, which went back at every
    B-frame: a clean file was said to have "frames without increasing timestamps" and to lose a frame, and every
    frame after the first B-frame was shown a frame late."""
    clean = b_frames(tmp_path / "b-frames.avi", codec=codec)
    result = cli(clean, "-o", tmp_path / "clean.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []
    times = frame_times(tmp_path / "clean.mkv")
    assert times == pytest.approx([times[0] + index / RATE for index in range(12)], abs=0.002)


def upscaled_with_a_packet_lost(
    tmp_path: Path, model_path: Path, clean: Path, damaged_packet: int, lost: tuple[int, ...]
) -> tuple[list[float], subprocess.CompletedProcess[str]]:
    """`clean` and `damaged.avi`, `clean` with its `damaged_packet`th video packet zeroed after its start code (it
    gives no frame), upscaled: the clean output's frame times, and the damaged run, whose output holds every frame
    but `lost`, each at its time."""
    with av.open(str(clean)) as container:
        position, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][damaged_packet]
    data = bytearray(clean.read_bytes())
    data[position + 4 : position + size] = bytes(size - 4)
    (tmp_path / "damaged.avi").write_bytes(bytes(data))
    result = cli(clean, "-o", tmp_path / "clean.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    times = frame_times(tmp_path / "clean.mkv")
    result = cli(tmp_path / "damaged.avi", "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(
        [time for index, time in enumerate(times) if index not in lost], abs=0.002
    )
    return times, result


def missing_line(source: Path, count: int, after: int, time: float) -> str:
    if count == 1:
        return lost_line(source, after, time)
    return (
        f"WARNING: {source}: {count} frames of the video could not be decoded and are missing from the output (a "
        f"damaged file?): {count} after frame {after} ({time:.2f} s); the output jumps over them, its timing kept; "
        f"repair or replace the file to get them back, or --frames 0:{after + 1} upscales the frames before the "
        "first gap"
    )


@pytest.mark.parametrize(
    ("damaged_packet", "lost"),
    [(3, (2,)), (5, (4, 5)), (4, (4, 5, 6))],
    ids=["last-b-frame-of-a-run", "first-b-frame-of-a-run", "reference"],
)
def test_pictures_lost_from_b_frames_stored_unpacked_in_an_avi_are_named_where_they_were(
    tmp_path: Path, model_path: Path, damaged_packet: int, lost: tuple[int, ...]
) -> None:
    """An AVI states only decoding slots, and FFmpeg times a reference picture by the next one's, reading the
    pictures' types: a damaged B-frame's cannot be read, and was taken for a reference's, so the reference before
    it came out a frame early (in the lost B-frame's time), and the frame named lost was the one after the gap.
    The pictures' own times say which the damaged one was: a lost reference (whose B-frames FFmpeg cannot show
    either) is still timed by its predecessor's."""
    clean, damaged = b_frames(tmp_path / "b-frames.avi"), tmp_path / "damaged.avi"
    # decoding order: I0 P3 B1 B2 P6 B4 B5 P9 ...
    times, result = upscaled_with_a_packet_lost(tmp_path, model_path, clean, damaged_packet, lost)
    before = lost[0] - 1  # the frames before the first picture lost are all there, numbered as in the file
    counted = (
        f"WARNING: {damaged}: only {12 - len(lost)} of the 12 frames the file lists decoded (truncated or damaged?)"
    )
    counted += "; the output has those"
    assert warnings(result) == [counted, missing_line(damaged, len(lost), before, times[before])], result.stderr


@pytest.mark.parametrize(
    ("placeholder", "damaged_packet", "lost"),
    [(empty_chunk, 1, (1, 2)), (empty_chunk, 3, (5, 6)), (not_coded_vop, 1, (1, 2)), (not_coded_vop, 3, (3, 4))],
    ids=["after-the-key-frame", "later", "n-vops-after-the-key-frame", "n-vops-later"],
)
def test_the_picture_before_a_lost_packed_packet_keeps_its_time(
    tmp_path: Path,
    model_path: Path,
    placeholder: Callable[[int], bytes],
    damaged_packet: int,
    lost: tuple[int, ...],
) -> None:
    """A packed packet lost whole: the decoder gives the picture before it only when the next one comes, and it was
    shown there, where the lost ones were: the key frame before a packed packet lost right after it was shown two
    frames late, and nothing was named lost. Each frame is shown a slot after the packet it came from. FFmpeg fails
    the N-VOP after such a packet, which ended the upscale; it holds no picture, and no longer does. Its header
    unreadable, the packet was counted as one picture, and one frame named lost of the two; the placeholder after it
    in a stream DivX says is packed shows it held two."""
    clean = packed(tmp_path, placeholder)
    # I0, P2 with B1, (its placeholder), P4 with B3, ...: empty placeholders are no packets
    times, result = upscaled_with_a_packet_lost(tmp_path, model_path, clean, damaged_packet, lost)
    before = lost[0] - 1
    counted = f"WARNING: {tmp_path / 'damaged.avi'}: only 10 of the 12 frames the file lists decoded (truncated or "
    counted += "damaged?); the output has those"
    named = missing_line(tmp_path / "damaged.avi", 2, before, times[before])
    assert warnings(result) == [counted, named], result.stderr


@pytest.mark.parametrize(
    ("layout", "damaged_packet"), [("not-coded", 5), ("packed", 2)], ids=["dropped-frame", "packed-placeholder"]
)
def test_a_damaged_n_vop_is_no_frame_lost(tmp_path: Path, model_path: Path, layout: str, damaged_packet: int) -> None:
    """An N-VOP whose header is damaged holds no picture either: as big as an N-VOP, it was counted as a frame the
    file lists and one lost ("only 10 of the 11 frames"); a packed packet's placeholder, for which FFmpeg decodes the
    B-frame held back whatever it holds, was too ("12 of the 13" with all 12 decoded), and the frames after it were
    shown a frame late."""
    clean = with_not_coded_frames(tmp_path) if layout == "not-coded" else packed(tmp_path)
    _, result = upscaled_with_a_packet_lost(tmp_path, model_path, clean, damaged_packet, ())
    assert warnings(result) == [], result.stderr


@pytest.mark.parametrize(
    ("placeholder", "damaged_chunk", "lost"),
    [(not_coded_vop, 2, ()), (not_coded_vop, 3, (3, 4)), (empty_chunk, 2, (3, 4))],
    ids=["placeholder", "packed", "packed-before-an-empty-chunk"],
)
def test_a_chunk_of_a_packed_file_whose_header_is_damaged_is_counted_as_what_it_held(
    tmp_path: Path, model_path: Path, placeholder: Callable[[int], bytes], damaged_chunk: int, lost: tuple[int, ...]
) -> None:
    """FFmpeg's demuxer passes over a chunk whose header is damaged without an error, and counts the frames on
    without it. A placeholder passed over left its decoder no packet to decode the held-back B-frame at: 3 frames
    were lost, the rest a frame early; it is sent as the N-VOP it was, and nothing is lost. A packed packet passed
    over, the placeholder after it shows it held two frames (it was counted as one, or not named at all)."""
    clean, damaged = packed(tmp_path, placeholder), tmp_path / "damaged.avi"
    with av.open(str(clean)) as container:
        position = [packet.pos for packet in container.demux(video=0) if packet.size][damaged_chunk]
    data = bytearray(clean.read_bytes())
    data[position - 8 : position - 4] = bytes(4)  # the chunk's "00dc", before its size
    damaged.write_bytes(bytes(data))
    result = cli(clean, "-o", tmp_path / "clean.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    times = frame_times(tmp_path / "clean.mkv")
    result = cli(damaged, "-o", tmp_path / "out.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    expected = []
    if lost:
        counted = f"WARNING: {damaged}: only {12 - len(lost)} of the 12 frames the file lists decoded (truncated or "
        expected = [counted + "damaged?); the output has those", missing_line(damaged, 2, 2, times[2])]
    assert warnings(result) == expected, result.stderr
    shown = [time for index, time in enumerate(times) if index not in lost]
    assert frame_times(tmp_path / "out.mkv") == pytest.approx(shown, abs=0.002)
