"""Where and in what precision the network runs: the device and dtype asked for, checked, and the
network made ready on them (srfeat's inference generator, or ONNX Runtime's runner)."""

from __future__ import annotations

import logging
import os

import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, ModelOutOfMemoryError, SRFeatError
from srfeat.hardware import cpu_has_native_bf16
from srfeat.inference.fused import InferenceGenerator
from srfeat.inference.onnx_runner import OnnxRunner, load_onnx_runner

logger = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "onnx_precision",
    "onnx_runner",
    "out_of_memory_loading",
    "prepare_model",
    "resolve_device",
    "resolve_dtype",
]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "half": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def on_the_cpu(*, command_line: bool) -> str:
    """The CPU as the caller asks for it: `srfeat upscale`'s (eval's, serve's) flag with `command_line`, else
    `Upscaler`'s keyword. A message never names both: a command's user has no keywords, a Python caller no flags."""
    return "--device cpu" if command_line else "device='cpu'"


def resolve_device(device: str | torch.device | None, *, command_line: bool = False) -> torch.device:
    """`"auto"`/None: the GPU if there is one, else the CPU; a GPU that is missing is an error, whose
    advice names --device with `command_line` (a command's flag), else the `device` keyword."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:  # TypeError: a float, a bool, a list (torch's many-line overloads)
        given = repr(str(device)) if isinstance(device, str) else f"{type(device).__name__} {device!r}"
        raise InvalidOptionError(f"unknown device {given}: use cpu, cuda, cuda:N or auto") from error
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta...: memory planning and checks know these two
        raise InvalidOptionError(f"device {device} is not supported: srfeat runs on cpu or cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidOptionError(
            f"device {device} requested but no CUDA GPU is available; use {on_the_cpu(command_line=command_line)}"
        )
    if device.type == "cuda" and device.index is not None and device.index >= (count := torch.cuda.device_count()):
        # else CUDA's "invalid device ordinal" from inside the model's first `.to`
        raise InvalidOptionError(
            f"device {device} requested but there are {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
        )
    return device


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, *, command_line: bool = False) -> torch.dtype:
    """fp32 anywhere; fp16 and bf16 on a GPU (bf16 also on a CPU that has native bf16 support). The
    advice names `srfeat upscale`'s --half and --bf16 with `command_line`, else the precisions' names."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InvalidOptionError(f"unknown precision {dtype!r}: use one of fp32, fp16, bf16")
        dtype = DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InvalidOptionError(f"unsupported precision {dtype}: use float32, float16 or bfloat16")
    if device.type == "cpu" and dtype == torch.float16:
        if command_line:  # the user typed --half: "use fp32 or bf16" named no flag they could give
            raise InvalidOptionError("--half (fp16) needs a GPU; on the CPU leave it out (fp32) or use --bf16")
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


def prepare_model(generator: SRFeatGenerator, device: torch.device, dtype: torch.dtype) -> InferenceGenerator:
    """The generator folded for inference (`InferenceGenerator`) on `device` in `dtype`, in the
    memory layout its path wants; weights that overflow there are a one-line error."""
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


def out_of_memory_loading(device: torch.device, *, command_line: bool = False) -> ModelOutOfMemoryError:
    """The one-line error for a model that does not fit on `device` as it is loaded (naming --device with
    `command_line`, else the `device` keyword)."""
    if device.type == "cuda":
        return ModelOutOfMemoryError(
            f"out of memory on {device} loading the model: other processes hold its memory (nvidia-smi lists them)",
            f"free it, choose another GPU, or use {on_the_cpu(command_line=command_line)}",
        )
    return ModelOutOfMemoryError(
        f"out of memory on {device} loading the model", "close other programs to free memory, then try again"
    )


def onnx_precision(*, command_line: bool = False) -> str:
    """The refusal of fp16 or bf16 with the onnxruntime backend, in `srfeat upscale`'s and `srfeat export`'s
    flags with `command_line`, else in `Upscaler`'s and `export_onnx`'s keywords."""
    if command_line:
        return (
            "the onnxruntime backend runs the model in its own precision: leave --half and --bf16 out "
            "(for a float16 model, export it with srfeat export --fp16)"
        )
    return (
        "the onnxruntime backend runs the model in its own precision: use dtype='fp32', the default "
        "(for a float16 model, export it with export_onnx(..., fp16=True))"
    )


def onnx_runner(
    model: str | os.PathLike[str] | SRFeatGenerator,
    strength: float | None,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool,
    *,
    command_line: bool = False,
) -> OnnxRunner:
    """The onnxruntime backend's runner of `model`; a device, precision or `compile` it cannot
    honour is a one-line error first, naming `srfeat upscale`'s flags with `command_line`, else
    `Upscaler`'s keywords."""
    if device.type != "cpu":
        raise InvalidOptionError(
            f"the onnxruntime backend runs on the CPU; use {on_the_cpu(command_line=command_line)}, "
            f"or the torch backend on {device}"
        )
    if dtype != torch.float32:
        raise InvalidOptionError(onnx_precision(command_line=command_line))
    if compile:
        compile_option = "--compile" if command_line else "compile=True"
        raise InvalidOptionError(f"{compile_option} applies to the torch backend only")
    return load_onnx_runner(model, strength, command_line=command_line)
