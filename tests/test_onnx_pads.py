"""Pads before a shrinking window (a stride-2 convolution, a pooling) count for what is left of them after it: a
U-Net-like x4 model, whose pads before each downsampling were counted at full size and multiplied by the
enlargements after them, was refused when it loaded. What a hostile file pads is still refused, in one line:
a Pad too large before the shrink, the pooling's own pads, a shrink undone by a pixel shuffle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_onnx_growth import assert_upscales_as, before_the_resize, exported_by_pytorch

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


class UNetLike(torch.nn.Module):
    """An encoder-decoder x4 model: down by a reflect-padded stride-2 convolution and a padded max pooling, local
    means at a quarter of the size (box filters of radius 8: padding, then average pooling), up by nearest x2
    Resizes with skip connections, then x4. Its pads at the quarter size are 16 times as many values once
    enlarged back: counted without the shrinks, 1,088 values an axis."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        edge = torch.nn.ReplicationPad2d  # reflect padding needs more pixels than a quarter of a few has
        self.head = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        self.down = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(8, 16, 3, 2), torch.nn.ReLU())
        self.pool = torch.nn.Sequential(edge(1), torch.nn.MaxPool2d(3, stride=2))
        self.local_means = torch.nn.Sequential(
            *(layer for _ in range(4) for layer in (edge(8), torch.nn.AvgPool2d(17, 1)))
        )
        self.deep = torch.nn.Sequential(edge(1), torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU())
        self.up = torch.nn.Sequential(edge(1), torch.nn.Conv2d(16, 8, 3))
        self.tail = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(8, 3, 3))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        def twice(features: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return torch.nn.functional.interpolate(features, scale_factor=scale, mode="nearest")

        full = self.head(image)
        half = self.down(full)
        half = half + twice(self.deep(self.local_means(self.pool(half))))
        full = full + self.up(twice(half))
        return torch.sigmoid(self.tail(twice(full, 4.0)))


def with_constant_pads(path: Path, network: torch.nn.Module) -> Path:
    """The file at `path` with each Pad's pads a constant, as onnx-simplifier leaves a published model (PyTorch's
    legacy exporter computes them by Reshape, Slice and Transpose): the network's padding layers', in turn."""
    from onnx import numpy_helper

    padding = (torch.nn.ReflectionPad2d, torch.nn.ReplicationPad2d)
    order = [each for each in network.modules() if isinstance(each, padding)]  # as `forward` uses them
    model = onnx.load(str(path))
    pads = [node for node in model.graph.node if node.op_type == "Pad"]
    assert len(pads) == len(order)
    for index, (node, layer) in enumerate(zip(pads, order, strict=True)):
        left, right, top, bottom = tuple(layer.padding)
        node.input[1] = f"constant_pads{index}"
        values = np.asarray([0, 0, top, left, 0, 0, bottom, right], np.int64)
        model.graph.initializer.append(numpy_helper.from_array(values, node.input[1]))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("simplified", [True, False], ids=["constant-pads", "as-exported"])
def test_a_u_net_like_model_padded_before_its_downsampling_loads_and_runs(tmp_path: Path, simplified: bool) -> None:
    """Its pads before the stride-2 convolution and the poolings were counted whole, and 16 times over after the
    two x2 Resizes: it was refused (with constant pads) as padding the image with 1,088 values. A stride-2
    window over T + P values makes at most P / 2 more than over T, and a kernel takes its pads back: it loads,
    and the file gives what the network does (its pads computed as PyTorch writes them counted too)."""
    network = UNetLike().eval()
    path = exported_by_pytorch(tmp_path / "unet.onnx", network)
    if simplified:
        with_constant_pads(path, network)
    assert_upscales_as(path, network, samples.astronaut()[100:124, 200:220])


def windowed(path: Path, nodes: list, pads: dict[str, list[int]], weights: dict[str, list[int]]) -> Path:
    """The stand-in (a x4 Resize) with its input first put through `nodes`, given `pads` (int64) and weights of
    the shapes `weights` (ones)."""
    from onnx import numpy_helper

    model = onnx.load(str(before_the_resize(path, nodes, pads)))
    model.graph.initializer.extend(
        numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in weights.items()
    )
    onnx.save(model, str(path))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "export it again with `srfeat export`" in message, message
    return message


def test_a_huge_pad_before_a_stride_2_convolution_is_still_refused(tmp_path: Path) -> None:
    """A Pad of 2,000 a side (4 GB a tile at 64 features) is refused where it is made, whatever shrinks it after;
    a stride-2 convolution's own pads of a million a side leave a million values an axis."""
    from onnx import helper

    depthwise = {"weight": [3, 1, 3, 3]}
    nodes = [
        helper.make_node("Pad", ["input", "huge"], ["padded"]),
        helper.make_node("Conv", ["padded", "weight"], ["prepared"], group=3, strides=[2, 2]),
    ]
    path = windowed(tmp_path / "pad.onnx", nodes, {"huge": [0, 0, 2000, 2000] * 2}, depthwise)
    assert "pads the image with 4,000 values on one axis by constant pads (at a Pad node)" in refusal(path)
    own = [helper.make_node("Conv", ["input", "weight"], ["prepared"], group=3, strides=[2, 2], pads=[10**6] * 4)]
    path = windowed(tmp_path / "own.onnx", own, {}, depthwise)
    assert "pads the image with 999,999 values on one axis by constant pads (at a Conv node)" in refusal(path)


@pytest.mark.parametrize(("op", "named"), [("MaxPool", "a MaxPool"), ("AveragePool", "an AveragePool")])
def test_a_pooling_s_own_pads_count(tmp_path: Path, op: str, named: str) -> None:
    """A pooling of a 3,001-pixel window padded 3,000 a side makes 3,000 values an axis more than its input: its
    pads were not counted, and it loaded."""
    from onnx import helper

    pooling = helper.make_node(op, ["input"], ["prepared"], kernel_shape=[3001, 3001], pads=[3000] * 4)
    path = windowed(tmp_path / "pooled.onnx", [pooling], {}, {})
    assert f"pads the image with 3,000 values on one axis by constant pads (at {named} node)" in refusal(path)


def test_what_a_stride_divided_a_pixel_shuffle_multiplies_back(tmp_path: Path) -> None:
    """A Pad of 1,000 a side, a stride-2 convolution (500 left) to 4 times the features, then DepthToSpace: the
    image is padded with 1,000 values again, and a Pad of 300 more makes 1,300 (counted 800, had the shuffle
    kept the shrink's credit: a chain of such would pad without bound)."""
    from onnx import helper

    nodes = [
        helper.make_node("Pad", ["input", "wide"], ["padded"]),
        helper.make_node("Conv", ["padded", "weight"], ["shrunk"], strides=[2, 2]),
        helper.make_node("DepthToSpace", ["shrunk"], ["shuffled"], blocksize=2),
        helper.make_node("Pad", ["shuffled", "more"], ["prepared"]),
    ]
    pads = {"wide": [0, 0, 500, 500] * 2, "more": [0, 0, 150, 150] * 2}
    path = windowed(tmp_path / "shuffled.onnx", nodes, pads, {"weight": [12, 3, 1, 1]})
    assert "pads the image with 1,300 values on one axis by constant pads (at a Pad node)" in refusal(path)


def test_pads_computed_as_pytorch_writes_them_are_counted(tmp_path: Path) -> None:
    """PyTorch's legacy exporter computes a padding layer's pads from constants by Reshape, Slice (steps of -1)
    and Transpose, which were not followed: a ZeroPad2d of 2,000 a side loaded."""
    path = exported_by_pytorch(tmp_path / "padded.onnx", torch.nn.Sequential(torch.nn.ZeroPad2d(2000)))
    assert "pads the image with 4,000 values on one axis by constant pads (at a Pad node)" in refusal(path)


class ThreeLevels(torch.nn.Module):
    """A U-Net of three levels: down by a stride-2 convolution, a max pooling and an average pooling (each after
    reflect or edge padding), up by three nearest x2 Resizes with skip connections, then x4."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.downs = torch.nn.ModuleList(
            [
                torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(8, 8, 3, 2)),
                torch.nn.Sequential(torch.nn.ReplicationPad2d(1), torch.nn.MaxPool2d(3, 2)),
                torch.nn.Sequential(torch.nn.ReplicationPad2d(1), torch.nn.AvgPool2d(3, 2)),
            ]
        )
        self.tail = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        levels = [self.head(image)]
        for down in self.downs:
            levels.append(down(levels[-1]))
        features = levels.pop()
        while levels:
            features = levels.pop() + torch.nn.functional.interpolate(features, scale_factor=2.0, mode="nearest")
        return torch.sigmoid(self.tail(torch.nn.functional.interpolate(features, scale_factor=4.0, mode="nearest")))


def test_a_u_net_of_three_levels_is_as_large_as_its_input_before_its_x4(tmp_path: Path) -> None:
    """Its three x2 Resizes were counted 64 times over, the shrinks before them not at all: with the x4 after,
    1,024 times, and it was refused as enlarging the image past 256 times. It loads, and runs as the network."""
    network = ThreeLevels().eval()
    path = with_constant_pads(exported_by_pytorch(tmp_path / "levels.onnx", network), network)
    assert_upscales_as(path, network, samples.astronaut()[100:124, 200:216])


class PaddedThenShrunk(torch.nn.Module):
    """A Pad of `pad` a side, a nearest Resize by 1 / 4, then by 16 (x4 in all), cropped back to 4 H x 4 W."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        padded = torch.nn.functional.pad(image, [self.pad] * 4, mode="replicate")
        shrunk = torch.nn.functional.interpolate(padded, scale_factor=0.25, mode="nearest")
        enlarged = torch.nn.functional.interpolate(shrunk, scale_factor=16.0, mode="nearest")
        return enlarged[..., 4 * self.pad : 4 * self.pad + 4 * height, 4 * self.pad : 4 * self.pad + 4 * width]


def test_a_resize_that_shrinks_takes_its_share_of_the_pads_back(tmp_path: Path) -> None:
    """A Resize by 1 / 4 leaves a quarter of what was padded before it, as a stride of 4 does: 200 values an axis
    then x16 are 800, where they were counted whole (3,200) and the model was refused. It loads and runs; pads of
    600 an axis are still refused (2,400)."""
    network = PaddedThenShrunk(100).eval()
    assert_upscales_as(exported_by_pytorch(tmp_path / "shrunk.onnx", network), network, samples.astronaut()[:8, :8])
    message = refusal(exported_by_pytorch(tmp_path / "more.onnx", PaddedThenShrunk(300).eval()))
    assert "pads the image with 2,400 values on one axis" in message, message


class ReflectPaddedThenSized(torch.nn.Module):
    """A x4 model of 64 features: x4 nearest, a reflect-padded 3x3 convolution (PyTorch's `padding_mode`: a Pad, then
    a convolution without pads of its own), then resized to exactly 4 H x 4 W, sizes computed from the input's. With
    `wider`, the map is padded by 2 a side before that convolution: 4 H + 2 rows are left, not 4 H."""

    def __init__(self, wider: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.wider = wider
        self.head = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.body = torch.nn.Conv2d(64, 64, 3, padding=0 if wider else 1, padding_mode="reflect")
        self.tail = torch.nn.Conv2d(64, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[2:]
        maps = torch.nn.functional.interpolate(self.head(image), scale_factor=4.0, mode="nearest")
        maps = self.body(torch.nn.functional.pad(maps, (2, 2, 2, 2), "reflect") if self.wider else maps)
        maps = torch.nn.functional.interpolate(maps, size=(height * 4, width * 4), mode="nearest")
        return torch.sigmoid(self.tail(maps))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_a_pad_a_convolution_takes_back_keeps_the_image_s_height_and_width(tmp_path: Path, exporter: str) -> None:
    """After the reflect-padded convolution the map was no longer known to be 4 H x 4 W, so the Resize to 4 H x 4 W
    counted the x4 again: 64 features made 16,384 values a pixel, and the file was refused. Its Pad is taken back by
    the convolution, the map is the x4 one still, and the file runs as the network does; padded by 2 a side, it is
    not, and still counts so."""
    from test_onnx_expand import exported_by_dynamo

    def exported(path: Path, network: torch.nn.Module) -> Path:
        return exported_by_pytorch(path, network) if exporter == "legacy" else exported_by_dynamo(path, network)

    network = ReflectPaddedThenSized().eval()
    path = exported(tmp_path / "reflect.onnx", network)
    assert {"Pad", "Resize"} <= {node.op_type for node in onnx.load(str(path)).graph.node}
    assert_upscales_as(path, network, samples.astronaut()[100:109, 200:207])
    wider = exported(tmp_path / "wider.onnx", ReflectPaddedThenSized(wider=True).eval())
    with pytest.raises(WeightsError, match="makes 16,384 values per pixel of the image"):
        Upscaler(wider, device="cpu")


class SizedFromTheInput(torch.nn.Module):
    """A x4 model whose sizes are computed from the input's as SR code writes them: padded to a multiple of 8
    (`(8 - w % 8) % 8`, reflected; `check_image_size`), a pixel shuffle, cropped back to 4 H x 4 W, plus the input
    resized to exactly 4 H x 4 W (`interpolate(size=...)`)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[2:]
        padded = torch.nn.functional.pad(image, (0, (8 - width % 8) % 8, 0, (8 - height % 8) % 8), "reflect")
        sized = torch.nn.functional.interpolate(image, size=(height * 4, width * 4), mode="bilinear")
        return torch.sigmoid(self.body(padded)[:, :, : height * 4, : width * 4] + sized)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_sizes_computed_from_the_input_s_load_and_run(tmp_path: Path, exporter: str) -> None:
    """A guard: pads to a multiple and crops back, and a Resize to 4 H x 4 W, computed from the input's shape in
    either exporter's way (the legacy one's Mod, the dynamo one's), load and give what the network does."""
    from test_onnx_expand import exported_by_dynamo

    network = SizedFromTheInput().eval()
    export = exported_by_pytorch if exporter == "legacy" else exported_by_dynamo
    path = export(tmp_path / "sized.onnx", network)
    assert_upscales_as(path, network, samples.astronaut()[100:109, 200:207])
