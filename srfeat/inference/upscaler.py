"""The Python API: `Upscaler("default")(image)` for PIL images, numpy arrays and tensors.

Whatever comes in goes through one path: a (C, H, W) float image in [0, 1] on the host, C = 1
(gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). The network sees RGB: gray is replicated to
three channels and the result converted back with the BT.601 luma weights (which map gray to
itself); alpha is not a colour, so it is resized on its own with MATLAB's bicubic and put back.
The result is clamped to [0, 1] and returned as the kind and dtype that came in.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, overload

import numpy as np
import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.data.resize import check_output_fits, imresize
from srfeat.errors import (
    ImageReadError,
    InvalidImageError,
    InvalidOptionError,
    ModelOutputError,
    NotAnImageError,
    SRFeatError,
)
from srfeat.hardware import cpu_has_native_bf16
from srfeat.inference.checks import (
    MAX_OUTSCALE,
    check_channels,
    check_options,
    check_outscale,
    check_pixels,
    check_rgb_generator,
    check_size,
    resolve_backend,
)
from srfeat.inference.ensemble import self_ensemble
from srfeat.inference.fused import InferenceGenerator
from srfeat.inference.onnx_runner import OnnxRunner, load_onnx_runner
from srfeat.inference.pixels import (
    check_dtype,
    from_float_tensor,
    mix_grey,
    resize_alpha,
    to_float_tensor,
)
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

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["MAX_OUTSCALE", "Upscaler", "check_outscale", "resolve_device", "resolve_dtype"]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "half": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`"auto"`/None: the GPU if there is one, else the CPU; a GPU that is missing is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise InvalidOptionError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or auto") from error
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta...: memory planning and checks know these two
        raise InvalidOptionError(f"device {device} is not supported: srfeat runs on cpu or cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(
            f"device {device} requested but no CUDA GPU is available; use --device cpu (device='cpu')"
        )
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        # else CUDA's "invalid device ordinal" from inside the model's first `.to`
        raise InvalidOptionError(
            f"device {device} requested but there are {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
        )
    return device


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """fp32 anywhere; fp16 and bf16 on a GPU (bf16 also on a CPU that has native bf16 support)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InvalidOptionError(f"unknown precision {dtype!r}: use one of fp32, fp16, bf16")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InvalidOptionError(f"unsupported precision {dtype}: use float32, float16 or bfloat16")
    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidOptionError("half precision (fp16) needs a GPU; on the CPU use fp32 (the default) or bf16")
    if device.type == "cpu" and dtype == torch.bfloat16:
        if not torch.backends.mkldnn.is_available():
            raise InvalidOptionError("bf16 on the CPU needs PyTorch with oneDNN; use fp32 (the default)")
        if not cpu_has_native_bf16():
            # oneDNN emulates bf16 there: the user asked for it, so it runs, but they should know
            logger.warning(
                "this CPU has no native bf16 instructions: bf16 runs emulated, slower than fp32 (the default)"
            )
    return dtype


def _prepare(generator: SRFeatGenerator, device: torch.device, dtype: torch.dtype) -> InferenceGenerator:
    # Winograd convolutions where they run (CPU, float32), channels-last cuDNN/oneDNN elsewhere:
    # the layout to convert to depends on where the model ends up.
    model = InferenceGenerator(generator).to(device=device, dtype=dtype)
    # Module.to accepts memory_format at run time; torch's typed overloads leave it out.
    model = model.to(memory_format=model.memory_format)  # pyright: ignore[reportCallIssue]
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        if dtype == torch.float32:  # loaded weights are finite: folding BatchNorm into them overflowed
            raise SRFeatError("the model's weights overflow float32 once BatchNorm is folded in: a broken checkpoint")
        raise SRFeatError(f"the model's weights do not fit in {dtype} (they overflow); use fp32")
    return model.eval()


ONNX_PRECISION = (
    "the onnxruntime backend runs the model in its own precision: export with --fp16 for a float16 model, "
    "and leave --half/--bf16 out (from Python: dtype='fp32')"
)


def _onnx_runner(
    model: str | os.PathLike[str] | SRFeatGenerator,
    strength: float | None,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool,
) -> OnnxRunner:
    if device.type != "cpu":
        raise InvalidOptionError(
            "the onnxruntime backend runs on the CPU; use --device cpu (device='cpu'), "
            f"or the torch backend on {device}"
        )
    if dtype != torch.float32:
        raise InvalidOptionError(ONNX_PRECISION)
    if compile:
        raise InvalidOptionError("--compile (compile=True) applies to the torch backend only")
    return load_onnx_runner(model, strength)


