"""An .onnx graph that grows the image far past what a tile's memory plan counts, by numbers the file fixes,
is refused when it loads, in one line: a Pad of 2000 a side (4 GB a tile at 64 features), an Expand of one
channel to a thousand, a Resize by scales the graph computes from constants. What srfeat's own exports and
ordinary models do still loads and runs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
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
    """`MAX_PAD` on an axis, once the stand-in's x4 Resize has enlarged it, loads; a few pixels run (edge
    padding, then cropped back by negative pads)."""
    half = MAX_PAD // 8
    Upscaler(padded(tmp_path / "bound.onnx", [0, 0, half, 0, 0, 0, half, 0]), device="cpu")
    image = samples.astronaut()[:6, :5]
    path = padded(tmp_path / "small.onnx", [0, 0, 2, 2, 0, 0, 2, 2], [0, 0, -2, -2, 0, 0, -2, -2])
    assert np.array_equal(Upscaler(path, device="cpu", tile=0)(image), image.repeat(4, axis=0).repeat(4, axis=1))
    over = padded(tmp_path / "over.onnx", [0, 0, half, 0, 0, 0, half, 0], [0, 0, -10, 0, 0, 0, 11, 0])
    with pytest.raises(WeightsError, match=f"pads the image with {(MAX_PAD // 4 + 11) * 4:,} values"):  # no refund
        Upscaler(over, device="cpu")


def test_pads_on_different_axes_are_counted_each_on_its_own(tmp_path: Path) -> None:
    """Each Pad's most on any axis was summed along the path: 240 on the width then 240 on the height was
    refused as 480 on one axis (1,920 once the stand-in enlarges it x4). It runs (cropped back by negative
    pads); past a Transpose, which moves the axes, what was padded counts on every axis: the width's 240, now
    the height's, and 240 more are 480, and 1,920 after the stand-in's Resize."""
    from onnx import helper

    image = samples.astronaut()[:6, :5]
    crop = [0, 0, -120, -120, 0, 0, -120, -120]
    path = padded(tmp_path / "both.onnx", [0, 0, 0, 120, 0, 0, 0, 120], [0, 0, 120, 0, 0, 0, 120, 0], crop)
    assert np.array_equal(Upscaler(path, device="cpu", tile=0)(image), image.repeat(4, axis=0).repeat(4, axis=1))
    nodes = [
        helper.make_node("Pad", ["input", "width"], ["wide"], mode="edge"),
        helper.make_node("Transpose", ["wide"], ["turned"], perm=[0, 1, 3, 2]),
        helper.make_node("Pad", ["turned", "height"], ["prepared"], mode="edge"),
    ]
    constants = {"width": [0, 0, 0, 120, 0, 0, 0, 120], "height": [0, 0, 120, 0, 0, 0, 120, 0]}
    with pytest.raises(
        WeightsError, match="pads the image with 1,920 values on one axis by constant pads \\(at a Resize node\\)"
    ):
        Upscaler(before_the_resize(tmp_path / "turned.onnx", nodes, constants), device="cpu")


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
    assert "(at an Expand node)" in message, message


def widened(path: Path, shape: list[int]) -> Path:
    """The stand-in with its input enlarged x4 a side, made 64 grey features (a 1x1 convolution), expanded to
    `shape`, back to 3 (their mean, another) and to its size, so that it still runs: an Expand to the features
    the map has already, after a x16 enlargement (which with 64 times more would be refused)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Resize", ["input", "", "x4"], ["enlarged"], mode="nearest"),
        helper.make_node("Conv", ["enlarged", "to64"], ["features"]),
        helper.make_node("Expand", ["features", "shape"], ["expanded"]),
        helper.make_node("Conv", ["expanded", "to3"], ["grey"]),
        helper.make_node("Resize", ["grey", "", "quarter"], ["prepared"], mode="nearest"),
    ]
    scales = {"x4": [1.0, 1.0, 4.0, 4.0], "quarter": [1.0, 1.0, 0.25, 0.25]}
    model = onnx.load(str(before_the_resize(path, nodes, {"shape": shape, **scales})))
    model.graph.initializer.extend(
        helper.make_tensor(name, TensorProto.FLOAT, dims, [1 / dims[1]] * (dims[0] * dims[1]))
        for name, dims in (("to64", [64, 3, 1, 1]), ("to3", [3, 64, 1, 1]))
    )
    onnx.save(model, str(path))
    return path


