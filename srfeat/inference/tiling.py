"""Upscaling an image of any size in bounded memory: overlapping tiles, one at a time.

The whole image stays in host memory; each tile is cut from it with `pad` real neighbouring
pixels on every side that has neighbours (none beyond the image border, where the network
zero-pads exactly as it does on the whole image), sent to the device, upscaled, and only its
own part of the result is written into the output. With `pad` at least the network's
receptive radius (38 low-resolution pixels for the 16-block generator) a tile's output pixels
see exactly the inputs they see in the untiled forward, so the result equals the untiled
output up to float rounding. Tiles that read the same window (tiles smaller than their padding,
on an image little larger than it) share one run of the network's body (`windows`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from tqdm import tqdm

from srfeat.errors import SRFeatError, TileOutOfMemoryError
from srfeat.hardware import host_available_memory, one_line_if_out_of_memory

Region = tuple[int, int, int, int]  # top, left, bottom, right

logger = logging.getLogger(__name__)

__all__ = [
    "FREE_MEMORY",
    "MemoryPlan",
    "Tile",
    "available_memory",
    "check_output_memory",
    "count_non_finite",
    "plan_memory",
    "plan_tiles",
    "tile_memory_advice",
    "upscale_tiled",
    "value_range",
]

MIN_TILE = 32
# On a CPU a larger tile is no faster once the overlap is small, and the memory is better
# left to the rest of the machine: the automatic tile size uses at most this much...
CPU_TILE_BUDGET = 1 << 30
# ...unless a tile this wide needs more. With a receptive radius of 38 pixels of overlap on
# each side, smaller tiles compute over 1.7x their own pixels. srfeat's path fits 436-pixel
# tiles in 1 GiB; ONNX Runtime, which holds the whole network's largest maps for a tile at
# once, would get only 87-pixel tiles there (3.5x the work; 2.1x slower measured at 256x256).
CPU_EFFICIENT_TILE = 256
COUNT_ROWS = 64  # rows of an image counted at once by `count_non_finite`


# What frees room for a tile whoever is asking: the tile size was planned from the memory free then.
FREE_MEMORY = "free memory (other programs, or the processes nvidia-smi lists on a GPU) and run again"


def tile_memory_advice(*, command_line: bool = False) -> str:
    """What frees room for a tile, naming the tile size as the `Upscaler`'s maker gives it: its `tile` keyword
    from Python, or with `command_line` the --tile of `srfeat upscale` and `srfeat serve`. A caller with no tile
    size to give says its own advice (`TileOutOfMemoryError` keeps it apart): `srfeat eval`, the web page."""
    smaller_tile = (
        "give srfeat upscale or srfeat serve a smaller --tile" if command_line else "give the Upscaler a smaller tile="
    )
    return f"{FREE_MEMORY}, or {smaller_tile}"


@dataclass(frozen=True)
class Tile:
    """One tile: the output region it owns and the (larger) input region it reads, in input pixels."""

    top: int
    left: int
    bottom: int
    right: int
    in_top: int
    in_left: int
    in_bottom: int
    in_right: int


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    # Equal-sized spans (differing by at most one pixel) rather than full tiles and a sliver.
    count = max(1, math.ceil(length / tile))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def plan_tiles(height: int, width: int, tile: int, pad: int) -> list[Tile]:
    """Tiles of at most `tile` x `tile` pixels covering the image, each read with `pad` context."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if pad < 0:
        raise ValueError(f"tile pad must not be negative, got {pad}")
    tiles = []
    for top, bottom in _spans(height, tile):
        for left, right in _spans(width, tile):
            tiles.append(
                Tile(
                    top,
                    left,
                    bottom,
                    right,
                    max(0, top - pad),
                    max(0, left - pad),
                    min(height, bottom + pad),
                    min(width, right + pad),
                )
            )
    return tiles


