"""What an .onnx file holds, parsed once with the `onnx` package and checked around ONNX Runtime's load.

Before ONNX Runtime is given the file (`check_before_loading`): no tensor keeps its values in another
file (external data), and nothing the file alone sizes is larger than `MAX_CONSTANT_VALUES`: a tensor
declared larger than its data, a sparse weight (ONNX Runtime expands it when it loads), or an operator
that makes a tensor from the file's constants alone: from a shape in them (ConstantOfShape [2^40]
loaded, then stopped the first tile with ONNX Runtime's "std::bad_alloc"; a merely large one takes
memory for nothing), or from constants broadcast together ([N, 1] + [1, N] makes N^2 values; the
shapes are followed through a chain of such operators). Nor does it enlarge the image more than
`MAX_GROWTH` times by constant scales (Resize, Upsample, Tile, Expand; scales computed from small
constants are computed, sizes computed as the image's shape times constants are followed), or pad an
axis of it with more than `MAX_PAD` values (`onnx_growth`): a Resize by 1e5 loaded, then ran out of
memory on the first tile. Nor do a convolution's output features make more than `MAX_FEATURES` values per
pixel of the image: a 1x1 Conv of 3 to a million features (4 MB of weights) loaded, then asked for
terabytes on a photo.
Once ONNX Runtime has loaded it and it is known to be a srfeat export (`check_weights`): its weights
are finite and in range.

Without the `onnx` package (a plain `pip install onnxruntime`) only the external data is looked for,
in the bytes; the rest is not checked, and the first file a process loads so says, once, in a warning
(`warn_unchecked`) naming the fix.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from srfeat.errors import WeightsError
from srfeat.inference.onnx_growth import BROADCASTING, MAX_FEATURES, MAX_GROWTH, MAX_PAD, SAME_SHAPE, GraphGrowth
from srfeat.inference.onnx_growth import MAX_DIMS as _MAX_DIMS
from srfeat.library_warnings import warn_once
from srfeat.weights.reading import first_line

if TYPE_CHECKING:
    import onnx

__all__ = [
    "MAX_CONSTANT_VALUES",
    "MAX_FEATURES",
    "MAX_GROWTH",
    "MAX_PAD",
    "check_before_loading",
    "check_weights",
    "external_data_location",
    "parse_model",
    "warn_unchecked",
]

logger = logging.getLogger(__name__)

# What a tensor sized by the file alone may hold. srfeat's exports make no such tensor (every shape in them
# comes from the image), and their largest weight has 590k values (an upsampling convolution of 128
# features); the largest a 2 GiB file can hold is 2^29 float32 values. 2^26 values (256 MiB as float32,
# 512 MiB at 8 bytes a value) is 100 times srfeat's largest weight, yet a fixed cost that the tile plan,
# which counts memory per pixel, can leave out on a small machine.
MAX_CONSTANT_VALUES = 2**26
# Bytes a tensor's data takes in the file, per value, at the least: raw data packs 4-bit types two to a
# byte (8 leaves room for narrower ones), and each typed entry (1 byte or more) holds at most two values.
_VALUES_PER_BYTE = 8
# Operators whose output is computed where its inputs are constants of at most `_SMALL_VALUES` values each: a
# scale, a shape or pads computed from others (PyTorch's legacy exporter writes `x.expand(-1, 64, -1, -1)`'s
# shape as Where(Equal(shape, ConstantOfShape * -1), ConstantOfShape, shape))
_ELEMENTWISE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal}
_COMPUTED = frozenset({*_ELEMENTWISE, "Where", "ConstantOfShape", "Identity", "Cast", "Concat"})
# Of those, the ones that only rearrange their first input's values (PyTorch's legacy exporter writes a
# ReflectionPad2d's pads as Reshape(Transpose(Slice(Reshape(Concat(...)))), steps of -1 to reverse them)
_REARRANGING = frozenset({"Reshape", "Slice", "Transpose"})
_SMALL_VALUES = 16
_REFUSAL = "this is not a model srfeat can run safely; export it again with `srfeat export`"


def parse_model(data: bytes) -> onnx.ModelProto | None:
    """`data` parsed by the `onnx` package; None without it, or when it does not parse (ONNX Runtime, given
    the bytes, says why: a checkpoint or an image named .onnx is named as such)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load_from_string(data)
    except Exception:  # noqa: BLE001  # protobuf's DecodeError, or onnx's own for what it cannot read
        return None


