"""How much an .onnx graph enlarges the image by numbers the file fixes, followed along every path from it.

`GraphGrowth`, asked about each node in the graph's order, tells how many times over the image has grown
on the way to it (Resize and Upsample by constant scales, Tile by constant repeats, Expand to a constant
shape), and how many values a constant Pad has added to an axis of it. The tile plan counts memory per
input pixel: a Resize by 1e5 asked for 1e10 times a tile's memory at the first one, and a Pad of 2000
a side made each 64-feature tile 4 GB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_DIMS", "MAX_GROWTH", "MAX_PAD", "GraphGrowth"]

# How many times over the graph may enlarge the image by constant scales, along any path from it: a srfeat
# model enlarges it 16 times (x4 a side, by DepthToSpace, which only moves values), and other x4 models
# by Resize; 256 (x16 a side) leaves room for x8 ones.
MAX_GROWTH = 256
# Values a graph may add to one axis of the image by constant Pads (both ends together), along any path
# from it. srfeat's exports pad inside their convolutions (no Pad node); other models pad a few pixels
# before each convolution (reflect padding), a few hundred over a deep network. Tiles are 32 pixels a side
# at the least and 256 on a CPU (tiling.py's MIN_TILE, CPU_EFFICIENT_TILE): 1024 makes a 256-pixel tile
# 25 times larger at most, where a Pad of 2000 a side made it 270 times larger (4 GB at 64 features).
MAX_PAD = 1024
# Dimensions (and scales, pads) read of a shape: more than numpy itself takes (64), and fewer than a
# hostile file can declare
MAX_DIMS = 1024


class ConstantValues(Protocol):
    """What `GraphGrowth` asks of the file's constants (`onnx_contents._Constants`)."""

    def values(self, name: str) -> np.ndarray | None: ...

    def shape(self, name: str) -> list[int] | None: ...


class GraphGrowth:
    """How much each value has grown from the image, along the path to it that grew it most: in times over
    (`growth`) and in values padded onto an axis (`padded`)."""

    def __init__(self, constants: ConstantValues) -> None:
        self._constants = constants
        self._growth: dict[str, float] = {}
        self._padded: dict[str, int] = {}
        # Values the graph computes from its input (the image): a name no node made and no constant holds
        # is an input; what a node makes from one is too
        self._made: set[str] = set()
        self._from_image: set[str] = set()

    def growth(self, node: onnx.NodeProto) -> float:
        """How many times over `node` enlarges the image, along the path to it that enlarges it most: the
        values it has grown on the way (its inputs' growth), times a Resize's or Upsample's constant
        scales, or a Tile's constant repeats of a computed value. Each node's own factor counts alone too,
        and an Expand's of the image to a constant shape only alone: its input may have the shape already
        (a [1, 64, 1, 1] on 64 features adds nothing), which would count 64 times over at every such
        broadcast of a deep network. A constant's Expand is counted as such (`_Constants.output_values`)."""
        inputs = list(node.input)
        before = max((self._growth.get(name, 1.0) for name in inputs if name), default=1.0)
        op, factors = node.op_type, None
        if op in ("Resize", "Upsample"):  # scales: second (Upsample, Resize-10), or after Resize's roi
            factors = self._given(inputs, 2 if len(inputs) > 2 else 1, node, "scales")
            factors = factors if factors is not None and factors.dtype.kind == "f" else None
        elif op in ("Tile", "Expand") and len(inputs) > 1 and self._constants.shape(inputs[0]) is None:
            factors = self._constants.values(inputs[1])  # a constant's: `_Constants.output_values`
            factors = factors if factors is not None and factors.dtype.kind == "i" else None
            if op == "Expand" and factors is not None:  # of the image, on its batch and features (not H, W:
                # a model made for one size may expand a map to the size it has)
                factors = factors.ravel()[:-2] if self._is_from_image(inputs[0]) else None
        self._made.update(node.output)
        if any(self._is_from_image(name) for name in inputs if name):
            self._from_image.update(node.output)
        own = 1.0
        for factor in [] if factors is None else factors.ravel()[:MAX_DIMS].astype(np.float64).tolist():
            own *= factor if factor > 0 else 1.0  # nothing (0), or refused by ONNX Runtime (negative, NaN)
            if own > 2**40:  # past any bound, and no overflow
                break
        if op == "Expand":
            return own
        for name in node.output:
            self._growth[name] = before * own
        return max(own, before * own)

    def _is_from_image(self, name: str) -> bool:
        return name in self._from_image or (name not in self._made and self._constants.shape(name) is None)

    def padded(self, node: onnx.NodeProto) -> int:
        """How many values constant Pads have added to one axis of the image (both ends), along the path to
        `node` that added most: each Pad's most on any one axis, summed (on whichever axes: an overcount the
        bound's room allows). Crops (negative pads) take nothing back: what was padded was made."""
        inputs = list(node.input)
        before = max((self._padded.get(name, 0) for name in inputs if name), default=0)
        own = 0
        if node.op_type == "Pad" and inputs and self._constants.shape(inputs[0]) is None:  # a constant's: sized
            pads = self._given(inputs, 1, node, "pads")  # an attribute before opset 11
            if pads is not None and pads.dtype.kind == "i":
                numbers = pads.ravel()[: 2 * MAX_DIMS].astype(np.int64).clip(0, 2**40)
                half = len(numbers) // 2
                own = int((numbers[:half] + numbers[half : 2 * half]).max(initial=0))
        for name in node.output:
            self._padded[name] = before + own
        return before + own

    def _given(self, inputs: list[str], index: int, node: onnx.NodeProto, attribute: str) -> np.ndarray | None:
        """The constant input `index` of `node`, else its attribute `attribute` (ints or floats), else None."""
        if index < len(inputs) and inputs[index]:
            return self._constants.values(inputs[index])
        for each in node.attribute:
            if each.name == attribute:
                return np.asarray(each.floats if each.floats else each.ints)
        return None
