"""GIF files checked where PIL's reader lets a damaged one through: a first frame placed outside the file's logical
screen. PIL grows the picture to take in the first frame wherever it lies (a GIF of a 0x0 screen, as some writers
make, needs that), so a 40x28 GIF whose frame's top was made 65535 was read as 40x65563 pixels of background with
the frame at its foot, and upscaled for minutes, without a word. `frame_outside_screen` reads the file's header and
blocks up to its first image descriptor, before PIL opens it.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

__all__ = ["frame_outside_screen"]

_SIGNATURES = (b"GIF87a", b"GIF89a")
_EXTENSION, _IMAGE = 0x21, 0x2C
_MOST_BLOCKS = 10_000  # extensions before the first frame (comments, application data): a file of more is left to PIL


def frame_outside_screen(path: str | os.PathLike[str]) -> str | None:
    """What is wrong when the first frame of the GIF at `path` starts outside its logical screen (its left edge past
    the screen's width, or its top past its height); None when it starts inside it, when the screen is empty (the
    frame sets the size), and for any other file."""
    try:
        with open(path, "rb") as file:
            head = file.read(13)
            if len(head) < 13 or head[:6] not in _SIGNATURES:
                return None
            screen_width, screen_height, flags = struct.unpack("<HHB", head[6:11])
            if flags & 0x80:  # the global colour table: 3 bytes a colour
                file.seek(3 << ((flags & 7) + 1), os.SEEK_CUR)
            position = _first_frame_position(file)
    except (OSError, struct.error):  # unreadable or malformed: PIL's reader says so
        return None
    if position is None or not screen_width or not screen_height:
        return None
    left, top = position
    if left < screen_width and top < screen_height:
        return None
    return f"its first frame is placed at ({left}, {top}), outside its {screen_width}x{screen_height} screen (damaged?)"


def _first_frame_position(file: BinaryIO) -> tuple[int, int] | None:
    """(left, top) of the first image descriptor from `file`'s position (past the header and colour table); None
    where the blocks end, or are not GIF's, before one."""
    for _ in range(_MOST_BLOCKS):
        introducer = file.read(1)
        if introducer == bytes([_IMAGE]):
            descriptor = file.read(4)
            return struct.unpack("<HH", descriptor) if len(descriptor) == 4 else None
        if introducer != bytes([_EXTENSION]) or not file.read(1):  # the trailer, the file's end, or no block
            return None
        while length := file.read(1):  # the extension's sub-blocks, to the one of length 0
            if not length[0]:
                break
            file.seek(length[0], os.SEEK_CUR)
        else:
            return None
    return None
