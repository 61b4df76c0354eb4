"""An image's ICC colour profile, kept only where it describes the pixels srfeat writes.

The network sees RGB (or grey), so an image in another colour space comes back in RGB. A CMYK
image (print work, stock photos) carries the profile of its press: its colours are converted
through that profile into sRGB, as a colour-managed viewer would show them, since PIL's plain
conversion ignores the inks (a press's cyan may be a deep blue; PIL makes it (0, 255, 255)). A
profile whose colour space is not that of the pixels written (a CMYK profile on RGB, an RGB one on
grey) is dropped with a warning: a viewer would read the pixels through the wrong profile, or
refuse them. So is a damaged profile (no ICC header), and one over 1 MB (a real one is a few kB):
every read profile passes `profile_for_pixels`. A PNG's profile is compressed, so its size is
known only as it is inflated: PIL refuses the whole file when it inflates past 1 MB, and
`open_image_file` then opens it again without the profile; `srfeat.data.png16` inflates no more.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageCms, PngImagePlugin

__all__ = [
    "MAX_ICC_PROFILE_BYTES",
    "READ_FORMATS",
    "cmyk_to_srgb",
    "inflated_size",
    "is_cmyk_profile",
    "is_rgb_profile",
    "open_image_data",
    "open_image_file",
    "other_colour_space",
    "profile_for_pixels",
    "warn_damaged_profile",
    "warn_oversized_profile",
]

logger = logging.getLogger(__name__)

# PIL's bound on a decompressed PNG text or profile chunk (PngImagePlugin.MAX_TEXT_CHUNK), for
# every format: a real ICC profile is a few kB, rarely more than a few hundred.
MAX_ICC_PROFILE_BYTES = 1 << 20
# How far an oversized PNG profile is inflated to say its size (PngImagePlugin.MAX_TEXT_MEMORY).
_MEASURED_BYTES = 64 << 20
_DROPPED = "it is dropped and the pixels are read as sRGB"

# An ICC profile's header names the colour space of the data it describes at bytes 16..20; bytes
# 36..40 hold the signature every profile has.
_HEADER_BYTES = 128
_SPACES = {b"RGB ": "RGB", b"GRAY": "grey", b"CMYK": "CMYK", b"Lab ": "Lab", b"YCbr": "YCbCr"}


def _damage(profile: bytes) -> str | None:
    """Why `profile` is no ICC profile at all, or None when its header is sound."""
    if len(profile) < _HEADER_BYTES:
        return f"{len(profile)} bytes, shorter than the {_HEADER_BYTES}-byte ICC header"
    if profile[36:40] != b"acsp":
        return "its header lacks the 'acsp' signature of an ICC profile"
    space = profile[16:20]
    if space not in _SPACES and not (space.isascii() and space.strip().isalnum()):
        return f"its header names no colour space (bytes 16-19 are {space.hex(' ')})"
    return None


def _colour_space(profile: bytes) -> str:
    """The colour space a sound profile's header names: RGB, grey, CMYK, Lab, XYZ..."""
    space = profile[16:20]
    return _SPACES.get(space, space.decode("ascii", "replace").strip())


def is_cmyk_profile(profile: bytes | None) -> bool:
    return profile is not None and _damage(profile) is None and _colour_space(profile) == "CMYK"


def is_rgb_profile(profile: bytes | None) -> bool:
    return profile is not None and _damage(profile) is None and _colour_space(profile) == "RGB"


def warn_oversized_profile(path: str | os.PathLike[str], size: int) -> None:
    """The one warning for a profile over `MAX_ICC_PROFILE_BYTES` (`size`: its bytes, or more when
    it is over `_MEASURED_BYTES`, a decompression bomb)."""
    if size > _MEASURED_BYTES:
        amount = f"inflates to more than {_MEASURED_BYTES >> 20} MB (a decompression bomb?)"
    else:
        amount = f"is {size:,} bytes, over srfeat's {MAX_ICC_PROFILE_BYTES >> 20} MB limit (a real one is a few kB)"
    logger.warning("%s: its ICC profile %s; %s", path, amount, _DROPPED)


def warn_damaged_profile(path: str | os.PathLike[str], reason: object) -> None:
    logger.warning("%s: its ICC profile is damaged (%s); %s", path, reason, _DROPPED)


def inflated_size(compressed: bytes) -> int:
    """How many bytes zlib data inflates to, counted in 64 kB pieces that are not kept: the count
    stops past `_MEASURED_BYTES` (a bomb costs little), and damaged data counts as far as it goes."""
    inflater, size, rest = zlib.decompressobj(), 0, compressed
    try:
        while rest and size <= _MEASURED_BYTES:
            size += len(inflater.decompress(rest, 1 << 16))
            rest = inflater.unconsumed_tail
        if not rest:
            size += len(inflater.flush())  # what zlib holds of the input taken: a few hundred bytes at most
    except zlib.error:
        pass
    return size


def _without_icc_chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    """A PNG file's bytes without its iCCP chunks (every other chunk byte for byte, CRC included),
    and those chunks' compressed profiles."""
    kept, profiles, position = [data[:8]], [], 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, end = data[position + 4 : position + 8], position + 12 + length
        if kind == b"iCCP":
            body = data[position + 8 : position + 8 + length]
            profiles.append(body[body.find(b"\0") + 2 :])
        else:
            kept.append(data[position:end])
        position = end
        if kind == b"IEND":
            break
    kept.append(data[position:])  # whatever follows, as PIL would meet it
    return b"".join(kept), profiles


