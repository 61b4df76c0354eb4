"""SRFeat: single-image super-resolution with feature discrimination (Park et al., ECCV 2018).

The Python API, in the order one meets it:

- `srfeat.Upscaler`: `Upscaler("default")(image)` upscales a PIL image, a numpy array or a
  tensor 4x (`srfeat.inference.upscaler`);
- `srfeat.metrics`: `psnr`, `ssim`, `rgb_to_y`; `srfeat.metrics.niqe.niqe`;
- `srfeat.evaluation.evaluate(models, folders)`: `srfeat eval`'s protocol, with `markdown_table` and
  `write_json` for its result;
- `srfeat.weights`: `load_generator`, `save_generator`; `srfeat.weights.blend`;
- `srfeat.archs.generator.SRFeatGenerator`, `srfeat.archs.discriminators`;
- `srfeat.data.resize.imresize`: MATLAB's bicubic on tensors;
- `srfeat.video.pipeline.upscale_video(source, target, upscaler, srfeat.video.VideoOptions())`:
  a video through any `Upscaler` (the `video` extra);
- `srfeat.export.onnx.export_onnx`: a generator as an ONNX file (the `onnx` extra);
- `srfeat.training.config.load_config` and `srfeat.training.trainer.train`: `srfeat train`'s run;
- `srfeat.errors`: what they raise. Every error about the caller's input is an `SRFeatError`
  with a one-line message; the input kinds are also `ValueError`s (`InvalidImageError`,
  `InvalidOptionError`, `WeightsError`, `MetricInputError`), a non-image a `TypeError`.

After a bare `import srfeat`, `srfeat.Upscaler` and the subpackages archs, data, errors, inference,
metrics and weights load on first use (`srfeat.errors.SRFeatError` works); the others and modules
inside a subpackage are imported as usual (`import srfeat.evaluation`, `import srfeat.data.resize`).
Importing `srfeat` itself does not import torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Upscaler", "__version__"]

if TYPE_CHECKING:
    from srfeat.inference import Upscaler

# Attribute access loads these, as `import srfeat.<name>` would.
SUBMODULES = frozenset({"archs", "data", "errors", "inference", "metrics", "weights"})


def __getattr__(name: str) -> Any:
    # `import srfeat` stays light (no torch): the API is imported on first use.
    if name == "Upscaler":
        from srfeat.inference import Upscaler

        return Upscaler
    if name in SUBMODULES:
        module: ModuleType = importlib.import_module(f"srfeat.{name}")
        return module
    raise AttributeError(f"module 'srfeat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *SUBMODULES})
