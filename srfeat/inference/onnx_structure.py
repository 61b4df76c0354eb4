"""How many parts an ONNX file declares, counted from its bytes before anything parses it.

A protocol buffer's repeated fields cost two bytes each in the file but far more once parsed: a 6 MB
file of three million empty nodes took ONNX Runtime 3.1 GB and 7 s to load (and `onnx` 0.4 GB
more), and a 2 GB one would take hundreds. srfeat's exports have a few hundred nodes; a file declaring
more than `MAX_PARTS` nodes, attributes, weights and graph entries in all is refused before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from srfeat.errors import WeightsError

__all__ = ["MAX_PARTS", "check_part_count"]

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
        key, position = _varint(data, position)
        if key is None:
            return
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            if value is None:
                return
            yield number, None
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
            yield number, None
        elif wire_type == 2:
            length, position = _varint(data, position)
            if length is None or position + length > end:
                return
            yield number, data[position : position + length]
            position += length
        else:  # groups (3, 4) are not in ONNX's schema; 6 and 7 are not wire types
            return


def _varint(data: memoryview, position: int) -> tuple[int | None, int]:
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            return None, position
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
    return None, position
