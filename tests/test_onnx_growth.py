"""An .onnx graph that grows the image far past what a tile's memory plan counts, by numbers the file fixes,
is refused when it loads, in one line: a Pad of 2000 a side (4 GB a tile at 64 features), an Expand of one
channel to a thousand, a Resize by scales the graph computes from constants. What srfeat's own exports and
ordinary models do still loads and runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from test_onnx_export import srfeat_like_onnx

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler
from srfeat.inference.onnx_contents import MAX_PAD

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def before_the_resize(path: Path, nodes: list, constants: Mapping[str, list[float] | list[int]]) -> Path:
    """The stand-in model at `path` (a nearest x4 Resize) with its input first put through `nodes` (from
    "input" to "prepared"), given `constants` (int64 if all are ints, else float32) as weights."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    for name, values in constants.items():
        kind = TensorProto.INT64 if all(isinstance(each, int) for each in values) else TensorProto.FLOAT
        graph.initializer.append(helper.make_tensor(name, kind, [len(values)], values))
    graph.node[0].input[0] = "prepared"
    for index, node in enumerate(nodes):
        graph.node.insert(index, node)
    onnx.save(model, str(path))
    return path


def padded(path: Path, *pads: list[int]) -> Path:
    """The stand-in with its input padded by each of `pads` in turn (ONNX's [begins..., ends...])."""
    from onnx import helper

    names = [f"padded{index}" for index in range(len(pads))]
    nodes = [
        helper.make_node("Pad", [source, f"pads{index}"], [target], mode="edge")
        for index, (source, target) in enumerate(zip(["input", *names[:-1]], [*names[:-1], "prepared"], strict=True))
    ]
    return before_the_resize(path, nodes, {f"pads{index}": list(each) for index, each in enumerate(pads)})


@pytest.mark.parametrize(
    ("pads", "total"),
    [
        ([[0, 0, 2000, 2000, 0, 0, 2000, 2000]], "4,000"),  # 4 GB a 256-pixel tile at 64 features
        ([[0, 0, 0, 300, 0, 0, 0, 300], [0, 0, 0, 300, 0, 0, 0, 300]], "1,200"),  # along a path
        ([[0, 1500, 0, 0, 0, 0, 0, 0]], "1,500"),  # on the channels
    ],
)
def test_a_graph_that_pads_the_image_hugely_is_refused_when_it_loads(tmp_path: Path, pads: list, total: str) -> None:
    """Constant pads were added to the size, not counted as growth: a Pad of 2000 a side loaded, and each tile
    of a 64-feature map took 4000^2 values more."""
    path = padded(tmp_path / "padded.onnx", *pads)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} pads the image with {total} values on one axis"), message
    assert "(at a Pad node)" in message and "export it again with `srfeat export`" in message, message


def test_padding_up_to_the_bound_runs_and_a_crop_takes_nothing_back(tmp_path: Path) -> None:
    """`MAX_PAD` on an axis loads; a few pixels run (edge padding, then cropped back by negative pads)."""
    half = MAX_PAD // 2
    Upscaler(padded(tmp_path / "bound.onnx", [0, 0, half, 0, 0, 0, half, 0]), device="cpu")
    image = samples.astronaut()[:6, :5]
    path = padded(tmp_path / "small.onnx", [0, 0, 2, 2, 0, 0, 2, 2], [0, 0, -2, -2, 0, 0, -2, -2])
    assert np.array_equal(Upscaler(path, device="cpu", tile=0)(image), image.repeat(4, axis=0).repeat(4, axis=1))
    over = padded(tmp_path / "over.onnx", [0, 0, half, 0, 0, 0, half, 0], [0, 0, -10, 0, 0, 0, 11, 0])
    with pytest.raises(WeightsError, match=f"pads the image with {MAX_PAD + 11:,} values"):  # the crop is no refund
        Upscaler(over, device="cpu")


def test_a_pad_given_as_an_attribute_is_counted_too(tmp_path: Path) -> None:
    """Before opset 11 the pads were an attribute of Pad."""
    from onnx import helper

    model = onnx.load(str(srfeat_like_onnx(tmp_path / "old.onnx")))
    model.opset_import[0].version = 10
    del model.graph.node[:]
    model.graph.node.append(helper.make_node("Pad", ["input"], ["output"], pads=[0, 0, 0, 3000, 0, 0, 0, 0]))
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(WeightsError, match="pads the image with 3,000 values on one axis"):
        Upscaler(tmp_path / "old.onnx", device="cpu")


