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
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from srfeat.errors import SRFeatError, WeightsError

if TYPE_CHECKING:
    from srfeat.archs.generator import SRFeatGenerator

__all__ = ["OnnxRunner", "is_onnx_file", "load_onnx_runner"]

logger = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # top, left, bottom, right


def is_onnx_file(model: object) -> bool:
    return isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx")


def _import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as error:
        raise SRFeatError(
            "the onnxruntime backend needs onnxruntime: pip install 'srfeat[onnx]' (or pip install onnxruntime)"
        ) from error
    return onnxruntime


class OnnxRunner:
    """An ONNX Runtime session over a srfeat export, callable as `runner(batch, region)`.

    `model` is the serialized ONNX model or a path to it; `source` names it in errors. The session
    uses `threads` intra-op threads (default: PyTorch's count, so one setting governs both
    backends).
    """

    # The input layout `upscale_tiled` makes the batch contiguous in (ONNX is NCHW).
    memory_format = torch.contiguous_format

    def __init__(self, model: bytes | str | os.PathLike[str], source: str | None = None, threads: int | None = None):
        ort = _import_onnxruntime()
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            source = source or str(path)
            if not path.is_file():
                raise WeightsError(f"ONNX model not found: {path}")
            model = path.read_bytes()
        source = source or "ONNX model"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Without the arena each tile's buffers go back to the system: 26 rather than 33 KB per
        # input pixel at peak (measured at 128x128), and no memory held between images.
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3  # errors only: ORT's warnings are about its own choices
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WeightsError(f"cannot load {source} as an ONNX model: {first_line}") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        from srfeat.export.onnx import FORMAT, INPUT_NAME, OUTPUT_NAME

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if metadata.get("format") != FORMAT or [i.name for i in inputs] != [INPUT_NAME]:
            raise WeightsError(
                f"{source} is not a srfeat ONNX export (no srfeat metadata); make one with `srfeat export`"
            )
        if [o.name for o in outputs] != [OUTPUT_NAME] or inputs[0].type != "tensor(float)":
            raise WeightsError(f"{source} does not have the float32 input and output srfeat exports have")
        try:
            self.scale = int(metadata["scale"])
            self.receptive_radius = int(metadata["receptive_radius"])
            self.num_features = int(metadata["num_features"])
        except (KeyError, ValueError) as error:
            raise WeightsError(f"{source} has incomplete srfeat metadata ({error}); export it again") from error
        self.name = metadata.get("name", Path(source).stem)
        # `Upscaler` sets this on every runner; the whole network runs per tile here, so it is unused.
        self.upsample_pixels = 0

    def __repr__(self) -> str:
        return f"OnnxRunner({self.name}, scale={self.scale})"

    def bytes_per_pixel(self) -> tuple[int, int]:
        """Peak bytes per input pixel of a tile (the whole network runs at once), for the tile plan.

        The peak is the last upsampling stage: its convolution's output (4 F channels at
        (s/2)^2 pixels per input pixel), the shuffled maps (F at s^2) and its input: 36 F
        floats at scale 4. Measured with the arena off: 26.5 KB at 128x128 for F = 128, which
        (3 s^2 + 8) F floats (28.7 KB) covers. Returned for both the tile and the band budget.
        """
        per_pixel = (3 * self.scale**2 + 8) * self.num_features * 4
        return per_pixel, per_pixel

    def __call__(self, batch: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """(N, 3, h, w) float32 in [0, 1] on the CPU -> the (N, 3, s*rows, s*columns) output of `region`."""
        height, width = batch.shape[-2:]
        top, left, bottom, right = region if region is not None else (0, 0, height, width)
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        (output,) = self.session.run(None, {self.session.get_inputs()[0].name: array})
        scale = self.scale
        return torch.from_numpy(output)[:, :, top * scale : bottom * scale, left * scale : right * scale]


def load_onnx_runner(model: str | os.PathLike[str] | SRFeatGenerator, strength: float | None = None) -> OnnxRunner:
    """An ONNX file as is; a bundled name, checkpoint, generator or detail-dial blend (`strength`,
    see `srfeat.weights.blend`) exported in memory first."""
    _import_onnxruntime()
    if is_onnx_file(model):
        if strength is not None:
            raise WeightsError(
                f"{model} is an exported model, whose weights are fixed: export the blend you want "
                "(srfeat export --strength S) instead of giving a strength with it"
            )
        return OnnxRunner(model)  # type: ignore[arg-type]
    from srfeat.export.onnx import model_info, onnx_model
    from srfeat.weights.blend import load_blended

    generator = load_blended(model, strength)
    info = model_info(model, strength)
    logger.info("exporting %s to ONNX for onnxruntime (`srfeat export` saves a file to reuse)", info.name)
    return OnnxRunner(onnx_model(generator, info).SerializeToString(), source=info.name)
