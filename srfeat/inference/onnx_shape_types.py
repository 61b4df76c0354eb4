"""What the modules that follow an .onnx graph's shapes share: the sizes of a value's axes, a shape's entries, the
file's constants as they ask for them."""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["LEAST_TILE_PIXELS", "LEAST_TILE_SIDE", "MAX_DIMS", "ConstantValues", "Dims", "Entry"]

# Dimensions (and scales, pads) read of a shape: more than numpy itself takes (64), and fewer than a
# hostile file can declare
MAX_DIMS = 1024
# The side of the least tile srfeat cuts (tiling.py's MIN_TILE), and its pixels: a value of a size the file does not
# fix, that may be all a tile's pixels (or grows with the tile's side), counts as this many at least
LEAST_TILE_SIDE = 32
LEAST_TILE_PIXELS = LEAST_TILE_SIDE * LEAST_TILE_SIDE

# Sizes of a value's axes, None where the file does not fix one
Dims = list[int | None]
# An entry of a shape computed from the image's (`ShapeVectors`): a factor times the size of an axis of a
# value made from the image, plus a constant; a factor of 0 where it is a constant alone
Entry = tuple[float, float]


class ConstantValues(Protocol):
    """What `GraphGrowth` asks of the file's constants (`onnx_constants.FileConstants`)."""

    def values(self, name: str) -> np.ndarray | None: ...

    def shape(self, name: str) -> list[int] | None: ...
