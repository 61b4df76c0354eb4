"""How far an .onnx graph's output sees into the image, from its convolutions: the receptive radius its tiles must
overlap by to be exact, which a srfeat export's metadata states (`receptive_radius`) and a crafted file may understate
(tiles with seams).

`GraphReach`, told each node in the graph's order, follows every path from the image: each convolution or pooling
window adds (k - 1) / 2 times its dilation of its input's pixels, which are fewer than the image's after an
enlargement (a 3x3 convolution after a x2 DepthToSpace sees half an input pixel a side; srfeat's x4 export: 4 for its
9x9 head, 2 per residual block, 1 + 0.5 + 0.25 for its upsampling and tail, 37.75 in all, 38 stated) and more after a
stride (a 3x3 convolution after a stride of 2 sees 2). A Resize reads a pixel a side of its input (2 for a cubic
one, none for a nearest one that enlarges). Enlargements followed: DepthToSpace by its block size, Resize and
Upsample by constant scales, a ConvTranspose by its strides; a Resize to sizes the graph computes is counted as no
enlargement, so what comes after it counts more than it sees (a bound, not an understatement). Not counted: what
attention, a global pooling or a reduction over the pixels sees (the whole tile: such a model's tiles are not exact
whatever they overlap by).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from srfeat.inference.onnx_shape_types import MAX_DIMS, ConstantValues

if TYPE_CHECKING:
    import onnx

__all__ = ["GraphReach"]

# Windowed operators whose kernel adds to the reach: its `kernel_shape`, or (a Conv's) its weight's last sizes
_WINDOWED = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"})
# What a reach or a scale may grow to here: past any bound the runner takes, and no overflow
_MOST = 2.0**40


class GraphReach:
    """The reach, in the image's pixels, of each value made from it, along the path that reaches farthest; and how
    many of its own pixels a pixel of the image is there (its side's scale: 2 after a x2 enlargement)."""

    def __init__(self, constants: ConstantValues, image_inputs: Iterable[str]) -> None:
        self._constants = constants
        self._reach: dict[str, tuple[float, float]] = {name: (0.0, 1.0) for name in image_inputs}
        self.radius = 0.0  # the farthest any value reaches

    def note(self, node: onnx.NodeProto) -> None:
        """Note how far `node`'s outputs reach, where an input of it is made from the image."""
        followed = [self._reach[name] for name in node.input if name in self._reach]
        if not followed:
            return
        op, options = node.op_type, {each.name: each for each in node.attribute}
        reach = max(each[0] for each in followed)
        side = min(each[1] for each in followed)  # the fewest pixels of its own: the most each of them reaches
        if op in _WINDOWED:
            reach += self._window_reach(node) / side
            strides = list(options["strides"].ints) if "strides" in options else []
            largest, least = max(strides[:MAX_DIMS], default=1), min(strides[:MAX_DIMS], default=1)
            if least > 0:  # else refused by ONNX Runtime
                side = side * least if op == "ConvTranspose" else side / largest
        elif op in ("DepthToSpace", "SpaceToDepth") and "blocksize" in options and options["blocksize"].i > 0:
            side = side * options["blocksize"].i if op == "DepthToSpace" else side / options["blocksize"].i
        elif op in ("Resize", "Upsample"):
            mode = options["mode"].s if "mode" in options else b"nearest"
            scale = self._least_scale(node)
            reads = {b"nearest": 0.0, b"cubic": 2.0}.get(mode, 1.0)  # an enlarging nearest one, only its own pixel
            reach += max(reads, 1.0 if scale < 1 else 0.0) * max(1.0, 1.0 / scale) / side
            side *= scale
        reach, side = min(reach, _MOST), min(max(side, 1 / _MOST), _MOST)
        self.radius = max(self.radius, reach)
        for name in node.output:
            if name:
                self._reach[name] = (reach, side)

    def _window_reach(self, node: onnx.NodeProto) -> float:
        """How many of its input's pixels a window of `node` reaches a side: (k - 1) / 2 times its dilation, the most of
        its axes; 0 where its kernel is not known (refused by ONNX Runtime)."""
        options = {each.name: each for each in node.attribute}
        kernel = list(options["kernel_shape"].ints)[:MAX_DIMS] if "kernel_shape" in options else None
        if kernel is None and len(node.input) > 1 and (weight := self._constants.shape(node.input[1])) is not None:
            kernel = weight[2:MAX_DIMS]
        dilations = list(options["dilations"].ints)[:MAX_DIMS] if "dilations" in options else []
        dilations += [1] * (len(kernel or []) - len(dilations))
        spans = [(size - 1) / 2 * max(dilation, 1) for size, dilation in zip(kernel or [], dilations, strict=False)]
        return min(max(spans, default=0.0), _MOST)

    def _least_scale(self, node: onnx.NodeProto) -> float:
        """The least constant scale a Resize or Upsample gives the last two axes (the height and width); 1 where its
        scales are not constants (sizes the graph computes)."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        index = 2 if len(inputs) > 2 else 1  # after Resize's roi; Upsample's and Resize-10's second
        scales = self._constants.values(inputs[index]) if index < len(inputs) and inputs[index] else None
        if scales is None and "scales" in options:  # Upsample-7's attribute
            given = list(options["scales"].floats)[:MAX_DIMS]
        elif scales is not None and scales.dtype.kind == "f" and 2 <= scales.size <= MAX_DIMS:
            given = scales.ravel().tolist()
        else:
            return 1.0
        least = min(given[-2:], default=1.0)
        return least if math.isfinite(least) and least > 0 else 1.0