def test_ordinary_expands_still_run(tmp_path: Path) -> None:
    """A broadcast to the features a map has already (it adds nothing, along the path either), to its own
    height and width, and one of a per-channel constant (not the image's) load and run, after a x16
    enlargement too."""
    from onnx import helper

    image = samples.astronaut()[:6, :5]
    grey = np.round(image.astype(np.float64).mean(axis=2, keepdims=True)).repeat(3, axis=2)
    expected = grey.repeat(4, axis=0).repeat(4, axis=1)
    for shape in ([1, 64, 1, 1], [1, 64, 24, 20]):  # the height and width of a model made for one size: not counted
        result = Upscaler(widened(tmp_path / "grey.onnx", shape), device="cpu", tile=0)(image)
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


def expanded_after_a_resize(path: Path, features: int, *, sliced: bool = False) -> Path:
    """The stand-in with its input made grey (one feature: their mean, or the first, `sliced`, whose size
    is not followed), enlarged x4 a side, expanded to `features` and back to 3 (their mean)."""
    from onnx import helper

    grey = helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1)
    if sliced:
        grey = helper.make_node("Slice", ["input", "zero", "channels", "channels"], ["grey"])
    nodes = [
        grey,
        helper.make_node("Resize", ["grey", "", "x4"], ["enlarged"], mode="nearest"),
        helper.make_node("Expand", ["enlarged", "shape"], ["expanded"]),
        helper.make_node("ReduceMean", ["expanded", "channels"], ["mean"], keepdims=1),
        helper.make_node("Expand", ["mean", "rgb"], ["rgb_again"]),
        helper.make_node("Resize", ["rgb_again", "", "quarter"], ["prepared"], mode="nearest"),
    ]
    constants = {"shape": [1, features, 1, 1], "channels": [1], "zero": [0], "rgb": [1, 3, 1, 1]}
    return before_the_resize(path, nodes, {**constants, "x4": [1.0, 1.0, 4.0, 4.0], "quarter": [1, 1, 0.25, 0.25]})


@pytest.mark.parametrize("sliced", [False, True])
def test_an_expand_after_a_resize_counts_with_it(tmp_path: Path, sliced: bool) -> None:
    """An Expand was counted alone: a x4 Resize (16 times) then a grey map expanded to 200 features (200
    times) loaded, and took 3,200 times the image's memory. A map whose features are not followed (a Slice of
    them) is counted as if it had one."""
    path = expanded_after_a_resize(tmp_path / "expanded.onnx", 200, sliced=sliced)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} enlarges the image 3,200 times over"), message
    assert "(at an Expand node)" in message and "export it again with `srfeat export`" in message, message
    image = samples.astronaut()[:6, :5]
    small = Upscaler(expanded_after_a_resize(tmp_path / "small.onnx", 4, sliced=sliced), device="cpu", tile=0)
    grey = image[..., :1] if sliced else np.round(image.astype(np.float64).mean(axis=2, keepdims=True))
    expected = grey.repeat(3, axis=2).repeat(4, axis=0).repeat(4, axis=1)
    assert np.abs(small(image).astype(np.int64) - expected).max() <= 1