def available_memory(device: torch.device) -> int:
    """Bytes the tiles may use on `device`: free GPU memory, or the host's available memory."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # The driver counts what PyTorch's caching allocator keeps as taken, but no tensor holds it and the
        # tiles get it first: without it every image after the first would get about half the tile area.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    return host_available_memory()


@dataclass(frozen=True)
class MemoryPlan:
    """Tile size (input pixels per side) and upsampler band size (input pixels) for a budget."""

    tile: int
    upsample_pixels: int


def plan_memory(body_bytes_per_pixel: int, upsample_bytes_per_pixel: int, pad: int, device: torch.device) -> MemoryPlan:
    """Tile and upsampler band sizes that fit a safe share of the device's free memory.

    Three quarters of the budget go to the body of a padded tile, a quarter to a band of the
    upsampler (per input pixel it needs several times the body's memory, and a band can be
    thin at little cost). On a CPU the budget is at most 1 GiB, or what a 256-pixel tile needs
    where that is more (ONNX Runtime: about 3 GB), and never more than half the free memory.
    """
    budget = available_memory(device) // 2
    if device.type == "cpu":
        efficient_tile = -(-((CPU_EFFICIENT_TILE + 2 * pad) ** 2) * body_bytes_per_pixel * 4 // 3)  # body's share: 3/4
        budget = min(budget, max(CPU_TILE_BUDGET, efficient_tile))
    tile = max(MIN_TILE, math.isqrt(max(1, budget * 3 // 4 // body_bytes_per_pixel)) - 2 * pad)
    upsample_pixels = max(1024, budget // 4 // upsample_bytes_per_pixel)
    logger.debug(
        "tile %d, upsampler bands of %d pixels (budget %.0f MB on %s)", tile, upsample_pixels, budget / 2**20, device
    )
    return MemoryPlan(tile=tile, upsample_pixels=upsample_pixels)


def check_output_memory(height: int, width: int, channels: int, working_channels: int = 0) -> None:
    """Refuse in one line a (C, H, W) result the host's memory cannot hold (else an allocator
    traceback, or hours of swapping). What is counted: the float32 output, the 8-bit image made
    from it, and `working_channels` more float32 planes of that size made on the way."""
    needed = height * width * (channels * (4 + 1) + working_channels * 4)
    available = available_memory(torch.device("cpu"))
    if needed > available:
        raise SRFeatError(
            f"the {width}x{height} result needs about {needed / 1e9:.1f} GB of memory and "
            f"{available / 1e9:.1f} GB is available: upscale a smaller image (crop or downscale it first)"
        )


def check_batch_memory(
    count: int, channels: int, size: tuple[int, int], element_size: int, device: torch.device
) -> None:
    """Refuse in one line, before its first image, a batch whose results `device` cannot hold."""
    height, width = size
    needed = count * channels * height * width * element_size
    available = available_memory(device)
    if needed > available:
        raise SRFeatError(
            f"the batch's {count} results of {width}x{height} need about {needed / 1e9:.1f} GB of memory on "
            f"{device} and {available / 1e9:.1f} GB is available: upscale fewer images at a time"
        )


def allocate_output(height: int, width: int, channels: int) -> torch.Tensor:
    """The (C, H, W) float32 output, laid out height-width-channel, allocated at once; one that the
    host's memory cannot hold is refused in one line before trying (`check_output_memory`)."""
    check_output_memory(height, width, channels)
    try:
        return torch.empty(height, width, channels, dtype=torch.float32).permute(2, 0, 1)
    except RuntimeError as error:  # the allocator's own refusal, when the estimate above was too kind
        raise SRFeatError(f"cannot allocate the {width}x{height} result: {error}".splitlines()[0]) from error


def value_range(image: torch.Tensor) -> tuple[float, float]:
    """(min, max) of a non-empty float (..., H, W) tensor, without a copy of it.

    torch reduces a tensor that is not contiguous (the height-width-channel output's (C, H, W)
    view, a numpy image's permuted one) by copying it whole first: 192 MB for a 4000x4000 RGB
    result. Its dimensions put in memory order make it contiguous, and min and max do not
    depend on the order; any other layout (a slice, a flip) is reduced a band of rows at a time.
    """
    order = sorted(range(image.dim()), key=lambda dim: image.stride(dim), reverse=True)
    in_memory_order = image.permute(order)
    if in_memory_order.is_contiguous():
        low, high = torch.aminmax(in_memory_order)
        return float(low), float(high)
    bands = [torch.aminmax(rows) for rows in image.split(COUNT_ROWS, dim=-2)]
    return min(float(low) for low, _ in bands), max(float(high) for _, high in bands)


def count_non_finite(image: torch.Tensor) -> int:
    """How many values of a float (..., H, W) tensor are NaN or infinite.

    One reduction answers the usual case, none (NaN and inf carry through min and max), without
    `isfinite`'s full-size temporaries: counting a 4000x4000 result that way took 416 MB beside
    its 192. Bad values, when there are some, are counted a band of rows at a time.
    """
    if image.numel() == 0:
        return 0
    low, high = value_range(image)
    if math.isfinite(low) and math.isfinite(high):
        return 0
    planes = image.reshape(-1, *image.shape[-2:])
    return sum(int((~torch.isfinite(rows)).sum()) for plane in planes for rows in plane.split(COUNT_ROWS))


