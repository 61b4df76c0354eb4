"""MPEG-4 Part 2 packets that hold no picture, or two: not frames lost, though FFmpeg gives no frame for them.

Xvid and DivX write a not-coded VOP (an N-VOP: a VOP header whose `vop_coded` bit is 0) for a frame they
dropped or that repeats the one before, and as the placeholder after a "packed" packet that holds a P-frame
and the B-frame shown before it. FFmpeg's decoder gives no frame for an N-VOP (the frame before is held: the
output's timing keeps it on screen), and two for a packed packet. Counting them keeps a clean file from being
called damaged while a packet that holds a picture and gives none still counts as a frame lost.

An AVI may hold such a frame as a zero-length video chunk instead (VirtualDub writes a dropped frame so, and some
muxers the placeholder after a packed packet): FFmpeg's demuxer never gives those, and the decoding slot it skips
is their only trace (`EmptyChunks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["EmptyChunks", "PictureCounter", "not_coded_vop"]

VOP_START = b"\x00\x00\x01\xb6"
VOL_START_CODES = range(0x20, 0x30)  # video_object_layer_start_code: 0x00000120 to 0x0000012F
VBV_PARAMETER_BITS = 79  # bit rate, buffer size and occupancy, with their marker bits (ISO 14496-2 6.2.3)
EXTENDED_PAR = 0xF
GRAYSCALE_SHAPE = 3
B_VOP = 2
# Bytes an encoder may put between an N-VOP's header and the next start code: next_start_code()'s stuffing (0x7F
# once aligned), and the zeros or 0xFF some pad a packet with.
STUFFING_BYTES = frozenset((0x00, 0x7F, 0xFF))
DIVX_PACKED = re.compile(rb"DivX\d+(?:Build|b)\d+p")


class BitReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0  # in bits

    def read(self, count: int) -> int:
        """The next `count` bits as a number; raises IndexError past the data's end."""
        value = 0
        for _ in range(count):
            byte = self.data[self.position >> 3]
            value = (value << 1) | ((byte >> (7 - (self.position & 7))) & 1)
            self.position += 1
        return value


def time_increment_bits(data: bytes) -> int | None:
    """The width of a VOP's `vop_time_increment`, from the first video object layer header in `data`
    (the stream's extradata or a keyframe's packet); None where there is none, or it is cut short."""
    return increment_bits_for(time_resolution(data))


def increment_bits_for(resolution: int | None) -> int | None:
    return max(1, (resolution - 1).bit_length()) if resolution else None


def time_resolution(data: bytes) -> int | None:
    """The `vop_time_increment_resolution` (a VOP's time ticks a second) of the first video object layer header in
    `data`; None where there is none, or it is cut short."""
    at = _first_vol(data)
    if at is None:
        return None
    bits = BitReader(data[at:])
    try:
        bits.read(1 + 8)  # random_accessible_vol, video_object_type_indication
        verid = 1
        if bits.read(1):  # is_object_layer_identifier: verid, then priority
            verid = bits.read(4)
            bits.read(3)
        if bits.read(4) == EXTENDED_PAR:  # aspect_ratio_info
            bits.read(16)
        if bits.read(1):  # vol_control_parameters: chroma_format, low_delay, vbv_parameters
            bits.read(3)
            if bits.read(1):
                bits.read(VBV_PARAMETER_BITS)
        shape = bits.read(2)
        if shape == GRAYSCALE_SHAPE and verid != 1:
            bits.read(4)
        bits.read(1)  # marker
        resolution = bits.read(16)  # vop_time_increment_resolution: ticks a second
    except IndexError:
        return None
    return resolution or None