def check_before_loading(data: bytes, parsed: onnx.ModelProto | None, source: str) -> None:
    """Refuse, in one line, what ONNX Runtime must not be given: external data, and tensors the file alone
    sizes beyond `MAX_CONSTANT_VALUES`. `parsed` is `data` parsed (`parse_model`), or None."""
    parts = None if parsed is None else _Parts.of(parsed)
    if (location := external_data_location(data, parts)) is not None:
        raise WeightsError(
            f"{source} keeps its weights in another file ({location[:80]!r}, external data), which srfeat "
            "does not read: give a self-contained .onnx file, as srfeat export writes"
        )
    if parts is None:  # bytes onnx cannot parse are ONNX Runtime's to refuse; without onnx, they run unchecked
        warn_unchecked(source)
        return
    for tensor in parts.tensors:
        declared = _values_in_shape(tensor.dims)
        # Its data cannot fill it: nothing to allocate for (ByteSize serializes it: for large ones only)
        if declared > MAX_CONSTANT_VALUES and declared > _VALUES_PER_BYTE * tensor.ByteSize():
            raise _unreadable(
                source, tensor.name, f"it declares {declared:,} values and holds {tensor.ByteSize()} bytes"
            )
    for sparse in parts.sparse:
        if (count := _values_in_shape(sparse.dims)) > MAX_CONSTANT_VALUES:
            name = sparse.values.name
            raise WeightsError(
                f"{source} has a sparse weight {name[:60]!r} of at least {count:,} values once expanded (as ONNX "
                f"Runtime does when it loads), more than a srfeat model needs ({MAX_CONSTANT_VALUES:,}): {_REFUSAL}"
            )
    constants = _Constants(parts)
    growth_of = GraphGrowth(constants, _input_dims(parsed))
    for node in parts.nodes:
        if (count := constants.output_values(node)) is not None and count > MAX_CONSTANT_VALUES:
            raise WeightsError(
                f"{source} makes a tensor of at least {count:,} values from its constants alone (a {node.op_type[:40]} "
                f"node), more than a srfeat model needs ({MAX_CONSTANT_VALUES:,}): {_REFUSAL}"
            )
        if (growth := growth_of.growth(node)) > MAX_GROWTH:
            raise WeightsError(
                f"{source} enlarges the image {growth:,.0f} times over by constant scales (at a {node.op_type[:40]} "
                f"node), where a srfeat model enlarges it 16 times (x4 a side), and at most {MAX_GROWTH}: {_REFUSAL}"
            )
        if (features := growth_of.features(node)) > MAX_FEATURES:
            raise WeightsError(
                f"{source} makes {features:,.0f} values per pixel of the image by a convolution's features (at a "
                f"{node.op_type[:40]} node), where srfeat's bundled models make 512, and at most "
                f"{MAX_FEATURES:,}: {_REFUSAL}"
            )
        if (padded := growth_of.padded(node)) > MAX_PAD:
            raise WeightsError(
                f"{source} pads the image with {padded:,} values on one axis by constant pads (at a "
                f"{node.op_type[:40]} node), where a srfeat model pads none, and at most {MAX_PAD:,}: {_REFUSAL}"
            )


def _input_dims(parsed: onnx.ModelProto | None) -> dict[str, list[int | None]]:
    """The sizes the graph's inputs declare of their axes, None where one is named or left out: ONNX Runtime
    refuses an input of other sizes than those, so they hold for the image (3 features, srfeat's)."""
    declared = {}
    for value in [] if parsed is None else parsed.graph.input:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim[:_MAX_DIMS]
            declared[value.name] = [
                dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in dims
            ]
    return declared


def warn_unchecked(source: str) -> None:
    """Once a process, where the `onnx` package is missing: what goes unchecked, and how to check it. A
    file given as bytes only: srfeat's own exports come parsed (exporting needs onnx), and are trusted."""
    try:
        import onnx  # noqa: F401  # only whether it imports
    except ImportError:
        warn_once(
            logger,
            "onnx is missing",
            f"the onnx package is not installed, so {source} (and any other .onnx file) runs without srfeat's "
            "checks of its sizes and weights (a hostile file can take all memory, a damaged weight gives a wrong "
            'image): pip install -e ".[onnx]" in srfeat\'s folder (or pip install onnx)',
        )


