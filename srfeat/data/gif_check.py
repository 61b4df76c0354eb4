"""GIF files checked where PIL's reader lets a damaged one through: a first frame placed outside the file's logical
screen. PIL grows the picture to take in the first frame wherever it lies (a GIF of a 0x0 screen, as some writers
make, needs that), so a 40x28 GIF whose frame's top was made 65535 was read as 40x65563 pixels of background with
the frame at its foot, and upscaled for minutes, without a word. `frame_outside_screen` reads the file's header and
blocks up to its first image descriptor, before PIL opens it; `first_frame_covers_little` names (for a warning) a
first frame inside the screen that covers little of it, as a damaged screen size leaves it.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

__all__ = ["first_frame_covers_little", "frame_outside_screen"]

_SIGNATURES = (b"GIF87a", b"GIF89a")
_EXTENSION, _IMAGE = 0x21, 0x2C
_MOST_BLOCKS = 10_000  # extensions before the first frame (comments, application data): a file of more is left to PIL


# The first frame's share of the screen under which the rest, read as background, is said: a screen's width made
# 65535 from 40 (a damaged byte) had a 40x28 picture upscaled as 65535x28 for minutes, without a word. A sticker's
# first frame cropped to what it shows (gifsicle does so) covers far more than this.
_LEAST_COVERED = 1 / 16


def frame_outside_screen(path: str | os.PathLike[str]) -> str | None:
    """What is wrong when the first frame of the GIF at `path` starts outside its logical screen (its left edge past
    the screen's width, or its top past its height); None when it starts inside it, when the screen is empty (the
    frame sets the size), and for any other file."""
    if (layout := _screen_and_first_frame(path)) is None:
        return None
    (screen_width, screen_height), (left, top, _, _) = layout
    if left < screen_width and top < screen_height:
        return None
    return f"its first frame is placed at ({left}, {top}), outside its {screen_width}x{screen_height} screen (damaged?)"


def first_frame_covers_little(path: str | os.PathLike[str]) -> str | None:
    """What to warn of when the first frame of the GIF at `path` covers under `_LEAST_COVERED` of its screen (the
    rest is read as background); None otherwise, and for any other file."""
    if (layout := _screen_and_first_frame(path)) is None:
        return None
    (screen_width, screen_height), (_, _, width, height) = layout
    covered = min(width, screen_width) * min(height, screen_height)
    if covered >= _LEAST_COVERED * screen_width * screen_height:
        return None
    return (
        f"its first frame covers {width}x{height} of its {screen_width}x{screen_height} screen, and the rest is read "
        "as background (a damaged screen size?)"
    )


def _screen_and_first_frame(path: str | os.PathLike[str]) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    """The GIF at `path`'s screen size and its first frame's left, top, width and height; None for a screen of no
    size (the frame sets it), no frame found, and any other file."""
    try:
        with open(path, "rb") as file:
            head = file.read(13)
            if len(head) < 13 or head[:6] not in _SIGNATURES:
                return None
            screen_width, screen_height, flags = struct.unpack("<HHB", head[6:11])
            if flags & 0x80:  # the global colour table: 3 bytes a colour
                file.seek(3 << ((flags & 7) + 1), os.SEEK_CUR)
            frame = _first_frame(file)
    except (OSError, struct.error):  # unreadable or malformed: PIL's reader says so
        return None
    if frame is None or not screen_width or not screen_height:
        return None
    return (screen_width, screen_height), frame


def _first_frame(file: BinaryIO) -> tuple[int, ...] | None:
    """(left, top, width, height) of the first image descriptor from `file`'s position (past the header and colour
    table); None where the blocks end, or are not GIF's, before one."""
    for _ in range(_MOST_BLOCKS):
        introducer = file.read(1)
        if introducer == bytes([_IMAGE]):
            descriptor = file.read(8)
            return struct.unpack("<HHHH", descriptor) if len(descriptor) == 8 else None
        if introducer != bytes([_EXTENSION]) or not file.read(1):  # the trailer, the file's end, or no block
            return None
        while length := file.read(1):  # the extension's sub-blocks, to the one of length 0
            if not length[0]:
                break
            file.seek(length[0], os.SEEK_CUR)
        else:
            return None
    return None
