"""The image's values broadcast against each other: an Add or a Mul of the image as a [P, 1, 1] column and as a
[1, 1, P] row makes P^2 values (1.6e9 on a 200x200 tile), and an Expand of [.., H, W] to [.., H, W, H, W] a tile's
pixels squared. Both loaded, each new axis counted as 1. They are refused now, in one line; ordinary broadcasting
(a per-channel weight, the image plus itself, a mask, channel attention, a column of H beside a row of W) runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_onnx_attention import refusal
from test_onnx_conv_features import through_the_features
from test_onnx_expand import exported_by_dynamo
from test_onnx_growth import assert_upscales_as, exported_by_pytorch
from test_onnx_missing_inputs import srfeat_metadata_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")

EXPORTERS: dict[str, Callable[[Path, torch.nn.Module], Path]] = {
    "legacy": exported_by_pytorch,
    "dynamo": exported_by_dynamo,
}
GROWTH = "enlarges the image 1,024 times over by constant scales"


@pytest.mark.parametrize("op", ["Mul", "Sub", "Max"])
def test_the_image_as_a_column_and_as_a_row_broadcast_together_is_refused(tmp_path: Path, op: str) -> None:
    """[P, 1, 1] against [1, 1, P] makes [P, 1, P], whatever the elementwise operator: counted as the least tile's
    pixels over (a size the file does not fix may be all of a tile's), so refused, with the node named."""
    from onnx import helper

    nodes = [
        helper.make_node("Reshape", ["input", "column_shape"], ["column"]),
        helper.make_node("Reshape", ["input", "row_shape"], ["row"]),
        helper.make_node(op, ["column", "row"], ["square"], name="outer"),
    ]
    shapes = {"column_shape": np.asarray([-1, 1, 1]), "row_shape": np.asarray([1, 1, -1])}
    path = through_the_features(tmp_path / "outer.onnx", nodes, shapes, "square")
    message = refusal(path)
    assert message.startswith(f"{path} {GROWTH} (at a") and f"{op} node)" in message, message


class ColumnByRow(torch.nn.Module):
    """The image's values as a column times them as a row (of all of them, or of each channel's pixels), summed
    back to the image."""

    def __init__(self, per_channel: bool) -> None:
        super().__init__()
        self.per_channel = per_channel

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            n, c, h, w = image.shape
            square = image.reshape(n, c, h * w, 1) * image.reshape(n, c, 1, h * w)
            return square.mean((2, 3), keepdim=True) + image
        return (image.reshape(-1, 1, 1) * image.reshape(1, 1, -1)).mean() + image


@pytest.mark.parametrize("exporter", sorted(EXPORTERS))
@pytest.mark.parametrize("per_channel", [False, True])
def test_a_column_by_a_row_as_pytorch_exports_it_is_refused(tmp_path: Path, exporter: str, per_channel: bool) -> None:
    path = EXPORTERS[exporter](tmp_path / "outer.onnx", ColumnByRow(per_channel))
    assert "Mul" in {node.op_type for node in onnx.load(str(path)).graph.node}
    message = refusal(path)
    assert message.startswith(f"{path} {GROWTH} (at a Mul node)"), message


def expanded_to_its_pixels(path: Path) -> Path:
    """The input given two axes of 1 ([N, C, H, W, 1, 1]), expanded to its height and width there (taken of its
    shape: [N, C, H, W, H, W]), then their mean taken back."""
    from onnx import helper

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "four"], ["sides"]),
        helper.make_node("Concat", ["shape", "sides"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "six"], ["placed"]),
        helper.make_node("Expand", ["placed", "target"], ["pixels"], name="pixels"),
        helper.make_node("ReduceMean", ["pixels", "last"], ["back"], keepdims=0),
    ]
    weights = {
        "two": np.asarray([2]),
        "four": np.asarray([4]),
        "six": np.asarray([0, 0, 0, 0, 1, 1]),
        "last": np.asarray([4, 5]),
    }
    return through_the_features(path, nodes, weights, "back")


