"""The Python API: `Upscaler("default")(image)` for PIL images, numpy arrays and tensors.

Whatever comes in goes through one path: a (C, H, W) float image in [0, 1] on the host, C = 1
(gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). The network sees RGB: gray is replicated to
three channels and the result converted back with the BT.601 luma weights (which map gray to
itself); alpha is not a colour, so it is resized on its own with MATLAB's bicubic and put back.
The result is clamped to [0, 1] and returned as the kind and dtype that came in.

Here: the upscaler and that one path. The kinds of image it takes, and how each comes back:
`srfeat.inference.image_kinds`; the device and precision, and the network made ready on them:
`srfeat.inference.devices`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.data.resize import check_output_fits, imresize
from srfeat.errors import InvalidOptionError, ModelOutputError
from srfeat.hardware import one_line_if_out_of_memory
from srfeat.inference.checks import (
    MAX_OUTSCALE,
    check_channels,
    check_options,
    check_outscale,
    check_pixels,
    check_rgb_generator,
    check_size,
    resolve_backend,
    scaled_size,
)
from srfeat.inference.devices import (
    DTYPES,
    onnx_precision,
    onnx_runner,
    out_of_memory_loading,
    prepare_model,
    resolve_device,
    resolve_dtype,
)
from srfeat.inference.ensemble import self_ensemble
from srfeat.inference.fused import InferenceGenerator
from srfeat.inference.image_kinds import ImageKinds
from srfeat.inference.onnx_runner import OnnxRunner
from srfeat.inference.pixels import from_float_tensor, mix_grey, resize_alpha, to_float_tensor
from srfeat.inference.tiling import (
    MIN_TILE,
    allocate_output,
    check_output_memory,
    count_non_finite,
    plan_memory,
    upscale_tiled,
)
from srfeat.weights import check_weights
from srfeat.weights.blend import load_blended

logger = logging.getLogger(__name__)

# resolve_device and the pixel conversions: the commands, the evaluation and the web app import them from here.
__all__ = [
    "MAX_OUTSCALE",
    "Upscaler",
    "check_outscale",
    "from_float_tensor",
    "resolve_device",
    "resolve_dtype",
    "to_float_tensor",
]


class Upscaler(ImageKinds):
    """A generator ready to upscale images: `Upscaler("default")(image)`.

    `model` is a bundled name (`default`, `gan`), a checkpoint path, a blend as `srfeat eval` names one
    (`"strength=0.3"`, `"blend=A,B,0.3"`), or an `SRFeatGenerator`.
    `device` is `"auto"` (GPU if available; the CPU for the onnxruntime backend), `"cpu"` or
    `"cuda[:i]"`; `dtype` is `"fp32"` (default), `"fp16"` or `"bf16"` (a tile whose
    reduced-precision output has NaN or inf is recomputed in fp32). `tile` is the tile size in
    input pixels (None: chosen from the free memory; 0: no tiling); `tile_pad` the context
    around each tile (None: the network's receptive radius, which makes tiling exact).
    `compile=True` runs the network through `torch.compile` (worth it for many images on a
    GPU). `progress` shows a bar over the tiles;
    `on_tile(done, total)`, if set, is called before the first tile and after each one (an
    exception it raises stops the image there: how a caller cancels).
    `strength` (0 to 1, with the `default` model) is the detail dial: the network interpolation
    of `default` (0) and `gan` (1), blended once here. `tta=True` averages the eight flips and
    rotations (self-ensemble: a little more faithful, eight times the time).
    `backend` is who runs the network: "torch" (srfeat's inference path) or "onnxruntime" (ONNX
    Runtime on the CPU, on an exported `.onnx` file or the model exported in memory); None picks
    onnxruntime for an `.onnx` file and torch otherwise. Tiles, alpha and precision handling
    are the same for both.

    One `Upscaler` may be shared by threads: their calls run one image at a time, in turn (each
    call plans its tiles from the memory free when it starts, and two at once would each plan
    for all of it; the network already uses every core). For images in parallel on several
    GPUs, make one `Upscaler` per device. Results never require grad, whatever came in.

    `command_line`, for the commands that make one (`srfeat upscale`, `eval`, `serve`): its messages
    name their flags (`--device cpu`), not its keywords (`device='cpu'`); a message never names both.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | SRFeatGenerator = "default",
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype = "fp32",
        tile: int | None = None,
        tile_pad: int | None = None,
        compile: bool = False,
        progress: bool = False,
        strength: float | None = None,
        tta: bool = False,
        backend: str | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        command_line: bool = False,
    ) -> None:
        check_options(
            model,
            tile=tile,
            tile_pad=tile_pad,
            strength=strength,
            on_tile=on_tile,
            compile=compile,
            progress=progress,
            tta=tta,
            command_line=command_line,
        )
        self.command_line = command_line
        self.backend = resolve_backend(backend, model, command_line=command_line)
        if self.backend == "onnxruntime" and (device is None or str(device) == "auto"):
            device = "cpu"  # where ONNX Runtime runs here: "auto" must not pick a GPU it cannot use
        self.device = resolve_device(device, command_line=command_line)
        # The onnxruntime backend's refusal of fp16 and bf16 first: resolve_dtype's advice for fp16 on
        # a CPU ("use fp32 or bf16") is the torch backend's, and onnxruntime would refuse bf16 next.
        requested = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
        if self.backend == "onnxruntime" and requested in (torch.float16, torch.bfloat16):
            raise InvalidOptionError(onnx_precision(command_line=command_line))
        self.dtype = resolve_dtype(dtype, self.device, command_line=command_line)
        if tile is not None and 0 < tile < MIN_TILE:
            # Exact all the same, but each tile carries its padding: a 1-pixel tile is ~30x slower. Tiles that read
            # one window (an image within a tile and its pad) share one run of the body, but each is still
            # upsampled on its own: 2.3x the untiled time for 32x32 on the CPU, and the size is not known here.
            logger.warning("tile size %d is below %d pixels: the result is the same, but far slower", tile, MIN_TILE)
        if isinstance(model, SRFeatGenerator):  # files are checked when they are loaded
            check_weights(model.state_dict().items(), "the generator")
        self.model: InferenceGenerator | OnnxRunner
        self.model_fp32: InferenceGenerator | OnnxRunner
        if self.backend == "onnxruntime":
            self.model = self.model_fp32 = onnx_runner(
                model, strength, self.device, self.dtype, compile, command_line=command_line
            )
        else:
            # a traceback through Module.to where the device has no room for the weights (a GPU others use)
            with one_line_if_out_of_memory(lambda: out_of_memory_loading(self.device, command_line=command_line)):
                generator = load_blended(model, strength, command_line=command_line)
                check_rgb_generator(generator, "the generator" if isinstance(model, SRFeatGenerator) else model)
                self.model_fp32 = prepare_model(generator, self.device, torch.float32)
                self.model = (
                    self.model_fp32
                    if self.dtype == torch.float32
                    else prepare_model(generator, self.device, self.dtype)
                )
        self.scale: int = self.model.scale
        self.tile = tile
        self.tile_pad = self.model.receptive_radius if tile_pad is None else tile_pad
        if self.tile_pad < self.model.receptive_radius and tile != 0:
            logger.warning(
                "tile pad %d is below the network's receptive radius (%d): tiled results may show seams; "
                "leave it out for exact tiling",
                self.tile_pad,
                self.model.receptive_radius,
            )
        elif self.tile_pad > self.model.receptive_radius and tile != 0:
            logger.warning(
                "tile pad %d is beyond the network's receptive radius (%d): the result is the same as with %d, "
                "each tile only reads and computes more; leave it out",
                self.tile_pad,
                self.model.receptive_radius,
                self.model.receptive_radius,
            )
        self.progress = progress
        self.tta = tta
        self.strength = strength
        # What the repr (and so `srfeat upscale`'s first line) names: it showed no model, so a run of gan
        # and one of default looked the same.
        self.model_name = None if isinstance(model, SRFeatGenerator) else os.fsdecode(model)
        self.on_tile = on_tile
        if compile and isinstance(self.model, InferenceGenerator):
            self.model.compile_parts()
        self._fallback = None if self.dtype == torch.float32 else self.model_fp32
        # Re-entrant: an `on_tile` callback may itself upscale a (small) image on this thread.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        tile = "auto" if self.tile is None else self.tile
        named = (
            "<SRFeatGenerator>" if self.model_name is None else repr(self.model_name)
        )  # repr: a name's controls escaped
        extra = ("" if self.strength is None else f", strength={self.strength}") + (", tta=True" if self.tta else "")
        extra += "" if self.backend == "torch" else f", backend={self.backend}"
        return (
            f"Upscaler(model={named}, scale={self.scale}, device={self.device}, dtype={self.dtype}, tile={tile}, "
            f"tile_pad={self.tile_pad}{extra})"
        )

    # -- the one path every input takes -------------------------------------------------

    def upscale_rgb(self, image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(3, H, W) float in [0, 1] on the host -> (3, sH, sW) float32 in [0, 1] on the host
        (written into `out`, if given: the colour channels of an RGBA output, say).

        The network's output is clamped here, right after the network, as the exported ONNX graph
        clamps it (the file's contract): the self-ensemble's average, the outscale resize and the
        grey mix then start from the same values on both backends. An output that is not finite
        is refused first: a clamp would make inf a white pixel, a silent wrong image.
        """
        _, height, width = image.shape
        plan = plan_memory(*self.model.bytes_per_pixel(), pad=self.tile_pad, device=self.device)
        tile = plan.tile if self.tile is None else (self.tile or max(height, width))
        for model in (self.model, self.model_fp32):
            model.upsample_pixels = plan.upsample_pixels
        result = upscale_tiled(
            self.model,
            image,
            scale=self.scale,
            tile=tile,
            pad=self.tile_pad,
            device=self.device,
            dtype=self.dtype,
            fallback=self._fallback,
            progress=self.progress,
            memory_format=self.model.memory_format,
            on_tile=self.on_tile,
            out=out,
            command_line=self.command_line,
        )
        bad = count_non_finite(result)
        if bad:
            raise ModelOutputError(
                f"the network's output has {bad:,} value(s) that are not finite (NaN or inf): "
                "the model's weights are broken (a diverged checkpoint?); nothing written"
            )
        return result.clamp_(0.0, 1.0)

    def upscale_channels(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor:
        """(C, H, W) float in [0, 1], C = 1, 2, 3 or 4 -> (C, H', W') float32 in [0, 1] on the host.

        H' = round(H * outscale) (default outscale: the model's scale); the network's output is
        resized to it with MATLAB's bicubic.
        """
        check_channels(image.shape[0])
        check_outscale(outscale)
        check_size(*image.shape[-2:])
        self.check_memory(*image.shape)  # before its values are read, or copied to float32
        check_pixels(image)
        with self._lock:
            return self._upscale_checked(image.detach().to("cpu", torch.float32), outscale)

    def _upscale_checked(self, image: torch.Tensor, outscale: float | None) -> torch.Tensor:
        channels, height, width = image.shape
        color, alpha = (image[:-1], image[-1:]) if channels in (2, 4) else (image, None)
        grey = color.shape[0] == 1
        rgb = color.expand(3, height, width) if grey else color
        size = self.output_size(height, width, outscale)
        native = size == (height * self.scale, width * self.scale)
        if not native:  # the outscale resize's memory, checked before the network's minutes, not after
            check_output_fits(channels, size)
        # At the model's scale the result's channels are written into the output (laid out
        # height-width-channel, as the arrays made of it) where they are made: the network's RGB
        # straight into RGBA's first three, the grey mix into L(A)'s first. Putting them together
        # afterwards (torch.cat) copied the whole result: 256 MB more for a 4000x4000 RGBA one.
        output = allocate_output(*size, channels) if native and channels != 3 else None
        target = output[:3] if output is not None and not grey else None
        result = self_ensemble(self.upscale_rgb, rgb, target) if self.tta else self.upscale_rgb(rgb, target)
        if grey:
            result = mix_grey(result, None if output is None else output[:1])
        if not native:  # the grey mix, then the resize, as always: the order changes the rounding
            result = imresize(result, size=size)
        if alpha is None:
            return result.clamp_(0.0, 1.0)
        if output is None:
            return torch.cat([result, resize_alpha(alpha, size)]).clamp_(0.0, 1.0)
        # (a grey input's RGB was freed by the mix's assignment, before the alpha needs memory)
        resize_alpha(alpha, size, out=output[-1:])
        return output.clamp_(0.0, 1.0)

    def check_memory(self, channels: int, height: int, width: int) -> None:
        """Refuse, before anything is allocated, an image whose result at the model's scale (made
        whatever the outscale) does not fit in the host's memory, with the full-size buffers made on
        the way: the network's RGB before a grey image's mix, a self-ensemble pass beside its sum."""
        working = (3 if channels in (1, 2) else 0) + (3 if self.tta else 0)
        check_output_memory(height * self.scale, width * self.scale, channels, working)

    def output_size(
        self, height: int, width: int, outscale: float | None = None, *, command_line: bool = False
    ) -> tuple[int, int]:
        """(height, width) of the result for an input of that size; an InvalidImageError where `outscale` leaves
        a side under 1 pixel (`scaled_size`; `command_line`: it names --outscale)."""
        if outscale is None or outscale == self.scale:
            return height * self.scale, width * self.scale
        return scaled_size(height, width, outscale, command_line=command_line)
