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
terabytes on a photo (a MatMul's or Gemm's by a weight count alike; one whose weight's shape the graph
computes is refused, and one of two values computed from the image, attention, counts as far as the sizes the
file fixes bound it: over windows of 8x8, and not over a whole tile's pixels, which it refuses).
It returns what the graph itself says of the tiles' overlap and memory (`GraphBounds`), for the runner to take
where the metadata understates them. Once ONNX Runtime has loaded it and it is known to be a srfeat export
(`check_weights`): its weights are finite and in range.

Without the `onnx` package (a plain `pip install onnxruntime`) only the external data is looked for,
in the bytes; the rest is not checked, and the first file a process loads so says, once, in a warning
(`warn_unchecked`) naming the fix.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from srfeat.errors import WeightsError
from srfeat.inference.onnx_constants import MAX_CONSTANT_VALUES, FileConstants, GraphParts, values_in_shape
from srfeat.inference.onnx_growth import MAX_DIMS, MAX_FEATURES, MAX_GROWTH, MAX_PAD, GraphGrowth
from srfeat.inference.onnx_reach import GraphReach
from srfeat.inference.onnx_structure import check_inputs_named, check_text, node_named
from srfeat.library_warnings import warn_once
from srfeat.varint import read_varint
from srfeat.weights.reading import first_line

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FEATURES_PER_FEATURE",
    "MAX_CONSTANT_VALUES",
    "MAX_FEATURES",
    "MAX_GROWTH",
    "MAX_PAD",
    "GraphBounds",
    "check_before_loading",
    "check_weights",
    "external_data_location",
    "parse_model",
    "warn_unchecked",
]

logger = logging.getLogger(__name__)

# Bytes a tensor's data takes in the file, per value, at the least: raw data packs 4-bit types two to a
# byte (8 leaves room for narrower ones), and each typed entry (1 byte or more) holds at most two values.
_VALUES_PER_BYTE = 8
_REFUSAL = "this is not a model srfeat can run safely; export it again with `srfeat export`"
# Values per pixel of the image the largest map of a srfeat model of F features makes, over F: its upsampling
# convolutions' 4 F, before each DepthToSpace (`GraphGrowth.features`), which the tile plan's (3 s^2 + 8) F counts
FEATURES_PER_FEATURE = 4


@dataclass(frozen=True)
class GraphBounds:
    """What the graph says of its tiles: how far its output sees into the image (`onnx_reach.GraphReach`: its
    convolutions'), and the features of a srfeat model whose largest map makes as many values per pixel of the image
    as the graph's largest does (`GraphGrowth.features` over `FEATURES_PER_FEATURE`)."""

    receptive_radius: int
    num_features: int


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


