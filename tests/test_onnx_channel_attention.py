"""Channel attention in an .onnx file (Restormer's MDTA, DAT's channel blocks): Q K^T of [N, heads, C, H W] by
[N, heads, H W, C] sums over the pixels and makes heads x C x C values per image, whatever the tile's size; then its
product by V makes V's values again. It was refused in both of PyTorch's exporters, its pixels summed counted as one
and its batch as possibly broadcast: it loads now and gives what the network gives, while attention across the pixels
of the same block (H W x H W per head) is still refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_onnx_attention import ALLOWED_ATTENTION, refusal
from test_onnx_expand import exported_by_dynamo
from test_onnx_growth import assert_upscales_as, exported_by_pytorch

from srfeat.inference.onnx_contents import MAX_FEATURES
from srfeat.inference.onnx_products import LEAST_TILE_PIXELS, einsum_pairwise_values, pairwise_values
from srfeat.inference.tiling import MIN_TILE

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


class ChannelAttention(torch.nn.Module):
    """A x4 model with one attention block, across the channels: Restormer's MDTA (`layout` "restormer": Q, K and V by
    a 1x1 and a depthwise convolution, `b (head c) h w -> b head c (h w)`) or DAT's (`layout` "dat": the map as
    [B, H W, C] tokens, Q, K and V by one Linear layer, then transposed to [B, heads, C, H W]); both normalize Q and K
    over the pixels and scale by a learnt temperature per head. With `spatial`, the same block attends across the
    pixels instead (Q^T K: H W x H W per head); with `einsum`, Restormer's products are written as Einsums."""

    def __init__(
        self, layout: str, features: int = 48, heads: int = 2, spatial: bool = False, einsum: bool = False
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layout, self.heads, self.spatial, self.einsum = layout, heads, spatial, einsum
        self.head = torch.nn.Conv2d(3, features, 3, padding=1)
        self.temperature = torch.nn.Parameter(torch.rand(heads, 1, 1) + 0.5)
        if layout == "restormer":
            self.qkv: torch.nn.Module = torch.nn.Sequential(
                torch.nn.Conv2d(features, 3 * features, 1),
                torch.nn.Conv2d(3 * features, 3 * features, 3, padding=1, groups=3 * features),
            )
            self.projection: torch.nn.Module = torch.nn.Conv2d(features, features, 1)
        else:
            self.qkv, self.projection = torch.nn.Linear(features, 3 * features), torch.nn.Linear(features, features)
        self.tail = torch.nn.Sequential(torch.nn.Conv2d(features, 48, 3, padding=1), torch.nn.PixelShuffle(4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = self.head(image)
        batch, features, height, width = maps.shape
        if self.layout == "restormer":
            query, key, value = (
                part.reshape(batch, self.heads, features // self.heads, height * width)
                for part in self.qkv(maps).chunk(3, dim=1)
            )
        else:
            tokens = maps.flatten(2).transpose(1, 2)
            count = tokens.shape[1]
            qkv = self.qkv(tokens).reshape(batch, count, 3, self.heads, features // self.heads)
            query, key, value = (part.transpose(-2, -1) for part in qkv.permute(2, 0, 3, 1, 4))
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        if self.spatial:
            attention = (query.transpose(-2, -1) @ key * self.temperature).softmax(-1)
            attended = value @ attention.transpose(-2, -1)
        elif self.einsum:
            attention = (torch.einsum("bhcp,bhdp->bhcd", query, key) * self.temperature).softmax(-1)
            attended = torch.einsum("bhcd,bhdp->bhcp", attention, value)
        else:
            attention = (query @ key.transpose(-2, -1) * self.temperature).softmax(-1)
            attended = attention @ value
        if self.layout == "restormer":
            attended = self.projection(attended.reshape(batch, features, height, width))
        else:
            attended = self.projection(attended.permute(0, 3, 1, 2).reshape(batch, height * width, features))
            attended = attended.transpose(1, 2).reshape(batch, features, height, width)
        return torch.sigmoid(self.tail(maps + attended))


EXPORTERS = {"legacy": exported_by_pytorch, "dynamo": exported_by_dynamo}


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("layout", ["restormer", "dat"])
def test_channel_attention_loads_and_runs_as_the_network_does(tmp_path: Path, layout: str, exporter: str) -> None:
    """Exported with the height and width left open, it runs on an image of another size than it was traced on
    (neither a multiple of 8), as the network does."""
    network = ChannelAttention(layout).eval()
    path = EXPORTERS[exporter](tmp_path / f"{layout}.onnx", network)
    assert "MatMul" in {node.op_type for node in onnx.load(str(path)).graph.node}
    assert_upscales_as(path, network, samples.astronaut()[100:121, 200:219])


def test_channel_attention_written_as_einsums_loads_and_runs(tmp_path: Path) -> None:
    network = ChannelAttention("restormer", einsum=True).eval()
    path = exported_by_pytorch(tmp_path / "einsum.onnx", network)
    assert [node.op_type for node in onnx.load(str(path)).graph.node].count("Einsum") == 2
    assert_upscales_as(path, network, samples.astronaut()[100:113, 200:211])


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_channel_attention_of_dat_s_width_loads(tmp_path: Path, exporter: str) -> None:
    """DAT's 180 features in 6 heads: Q K^T makes 6 x 30 x 30 = 5,400 values per image, more than a convolution may
    make per pixel when its pixels summed counted as one; per pixel of the least tile, 5."""
    network = ChannelAttention("dat", features=180, heads=6).eval()
    path = EXPORTERS[exporter](tmp_path / "dat.onnx", network)
    assert_upscales_as(path, network, samples.astronaut()[100:109, 200:211])


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("layout", ["restormer", "dat"])
def test_attention_across_the_pixels_of_the_same_block_is_still_refused(
    tmp_path: Path, layout: str, exporter: str
) -> None:
    """Q^T K of the same Q and K makes (H W)^2 values per head: refused in one line, as before; the refusal says what
    loads, channel attention (this block as it is meant) included: it said only "attend within windows"."""
    path = EXPORTERS[exporter](tmp_path / f"{layout}.onnx", ChannelAttention(layout, spatial=True).eval())
    message = refusal(path)
    assert "multiplies two values computed from the image" in message and ALLOWED_ATTENTION in message, message


def test_a_batch_axis_of_the_image_in_both_is_not_broadcast() -> None:
    """[N, 2, 24, 24] by [N, 2, 24, P]: as V's values (24 / 24 of them), where N is the image's batch in both; where
    that is not known, either may broadcast the other's, and P is not fixed: not bounded. So for an Einsum."""
    batch = {-4: ("N", 1)}
    attention, value = [None, 2, 24, 24], [None, 2, 24, None]
    assert pairwise_values(attention, value, (False, False), (1.0, 48.0), (batch, batch)) == 48.0
    assert pairwise_values(attention, value, (False, False), (1.0, 48.0), (batch, {})) == math.inf
    assert pairwise_values(attention, value, (False, False), (1.0, 48.0)) == math.inf
    assert einsum_pairwise_values("bhcd,bhdp->bhcp", [attention, value], (1.0, 48.0), (batch, batch)) == 48.0


def test_an_output_of_fixed_size_per_image_counts_per_pixel_of_the_least_tile() -> None:
    """Q K^T of [N, 6, 30, P] by [N, 6, P, 30] makes 6 x 30 x 30 values per image, over all the pixels it sums: as
    many per pixel of the least tile srfeat cuts. Its pixels counted as one, it made 180 x 30 per pixel, more than a
    convolution may; of a batch not known to be the image's, it still does. Of the image's height (not fixed), not
    per image."""
    query, key = [None, 6, 30, None], [None, 6, None, 30]
    counted = pairwise_values(query, key, (False, False), (180.0, 180.0), ({-4: ("N", 1)}, {-4: ("N", 1)}))
    assert counted == 6 * 30 * 30 / LEAST_TILE_PIXELS < 180 * 30 and 180 * 30 > MAX_FEATURES
    assert pairwise_values(query, key, (False, False), (180.0, 180.0)) == 180 * 30
    twice = ({-4: ("N", 2)}, {-4: ("N", 2)})  # twice the image's batch: twice as many
    assert pairwise_values(query, key, (False, False), (180.0, 180.0), twice) == 2 * counted
    height = ({-4: ("H", 1)}, {-4: ("H", 1)})
    assert pairwise_values(query, key, (False, False), (180.0, 180.0), height) == 180 * 30
    einsum = einsum_pairwise_values("bhcp,bhdp->bhcd", [query, query], (180.0, 180.0), ({-4: ("N", 1)},) * 2)
    assert einsum == counted


def test_the_least_tile_is_the_one_srfeat_cuts() -> None:
    assert LEAST_TILE_PIXELS == MIN_TILE**2
