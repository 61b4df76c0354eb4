"""A srfeat generator as an ONNX file: what chaiNNer, ONNX Runtime, OpenVINO and TensorRT load.

The exported graph is `SRFeatGenerator.eval()` with BatchNorm folded into the convolutions
(`srfeat.inference.folding.fold_batchnorm`, the same fold `Upscaler` runs) and the output's
(x + 1) / 2 folded into the tail, written with plain operators only (Conv, LeakyRelu, Add,
DepthToSpace, Clip, and Mul and Sub for the input's x * 2 - 1): it is the library-convolution
form of the network, not the CPU Winograd kernels, which are PyTorch code no runtime could use.

The convention the tools expect: one input `input`, float32 NCHW RGB in [0, 1]; one output
`output`, float32 NCHW RGB in [0, 1] (clamped) at `scale` times the size; batch, height and
width dynamic, so one file serves every size. With `fp16=True` the weights and arithmetic are
float16 (half the file, for GPU runtimes) behind float32 input and output, so the convention
stays the same. The model's metadata carries its name, scale, receptive radius, training data
and licence; the graph is checked with `onnx.checker` (full check, shape inference included)
before it is written, and it is written atomically.

The exporter is PyTorch's `torch.export`-based one (`torch.onnx.export(dynamo=True)`, which needs
`onnxscript`); the TorchScript-based one is deprecated since PyTorch 2.9 and stops at opset 20.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional

from srfeat.archs.generator import LEAKY_SLOPE, SRFeatGenerator
from srfeat.errors import (
    InvalidOptionError,
    OptionNames,
    SRFeatError,
    WeightsError,
    check_flag,
    given,
    is_whole_number,
    shown,
)
from srfeat.export.metadata import BUNDLED_INFO, ModelInfo, model_info
from srfeat.files import OutputExistsError, write_file_atomically
from srfeat.inference.checks import check_rgb_generator
from srfeat.inference.fused import FoldedResidualBlock, InferenceGenerator
from srfeat.library_warnings import WARNINGS_LOCK
from srfeat.path_checks import unwritable_file
from srfeat.weights import as_path

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BUNDLED_INFO",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "ExportGenerator",
    "ExportResult",
    "ModelInfo",
    "check_output_path",
    "export_onnx",
    "model_info",
    "onnx_model",
    "require_onnx",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

# Every operator in the graph is unchanged since opset 13; 18 is recent and is read by every
# runtime people use for SR models today (ONNX Runtime >= 1.14, TensorRT >= 8.6, OpenVINO 2023,
# chaiNNer's bundled ONNX Runtime), where a newer opset would only lock older ones out.
OPSET = 18
MIN_EXPORT_TORCH = (2, 7)  # the oldest PyTorch whose exporter was seen to export this model
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# Marks a file as a srfeat export; the ONNX Runtime backend reads the scale and receptive radius
# from metadata under these keys.
FORMAT = "srfeat-onnx"

# `export_onnx`'s options in a message: its keywords from Python, `srfeat export`'s flags
EXPORT_OPTIONS = OptionNames(
    {"overwrite": "--overwrite", "fp16": "--fp16", "opset": "--opset"},
    {"overwrite": "overwrite=True", "fp16": "fp16=True"},
)


def require_onnx() -> None:
    """One-line error when the optional `onnx` extra is not installed, or PyTorch is too old to export."""
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise SRFeatError(
            f'ONNX export needs {" and ".join(missing)}: pip install -e ".[onnx]" in srfeat\'s folder '
            "(or pip install onnx onnxscript)"
        )
    # PyTorch 2.5.1's exporter failed on this model with a traceback ("Unsupported opset-version", from
    # onnx's helper); 2.7.1 passes every export test (2.6 is untested). The `onnx` extra asks for 2.7 too.
    release = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    if release is not None and (int(release[1]), int(release[2])) < MIN_EXPORT_TORCH:
        minimum = ".".join(map(str, MIN_EXPORT_TORCH))
        raise SRFeatError(
            f"ONNX export needs PyTorch {minimum} or newer, this is {torch.__version__}: "
            f"pip install 'torch>={minimum}' (its exporter fails on this model)"
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class ExportGenerator(nn.Module):
    """The folded generator in plain operators, its output clamped: the graph that is exported.

    (N, 3, h, w) float32 in [0, 1] -> (N, 3, scale*h, scale*w) float32 in [0, 1]. With `fp16`
    the weights are float16 and the input is cast to float16 inside, the output back to float32.
    """

    def __init__(self, generator: SRFeatGenerator, fp16: bool = False) -> None:
        super().__init__()
        fp16 = check_flag(fp16, "fp16")
        folded = InferenceGenerator(generator, algorithm="direct")
        self.scale = folded.scale
        self.receptive_radius = folded.receptive_radius
        self.head = folded.head
        self.body = folded.body
        self.long_skips = folded.long_skips
        self.upsample_convs = folded.upsample_convs
        self.tail = folded.tail  # (x + 1) / 2 folded in
        self.compute_dtype = torch.float16 if fp16 else torch.float32
        self.to(device="cpu", dtype=self.compute_dtype).requires_grad_(False).eval()

    @staticmethod
    def residual(block: FoldedResidualBlock, x: torch.Tensor) -> torch.Tensor:
        return x + block.conv2(functional.leaky_relu(block.conv1(x), LEAKY_SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = list(self.body)
        x = self.head(x.to(self.compute_dtype) * 2.0 - 1.0)
        skip_sum: torch.Tensor | None = None
        for block, skip in zip(blocks[:-1], self.long_skips, strict=True):
            x = self.residual(block, x)
            skip_sum = skip(x) if skip_sum is None else skip_sum + skip(x)
        x = self.residual(blocks[-1], x)
        if skip_sum is not None:
            x = x + skip_sum
        for conv in self.upsample_convs:
            # LeakyReLU after the shuffle, as the generator has it (the two commute).
            x = functional.leaky_relu(functional.pixel_shuffle(conv(x), 2), LEAKY_SLOPE)
        # Clamped in float32: a float16 overflow saturates instead of wrapping.
        return self.tail(x).float().clamp(0.0, 1.0)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs a warning per torchvision operator it cannot register (srfeat has no
    # torchvision), its graph optimizer logs every pass at INFO, and PyTorch internals raise
    # deprecation warnings while tracing: noise for a user, whose model is checked afterwards.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with WARNINGS_LOCK, warnings.catch_warnings():  # the filters are process-wide
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def onnx_model(
    generator: SRFeatGenerator, info: ModelInfo, *, fp16: bool = False, opset: int = OPSET, command_line: bool = False
) -> onnx.ModelProto:
    """The generator as a checked ONNX model (in memory) with its metadata. `command_line`: refusals name
    `srfeat export`'s flags (`EXPORT_OPTIONS`)."""
    if not isinstance(generator, SRFeatGenerator):  # a name or path: AttributeError 'in_channels' from inside
        raise InvalidOptionError(
            f"export takes an SRFeatGenerator, got {type(generator).__name__}: load a bundled name or a "
            "checkpoint with srfeat.weights.load_generator first"
        )
    if not isinstance(info, ModelInfo):  # None or a name: AttributeError 'name' after the path was checked
        raise InvalidOptionError(
            f"info must be a srfeat.export.onnx.ModelInfo (model_info(name) makes one), got {shown(info)}"
        )
    fp16 = check_flag(fp16, "fp16")  # "no" exported in float16
    require_onnx()
    import onnx

    if not is_whole_number(opset):  # numpy's too: np.int64(18) was refused
        raise InvalidOptionError(f"opset must be a whole number (e.g. {OPSET}), got {given(opset)}")
    opset = int(opset)
    if not 17 <= opset <= onnx.defs.onnx_opset_version():
        raise SRFeatError(f"opset {opset} is not supported: use 17 to {onnx.defs.onnx_opset_version()}")
    check_rgb_generator(generator, info.name)  # the file's convention: RGB in, RGB out
    module = ExportGenerator(generator, fp16=fp16)
    if not all(bool(torch.isfinite(parameter).all()) for parameter in module.parameters()):
        # Finite weights folded with BatchNorm, or cast to float16, that overflow: the check below
        # would call the file's inf or NaN output a bug of the exporter ("please report this").
        advice = (
            f"export without {EXPORT_OPTIONS('fp16', command_line=command_line)}" if fp16 else "a broken checkpoint"
        )
        raise WeightsError(
            f"{info.name}'s weights do not fit in {'float16' if fp16 else 'float32'} once BatchNorm is folded in "
            f"(they overflow): {advice}"
        )
    # Distinct example sizes (none 1, none equal to another) so that no dimension is
    # specialised while tracing.
    example = torch.rand(2, generator.in_channels, 24, 20)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    with _quiet_exporter():
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,),
                optimize=True,
                verbose=False,
            )
        except Exception as error:
            if (interruption := _interruption(error)) is not None:
                raise interruption from None
            raise
    if program is None:  # only the TorchScript exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    from srfeat import __version__

    model.producer_name = "srfeat"
    model.producer_version = __version__
    model.doc_string = (
        f"SRFeat generator ({info.name}), x{module.scale} super-resolution. Input float32 NCHW RGB in [0, 1], "
        f"any batch, height and width; output float32 NCHW RGB in [0, 1] at {module.scale}x."
    )
    metadata = {
        "format": FORMAT,
        "name": info.name,
        "architecture": (
            f"SRFeat generator (Park et al., ECCV 2018): {generator.num_blocks} residual blocks, "
            f"{generator.num_features} features, BatchNorm folded"
        ),
        "scale": str(module.scale),
        "num_features": str(generator.num_features),
        "num_blocks": str(generator.num_blocks),
        "receptive_radius": str(module.receptive_radius),
        "precision": "float16 (float32 input and output)" if fp16 else "float32",
        "input": "float32 NCHW RGB in [0, 1]",
        "output": f"float32 NCHW RGB in [0, 1] (clamped), {module.scale}x the input's height and width",
        "training_data": info.training_data,
        "license": info.license,
    }
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    # The exporter's notes on each node (the stack trace that made it, with this machine's file
    # paths and user name; its FX node and class names) are for debugging the exporter: a file
    # meant to be shared, and to be the same bytes wherever it is made, leaves them out.
    for node in model.graph.node:
        del node.metadata_props[:]
    # The IR version the opset needs, not the exporter's own (10 whatever the opset): a runtime
    # refuses a file of a newer IR version than it reads ("Unsupported model IR version: 10, max
    # supported IR version: 9" in ONNX Runtime before 1.18), where opset 18 needs only IR 8; and
    # opset 23 and later need more than 10.
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    # Full check: the graph's types and shapes are inferred and must agree with every operator.
    onnx.checker.check_model(model, full_check=True)
    return model