def expanded_to_its_rows(path: Path) -> Path:
    """The input given an axis of 1 ([N, C, H, W, 1]), expanded to its height there (taken of its shape:
    [N, C, H, W, H]), then its mean taken back as the output: H values for each of the image's, and no other growth
    (no x4 Resize, whose 16 alone would have refused it with the 32 counted before)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "three"], ["rows"]),
        helper.make_node("Concat", ["shape", "rows"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "five"], ["placed"]),
        helper.make_node("Expand", ["placed", "target"], ["expanded"], name="rows"),
        helper.make_node("ReduceMean", ["expanded", "last"], ["output"], keepdims=0),
    ]
    weights = {"two": [2], "three": [3], "five": [0, 0, 0, 0, 1], "last": [4]}
    initializers = [helper.make_tensor(name, TensorProto.INT64, [len(each)], each) for name, each in weights.items()]
    return srfeat_metadata_onnx(path, nodes, initializers)


def test_an_expand_to_one_new_axis_of_the_image_s_height_is_refused(tmp_path: Path) -> None:
    """One new axis of the image's height holds H values for each of the image's: 512 on a 512-pixel tile, where the
    tile plan counts the same memory for each pixel of any tile. It counted as the least tile's side (32) and loaded;
    it counts as a size that may be all a tile's pixels now, as a column by a row does, and is refused."""
    path = expanded_to_its_rows(tmp_path / "rows.onnx")
    message = refusal(path)
    assert message.startswith(f"{path} {GROWTH} (at an Expand node)"), message


class ExpandedToItsPixels(torch.nn.Module):
    """`expanded_to_its_pixels`, in PyTorch."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        n, c, h, w = image.shape
        return image.reshape(n, c, h, w, 1, 1).expand(n, c, h, w, h, w).mean((4, 5)) + image


def test_an_expand_to_new_axes_of_the_image_s_height_and_width_is_refused(tmp_path: Path) -> None:
    """New axes of the image's height and width count as the least tile's pixels (32 x 32): 1,024, as one alone does."""
    path = expanded_to_its_pixels(tmp_path / "pixels.onnx")
    message = refusal(path)
    assert message.startswith(f"{path} {GROWTH} (at an Expand node)"), message


@pytest.mark.parametrize("exporter", sorted(EXPORTERS))
def test_such_an_expand_as_pytorch_exports_it_is_refused(tmp_path: Path, exporter: str) -> None:
    path = EXPORTERS[exporter](tmp_path / "pixels.onnx", ExpandedToItsPixels())
    assert "Expand" in {node.op_type for node in onnx.load(str(path)).graph.node}
    message = refusal(path)
    assert message.startswith(f"{path} {GROWTH} (at an Expand node)"), message


class OrdinaryBroadcasts(torch.nn.Module):
    """What real models broadcast: the image times a per-channel weight, plus itself, times a mask of one channel,
    times channel attention (its mean over the pixels), plus a column of its rows' means beside a row of its columns'
    (the image's own H x W), before a x4 Resize."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([0.5, 0.25, 0.75]).reshape(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(image.mean(1, keepdim=True))
        mixed = (image * self.weight + image) * mask * image.mean((2, 3), keepdim=True)
        grid = image.mean((1, 3), keepdim=True) + image.mean((1, 2), keepdim=True)
        result = torch.clamp(mixed + 0.1 * grid, 0, 1)
        return torch.nn.functional.interpolate(result, scale_factor=4.0, mode="nearest")


@pytest.mark.parametrize("exporter", sorted(EXPORTERS))
def test_ordinary_broadcasting_still_loads_and_runs(tmp_path: Path, exporter: str) -> None:
    network = OrdinaryBroadcasts().eval()
    path = EXPORTERS[exporter](tmp_path / "ordinary.onnx", network)
    assert_upscales_as(path, network, samples.astronaut()[:6, :5])
