"""Inference: the generator folded for speed, tiled upscaling in bounded memory, the Python API.

One path: `Upscaler` runs an `InferenceGenerator` (srfeat/inference/fused.py: BatchNorm folded;
on a CPU Winograd convolutions, on a GPU the library's in channels_last).

```python
from srfeat import Upscaler
upscaled = Upscaler("default")(image)  # PIL image, numpy array or tensor in, the same out
```
"""

from srfeat.inference.folding import fold_batchnorm
from srfeat.inference.fused import InferenceGenerator
from srfeat.inference.tiling import plan_tiles, upscale_tiled
from srfeat.inference.upscaler import Upscaler

__all__ = ["InferenceGenerator", "Upscaler", "fold_batchnorm", "plan_tiles", "upscale_tiled"]
