"""How much an .onnx graph enlarges the image by numbers the file fixes, followed along every path from it.

`GraphGrowth`, asked about each node in the graph's order, tells how many times over the image has grown
on the way to it (Resize and Upsample by constant scales or to sizes computed as the image's shape times
constants, ConvTranspose by its strides, Tile by constant repeats, Expand to a constant shape where the
image's size there is not known to be that already, or to new axes of its height or width, Concat of the image
with itself, the image's values broadcast against each other (a column of them by a row: `crossed_growth`); a
Scatter's output as the value it writes into), and how many values constant Pads have added to an axis of it
(`onnx_padding`; a convolution's own pads and a ConvTranspose's kernel beyond its stride too; a later Resize
enlarging them). The tile plan counts memory per input pixel: a Resize by 1e5 asked for 1e10 times a tile's
memory at the first one, and a Pad of 2000 a side made each 64-feature tile 4 GB.

It also tells how many values per pixel of the image a convolution's output features make (`features`): its
weight fixes how many, and a 1x1 Conv (or a depthwise one) of 3 to a million features is a few MB of weights
that asked ONNX Runtime for terabytes on a photo. What a Concat or an Expand adds to them counts with them, and
a MatMul, Gemm or Einsum by a weight (a Linear layer, a 1x1 convolution written as an Einsum) multiplies them as
its weight does. A weight the graph computes from the image (a blind model's kernels) counts by its shape where
the file fixes every size of it, and makes features without bound (`math.inf`) where not.

Not followed (so not counted): shapes computed otherwise than `ShapeVectors` (`onnx_shapes`) says, DepthToSpace
(which only moves values), values computed from the image's shape alone broadcast against each other (a Range of its
rows beside one of its columns: the index grid of a ScatterND, PyTorch's slice assignment), values whose sizes the
file does not follow broadcast together. A Resize's constant height or width beside computed ones, or a constant
added to one, counts as pads. A MatMul of two values made from the image (attention's Q K^T) counts as the sizes the
file fixes of theirs bound it (`onnx_products`), and without bound over sizes it does not fix (a tile's pixels), as
an Einsum of two does (`bhqd,bhkd->bhqk`, read as the MatMul it is). What a Concat or an Expand added to the
features, a convolution or a reduction over them takes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_dims import concat_dims, slice_dims, split_dims, squeezed_dims
from srfeat.inference.onnx_einsum import einsum_equation
from srfeat.inference.onnx_node_axes import NodeAxes
from srfeat.inference.onnx_operators import BROADCASTING, OF_SHAPES, SAME_SHAPE
from srfeat.inference.onnx_padding import MAX_PAD, GraphPadding, given_values
from srfeat.inference.onnx_pads import POOLING, WINDOWED, transposed_scales, window_strides
from srfeat.inference.onnx_products import (
    broadcast_dims,
    crossed_growth,
    einsum_dims,
    einsum_factor,
    einsum_pairwise_values,
    pairwise_values,
    product_dims,
    weight_factor,
)
from srfeat.inference.onnx_shapes import MAX_DIMS, ConstantValues, Dims, ShapeVectors
from srfeat.inference.onnx_slices import JoinedSlices

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BROADCASTING",
    "MAX_DIMS",
    "MAX_FEATURES",
    "MAX_GROWTH",
    "MAX_PAD",
    "SAME_SHAPE",
    "GraphGrowth",
    "ShapeVectors",
]

# How many times over the graph may enlarge the image by constant scales, along any path from it: a srfeat
# model enlarges it 16 times (x4 a side, by DepthToSpace, which only moves values), and other x4 models
# by Resize; 256 (x16 a side) leaves room for x8 ones.
MAX_GROWTH = 256
# Values per pixel of the image a convolution's output features may make: its features times how many times
# over the image has grown on the way to it (a Resize before it), and what a Concat or an Expand adds to them.
# srfeat's bundled models (128 features) make 512 (an upsampling convolution's 4 F, before each DepthToSpace), an
# EDSR-like body of 256 features 1,024, a Resize-based x4 (ESRGAN's) of 64 features 1,024 after its
# enlargement; each is 4 bytes (float32) or more, per value and pixel of a tile. 4,096 leaves room for a
# srfeat model of 1,024 features; a Conv of 3 to a million features asked for 4 MB per pixel.
MAX_FEATURES = 4096


class GraphGrowth:
    """How much each value has grown from the image, along the path to it that grew it most: in times over
    (`growth`) and in values padded onto an axis (`padded`)."""

    def __init__(self, constants: ConstantValues, input_dims: Mapping[str, Dims] | None = None) -> None:
        self._constants = constants
        # On the way: what a convolution keeps, and what it undoes (features concatenated, which it makes its own)
        self._growth: dict[str, tuple[float, float]] = {}
        # The features the last convolution on the way made (its weight's), 1 before any
        self._width: dict[str, float] = {}
        # What `features` tells of each value: values per pixel of the image its features make
        self._features: dict[str, float] = {}
        # Values the graph computes from its input (the image): a name no node made and no constant holds
        # is an input; what a node makes from one is too
        self._made: set[str] = set()
        self._from_image: set[str] = set()
        # Values computed from the image's shape alone (Shape, and what is computed from it): not its pixels
        self._of_shape: set[str] = set()
        # The sizes the file fixes of the axes of values made from the image (the graph's inputs declare
        # theirs: ONNX Runtime refuses an input of other fixed sizes), and the shapes computed from theirs
        self._dims: dict[str, Dims] = dict(input_dims or {})
        self._shapes = ShapeVectors(constants, self._dims, SAME_SHAPE | BROADCASTING)
        self._axes = NodeAxes(constants, self._dims)
        self._slices = JoinedSlices(self._dims)
        self._padding = GraphPadding(constants, self._dims, self._shapes, self._slices)

    def growth(self, node: onnx.NodeProto) -> float:
        """How many times over `node` enlarges the image, along the path to it that enlarges it most: the values it has
        grown on the way (its inputs' growth), times a Resize's or Upsample's constant scales (or sizes computed
        from the image's shape times constants: `ShapeVectors`), a Tile's constant repeats of a computed value,
        or an Expand's of the image on an axis where its size is not known to be the target's already
        (`ShapeVectors.expanded`); a strided convolution or pooling shrinks it by its strides (a U-Net's
        downsampling, then as many x2 Resizes, is as large as before). A constant's Expand is counted as such
        (`onnx_constants.FileConstants.output_values`)."""
        inputs, op = list(node.input), node.op_type
        # the image's values only: a constant (a Pad's pads, a Resize's scales) would undo what a stride shrank; and
        # not a shape whose entries tell the growth from the map it sizes (4 H on a map of 4 H: not the x4 again)
        sized = {"Expand": 1, "Resize": 3}.get(op, len(inputs))
        told = sized < len(inputs) and self._shapes.resolved(inputs[0], inputs[sized], node)
        # what a Scatter writes into keeps its shape: its indices and updates, however made, add nothing to it
        written = op in ("ScatterND", "ScatterElements", "Scatter")
        grown = [
            self._growth.get(name, (1.0, 1.0))
            for index, name in enumerate(inputs)
            if name and self._is_from_image(name) and not (told and index == sized) and not (written and index)
        ]
        kept, widened = (max(each, default=1.0) for each in zip(*grown, strict=True)) if grown else (1.0, 1.0)
        width = max((self._width_of(name) for name in inputs if name), default=1.0)
        factors, scales = None, None
        if op == "Concat":
            kept, widened = self._concatenated(node, kept, widened)
        elif op in ("Conv", "ConvTranspose") or (
            op.startswith("Reduce") and 1 in (self._axes.reduced_axes(node) or {})
        ):
            widened = 1.0  # its features are its weight's, or one (a grey map widened, then made grey again)
            width = self._convolved(node) or (width if op in ("Conv", "ConvTranspose") else 1.0)
        if op in BROADCASTING:  # the image's values broadcast against each other: a column of them by a row
            parts = [name for name in inputs if name and self._is_from_image(name) and name not in self._of_shape]
            shapes = [self._dims.get(name) for name in parts]
            if len(parts) > 1 and all(shape is not None for shape in shapes):
                images = [self._shapes.image_axes(name) for name in parts]
                kept *= crossed_growth([shape for shape in shapes if shape is not None], images)
        if op in WINDOWED and op != "ConvTranspose":  # its strides shrink the image, as a Resize by 1 / 2 does
            kept = max(kept / window_strides(node), 2.0**-40)
        if op == "Gather" and len(inputs) > 1:  # some entries of an axis the file fixes: Q of Q, K and V
            width *= self._axes.gathered_share(inputs[0], inputs[1], node)
        if op in ("MatMul", "Gemm", "Einsum"):  # by a weight, its features for those it takes; or attention's
            width = made if math.isinf(made := self._multiplied(node)) else min(made, 2.0**40)  # infinite: refused
        if op in ("Resize", "Upsample"):  # scales: second (Upsample, Resize-10), or after Resize's roi
            factors = given_values(self._constants, inputs, 2 if len(inputs) > 2 else 1, node, "scales")
            factors = scales = factors if factors is not None and factors.dtype.kind == "f" else None
            if (factors is None or not factors.size) and op == "Resize" and len(inputs) > 3 and inputs[3]:
                factors = self._shapes.resized(inputs[0], inputs[3], node)  # opsets 11-12 give empty scales then
        elif op == "ConvTranspose":  # enlarges as a Resize does, by its strides
            factors = transposed_scales(node)
        elif op in ("Tile", "Expand") and len(inputs) > 1 and self._constants.shape(inputs[0]) is None:
            if op == "Tile":  # a constant's: `onnx_constants.FileConstants.output_values`
                factors = self._constants.values(inputs[1])
                factors = factors if factors is not None and factors.dtype.kind == "i" else None
            elif self._is_from_image(inputs[0]):
                factors = self._shapes.expanded(inputs[0], inputs[1])
                if factors is not None and len(factors) > 2:  # on the features: undone as a Concat's are
                    widened, factors[1] = min(widened * factors[1], 2.0**40), 1.0
        self._dims_of(node, scales)
        if op == "Split":  # each part's share of the features (Q, K and V split off one map)
            width *= self._axes.split_share(node)
        if op == "Slice" and node.output and node.output[0]:  # torch.roll's slices, joined again by a Concat
            self._slices.note(node, self._shapes.integers([*inputs[1:5], "", ""][:4], 4, defaults=[0, 0, 0, 1]))
        self._shapes.follow(node, self._slices.rolled(node))
        self._padding.note_strip(node, bool(inputs) and self._is_from_image(inputs[0]))
        self._made.update(node.output)
        if any(self._is_from_image(name) for name in inputs if name):
            self._from_image.update(node.output)
            of_shape = op in OF_SHAPES and all(name in self._of_shape for name in inputs if self._is_from_image(name))
            if op in ("Shape", "Size") or of_shape:
                self._of_shape.update(node.output)
        own = 1.0
        for factor in [] if factors is None else factors.ravel()[:MAX_DIMS].astype(np.float64).tolist():
            own *= factor if factor > 0 else 1.0  # nothing (0), or refused by ONNX Runtime (negative, NaN)
            if own > 2**40:  # past any bound, and no overflow
                break
        for name in node.output:
            self._growth[name] = (kept * own, widened)
            self._width[name] = width
            self._features[name] = min(width * kept * own * widened, 2.0**60) if math.isfinite(width) else math.inf
        return max(own, kept * own * widened)

    def features(self, node: onnx.NodeProto) -> float:
        """How many values per pixel of the image `node`'s output features make (once `growth` has been asked
        about it), along the path that makes most: the features of the last convolution on it (its weight's),
        times how many times over the image has grown on the way (`growth`), and what a Concat or an Expand
        of them has added (a Concat of two maps of 64 counts as 128). Before any convolution, the image's
        features count as its 3 (`growth` counts what is added to them)."""
        return max((self._features.get(name, 1.0) for name in node.output if name), default=1.0)

    def _convolved(self, node: onnx.NodeProto) -> float | None:
        """The features a Conv or ConvTranspose makes where its weight's shape is known: the weight's first size
        (a Conv's, grouped or not), or its second times the groups (a ConvTranspose's); infinite where the file
        does not fix it (`_weight_shape`: a Reshape of the image to [H W, 3, 1, 1] makes H W features, a tile's
        square); None for another operator, or one ONNX Runtime refuses."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if node.op_type not in ("Conv", "ConvTranspose") or len(inputs) < 2 or not inputs[1]:
            return None
        if (weight := self._weight_shape(inputs[1])) is None:
            return math.inf
        if not weight or (node.op_type != "Conv" and len(weight) < 2):
            return None
        group = options["group"].i if "group" in options else 1
        return float(weight[0] if node.op_type == "Conv" else weight[1] * max(group, 1))

    def _multiplied(self, node: onnx.NodeProto) -> float:
        """How many features per pixel a MatMul, Gemm or Einsum makes (as `_width`): of a value made from the image
        by weights, the weights' share of its (`onnx_products.weight_factor`, `einsum_factor`: a 1x1 convolution
        written as `bchw,oc->bohw`), infinite where the file does not fix a weight's shape (`_convolved`); of two
        made from the image (attention), what the sizes the file fixes of theirs bound (`pairwise_values`; an Einsum's
        as the MatMul it is, `einsum_pairwise_values`); of neither, its inputs'."""
        einsum, options = node.op_type == "Einsum", {each.name: each for each in node.attribute}
        inputs = list(node.input) if einsum else list(node.input)[:2]
        keys = ("transA", "transB")
        flags = [bool(options[key].i) if key in options and node.op_type == "Gemm" else False for key in keys]
        fixed = [bool(name) and not self._is_from_image(name) for name in inputs]
        widths = [self._width_of(name) for name in inputs]
        if len(inputs) < 2 or all(fixed):
            return max(widths, default=1.0)
        if fixed.count(False) > 1:  # attention: as the sizes the file fixes of both bound it
            sides, made = [self._dims.get(name) for name in inputs], (widths[0], widths[1])
            image = [self._shapes.image_axes(name) for name in inputs]  # the image's batch in both: not broadcast
            if einsum:
                return einsum_pairwise_values(einsum_equation(node), sides, made, image)
            return pairwise_values(sides[0], sides[1], (flags[0], flags[1]), made, image)
        index = fixed.index(False)  # the image's
        if einsum:  # None: an equation ONNX Runtime refuses
            sizes = [self._dims.get(name) if name == inputs[index] else self._constants.shape(name) for name in inputs]
            factor = einsum_factor(einsum_equation(node), sizes, index)
            return max(widths) if factor is None else factor * widths[index]
        weight = self._constants.shape(inputs[1 - index])
        factor = math.inf if weight is None else weight_factor(weight, index == 1, flags[1 - index])
        return factor * widths[index]

    def _concatenated(self, node: onnx.NodeProto, kept: float, widened: float) -> tuple[float, float]:
        """The growth of a Concat of values made from the image (not of its shape): along the features, the
        sum of theirs, which a convolution after it undoes (a dense block concatenates five maps, then
        convolves them to one); along another axis, the sum of theirs for good (the image beside itself is
        twice the image). A strip cut off the image (`GraphPadding.note_strip`) counts as padding there (`padded`)."""
        parts = [name for name in node.input if name and self._is_from_image(name) and name not in self._of_shape]
        if len(parts) < 2 or self._slices.rearranges(node):  # torch.roll's: no larger
            return kept, widened
        grown = [self._growth.get(name, (1.0, 1.0)) for name in parts]
        along = self._padding.concat_axis(node)
        if along is not None and along[0] == 1 and along[1] >= 3:
            return kept, sum(each for _, each in grown)
        whole = [growth for name, growth in zip(parts, grown, strict=True) if not self._padding.is_strip(name, along)]
        return max(kept, sum(each for each, _ in whole) if len(whole) > 1 else 0.0), widened

    def _dims_of(self, node: onnx.NodeProto, scales: np.ndarray | None) -> None:
        """Note the sizes the file fixes of `node`'s output's axes, where simple rules say: enough for an
        Expand to tell a broadcast that adds nothing (`ShapeVectors.expanded`). An operator not known here fixes none;
        nor a Resize but by constant `scales`, 1 on an axis. A size noted is the true one: one noted larger
        would let an Expand to it pass uncounted."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if not inputs or not node.output or not node.output[0]:
            return
        op, dims = node.op_type, self._dims.get(inputs[0])
        result: Dims | None = None
        if op in BROADCASTING:
            shapes = [self._dims.get(name) if self._is_from_image(name) else self._fixed(name) for name in inputs]
            result = None if any(each is None for each in shapes) else broadcast_dims([s for s in shapes if s])
        elif op in ("MatMul", "Gemm", "Einsum") and len(inputs) > 1:  # an Einsum's: a later Reshape's -1 needs them
            sides = [self._dims.get(name) if self._is_from_image(name) else self._fixed(name) for name in inputs]
            flags = [bool(options[key].i) if key in options else False for key in ("transA", "transB")]
            result = product_dims(sides[0], sides[1], (flags[0], flags[1])) if sides[0] and sides[1] else None
            result = einsum_dims(einsum_equation(node), sides) if op == "Einsum" else result
        elif op == "Reshape":  # sizes the shape gives (a blind model's kernels'), and its -1 of the features
            result = self._shapes.reshaped(node, dims, self._features.get(inputs[0], math.nan))
        elif dims is None:
            return
        elif op in ("Shape", "Size"):  # a vector of the sizes (its rank's entries, or those between start and end)
            ends = [options[key].i if key in options else None for key in ("start", "end")]
            result = [len(dims[ends[0] : ends[1]])] if op == "Shape" else []
        elif op == "Gather" and len(inputs) > 1:  # indices of a shape the file fixes, in place of the axis
            axis = options["axis"].i if "axis" in options else 0
            taken = self._dims.get(inputs[1]) if self._is_from_image(inputs[1]) else self._fixed(inputs[1])
            if taken is None or not -len(dims) <= axis < len(dims):
                return
            result = [*dims[: axis % len(dims)], *taken, *dims[axis % len(dims) + 1 :]]
        elif op in SAME_SHAPE:
            result = dims
        elif op in ("Conv", "ConvTranspose") and (features := self._convolved(node)) is not None and features < 2**40:
            if len(dims) < 2:
                return  # refused by ONNX Runtime
            result = [dims[0], int(features), *[None] * (len(dims) - 2)]
        elif op in POOLING or (op in ("Resize", "Upsample") and scales is not None):
            # the height and width change; a batch or features resized by other than 1 are not fixed
            kept = [1.0] * len(dims) if op in POOLING or scales is None else scales.ravel().tolist()
            result = [
                size if axis < min(len(dims) - 2, len(kept)) and kept[axis] == 1 else None
                for axis, size in enumerate(dims)
            ]
        elif op.startswith("Reduce") and (options["keepdims"].i if "keepdims" in options else 1):
            reduced = self._axes.reduced_axes(node)  # all, where not known: a size noted smaller counts more
            result = [1 if reduced is None or axis in reduced else size for axis, size in enumerate(dims)]
        elif op == "Expand" and len(inputs) > 1 and (entries := self._shapes.loose_entries(inputs[1])) is not None:
            targets: Dims = [None if each is None or each[0] else max(int(each[1]), 1) for each in entries]
            result = broadcast_dims([dims, targets])
        elif op in ("Split", "Concat"):  # Q, K and V of one Linear layer (chunk, in PyTorch), or joined
            axis = options["axis"].i if "axis" in options else 0
            sides = [self._dims.get(name) if self._is_from_image(name) else self._fixed(name) for name in inputs]
            sizes = self._constants.values(inputs[1]) if op == "Split" and len(inputs) > 1 and inputs[1] else None
            listed = list(options["split"].ints) if "split" in options else None  # before opset 13
            split = [int(each) for each in sizes.ravel()[:MAX_DIMS]] if sizes is not None else listed
            parts = split_dims(dims, axis, split, len(node.output)) if op == "Split" else [concat_dims(sides, axis)]
            self._dims.update((name, part) for name, part in zip(node.output, parts, strict=False) if name and part)
        elif op in ("Squeeze", "Unsqueeze") and (axes := self._axes.listed_axes(node)) is not None:
            result = squeezed_dims(dims, axes, op == "Unsqueeze")
        elif op == "Flatten" and -len(dims) <= (axis := options["axis"].i if "axis" in options else 1) <= len(dims):
            halves = (dims[: axis % (len(dims) + 1)], dims[axis % (len(dims) + 1) :])
            result = [None if None in half else math.prod(size or 0 for size in half) for half in halves]
        elif op == "Slice":  # by its bounds where known (sizes computed from fixed ones too); else on the axes it lists
            names = [*inputs[1:5], "", ""][:4]
            bounds = [self._shapes.whole_numbers(name) if name else None for name in names]
            known = all(bound is not None for name, bound in zip(names, bounds, strict=True) if name)
            result = (slice_dims(dims, bounds) if known else None) or self._axes.sliced_dims(node, dims)
        elif op == "Pad":  # sizes change on some axes
            result = [None for _ in dims]
        elif op == "Transpose" and "perm" in options and sorted(options["perm"].ints) == list(range(len(dims))):
            result = [dims[axis] for axis in options["perm"].ints]
        if result is not None:
            self._dims[node.output[0]] = result

    def multiplies_image_values(self, node: onnx.NodeProto) -> bool:
        """Whether `node` multiplies two values made from the image together (MatMul, Gemm, Einsum: attention)."""
        inputs = list(node.input) if node.op_type == "Einsum" else list(node.input)[:2]
        multiplied = [name for name in inputs if name and self._is_from_image(name)]
        return node.op_type in ("MatMul", "Gemm", "Einsum") and len(multiplied) >= 2

    def _width_of(self, name: str) -> float:
        """The features the last convolution on the way to `name` made; the image's own (3, or as many as the
        graph's input declares) before any."""
        if name in self._width or name in self._made or self._constants.shape(name) is not None:
            return self._width.get(name, 1.0)
        declared = self._dims.get(name) or []
        return float(declared[1]) if len(declared) > 1 and declared[1] else 3.0

    def _weight_shape(self, name: str) -> list[int] | None:
        """A weight's shape: a constant's, or where the graph computes it (from the image: a blind model's kernels)
        every size the file fixes (`_dims`); None where one is not fixed."""
        if (shape := self._constants.shape(name)) is not None or not self._is_from_image(name):
            return shape
        dims = self._dims.get(name)
        return None if dims is None or None in dims else [int(each) for each in dims if each is not None]

    def _fixed(self, name: str) -> Dims | None:
        shape = self._constants.shape(name)
        return None if shape is None else list(shape)

    def _is_from_image(self, name: str) -> bool:
        return name in self._from_image or (name not in self._made and self._constants.shape(name) is None)

    def padded(self, node: onnx.NodeProto) -> int:
        """How many values constant Pads have added to one axis of the image (both ends), along the path to `node` that
        added most (`onnx_padding.GraphPadding.padded`)."""
        inputs = list(node.input)
        weight = (
            self._weight_shape(inputs[1]) if node.op_type in ("Conv", "ConvTranspose") and len(inputs) > 1 else None
        )
        return self._padding.padded(node, weight)
