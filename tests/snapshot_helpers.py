"""Reference outputs of the bundled models (spandrel-style snapshot tests).

`test_bundled_models.py` upscales `snapshot_input()` with each bundled model and compares the
result with `tests/snapshots/<model>.png` within one grey level. After an intended change to the
weights or the inference path, look at the new outputs, then regenerate the references:

    PYTHONPATH=. python3 tests/snapshot_helpers.py

"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from srfeat.weights import bundled_names

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshots"
# Every bundled model has a reference: a newly shipped one fails the test until its snapshot is made.
MODELS = tuple(bundled_names())
INPUT_SIZE = 24


def snapshot_input() -> np.ndarray:
    """A 24x24 RGB crop of scikit-image's astronaut: her mission patch (the flag, the shuttle's
    edges), the crop of the photo with the most edges."""
    from skimage import data

    top, left = 384, 152
    return np.ascontiguousarray(data.astronaut()[top : top + INPUT_SIZE, left : left + INPUT_SIZE])


def reference_path(model: str) -> Path:
    return SNAPSHOT_DIR / f"{model}.png"


def upscale_snapshot_input(model: str) -> np.ndarray:
    """What the references hold: the model's 96x96 uint8 output on the CPU, in float32."""
    from srfeat import Upscaler

    return Upscaler(model, device="cpu")(snapshot_input())


def main() -> int:
    SNAPSHOT_DIR.mkdir(exist_ok=True)
    for model in MODELS:
        path = reference_path(model)
        Image.fromarray(upscale_snapshot_input(model)).save(path, optimize=True)
        sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
