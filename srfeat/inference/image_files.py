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

from srfeat.data.io import FORMATS, read_raw_image, write_image
from srfeat.errors import SRFeatError
from srfeat.inference.upscaler import Upscaler

__all__ = ["output_extension", "upscale_file"]


def output_extension(source: str | os.PathLike[str], extension: str | None = None) -> str:
    """The output file's extension: `extension` if given, else the input's own when it is a
    format we write, else `.png` (an input format we read but do not write)."""
    chosen = (extension or Path(source).suffix).lower()
    return chosen if chosen in FORMATS else ".png"


def upscale_file(
    upscaler: Upscaler,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    outscale: float | None = None,
    replace: bool = True,
) -> tuple[int, int]:
    """Upscale the image file `source` into `target`; returns the output's (width, height).

    With `replace` False an existing `target` is kept, even one that appeared while `source` was
    upscaled: `srfeat.files.OutputExistsError` (an `SRFeatError`) says so.

    Raises `ImageReadError` when `source` cannot be read, another `SRFeatError` when it cannot
    be upscaled (a model whose output is not finite, say), and `OSError` when `target` cannot
    be written (the target then does not exist: it is written to a temporary name and renamed).
    """
    extension = Path(target).suffix
    if extension.lower() not in FORMATS:  # found now, not after the network has run
        known = ", ".join(sorted(FORMATS))
        raise SRFeatError(f"cannot write {target}: unknown image extension {extension!r}; use one of {known}")
    raw = read_raw_image(source)
    result = upscaler.upscale_array(raw.array, outscale=outscale)
    write_image(target, result, icc_profile=raw.icc_profile, exif=raw.exif, replace=replace)
    return int(result.shape[1]), int(result.shape[0])
