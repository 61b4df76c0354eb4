"""How many values constant Pads add to an axis of the image in an .onnx graph (`GraphPadding`), along every path
from it, for `onnx_growth` to refuse a graph that pads a tile far beyond what it holds: a Pad of 2000 a side made each
64-feature tile 4 GB."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_operators import ENLARGING, KEEPS_AXES
from srfeat.inference.onnx_pads import enlarged, shrunk, transposed_scales, window_effect, window_kernel
from srfeat.inference.onnx_shape_types import MAX_DIMS, ConstantValues, Dims
from srfeat.inference.onnx_shapes import ShapeVectors
from srfeat.inference.onnx_slices import JoinedSlices

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_PAD", "GraphPadding", "given_values"]

# Values a graph may add to one axis of the image by constant Pads (both ends together), along any path
# from it. srfeat's exports pad inside their convolutions (no Pad node); other models pad a few pixels
# before each convolution (reflect padding), a few hundred over a deep network. Tiles are 32 pixels a side
# at the least and 256 on a CPU (tiling.py's MIN_TILE, CPU_EFFICIENT_TILE): 1024 makes a 256-pixel tile
# 25 times larger at most, where a Pad of 2000 a side made it 270 times larger (4 GB at 64 features).
MAX_PAD = 1024


class GraphPadding:
    """How many values constant Pads have added to each value's axes on the way from the image (`padded`)."""

    def __init__(
        self, constants: ConstantValues, dims: dict[str, Dims], shapes: ShapeVectors, slices: JoinedSlices
    ) -> None:
        self._constants = constants
        self._dims, self._shapes, self._slices = dims, shapes, slices  # `GraphGrowth`'s, shared
        # Values padded on the way: on every axis, and more on some (from the last: -1 the width), and by how much
        # strides have divided them since the last enlargement (`padded`)
        self._padded: dict[str, tuple[int, dict[int, int], float]] = {}
        # Strips of the image a Slice cut to at most a constant length on an axis (from the last): a Concat of
        # one beside the image (circular padding) adds that many values, as a Pad, not the image again
        self._strips: dict[str, tuple[int, int]] = {}

    def concat_axis(self, node: onnx.NodeProto) -> tuple[int, int] | None:
        """The axis a Concat joins along, and the rank of what it joins, where the sizes noted of its inputs
        tell the rank (else None)."""
        axis = next((each.i for each in node.attribute if each.name == "axis"), None)
        rank = next((len(dims) for name in node.input if (dims := self._dims.get(name)) is not None), None)
        if axis is None or rank is None or not -rank <= axis < rank:
            return None
        return axis % rank, rank

    def is_strip(self, name: str, along: tuple[int, int] | None) -> bool:
        return along is not None and name in self._strips and self._strips[name][0] == along[0] - along[1]

    def note_strip(self, node: onnx.NodeProto, from_image: bool) -> None:
        """Note a Slice of a value made from the image to at most a constant length on one axis: from a
        start to an end on the same side (counted from the start, or both from the end), or from a start
        counted from the end to past the end (`x[..., -2:]`), in steps of 1."""
        inputs = list(node.input)
        dims = self._dims.get(inputs[0]) if inputs else None
        if node.op_type != "Slice" or len(inputs) < 4 or dims is None or not from_image:
            return
        given = self._shapes.integers([*inputs[1:5], "", ""][:4], 4, defaults=[0, 0, 0, 1])
        if given is None or any(len(each) != 1 for each in given) or not node.output:
            return
        (start,), (end,), (axis,), (step,) = given
        length = end - start if (start >= 0) == (end >= 0) else -start if start < 0 else None
        if step == 1 and length is not None and length <= MAX_PAD and -len(dims) <= axis < len(dims):
            self._strips[node.output[0]] = (axis % len(dims) - len(dims), max(length, 0))

    def padded(self, node: onnx.NodeProto, weight: list[int] | None) -> int:
        """How many values constant Pads have added to one axis of the image (both ends), along the path to `node` that
        added most: each axis's pads summed, while the operators on the way keep the axes where they are
        (`KEEPS_AXES`); past any other (a Transpose, a Reshape) the most on any axis so far counts on every
        axis, as a Pad on some axes of its own (`axes`, opset 18) counts its most on each. A Resize enlarges
        what was padded with the rest (a Pad of 300 before a x4 Resize makes 1,200 values, where one after it
        makes 300; a ConvTranspose's strides as well; one by 1 / 2 makes 150, as a stride of 2 does), and a
        Concat of strips of the image beside it (circular padding) adds theirs, as a convolution's own pads do.
        Crops (negative pads) take nothing back: what was padded was made; but a convolution or a pooling takes
        back what its kernel shrinks each axis by (reflect padding, then a convolution without its own), and
        divides the rest by its stride (`onnx_pads.window_effect`), so that a deep network's pads do not add up.
        What strides divided, an enlargement after them takes back first, and an operator that moves values
        between axes (a pixel shuffle: they may be the height's and width's again) multiplies back."""
        inputs, op = list(node.input), node.op_type
        on_path = [self._padded.get(name, (0, {}, 1.0)) for name in inputs if name]
        divided = max((each for _, _, each in on_path), default=1.0)  # by strides on the way, not enlarged since
        if op in KEEPS_AXES:  # axis by axis, from the last (numpy's broadcasting aligns them so)
            base, axes = max((each for each, _, _ in on_path), default=0), {}
            for each, counts, _ in on_path:
                for axis, count in counts.items():
                    axes[axis] = max(axes.get(axis, 0), each + count - base)
        else:
            base = max(
                (enlarged(each + max(counts.values(), default=0), by) for each, counts, by in on_path), default=0
            )
            axes, divided = {}, 1.0
        if op == "Concat" and (along := self.concat_axis(node)) is not None and not self._slices.rearranges(node):
            for name in (name for name in inputs if self.is_strip(name, along)):
                axes[along[0] - along[1]] = axes.get(along[0] - along[1], 0) + self._strips[name][1]
        if op in ENLARGING and (scales := self._axis_scales(node)) is not None:
            by_axis, most, least = scales  # what was padded is enlarged with the rest
            base = enlarged(base, most)
            axes = {axis: enlarged(count, by_axis.get(axis, most)) for axis, count in axes.items()}
            divided = max(divided / least, 1.0)
        if op == "Resize":  # to sizes of the image's plus constants: those are pads
            base, axes = self._shapes.resize_constants(node, base, axes)
        if (kernel := window_kernel(node, weight)) is not None and (effect := window_effect(node, kernel)):
            rank = len(kernel) + 2  # what counts on every axis, on each of its input's
            axes = {axis: axes.get(axis, 0) + base for axis in {*axes, *range(-rank, 0)}}
            base = 0
            for axis, (added, stride) in effect.items():  # its own pads, or what it takes back; then its stride
                axes[axis] = shrunk(axes.get(axis, 0), added, stride)
            divided *= max(stride for _, stride in effect.values())
        if op == "Pad" and inputs and self._constants.shape(inputs[0]) is None:  # a constant's: sized
            pads = given_values(self._constants, inputs, 1, node, "pads")  # an attribute before opset 11
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
            self._padded[name] = (base, axes, min(divided, 2.0**40))
        return base + max(axes.values(), default=0)

    def _axis_scales(self, node: onnx.NodeProto) -> tuple[dict[int, float], float, float] | None:
        """A Resize's or Upsample's constant scales, or the factors of sizes computed from the image's shape
        (`ShapeVectors`; 1 for a constant size), or a ConvTranspose's strides, by axis from the last, the most
        of them (for an axis not known), and the least on the height and width (1 where not known); None where
        none is known."""
        inputs, spatial = list(node.input), 2  # the axes past the batch and features
        scales = given_values(self._constants, inputs, 2 if len(inputs) > 2 else 1, node, "scales")
        if scales is not None and scales.dtype.kind == "f" and scales.size:
            numbers = scales.ravel()[:MAX_DIMS].astype(np.float64).tolist()
        elif (
            node.op_type == "Resize"
            and len(inputs) > 3
            and inputs[3]
            and (sized := self._shapes.relative_entries(inputs[0], inputs[3], node))
        ):
            numbers = [factor if factor > 0 else 1.0 for factor, _ in sized]
            if any(each.name == "keep_aspect_ratio_policy" and each.s == b"not_smaller" for each in node.attribute):
                largest = self._shapes.resized(inputs[0], inputs[3], node)
                numbers = [float(largest.max()) if largest is not None and largest.size else 1.0] * len(numbers)
        elif node.op_type == "ConvTranspose" and (strides := transposed_scales(node)) is not None:
            numbers, spatial = strides.tolist(), 0
        else:
            return None
        # a shrinking one shrinks what was padded as a stride does: over T + P values, floor((T + P) s) is at most
        # ceil(P s) more than floor(T s); NaN, 0 and negative ones (refused by ONNX Runtime) as 1
        numbers = [each if each > 0 else 1.0 for each in numbers]
        if any(each.name == "axes" for each in node.attribute):  # Resize-18: scales of those axes only
            return {}, max(*numbers, 1.0), 1.0
        by_axis = {axis - len(numbers): each for axis, each in enumerate(numbers)}
        return by_axis, max(numbers), min(numbers[spatial:], default=1.0)


def given_values(
    constants: ConstantValues, inputs: list[str], index: int, node: onnx.NodeProto, attribute: str
) -> np.ndarray | None:
    """The constant input `index` of `node`, else its attribute `attribute` (ints or floats), else None."""
    if index < len(inputs) and inputs[index]:
        return constants.values(inputs[index])
    for each in node.attribute:
        if each.name == attribute:
            return np.asarray(each.floats if each.floats else each.ints)
    return None