def _interruption(error: BaseException) -> BaseException | None:
    """The Ctrl-C (KeyboardInterrupt) or SIGTERM (`srfeat.cli.Terminated`) behind `error`, if the exporter's
    own error handling turned it into another error. Ctrl-C during the exporter's first import of
    torch._dynamo left it half made; the exporter's `except torch._dynamo.exc.UserError` then raised
    AttributeError, wrapped in a TorchExportError: some 100 lines of traceback instead of "interrupted"."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if not isinstance(cause, Exception):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def verify_onnx(
    model: onnx.ModelProto, generator: SRFeatGenerator, fp16: bool, *, command_line: bool = False
) -> float | None:
    """Max |difference| on [0, 1] between ONNX Runtime on `model` and the generator in PyTorch, on
    a small random batch; None when onnxruntime is not installed. Raises when they disagree
    (more than a quarter grey level in float32, two grey levels in float16) or when onnxruntime
    cannot run the model (an older one refuses a newer opset)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    example = torch.rand(2, generator.in_channels, 19, 13, generator=torch.Generator().manual_seed(0))
    try:  # an onnxruntime older than the onnx package may not read the opset (--opset): its own exception
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (output,) = session.run(None, {INPUT_NAME: example.numpy()})
    except Exception as error:  # raised below in one line
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SRFeatError(
            f"onnxruntime {onnxruntime.__version__} cannot run the exported model ({reason}); nothing was "
            f"written: export with a lower {EXPORT_OPTIONS('opset', command_line=command_line)} (the default is "
            f"{OPSET}) or upgrade onnxruntime"
        ) from error
    with torch.no_grad():
        # On a copy: `.cpu().float().eval()` change a module in place, and the caller's generator (on
        # a GPU, in training mode mid-run) must come back from an export as it went in.
        reference = copy.deepcopy(generator).cpu().float().eval()(example).clamp(0.0, 1.0)
    difference = float((torch.from_numpy(output) - reference).abs().max())
    tolerance = (2.0 if fp16 else 0.25) / 255
    if not difference <= tolerance:  # NaN fails too
        raise SRFeatError(
            f"the exported model's output differs from PyTorch's by {difference:.3g} (more than {tolerance:.3g}); "
            "nothing was written: please report this"
        )
    return difference


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size_bytes: int
    max_difference: float | None  # from PyTorch, measured by ONNX Runtime; None without onnxruntime


