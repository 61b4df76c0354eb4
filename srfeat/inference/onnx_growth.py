"""How much an .onnx graph enlarges the image by numbers the file fixes, followed along every path from it.

`GraphGrowth`, asked about each node in the graph's order, tells how many times over the image has grown
on the way to it (Resize and Upsample by constant scales or to sizes computed as the image's shape times
constants, Tile by constant repeats, Expand to a constant shape where the image's size there is not known
to be that already), and how many values constant Pads have added to an axis of it. The tile plan counts
memory per input pixel: a Resize by 1e5 asked for 1e10 times a tile's memory at the first one, and a Pad
of 2000 a side made each 64-feature tile 4 GB.

Not followed (so not counted): shapes computed otherwise than `ShapeVectors` says, a Resize's constant
height or width beside computed ones, a Concat of the image with itself, DepthToSpace (which only moves
values); a reduction does not take back what an Expand before it added (an overcount).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["BROADCASTING", "MAX_DIMS", "MAX_GROWTH", "MAX_PAD", "SAME_SHAPE", "GraphGrowth", "ShapeVectors"]

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


# Sizes of a value's axes, None where the file does not fix one
Dims = list[int | None]
# An entry of a shape computed from the image's (`ShapeVectors`): a factor times the size of an axis of a
# value made from the image, plus a constant; a factor of 0 where it is a constant alone
Entry = tuple[float, float]
# Operators whose output has their first input's shape (`onnx_contents` follows constants' through them)
SAME_SHAPE = frozenset(
    {"Identity", "Cast", "Neg", "Abs", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal"}
    | {"Floor", "Ceil", "Round", "Sign", "Not", "Clip", "Erf", "Softplus", "Elu", "HardSigmoid", "IsNaN", "IsInf"}
    | {"Selu", "HardSwish", "Gelu", "Mish", "Dropout", "Softmax", "LogSoftmax", "CastLike", "LpNormalization"}
    | {"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"}
)
# Operators whose output is their inputs broadcast together (numpy's rules)
BROADCASTING = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor"}
    | {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "BitShift", "PRelu"}
)
# Operators that keep the batch and features and change the height and width
_POOLING = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
# Operators that keep each axis where it is: a pad on one stays on it
_KEEPS_AXES = (
    SAME_SHAPE | BROADCASTING | _POOLING | {"Conv", "ConvTranspose", "Resize", "Upsample", "Pad", "Slice", "Concat"}
)
# Operators that pass a shape's entries on as they are (Gather and Slice pick some: `ShapeVectors.follow`)
_KEEPS_ENTRIES = frozenset({"Identity", "Cast", "Floor", "Ceil", "Round", "Squeeze", "Unsqueeze", "Reshape"})


class ConstantValues(Protocol):
    """What `GraphGrowth` asks of the file's constants (`onnx_contents._Constants`)."""

    def values(self, name: str) -> np.ndarray | None: ...

    def shape(self, name: str) -> list[int] | None: ...


