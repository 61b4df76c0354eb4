"""An image's ICC colour profile, kept only where it describes the pixels srfeat writes.

The network sees RGB (or grey), so an image in another colour space comes back in RGB. A CMYK
image (print work, stock photos) carries the profile of its press: its colours are converted
through that profile into sRGB, as a colour-managed viewer would show them, since PIL's plain
conversion ignores the inks (a press's cyan may be a deep blue; PIL makes it (0, 255, 255)). A
profile whose colour space is not that of the pixels written (a CMYK profile on RGB, an RGB one on
grey) is dropped with a warning: a viewer would read the pixels through the wrong profile, or
refuse them.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image, ImageCms

__all__ = ["cmyk_to_srgb", "is_cmyk_profile", "profile_for_pixels"]

logger = logging.getLogger(__name__)

# An ICC profile's header names the colour space of the data it describes at bytes 16..20.
_SPACES = {b"RGB ": "RGB", b"GRAY": "grey", b"CMYK": "CMYK", b"Lab ": "Lab", b"YCbr": "YCbCr"}


def _colour_space(profile: bytes) -> str:
    return _SPACES.get(profile[16:20], repr(profile[16:20])) if len(profile) >= 128 else "no colour space"


def is_cmyk_profile(profile: bytes | None) -> bool:
    return profile is not None and _colour_space(profile) == "CMYK"


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


def profile_for_pixels(profile: bytes | None, channels: int, path: Path) -> bytes | None:
    """`profile` if it describes pixels of `channels` channels (1-2: grey, 3-4: RGB), else None, with a warning."""
    if not profile:
        return None
    expected = "grey" if channels <= 2 else "RGB"
    found = _colour_space(profile)
    if found == expected:
        return profile
    logger.warning(
        "%s: its colour profile describes %s colours, not the %s pixels srfeat writes; the profile is dropped",
        path,
        found,
        expected,
    )
    return None
