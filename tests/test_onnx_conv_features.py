"""An .onnx graph whose convolutions make far more features than a tile's memory plan counts is refused when
it loads, in one line: a 1x1 Conv of 3 to a million features is 12 MB of weights (a depthwise one of a
million outputs 4 MB), and asked ONNX Runtime for 4 MB per pixel of a photo. An EDSR-like body of 256
features, x4 by pixel shuffle, still loads and runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_onnx_growth import assert_runs_as_exported, assert_upscales_as, before_the_resize, exported_by_pytorch

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler
from srfeat.inference.onnx_contents import MAX_FEATURES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def widened_by(path: Path, layers: list[tuple[str, list[int], dict[str, int]]], resized: bool = False) -> Path:
    """The stand-in (a x4 Resize) with its input first put through convolutions of zero weights of the given
    (operator, weight shape, attributes), in turn (after a x4 Resize of its own where `resized`, undone after
    them), then back to 3 features (their mean, expanded), so that the graph is whole."""
    from onnx import helper, numpy_helper

    nodes, source = [], "input"
    if resized:
        nodes.append(helper.make_node("Resize", ["input", "", "x4"], ["enlarged"], mode="nearest"))
        source = "enlarged"
    for index, (op, _, options) in enumerate(layers):
        # pyright checks the unpacked attributes against make_node's own keywords (name, domain...) too.
        nodes.append(helper.make_node(op, [source, f"weight{index}"], [f"wide{index}"], **options))  # pyright: ignore[reportArgumentType]
        source = f"wide{index}"
    nodes.append(helper.make_node("ReduceMean", [source, "channels"], ["mean"], keepdims=1))
    nodes.append(helper.make_node("Expand", ["mean", "three"], ["grey" if resized else "prepared"]))
    if resized:  # back to its size: only the convolutions make it larger than the stand-in's
        nodes.append(helper.make_node("Resize", ["grey", "", "quarter"], ["prepared"], mode="nearest"))
    scales = {"x4": [1.0, 1.0, 4.0, 4.0], "quarter": [1.0, 1.0, 0.25, 0.25]}
    constants = {"channels": [1], "three": [1, 3, 1, 1], **scales}
    model = onnx.load(str(before_the_resize(path, nodes, constants)))
    model.graph.initializer.extend(
        numpy_helper.from_array(np.zeros(shape, np.float32), f"weight{index}")
        for index, (_, shape, _) in enumerate(layers)
    )
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("layers", "resized", "count", "at"),
    [
        ([("Conv", [1_000_000, 3, 1, 1], {})], False, "1,000,000", "Conv"),  # 12 MB of weights
        ([("Conv", [1_000_000, 1, 1, 1], {"group": 3})], False, "1,000,000", "Conv"),  # depthwise: 4 MB
        ([("Conv", [3, 1, 1, 1], {"group": 3}), ("Conv", [999_999, 1, 1, 1], {"group": 3})], False, "999,999", "Conv"),
        ([("ConvTranspose", [3, 400_000, 1, 1], {"group": 3})], False, "1,200,000", "ConvTranspose"),
        ([("Conv", [512, 3, 1, 1], {})], True, "8,192", "Conv"),  # after a x16 enlargement
    ],
)
def test_a_convolution_to_a_huge_number_of_features_is_refused_when_it_loads(
    tmp_path: Path, layers: list, resized: bool, count: str, at: str
) -> None:
    """Its weight fixes how many features it makes, which were not counted: it loaded, and ONNX Runtime was asked
    for terabytes on a photo."""
    path = widened_by(tmp_path / "wide.onnx", layers, resized)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path} makes {count} values per pixel of the image by a convolution's features"), (
        message
    )
    assert f"(at a {at} node)" in message and f"at most {MAX_FEATURES:,}" in message, message


def test_features_concatenated_count_together(tmp_path: Path) -> None:
    """Two convolutions of 3,000 features each pass alone; their Concat makes 6,000 and is refused. Up to the
    bound, a convolution loads and runs."""
    from onnx import helper

    path = widened_by(tmp_path / "wide.onnx", [("Conv", [3000, 3, 1, 1], {})])
    model = onnx.load(str(path))
    concat = helper.make_node("Concat", ["wide0", "wide0"], ["joined"], axis=1)
    model.graph.node.insert(1, concat)
    next(node for node in model.graph.node if node.op_type == "ReduceMean").input[0] = "joined"
    onnx.save(model, str(tmp_path / "joined.onnx"))
    with pytest.raises(WeightsError, match="makes 6,000 values per pixel .* \\(at a Concat node\\)"):
        Upscaler(tmp_path / "joined.onnx", device="cpu")
    result = Upscaler(widened_by(tmp_path / "bound.onnx", [("Conv", [MAX_FEATURES, 3, 1, 1], {})]), device="cpu")(
        samples.astronaut()[:4, :5]
    )
    assert result.shape == (16, 20, 3) and not result.any()  # zero weights: black


class EdsrLike(torch.nn.Module):
    """EDSR's shape: a head convolution to 256 features, residual blocks (scaled by 0.1), and a x4 tail of two
    convolutions to 1,024 features, each followed by a pixel shuffle x2."""

    def __init__(self, features: int = 256, blocks: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        self.body = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Conv2d(features, features, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.Conv2d(features, features, 3, padding=1),
            )
            for _ in range(blocks)
        )
        self.tail = torch.nn.Sequential(
            *(
                layer
                for _ in range(2)
                for layer in (torch.nn.Conv2d(features, 4 * features, 3, padding=1), torch.nn.PixelShuffle(2))
            ),
            torch.nn.Conv2d(features, 3, 3, padding=1),
        )
        for parameter in self.parameters():
            torch.nn.init.normal_(parameter, 0, 0.01)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.head(image)
        for block in self.body:
            features = features + 0.1 * block(features)
        return torch.sigmoid(self.tail(features))


def test_an_edsr_like_body_of_256_features_still_runs(tmp_path: Path) -> None:
    """Its x4 tail makes 1,024 features, under the bound; the file gives what the network does."""
    assert_runs_as_exported(tmp_path / "edsr.onnx", EdsrLike())


@pytest.mark.parametrize(
    ("layer", "said"),
    [  # a few bytes of weights each
        (("ConvTranspose", [3, 1, 1, 1], {"group": 3, "strides": [1000, 1000]}), "enlarges the image 1,000,000 times"),
        (("ConvTranspose", [3, 1, 1, 1], {"group": 3, "output_shape": [9000, 9000]}), "enlarges the image 81,000,000"),
        (("ConvTranspose", [3, 1, 2, 2], {"group": 3, "dilations": [50_000, 50_000]}), "with 50,000 values on one"),
        (("Conv", [3, 1, 1, 1], {"group": 3, "pads": [40_000, 0, 40_000, 0]}), "with 80,000 values on one axis"),
    ],
)
def test_a_convolution_that_enlarges_the_image_counts_as_its_growth_or_pads(
    tmp_path: Path, layer: tuple[str, list[int], dict], said: str
) -> None:
    """A ConvTranspose's strides (or output_shape) enlarge the image as a Resize's scales do, and its dilated
    kernel adds to each axis as pads do; a Conv's own pads add as a Pad node's: none was counted, and a x1000
    stride loaded, then asked ONNX Runtime for a million times a tile's memory."""
    path = widened_by(tmp_path / "enlarging.onnx", [layer])
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and said in message and f"(at a {layer[0]} node)" in message, message


