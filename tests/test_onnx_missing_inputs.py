"""A node's input in an .onnx file that names nothing (no weight, graph input or node output of that name): a Conv
whose weight named nothing was taken for a value made from the image, and refused as one whose weight's shape "the
graph computes"; a MatMul's operand so, as attention. Each is refused in one line saying which input of which node is
missing, before ONNX Runtime (whose own refusal takes several lines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from test_onnx_attention import refusal
from test_onnx_export import OPSET_18

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def srfeat_metadata_onnx(path: Path, nodes: list, initializers: list, **metadata: str) -> Path:
    """A file of `nodes` and `initializers` from "input" (Nx3xHxW) to "output", with srfeat's metadata (x4)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, None, None])],
        initializers,
    )
    model = helper.make_model(graph, **OPSET_18)
    entries = {"format": "srfeat-onnx", "scale": "4", "receptive_radius": "38", "num_features": "128", **metadata}
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def conv_then_x4(path: Path, weight: str = "weight", bias: str = "bias", matmul: str | None = None) -> Path:
    """A 3x3 Conv of 3 to 3 features (its weight and bias named `weight` and `bias`: those two are in the file), a
    MatMul of its output by `matmul` where given, then a x4 nearest Resize."""
    from onnx import TensorProto, helper

    initializers = [
        helper.make_tensor("weight", TensorProto.FLOAT, [3, 3, 3, 3], np.zeros(81, np.float32)),
        helper.make_tensor("bias", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0]),
        helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4]),
    ]
    nodes = [helper.make_node("Conv", ["input", weight, bias], ["maps"], name="head", pads=[1, 1, 1, 1])]
    if matmul is not None:
        nodes.append(helper.make_node("MatMul", ["maps", matmul], ["mixed"], name="mix"))
    nodes.append(helper.make_node("Resize", ["mixed" if matmul else "maps", "", "scales"], ["output"], mode="nearest"))
    return srfeat_metadata_onnx(path, nodes, initializers)


def test_the_stand_in_with_every_input_named_runs(tmp_path: Path) -> None:
    """The check refuses what is missing, not what is there: the Conv's weight and bias named, it runs."""
    image = samples.astronaut()[:6, :5]
    from srfeat.inference import Upscaler

    assert Upscaler(conv_then_x4(tmp_path / "named.onnx"), device="cpu")(image).shape == (24, 20, 3)


@pytest.mark.parametrize(
    ("names", "said"),
    [
        ({"weight": "nowhere"}, "a Conv node 'head' whose weight ('nowhere') is missing"),
        ({"bias": "nowhere"}, "a Conv node 'head' whose bias ('nowhere') is missing"),
        ({"matmul": "nowhere"}, "a MatMul node 'mix' whose second operand ('nowhere') is missing"),
    ],
)
def test_an_input_that_names_nothing_is_refused_as_missing(tmp_path: Path, names: dict, said: str) -> None:
    message = refusal(conv_then_x4(tmp_path / "missing.onnx", **names))
    assert said in message and "export it again" in message, message
    assert "the graph computes" not in message and "multiplies two values" not in message, message


def test_the_command_line_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    path = conv_then_x4(tmp_path / "missing.onnx", weight="nowhere")
    Image.fromarray(samples.astronaut()[:8, :8]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", path)
    assert "whose weight ('nowhere') is missing" in one_error_line(result)
    assert not (tmp_path / "out.png").exists()
