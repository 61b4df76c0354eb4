"""Upscaling one image file to another: the path `srfeat upscale` and `srfeat serve` share.

The input is read as stored (mode, bit depth, alpha, ICC profile, EXIF with the orientation
applied), upscaled, and written in the output's format keeping all of that where the format
can hold it (`srfeat.data.io.write_image`; what it cannot hold is converted, with a warning: every
pixel layout can be written in every output format, so no upscale is lost to a mode the format
lacks). Having one function means the web app's download and the command line's file are the
same bytes for the same input and options.
"""

from __future__ import annotations

import os
from pathlib import Path

from srfeat.data.io import FORMATS, RawImage, read_raw_image, write_image
from srfeat.errors import InvalidOptionError, SRFeatError, check_flag, shown
from srfeat.files import refuse_existing, refuse_output_is_input
from srfeat.inference.checks import check_outscale
from srfeat.inference.upscaler import Upscaler
from srfeat.path_checks import unwritable_file
from srfeat.weights import as_path

__all__ = ["MAX_SIDE", "output_extension", "over_format_limit", "upscale_file", "upscale_read_image"]

# The most pixels per side of the output formats that have a limit below what srfeat makes (libwebp's
# 16383, libjpeg's 65500; PNG, TIFF and BMP hold more): past it the encoder fails, and only after the
# whole upscale.
MAX_SIDE = {".webp": ("WebP", 16383), ".jpg": ("JPEG", 65500), ".jpeg": ("JPEG", 65500)}


def output_extension(source: str | os.PathLike[str], extension: str | None = None) -> str:
    """The output file's extension: `extension` if given, else the input's own when it is a
    format we write, else `.png` (an input format we read but do not write)."""
    chosen = (extension or Path(source).suffix).lower()
    return chosen if chosen in FORMATS else ".png"


def over_format_limit(extension: str, width: int, height: int) -> str | None:
    """Why a `width`x`height` image cannot be written as `extension` ("over WebP's limit of 16383
    pixels per side"), or None when it can."""
    kind, most = MAX_SIDE.get(extension.lower(), ("", 0))
    if not most or max(width, height) <= most:
        return None
    return f"over {kind}'s limit of {most} pixels per side"


def upscale_file(
    upscaler: Upscaler,
    source: str | bytes | os.PathLike[str],
    target: str | bytes | os.PathLike[str],
    outscale: float | None = None,
    replace: bool = True,
    *,
    command_line: bool = False,
) -> tuple[int, int]:
    """Upscale the image file `source` into `target`; returns the output's (width, height).

    With `replace` False an existing `target` is kept, even one that appeared while `source` was
    upscaled: `srfeat.files.OutputExistsError` (an `SRFeatError`) says so, before `source` is read
    for one that was there. `replace` is True or False, `outscale` None or a number in (0, 16], and
    `upscaler` an `Upscaler` (else `srfeat.errors.InvalidOptionError`, or `InvalidImageError` for
    the outscale, as `Upscaler` gives). A `target` that is `source`
    itself (another spelling, a symbolic or hard link to it) is never written, `replace` or not:
    `srfeat.files.OutputIsInputError`, before `source` is read.

    Raises `ImageReadError` when `source` cannot be read, another `SRFeatError` when it cannot
    be upscaled (a model whose output is not finite, say) or `target` cannot be made (a file where
    its folder would be, a folder we may not write in: found before `source` is read), and `OSError`
    when the write fails (the target then does not exist: it is written to a temporary name and renamed).
    Paths are str, bytes or path-like (`~` expanded), as `upscale_video`'s. Messages name these
    keywords (`replace=True`, `outscale`); `command_line` (`srfeat upscale`'s) names its flags instead.
    """
    # replace="no" replaced the file (a string is true), an outscale of "2" was a TypeError from round()
    # and a name as the upscaler an AttributeError, each after the image was read
    replace = check_flag(replace, "replace")
    if not isinstance(upscaler, Upscaler):
        raise InvalidOptionError(
            f"upscaler must be an srfeat.Upscaler (e.g. Upscaler('default')), got {type(upscaler).__name__} "
            f"{shown(upscaler)}"
        )
    check_outscale(outscale)
    # `~/photo.png` was looked for in a folder named `~`, a bytes path was a TypeError from pathlib
    source, target = as_path(source, "the image"), as_path(target, "the output image")
    refuse_output_is_input(source, target)
    extension = target.suffix
    if extension.lower() not in FORMATS:  # found now, not after the network has run
        known = ", ".join(sorted(FORMATS))
        raise SRFeatError(f"cannot write {target}: unknown image extension {shown(extension)}; use one of {known}")
    if target.is_dir() and not target.is_symlink():  # the final rename would fail after the upscale
        raise SRFeatError(f"cannot write {target}: a folder of that name exists; give another output name")
    if problem := unwritable_file(target):  # `x.jpg/out.png`: a bare FileExistsError, after the upscale
        raise SRFeatError(f"cannot write {target}: {problem}; give another {'-o' if command_line else 'target'}")
    # now: the write's own refusal would come after the upscale
    refuse_existing(target, replace, command_line=command_line)
    return upscale_read_image(
        upscaler, read_raw_image(source), target, outscale, replace=replace, command_line=command_line
    )


def upscale_read_image(
    upscaler: Upscaler,
    raw: RawImage,
    target: Path,
    outscale: float | None = None,
    *,
    replace: bool = True,
    command_line: bool = False,
) -> tuple[int, int]:
    """The second half of `upscale_file`, from the image as read (`read_raw_image`) to the written `target`, whose
    name `upscale_file` checked; for `srfeat serve`, which picks the result's format from what was read."""
    height, width = upscaler.output_size(raw.array.shape[0], raw.array.shape[1], outscale, command_line=command_line)
    if problem := over_format_limit(target.suffix, width, height):  # found now, not after the network has run
        way_out = (
            "(--ext png, or an -o file name ending in .png), or lower --outscale"
            if command_line
            else "(a target name ending in .png), or lower outscale"
        )
        raise SRFeatError(
            f"cannot write {target}: the result would be {width}x{height}, {problem}; write it as PNG or TIFF {way_out}"
        )
    result = upscaler.upscale_array(raw.array, outscale=outscale)
    write_image(target, result, icc_profile=raw.icc_profile, exif=raw.exif, replace=replace, command_line=command_line)
    return int(result.shape[1]), int(result.shape[0])