def test_an_expand_to_a_shape_taken_of_a_wider_map_counts_its_features(tmp_path: Path) -> None:
    """An Expand to a shape the graph computes was not counted: a grey map enlarged x4 a side, then expanded to
    the batch and 200 features of a convolution's output (Shape, Slice, Concat), loaded."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1),
        helper.make_node("Resize", ["grey", "", "x4"], ["enlarged"], mode="nearest"),
        helper.make_node("Conv", ["input", "to200"], ["wide"]),
        helper.make_node("Shape", ["wide"], ["wide_shape"]),
        helper.make_node("Slice", ["wide_shape", "zero", "two"], ["batch_features"]),
        helper.make_node("Concat", ["batch_features", "ones"], ["target"], axis=0),
        helper.make_node("Expand", ["enlarged", "target"], ["prepared"]),
    ]
    constants = {"channels": [1], "x4": [1.0, 1.0, 4.0, 4.0], "zero": [0], "two": [2], "ones": [1, 1]}
    model = onnx.load(str(before_the_resize(tmp_path / "wide.onnx", nodes, constants)))
    model.graph.initializer.append(helper.make_tensor("to200", TensorProto.FLOAT, [200, 3, 1, 1], [0.0] * 600))
    onnx.save(model, str(tmp_path / "wide.onnx"))
    with pytest.raises(WeightsError, match="enlarges the image 3,200 times over by constant scales \\(at an Expand"):
        Upscaler(tmp_path / "wide.onnx", device="cpu")


def test_an_expand_no_longer_ends_the_path_it_is_on(tmp_path: Path) -> None:
    """What came after an Expand of the image started again from 1: a x4 Resize, an Expand, a x2 Resize and
    the stand-in's x4 (1,024 times) loaded as 64."""
    from onnx import helper

    nodes = [
        helper.make_node("Resize", ["input", "", "x4"], ["enlarged"], mode="nearest"),
        helper.make_node("Expand", ["enlarged", "same"], ["broadcast"]),
        helper.make_node("Resize", ["broadcast", "", "x2"], ["prepared"], mode="nearest"),
    ]
    constants = {"x4": [1.0, 1.0, 4.0, 4.0], "same": [1, 3, 1, 1], "x2": [1.0, 1.0, 2.0, 2.0]}
    with pytest.raises(WeightsError, match="enlarges the image 1,024 times over by constant scales \\(at a Resize"):
        Upscaler(before_the_resize(tmp_path / "path.onnx", nodes, constants), device="cpu")


def sized_from_the_image(path: Path, side: float, *, as_exporters_do: bool) -> Path:
    """The stand-in with its input first resized to sizes computed from its own shape, `side` times its
    height and width: Mul(Shape(input), [1, 1, side, side]), or as PyTorch's exporter writes it,
    Concat(Slice(Shape, 0, 2), Cast(Floor(Mul(Cast(Slice(Shape, 2, 4)), [side, side])))), with empty scales
    beside them (as opsets 11 and 12 required)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["input"], ["shape"])]
    if as_exporters_do:
        nodes += [
            helper.make_node("Slice", ["shape", "zero", "two"], ["batch_features"]),
            helper.make_node("Slice", ["shape", "two", "four"], ["height_width"]),
            helper.make_node("Cast", ["height_width"], ["floats"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["floats", "sides"], ["scaled"]),
            helper.make_node("Floor", ["scaled"], ["floored"]),
            helper.make_node("Cast", ["floored"], ["integers"], to=TensorProto.INT64),
            helper.make_node("Concat", ["batch_features", "integers"], ["sizes"], axis=0),
        ]
    else:
        nodes.append(helper.make_node("Mul", ["shape", "factors"], ["sizes"]))
    scales = "no_scales" if as_exporters_do else ""
    nodes.append(helper.make_node("Resize", ["input", "", scales, "sizes"], ["prepared"], mode="nearest"))
    constants = {
        "zero": [0],
        "two": [2],
        "four": [4],
        "sides": [float(side)] * 2,
        "factors": [1, 1, int(side), int(side)],
    }
    model = onnx.load(str(before_the_resize(path, nodes, constants)))
    model.graph.initializer.append(helper.make_tensor("no_scales", TensorProto.FLOAT, [0], []))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("as_exporters_do", [False, True])
def test_sizes_computed_from_the_image_shape_count_as_scales(tmp_path: Path, as_exporters_do: bool) -> None:
    """A Resize to sizes computed as the image's shape times constants was not counted: x8 a side, then the
    stand-in's x4 (1,024 times over) loaded. x1 runs as before, and x4 a side (256 times, the bound) loads."""
    huge = sized_from_the_image(tmp_path / "huge.onnx", 8, as_exporters_do=as_exporters_do)
    with pytest.raises(WeightsError) as caught:
        Upscaler(huge, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{huge} enlarges the image 1,024 times over"), message
    assert "(at a Resize node)" in message, message
    image = samples.astronaut()[:6, :5]
    same = Upscaler(
        sized_from_the_image(tmp_path / "x1.onnx", 1, as_exporters_do=as_exporters_do), device="cpu", tile=0
    )
    assert np.array_equal(same(image), image.repeat(4, axis=0).repeat(4, axis=1))
    Upscaler(sized_from_the_image(tmp_path / "x4.onnx", 4, as_exporters_do=as_exporters_do), device="cpu")


def sized_keeping_the_aspect_ratio(path: Path, policy: str) -> Path:
    """The stand-in with its input first resized to sizes [N, 3, 8 H, 1] (the last a constant), keeping its aspect
    ratio by Resize-18's `policy`."""
    from onnx import helper

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "three"], ["first"]),
        helper.make_node("Mul", ["first", "factors"], ["scaled"]),
        helper.make_node("Concat", ["scaled", "one"], ["sizes"], axis=0),
        helper.make_node(
            "Resize", ["input", "", "", "sizes"], ["prepared"], mode="nearest", keep_aspect_ratio_policy=policy
        ),
    ]
    return before_the_resize(path, nodes, {"zero": [0], "three": [3], "factors": [1, 1, 8], "one": [1]})


