"""The axes and sizes a node's attributes and constant inputs name, from the sizes the file fixes of its input's
(`Dims`): those a Squeeze lists, a Reduce reduces, a Slice cuts, and the share of its input a Split or a Gather
takes, for `onnx_growth` to follow the sizes of values made from the image and the features each carries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_shape_types import MAX_DIMS, ConstantValues, Dims

if TYPE_CHECKING:
    import onnx

__all__ = ["NodeAxes"]


class NodeAxes:
    """What a node's attributes and constant inputs say of its axes, read with the file's constants and the sizes
    noted of the values made from the image (`onnx_growth.GraphGrowth`'s, which it keeps noting)."""

    def __init__(self, constants: ConstantValues, dims: Mapping[str, Dims]) -> None:
        self._constants = constants
        self._dims = dims

    def listed_axes(self, node: onnx.NodeProto) -> list[int] | None:
        """The axes a Squeeze or Unsqueeze lists: its attribute (before opset 13), or its constant second input."""
        inputs, listed = list(node.input), next((list(each.ints) for each in node.attribute if each.name == "axes"), [])
        given = self._constants.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None
        if len(inputs) > 1 and inputs[1] and (given is None or given.dtype.kind != "i"):
            return None
        return listed if given is None else [int(each) for each in given.ravel()[:MAX_DIMS]]

    def split_share(self, node: onnx.NodeProto) -> float:
        """The largest share of its input's values one output of a Split takes, by the sizes noted of them (`dims`),
        along its axis; 1 where not known."""
        axis = next((each.i for each in node.attribute if each.name == "axis"), 0)
        whole = self._dims.get(node.input[0]) if node.input else None
        if whole is None or not -len(whole) <= axis < len(whole) or not (size := whole[axis]):
            return 1.0
        parts = [self._dims.get(name) for name in node.output]
        taken = [part[axis] if part is not None and len(part) == len(whole) else None for part in parts]
        return 1.0 if None in taken or not taken else min(max(each or 0 for each in taken) / size, 1.0)

    def sliced_dims(self, node: onnx.NodeProto, dims: Dims) -> Dims:
        """The sizes of a Slice of a value of sizes `dims`: those of the axes it does not slice (its constant `axes`,
        or as many first ones as its `starts`), None on the others (on all where they are not known)."""
        inputs = list(node.input)
        starts = self._constants.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None
        axes = self._constants.values(inputs[3]) if len(inputs) > 3 and inputs[3] else None
        if len(inputs) > 3 and inputs[3] and (axes is None or axes.dtype.kind != "i"):
            return [None for _ in dims]
        if axes is None and (starts is None or len(inputs) < 2):  # how many axes a computed `starts` lists
            length = self._dims.get(inputs[1]) if len(inputs) > 1 else None
            axes = np.arange(length[0]) if length and len(length) == 1 and length[0] is not None else None
        elif axes is None and starts is not None:
            axes = np.arange(starts.size)
        if axes is None or not all(-len(dims) <= axis < len(dims) for axis in axes.ravel()[:MAX_DIMS].tolist()):
            return [None for _ in dims]
        sliced = {int(axis) % len(dims) for axis in axes.ravel()[:MAX_DIMS].tolist()}
        return [None if axis in sliced else size for axis, size in enumerate(dims)]

    def reduced_axes(self, node: onnx.NodeProto) -> set[int] | None:
        """The axes a Reduce node reduces, where its input's rank is known (`_dims`): those it lists (an
        attribute, or a constant input from opset 18), else all; None where they are not known."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if not inputs or (dims := self._dims.get(inputs[0])) is None:
            return None
        given = self._constants.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None
        if len(inputs) > 1 and inputs[1] and (given is None or given.dtype.kind != "i"):
            return None  # computed by the graph
        listed = list(options["axes"].ints) if "axes" in options else [] if given is None else given.ravel().tolist()
        listed = [int(axis) for axis in listed if -len(dims) <= axis < len(dims)]
        if not listed and "noop_with_empty_axes" in options and options["noop_with_empty_axes"].i:
            return set()  # opset 18: none listed, none reduced
        return {axis % len(dims) for axis in listed} if listed else set(range(len(dims)))

    def gathered_share(self, source: str, indices: str, node: onnx.NodeProto) -> float:
        """The share of `source`'s values a Gather of constant `indices` takes: as many as they are, over the size
        the file fixes of the axis it takes them of; 1 where either is not known."""
        axis = next((each.i for each in node.attribute if each.name == "axis"), 0)
        dims, taken = self._dims.get(source), self._constants.shape(indices)
        if dims is None or taken is None or not -len(dims) <= axis < len(dims) or not (size := dims[axis]):
            return 1.0
        return min(math.prod(taken) / size, 1.0)