def upscale_tiled(
    model: Callable[[torch.Tensor, Region], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    tile: int,
    pad: int,
    device: torch.device,
    dtype: torch.dtype,
    fallback: Callable[[torch.Tensor, Region], torch.Tensor] | None = None,
    progress: bool = False,
    memory_format: torch.memory_format = torch.channels_last,
    on_tile: Callable[[int, int], None] | None = None,
    out: torch.Tensor | None = None,
    command_line: bool = False,
) -> torch.Tensor:
    """Upscale a (C, H, W) float image held on the CPU; returns (C, scale*H, scale*W) float32 on the CPU.

    `model(batch, region)` maps an (1, C, h, w) batch of `dtype` on `device` and a region
    (top, left, bottom, right) of it to the (1, C, scale*(bottom-top), scale*(right-left))
    output of that region (`InferenceGenerator` does); where it also has `for_window(batch)`, tiles that
    read the same window (`windows`) share one run of it.
    When a tile's output is not finite (float16 overflow) it is recomputed with `fallback`
    (the float32 model, given float32 input) if one is given. The output is laid out
    height-width-channel (a permuted view), the layout image files and numpy arrays use, so
    converting it afterwards costs no copy. The network runs in inference mode; the output
    is an ordinary tensor. `on_tile(done, total)` is called before the first tile and after
    each one (a progress display; an exception it raises stops the work there). `out`, if given,
    is the float32 CPU tensor the result is written into (and returned): channels of a larger
    output, say, so that no full-size copy of the result is made to put them together. A tile that
    runs out of memory is a `TileOutOfMemoryError`, its advice `tile_memory_advice`'s (the commands' flags with
    `command_line`).
    """
    channels, height, width = image.shape
    shape = (channels, height * scale, width * scale)
    if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32 or out.device.type != "cpu"):
        raise ValueError(f"out must be a float32 CPU tensor of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    output = allocate_output(*shape[1:], channels) if out is None else out
    tiles = plan_tiles(height, width, tile, pad)
    if on_tile is not None:
        on_tile(0, len(tiles))
    done = 0
    with tqdm(
        total=len(tiles),
        desc="tiles",
        unit="tile",
        leave=False,
        disable=True if not progress or len(tiles) == 1 else None,
    ) as bar:
        for window, parts in windows(tiles).items():
            in_top, in_left, in_bottom, in_right = window
            source = image[:, in_top:in_bottom, in_left:in_right].unsqueeze(0)
            batch = source.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
            # A GPU's OutOfMemoryError, or the CPU allocator's, as one line naming the window's size.
            out_of_memory = TileOutOfMemoryError(
                f"out of memory on {device} upscaling a {in_bottom - in_top}x{in_right - in_left} tile",
                tile_memory_advice(command_line=command_line),
            )
            upscale_region: Callable[[Region], torch.Tensor] | None = None
            for part in parts:
                region = (part.top - in_top, part.left - in_left, part.bottom - in_top, part.right - in_left)
                with one_line_if_out_of_memory(lambda said=out_of_memory: said), torch.inference_mode():
                    if upscale_region is None:
                        upscale_region = run_window(model, batch)
                    result = upscale_region(region)
                    if fallback is not None and not bool(torch.isfinite(result).all()):
                        logger.info(
                            "tile at (%d, %d) overflowed in %s; recomputing it in float32", part.top, part.left, dtype
                        )
                        # The float32 run needs the most room: the window's features are let go first (as the
                        # network run for each tile had), and made again for the window's next tile, if any.
                        upscale_region = None
                        result = fallback(batch.float(), region)
                output[:, part.top * scale : part.bottom * scale, part.left * scale : part.right * scale].copy_(
                    result[0]
                )
                del result
                done += 1
                bar.update()
                if on_tile is not None:
                    on_tile(done, len(tiles))
            del upscale_region, batch  # the window's features, freed before the next window's are made
    return output


def windows(tiles: list[Tile]) -> dict[Region, list[Tile]]:
    """The tiles grouped by the input window they read, in the order of their first tile.

    Tiles smaller than their padding read the same window where the padding reaches the image's
    border on both sides (every tile of an image within one tile and its padding reads the whole
    image): the network runs once for each window, not once for each tile.
    """
    grouped: dict[Region, list[Tile]] = {}
    for part in tiles:
        grouped.setdefault((part.in_top, part.in_left, part.in_bottom, part.in_right), []).append(part)
    return grouped


@runtime_checkable
class RunsWindowOnce(Protocol):
    """A model that runs on a window once and then gives the output of any region of it
    (`InferenceGenerator.for_window`, `OnnxRunner.for_window`)."""

    def for_window(self, batch: torch.Tensor) -> Callable[[Region], torch.Tensor]: ...


def run_window(
    model: Callable[[torch.Tensor, Region], torch.Tensor], batch: torch.Tensor
) -> Callable[[Region], torch.Tensor]:
    """What gives `model(batch, region)` for each region of `batch`: the network run once where the model can."""
    if isinstance(model, RunsWindowOnce):
        return model.for_window(batch)
    return lambda region: model(batch, region)
