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


def self_ensemble(upscale: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """The mean of `upscale` over the eight orientations of `image` ((C, H, W) or (N, C, H, W)).

    One running sum of the output's size is kept, so the memory is that of two outputs, not
    nine.
    """
    total: torch.Tensor | None = None
    for turns, mirror in ORIENTATIONS:
        result = _unorient(upscale(_orient(image, turns, mirror).contiguous()), turns, mirror)
        total = result.clone() if total is None else total.add_(result)
    assert total is not None
    return total.div_(len(ORIENTATIONS))
