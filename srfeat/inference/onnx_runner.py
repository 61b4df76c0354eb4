"""ONNX Runtime as the network behind `Upscaler`: the same tiles, alpha, grey and 16-bit handling.

`OnnxRunner` runs a srfeat ONNX export (`srfeat export`, `srfeat.export.onnx`) with the protocol
`upscale_tiled` and `Upscaler` use for `InferenceGenerator`: `runner(batch, region)` returns the
upscaled region of an (N, 3, h, w) batch, and it tells its scale, receptive radius (the tile
overlap that makes tiling exact), input layout and memory per pixel. Everything else in
`Upscaler` is shared, so the two backends differ only in who runs the convolutions.

The runner reads an exported file, or exports a generator in memory (bundled name, checkpoint).
It runs on the CPU (the CPU build of `onnxruntime`, the `onnx` extra) in float32 I/O; a file
exported with `--fp16` computes in its own precision.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import torch

from srfeat.errors import InvalidOptionError, SRFeatError, TileOutOfMemoryError, WeightsError
from srfeat.inference.onnx_contents import GraphBounds, check_before_loading, check_weights, parse_model
from srfeat.inference.onnx_structure import check_part_count, not_text_error
from srfeat.inference.tiling import tile_memory_advice
from srfeat.path_checks import broken_link, special_file_kind, unreadable_message
from srfeat.weights.reading import first_line

if TYPE_CHECKING:
    import onnx

    from srfeat.archs.generator import SRFeatGenerator

__all__ = ["OnnxRunner", "is_onnx_file", "load_onnx_runner"]

logger = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # top, left, bottom, right

# What the metadata of a srfeat export can hold: SRFeat generators upscale x2 or x4, and no
# sensible one has thousands of features or sees thousands of pixels. A file claiming more is
# damaged or hostile: its numbers size the tiles and the memory plan.
SCALES = (2, 4)
MAX_FEATURES = 4096
MAX_RECEPTIVE_RADIUS = 4096
# Protocol buffers cap a message at 2 GiB, so no ONNX file with its weights inside is larger: a
# bigger file is refused from its size, before it is read into memory.
MAX_ONNX_BYTES = 2**31


def is_onnx_file(model: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx")


def _require_exporter(model: object) -> None:
    """A model that is not an .onnx file is exported first, which needs onnx and onnxscript as well as
    onnxruntime: one line naming every one missing, before anything loads. Naming onnxruntime alone
    sent whoever installed just that to a second error, after the model had loaded."""
    import importlib.util

    if is_onnx_file(model):
        return  # onnxruntime alone runs it: `_import_onnxruntime` names it
    missing = [name for name in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing and missing != ["onnxruntime"]:  # onnxruntime alone: `_import_onnxruntime` names it
        listed = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise SRFeatError(
            f"the onnxruntime backend needs {listed} for a model that is not an .onnx file (it is exported "
            f'first): pip install -e ".[onnx]" in srfeat\'s folder (or pip install {" ".join(missing)})'
        )


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as error:
        raise SRFeatError(
            'the onnxruntime backend needs onnxruntime: pip install -e ".[onnx]" in srfeat\'s folder '
            "(or pip install onnxruntime)"
        ) from error
    return onnxruntime


# ONNX Runtime's intra-op threads spin while they wait for work, by default: between the network's
# layers, and for a while after each image, on cores that other work needs (between a batch's
# images, beside a training run). Told not to, they sleep: on 2 busy cores a 64x64 image took 0.44-0.66 s
# instead of 0.72-1.01 s, and the idle process used no CPU after it instead of 0.03 s per image
# (`python3 -m benchmarks.onnx_runtime` prints the idle figure). As OMP_WAIT_POLICY=PASSIVE for torch.
SPINNING_KEY = "session.intra_op.allow_spinning"


def _not_there(path: Path) -> str:
    """ "ONNX model not found", or which link leads nowhere (`broken_link`)."""
    reason = broken_link(path)
    return f"ONNX model {path}: {reason}" if reason else f"ONNX model not found: {path}"


class OnnxRunner:
    """An ONNX Runtime session over a srfeat export, callable as `runner(batch, region)`.

    `model` is the serialized ONNX model, a path to it, or an `onnx.ModelProto` (not parsed again);
    `source` names it in errors. The session uses `threads` intra-op threads (default: PyTorch's
    count, so one setting governs both backends). A tile that fails is a `TileOutOfMemoryError` (ONNX Runtime
    does not say whether memory ran out) advising in the commands' flags with `command_line`, else in
    `Upscaler`'s keywords (`tile_memory_advice`).
    """

    # The input layout `upscale_tiled` makes the batch contiguous in (ONNX is NCHW).
    memory_format = torch.contiguous_format

    def __init__(
        self,
        model: bytes | str | os.PathLike[str] | onnx.ModelProto,
        source: str | None = None,
        threads: int | None = None,
        *,
        command_line: bool = False,
    ):
        ort = _import_onnxruntime()
        path = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            source = source or str(path)
            if path.is_dir():  # "not found" would send the user looking for something that is there
                raise WeightsError(f"{path} is a folder: give the .onnx file (srfeat export writes one)")
            if not path.is_file():  # a pipe or device is named as such
                kind = special_file_kind(path)
                raise WeightsError(f"ONNX model {path} is {kind}, not a file" if kind else _not_there(path))
            size = path.stat().st_size
            if size > MAX_ONNX_BYTES:
                raise WeightsError(
                    f"{path} is {size / 2**30:.1f} GiB, larger than any ONNX file can be (2 GiB): not a srfeat "
                    "export; make one with `srfeat export`"
                )
            try:
                model = path.read_bytes()
            except OSError as error:  # there, but a failing disk or no permission: was a traceback
                again = "copy it again, or export it again with `srfeat export`"
                raise WeightsError(unreadable_message(path, error, again)) from error
        source = source or "ONNX model"
        if isinstance(model, bytes):
            check_part_count(model, source)  # before anything parses it: see onnx_structure
            data, parsed = model, parse_model(model)  # parsed once, for every check in onnx_contents
        else:  # parsed already: srfeat's own export in memory (`load_onnx_runner`), or a caller's
            data, parsed = model.SerializeToString(), model
            # ONNX Runtime parses these bytes again: a caller's model of millions of parts would take it gigabytes
            check_part_count(data, source)
        # Before ONNX Runtime sees it: given bytes, it looks for external data beside the working folder,
        # not the file's (versions before its own path checks read wherever the file points), and it
        # expands sparse weights as it loads. On a model already parsed the search costs no parse.
        bounds = check_before_loading(data, parsed, source)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry(SPINNING_KEY, "0")  # see SPINNING_KEY
        # Without the arena each tile's buffers go back to the system: 26 rather than 33 KB per
        # input pixel at peak (measured at 128x128), and no memory held between images.
        options.enable_cpu_mem_arena = False
        # Fatal only: ORT's warnings are about its own choices, and each error it would log (a
        # multi-line one on stderr) also comes back as an exception, which srfeat reports in one line.
        options.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            if path is not None and (misnamed := _misnamed(path, source)):
                raise misnamed from error
            if too_new := _newer_than_supported(str(error)):
                export_again = "srfeat export --opset 18" if command_line else "export_onnx(..., opset=18)"
                raise WeightsError(
                    f"{source} is {too_new} than ONNX Runtime {ort.__version__} supports: upgrade it "
                    f"(pip install -U onnxruntime), or export the model again with {export_again}"
                ) from error
            raise WeightsError(f"cannot load {source} as an ONNX model: {first_line(error)}") from error
        from srfeat.export.onnx import FORMAT, INPUT_NAME, OUTPUT_NAME

        try:  # ONNX Runtime's Python side decodes its strings here (onnx_structure.check_text)
            metadata = self.session.get_modelmeta().custom_metadata_map
            inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
            input_names, output_names = [i.name for i in inputs], [o.name for o in outputs]
        except UnicodeDecodeError as error:
            raise not_text_error(source, error.object) from error  # without the onnx package: not checked before
        if metadata.get("format") != FORMAT or input_names != [INPUT_NAME]:
            raise WeightsError(
                f"{source} is not a srfeat ONNX export (no srfeat metadata); make one with `srfeat export`"
            )
        float_io = {inputs[0].type, *(o.type for o in outputs)} == {"tensor(float)"}
        if output_names != [OUTPUT_NAME] or not float_io:
            raise WeightsError(f"{source} does not have the float32 input and output srfeat exports have")
        _check_input_shape(inputs[0].shape, source)
        check_weights(parsed, data, source)
        self.source = source
        self.command_line = command_line
        self.scale = _metadata_int(metadata, "scale", source, SCALES)
        self.receptive_radius = _metadata_int(metadata, "receptive_radius", source, range(MAX_RECEPTIVE_RADIUS + 1))
        self.num_features = _metadata_int(metadata, "num_features", source, range(1, MAX_FEATURES + 1))
        if bounds is not None:  # where the metadata understates what the graph has, the graph's (`_graph_bounds`)
            self.receptive_radius, self.num_features = _graph_bounds(
                self.receptive_radius, self.num_features, bounds, source
            )
        self.name = metadata.get("name", Path(source).stem)
        # `srfeat export --fp16` says so: it takes more memory per pixel (`bytes_per_pixel`)
        self.float16 = metadata.get("precision", "").startswith("float16")
        # `Upscaler` sets this on every runner; the whole network runs per tile here, so it is unused.
        self.upsample_pixels = 0

    def __repr__(self) -> str:
        return f"OnnxRunner({self.name}, scale={self.scale})"

    def bytes_per_pixel(self) -> tuple[int, int]:
        """Peak bytes per input pixel of a tile (the whole network runs at once), for the tile plan.

        The peak is the last upsampling stage: its convolution's output (4 F channels at
        (s/2)^2 pixels per input pixel), the shuffled maps (F at s^2) and its input: 36 F
        floats at scale 4. Measured with the arena off: 26.5 KB at 128x128 for F = 128, which
        (3 s^2 + 8) F floats (28.7 KB) covers. A float16 file (`--fp16`) takes more than float32,
        not half (ONNX Runtime's CPU computes it through float32), and varies from run to run: 69 to
        100 KB at 128x128 on one machine, 148 KB on the same kind of machine in CI; it is planned at
        eight times the float32 figure (230 KB). Returned for both the tile and the band budget.
        """
        per_pixel = (3 * self.scale**2 + 8) * self.num_features * 4 * (8 if self.float16 else 1)
        return per_pixel, per_pixel

    def __call__(self, batch: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, 3, h, w) float32 in [0, 1] on the CPU -> the (N, 3, s*rows, s*columns) output of `region`."""
        height, width = batch.shape[-2:]
        return self.for_window(batch)(region if region is not None else (0, 0, height, width))

    def for_window(self, batch: torch.Tensor) -> Callable[[Region], torch.Tensor]:
        """Run the network on `batch` once; the function returned gives `self(batch, region)` for any
        region of it (`upscale_tiled` runs tiles that read the same padded window this way)."""
        height, width = batch.shape[-2:]
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        try:
            (output,) = self.session.run(None, {self.session.get_inputs()[0].name: array})
        except Exception as error:  # onnxruntime raises its own exception types, with multi-line messages
            advice = tile_memory_advice(command_line=self.command_line)
            raise TileOutOfMemoryError(
                f"ONNX Runtime failed to run {self.source} on a {_dims(array.shape)} tile: {first_line(error)}",
                f"if it ran out of memory {advice}, else export the model again",
            ) from error
        scale = self.scale
        expected = (array.shape[0], 3, height * scale, width * scale)
        if output.shape != expected:  # the metadata's scale is what the tiles are cut and placed by
            raise WeightsError(
                f"{self.source} says it upscales x{scale}, but for an input of {_dims(array.shape)} it returned "
                f"{_dims(output.shape)} instead of {_dims(expected)}: not a working srfeat export; export it again"
            )
        whole = torch.from_numpy(output)

        def crop(region: Region) -> torch.Tensor:
            top, left, bottom, right = region
            return whole[:, :, top * scale : bottom * scale, left * scale : right * scale]

        return crop


def _misnamed(path: Path, source: str) -> WeightsError | None:
    """What a file named .onnx that ONNX Runtime cannot parse holds, where its content says it is not ONNX
    (a checkpoint saved under that name, an empty file): "protobuf parsing failed" said neither."""
    from srfeat.weights.file_kinds import ONNX, PYTORCH, SAFETENSORS, identify_file

    kind = identify_file(path)
    if kind.name == ONNX:  # a damaged ONNX file: ONNX Runtime's reason is the one to give
        return None
    if kind.name in (SAFETENSORS, PYTORCH):
        suffix = ".safetensors" if kind.name == SAFETENSORS else ".pt"
        advice = f"name it {suffix} to upscale with it (the torch backend), or export it with srfeat export"
    else:
        advice = kind.hint or "give an .onnx file that srfeat export wrote"
    return WeightsError(f"{source} is {kind.description}, not an ONNX model: {advice}")


# ONNX Runtime's words for a file newer than it: its reason named neither the fix nor, first, the cause
# (a line of C++ signature, then "ONNX Runtime only *guarantees* support for ... Opset 99 ...")
_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*till opset (\d+)", re.DOTALL)


def _newer_than_supported(reason: str) -> str | None:
    """ "IR version 99, newer" (or "opset 99 ...") when ONNX Runtime refused the file as too new for it."""
    if found := _IR_TOO_NEW.search(reason):
        return f"IR version {found[1]} (up to {found[2]} here), newer"
    if found := _OPSET_TOO_NEW.search(reason):
        return f"opset {found[1]} (up to {found[2]} here), newer"
    return None


def _check_input_shape(shape: list[object], source: str) -> None:
    """A srfeat export takes (N, 3, H, W) with height and width left open: tiles and images come in
    every size. A file made for RGB of one size (or another channel count) failed at its first
    other input, in ONNX Runtime's multi-line error; it is refused when it loads. ONNX Runtime gives
    a fixed dimension as an int and an open one as its name or None."""
    fixed = [dim if isinstance(dim, int) else None for dim in shape]
    if len(fixed) == 4 and fixed[0] in (None, 1) and fixed[1] in (None, 3) and fixed[2] is None and fixed[3] is None:
        return
    # No dimensions: a scalar, or (to ONNX Runtime alike) a graph that declares no shape ("takes  input")
    described = "x".join("?" if dim is None else str(dim) for dim in fixed) or "scalar or undeclared"
    raise WeightsError(
        f"{source} takes {described} input, where a srfeat export takes Nx3xHxW of any height and width: "
        "not a working srfeat export; export it again"
    )


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _metadata_int(metadata: dict[str, str], key: str, source: str, allowed: range | tuple[int, ...]) -> int:
    """The integer `metadata[key]`, which must be one of `allowed`; else a one-line WeightsError."""
    if key not in metadata:
        raise WeightsError(f"{source} has incomplete srfeat metadata (no {key}); export it again")
    try:
        value = int(metadata[key])
    except ValueError:
        value = None
    if value is None or value not in allowed:
        what = (
            " or ".join(map(str, allowed))
            if isinstance(allowed, tuple)
            else f"an integer from {allowed.start} to {allowed.stop - 1}"
        )
        raise WeightsError(
            f"{source} is damaged or not a srfeat export: its metadata gives {key} {metadata[key][:40]!r}, "
            f"where a srfeat export has {what}; export it again"
        )
    return value


def _graph_bounds(radius: int, features: int, bounds: GraphBounds, source: str) -> tuple[int, int]:
    """The receptive radius and features to tile by: the metadata's (`radius`, `features`), or the graph's (`bounds`)
    where those are more, with a warning naming both. A crafted or hand-edited file that understated them tiled with
    seams (tiles that overlap by less than the convolutions see) or planned too little memory for each tile. One the
    graph sees farther than `MAX_RECEPTIVE_RADIUS` is refused, as such metadata is."""
    if bounds.receptive_radius > MAX_RECEPTIVE_RADIUS:
        raise WeightsError(
            f"{source}'s convolutions see {bounds.receptive_radius:,} pixels into the image, where a srfeat export "
            f"sees {MAX_RECEPTIVE_RADIUS:,} at most (its tiles would overlap by as much): not a srfeat export; export "
            "it again"
        )
    if bounds.receptive_radius > radius:
        logger.warning(
            "%s's metadata gives receptive_radius %d, where its graph's convolutions see %d pixels: tiles overlap by "
            "%d (by %d they would show seams); export it again with `srfeat export` to correct it",
            source,
            radius,
            bounds.receptive_radius,
            bounds.receptive_radius,
            radius,
        )
    if bounds.num_features > features:
        logger.warning(
            "%s's metadata gives num_features %d, where its graph's largest map makes as many values per pixel as a "
            "srfeat model of %d features does: tiles are planned for %d; export it again with `srfeat export` to "
            "correct it",
            source,
            features,
            bounds.num_features,
            bounds.num_features,
        )
    return max(radius, bounds.receptive_radius), max(features, bounds.num_features)


def load_onnx_runner(
    model: str | os.PathLike[str] | SRFeatGenerator, strength: float | None = None, *, command_line: bool = False
) -> OnnxRunner:
    """An ONNX file as is; a bundled name, checkpoint, generator or detail-dial blend (`strength`,
    see `srfeat.weights.blend`) exported in memory first. `command_line`: as `OnnxRunner`'s."""
    _require_exporter(model)
    _import_onnxruntime()
    if is_onnx_file(model):
        if strength is not None:
            export_blend, strength_option = (
                ("srfeat export --strength S", "--strength")
                if command_line
                else ("export_onnx(load_blended('default', S), ...)", "strength")
            )
            raise InvalidOptionError(  # as strength with another bundled model: options that do not go together
                f"{model} is an exported model, whose weights are fixed: export the blend you want "
                f"({export_blend}) instead of giving {strength_option} with it"
            )
        return OnnxRunner(model, command_line=command_line)
    from srfeat.export.onnx import model_info, onnx_model
    from srfeat.weights.blend import load_blended

    generator = load_blended(model, strength, command_line=command_line)
    info = model_info(model, strength)
    logger.info("exporting %s to ONNX for onnxruntime (`srfeat export` saves a file to reuse)", info.name)
    # parsed: no bytes to parse again
    return OnnxRunner(onnx_model(generator, info), source=info.name, command_line=command_line)