class TransposedX4(torch.nn.Module):
    """Upscalers that enlarge by transposed convolutions: FSRCNN's x4 tail (kernel 9, stride 4, pads 3 and 1 of
    output padding) after a body of reflect-padded convolutions, or two x2 ones (kernel 4, stride 2, pads 1)."""

    def __init__(self, fsrcnn: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        body = [torch.nn.ReflectionPad2d(2), torch.nn.Conv2d(3, 16, 5), torch.nn.PReLU(16)]
        if fsrcnn:
            tail = [torch.nn.ConvTranspose2d(16, 3, 9, stride=4, padding=3, output_padding=1)]
        else:
            tail = [torch.nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1), torch.nn.ConvTranspose2d(16, 3, 4, 2, 1)]
        self.layers = torch.nn.Sequential(*body, *tail, torch.nn.Sigmoid())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


@pytest.mark.parametrize("fsrcnn", [True, False], ids=["fsrcnn", "two-x2"])
def test_networks_that_enlarge_by_transposed_convolutions_still_run(tmp_path: Path, fsrcnn: bool) -> None:
    """Their strides count x16, as a Resize x4's scales; their kernels add no values beyond them."""
    assert_runs_as_exported(tmp_path / "transposed.onnx", TransposedX4(fsrcnn))