def test_sizes_kept_not_smaller_count_their_largest_ratio_on_every_axis(tmp_path: Path) -> None:
    """keep_aspect_ratio_policy="not_smaller" scales every axis by the largest ratio of sizes to the input's:
    [N, 3, 8 H, 1] made [8 N, 24, 8 H, 8 W] (8^4 times the image) and loaded, counted as 8 times. Stretched to
    them, as by default, the image grows 8 times, and loads."""
    path = sized_keeping_the_aspect_ratio(tmp_path / "not_smaller.onnx", "not_smaller")
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} enlarges the image 4,096 times over"), message
    assert "(at a Resize node)" in message, message
    Upscaler(sized_keeping_the_aspect_ratio(tmp_path / "stretch.onnx", "stretch"), device="cpu")


def test_srfeat_upscale_refuses_such_a_model_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """As a user meets it: `srfeat upscale --model` on a file that grows the image by an Expand after a Resize."""
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    model = expanded_after_a_resize(tmp_path / "expanded.onnx", 200)
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", model)
    line = one_error_line(result)
    assert "expanded.onnx enlarges the image 3,200 times over by constant scales (at an Expand node)" in line, line
    assert "export it again with `srfeat export`" in line and not (tmp_path / "out").exists(), line


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


class GreyWidened(torch.nn.Module):
    """A grey map enlarged x4 a side, expanded to `features` as PyTorch code writes it (-1 keeps a size), then
    back to 3 (their mean): a stand-in for srfeat's x4 that runs."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        grey = torch.nn.functional.interpolate(image.mean(1, keepdim=True), scale_factor=4.0, mode="nearest")
        return grey.expand(-1, self.features, -1, -1).mean(1, keepdim=True).expand(-1, 3, -1, -1)


def exported_by_pytorch(path: Path, module: torch.nn.Module, side: int = 8) -> Path:
    """`module` exported by PyTorch's legacy (TorchScript) exporter, which other tools' files come from, with
    srfeat's metadata (`srfeat_like_onnx`'s), traced on a `side` x `side` image."""
    torch.onnx.export(
        module,
        (torch.rand(1, 3, side, side),),
        str(path),
        dynamo=False,
        opset_version=18,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}},
    )
    model = onnx.load(str(path))
    metadata = onnx.load(str(srfeat_like_onnx(path.with_suffix(".stand-in.onnx")))).metadata_props
    model.metadata_props.extend(metadata)
    onnx.save(model, str(path))
    return path


def test_an_expand_as_pytorch_s_legacy_exporter_writes_it_counts(tmp_path: Path) -> None:
    """`x.expand(-1, 200, -1, -1)` exports as an Expand to Where(Equal(...), ConstantOfShape, ...), which was
    not followed: a grey map enlarged x4 a side then expanded to 200 features (3,200 times) loaded. So
    written by hand too; 4 features run."""
    from onnx import helper

    path = exported_by_pytorch(tmp_path / "torch.onnx", GreyWidened(200))
    assert {"ConstantOfShape", "Equal", "Where"} <= {node.op_type for node in onnx.load(str(path)).graph.node}
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} enlarges the image 3,200 times over"), message
    assert "(at an Expand node)" in message, message
    nodes = [
        helper.make_node("ReduceMean", ["input", "channels"], ["grey"], keepdims=1),
        helper.make_node("ConstantOfShape", ["rank"], ["ones"], value=helper.make_tensor("", 7, [1], [1])),
        helper.make_node("Mul", ["ones", "minus_one"], ["minus_ones"]),
        helper.make_node("Equal", ["asked", "minus_ones"], ["kept"]),
        helper.make_node("Where", ["kept", "ones", "asked"], ["target"]),
        helper.make_node("Expand", ["grey", "target"], ["prepared"]),
    ]
    constants = {"channels": [1], "rank": [4], "minus_one": [-1], "asked": [-1, 200, -1, -1]}
    with pytest.raises(WeightsError, match="enlarges the image 3,200 times over by constant scales \\(at a Resize"):
        Upscaler(before_the_resize(tmp_path / "by_hand.onnx", nodes, constants), device="cpu")
    image = samples.astronaut()[:6, :5]
    small = Upscaler(exported_by_pytorch(tmp_path / "small.onnx", GreyWidened(4)), device="cpu", tile=0)
    grey = np.round(image.astype(np.float64).mean(axis=2, keepdims=True)).repeat(3, axis=2)
    assert np.abs(small(image).astype(np.int64) - grey.repeat(4, axis=0).repeat(4, axis=1)).max() <= 1


def test_a_pad_before_a_resize_counts_enlarged_with_it(tmp_path: Path) -> None:
    """A Pad's values were counted as they were padded: 300 a side on the width (600) before the stand-in's
    x4 Resize loaded, and made 2,400 columns of each tile, where the same Pad after it makes 600."""
    path = padded(tmp_path / "padded.onnx", [0, 0, 0, 300, 0, 0, 0, 300])
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} pads the image with 2,400 values on one axis"), message
    assert "(at a Resize node)" in message and "export it again with `srfeat export`" in message, message


@pytest.mark.parametrize(("axis", "beside"), [(1, "itself"), (3, "itself"), (3, "zeros of its shape")])
def test_the_image_concatenated_with_itself_counts(tmp_path: Path, axis: int, beside: str) -> None:
    """Concat(x, x) doubles the image (along its features or its width) and was not counted: five of them
    (32 times) before the stand-in's x4 Resize (512 times over) loaded. So does a map of its size made from
    its shape (ConstantOfShape(Shape(x))), which is no shape itself."""
    from onnx import helper

    names = ["input", *(f"doubled{index}" for index in range(4)), "prepared"]
    nodes = []
    for name, after in itertools.pairwise(names):
        if beside == "itself":
            nodes.append(helper.make_node("Concat", [name, name], [after], axis=axis))
        else:
            nodes.append(helper.make_node("Shape", [name], [f"{name}_shape"]))
            nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [f"{name}_zeros"]))
            nodes.append(helper.make_node("Concat", [name, f"{name}_zeros"], [after], axis=axis))
    with pytest.raises(WeightsError, match="enlarges the image 512 times over by constant scales \\(at a Resize"):
        Upscaler(before_the_resize(tmp_path / "doubled.onnx", nodes, {}), device="cpu")


class OrdinaryNetwork(torch.nn.Module):
    """What ordinary models do that adds up if counted wrong: circular padding (eight times, then cropped
    back), a dense block (each convolution takes every map before it, concatenated), and 160 convolutions
    after reflect padding, before a x4 Resize."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = torch.nn.ModuleList(torch.nn.Conv2d(3 * (level + 1), 3, 1) for level in range(7))
        self.deep = torch.nn.Sequential(
            *(torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 3, 3)) for _ in range(160))
        )
        for layer in [*self.dense, *self.deep]:
            conv = layer[-1] if isinstance(layer, torch.nn.Sequential) else layer
            assert isinstance(conv, torch.nn.Conv2d)
            torch.nn.init.normal_(conv.weight, 0, 0.05)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        wrapped = image
        for _ in range(8):
            wrapped = torch.nn.functional.pad(wrapped, (1, 1, 1, 1), mode="circular")
        maps = [wrapped[..., 8:-8, 8:-8]]
        for convolution in self.dense:
            maps.append(convolution(torch.cat(maps, 1)))
        result = torch.sigmoid(self.deep(maps[-1]))
        return torch.nn.functional.interpolate(result, scale_factor=4.0, mode="nearest")


