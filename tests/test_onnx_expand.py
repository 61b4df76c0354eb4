"""An Expand to a shape the graph chooses by Where(Equal(...)) from shapes it computes: PyTorch's legacy exporter
writes `x.expand(n, 200, h, w)` of sizes taken from shapes so (Where(Equal(shape, ones * -1), ones, shape)), and
`x.expand(-1, 200, -1, -1)` may be written Where(Equal(asked, -1), Shape(x), asked). Neither was followed: a grey
map enlarged x4 a side then expanded to 200 features (3,200 times the image) loaded. Both are counted now; small
ones still run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_onnx_attention import refusal
from test_onnx_growth import before_the_resize, exported_by_pytorch

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


class GreyExpandedToItsSizes(torch.nn.Module):
    """A grey map enlarged x4 a side, expanded to `features` and to the sizes its shape gives, then back to 3."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        grey = torch.nn.functional.interpolate(image.mean(1, keepdim=True), scale_factor=4.0, mode="nearest")
        wide = grey.expand(image.shape[0], self.features, grey.shape[2], grey.shape[3])
        return wide.mean(1, keepdim=True).expand(-1, 3, -1, -1)


def grey_x4(image: np.ndarray) -> np.ndarray:
    """`image` made grey (the mean of its channels, as 3) and enlarged x4 a side, nearest."""
    grey = np.round(image.astype(np.float64).mean(axis=2, keepdims=True)).repeat(3, axis=2)
    return grey.repeat(4, axis=0).repeat(4, axis=1)


def test_an_expand_to_sizes_the_legacy_exporter_chooses_by_where_counts(tmp_path: Path) -> None:
    path = exported_by_pytorch(tmp_path / "wide.onnx", GreyExpandedToItsSizes(200))
    nodes = onnx.load(str(path)).graph.node
    chooser = next(node for node in nodes if node.op_type == "Where")
    assert chooser.input[2] in {output for node in nodes if node.op_type == "Reshape" for output in node.output}
    message = refusal(path)  # in one line
    assert message.startswith(f"{path} enlarges the image 3,200 times over"), message
    assert "(at an Expand node)" in message, message
    image = samples.astronaut()[:6, :5]
    small = Upscaler(exported_by_pytorch(tmp_path / "small.onnx", GreyExpandedToItsSizes(4)), device="cpu", tile=0)
    assert np.abs(small(image).astype(np.int64) - grey_x4(image)).max() <= 1


def chosen_by_where(path: Path, features: int) -> Path:
    """The stand-in (a x4 Resize) after its input made grey and expanded to [-1, `features`, -1, -1], each -1 the
    grey map's own size by Where(Equal(asked, -1), Shape(grey), asked)."""
    from onnx import helper

    nodes = [
        helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1),
        helper.make_node("Shape", ["grey"], ["grey_shape"]),
        helper.make_node("Equal", ["asked", "minus_one"], ["kept"]),
        helper.make_node("Where", ["kept", "grey_shape", "asked"], ["target"]),
        helper.make_node("Expand", ["grey", "target"], ["prepared"]),
    ]
    constants = {"channels": [1], "minus_one": [-1], "asked": [-1, features, -1, -1]}
    return before_the_resize(path, nodes, constants)


def test_an_expand_to_a_shape_chosen_by_where_of_the_image_s_counts(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="enlarges the image 3,200 times over by constant scales \\(at a Resize"):
        Upscaler(chosen_by_where(tmp_path / "wide.onnx", 200), device="cpu")
    image = samples.astronaut()[:6, :5]
    small = Upscaler(chosen_by_where(tmp_path / "small.onnx", 3), device="cpu", tile=0)
    assert np.abs(small(image).astype(np.int64) - grey_x4(image)).max() <= 1