# The formats srfeat reads (the README's; `srfeat.data.io.IMAGE_EXTENSIONS`), as PIL names them. PIL's
# other readers are never tried, whatever a file's name: its EPS reader runs Ghostscript, a program
# outside Python, on the file (a dataset's `photo.png` may be PostScript), and the rarer ones are less
# tried on hostile files.
READ_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF", "AVIF", "PPM", "TGA")


def _read_formats(formats: list[str] | None) -> list[str]:
    """`formats` (default `READ_FORMATS`) less those this PIL was built without (AVIF, say)."""
    Image.init()  # registers every plugin, so that the test below sees them all
    return [
        image_format for image_format in (READ_FORMATS if formats is None else formats) if image_format in Image.OPEN
    ]


def open_image_file(path: Path, *, warn: bool = True) -> Image.Image:
    """`Image.open(path)` for the `READ_FORMATS`, but a PNG whose ICC profile PIL refuses to inflate
    (over 1 MB, its ValueError naming `PngImagePlugin.MAX_TEXT_CHUNK`) is opened again without the
    profile, with a warning giving its size; and one whose profile does not inflate at all, which PIL
    drops without a word, is said to be damaged. Nothing else PIL checks is relaxed: damaged chunks and
    truncated pixels still fail. `warn` False: the file's size only is wanted, and its reading will warn."""
    formats = _read_formats(None)
    return _open_keeping_pixels(lambda: Image.open(path, formats=formats), path.read_bytes, path, warn)


def open_image_data(data: bytes, name: str, formats: list[str] | None = None, *, warn: bool = True) -> Image.Image:
    """`open_image_file` for a file's bytes (an upload), known by `name`; `formats` as `Image.open`'s
    (default `READ_FORMATS`); `warn` False for a file whose dropped profile was already named."""
    formats = _read_formats(formats)
    return _open_keeping_pixels(lambda: Image.open(io.BytesIO(data), formats=formats), lambda: data, name, warn)


def _open_keeping_pixels(
    open_as_is: Callable[[], Image.Image], data: Callable[[], bytes], name: str | Path, warn: bool = True
) -> Image.Image:
    try:
        image = open_as_is()
    except ValueError as error:
        if "MAX_TEXT_CHUNK" not in str(error):
            raise
        stripped, profiles = _without_icc_chunks(data())
        if not profiles:  # a text chunk over the bound: refused, in words for its user (PIL's name a constant)
            raise ValueError(
                f"its text (a PNG zTXt or iTXt chunk) inflates to more than {PngImagePlugin.MAX_TEXT_CHUNK >> 20} MB, "
                "far beyond any picture's notes (a decompression bomb?)"
            ) from error
        image = Image.open(io.BytesIO(stripped), formats=["PNG"])
        if warn:
            warn_oversized_profile(name, inflated_size(profiles[0]))
        return image
    if warn and image.format == "PNG" and "icc_profile" in image.info and image.info["icc_profile"] is None:
        warn_damaged_profile(name, "its iCCP chunk does not inflate")  # PIL's zlib.error, caught and dropped
    return image


def cmyk_to_srgb(image: Image.Image, profile: bytes | None, path: Path) -> tuple[Image.Image, bytes | None]:
    """A CMYK image as RGB, through its own CMYK profile into sRGB when it has one; and the profile
    that goes with the RGB pixels (None: sRGB, as untagged RGB is read)."""
    if profile is None or not is_cmyk_profile(profile):
        return image.convert("RGB"), profile
    try:
        press = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(image, press, ImageCms.createProfile("sRGB"), outputMode="RGB")
        if converted is None:  # only with inPlace=True
            raise ValueError("no image came back")
        return converted, None
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        logger.warning(
            "%s: its CMYK colour profile cannot be used (%s); its colours are converted without it", path, error
        )
        return image.convert("RGB"), profile


def profile_for_pixels(profile: bytes | None, channels: int, path: str | os.PathLike[str]) -> bytes | None:
    """`profile` if it is sound, at most 1 MB, and describes pixels of `channels` channels (1-2: grey,
    3-4: RGB); else None, with one warning saying why. Every profile read passes here."""
    if not profile:
        return None
    if len(profile) > MAX_ICC_PROFILE_BYTES:
        warn_oversized_profile(path, len(profile))
        return None
    damage = _damage(profile)
    if damage is not None:
        warn_damaged_profile(path, damage)
        return None
    return None if other_colour_space(profile, channels, path) else profile


def other_colour_space(profile: bytes, channels: int, path: str | os.PathLike[str]) -> bool:
    """True, with a warning, when the sound `profile` describes another colour space than pixels of
    `channels` channels have (1-2: grey, 3-4: RGB): a viewer would read them through the wrong one."""
    expected = "grey" if channels <= 2 else "RGB"
    found = _colour_space(profile)
    if _damage(profile) is not None or found == expected:
        return False
    logger.warning(
        "%s: its colour profile describes %s colours, not the %s pixels srfeat writes; the profile is dropped",
        path,
        found,
        expected,
    )
    return True
