"""What `Upscaler` refuses before it runs: options of the wrong kind, sizes, channels and pixel values.

Each check raises a one-line `srfeat.errors` exception that says what to do, before anything
is loaded or allocated (a tile of 1.5 pixels or a NaN pixel would otherwise pass or fail deep
inside, after the model loaded or the network ran).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.data.io import FLOAT_PIXEL_SLACK
from srfeat.errors import (
    InvalidImageError,
    InvalidOptionError,
    WeightsError,
    check_flag,
    given,
    is_real_number,
    is_whole_number,
    shown,
)
from srfeat.inference.onnx_runner import is_onnx_file
from srfeat.inference.tiling import count_non_finite, value_range
from srfeat.weights.blend import check_alpha

__all__ = [
    "BACKENDS",
    "MAX_OUTSCALE",
    "check_channels",
    "check_options",
    "check_outscale",
    "check_pixels",
    "check_rgb_generator",
    "check_size",
    "resolve_backend",
    "scaled_size",
]

# --outscale beyond this is a typo, and its output would not fit in memory for ordinary photos.
MAX_OUTSCALE = 16.0


def check_outscale(outscale: float | None) -> None:
    """A final scale must be a finite number in (0, MAX_OUTSCALE]; NaN would pass `<= 0`."""
    if outscale is None:
        return
    if not is_real_number(outscale):  # True would be 1x, '2' a TypeError
        raise InvalidImageError(f"outscale must be a number, got {type(outscale).__name__} {outscale!r}")
    if not (math.isfinite(outscale) and 0 < float(outscale) <= MAX_OUTSCALE):
        raise InvalidImageError(f"outscale must be a number above 0 and at most {MAX_OUTSCALE:g}, got {outscale}")


def scaled_size(
    height: int, width: int, outscale: float, *, what: str = "image", command_line: bool = False
) -> tuple[int, int]:
    """(height, width) of a `what` of that size resized by `outscale`, each side rounded: an InvalidImageError
    where a side would round to 0 pixels (--outscale 1e-320 wrote a 1x1 image), with the smallest outscale
    that keeps 1 pixel on the shorter side. `command_line`: the refusal names --outscale, else `outscale`."""
    size = round(height * outscale), round(width * outscale)
    if min(size) >= 1:
        return size
    option = "--outscale" if command_line else "outscale"
    # 1 / shorter side makes it 1 pixel; three significant digits round it by under 0.5%, still 1 pixel
    smallest = 1 / min(height, width)
    raise InvalidImageError(
        f"{option} {outscale} would make this {width}x{height} {what} {size[1]}x{size[0]} pixels, under 1 pixel on "
        f"a side: give {option} {smallest:.3g} or more"
    )


def check_size(height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise InvalidImageError(f"the image is empty ({width}x{height} pixels): nothing to upscale")


def check_channels(channels: int) -> None:
    if channels not in (1, 2, 3, 4):
        raise InvalidImageError(f"expected 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels, got {channels}")


def check_pixels(image: torch.Tensor) -> None:
    """(C, H, W): not empty, and (floats) no NaN or infinite value, which would spread to the whole
    output, and nothing outside [0, 1] (give or take FLOAT_PIXEL_SLACK)."""
    check_size(image.shape[-2], image.shape[-1])
    if image.is_meta:  # reading its values would be torch's "Tensor.item() cannot be called on meta tensors"
        raise InvalidImageError("the tensor is on the meta device: it has no pixel values to upscale")
    if not image.is_floating_point():
        return
    image = image.detach()  # a tensor that requires grad: no autograd warning for reading its values
    bad = count_non_finite(image)
    if bad:
        raise InvalidImageError(
            f"{bad:,} value(s) of the image's {image.numel():,} are not finite (NaN or inf): one is enough to "
            "make the whole output NaN; replace them (e.g. numpy.nan_to_num) before upscaling"
        )
    low, high = value_range(image)
    if low < -FLOAT_PIXEL_SLACK or high > 1 + FLOAT_PIXEL_SLACK:
        if low >= -FLOAT_PIXEL_SLACK and high <= 255 + FLOAT_PIXEL_SLACK:
            advice = "if they are 0 to 255, divide by 255 (or pass the uint8 array)"
        elif low >= -1 - FLOAT_PIXEL_SLACK and high <= 1 + FLOAT_PIXEL_SLACK:
            advice = "if they are -1 to 1, map them with (x + 1) / 2"
        else:
            advice = "rescale them to [0, 1]"
        raise InvalidImageError(
            f"float pixels must be in [0, 1], these go from {low:.4g} to {high:.4g}: {advice}; "
            "clamping them would make the result white or black"
        )


def check_options(
    model: object, *, tile: object, tile_pad: object, strength: object, on_tile: object = None, **flags: object
) -> None:
    """The kinds of `Upscaler`'s options, before anything loads: a tile of 1.5 or "64" pixels, a
    strength of "0.3", or a flag given as "yes", is a mistake that would otherwise pass or fail deep inside."""
    if isinstance(model, str) and not model.strip():
        raise InvalidOptionError("model is an empty string: give a bundled name (default, gan) or a checkpoint path")
    if not isinstance(model, (str, os.PathLike, SRFeatGenerator)):
        hint = (
            ": a state dict? build its generator with srfeat.weights.generator_from_state(state)"
            if isinstance(model, Mapping)
            else f" {shown(model)}"
        )
        raise InvalidOptionError(
            f"model must be a bundled name, a checkpoint path or an SRFeatGenerator, got {type(model).__name__}{hint}"
        )
    if isinstance(model, SRFeatGenerator) and any(value.is_meta for value in model.state_dict().values()):
        raise InvalidOptionError(
            "the generator is on the meta device: it has no weights yet; load them first "
            "(srfeat.weights.load_generator, or load_state_dict(state, assign=True))"
        )
    for name, value, least in (("tile", tile, "0 for no tiling"), ("tile_pad", tile_pad, "0")):
        if value is not None and (not is_whole_number(value) or value < 0):
            raise InvalidOptionError(f"{name} must be a whole number of pixels, at least {least}, got {given(value)}")
    if strength is not None:
        # strength comes from the caller unchecked (typed object); check_alpha checks its kind first.
        check_alpha(strength, "strength", InvalidOptionError)  # pyright: ignore[reportArgumentType]
    if on_tile is not None and not callable(on_tile):  # else a TypeError at the first image's first tile
        raise InvalidOptionError(f"on_tile must be a function of (done, total) or None, got {type(on_tile).__name__}")
    for name, value in flags.items():
        check_flag(value, name)


BACKENDS = ("torch", "onnxruntime")


def resolve_backend(backend: str | None, model: object, *, command_line: bool = False) -> str:
    """None: onnxruntime for an `.onnx` file, torch otherwise; an `.onnx` file runs on onnxruntime only
    (said with `srfeat upscale`'s --backend with `command_line`, else with `Upscaler`'s `backend` keyword)."""
    if backend is None:
        return "onnxruntime" if is_onnx_file(model) else "torch"
    if backend not in BACKENDS:
        raise InvalidOptionError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "torch" and is_onnx_file(model):
        onnxruntime = "--backend onnxruntime" if command_line else "backend='onnxruntime'"
        raise InvalidOptionError(f"{model} is an ONNX model: run it with the onnxruntime backend ({onnxruntime})")
    return backend


def check_rgb_generator(generator: SRFeatGenerator, source: object) -> None:
    """The network must take and give RGB, as every srfeat path (grey and alpha around it, the
    ONNX file's convention) assumes. A checkpoint of another channel count loads (its shapes are
    consistent), and failed only at the first tile, with a traceback from inside the network."""
    if generator.in_channels != 3:
        raise WeightsError(
            f"{source} is a generator of {generator.in_channels}-channel images: srfeat upscales and exports "
            "RGB generators (3 channels); grey and alpha images are handled around an RGB network"
        )
