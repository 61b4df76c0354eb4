"""`InferenceGenerator`'s path on a CPU in float32: Winograd convolutions, the upsampler in bands.

What runs where `InferenceGenerator.uses_winograd` says so (srfeat/inference/fused.py's docstring
says which algorithm runs each layer): the head and the residual body by NNPACK's Winograd
F(6x6, 3x3) in NCHW or by srfeat's F(4x4, 3x3) (`srfeat.ops.winograd`) on zero-bordered NHWC
buffers; the upsampler in bands of rows (and of columns) spread over the band workers, each
convolution writing its sub-pixels where PixelShuffle puts them; the tail as one GEMM plus
shifted additions. The Winograd filters and the packed tail are derived from the folded weights
when first needed, and dropped when the weights move (`.to()`).

A base class of `InferenceGenerator`, apart from it because it is one path of several: the
generator's own module keeps the folding, the dispatch and the library's convolutions (GPU,
reduced precision, "direct", compiled), and reads without the band arithmetic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11; torch depends on typing_extensions

from srfeat.archs.containers import TypedModuleList
from srfeat.archs.generator import LEAKY_SLOPE
from srfeat.inference.folding import FoldedResidualBlock, conv_bias
from srfeat.ops.private_torch import matmul, nnpack_conv3x3, prepack_matmul_weight
from srfeat.ops.winograd import (
    POSITIONS,
    TILE,
    interior,
    padded_buffer,
    pixel_shuffle_target,
    shuffle_channel_order,
    to_padded,
    winograd_conv3x3,
    winograd_filter,
    zero_border,
    zero_outside,
)
from srfeat.ops.workers import run_parallel, worker_threads

__all__ = ["MIN_BAND_COLUMNS", "Region", "WinogradPath"]

# Logged as srfeat.inference.fused, as before this path had a module of its own.
logger = logging.getLogger("srfeat.inference.fused")

Region = tuple[int, int, int, int]  # top, left, bottom, right, in input pixels

# Narrowest part of a band's columns (each reads two context columns on either side).
MIN_BAND_COLUMNS = 16


class WinogradPath(nn.Module):
    """The CPU float32 path of `InferenceGenerator`, which sets the layers and settings declared here."""

    scale: int
    num_features: int
    in_channels: int
    upsample_pixels: int  # low-resolution pixels per upsampler band (per worker)
    use_nnpack: bool  # NNPACK for the body: "auto" only, and dropped if it ever fails
    head: nn.Conv2d
    body: TypedModuleList[FoldedResidualBlock]
    long_skips: TypedModuleList[nn.Conv2d]
    upsample_convs: TypedModuleList[nn.Conv2d]
    tail: nn.Conv2d  # (x + 1) / 2 folded in

    def __init__(self) -> None:
        super().__init__()
        # Tensors derived from the weights (srfeat's Winograd filters, the packed tail), made
        # on first use; `_apply` (behind .to(), .float(), ...) drops them.
        self._derived: dict[str, torch.Tensor] = {}

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        self._derived.clear()
        return super()._apply(fn, recurse)

    def _derive(self, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]

    def _features_winograd(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body: the features in a zero-bordered NHWC buffer (`srfeat.ops.winograd`)."""
        if self.use_nnpack:
            try:
                return self._features_nnpack(x)
            except RuntimeError as error:  # PrivateTorchError: NNPACK missing, or e.g. out of workspace
                logger.warning("NNPACK convolution failed (%s); using srfeat's Winograd convolutions", error)
                self.use_nnpack = False
        return self._features_srfeat(x)

    def _features_nnpack(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body, the body by NNPACK's convolutions in NCHW."""
        channels = self.num_features
        x = F.conv2d(
            (x * 2.0 - 1.0).contiguous(), self.head.weight.contiguous(), self.head.bias, padding=self.head.padding
        )
        skip_sum = torch.zeros_like(x)
        for i, block in enumerate(self.body):
            y = nnpack_conv3x3(x, block.conv1.weight.contiguous(), block.conv1.bias)
            x = nnpack_conv3x3(F.leaky_relu_(y, LEAKY_SLOPE), block.conv2.weight.contiguous(), block.conv2.bias).add_(x)
            del y
            if i < len(self.long_skips):
                weight = self.long_skips[i].weight.view(channels, channels)
                for item in range(x.shape[0]):  # (C_out, H*W) += W (C_out, C_in) @ (C_in, H*W)
                    skip_sum[item].view(channels, -1).addmm_(weight, x[item].view(channels, -1))
        x.add_(skip_sum)
        del skip_sum
        return to_padded(x)

    def _features_srfeat(self, x: torch.Tensor) -> torch.Tensor:
        """Head and body, the body by srfeat's Winograd F(4x4, 3x3) on zero-bordered NHWC buffers."""
        _, _, height, width = x.shape
        channels = self.num_features
        convs = [conv for block in self.body for conv in (block.conv1, block.conv2)]
        # (36 * i + position, C, K): the Winograd filters of body convolution i.
        filters = self._derive("body", lambda: torch.cat([winograd_filter(conv.weight) for conv in convs]))
        current = to_padded(self.head((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)))
        middle, following, skip_sum = torch.zeros_like(current), torch.zeros_like(current), torch.zeros_like(current)
        for i, block in enumerate(self.body):
            first, second = 2 * i, 2 * i + 1
            winograd_conv3x3(
                current,
                filters[POSITIONS * first : POSITIONS * (first + 1)],
                block.conv1.bias,
                interior(middle),
                LEAKY_SLOPE,
            )
            zero_outside(middle, height, width)
            winograd_conv3x3(
                middle,
                filters[POSITIONS * second : POSITIONS * (second + 1)],
                block.conv2.bias,
                interior(following),
                residual=interior(current),
            )
            zero_outside(following, height, width)
            current, following = following, current
            if i < len(self.long_skips):
                # Over the whole padded buffer (zeros in, zeros out), as one GEMM with (C_in, C_out).
                weight = self.long_skips[i].weight.view(channels, channels).t()
                skip_sum.view(-1, channels).addmm_(current.view(-1, channels), weight)
        return current.add_(skip_sum)

    def _upsample_winograd(self, features: torch.Tensor, size: tuple[int, int], region: Region) -> torch.Tensor:
        """Upsampler and tail of `region` from padded NHWC features of an image of `size`, in
        bands (`_upsample_bands`) spread over the band workers; returns an NCHW view of an NHWC tensor (the
        layout images use, so the caller's copy into an image is a straight one)."""
        batch = features.shape[0]
        top, left, bottom, right = region
        scale = self.scale
        # Made here, not in the workers: they would race to make them.
        filters = self._derive("upsample", self._upsample_filters)
        biases = self._derive(
            "upsample_bias",
            lambda: torch.stack([shuffle_channel_order(conv_bias(conv)) for conv in self.upsample_convs]),
        )
        tail_weight = self._derive("tail", self._tail_weight)
        out = features.new_empty(batch, (bottom - top) * scale, (right - left) * scale, self.in_channels)
        bands = self._upsample_bands(region, batch, size[1])
        # Each worker reuses its band buffers from band to band: a fresh large buffer costs
        # its page faults every time.
        scratch: dict[tuple[int, int], torch.Tensor] = {}

        def upsample_band(band: Region) -> None:
            band_top, band_left, band_bottom, band_right = band
            band_out = self._upsample_band(features, size, band, filters, biases, tail_weight, scratch)
            out[
                :,
                (band_top - top) * scale : (band_bottom - top) * scale,
                (band_left - left) * scale : (band_right - left) * scale,
            ] = band_out

        run_parallel(upsample_band, bands)
        return out.permute(0, 3, 1, 2)

    def _upsample_bands(self, region: Region, batch: int, width: int) -> list[Region]:
        """The parts of `region` (of a batch of `width`-pixel-wide inputs) the Winograd path
        upsamples one at a time: bands of rows within `upsample_pixels`, each cut into parts of
        its columns where one row is over that budget or where there are fewer bands than band
        workers. Bands of rows alone left an input of one row (or a few) one band, run on the
        calling thread: each of its thousands of small tensor operations was split over the
        intra-op threads, each waiting on all of them: on a busy 2-core machine a 1x20000 image
        took 7 s where a 2x9000 one took 0.5."""
        top, left, bottom, right = region
        row_pixels = batch * (min(width, right + 1) - max(0, left - 1))
        band_rows = self.upsample_pixels // max(1, row_pixels)
        if band_rows >= 6:  # the band and its two context rows in whole 4-row tiles
            band_rows = (band_rows + 2) // TILE * TILE - 2
        band_rows = max(1, min(bottom - top, band_rows))
        row_starts = range(top, bottom, band_rows)
        parts = max(-(-row_pixels // self.upsample_pixels), -(-worker_threads() // len(row_starts)))
        parts = min(parts, max(1, (right - left) // MIN_BAND_COLUMNS))  # each part wide beside its context
        spans = [(left + (right - left) * i // parts, left + (right - left) * (i + 1) // parts) for i in range(parts)]
        return [
            (band_top, band_left, min(bottom, band_top + band_rows), band_right)
            for band_top in row_starts
            for band_left, band_right in spans
        ]

    def _upsample_filters(self) -> torch.Tensor:
        # Output channels in the order that writes each sub-pixel where PixelShuffle puts it.
        return torch.cat([winograd_filter(shuffle_channel_order(conv.weight)) for conv in self.upsample_convs])

    def _tail_weight(self) -> torch.Tensor:
        """The tail as a (C, 27) matrix to its (dy, dx, output channel) products, prepacked for
        oneDNN's matrix product where there is one (twice MKL's speed for this narrow shape)."""
        return prepack_matmul_weight(self.tail.weight.permute(1, 2, 3, 0).reshape(self.num_features, -1))

    def _upsample_band(
        self,
        features: torch.Tensor,
        size: tuple[int, int],
        band: Region,
        filters: torch.Tensor,
        biases: torch.Tensor,
        tail_weight: torch.Tensor,
        scratch: dict[tuple[int, int], torch.Tensor],
    ) -> torch.Tensor:
        """Upsampler and tail of the input pixels `band`: (N, scale*rows, scale*columns, 3).

        The band is cut from the features with one real neighbouring row and column on each
        side, and one more that the first upsampling convolution reads as its padding: that
        convolution is then exact on the cut, and the later ones, which see zeros beyond it,
        reach less than one input pixel into it (1/2 + 1/4).
        """
        top, left, bottom, right = band
        height, width = size
        batch, _, _, channels = features.shape
        lo, hi = max(0, top - 1), min(height, bottom + 1)
        col_lo, col_hi = max(0, left - 1), min(width, right + 1)
        band_h, band_w = hi - lo, col_hi - col_lo
        # Padded rows lo .. hi + 1 hold image rows lo - 1 .. hi (or the zero border); columns alike.
        current = padded_buffer(batch, band_h, band_w, channels, features)
        current[:, : band_h + 2, : band_w + 2] = features[:, lo : hi + 2, col_lo : col_hi + 2]
        for stage in range(len(self.upsample_convs)):
            band_h, band_w = 2 * band_h, 2 * band_w
            # Twice the whole tiles of the input: still whole tiles, plus the border. The
            # convolution writes all of the interior; only the border needs zeros.
            shape = (batch, 2 * (current.shape[1] - 2) + 2, 2 * (current.shape[2] - 2) + 2, channels)
            key = (threading.get_ident(), stage)
            upsampled = scratch.get(key)
            if upsampled is None or upsampled.shape != shape:
                upsampled = scratch[key] = current.new_empty(shape)
            zero_border(upsampled)
            winograd_conv3x3(
                current,
                filters[POSITIONS * stage : POSITIONS * (stage + 1)],
                biases[stage],
                pixel_shuffle_target(upsampled),
                LEAKY_SLOPE,
                parallel=False,
            )
            # What lies beyond the band is zero for the next convolution, as beyond an image.
            zero_outside(upsampled, band_h, band_w)
            current = upsampled
        tail = self._tail(current, band_h, band_w, tail_weight)
        scale = self.scale
        return tail[:, (top - lo) * scale : (bottom - lo) * scale, (left - col_lo) * scale : (right - col_lo) * scale]

    def _tail(self, padded: torch.Tensor, height: int, width: int, weight: torch.Tensor) -> torch.Tensor:
        """3x3 convolution to 3 channels of a zero-bordered NHWC buffer: one GEMM to the 27
        (tap, channel) products of every pixel, then each output sums its nine taps (a direct
        convolution to 3 channels has little to vectorise over)."""
        batch, _, padded_w, channels = padded.shape
        out = conv_bias(self.tail).view(1, 1, 1, -1).expand(batch, height, width, -1).clone()
        rows_per_gemm = max(1, (1 << 14) // max(1, padded_w * batch))  # 16k pixels: in cache
        for y0 in range(0, height, rows_per_gemm):
            rows = min(rows_per_gemm, height - y0)
            pixels = padded[:, y0 : y0 + rows + 2].reshape(-1, channels)
            products = matmul(pixels, weight).view(batch, rows + 2, padded_w, 3, 3, -1)
            target = out[:, y0 : y0 + rows]
            for dy in range(3):
                for dx in range(3):
                    target.add_(products[:, dy : dy + rows, dx : dx + width, dy, dx])
        return out