def check_before_loading(data: bytes, parsed: onnx.ModelProto | None, source: str) -> GraphBounds | None:
    """Refuse, in one line, what ONNX Runtime must not be given: external data, and tensors the file alone
    sizes beyond `MAX_CONSTANT_VALUES`. `parsed` is `data` parsed (`parse_model`), or None. What the graph says of its
    tiles (`GraphBounds`); None where it is not parsed."""
    if parsed is not None:  # every check below reads its names and operators as text, and follows what they name
        check_text(parsed, source)
        check_inputs_named(parsed, source)
    parts = None if parsed is None else GraphParts.of(parsed)
    if (location := external_data_location(data, parts)) is not None:
        raise WeightsError(
            f"{source} keeps its weights in another file ({location[:80]!r}, external data), which srfeat "
            "does not read: give a self-contained .onnx file, as srfeat export writes"
        )
    if parts is None:  # bytes onnx cannot parse are ONNX Runtime's to refuse; without onnx, they run unchecked
        warn_unchecked(source)
        return None
    for tensor in parts.tensors:
        declared = values_in_shape(tensor.dims)
        # Its data cannot fill it: nothing to allocate for (ByteSize serializes it: for large ones only)
        if declared > MAX_CONSTANT_VALUES and declared > _VALUES_PER_BYTE * tensor.ByteSize():
            raise _unreadable(
                source, tensor.name, f"it declares {declared:,} values and holds {tensor.ByteSize()} bytes"
            )
    for sparse in parts.sparse:
        if (count := values_in_shape(sparse.dims)) > MAX_CONSTANT_VALUES:
            name = sparse.values.name
            raise WeightsError(
                f"{source} has a sparse weight {name[:60]!r} of at least {count:,} values once expanded (as ONNX "
                f"Runtime does when it loads), more than a srfeat model needs ({MAX_CONSTANT_VALUES:,}): {_REFUSAL}"
            )
    constants = FileConstants(parts)
    growth_of = GraphGrowth(constants, _input_dims(parsed))
    inputs = [] if parsed is None else parsed.graph.input
    reach = GraphReach(constants, [each.name for each in inputs if constants.shape(each.name) is None])
    most_features = 1.0
    for node in parts.nodes:
        reach.note(node)
        if (count := constants.output_values(node)) is not None and count > MAX_CONSTANT_VALUES:
            raise WeightsError(
                f"{source} makes a tensor of at least {count:,} values from its constants alone "
                f"({node_named(node)}), more than a srfeat model needs ({MAX_CONSTANT_VALUES:,}): {_REFUSAL}"
            )
        if (growth := growth_of.growth(node)) > MAX_GROWTH:
            raise WeightsError(
                f"{source} enlarges the image {growth:,.0f} times over by constant scales (at "
                f"{node_named(node)}), where a srfeat model enlarges it 16 times (x4 a side), and at "
                f"most {MAX_GROWTH}: {_REFUSAL}"
            )
        if (features := growth_of.features(node)) == math.inf and growth_of.multiplies_image_values(node):
            raise WeightsError(
                f"{source} multiplies two values computed from the image ({node_named(node)} "
                f"{node.name[:60]!r}, as attention does) over sizes the file does not fix, which over a tile's pixels "
                "makes (H W)^2 values per head: attention within windows of fixed size (as SwinIR's 8x8) or across "
                "the channels (as Restormer's) loads, not attention across all of a tile's pixels"
            )
        if features == math.inf:
            raise WeightsError(
                f"{source} has {node_named(node)} whose weight's shape the file does not fix (the graph "
                f"computes it: {node.name[:60]!r}), so how many features it makes per pixel cannot be bounded: keep "
                "its weights as constants (PyTorch folds them: torch.onnx.export(..., do_constant_folding=True)), or "
                "reshape computed ones (a blind model's kernels) to sizes the file fixes"
            )
        if features > MAX_FEATURES:
            raise WeightsError(
                f"{source} makes {features:,.0f} values per pixel of the image by a convolution's features (at "
                f"{node_named(node)}), where srfeat's bundled models make 512, and at most "
                f"{MAX_FEATURES:,}: {_REFUSAL}"
            )
        if (padded := growth_of.padded(node)) > MAX_PAD:
            raise WeightsError(
                f"{source} pads the image with {padded:,} values on one axis by constant pads (at "
                f"{node_named(node)}), where a srfeat model pads none, and at most {MAX_PAD:,}: {_REFUSAL}"
            )
        most_features = max(most_features, features)
    # the reach is a sum of halves and quarters of pixels: a rounding error does not make it a pixel more
    radius = math.ceil(round(reach.radius, 6))
    return GraphBounds(radius, math.ceil(most_features / FEATURES_PER_FEATURE))


def _input_dims(parsed: onnx.ModelProto | None) -> dict[str, list[int | None]]:
    """The sizes the graph's inputs declare of their axes, None where one is named or left out: ONNX Runtime
    refuses an input of other sizes than those, so they hold for the image (3 features, srfeat's)."""
    declared = {}
    for value in [] if parsed is None else parsed.graph.input:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim[:MAX_DIMS]
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


def external_data_location(data: bytes, parts: GraphParts | None) -> str | None:
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
    if (read := read_varint(data, found.end())) is None:  # the value's length
        return ""
    length, start = read
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
    graph's clamp turns white, was an all-white image without a word; a 1e36 one, a garbage image. Those of
    its subgraphs (If, Loop, Scan bodies) and functions too, which ONNX Runtime runs as it runs the graph."""
    import onnx
    from onnx import numpy_helper

    parts = GraphParts.of(parsed)
    constants = [node for node in parts.nodes if node.op_type == "Constant" and node.output]
    for node in constants:
        for attribute in node.attribute:
            if attribute.name in ("value_float", "value_floats"):
                floats = [attribute.f] if attribute.name == "value_float" else attribute.floats
                yield node.output[0], np.asarray(floats, dtype=np.float32)
    tensors = [attribute.t for node in constants for attribute in node.attribute if attribute.name == "value"]
    for initializer in [*parts.initializers, *tensors]:
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
