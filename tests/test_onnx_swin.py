"""A SwinIR of several blocks, shifted windows between them, as an .onnx file: window_reverse's `view(B, H, W, -1)`
and torch.roll's Slice + Concat made it refused, the first as attention whose windows were no longer known, the
second as the image placed beside itself. It loads, and gives what the network gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_onnx_growth import assert_upscales_as, exported_by_pytorch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def window_partition(maps: torch.Tensor, side: int) -> torch.Tensor:
    """SwinIR's: [B, H, W, C] to windows [B H W / side^2, side, side, C]."""
    batch, height, width, features = maps.shape
    split = maps.view(batch, height // side, side, width // side, side, features)
    return split.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, side, side, features)


def window_reverse(windows: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """SwinIR's: windows back to [B, H, W, C], the batch and the features by -1 (what the export loses)."""
    batch = int(windows.shape[0] / (height * width / side / side))
    maps = windows.view(batch, height // side, width // side, side, side, -1)
    return maps.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, height, width, -1)


class SwinBlock(torch.nn.Module):
    """SwinIR's block without its masks and position biases: attention within windows of `side` x `side`
    pixels, the windows moved by `shift` pixels (torch.roll) first, then an MLP."""

    def __init__(self, features: int, side: int, shift: int, heads: int = 2, einsum: bool = False) -> None:
        super().__init__()
        self.side, self.shift, self.heads = side, shift, heads
        self.norm = torch.nn.LayerNorm(features)
        # with `einsum`, a Linear layer written as an Einsum first (as some ports write theirs)
        self.mixed = torch.nn.Parameter(torch.randn(features, features) / features**0.5) if einsum else None
        self.qkv = torch.nn.Linear(features, 3 * features)
        self.projection = torch.nn.Linear(features, features)
        self.mlp = torch.nn.Sequential(
            torch.nn.LayerNorm(features),
            torch.nn.Linear(features, 2 * features),
            torch.nn.GELU(),
            torch.nn.Linear(2 * features, features),
        )

    def forward(self, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        height, width = size
        batch, _, features = pixels.shape
        maps = self.norm(pixels).view(batch, height, width, features)
        if self.mixed is not None:  # the windows' sizes are then its output's: window_partition reads its shape
            maps = torch.einsum("bhwc,oc->bhwo", maps, self.mixed)
            height, width = maps.shape[1], maps.shape[2]
        if self.shift:
            maps = torch.roll(maps, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(maps, self.side).view(-1, self.side * self.side, features)
        count, area, _ = windows.shape
        qkv = self.qkv(windows).reshape(count, area, 3, self.heads, features // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        attention = ((query * (features // self.heads) ** -0.5) @ key.transpose(-2, -1)).softmax(-1)
        attended = self.projection((attention @ value).transpose(1, 2).reshape(count, area, features))
        maps = window_reverse(attended.view(-1, self.side, self.side, features), self.side, height, width)
        if self.shift:
            maps = torch.roll(maps, shifts=(self.shift, self.shift), dims=(1, 2))
        pixels = pixels + maps.view(batch, height * width, features)
        return pixels + self.mlp(pixels)


class TinySwinIR(torch.nn.Module):
    """A x4 SwinIR-like model: a convolution, `blocks` Swin blocks (every other one's windows shifted by half a
    window, as SwinIR's; with `einsum`, each first a Linear layer written as an Einsum), a convolution and a pixel
    shuffle."""

    def __init__(self, blocks: int, side: int = 4, features: int = 16, einsum: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        shifts = [0 if index % 2 == 0 else side // 2 for index in range(blocks)]
        self.blocks = torch.nn.ModuleList(SwinBlock(features, side, shift, einsum=einsum) for shift in shifts)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(features, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.head(image)
        batch, features, height, width = maps.shape
        pixels = maps.flatten(2).transpose(1, 2)
        for block in self.blocks:
            pixels = block(pixels, (height, width))
        attended = pixels.transpose(1, 2).view(batch, features, height, width)
        return torch.sigmoid(self.tail(maps + attended))


@pytest.mark.parametrize("blocks", [2, 3])
def test_a_swinir_of_several_blocks_with_shifted_windows_loads_and_runs(tmp_path: Path, blocks: int) -> None:
    """2 and 3 blocks, 4x4 windows shifted by 2 pixels in every other: loaded, it upscales as the network does."""
    network = TinySwinIR(blocks).eval()
    path = exported_by_pytorch(tmp_path / "swin.onnx", network)
    assert_upscales_as(path, network, samples.astronaut()[100:108, 200:212])


def test_a_swinir_whose_windows_are_cut_from_an_einsum_loads_and_runs(tmp_path: Path) -> None:
    """A Linear layer written as an Einsum (`bhwc,oc->bhwo`) before window_partition: its output's sizes were not
    followed, so the windows cut from its shape were not known, and the file was refused as attention over a whole
    tile. They are (as after a MatMul's), and the file upscales as the network does."""
    network = TinySwinIR(2, einsum=True).eval()
    path = exported_by_pytorch(tmp_path / "swin.onnx", network)
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("Einsum") == 2  # kept as such
    assert_upscales_as(path, network, samples.astronaut()[100:108, 200:212])


class Rolled(torch.nn.Module):
    """A x4 model that moves its pixels by `shift` places `times` times (torch.roll, a Slice and a Concat) as tokens
    of SwinIR's patch embedding, whose sizes the file does not tell (so a strip cut off is not told either); or with
    `overlap`, puts its map beside itself less a row (`x[:, :, 1:]` and `x[:, :, :-1]` joined) as often: twice the
    rows, nearly, each time."""

    def __init__(self, times: int, shift: int = 3, overlap: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.times, self.shift, self.overlap = times, shift, overlap
        self.head = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(8, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.head(image)
        batch, features, height, width = maps.shape
        tokens = maps.flatten(2).transpose(1, 2).reshape(batch, height * width, features)
        for _ in range(0 if self.overlap else self.times):
            tokens = torch.roll(tokens, shifts=self.shift, dims=1)
        maps = tokens.transpose(1, 2).reshape(batch, features, height, width)
        for _ in range(self.times if self.overlap else 0):
            maps = torch.cat([maps[:, :, 1:], maps[:, :, :-1]], dim=2)
        return torch.sigmoid(self.tail(maps))


def test_shifted_windows_move_the_image_and_do_not_enlarge_it(tmp_path: Path) -> None:
    """Nine rolls were counted as the image beside itself nine times (512 times over): refused. Each moves the
    image's values, and the file runs as the network does."""
    network = Rolled(times=9).eval()
    assert_upscales_as(exported_by_pytorch(tmp_path / "rolled.onnx", network), network, samples.astronaut()[:8, :8])


def test_slices_that_overlap_still_count_as_the_image_beside_itself(tmp_path: Path) -> None:
    """`x[:, :, 1:]` beside `x[:, :, :-1]` takes 2 H - 2 rows of H: nine times over, 512 times the image."""
    from srfeat.errors import WeightsError
    from srfeat.inference import Upscaler

    path = exported_by_pytorch(tmp_path / "overlap.onnx", Rolled(times=9, overlap=True).eval())
    with pytest.raises(WeightsError, match="enlarges the image 512 times over"):
        Upscaler(path, device="cpu")


def padded_to_windows(image: torch.Tensor, side: int) -> torch.Tensor:
    """SwinIR's `check_image_size`: the image reflected on its bottom and right to a multiple of the windows' side."""
    height, width = image.shape[2:]
    return torch.nn.functional.pad(
        image, (0, (side - width % side) % side, 0, (side - height % side) % side), "reflect"
    )


class ChunkedWindows(torch.nn.Module):
    """A x4 model as SwinIR-like ones that split Q, K and V with `chunk`: the image padded to a multiple of the
    window (`(side - w % side) % side`, reflected), attention within `side` x `side` windows (or, with
    `whole`, over the whole map), the windows put back, the result cropped to 4 H x 4 W."""

    def __init__(self, side: int, features: int, whole: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.side, self.whole = side, whole
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        self.qkv = torch.nn.Linear(features, 3 * features)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(features, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[2:]
        side = self.side
        maps = self.head(padded_to_windows(image, side))
        batch, features, rows, columns = maps.shape
        if self.whole:
            tokens = maps.flatten(2).transpose(1, 2)
        else:
            tokens = window_partition(maps.permute(0, 2, 3, 1), side).reshape(-1, side * side, features)
        query, key, value = self.qkv(tokens).chunk(3, dim=-1)  # a Slice each, its bounds computed from a shape
        attended = (query @ key.transpose(-2, -1) * features**-0.5).softmax(-1) @ value
        if self.whole:
            maps = maps + attended.transpose(1, 2).reshape(batch, features, rows, columns)
        else:
            windows = attended.view(-1, side, side, features)
            maps = maps + window_reverse(windows, side, rows, columns).permute(0, 3, 1, 2)
        return torch.sigmoid(self.tail(maps))[:, :, : height * 4, : width * 4]


@pytest.mark.parametrize(("side", "features"), [(8, 16), (16, 32)])
def test_windows_whose_q_k_and_v_are_chunked_load_and_run(tmp_path: Path, side: int, features: int) -> None:
    """PyTorch's legacy exporter writes `qkv.chunk(3, -1)` as Slices to ends computed from the features' size
    ((3 C + 2) / 3 C): their sizes were not followed, so the windows' attention was refused as over a whole tile (8x8
    windows) or counted as all of Q, K and V (16x16 windows: 24,576 values a pixel). They are, and it runs as the
    network does, on an image that is not a multiple of the windows; attention over the whole map is still refused."""
    from srfeat.errors import WeightsError
    from srfeat.inference import Upscaler

    network = ChunkedWindows(side, features).eval()
    path = exported_by_pytorch(tmp_path / "windows.onnx", network, side=2 * side)
    assert "Split" not in {node.op_type for node in onnx.load(str(path)).graph.node}  # Slices, as exported
    assert_upscales_as(path, network, samples.astronaut()[100:121, 200:219])
    whole = exported_by_pytorch(tmp_path / "whole.onnx", ChunkedWindows(side, features, whole=True).eval(), 2 * side)
    with pytest.raises(WeightsError, match="multiplies two values computed from the image"):
        Upscaler(whole, device="cpu")


class MaskedShiftedWindows(torch.nn.Module):
    """A x4 model with SwinIR's shifted windows and the mask it computes for the image's size as it runs
    (`calculate_mask`: a zero map whose nine regions are numbered by slice assignment, then window_partition'd), as
    SwinIR does on an image of another size than it was trained on."""

    def __init__(self, side: int = 8, features: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.side = side
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        self.qkv = torch.nn.Linear(features, 3 * features)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(features, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def mask(self, height: int, width: int) -> torch.Tensor:
        side, shift = self.side, self.side // 2
        regions = torch.zeros((1, height, width, 1))
        count = 0
        for rows in (slice(0, -side), slice(-side, -shift), slice(-shift, None)):
            for columns in (slice(0, -side), slice(-side, -shift), slice(-shift, None)):
                regions[:, rows, columns, :] = count  # ScatterND, in PyTorch's legacy exporter
                count += 1
        windows = window_partition(regions, side).view(-1, side * side)
        differ = windows.unsqueeze(1) - windows.unsqueeze(2)
        return differ.masked_fill(differ != 0, -100.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[2:]
        side = self.side
        maps = self.head(padded_to_windows(image, side))
        _, features, rows, columns = maps.shape
        shifted = torch.roll(maps.permute(0, 2, 3, 1), shifts=(-side // 2, -side // 2), dims=(1, 2))
        tokens = window_partition(shifted, side).reshape(-1, side * side, features)
        query, key, value = self.qkv(tokens).reshape(-1, side * side, 3, features).permute(2, 0, 1, 3)
        mask = self.mask(rows, columns)
        scores = (query @ key.transpose(-2, -1) * features**-0.5).view(-1, mask.shape[0], side * side, side * side)
        attention = (scores + mask.unsqueeze(0)).view(-1, side * side, side * side).softmax(-1)
        windows = (attention @ value).view(-1, side, side, features)
        attended = torch.roll(window_reverse(windows, side, rows, columns), shifts=(side // 2, side // 2), dims=(1, 2))
        return torch.sigmoid(self.tail(maps + attended.permute(0, 3, 1, 2)))[:, :, : height * 4, : width * 4]


def test_shifted_windows_whose_mask_is_computed_for_the_image_load_and_run(tmp_path: Path) -> None:
    """The mask's nine slice assignments are ScatterNDs whose indices are 4 values a pixel (a Concat of four grids
    computed from the map's shape): each counted its indices' 4 into what it wrote, and the next one's indices,
    computed from its shape, 4 more, so the file was refused as enlarging the image 1,024 times. What a Scatter
    writes into keeps its shape; the file runs as the network does."""
    network = MaskedShiftedWindows().eval()
    path = exported_by_pytorch(tmp_path / "masked.onnx", network, side=24)
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("ScatterND") == 9
    assert_upscales_as(path, network, samples.astronaut()[100:121, 200:219])
