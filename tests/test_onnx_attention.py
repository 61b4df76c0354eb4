"""Attention in an .onnx file, the product of two values computed from the image, counts for what it makes: over
all a tile's pixels (Q K^T of a whole tile) it makes (H W)^2 values per head, terabytes on a 1024-pixel tile, and
loaded unchecked; it is refused in one line naming the node. Over windows of sizes the file fixes (SwinIR's 8x8)
it makes heads x window^2 values per pixel, counted against the same bound as a convolution's features: such a
model loads and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from test_onnx_conv_features import through_the_features
from test_onnx_growth import assert_upscales_as, exported_by_pytorch

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler
from srfeat.inference.onnx_contents import MAX_FEATURES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


class WindowAttention(torch.nn.Module):
    """A x4 model with one attention block, SwinIR's: Q, K and V by one Linear layer, attention within windows of
    `window` x `window` pixels (None: over all the pixels at once), then a pixel shuffle."""

    def __init__(
        self, window: int | None, heads: int = 2, features: int = 16, chunked: bool = False, einsum: bool = False
    ) -> None:
        super().__init__()
        self.chunked = chunked  # Q, K and V split off the Linear layer's output (Restormer's), not gathered
        self.einsum = einsum  # Q K^T and its product by V written as Einsums (as some ports write them)
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        self.qkv = torch.nn.Linear(features, 3 * features)
        self.projection = torch.nn.Linear(features, features)
        self.window, self.heads = window, heads
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(features, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.head(image)
        batch, features, height, width = maps.shape
        side = self.window
        if side is None:
            windows = maps.flatten(2).transpose(1, 2)
        else:
            split = maps.view(batch, features, height // side, side, width // side, side)
            windows = split.permute(0, 2, 4, 3, 5, 1).reshape(-1, side * side, features)
        count, pixels, features = windows.shape
        if self.chunked:
            query, key, value = (
                part.reshape(count, pixels, self.heads, features // self.heads).transpose(1, 2)
                for part in self.qkv(windows).chunk(3, dim=-1)
            )
        else:
            qkv = self.qkv(windows).reshape(count, pixels, 3, self.heads, features // self.heads)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        query = query * (features // self.heads) ** -0.5
        if self.einsum:
            attention = torch.einsum("bhqd,bhkd->bhqk", query, key).softmax(-1)
            weighted = torch.einsum("bhqk,bhkd->bhqd", attention, value)
        else:
            weighted = query @ key.transpose(-2, -1)
            weighted = weighted.softmax(-1) @ value
        attended = self.projection(weighted.transpose(1, 2).reshape(count, pixels, features))
        if side is None:
            attended = attended.transpose(1, 2).reshape(batch, features, height, width)
        else:
            attended = attended.view(batch, height // side, width // side, side, side, features)
            attended = attended.permute(0, 5, 1, 3, 2, 4).reshape(batch, features, height, width)
        return torch.sigmoid(self.tail(maps + attended))


@pytest.mark.parametrize(("chunked", "einsum"), [(False, False), (True, False), (False, True)])
def test_attention_within_windows_loads_and_runs(tmp_path: Path, chunked: bool, einsum: bool) -> None:
    """Over 4x4 windows, 2 heads: Q K^T makes 32 values per pixel; the file gives what the network does. Written
    as Einsums, it was refused as attention over sizes the file does not fix."""
    network = WindowAttention(window=4, chunked=chunked, einsum=einsum).eval()
    path = exported_by_pytorch(tmp_path / "windowed.onnx", network)
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("Einsum") == (2 if einsum else 0)
    assert_upscales_as(path, network, samples.astronaut()[100:108, 200:212])


def refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# What the refusal of attention across all of a tile's pixels says does load: windows, and channel attention too
ALLOWED_ATTENTION = (
    "attention within windows of fixed size (as SwinIR's 8x8) or across the channels (as Restormer's) loads, "
    "not attention across all of a tile's pixels"
)


def test_attention_over_all_the_pixels_is_refused_in_one_line(tmp_path: Path) -> None:
    """Q K^T of a whole tile ([pixels, 8] by [8, pixels]) makes pixels^2 values per head: it loaded, and would ask
    ONNX Runtime for 4 billion values per head on a 256-pixel tile. The node is named, and what to do said; as a
    user meets it on the command line too, and nothing is written."""
    path = exported_by_pytorch(tmp_path / "global.onnx", WindowAttention(window=None).eval())
    message = refusal(path)
    assert message.startswith(f"{path} multiplies two values computed from the image (a MatMul node '/MatMul'"), message
    assert "(H W)^2 values per head" in message and ALLOWED_ATTENTION in message, message
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", path)
    assert message in one_error_line(result) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("einsum", "node"), [(False, "a MatMul"), (True, "an Einsum")])
def test_attention_over_windows_too_large_counts_against_the_features_bound(
    tmp_path: Path, einsum: bool, node: str
) -> None:
    """Over 32x32 windows with 8 heads, Q K^T makes 8 x 1,024 values per pixel: more than a convolution may make,
    and refused as one would be; as an Einsum too."""
    network = WindowAttention(window=32, heads=8, einsum=einsum).eval()
    message = refusal(exported_by_pytorch(tmp_path / "wide.onnx", network, side=32))
    assert "makes 8,192 values per pixel of the image" in message and f"(at {node} node)" in message, message
    assert f"at most {MAX_FEATURES:,}" in message, message


def test_einsum_attention_over_all_the_pixels_is_refused_as_a_matmul_s(tmp_path: Path) -> None:
    path = exported_by_pytorch(tmp_path / "global.onnx", WindowAttention(window=None, einsum=True).eval())
    message = refusal(path)
    assert message.startswith(f"{path} multiplies two values computed from the image (an Einsum node"), message
    assert "(H W)^2 values per head" in message and ALLOWED_ATTENTION in message, message


def test_a_product_of_the_image_broadcast_against_itself_is_refused(tmp_path: Path) -> None:
    """The image's values as a [P, 1, 1] column times them as a [1, 1, P] row broadcasts to [P, 1, P]: P^2 values,
    with no attention in sight. Each input's batch axis is the other's broadcast: refused."""
    from onnx import helper

    nodes = [
        helper.make_node("Reshape", ["input", "column_shape"], ["column"]),
        helper.make_node("Reshape", ["input", "row_shape"], ["row"]),
        helper.make_node("MatMul", ["column", "row"], ["square"], name="outer"),
    ]
    shapes = {"column_shape": np.asarray([-1, 1, 1]), "row_shape": np.asarray([1, 1, -1])}
    message = refusal(through_the_features(tmp_path / "outer.onnx", nodes, shapes, "square"))
    assert "multiplies two values computed from the image (a MatMul node 'outer'" in message, message


@pytest.mark.parametrize(("features", "refused"), [(5_000, True), (4_000, False)])
def test_a_linear_layer_of_the_image_counts_its_three_features(tmp_path: Path, features: int, refused: bool) -> None:
    """The image has 3 features, not 1: a Linear layer of its pixels' 3 values to 5,000 makes 5,000 values per
    pixel, and was counted as 1,667 (5,000 / 3) and loaded. To 4,000 it loads and runs."""
    from onnx import helper

    nodes = [
        helper.make_node("Transpose", ["input"], ["pixels"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["pixels", "linear"], ["wide"]),
        helper.make_node("Transpose", ["wide"], ["maps"], perm=[0, 3, 1, 2]),
    ]
    weights = {"linear": np.zeros((3, features), np.float32)}
    path = through_the_features(tmp_path / "linear.onnx", nodes, weights, "maps")
    if refused:
        message = refusal(path)
        assert (
            f"makes {features:,} values per pixel of the image by a convolution's features (at a MatMul node)"
            in message
        ), message
    else:
        result = Upscaler(path, device="cpu", tile=0)(samples.astronaut()[:4, :5])
        assert result.shape == (16, 20, 3) and not result.any()  # zero weights: black