def expanded(path: Path, shape: list[int]) -> Path:
    """The stand-in with its input made grey (the mean of its channels), then expanded to `shape`, then
    back to 3 channels (their mean), so that it still runs."""
    from onnx import helper

    nodes = [
        helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1),
        helper.make_node("Expand", ["grey", "shape"], ["expanded"]),
        helper.make_node("ReduceMean", ["expanded", "channels"], ["mean"], keepdims=1),
        helper.make_node("Expand", ["mean", "rgb"], ["prepared"]),
    ]
    return before_the_resize(path, nodes, {"shape": shape, "channels": [1], "rgb": [1, 3, 1, 1]})


def test_an_expand_of_the_image_by_a_huge_constant_shape_is_refused(tmp_path: Path) -> None:
    """Expanding [1, 1, H, W] to [1, 1000, H, W] loaded, and made each tile 1000 times its planned memory."""
    path = expanded(tmp_path / "expanded.onnx", [1, 1000, 1, 1])
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} enlarges the image 1,000 times over"), message
    assert "(at a Expand node)" in message, message


def test_ordinary_expands_still_run(tmp_path: Path) -> None:
    """A broadcast to the features a map has already (counted alone, not along the path: it adds nothing), to
    its own height and width, and one of a per-channel constant (not the image's) load and run, after a x16
    enlargement too."""
    from onnx import helper

    image = samples.astronaut()[:6, :5]
    grey = np.round(image.astype(np.float64).mean(axis=2, keepdims=True)).repeat(3, axis=2)
    expected = grey.repeat(4, axis=0).repeat(4, axis=1)
    for shape in ([1, 64, 1, 1], [1, 64, 6, 5]):  # the height and width of a model made for one size: not counted
        result = Upscaler(expanded(tmp_path / "grey.onnx", shape), device="cpu", tile=0)(image)
        assert np.abs(result.astype(np.int64) - expected).max() <= 1, shape
    path = before_the_resize(
        tmp_path / "x16.onnx",
        [
            helper.make_node("Resize", ["input", "", "x4"], ["enlarged"], mode="nearest"),
            helper.make_node("Expand", ["enlarged", "same"], ["broadcast"]),
            helper.make_node("Expand", ["bias", "same"], ["biases"]),
            helper.make_node("Add", ["broadcast", "biases"], ["added"]),
            helper.make_node("Resize", ["added", "", "quarter"], ["prepared"], mode="nearest"),
        ],
        {"x4": [1.0, 1.0, 4.0, 4.0], "same": [1, 3, 1, 1], "bias": [0.0], "quarter": [1.0, 1.0, 0.25, 0.25]},
    )
    assert np.array_equal(Upscaler(path, device="cpu", tile=0)(image), image.repeat(4, axis=0).repeat(4, axis=1))


def computed_scales(path: Path, side: float) -> Path:
    """The stand-in with its input first resized by scales [1, 1, side, side] that the graph computes:
    Concat([1, 1], Cast(Mul([side / 2] * 2, [2, 2])))."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["halves", "twos"], ["product"]),
        helper.make_node("Cast", ["product"], ["cast"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["ones", "cast"], ["scales_made"], axis=0),
        helper.make_node("Resize", ["input", "", "scales_made"], ["prepared"], mode="nearest"),
    ]
    return before_the_resize(path, nodes, {"halves": [side / 2] * 2, "twos": [2.0, 2.0], "ones": [1.0, 1.0]})


def test_scales_computed_from_constants_are_checked_as_given_ones(tmp_path: Path) -> None:
    """A Resize's scales made by Mul of two constants were not known: x1e4 a side loaded, and ran out of memory."""
    with pytest.raises(WeightsError, match="enlarges the image 100,000,000 times over by constant scales"):
        Upscaler(computed_scales(tmp_path / "huge.onnx", 1e4), device="cpu")
    image = samples.astronaut()[:6, :5]
    small = Upscaler(computed_scales(tmp_path / "small.onnx", 1.0), device="cpu", tile=0)
    assert np.array_equal(small(image), image.repeat(4, axis=0).repeat(4, axis=1))
    Upscaler(computed_scales(tmp_path / "x4.onnx", 4.0), device="cpu")  # x16 a side: at the bound


def test_pads_computed_from_constants_are_checked_too(tmp_path: Path) -> None:
    from onnx import helper

    nodes = [
        helper.make_node("Add", ["base", "more"], ["pads_made"]),
        helper.make_node("Pad", ["input", "pads_made"], ["prepared"], mode="edge"),
    ]
    constants = {"base": [0, 0, 0, 1000, 0, 0, 0, 0], "more": [0, 0, 0, 1000, 0, 0, 0, 0]}
    with pytest.raises(WeightsError, match="pads the image with 2,000 values on one axis"):
        Upscaler(before_the_resize(tmp_path / "pads.onnx", nodes, constants), device="cpu")