def through_the_features(path: Path, nodes: list, weights: dict[str, np.ndarray], source: str) -> Path:
    """The stand-in (a x4 Resize) with its input first put through `nodes` (to `source`), given `weights`, then
    back to 3 features (their mean, expanded)."""
    from onnx import helper, numpy_helper

    nodes = [
        *nodes,
        helper.make_node("ReduceMean", [source, "channels"], ["mean"], keepdims=1),
        helper.make_node("Expand", ["mean", "three"], ["prepared"]),
    ]
    model = onnx.load(str(before_the_resize(path, nodes, {"channels": [1], "three": [1, 3, 1, 1]})))
    model.graph.initializer.extend(numpy_helper.from_array(values, name) for name, values in weights.items())
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_a_linear_layer_to_a_huge_number_of_features_is_refused(tmp_path: Path, op: str) -> None:
    """A MatMul (or Gemm) of the map's features by a [8, 100,000] weight makes 100,000 values per pixel, as a 1x1
    Conv would: it was not counted, and loaded."""
    from onnx import helper

    weight = np.zeros([8, 100_000], np.float32)
    nodes = [helper.make_node("Conv", ["input", "to8"], ["eight"])]
    if op == "MatMul":
        nodes += [
            helper.make_node("Transpose", ["eight"], ["pixels"], perm=[0, 2, 3, 1]),
            helper.make_node("MatMul", ["pixels", "linear"], ["wide"]),
            helper.make_node("Transpose", ["wide"], ["widened"], perm=[0, 3, 1, 2]),
        ]
    else:  # the pixels as rows ([H W, 8], a batch of one), the weight given transposed
        weight = weight.T.copy()
        nodes += [
            helper.make_node("Transpose", ["eight"], ["pixels"], perm=[0, 2, 3, 1]),
            helper.make_node("Flatten", ["pixels"], ["rows"], axis=3),
            helper.make_node("Gemm", ["rows", "linear"], ["wide"], transB=1),
            helper.make_node("Unsqueeze", ["wide", "outer"], ["widened"]),
        ]
    weights = {"to8": np.zeros([8, 3, 1, 1], np.float32), "linear": weight, "outer": np.asarray([0, 1], np.int64)}
    path = through_the_features(tmp_path / "linear.onnx", nodes, weights, "widened")
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert (
        "\n" not in message
        and f"makes 100,000 values per pixel of the image by a convolution's features (at a {op} node)" in message
    ), message