def external_data_location(data: bytes, parts: _Parts | None) -> str | None:
    """Where the first tensor kept outside the file says it is, if it has one: weights, Constant nodes'
    values and those of subgraphs and functions alike, as ONNX Runtime reads them all.

    `parts` are those of `data` parsed. Without them (no `onnx` package, or bytes it cannot parse), the
    bytes are searched for the "location" key that every writer of external data encodes the same way (a
    weight's data could hold it by chance: 1 in 2^80 per byte).
    """
    if parts is not None:
        import onnx

        for tensor in parts.tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                return {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        return None
    if (found := _LOCATION_ENTRY.search(data)) is None:
        return None
    length, start = 0, found.end()
    for shift, byte in enumerate(data[start : start + 2]):  # the value's length, a varint
        length |= (byte & 0x7F) << (7 * shift)
        start += 1
        if byte < 0x80:
            break
    return data[start : start + min(length, 80)].decode("utf-8", "replace")


# A TensorProto's external_data entry (field 13) whose key (field 1) is "location", then its value (field 2)
_LOCATION_ENTRY = re.compile(rb"j(?:[\x80-\xff][\x00-\x7f]|[\x00-\x7f])\n\x08location\x12")


def check_weights(parsed: onnx.ModelProto | None, data: bytes, source: str) -> None:
    """A weight that is NaN or inf is refused: the graph's own clamp would turn an inf output into white
    pixels, a silent wrong image (PyTorch weights get the same check when they load). So is one beyond
    `MAX_WEIGHT_MAGNITUDE`, as checkpoints' are: a bit flipped in an exponent gives a finite garbage image.

    Reading the weights needs the `onnx` package, which a plain `pip install onnxruntime` lacks: without
    it the file runs unchecked, and a NaN output is still refused after the network. `parsed` is `data`
    parsed (`parse_model`); None where onnx is missing or could not parse what ONNX Runtime did.
    """
    try:
        import onnx
    except ImportError:  # `check_before_loading` warned (`warn_unchecked`)
        return
    from srfeat.weights.checks import MAX_WEIGHT_MAGNITUDE

    if parsed is None:  # ONNX Runtime read what onnx cannot: its weights would go unchecked
        try:
            parsed = onnx.load_from_string(data)
        except Exception as error:  # protobuf's DecodeError, or onnx's own
            raise WeightsError(
                f"{source} is damaged or not a srfeat export: the onnx package cannot read it ({first_line(error)}); "
                "export it again"
            ) from error
    bad = 0
    largest = (0.0, "")
    for name, values in _weight_values(parsed, source):
        finite = np.isfinite(values)
        bad += int(values.size - np.count_nonzero(finite))
        largest = max(largest, (float(np.abs(values[finite]).max(initial=0.0)), name))
    if bad:
        raise WeightsError(
            f"{source} has {bad:,} weight value(s) that are not finite (NaN or inf): a diverged or damaged "
            "model; export a working one again"
        )
    if largest[0] > MAX_WEIGHT_MAGNITUDE:  # a flipped bit in a float's exponent: 1e-2 becomes 3e36
        raise WeightsError(
            f"{source} has a weight of {largest[0]:.3g} (in {largest[1][:60]!r}), where trained generators stay "
            f"far below {MAX_WEIGHT_MAGNITUDE:g}: a diverged or damaged model; export a working one again"
        )


def _weight_values(parsed: onnx.ModelProto, source: str) -> Iterator[tuple[str, np.ndarray]]:
    """The graph's floating weights, by name, as arrays: its initializers, and its Constant nodes' (a tensor,
    or a `value_float` or `value_floats`), which other tools keep weights in: an inf bias in one, which the
    graph's clamp turns white, was an all-white image without a word; a 1e36 one, a garbage image."""
    import onnx
    from onnx import numpy_helper

    constants = [node for node in parsed.graph.node if node.op_type == "Constant" and node.output]
    for node in constants:
        for attribute in node.attribute:
            if attribute.name in ("value_float", "value_floats"):
                floats = [attribute.f] if attribute.name == "value_float" else attribute.floats
                yield node.output[0], np.asarray(floats, dtype=np.float32)
    tensors = [attribute.t for node in constants for attribute in node.attribute if attribute.name == "value"]
    for initializer in [*parsed.graph.initializer, *tensors]:
        if initializer.data_location == onnx.TensorProto.EXTERNAL:
            continue  # not in this file: refused before ONNX Runtime was given it (`check_before_loading`)
        try:  # a weight whose declared shape its data does not fill (a damaged or hostile file)
            values = numpy_helper.to_array(initializer)
        except Exception as error:  # ValueError, or onnx's own for an unknown data type
            raise _unreadable(source, initializer.name, first_line(error)) from error
        if np.issubdtype(values.dtype, np.floating) and values.size:
            yield initializer.name, values


def _unreadable(source: str, name: str, reason: str) -> WeightsError:
    return WeightsError(
        f"{source} is damaged or not a srfeat export: its weight {name[:60]!r} cannot be read ({reason}); "
        "export it again"
    )


def _values_in_shape(dims: Sequence[int] | np.ndarray) -> int:
    """How many values a tensor of shape `dims` holds at the least: 0 where a dimension is 0 or negative
    (which no runtime makes). Past 2^40 (beyond any cap here) the count stops: a hostile shape of many
    large dimensions would multiply out to a number of thousands of digits. Only the first `_MAX_DIMS`
    dimensions are read, which overcounts (a 0 beyond them) a shape no exporter writes."""
    shape = np.asarray(dims[:_MAX_DIMS], dtype=np.int64)
    if (shape <= 0).any():
        return 0
    count = 1
    for dim in shape[shape != 1].tolist():
        count *= dim
        if count > 2**40:
            break
    return count


def _broadcast(shapes: list[list[int]]) -> list[int]:
    """The shape of `shapes` broadcast together, as ONNX (and numpy) do; the largest dimension where they
    disagree (ONNX Runtime refuses those itself)."""
    rank = max(map(len, shapes), default=0)
    padded = [[1] * (rank - len(shape)) + shape for shape in shapes]
    return [0 if 0 in dims else max(dims) for dims in zip(*padded, strict=True)]


@dataclass
class _Parts:
    """A model's nodes and tensors, in its graph, every subgraph (If, Loop, Scan bodies) and its functions."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    # Dense: weights, attribute values, and the values and indices of sparse tensors
    tensors: list[onnx.TensorProto] = field(default_factory=list)
    sparse: list[onnx.SparseTensorProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Parts:
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


class _Constants:
    """The values the file fixes (weights, Constant nodes), by name, read when asked for, and how many
    values an operator makes from them alone. Asked about each node in turn (`output_values`), it follows
    the shapes of what the constants alone make, and the values of small ones (a scale computed from two)."""

    def __init__(self, parts: _Parts) -> None:
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
        """The shape of the constant `name` (its first `_MAX_DIMS` dimensions), without reading its values,
        or of a value made from constants alone; None for a value the graph computes from its input."""
        if (attribute := self._attributes.get(name)) is not None:
            if attribute.name == "value":
                return list(attribute.t.dims[:_MAX_DIMS])
            return [len(attribute.ints) + len(attribute.floats)] if attribute.name.endswith("s") else []
        if (tensor := self._tensors.get(name)) is not None:
            return list(tensor.dims[:_MAX_DIMS])
        return self._made.get(name)

    def count(self, name: str) -> int | None:
        """How many values the constant `name` has, without reading them; None for a value the graph computes."""
        return None if (shape := self.shape(name)) is None else _values_in_shape(shape)

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
        if op in ("ConstantOfShape", "Expand", "Tile", "Resize", "Pad"):
            index = {"ConstantOfShape": 0, "Resize": 3}.get(op, 1)  # the shape, repeats, sizes or pads
            if (given := constant(index)) is None or given.dtype.kind != "i":  # int64, as ONNX requires
                return None
            numbers = given.ravel()
            if op == "Pad":  # each axis grows by its pads at both ends, from at least one value
                half = len(numbers) // 2
                begins, ends = (each[:_MAX_DIMS].astype(np.int64) for each in (numbers[:half], numbers[half:]))
                limit = 2**40  # no overflow in the sum: a pad past it is refused anyway
                numbers = 1 + begins.clip(-limit, limit) + ends[: len(begins)].clip(-limit, limit)
            count = _values_in_shape(numbers)
            dims = numbers[:_MAX_DIMS].tolist() if (numbers >= 0).all() else None  # the shape it makes, if known
            if op == "ConstantOfShape" and dims is not None:
                self._made_by(node, dims)
            elif op == "Expand" and dims is not None and (expanded := self.shape(inputs[0])) is not None:
                count = max(count, _values_in_shape(self._made_by(node, _broadcast([expanded, dims]))))
            if op == "Tile" and (repeated := self.count(inputs[0])) is not None:  # as many times as it holds
                count *= repeated
            return count
        if op in BROADCASTING or op == "MatMul":  # of constants alone: [N, 1] + [1, N] makes N^2 values
            shapes = [self.shape(name) for name in inputs if name]
            if not shapes or any(shape is None for shape in shapes):
                return None
            known = [shape for shape in shapes if shape is not None]
            if op != "MatMul":
                return _values_in_shape(self._made_by(node, _broadcast(known)))
            if len(known) != 2 or min(map(len, known)) < 2:
                return None
            (*batch_a, rows, _), (*batch_b, _, columns) = known
            return _values_in_shape(self._made_by(node, [*_broadcast([batch_a, batch_b]), rows, columns]))
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
            return _values_in_shape(self._made_by(node, [count]))
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
        if op not in ("Concat", "Cast", *_REARRANGING) and _values_in_shape(_broadcast(made)) > _SMALL_VALUES:
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