def export_onnx(
    generator: SRFeatGenerator,
    path: str | bytes | os.PathLike[str],
    info: ModelInfo,
    *,
    fp16: bool = False,
    opset: int = OPSET,
    overwrite: bool = False,
    command_line: bool = False,
) -> ExportResult:
    """Write the generator to `path` as ONNX (see the module docstring), checked and, where
    onnxruntime is installed, compared with PyTorch's output before it is written.

    An existing file is replaced only with `overwrite`, and only once the new model is complete;
    without it, one that appeared during the export is kept too (`srfeat.files.OutputExistsError`).
    `path` is a str, bytes or path-like (`~` expanded); `fp16` and `overwrite` are True or False
    (`overwrite="no"` overwrote), else an `InvalidOptionError` before anything is done. Refusals of an
    existing file name overwrite=True; `command_line` (`srfeat export`'s) names --overwrite instead.
    """
    fp16 = check_flag(fp16, "fp16")
    overwrite = check_flag(overwrite, "overwrite")
    path = check_output_path(path, overwrite, command_line=command_line)
    model = onnx_model(generator, info, fp16=fp16, opset=opset, command_line=command_line)
    difference = verify_onnx(model, generator, fp16, command_line=command_line)
    data = model.SerializeToString()
    try:
        write_file_atomically(path, lambda handle: handle.write(data), len(data), replace=overwrite)
    except OutputExistsError:
        if not (path.exists() or path.is_symlink()):  # another process's temporary in use: its own words
            raise
        # saved since check_output_path looked: the writer's words name its own keyword (replace=True)
        raise OutputExistsError(
            f"{path} appeared while the model was exported (another program?); it is kept: remove it or allow "
            f"replacing it ({EXPORT_OPTIONS('overwrite', command_line=command_line)}), and run again"
        ) from None
    except SRFeatError:  # a full disk, already one line
        raise
    except OSError as error:
        raise SRFeatError(f"cannot write {path}: {error.strerror or error}") from error
    return ExportResult(path, len(data), difference)