class LinearMlp(torch.nn.Module):
    """A transformer's feed-forward block (as SwinIR's): 32 features, Linear layers to 4 times as many and back,
    on the pixels' features (channels last), between convolutions, then x4 by pixel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 32))
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(32, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.head(image)
        features = features + self.mlp(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return torch.sigmoid(self.tail(features))


def test_a_transformer_s_feed_forward_block_still_runs(tmp_path: Path) -> None:
    """Its Linear layers (MatMul) make 128 values per pixel, under the bound; the file gives what it does."""
    assert_runs_as_exported(tmp_path / "mlp.onnx", LinearMlp())


@pytest.mark.parametrize("quantized", [False, True], ids=["reshaped", "dequantized"])
def test_a_convolution_whose_weight_is_reshaped_counts_its_features(tmp_path: Path, quantized: bool) -> None:
    """A Conv's weight kept flat and reshaped to [1,000,000, 3, 1, 1] (or int8, dequantized) made features that
    were not counted: its shape was not followed, and it loaded. Of 8 features, it loads and runs."""
    from onnx import helper

    def convolved(path: Path, features: int) -> Path:
        nodes = [
            helper.make_node("Reshape", ["flat", "shape"], ["weight"]),
            helper.make_node("Conv", ["input", "dequantized" if quantized else "weight"], ["wide"]),
        ]
        weights: dict[str, np.ndarray] = {"flat": np.zeros(3 * features, np.int8 if quantized else np.float32)}
        weights["shape"] = np.asarray([features, 3, 1, 1], np.int64)
        if quantized:
            nodes.insert(1, helper.make_node("DequantizeLinear", ["weight", "step"], ["dequantized"]))
            weights["step"] = np.asarray(0.1, np.float32)
        return through_the_features(path, nodes, weights, "wide")

    with pytest.raises(WeightsError, match="makes 1,000,000 values per pixel .* \\(at a Conv node\\)"):
        Upscaler(convolved(tmp_path / "wide.onnx", 1_000_000), device="cpu")
    result = Upscaler(convolved(tmp_path / "eight.onnx", 8), device="cpu", tile=0)(samples.astronaut()[:4, :5])
    assert result.shape == (16, 20, 3) and not result.any()  # zero weights: black


def test_a_convolution_whose_weight_the_graph_computes_from_the_image_is_refused(tmp_path: Path) -> None:
    """A weight reshaped from the image ([H W, 3, 1, 1]) makes as many features as a tile has pixels, a tile's
    square in all: how many the file cannot say, and it loaded."""
    from onnx import helper

    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["weight"]),
        helper.make_node("Conv", ["input", "weight"], ["wide"]),
    ]
    path = through_the_features(tmp_path / "computed.onnx", nodes, {"shape": np.asarray([-1, 3, 1, 1])}, "wide")
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "has a Conv node whose weight's shape the file does not fix" in message, message
    assert "cannot be bounded" in message and "do_constant_folding=True" in message, message


class BlindKernels(torch.nn.Module):
    """A blind model's convolution (DASR's): its 8 kernels of 3x3 computed from the image (a Linear layer of its mean
    colour), of a shape the file fixes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kernels = torch.nn.Linear(3, 8 * 3 * 3 * 3)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(8, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        kernels = self.kernels(image.mean((2, 3))).reshape(8, 3, 3, 3) / 27
        return torch.sigmoid(self.tail(torch.nn.functional.conv2d(image, kernels, padding=1)))


def test_a_convolution_whose_kernels_the_image_computes_loads_where_their_shape_is_fixed(tmp_path: Path) -> None:
    """Its kernels' values come from the image, their shape from the file: 8 features, as a constant weight's. It
    was refused as a weight of unknown shape; it loads and runs. Reshaped to [-1, 3, 3, 3] instead, still refused,
    in one line that names the node and says what to do."""
    from onnx import numpy_helper

    network = BlindKernels().eval()
    path = exported_by_pytorch(tmp_path / "blind.onnx", network)
    assert_upscales_as(path, network, samples.astronaut()[:6, :5])
    model = onnx.load(str(path))
    shape = next(node for node in model.graph.node if node.output[0] == "/Constant_1_output_0").attribute[0]
    assert numpy_helper.to_array(shape.t).tolist() == [8, 3, 3, 3]
    shape.t.CopyFrom(numpy_helper.from_array(np.asarray([-1, 3, 3, 3], np.int64)))
    onnx.save(model, str(tmp_path / "unfixed.onnx"))
    with pytest.raises(WeightsError) as caught:
        Upscaler(tmp_path / "unfixed.onnx", device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "has a Conv node whose weight's shape the file does not fix" in message, message
    assert "'/Conv'" in message and "reshape computed ones (a blind model's kernels) to sizes" in message, message