class GraphGrowth:
    """How much each value has grown from the image, along the path to it that grew it most: in times over
    (`growth`) and in values padded onto an axis (`padded`)."""

    def __init__(self, constants: ConstantValues, input_dims: Mapping[str, Dims] | None = None) -> None:
        self._constants = constants
        self._growth: dict[str, float] = {}
        # Values padded on the way: on every axis, and more on some (from the last: -1 the width)
        self._padded: dict[str, tuple[int, dict[int, int]]] = {}
        # Values the graph computes from its input (the image): a name no node made and no constant holds
        # is an input; what a node makes from one is too
        self._made: set[str] = set()
        self._from_image: set[str] = set()
        # The sizes the file fixes of the axes of values made from the image (the graph's inputs declare
        # theirs: ONNX Runtime refuses an input of other fixed sizes), and the shapes computed from theirs
        self._dims: dict[str, Dims] = dict(input_dims or {})
        self._shapes = ShapeVectors(constants, self._dims)

    def growth(self, node: onnx.NodeProto) -> float:
        """How many times over `node` enlarges the image, along the path to it that enlarges it most: the
        values it has grown on the way (its inputs' growth), times a Resize's or Upsample's constant
        scales (or sizes computed from the image's shape times constants: `ShapeVectors`), a Tile's
        constant repeats of a computed value, or an Expand's of the image on an axis where its size is
        not known to be the target's already (`_expanded`). A constant's Expand is counted as such
        (`_Constants.output_values`)."""
        inputs = list(node.input)
        before = max((self._growth.get(name, 1.0) for name in inputs if name), default=1.0)
        op, factors, scales = node.op_type, None, None
        if op in ("Resize", "Upsample"):  # scales: second (Upsample, Resize-10), or after Resize's roi
            factors = self._given(inputs, 2 if len(inputs) > 2 else 1, node, "scales")
            factors = scales = factors if factors is not None and factors.dtype.kind == "f" else None
            if (factors is None or not factors.size) and op == "Resize" and len(inputs) > 3 and inputs[3]:
                factors = self._resized(inputs[0], inputs[3], node)  # opsets 11-12 give empty scales then
        elif op in ("Tile", "Expand") and len(inputs) > 1 and self._constants.shape(inputs[0]) is None:
            if op == "Tile":  # a constant's: `_Constants.output_values`
                factors = self._constants.values(inputs[1])
                factors = factors if factors is not None and factors.dtype.kind == "i" else None
            elif self._is_from_image(inputs[0]):
                factors = self._expanded(inputs[0], inputs[1])
        self._dims_of(node, scales)
        self._shapes.follow(node)
        self._made.update(node.output)
        if any(self._is_from_image(name) for name in inputs if name):
            self._from_image.update(node.output)
        own = 1.0
        for factor in [] if factors is None else factors.ravel()[:MAX_DIMS].astype(np.float64).tolist():
            own *= factor if factor > 0 else 1.0  # nothing (0), or refused by ONNX Runtime (negative, NaN)
            if own > 2**40:  # past any bound, and no overflow
                break
        for name in node.output:
            self._growth[name] = before * own
        return max(own, before * own)

    def _expanded(self, source: str, target: str) -> np.ndarray | None:
        """How many times over an Expand of the image value `source` to the shape `target` enlarges it, on
        each axis. An Expand adds nothing where `source` has the target's size already (a [1, 64, 1, 1] on a
        map of 64 features, which a deep network broadcasts at every layer), so it counts the target's size
        over the size the file fixes of `source` there (a convolution's features, the input's 3), and the
        whole of it where no size is fixed: then a grey map expanded to 200 features after a x16 Resize counts
        3,200 times, as it takes, and not 200 alone. Not the height and width given as constants: a model
        made for one size may expand a map to the size it has. A size computed from a shape counts its
        factor (`ShapeVectors`)."""
        if (entries := self._shapes.entries(target)) is None:
            return None
        known = self._dims.get(source)
        rank = max(len(entries), 0 if known is None else len(known))
        sizes: Dims = [None] * rank if known is None else [1] * (rank - len(known)) + known
        entries = [(0.0, 1.0)] * (rank - len(entries)) + entries
        factors = []
        for axis, ((factor, constant), size) in enumerate(zip(entries, sizes, strict=True)):
            if factor > 0:
                factors.append(max(factor, 1.0))
            elif axis < rank - 2:
                factors.append(max(constant / size, 1.0) if size else max(constant, 1.0))
        return np.asarray(factors)

    def _resized(self, source: str, sizes: str, node: onnx.NodeProto) -> np.ndarray | None:
        """The factors by which a Resize of `source` to `sizes` enlarges it, where those are its shape times
        constants (`ShapeVectors`); a constant size of the batch or features over the size `source` has
        there, where the file fixes it, else counted whole. A constant height or width is left: the image's
        is not known before it runs (sizes that are all constants are counted as values made from
        constants, `_Constants.output_values`)."""
        if (entries := self._shapes.entries(sizes)) is None:
            return None
        known = self._dims.get(source) or []
        along_axes = any(each.name == "axes" for each in node.attribute)  # Resize-18: sizes of those axes only
        factors = []
        for axis, (factor, constant) in enumerate(entries):
            if factor > 0:
                factors.append(factor)
            elif axis < len(entries) - 2 and not along_axes:
                size = known[axis] if axis < len(known) else None
                factors.append(constant / size if size else constant)
        return np.asarray(factors)

    def _dims_of(self, node: onnx.NodeProto, scales: np.ndarray | None) -> None:
        """Note the sizes the file fixes of `node`'s output's axes, where simple rules say: enough for an
        Expand to tell a broadcast that adds nothing (`_expanded`). An operator not known here fixes none;
        nor a Resize but by constant `scales`, 1 on an axis. A size noted is the true one: one noted larger
        would let an Expand to it pass uncounted."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if not inputs or not node.output or not node.output[0]:
            return
        op, dims = node.op_type, self._dims.get(inputs[0])
        result: Dims | None = None
        if op in BROADCASTING:
            shapes = [self._dims.get(name) if self._is_from_image(name) else self._fixed(name) for name in inputs]
            result = None if any(each is None for each in shapes) else _broadcast_dims([s for s in shapes if s])
        elif dims is None or op in ("Shape", "Size"):
            return
        elif op in SAME_SHAPE:
            result = dims
        elif op in ("Conv", "ConvTranspose") and len(inputs) > 1 and (weight := self._constants.shape(inputs[1])):
            if len(dims) < 2:
                return  # refused by ONNX Runtime
            group = options["group"].i if "group" in options else 1
            features = weight[0] if op == "Conv" else (weight[1] * group if len(weight) > 1 else None)
            result = [dims[0], features, *[None] * (len(dims) - 2)]
        elif op in _POOLING or (op in ("Resize", "Upsample") and scales is not None):
            # the height and width change; a batch or features resized by other than 1 are not fixed
            kept = [1.0] * len(dims) if op in _POOLING or scales is None else scales.ravel().tolist()
            result = [
                size if axis < min(len(dims) - 2, len(kept)) and kept[axis] == 1 else None
                for axis, size in enumerate(dims)
            ]
        elif op.startswith("Reduce") and (options["keepdims"].i if "keepdims" in options else 1):
            axes = self._constants.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None  # opset 18
            listed = list(options["axes"].ints) if "axes" in options else [] if axes is None else axes.ravel().tolist()
            reduced = {int(axis) % len(dims) for axis in listed} if listed and dims else set(range(len(dims)))
            result = [1 if axis in reduced else size for axis, size in enumerate(dims)]
        elif op == "Expand" and len(inputs) > 1 and (entries := self._shapes.entries(inputs[1])) is not None:
            targets: Dims = [int(c) if f == 0 and c > 1 else (None if f else 1) for f, c in entries]
            result = _broadcast_dims([dims, targets])
        elif op == "Reshape" and len(inputs) > 1 and (shape := self._constants.values(inputs[1])) is not None:
            numbers = shape.ravel()[:MAX_DIMS].tolist()
            result = [
                size if size > 0 else (dims[axis] if size == 0 and axis < len(dims) else None)
                for axis, size in enumerate(numbers)
            ]
        elif op == "Transpose" and "perm" in options and sorted(options["perm"].ints) == list(range(len(dims))):
            result = [dims[axis] for axis in options["perm"].ints]
        if result is not None:
            self._dims[node.output[0]] = result

    def _fixed(self, name: str) -> Dims | None:
        shape = self._constants.shape(name)
        return None if shape is None else list(shape)

    def _is_from_image(self, name: str) -> bool:
        return name in self._from_image or (name not in self._made and self._constants.shape(name) is None)

    def padded(self, node: onnx.NodeProto) -> int:
        """How many values constant Pads have added to one axis of the image (both ends), along the path to
        `node` that added most: each axis's pads summed, while the operators on the way keep the axes where
        they are (`_KEEPS_AXES`); past any other (a Transpose, a Reshape) the most on any axis so far counts
        on every axis, as a Pad on some axes of its own (`axes`, opset 18) counts its most on each. Crops
        (negative pads) take nothing back: what was padded was made."""
        inputs = list(node.input)
        on_path = [self._padded.get(name, (0, {})) for name in inputs if name]
        base, axes = max((base + max(axes.values(), default=0) for base, axes in on_path), default=0), {}
        if node.op_type in _KEEPS_AXES:  # axis by axis, from the last (numpy's broadcasting aligns them so)
            base = max((each for each, _ in on_path), default=0)
            for each, counts in on_path:
                for axis, count in counts.items():
                    axes[axis] = max(axes.get(axis, 0), each + count - base)
        if node.op_type == "Pad" and inputs and self._constants.shape(inputs[0]) is None:  # a constant's: sized
            pads = self._given(inputs, 1, node, "pads")  # an attribute before opset 11
            if pads is not None and pads.dtype.kind == "i":
                numbers = pads.ravel()[: 2 * MAX_DIMS].astype(np.int64).clip(0, 2**40)
                half = len(numbers) // 2
                added = (numbers[:half] + numbers[half : 2 * half]).tolist()
                listed = len(inputs) > 3 and inputs[3]
                if listed:  # on the axes listed: counted on all
                    base += max(added, default=0)
                for axis, count in enumerate([] if listed else added):
                    axes[axis - half] = axes.get(axis - half, 0) + count
        for name in node.output:
            self._padded[name] = (base, axes)
        return base + max(axes.values(), default=0)

    def _given(self, inputs: list[str], index: int, node: onnx.NodeProto, attribute: str) -> np.ndarray | None:
        """The constant input `index` of `node`, else its attribute `attribute` (ints or floats), else None."""
        if index < len(inputs) and inputs[index]:
            return self._constants.values(inputs[index])
        for each in node.attribute:
            if each.name == attribute:
                return np.asarray(each.floats if each.floats else each.ints)
        return None


class ShapeVectors:
    """Shapes the graph computes from the image's: Shape, then Gather or Slice of its entries, Cast, times or
    plus a constant, Concat with constants. Each entry is followed as a factor times the size of an axis plus
    a constant: a Resize to sizes [N, C, 4 H, 4 W] so made enlarges the image 16 times, as one by scales
    [1, 1, 4, 4] does. What else a graph computes of a shape (two shapes multiplied, a shape's size in a
    division) is not followed, and counts nothing."""

    def __init__(self, constants: ConstantValues, dims: Mapping[str, Dims]) -> None:
        self._constants = constants
        self._dims = dims
        self._vectors: dict[str, list[Entry]] = {}

    def entries(self, name: str) -> list[Entry] | None:
        """The entries of the shape `name`: a constant's (of integers), or one followed here; else None."""
        if (values := self._constants.values(name)) is not None:
            if values.dtype.kind not in "iuf" or values.size > MAX_DIMS:  # ONNX Runtime refuses a float shape
                return None
            return [(0.0, float(each)) for each in values.ravel().tolist()]
        return self._vectors.get(name)

    def follow(self, node: onnx.NodeProto) -> None:
        """Note the entries of `node`'s output, where it computes a shape from the image's as above."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if not inputs or not node.output or not node.output[0]:
            return
        op, entries, result = node.op_type, self._vectors.get(inputs[0]), None
        if op == "Shape" and (dims := self._dims.get(inputs[0])) is not None:  # its rank is known
            start, end = (
                options[key].i if key in options else default for key, default in (("start", 0), ("end", len(dims)))
            )
            # a size the file fixes is a constant: an Expand to a map's shape of 200 features counts them
            result = [(1.0, 0.0) if size is None else (0.0, float(size)) for size in dims][start:end]
        elif op == "Concat" and any(name in self._vectors for name in inputs):
            parts = [self.entries(name) for name in inputs]
            result = None if any(part is None for part in parts) else [each for part in parts if part for each in part]
        elif op in ("Mul", "Add", "Div", "Sub") and len(inputs) == 2:
            result = self._arithmetic(op, inputs)
        elif entries is None:
            return
        elif op in _KEEPS_ENTRIES:
            result = entries
        elif op in ("Gather", "Slice") and (given := self._integers(inputs[1:], 4)) is not None:
            if op == "Gather" and all(-len(entries) <= index < len(entries) for index in given[0]):
                result = [entries[index] for index in given[0]]
            elif op == "Slice" and len(given) >= 2 and all(len(each) == 1 for each in given[:2]):
                axes = given[2] if len(given) > 2 else []
                steps = given[3] if len(given) > 3 and given[3] else [1]
                if axes in ([], [0], [-1]) and len(steps) == 1 and steps[0]:
                    result = entries[given[0][0] : given[1][0] : steps[0]]
        if result is not None:
            self._vectors[node.output[0]] = result[:MAX_DIMS]

    def _arithmetic(self, op: str, inputs: list[str]) -> list[Entry] | None:
        """A followed shape times, over, plus or minus a constant (of one value or one an entry)."""
        swapped = op in ("Mul", "Add") and inputs[0] not in self._vectors
        vector, other = reversed(inputs) if swapped else inputs
        if (entries := self._vectors.get(vector)) is None:
            return None  # nor are the constant's values read: a weight, at most Mul and Add nodes
        constant = self._constants.values(other)
        if constant is None or constant.dtype.kind not in "iuf" or constant.size not in (1, len(entries)):
            return None
        numbers = np.broadcast_to(constant.ravel().astype(np.float64), (len(entries),)).tolist()
        if op == "Div" and 0 in numbers:
            return None
        if op in ("Mul", "Div"):
            scale = numbers if op == "Mul" else [1 / each for each in numbers]
            return [(factor * by, plus * by) for (factor, plus), by in zip(entries, scale, strict=True)]
        sign = 1 if op == "Add" else -1
        return [(factor, plus + sign * by) for (factor, plus), by in zip(entries, numbers, strict=True)]

    def _integers(self, names: list[str], count: int) -> list[list[int]] | None:
        """The constant integers of `names` (at most `count`, each flattened; none for a name left out), or
        None if one is not such."""
        given = []
        for name in names[:count]:
            values = self._constants.values(name) if name else np.zeros(0, np.int64)
            if values is None or values.dtype.kind not in "iu":
                return None
            given.append([int(each) for each in values.ravel()[:MAX_DIMS].tolist()])
        return given


def _broadcast_dims(shapes: list[Dims]) -> Dims:
    """The sizes of `shapes` broadcast together (numpy's rules): a size other than 1 where one has it (ONNX
    Runtime refuses two that disagree), else None where one is not fixed."""
    rank = max(map(len, shapes), default=0)
    result: Dims = []
    for sizes in zip(*([1] * (rank - len(shape)) + shape for shape in shapes), strict=True):
        known = [each for each in sizes if each is not None and each != 1]
        result.append(max(known) if known else (None if None in sizes else 1))
    return result