def check_output_path(
    path: str | bytes | os.PathLike[str], overwrite: bool = False, *, command_line: bool = False
) -> Path:
    """`path` as the file an export may write, checked before the export's work: an `.onnx` name
    (srfeat, like other tools, tells an ONNX model by it), not a folder, not an existing file
    without `overwrite` (True or False), and a parent folder that exists or can be made and is writable.
    Refusals name `export_onnx`'s path and overwrite=True; `command_line` names `srfeat export`'s -o and
    --overwrite instead."""
    overwrite = check_flag(overwrite, "overwrite")
    path = as_path(path, "the ONNX file")
    if path.is_dir():
        raise SRFeatError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}")
    option, output_flag = EXPORT_OPTIONS("overwrite", command_line=command_line), "-o " if command_line else ""
    if path.name.lower() == ".onnx":  # a hidden file's name to Python: no suffix, and "-o .onnx.onnx" was the advice
        raise SRFeatError(f"{path} has no name before .onnx: use {output_flag}{path.with_name('model.onnx')}")
    if path.suffix.lower() != ".onnx":
        fixed = path.with_suffix(".onnx") if path.suffix else path.with_name(path.name + ".onnx")
        raise SRFeatError(
            f"{path} does not end in .onnx, which is how srfeat upscale --model and other tools know an ONNX "
            f"model: use {output_flag}{fixed}"
        )
    if path.is_symlink() and not path.exists() and not overwrite:  # exists() follows the link: the export ran
        # its seconds, then called the link a file that appeared while it was written (another program?)
        raise SRFeatError(
            f"{path} exists (a link to {os.readlink(path)}, which is missing); use {option} to replace it"
        )
    if path.exists() and not overwrite:
        raise SRFeatError(f"{path} exists; use {option} to replace it")
    if problem := unwritable_file(path):
        raise SRFeatError(f"cannot write {path}: {problem}")
    return path
