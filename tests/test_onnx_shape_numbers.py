"""Numbers an .onnx graph computes from a size the file fixes (a map's features) are followed as ONNX Runtime computes
them: an integer division truncated, a Cast to an integer, Floor, Ceil and Round applied. A Slice's size is read off
them (`chunk` in PyTorch's legacy exporter: tests/test_onnx_swin.py), and a size noted larger than the true one
would let an Expand to it pass uncounted."""

from __future__ import annotations

import numpy as np
import pytest
from test_onnx_einsum import Constants

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


def test_numbers_computed_from_a_fixed_size_are_those_onnx_runtime_computes() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from srfeat.inference.onnx_operators import BROADCASTING, SAME_SHAPE
    from srfeat.inference.onnx_shapes import Dims, ShapeVectors

    numbers = {
        "axis": np.array([1], np.int64),
        "two": np.array([2], np.int64),
        "three": np.array([3], np.int64),
        "twelve": np.array([12], np.int64),
        "tenths": np.array([0.3], np.float32),
        "half": np.array([2.0], np.float32),
    }
    constants = Constants(**numbers)
    to_int, to_float = TensorProto.INT64, TensorProto.FLOAT
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Gather", ["shape", "axis"], ["features"], axis=0),  # 5
        helper.make_node("Add", ["features", "two"], ["more"]),
        helper.make_node("Div", ["more", "three"], ["divided"]),  # 7 / 3: 2
        helper.make_node("Sub", ["features", "twelve"], ["less"]),
        helper.make_node("Div", ["less", "three"], ["negative"]),  # -7 / 3: truncated
        helper.make_node("Cast", ["features"], ["real"], to=to_float),
        helper.make_node("Mul", ["real", "tenths"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["truncated"], to=to_int),  # 1.5: 1
        helper.make_node("Mul", ["truncated", "two"], ["doubled"]),  # 2, where 1.5 doubled is a whole 3
        helper.make_node("Div", ["real", "half"], ["halved"]),  # 2.5
        *[
            node
            for op in ("Floor", "Ceil", "Round")
            for node in (
                helper.make_node(op, ["halved"], [f"{op}_real"]),
                helper.make_node("Cast", [f"{op}_real"], [op], to=to_int),
            )
        ],
    ]
    outputs = ["divided", "negative", "truncated", "doubled", "Floor", "Ceil", "Round"]
    graph = helper.make_graph(
        nodes,
        "numbers",
        [helper.make_tensor_value_info("image", to_float, [1, 5, None, None])],
        [helper.make_tensor_value_info(name, to_int, [1]) for name in outputs],
        [numpy_helper.from_array(values, name) for name, values in numbers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    computed = session.run(outputs, {"image": np.zeros((1, 5, 4, 4), np.float32)})
    dims: dict[str, Dims] = {"image": [1, 5, None, None]}
    shapes = ShapeVectors(constants, dims, SAME_SHAPE | BROADCASTING)
    for node in nodes:
        shapes.follow(node)
    followed = {name: shapes.whole_numbers(name) for name in outputs}
    assert followed == {name: values.tolist() for name, values in zip(outputs, computed, strict=True)}
    assert followed["doubled"] == [2] and followed["Round"] == [2]  # the cases that differ from the naive sums
