"""An Einsum by a weight in an .onnx file counts the features it makes as a MatMul or a Conv by one does: a 1x1
convolution written as `einsum('bchw,oc->bohw', x, W)`, or a Linear layer as `'...c,oc->...o'`, of the image's 3
features to 5,000 made 5,000 values per pixel and loaded uncounted; it is refused in one line naming the node.
One of 64 features loads and gives what the network does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from test_onnx_attention import refusal
from test_onnx_growth import assert_upscales_as, exported_by_pytorch

from srfeat.inference.onnx_contents import MAX_FEATURES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")

# Each product by a weight of [features, its input's], in both forms: over [N, C, H, W] maps, or their pixels'
# features (channels last), as a Linear layer is
EQUATIONS = {"maps": "bchw,oc->bohw", "pixels": "...c,oc->...o"}


class EinsumWidened(torch.nn.Module):
    """A x4 model whose 1x1 convolutions are Einsums by weights: the image's 3 features to `features`, then to 48,
    then a pixel shuffle."""

    def __init__(self, features: int, form: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.equation, self.channels_last = EQUATIONS[form], form == "pixels"
        self.widen = torch.nn.Parameter(torch.randn(features, 3))
        self.narrow = torch.nn.Parameter(torch.randn(48, features) / features**0.5)
        self.shuffle = torch.nn.PixelShuffle(4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        values = image.permute(0, 2, 3, 1) if self.channels_last else image
        wide = torch.relu(torch.einsum(self.equation, values, self.widen))
        narrow = torch.einsum(self.equation, wide, self.narrow)
        return torch.sigmoid(self.shuffle(narrow.permute(0, 3, 1, 2) if self.channels_last else narrow))


def exported(path: Path, network: EinsumWidened) -> Path:
    """`network` exported by PyTorch, its Einsums kept as such."""
    path = exported_by_pytorch(path, network.eval())
    nodes = onnx.load(str(path)).graph.node
    assert [node.op_type for node in nodes].count("Einsum") == 2  # as written, not made a MatMul
    return path


@pytest.mark.parametrize("form", EQUATIONS)
def test_an_einsum_by_a_weight_to_a_huge_number_of_features_is_refused(tmp_path: Path, form: str) -> None:
    """To 5,000 features from the image's 3: 5,000 values per pixel, past the bound; named as a MatMul's would be."""
    path = exported(tmp_path / "wide.onnx", EinsumWidened(5_000, form))
    message = refusal(path)
    assert (
        "makes 5,000 values per pixel of the image by a convolution's features (at an Einsum node)" in message
        and f"at most {MAX_FEATURES:,}" in message
    ), message


def test_the_refusal_is_one_line_on_the_command_line_and_nothing_is_written(tmp_path: Path) -> None:
    path = exported(tmp_path / "wide.onnx", EinsumWidened(5_000, "maps"))
    Image.fromarray(samples.astronaut()[:8, :8]).save(tmp_path / "in.png")
    result = srfeat_cli(
        "upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--backend", "onnxruntime", "--model", path
    )
    assert "makes 5,000 values per pixel" in one_error_line(result) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", EQUATIONS)
def test_an_einsum_by_a_weight_of_modest_width_loads_and_runs(tmp_path: Path, form: str) -> None:
    """To 64 features and back: the file loads and gives what the network does."""
    network = EinsumWidened(64, form).eval()
    assert_upscales_as(exported(tmp_path / "modest.onnx", network), network, samples.astronaut()[100:106, 200:205])


def test_an_einsum_of_two_values_of_the_image_is_refused_as_attention(tmp_path: Path) -> None:
    """Of the pixels' features by themselves ('bcp,bcq->bpq', Q K^T over a whole tile): (H W)^2 values, refused as
    attention is, not as a weight's unknown shape."""

    class Attended(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            pixels = image.flatten(2)
            scores = torch.einsum("bcp,bcq->bpq", pixels, pixels).softmax(-1)
            attended = torch.einsum("bcq,bpq->bcp", pixels, scores).reshape(image.shape)
            return torch.nn.functional.interpolate(attended, scale_factor=4.0)

    message = refusal(exported_by_pytorch(tmp_path / "attention.onnx", Attended()))
    assert "multiplies two values computed from the image (an Einsum node" in message, message


class Constants:
    """The file's constants, as `ShapeVectors` asks for them."""

    def __init__(self, **values: np.ndarray) -> None:
        self._values = values

    def values(self, name: str) -> np.ndarray | None:
        return self._values.get(name)

    def shape(self, name: str) -> list[int] | None:
        return list(self._values[name].shape) if name in self._values else None


def test_the_image_height_and_width_are_followed_through_an_einsum_to_a_reshape() -> None:
    """SwinIR's `view(B, H, W, C)`, an Einsum's Linear layer, then window_reverse's `view(B, H, W, -1)`, the height
    and width read off the Einsum's output: its -1 is the features per pixel (8) only where the height and width are
    known to be the image's through both (else the features after it are not known). No user-visible change was
    found for this: window_partition and attention bound what they make without it."""
    from onnx import helper

    from srfeat.inference.onnx_operators import BROADCASTING, SAME_SHAPE
    from srfeat.inference.onnx_shapes import Dims, ShapeVectors

    constants = Constants(
        weight=np.zeros((8, 3), np.float32),
        first=np.array([1], np.int64),
        last=np.array([3], np.int64),
        batch=np.array([1], np.int64),
        features=np.array([3], np.int64),
        rest=np.array([-1], np.int64),
    )
    dims: dict[str, Dims] = {"image": [1, 3, None, None]}
    shapes = ShapeVectors(constants, dims, SAME_SHAPE | BROADCASTING)
    steps = [
        (helper.make_node("Transpose", ["image"], ["pixels"], perm=[0, 2, 3, 1]), [1, None, None, 3]),
        (helper.make_node("Shape", ["pixels"], ["shape"]), [4]),
        (helper.make_node("Slice", ["shape", "first", "last"], ["sides"]), [2]),
        (helper.make_node("Concat", ["batch", "sides", "features"], ["viewed"], axis=0), [4]),
        (helper.make_node("Reshape", ["pixels", "viewed"], ["maps"]), [1, None, None, 3]),
        (helper.make_node("Einsum", ["maps", "weight"], ["mixed"], equation="bhwc,oc->bhwo"), [1, None, None, 8]),
        (helper.make_node("Shape", ["mixed"], ["mixed_shape"]), [4]),
        (helper.make_node("Slice", ["mixed_shape", "first", "last"], ["mixed_sides"]), [2]),
        (helper.make_node("Concat", ["batch", "mixed_sides", "rest"], ["reversed"], axis=0), [4]),
    ]
    for node, sizes in steps:
        if node.op_type == "Reshape":  # sizes it tells
            assert shapes.reshaped(node, dims[node.input[0]], 3.0) == sizes
        dims[node.output[0]] = sizes
        shapes.follow(node)
    reshape = helper.make_node("Reshape", ["mixed", "reversed"], ["restored"])
    assert shapes.reshaped(reshape, dims["mixed"], 8.0) == [1, None, None, 8]
