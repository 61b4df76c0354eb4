"""How many parts an ONNX file declares, counted from its bytes before anything parses it; and whether its
text, once parsed, is text.

A protocol buffer's repeated fields cost two bytes each in the file but far more once parsed: a 6 MB
file of three million empty nodes took ONNX Runtime 3.1 GB and 7 s to load (and `onnx` 0.4 GB
more), and a 2 GB one would take hundreds. srfeat's exports have a few hundred nodes; a file declaring
more than `MAX_PARTS` nodes, attributes, weights and graph entries in all is refused before it is read.

ONNX's names, operator types and metadata are protocol buffer strings that no parser checks as UTF-8 (the
format is proto2): a flipped byte in one came back from `onnx` as bytes where the checks expect a str (a
TypeError), and from ONNX Runtime's metadata as a UnicodeDecodeError. `check_text` refuses such a file.

A node's input that names nothing (no weight, graph input or node output of that name) is refused by ONNX Runtime in
a multi-line message; the checks after this one would take it for the image: a Conv whose weight names nothing was
refused as one whose weight's shape "the graph computes". `check_inputs_named` says what is missing, first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from srfeat.errors import WeightsError
from srfeat.varint import read_varint

if TYPE_CHECKING:
    import onnx
    from google.protobuf.message import Message

__all__ = ["MAX_PARTS", "check_inputs_named", "check_part_count", "check_text", "node_named", "not_text_error"]

MAX_PARTS = 200_000
# The message fields that hold repeated parts, by message: ModelProto's graph (7) and functions (25);
# GraphProto's nodes (1); FunctionProto's nodes (7); NodeProto's attributes (5); AttributeProto's
# graph (6) and graphs (11). Every field of these messages counts as a part.
_MODEL, _GRAPH, _FUNCTION, _NODE, _ATTRIBUTE = range(5)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 25: _FUNCTION},
    _GRAPH: {1: _NODE},
    _FUNCTION: {7: _NODE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {6: _GRAPH, 11: _GRAPH},
}
# Deeper nesting than protobuf's own limit (100 messages) is refused by every parser anyway
_MAX_DEPTH = 100


def check_part_count(model: bytes, source: str) -> None:
    """A one-line WeightsError if `model` declares more than `MAX_PARTS` parts; bytes that are not a
    protocol buffer are left for the parser to refuse. The count stops at the limit: linear in it."""
    budget = MAX_PARTS
    stack = [(memoryview(model), _MODEL, 0)]
    while stack:
        data, kind, depth = stack.pop()
        for number, payload in _fields(data):
            budget -= 1
            if budget < 0:
                raise WeightsError(
                    f"{source} declares more than {MAX_PARTS:,} nodes, attributes and weights, where a srfeat "
                    "export has a few hundred: damaged or not a srfeat export; export it again"
                )
            child = _CHILDREN[kind].get(number)
            if child is not None and payload is not None and depth < _MAX_DEPTH:
                stack.append((payload, child, depth + 1))


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload of a length-delimited field, else None) for each field of a message;
    it stops where the bytes stop being a message."""
    position, end = 0, len(data)
    while position < end:
        if (read := read_varint(data, position)) is None:
            return
        key, position = read
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            if (read := read_varint(data, position)) is None:
                return
            position = read[1]
            yield number, None
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
            yield number, None
        elif wire_type == 2:
            if (read := read_varint(data, position)) is None:
                return
            length, position = read
            if position + length > end:  # its payload runs past the message
                return
            yield number, data[position : position + length]
            position += length
        else:  # groups (3, 4) are not in ONNX's schema; 6 and 7 are not wire types
            return


def not_text_error(source: str, found: bytes) -> WeightsError:
    """The one-line refusal of a file holding `found` where ONNX has text (a name, an operator, metadata)."""
    return WeightsError(
        f"{source} holds metadata or names that are not UTF-8 text ({found[:40]!r}): damaged, or not a srfeat "
        "export; export it again with `srfeat export`"
    )


def _first_non_text(message: Message) -> bytes | None:
    """The first string field of `message`, nested messages included, that protobuf's parser left as bytes
    (upb does, for text that is not UTF-8); None when all are text. Nesting is bounded by protobuf's own limit."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            for text in [value] if isinstance(value, (str, bytes)) else value:
                if isinstance(text, bytes):
                    return text
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for part in [value] if hasattr(value, "ListFields") else value:
                if (found := _first_non_text(part)) is not None:
                    return found
    return None


def check_text(parsed: Message, source: str) -> None:
    """`not_text_error` if a string field of the parsed model (names, operator types, metadata) is not text."""
    if (found := _first_non_text(parsed)) is not None:
        raise not_text_error(source, found)


# Operators whose names begin with a vowel said as a consonant ("a Unique", "a OneHot")
_SAID_WITH_A_CONSONANT = ("Uni", "One", "Use", "Eu")
# What the inputs of the operators the checks follow are, in words (else "input 2")
_INPUT_ROLES = {
    "Conv": ("input", "weight", "bias"),
    "ConvTranspose": ("input", "weight", "bias"),
    "MatMul": ("first operand", "second operand"),
    "Gemm": ("first operand", "second operand", "bias"),
    "Einsum": ("first operand", "second operand", "third operand"),
    "Resize": ("input", "region of interest", "scales", "sizes"),
    "Reshape": ("input", "shape"),
    "Expand": ("input", "shape"),
    "Pad": ("input", "pads", "constant value", "axes"),
}


def check_inputs_named(model: onnx.ModelProto, source: str) -> None:
    """A one-line WeightsError naming the first node (and which of its inputs) whose input names nothing: in the main
    graph, no graph input, weight or node output of that name; in a subgraph (If, Loop, Scan bodies), none anywhere in
    the model (a body may use its outer graphs' values). A function's nodes name its inputs: not checked here."""
    graphs = list(_graphs(model.graph))
    defined_anywhere = set().union(*(_defined(graph) for graph in graphs))
    for index, graph in enumerate(graphs):
        defined = _defined(graph) if index == 0 else defined_anywhere
        for node in graph.node:
            for position, name in enumerate(node.input):
                if name and name not in defined:
                    raise _missing_input(source, node, position, name)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph`, then every subgraph in its nodes' attributes (If, Loop, Scan bodies), depth first. Nesting is bounded by
    protobuf's own limit."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for nested in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _graphs(nested)


def _defined(graph: onnx.GraphProto) -> set[str]:
    """The names `graph` gives values: its inputs, weights (sparse ones too) and its nodes' outputs."""
    names = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    names |= {sparse.values.name for sparse in graph.sparse_initializer}
    return names | {name for node in graph.node for name in node.output}


def node_named(node: onnx.NodeProto) -> str:
    """`node` as a refusal names it: "a Conv node", "an Einsum node" (its operator as the file writes it, cut short:
    the file may name it anything), "a Unique node" (said "you")."""
    op = node.op_type[:40]
    vowel = op.startswith(tuple("AEIOU")) and not op.startswith(_SAID_WITH_A_CONSONANT)
    return f"{'an' if vowel else 'a'} {op} node"


def _missing_input(source: str, node: onnx.NodeProto, position: int, name: str) -> WeightsError:
    roles = _INPUT_ROLES.get(node.op_type, ())
    role = roles[position] if position < len(roles) else f"input {position + 1}"
    return WeightsError(
        f"{source} has {node_named(node)} {node.name[:60]!r} whose {role} ({name[:60]!r}) is missing: no "
        "weight, graph input or node output has that name; damaged or not a srfeat export: export it again"
    )