def assert_runs_as_exported(path: Path, network: torch.nn.Module) -> None:
    """`network` exported by PyTorch to `path` loads, and upscales a few pixels x4 as the network does."""
    assert_upscales_as(exported_by_pytorch(path, network.eval()), network, samples.astronaut()[:6, :5])


def assert_upscales_as(path: Path, network: torch.nn.Module, image: np.ndarray) -> None:
    """The file at `path` loads, and upscales `image` x4 as `network` (in eval mode) does."""
    result = Upscaler(path, device="cpu", tile=0)(image)
    with torch.no_grad():
        expected = network(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0)
    assert result.shape == (4 * image.shape[0], 4 * image.shape[1], 3)
    assert np.abs(result.astype(np.int64) - np.round(expected.numpy() * 255)).max() <= 1


def test_ordinary_concats_and_pads_still_run(tmp_path: Path) -> None:
    """None of these is refused, and the file gives what the network does."""
    assert_runs_as_exported(tmp_path / "ordinary.onnx", OrdinaryNetwork())


def test_features_an_expand_added_are_taken_back_by_a_reduction(tmp_path: Path) -> None:
    """A grey map expanded to 200 features (200 times), then made grey again, was still counted 200 times
    over after that: the stand-in's x4 Resize made it 3,200, and a file that takes 16 times the image's
    memory at most was refused. It runs; a convolution takes the features back too, and a Reduce that
    reduces nothing (opset 18's noop_with_empty_axes) does not."""
    from onnx import TensorProto, helper

    image = samples.astronaut()[:6, :5]
    grey = np.round(image.astype(np.float64).mean(axis=2, keepdims=True)).repeat(3, axis=2)
    path = expanded(tmp_path / "grey.onnx", [1, 200, 1, 1])
    result = Upscaler(path, device="cpu", tile=0)(image)
    assert np.abs(result.astype(np.int64) - grey.repeat(4, axis=0).repeat(4, axis=1)).max() <= 1
    model = onnx.load(str(path))
    reduction = next(node for node in model.graph.node if node.output[0] == "mean")
    reduction.CopyFrom(helper.make_node("Conv", ["expanded", "to1"], ["mean"]))
    model.graph.initializer.append(helper.make_tensor("to1", TensorProto.FLOAT, [1, 200, 1, 1], [1 / 200] * 200))
    onnx.save(model, str(tmp_path / "convolved.onnx"))
    result = Upscaler(tmp_path / "convolved.onnx", device="cpu", tile=0)(image)
    assert np.abs(result.astype(np.int64) - grey.repeat(4, axis=0).repeat(4, axis=1)).max() <= 1
    reduction.CopyFrom(helper.make_node("ReduceMean", ["expanded", ""], ["mean"], noop_with_empty_axes=1))
    onnx.save(model, str(tmp_path / "noop.onnx"))
    with pytest.raises(WeightsError, match="enlarges the image 3,200 times over by constant scales \\(at a Resize"):
        Upscaler(tmp_path / "noop.onnx", device="cpu")


@pytest.mark.parametrize(("added", "refused"), [(2000, True), (8, False)])
def test_a_resize_to_the_image_s_size_plus_a_constant_counts_it_as_pads(
    tmp_path: Path, added: int, refused: bool
) -> None:
    """Sizes [N, C, H + 2,000, W + 2,000] computed from the image's shape made a 256-pixel tile 80 times larger, and
    loaded: the constant beside the image's size counted nothing. It counts as a Pad of as many (refused); + 8
    loads."""
    from onnx import helper

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Add", ["shape", "more"], ["sizes"]),
        helper.make_node("Resize", ["input", "", "", "sizes"], ["prepared"], mode="nearest", name="sized"),
    ]
    path = before_the_resize(tmp_path / "sized.onnx", nodes, {"more": [0, 0, added, added]})
    if not refused:
        Upscaler(path, device="cpu")
        return
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and f"pads the image with {added:,} values on one axis" in message, message
    assert "(at a Resize node)" in message, message
