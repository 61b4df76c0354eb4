"""Self-ensemble (EDSR's "+", Lim et al. 2017): the mean of the eight flips and rotations.

The image is upscaled in each of the eight orientations of the square's symmetry group (four
rotations by 90 degrees, each with and without a mirror), each result turned back, and the
eight averaged. A network trained with flips and rotations makes slightly different errors in
each orientation, and the average cancels part of them: about +0.1 dB for eight times the
work. Each pass goes through the caller's upscaling function unchanged, tiles included.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ORIENTATIONS", "self_ensemble"]

# (quarter turns, mirror): the eight elements of the dihedral group D4.
ORIENTATIONS: tuple[tuple[int, bool], ...] = tuple((turns, mirror) for mirror in (False, True) for turns in range(4))


def _orient(image: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """Mirror (left-right), then rotate by `turns` quarter turns, on the last two dimensions."""
    if mirror:
        image = image.flip(-1)
    return image.rot90(turns, dims=(-2, -1)) if turns else image


def _unorient(image: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    """The inverse of `_orient`: rotate back, then mirror back."""
    if turns:
        image = image.rot90(-turns, dims=(-2, -1))
    return image.flip(-1) if mirror else image


# Rows of the running sum added at once: the turned-back band of a pass's result is copied, not the result.
BAND_ROWS = 64


def _unoriented_rows(image: torch.Tensor, turns: int, mirror: bool, start: int, stop: int) -> torch.Tensor:
    """`_unorient(image, turns, mirror)[..., start:stop, :]`, turning back only the part of `image` it needs.

    torch's `rot90(x, -turns)` is `x.flip(-2).transpose(-2, -1)` for one turn, `x.flip(-2, -1)`
    for two and `x.flip(-1).transpose(-2, -1)` for three: rows of the result are columns (or
    rows, counted from the other end) of `image`.
    """
    height, width = image.shape[-2:]
    if turns == 0:
        rows = image[..., start:stop, :]
    elif turns == 1:
        rows = image[..., :, start:stop].flip(-2).transpose(-2, -1)
    elif turns == 2:
        rows = image[..., height - stop : height - start, :].flip(-2, -1)
    else:
        rows = image[..., :, width - stop : width - start].flip(-1).transpose(-2, -1)
    return rows.flip(-1) if mirror else rows


def self_ensemble(
    upscale: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean of `upscale` over the eight orientations of `image` ((C, H, W) or (N, C, H, W)).

    The running sum is kept in `out` if given (the colour channels of an RGBA output, say), else
    in a copy of the first pass's result; each other pass's result is turned back and added a
    band of rows at a time. The memory is that of two outputs, not nine; turning results back
    whole took two more (a 4000x4000 RGB result's 192 MB each). The sums are the same, added in
    the same order.
    """
    total: torch.Tensor | None = None
    for turns, mirror in ORIENTATIONS:
        result = upscale(_orient(image, turns, mirror).contiguous())
        if total is None:  # ORIENTATIONS starts with the identity: nothing to turn back
            total = result.clone() if out is None else out.copy_(result)
        else:
            for start in range(0, total.shape[-2], BAND_ROWS):
                stop = min(start + BAND_ROWS, total.shape[-2])
                total[..., start:stop, :].add_(_unoriented_rows(result, turns, mirror, start, stop))
        del result  # before the next pass makes its own
    assert total is not None
    return total.div_(len(ORIENTATIONS))
