"""The values an .onnx file fixes (weights, Constant nodes) and what its operators make from them alone, for
`onnx_contents` to size before ONNX Runtime allocates them, and `onnx_growth` to read scales, pads and weights'
shapes of."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_operators import BROADCASTING, SAME_SHAPE
from srfeat.inference.onnx_products import broadcast_dims
from srfeat.inference.onnx_shapes import MAX_DIMS

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_CONSTANT_VALUES", "FileConstants", "GraphParts", "values_in_shape"]

# What a tensor sized by the file alone may hold. srfeat's exports make no such tensor (every shape in them
# comes from the image), and their largest weight has 590k values (an upsampling convolution of 128
# features); the largest a 2 GiB file can hold is 2^29 float32 values. 2^26 values (256 MiB as float32,
# 512 MiB at 8 bytes a value) is 100 times srfeat's largest weight, yet a fixed cost that the tile plan,
# which counts memory per pixel, can leave out on a small machine.
MAX_CONSTANT_VALUES = 2**26
# Operators whose output is computed where its inputs are constants of at most `_SMALL_VALUES` values each: a
# scale, a shape or pads computed from others (PyTorch's legacy exporter writes `x.expand(-1, 64, -1, -1)`'s
# shape as Where(Equal(shape, ConstantOfShape * -1), ConstantOfShape, shape))
_ELEMENTWISE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal}
_COMPUTED = frozenset({*_ELEMENTWISE, "Where", "ConstantOfShape", "Identity", "Cast", "Concat"})
# Of those, the ones that only rearrange their first input's values (PyTorch's legacy exporter writes a
# ReflectionPad2d's pads as Reshape(Transpose(Slice(Reshape(Concat(...)))), steps of -1 to reverse them)
_REARRANGING = frozenset({"Reshape", "Slice", "Transpose"})
_SMALL_VALUES = 16


def values_in_shape(dims: Sequence[int] | np.ndarray) -> int:
    """How many values a tensor of shape `dims` holds at the least: 0 where a dimension is 0 or negative
    (which no runtime makes). Past 2^40 (beyond any cap here) the count stops: a hostile shape of many
    large dimensions would multiply out to a number of thousands of digits. Only the first `MAX_DIMS`
    dimensions are read, which overcounts (a 0 beyond them) a shape no exporter writes."""
    shape = np.asarray(dims[:MAX_DIMS], dtype=np.int64)
    if (shape <= 0).any():
        return 0
    count = 1
    for dim in shape[shape != 1].tolist():
        count *= dim
        if count > 2**40:
            break
    return count


@dataclass
class GraphParts:
    """A model's nodes and tensors, in its graph, every subgraph (If, Loop, Scan bodies) and its functions."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    # Dense: weights, attribute values, and the values and indices of sparse tensors
    tensors: list[onnx.TensorProto] = field(default_factory=list)
    sparse: list[onnx.SparseTensorProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphParts:
        parts = cls()
        graphs = [model.graph]
        pending = [node for function in reversed(model.functions) for node in reversed(function.node)]
        while graphs or pending:
            if graphs:
                graph = graphs.pop()
                pending.extend(reversed(graph.node))  # popped in the graph's order: a node after its inputs
                parts.initializers.extend(graph.initializer)
                parts.tensors.extend(graph.initializer)
                parts.sparse.extend(graph.sparse_initializer)
                continue
            node = pending.pop()
            parts.nodes.append(node)
            for attribute in node.attribute:  # only the fields it has: a third of the time of asking for each
                for descriptor, value in attribute.ListFields():
                    if descriptor.name in ("g", "graphs"):
                        graphs.extend([value] if descriptor.name == "g" else value)
                    elif descriptor.name in ("t", "tensors"):
                        parts.tensors.extend([value] if descriptor.name == "t" else value)
                    elif descriptor.name in ("sparse_tensor", "sparse_tensors"):
                        parts.sparse.extend([value] if descriptor.name == "sparse_tensor" else value)
        parts.tensors.extend(t for sparse in parts.sparse for t in (sparse.values, sparse.indices))
        return parts


class FileConstants:
    """The values the file fixes (weights, Constant nodes), by name, read when asked for, and how many
    values an operator makes from them alone. Asked about each node in turn (`output_values`), it follows
    the shapes of what the constants alone make, and the values of small ones (a scale computed from two)."""

    def __init__(self, parts: GraphParts) -> None:
        self._tensors: dict[str, onnx.TensorProto] = {tensor.name: tensor for tensor in parts.initializers}
        self._attributes: dict[str, onnx.AttributeProto] = {
            node.output[0]: attribute
            for node in parts.nodes
            if node.op_type == "Constant" and len(node.output) == 1
            for attribute in node.attribute
        }
        # Shapes of values made from constants alone, and the values of small ones
        self._made: dict[str, list[int]] = {}
        self._computed: dict[str, np.ndarray] = {}

    def values(self, name: str) -> np.ndarray | None:
        """The values of the constant `name` as an array, or None: not a constant, or one that cannot be read
        (refused after ONNX Runtime loads, in `check_weights`, or by ONNX Runtime itself)."""
        from onnx import numpy_helper

        if (attribute := self._attributes.get(name)) is not None:
            kinds = {"value_int": attribute.i, "value_ints": attribute.ints, "value_float": attribute.f}
            if attribute.name in kinds or attribute.name == "value_floats":
                return np.asarray(kinds.get(attribute.name, attribute.floats))
            tensor = attribute.t if attribute.name == "value" else None
        else:
            tensor = self._tensors.get(name)
        if tensor is None:
            return self._computed.get(name)
        try:  # its size is bounded by its data (`check_before_loading` made sure)
            return numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001  # a damaged constant: see above
            return None

    def shape(self, name: str) -> list[int] | None:
        """The shape of the constant `name` (its first `MAX_DIMS` dimensions), without reading its values,
        or of a value made from constants alone; None for a value the graph computes from its input."""
        if (attribute := self._attributes.get(name)) is not None:
            if attribute.name == "value":
                return list(attribute.t.dims[:MAX_DIMS])
            return [len(attribute.ints) + len(attribute.floats)] if attribute.name.endswith("s") else []
        if (tensor := self._tensors.get(name)) is not None:
            return list(tensor.dims[:MAX_DIMS])
        return self._made.get(name)

    def count(self, name: str) -> int | None:
        """How many values the constant `name` has, without reading them; None for a value the graph computes."""
        return None if (shape := self.shape(name)) is None else values_in_shape(shape)

    def output_values(self, node: onnx.NodeProto) -> int | None:
        """How many values `node` makes at the least, where its constant inputs alone say; else None."""
        inputs = list(node.input)

        def constant(index: int) -> np.ndarray | None:
            return self.values(inputs[index]) if index < len(inputs) and inputs[index] else None

        op = node.op_type
        self._compute_small(node)
        if op in SAME_SHAPE and inputs and (same := self.shape(inputs[0])) is not None:
            self._made_by(node, same)
            return None  # no larger than its input, counted where that was made
        if inputs and (source := self.shape(inputs[0])) is not None and (moved := self._rearranged(node, source)):
            self._made_by(node, moved)  # a weight reshaped, transposed or normalized: its shape for `onnx_growth`
            return None  # no more values than its input, counted where that was made
        if op in ("ConstantOfShape", "Expand", "Tile", "Resize", "Pad"):
            index = {"ConstantOfShape": 0, "Resize": 3}.get(op, 1)  # the shape, repeats, sizes or pads
            if (given := constant(index)) is None or given.dtype.kind != "i":  # int64, as ONNX requires
                return None
            numbers = given.ravel()
            if op == "Pad":  # each axis grows by its pads at both ends, from at least one value
                half = len(numbers) // 2
                begins, ends = (each[:MAX_DIMS].astype(np.int64) for each in (numbers[:half], numbers[half:]))
                limit = 2**40  # no overflow in the sum: a pad past it is refused anyway
                numbers = 1 + begins.clip(-limit, limit) + ends[: len(begins)].clip(-limit, limit)
            count = values_in_shape(numbers)
            dims = numbers[:MAX_DIMS].tolist() if (numbers >= 0).all() else None  # the shape it makes, if known
            if op == "ConstantOfShape" and dims is not None:
                self._made_by(node, dims)
            elif op == "Expand" and dims is not None and (expanded := self.shape(inputs[0])) is not None:
                count = max(count, values_in_shape(self._made_by(node, broadcast_dims([expanded, dims]))))
            if op == "Tile" and (repeated := self.count(inputs[0])) is not None:  # as many times as it holds
                count *= repeated
            return count
        if op in BROADCASTING or op == "MatMul":  # of constants alone: [N, 1] + [1, N] makes N^2 values
            shapes = [self.shape(name) for name in inputs if name]
            if not shapes or any(shape is None for shape in shapes):
                return None
            known = [shape for shape in shapes if shape is not None]
            if op != "MatMul":
                return values_in_shape(self._made_by(node, broadcast_dims(known)))
            if len(known) != 2 or min(map(len, known)) < 2:
                return None
            (*batch_a, rows, _), (*batch_b, _, columns) = known
            return values_in_shape(self._made_by(node, [*broadcast_dims([batch_a, batch_b]), rows, columns]))
        if op == "Range":  # ceil((limit - start) / delta) values, for three constant scalars
            scalars = [constant(index) for index in range(3)]
            if any(each is None or each.size != 1 or each.dtype.kind not in "iuf" for each in scalars):
                return None
            start, limit, delta = (float(np.asarray(each).ravel()[0]) for each in scalars if each is not None)
            span = (limit - start) / delta if delta else math.nan
            if math.isnan(span):
                return None  # ONNX Runtime refuses a zero or NaN step itself
            # At most 2^40 (past any cap): an int64 dimension, as a span of 1e300 would not be
            count = min(max(math.ceil(span), 0), 2**40) if math.isfinite(span) else MAX_CONSTANT_VALUES + 1
            return values_in_shape(self._made_by(node, [count]))
        return None

    def _rearranged(self, node: onnx.NodeProto, source: list[int]) -> list[int] | None:
        """The shape a Reshape, Transpose, Squeeze, Unsqueeze, Flatten or Reduce makes of a value of the shape
        `source` made from constants alone, where its constants say; else None."""
        inputs, options, op = list(node.input), {each.name: each for each in node.attribute}, node.op_type
        given = self.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None
        listed = [int(each) for each in options["axes"].ints] if "axes" in options else None
        if listed is None and given is not None and given.dtype.kind == "i" and op != "Reshape":
            listed = [int(each) for each in given.ravel()[:MAX_DIMS].tolist()]  # axes as an input: opset 13, 18
        rank = len(source) + (len(listed or []) if op == "Unsqueeze" else 0)
        axes = sorted({axis % rank for axis in listed if -rank <= axis < rank}) if listed is not None else None
        if op == "Reshape" and given is not None and given.dtype.kind == "i":
            zero = not ("allowzero" in options and options["allowzero"].i)
            target = given.ravel()[:MAX_DIMS].tolist()
            sizes = [source[i] if size == 0 and zero and i < len(source) else size for i, size in enumerate(target)]
            known = values_in_shape([size for size in sizes if size != -1])
            return [values_in_shape(source) // max(known, 1) if size == -1 else size for size in sizes]
        if op == "Transpose":
            order = list(options["perm"].ints) if "perm" in options else list(range(len(source)))[::-1]
            return [source[axis] for axis in order] if sorted(order) == list(range(len(source))) else None
        if op == "Flatten":
            axis = (options["axis"].i if "axis" in options else 1) % (len(source) + 1)
            return [values_in_shape(source[:axis]), values_in_shape(source[axis:])]
        if op == "Unsqueeze" and axes is not None:
            rest = iter(source)
            return [1 if axis in axes else next(rest) for axis in range(rank)]
        if op == "Squeeze" or op.startswith("Reduce"):
            noop = "noop_with_empty_axes" in options and options["noop_with_empty_axes"].i  # none listed: none
            every = [a for a, size in enumerate(source) if (size == 1 or op != "Squeeze") and not noop]
            axes = axes if axes else every  # an empty list reduces all too
            keep = op != "Squeeze" and (options["keepdims"].i if "keepdims" in options else 1)
            return [1 if axis in axes else size for axis, size in enumerate(source) if keep or axis not in axes]
        return None

    def _compute_small(self, node: onnx.NodeProto) -> None:
        """The value of `node`'s output where it is computed from small constants alone (`_SMALL_VALUES` at
        most, in and out): a scale or a pad computed as Mul(constant, constant) is then checked as one given."""
        op, inputs = node.op_type, [self.values(name) if name else None for name in node.input]
        if (op not in _COMPUTED and op not in _REARRANGING) or not inputs or not node.output or not node.output[0]:
            return
        if any(each is None or each.size > _SMALL_VALUES for each in inputs):
            return
        given = [each for each in inputs if each is not None]
        if op == "Div" and any(each.dtype.kind != "f" for each in given):
            return  # ONNX divides integers truncating, numpy not: not needed for a scale, which is a float
        made = [given[0].ravel().tolist()] if op == "ConstantOfShape" else [list(each.shape) for each in given]
        if op not in ("Concat", "Cast", *_REARRANGING) and values_in_shape(broadcast_dims(made)) > _SMALL_VALUES:
            return  # nor is a large ConstantOfShape made to be measured
        options = {each.name: each for each in node.attribute}
        try:
            with np.errstate(all="ignore"):  # inf or NaN: refused (or not counted) where used
                if op == "Cast":
                    from onnx import helper

                    result = given[0].astype(helper.tensor_dtype_to_np_dtype(options["to"].i))
                elif op == "Concat":
                    result = np.concatenate(given, axis=options["axis"].i)
                elif op == "ConstantOfShape":  # of a float32 0 unless its `value` says
                    from onnx import numpy_helper

                    fill = numpy_helper.to_array(options["value"].t) if "value" in options else np.zeros(1, np.float32)
                    result = np.full(made[0], fill.ravel()[0], dtype=fill.dtype)
                elif op == "Where":
                    result = np.where(given[0].astype(bool), given[1], given[2])
                elif op == "Reshape":  # a 0 keeps the input's size there (unless `allowzero`)
                    keep = not ("allowzero" in options and options["allowzero"].i)
                    sizes = [size if size or not keep else given[0].shape[axis] for axis, size in enumerate(given[1])]
                    result = given[0].reshape([int(each) for each in sizes])
                elif op == "Slice":  # ONNX clamps its starts and ends as Python's slices do
                    cuts = [slice(None)] * given[0].ndim
                    for start, end, axis, step in zip(*(each.tolist() for each in given[1:5]), strict=False):
                        cuts[axis] = slice(start, end, step)
                    result = given[0][tuple(cuts)]
                elif op == "Transpose":
                    result = given[0].transpose(list(options["perm"].ints) if "perm" in options else None)
                else:
                    result = np.asarray(_ELEMENTWISE[op](*given) if op in _ELEMENTWISE else given[0])
        except Exception:  # noqa: BLE001  # what ONNX Runtime refuses itself: mismatched shapes, unknown types
            return
        if result.size <= _SMALL_VALUES:
            self._computed[node.output[0]] = result
            self._made.setdefault(node.output[0], list(result.shape))

    def _made_by(self, node: onnx.NodeProto, shape: list[int]) -> list[int]:
        """`shape`, noted as that of `node`'s output: made from constants alone, followed to where it is used."""
        if node.output and node.output[0]:
            self._made[node.output[0]] = shape
        return shape
