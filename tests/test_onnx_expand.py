"""An Expand to a shape the graph chooses by Where(Equal(...)) from shapes it computes: PyTorch's legacy exporter
writes `x.expand(n, 200, h, w)` of sizes taken from shapes so (Where(Equal(shape, ones * -1), ones, shape)), and
`x.expand(-1, 200, -1, -1)` may be written Where(Equal(asked, -1), Shape(x), asked). Neither was followed: a grey
map enlarged x4 a side then expanded to 200 features (3,200 times the image) loaded. Both are counted now; small
ones still run. PyTorch's dynamo exporter writes such sizes as the input's times constants, 4 H after a x4 Resize:
they count over the map's own size (a x4 Resize's 4 H), so a x4 is not counted twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_onnx_attention import refusal
from test_onnx_export import srfeat_like_onnx
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


def exported_by_dynamo(path: Path, module: torch.nn.Module) -> Path:
    """`module` exported as `srfeat export` exports (PyTorch's dynamo exporter: batch, height and width dynamic),
    with srfeat's metadata."""
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.onnx.export(
        module.eval(),
        (torch.rand(2, 3, 24, 20),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=(dims,),
        optimize=True,
        verbose=False,
    )
    assert program is not None
    model = program.model_proto
    model.metadata_props.extend(onnx.load(str(srfeat_like_onnx(path.with_suffix(".stand-in.onnx")))).metadata_props)
    onnx.save(model, str(path))
    return path


def test_an_expand_to_the_size_a_resize_made_is_not_counted_again(tmp_path: Path) -> None:
    """The dynamo exporter writes `grey.expand(n, 4, grey.shape[2], grey.shape[3])` after a x4 interpolate as an
    Expand to [n, 4, 4 H, 4 W], H and W the input's: the x4 was counted a second time on the map the Resize had
    enlarged already (4 features counted 1,024 times the image), and the model was refused. It runs now, as PyTorch
    does; 200 features are still refused, counted as they take (3,200 times)."""
    path = exported_by_dynamo(tmp_path / "small.onnx", GreyExpandedToItsSizes(4))
    nodes = onnx.load(str(path)).graph.node
    assert "Where" not in {node.op_type for node in nodes}  # sizes taken of the input's shape, times 4
    assert {"Resize", "Expand", "Mul"} <= {node.op_type for node in nodes}
    image = samples.astronaut()[:6, :5]
    upscaled = Upscaler(path, device="cpu", tile=0)(image)
    with torch.no_grad():
        expected = GreyExpandedToItsSizes(4)(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    expected_pixels = (expected[0].permute(1, 2, 0).clamp(0, 1) * 255).round().numpy()
    assert upscaled.shape == (24, 20, 3)
    assert np.abs(upscaled.astype(np.int64) - expected_pixels.astype(np.int64)).max() <= 1
    wide = exported_by_dynamo(tmp_path / "wide.onnx", GreyExpandedToItsSizes(200))
    message = refusal(wide)
    assert message.startswith(f"{wide} enlarges the image 3,200 times over"), message
    assert "(at an Expand node)" in message, message


def written_by_hand(path: Path, nodes: list, constants: dict[str, list[int] | list[float]]) -> Path:
    """srfeat's stand-in file (its input, output and metadata) with `nodes` (from "input" to "output") in place of its
    graph, given `constants` (int64 if all are ints, else float32) as weights."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    del model.graph.node[:]
    del model.graph.initializer[:]
    for name, values in constants.items():
        kind = TensorProto.INT64 if all(isinstance(each, int) for each in values) else TensorProto.FLOAT
        model.graph.initializer.append(helper.make_tensor(name, kind, [len(values)], values))
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


def expanded_after_x4(path: Path, features: int, height_times: int) -> Path:
    """A grey map enlarged x4 a side by constant scales, expanded to [N, `features`, `height_times` H, 4 W] (N, H and
    W taken of the input's shape), made grey again: the dynamo exporter's form, written by hand."""
    from onnx import helper

    constants = {"channels": [1], "features": [features], "height_times": [height_times], "four": [4]}
    return written_by_hand(
        path,
        [
            helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1),
            helper.make_node("Resize", ["grey", "", "scales"], ["large"], mode="nearest"),
            helper.make_node("Shape", ["input"], ["batch"], start=0, end=1),
            helper.make_node("Shape", ["input"], ["height"], start=2, end=3),
            helper.make_node("Shape", ["input"], ["width"], start=3, end=4),
            helper.make_node("Mul", ["height_times", "height"], ["target_height"]),
            helper.make_node("Mul", ["four", "width"], ["target_width"]),
            helper.make_node("Concat", ["batch", "features", "target_height", "target_width"], ["target"], axis=0),
            helper.make_node("Expand", ["large", "target"], ["wide"]),
            helper.make_node("ReduceMean", ["wide", "channels"], ["mean"], keepdims=1),
            helper.make_node("Expand", ["mean", "rgb"], ["output"]),
        ],
        {**constants, "scales": [1.0, 1.0, 4.0, 4.0], "rgb": [1, 3, 1, 1]},
    )


def test_an_expand_past_the_size_a_resize_made_still_counts(tmp_path: Path) -> None:
    """Only what an Expand adds to the map's own size is taken off: to 8 H on a map of 4 H (a x4 Resize's) it
    doubles the height, and 10 features after the x4 Resize count 320 times the image, refused; to 4 H, 160."""
    message = refusal(expanded_after_x4(tmp_path / "taller.onnx", 10, height_times=8))
    assert message.startswith(f"{tmp_path / 'taller.onnx'} enlarges the image 320 times over"), message
    assert "(at an Expand node)" in message, message
    image = samples.astronaut()[:6, :5]
    small = Upscaler(expanded_after_x4(tmp_path / "small.onnx", 10, height_times=4), device="cpu", tile=0)
    assert np.abs(small(image).astype(np.int64) - grey_x4(image)).max() <= 1


def test_a_resize_of_the_image_to_an_enlarged_map_s_sizes_counts_them(tmp_path: Path) -> None:
    """The sizes of a map a x4 Resize made are 4 times the image's: a Resize of the image to them times 8 enlarges
    it 32 times a side (1,024 times over). Counted so before too (8 a side, times what the map the shape was taken of
    had grown); now its sizes tell it alone (`ShapeVectors.resolved`), and must not lose the x4 they were taken of."""
    from onnx import helper

    nodes = [
        helper.make_node("Resize", ["input", "", "scales"], ["large"], mode="nearest"),
        helper.make_node("Shape", ["large"], ["large_shape"]),
        helper.make_node("Mul", ["large_shape", "eight"], ["sizes"]),
        helper.make_node("Resize", ["input", "", "", "sizes"], ["output"], mode="nearest"),
    ]
    path = written_by_hand(tmp_path / "twice.onnx", nodes, {"scales": [1.0, 1.0, 4.0, 4.0], "eight": [1, 1, 8, 8]})
    message = refusal(path)
    assert message.startswith(f"{path} enlarges the image 1,024 times over"), message
    assert "(at a Resize node)" in message, message
