"""Weights inside an .onnx file's subgraphs (an If's branches) and model-local functions are checked as the main
graph's are: a gain of 3e36 (a flipped exponent bit) or inf kept in a Constant node there loaded, and ran a
garbage image without a word. Sound ones still load and run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_onnx_export import srfeat_like_onnx

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def gain_inside(path: Path, gain: float, where: str) -> Path:
    """The stand-in (a x4 Resize) with its input first multiplied by `gain`, which a Constant node (or an
    initializer) holds inside an If's chosen branch, or inside a model-local function the graph calls."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    value = numpy_helper.from_array(np.full([1], gain, np.float32), "gain")
    keep = helper.make_node("Constant", [], ["kept"], value=numpy_helper.from_array(np.ones([1], np.float32)))
    if where == "function":
        body = [helper.make_node("Constant", [], ["gain"], value=value), helper.make_node("Mul", ["x", "gain"], ["y"])]
        opsets = [helper.make_opsetid("", 17)]
        model.functions.append(helper.make_function("local", "Scaled", ["x"], ["y"], body, opsets))
        model.opset_import.append(helper.make_opsetid("local", 1))
        nodes = [helper.make_node("Scaled", ["input"], ["scaled"], domain="local")]
    else:
        output = helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1])
        if where == "branch initializer":
            chosen = helper.make_graph([], "then", [], [output], initializer=[value])
        else:
            chosen = helper.make_graph([helper.make_node("Constant", [], ["gain"], value=value)], "then", [], [output])
        other = helper.make_graph([keep], "else", [], [helper.make_tensor_value_info("kept", TensorProto.FLOAT, [1])])
        condition = numpy_helper.from_array(np.asarray(True), "condition")
        nodes = [
            helper.make_node("Constant", [], ["condition"], value=condition),
            helper.make_node("If", ["condition"], ["chosen"], then_branch=chosen, else_branch=other),
            helper.make_node("Mul", ["input", "chosen"], ["scaled"]),
        ]
    model.graph.node[0].input[0] = "scaled"
    for index, node in enumerate(nodes):
        model.graph.node.insert(index, node)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("where", ["branch constant", "branch initializer", "function"])
@pytest.mark.parametrize(("gain", "said"), [(3e36, "has a weight of 3e+36 (in 'gain')"), (np.inf, "not finite")])
def test_a_damaged_weight_in_a_subgraph_or_a_function_is_refused(
    tmp_path: Path, where: str, gain: float, said: str
) -> None:
    """Only the main graph's initializers and Constant nodes were checked."""
    path = gain_inside(tmp_path / "damaged.onnx", gain, where)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and said in message and "export a working one again" in message, message


@pytest.mark.parametrize("where", ["branch constant", "branch initializer", "function"])
def test_a_sound_weight_there_still_loads_and_runs(tmp_path: Path, where: str) -> None:
    image = samples.astronaut()[:6, :5]
    result = Upscaler(gain_inside(tmp_path / "half.onnx", 0.5, where), device="cpu", tile=0)(image).astype(np.int64)
    expected = np.round(image.astype(np.float64) * 0.5).repeat(4, axis=0).repeat(4, axis=1)
    assert np.abs(result - expected).max() <= 1