def _first_vol(data: bytes) -> int | None:
    """Where the first video object layer header's fields start in `data`."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and at + 4 <= len(data):
        if data[at + 3] in VOL_START_CODES:
            return at + 4
        at = data.find(b"\x00\x00\x01", at + 3)
    return None


def coded_pictures(data: bytes, increment_bits: int) -> int | None:
    """How many of the VOPs in a packet hold a picture (`vop_coded` set); None where it has no VOP header
    or one is cut short before that bit."""
    headers = vop_headers(data, increment_bits)
    # Marker bits not set: a damaged header, which is no N-VOP and should give a frame.
    return sum(header.coded or not header.intact for header in headers) if headers else None


def vop_headers(data: bytes, increment_bits: int) -> list[VopHeader] | None:
    """The headers of the VOPs in a packet; None where one is cut short before `vop_coded`."""
    headers = []
    at = data.find(VOP_START)
    while at >= 0:
        header = vop_header(data[at + len(VOP_START) :], increment_bits)
        if header is None:
            return None
        headers.append(header)
        at = data.find(VOP_START, at + len(VOP_START))
    return headers


def not_coded_size(increment_bits: int) -> int:
    """The most bytes an N-VOP takes: its start code, then its type, a second at most of `modulo_time_base`, the
    two markers around its time, `vop_coded` and the stuffing to a whole byte (FFmpeg's bitstream filter takes up to
    19 bytes for one; a picture that fits in fewer bytes than this can only repeat the one before)."""
    return len(VOP_START) + (2 + 2 + 1 + increment_bits + 1 + 1 + 8) // 8


def divx_packed(data: bytes) -> bool:
    """Whether `data` (extradata, a key frame) holds DivX's user data saying its B-frames are packed, as FFmpeg's
    decoder reads it ("DivX503b1393p": version, build, then a "p"), and only then unpacks them."""
    return DIVX_PACKED.search(data) is not None


@dataclass(frozen=True)
class VopHeader:
    coding_type: int  # I_VOP, P_VOP, B_VOP or S_VOP
    seconds: int  # modulo_time_base: whole seconds past the time base it counts from
    increment: int  # vop_time_increment: ticks past those seconds
    intact: bool  # both marker bits set, and an N-VOP ends there: else the header is damaged, its fields no guide
    coded: bool


def vop_header(data: bytes, increment_bits: int) -> VopHeader | None:
    """The fields up to `vop_coded` of the VOP header `data` holds after its start code; None where it is cut short."""
    bits = BitReader(data)
    try:
        coding_type = bits.read(2)
        seconds = 0
        while bits.read(1):  # modulo_time_base: a 1 for each whole second past the last one
            seconds += 1
        first_marker, increment, second_marker = bits.read(1), bits.read(increment_bits), bits.read(1)
        coded = bits.read(1)
    except IndexError:
        return None
    intact = bool(first_marker and second_marker) and (bool(coded) or _ends_there(data[(bits.position + 7) // 8 :]))
    return VopHeader(coding_type, seconds, increment, intact, bool(coded))


def _ends_there(rest: bytes) -> bool:
    """Whether the bytes after an N-VOP's header, to the next start code, are stuffing alone, as its syntax has
    them: a picture's data there is a coded VOP whose header was damaged to read "not coded" (FFmpeg then gives
    no frame for it, without an error, and the frame was taken for an N-VOP's)."""
    end = rest.find(b"\x00\x00\x01")
    return all(byte in STUFFING_BYTES for byte in rest[: end if end >= 0 else len(rest)])


class PictureCounter:
    """For each MPEG-4 Part 2 packet sent to the decoder, the frames it gives beyond or short of one."""

    def __init__(self, video: Any) -> None:
        self.active = video.codec_context.name == "mpeg4"
        extradata = bytes(video.codec_context.extradata or b"") if self.active else b""
        self.resolution = time_resolution(extradata) if extradata else None
        self.increment_bits = increment_bits_for(self.resolution)
        self.packed_stream = divx_packed(extradata)  # FFmpeg unpacks packed B-frames (DivX's user data says so)
        self.damaged = False  # the last packet's VOP header could not be read

    def not_coded(self, packet: Any, *, after_packed: bool = False) -> int:
        """1 for a packet of only N-VOPs (no frame comes out), -1 for a packed one of two pictures, else 0. A packet
        whose header is damaged is taken for an N-VOP where it follows a packed packet (FFmpeg decodes the B-frame
        held back in its place, whatever it holds) or is no bigger than one (`not_coded_size`)."""
        self.damaged = False
        if not self.active or not packet.size:
            return 0
        data = bytes(packet)
        if packet.is_keyframe or self.increment_bits is None:  # a layer header may come again in a keyframe
            self.resolution = time_resolution(data) or self.resolution
            self.increment_bits = increment_bits_for(self.resolution)
            self.packed_stream = self.packed_stream or divx_packed(data)
        if self.increment_bits is None:
            return 0
        headers = vop_headers(data, self.increment_bits)
        self.damaged = not headers or not all(header.intact for header in headers)
        if self.damaged and (after_packed or packet.size <= not_coded_size(self.increment_bits)):
            return 1
        return 0 if not headers else 1 - sum(header.coded or not header.intact for header in headers)


def not_coded_vop(increment_bits: int) -> bytes:
    """An N-VOP: a P-VOP header at no time past the last reference's second (never read: FFmpeg decodes the packed
    B-frame it holds back in its place), with `vop_coded` 0, and stuffing to a whole byte."""
    header = "01" + "0" + "1" + "0" * increment_bits + "1" + "0"
    header += "0" + "1" * (-(len(header) + 1) % 8)
    return VOP_START + int(header, 2).to_bytes(len(header) // 8, "big")


class EmptyChunks:
    """The zero-length video chunks of an AVI, counted between the packets FFmpeg's demuxer gives: each is a frame
    the file lists and the player holds the one before over. An AVI's video timestamps count its chunks, empty ones
    too, so a packet `step` ticks (one frame) or more past the one before has that many empty chunks between them."""

    def __init__(self, container_format: str, step: int) -> None:
        self.in_avi = "avi" in container_format.split(",")
        self.step = step
        self.last_dts: int | None = None
        self.previous_dts: int | None = None  # the packet's before the last: where the last gap starts

    def before(self, packet: Any) -> int:
        """How many empty chunks came between the video packet before and `packet`."""
        if not self.in_avi or packet.dts is None:
            return 0
        last = self.previous_dts = self.last_dts
        self.last_dts = packet.dts
        if last is None:
            return 0
        slots, rest = divmod(packet.dts - last, self.step)
        return slots - 1 if slots > 1 and not rest else 0
