"""What a sliding window (a convolution or a pooling) does to the values padded onto each axis of the image, for
`onnx_growth` to count: it adds its own pads, takes back what its kernel takes off, and divides what is left by
its stride.

A stride-s window over an axis of T + P values makes at most ceil(P / s) more than over T alone (a reflect pad of
1 before a stride-2 3x3 convolution leaves none): so a U-Net-like model's pads before each stride-2 convolution
or max pooling do not add up, multiplied by the enlargements after them, as if they were at the input's size.
What a window divides, a later operator that moves values between axes (a Reshape, a DepthToSpace) is counted to
undo (`onnx_growth.GraphGrowth.padded`): a Pad, a stride-2 convolution and a pixel shuffle leave the image as
padded as before."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_shapes import MAX_DIMS

if TYPE_CHECKING:
    import onnx

__all__ = [
    "POOLING",
    "WINDOWED",
    "enlarged",
    "shrunk",
    "transposed_scales",
    "window_effect",
    "window_kernel",
    "window_strides",
]

# Operators that keep the batch and features and change the height and width
POOLING = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
# Operators that slide a window over the height and width: a weight's (its spatial sizes) or `kernel_shape`
WINDOWED = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"})
# Past any bound, and no overflow
_MOST = 2**40


def window_kernel(node: onnx.NodeProto, weight: list[int] | None) -> list[int] | None:
    """The spatial sizes of the window `node` slides: its weight's past the first two (a convolution's, where the
    file fixes its shape), or its `kernel_shape` (a pooling's); None where not known."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return weight[2:] if weight else None
    if node.op_type not in WINDOWED:
        return None
    listed = next((list(each.ints) for each in node.attribute if each.name == "kernel_shape"), None)
    return listed[:MAX_DIMS] if listed else None


def window_effect(node: onnx.NodeProto, kernel: list[int]) -> dict[int, tuple[int, int]]:
    """What a window of `kernel` (spatial sizes) does to each axis (from the last): values it adds (its own pads
    beyond what its dilated kernel takes off; negative where it takes off more) and its stride, by which what is
    padded is divided after (`shrunk`). A ConvTranspose's strides enlarge instead (counted before it, as its
    growth): it adds its dilated kernel and `output_padding` beyond its pads and stride (x2 by a kernel of 4,
    stride 2 and pads of 1 adds none), and divides by 1. Padding as the input's size says (`auto_pad` SAME_*)
    adds none beyond the kernel. None where a list is not one entry an axis, or a ConvTranspose has an
    `output_shape` (counted as its growth: `transposed_scales`)."""
    options, count = {each.name: each for each in node.attribute}, len(kernel)

    def listed(name: str, default: int, length: int = count) -> list[int]:
        values = list(options[name].ints) if name in options else [default] * length
        return values if len(values) == length else []

    strides, dilations, pads = listed("strides", 1), listed("dilations", 1), listed("pads", 0, 2 * count)
    automatic = options["auto_pad"].s if "auto_pad" in options else b"NOTSET"
    if "output_shape" in options or not (strides and dilations and pads) or min(strides, default=1) < 1:
        return {}
    extents = [dilation * (size - 1) for size, dilation in zip(kernel, dilations, strict=True)]
    padded = [pads[axis] + pads[axis + count] for axis in range(count)]
    if automatic == b"VALID":
        padded = [0] * count
    elif automatic != b"NOTSET":  # SAME_UPPER or SAME_LOWER: an output of ceil(size / stride)
        padded = extents if node.op_type != "ConvTranspose" else []
    if node.op_type == "ConvTranspose":
        extra = listed("output_padding", 0)
        if not extra or not padded:
            return {}
        parts = zip(extra, extents, strides, padded, strict=True)
        added = [more + extent + 1 - stride - pad for more, extent, stride, pad in parts]
        return {axis - count: (max(each, 0), 1) for axis, each in enumerate(added)}
    return {
        axis - count: (pad - extent, stride)
        for axis, (pad, extent, stride) in enumerate(zip(padded, extents, strides, strict=True))
    }


def window_strides(node: onnx.NodeProto) -> float:
    """How many times fewer values a window's strides leave (their product: 4 for a stride of 2 on the height and
    width); 1 for a stride ONNX Runtime refuses (0 or less)."""
    listed = next((list(each.ints) for each in node.attribute if each.name == "strides"), [])
    return math.prod(float(stride) if stride > 0 else 1.0 for stride in listed[:MAX_DIMS])


def shrunk(count: int, added: int, stride: int) -> int:
    """`count` values padded on an axis, once a window that adds `added` (`window_effect`) has slid over it by
    `stride`: over T + P values (floor or ceil mode) it makes at most ceil(P / stride) more than over T."""
    return min(-(-max(count + added, 0) // max(stride, 1)), _MOST)


def enlarged(count: int, scale: float) -> int:
    """`count` values padded, `scale` times as many once resized (at most 2^40: past any bound, and no overflow)."""
    return int(min(math.ceil(count * scale), _MOST)) if count else 0


def transposed_scales(node: onnx.NodeProto) -> np.ndarray | None:
    """The factors by which a ConvTranspose enlarges each axis: its strides; or, where it has an `output_shape`
    (sizes of its own, whatever its input's), those sizes, as if it enlarged a single pixel to them (a model
    of fixed output sizes runs on no other tile, so counting its worst case refuses nothing srfeat could run)."""
    options = {each.name: each for each in node.attribute}
    for name in ("output_shape", "strides"):
        if name in options and options[name].ints:
            return np.asarray(options[name].ints[:MAX_DIMS], dtype=np.float64)
    return None