class Upscaler:
    """A generator ready to upscale images: `Upscaler("default")(image)`.

    `model` is a bundled name (`default`, `gan`), a checkpoint path, or an `SRFeatGenerator`.
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
        )
        self.backend = resolve_backend(backend, model)
        if self.backend == "onnxruntime" and (device is None or str(device) == "auto"):
            device = "cpu"  # where ONNX Runtime runs here: "auto" must not pick a GPU it cannot use
        self.device = resolve_device(device)
        # The onnxruntime backend's refusal of fp16 and bf16 first: resolve_dtype's advice for fp16 on
        # a CPU ("use fp32 or bf16") is the torch backend's, and onnxruntime would refuse bf16 next.
        requested = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
        if self.backend == "onnxruntime" and requested in (torch.float16, torch.bfloat16):
            raise InvalidOptionError(ONNX_PRECISION)
        self.dtype = resolve_dtype(dtype, self.device)
        if tile is not None and 0 < tile < MIN_TILE:
            # exact all the same, but each tile carries its padding: a 1-pixel tile is ~30x slower
            logger.warning("tile size %d is below %d pixels: the result is the same, but far slower", tile, MIN_TILE)
        if isinstance(model, SRFeatGenerator):  # files are checked when they are loaded
            check_weights(model.state_dict().items(), "the generator")
        self.model: InferenceGenerator | OnnxRunner
        self.model_fp32: InferenceGenerator | OnnxRunner
        if self.backend == "onnxruntime":
            self.model = self.model_fp32 = _onnx_runner(model, strength, self.device, self.dtype, compile)
        else:
            generator = load_blended(model, strength)
            check_rgb_generator(generator, "the generator" if isinstance(model, SRFeatGenerator) else model)
            self.model_fp32 = _prepare(generator, self.device, torch.float32)
            self.model = (
                self.model_fp32 if self.dtype == torch.float32 else _prepare(generator, self.device, self.dtype)
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
        self.on_tile = on_tile
        if compile and isinstance(self.model, InferenceGenerator):
            self.model.compile_parts()
        self._fallback = None if self.dtype == torch.float32 else self.model_fp32
        # Re-entrant: an `on_tile` callback may itself upscale a (small) image on this thread.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        tile = "auto" if self.tile is None else self.tile
        extra = ("" if self.strength is None else f", strength={self.strength}") + (", tta=True" if self.tta else "")
        extra += "" if self.backend == "torch" else f", backend={self.backend}"
        return (
            f"Upscaler(scale={self.scale}, device={self.device}, dtype={self.dtype}, tile={tile}, "
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

    def output_size(self, height: int, width: int, outscale: float | None = None) -> tuple[int, int]:
        """(height, width) of the result for an input of that size."""
        if outscale is None or outscale == self.scale:
            return height * self.scale, width * self.scale
        return max(1, round(height * outscale)), max(1, round(width * outscale))

    # -- inputs and outputs ---------------------------------------------------------------

    @overload
    def __call__(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor: ...
    @overload
    def __call__(self, image: np.ndarray, outscale: float | None = None) -> np.ndarray: ...
    @overload
    def __call__(self, image: Image.Image, outscale: float | None = None) -> Image.Image: ...

    def __call__(self, image, outscale=None):  # type: ignore[no-untyped-def]
        """Upscale a PIL image, a numpy array (HxW or HxWxC; uint8, uint16 or float in [0, 1]) or a
        float tensor in [0, 1] ((C, H, W) or (N, C, H, W)); returns the same kind, dtype and layout.
        An array is read channels last even where its first side could be channels (a warning says so)."""
        if isinstance(image, torch.Tensor):
            return self.upscale_tensor(image, outscale)
        if isinstance(image, np.ndarray):
            if image.ndim == 3 and image.shape[0] <= 4 < image.shape[1] and 1 <= image.shape[2] <= 4:
                # HxWxC by the documented rule, but a channels-first image 4 or fewer pixels wide has this
                # shape too: its result would be a wrong picture of the same kind, without a word
                logger.warning(
                    "the array of shape %s is read as HxWxC, %d row(s) of %d pixels with %d channel(s); "
                    "if it is channels first (C, H, W), pass array.transpose(1, 2, 0)",
                    image.shape,
                    *image.shape,
                )
            return self.upscale_array(image, outscale)
        from PIL import Image

        if isinstance(image, Image.Image):
            return self.upscale_pil(image, outscale)
        advice = (
            ": call the upscaler once per image (a (N, C, H, W) tensor batches images of one size)"
            if isinstance(image, (list, tuple))
            else ""
        )
        raise NotAnImageError(
            f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}{advice}"
        )

    def upscale_tensor(self, image: torch.Tensor, outscale: float | None = None) -> torch.Tensor:
        """(C, H, W) or (N, C, H, W) float in [0, 1] -> the same layout, dtype and device.

        Any layout (channels_last, a transposed view) and device is read; the result is a new
        contiguous tensor that does not require grad. A batch is upscaled image by image.
        """
        if not image.is_floating_point():
            raise InvalidImageError(
                f"expected a float tensor with values in [0, 1], got {image.dtype}; e.g. tensor.float() / 255"
            )
        if image.layout != torch.strided:  # torch's NotImplementedError, deep inside, otherwise
            raise InvalidImageError(f"expected a dense tensor, got a {image.layout} one; use tensor.to_dense()")
        if image.dim() in (3, 4) and image.shape[-3] > 4 and image.shape[-2] > 4 and 1 <= image.shape[-1] <= 4:
            order = "2, 0, 1" if image.dim() == 3 else "0, 3, 1, 2"
            raise InvalidImageError(
                f"expected a (C, H, W) or (N, C, H, W) tensor (C = 1 to 4), got shape {tuple(image.shape)}: "
                f"channels last? use tensor.permute({order})"
            )
        if image.dim() == 3:
            return self.upscale_channels(image, outscale).to(image.device, image.dtype)
        if image.dim() == 4:
            if image.shape[0] == 0:  # an empty batch: the empty batch of results
                check_channels(image.shape[1])
                check_outscale(outscale)
                check_size(image.shape[2], image.shape[3])
                height, width = self.output_size(image.shape[2], image.shape[3], outscale)
                return image.new_zeros((0, image.shape[1], height, width))
            results = [self.upscale_channels(item, outscale) for item in image]
            return torch.stack(results).to(image.device, image.dtype)
        raise InvalidImageError(f"expected a (C, H, W) or (N, C, H, W) tensor, got shape {tuple(image.shape)}")

    def upscale_array(self, array: np.ndarray, outscale: float | None = None) -> np.ndarray:
        """HxW or HxWxC numpy array, uint8, uint16 or float in [0, 1] -> the same dtype and layout."""
        if array.ndim not in (2, 3):
            raise InvalidImageError(f"expected an HxW or HxWxC array, got shape {array.shape}")
        if array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4):
            raise InvalidImageError(
                f"expected an HxWxC array (C = 1 to 4), got shape {array.shape}: channels first? "
                "use array.transpose(1, 2, 0)"
            )
        hwc = array[..., None] if array.ndim == 2 else array
        check_dtype(array.dtype)
        check_channels(hwc.shape[2])
        check_outscale(outscale)
        check_size(*hwc.shape[:2])
        # Before the pixels are converted (4 bytes a value: a huge array was copied, then refused).
        self.check_memory(hwc.shape[2], *hwc.shape[:2])
        result = self.upscale_channels(to_float_tensor(hwc), outscale)
        output = from_float_tensor(result, array.dtype)
        return output[..., 0] if array.ndim == 2 else output

    def upscale_pil(self, image: Image.Image, outscale: float | None = None) -> Image.Image:
        """A PIL image -> a PIL image in the plain mode it maps to: L, LA, RGB, RGBA and F stay, 16-bit
        gray comes back I;16, other modes RGB(A) or L (the README's table, `srfeat.data.io.pil_to_array`).

        The ICC profile, if any, is carried over, unless it describes another colour space than
        the result's (a CMYK one, whose colours were converted through it into sRGB; an RGB one
        on grey): that is dropped with a warning, as from files. EXIF orientation is not applied
        here (the caller decides; `srfeat.data.io.open_image` applies it).
        """
        from srfeat.data.colour_profiles import is_cmyk_profile, other_colour_space
        from srfeat.data.io import DECODE_ERRORS, array_to_pil, pil_to_array

        try:  # a lazily opened file decodes here: its damage was PIL's own OSError or ValueError, from inside
            image.load()
            pixels = pil_to_array(image)
        except SRFeatError:
            raise
        except DECODE_ERRORS as error:
            filename = getattr(image, "filename", "")  # an ImageFile's; an image made in memory has none
            source = f" ({filename})" if filename else ""
            problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ImageReadError(
                f"the PIL image{source} cannot be decoded: {problem}; a damaged file, or one closed before upscaling?"
            ) from error
        array = self.upscale_array(pixels, outscale)
        if array.dtype == np.uint16 and array.shape[2] == 2:  # I;16 with a see-through level: PIL has no 16-bit LA
            array = np.rint(array / 257.0).astype(np.uint8)
        result = array_to_pil(array)
        profile = image.info.get("icc_profile")
        if image.mode == "CMYK" and is_cmyk_profile(profile):
            return result  # its colours went through it into sRGB (untagged RGB is read as sRGB)
        if profile and not other_colour_space(profile, array.shape[2], "the image"):
            result.info["icc_profile"] = profile
        return result
