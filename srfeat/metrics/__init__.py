"""The evaluation protocol's metrics: `psnr`, `ssim` (full reference) and NIQE (no reference).

```python
from srfeat.metrics import psnr, rgb_to_y, ssim
from srfeat.metrics.niqe import niqe

psnr(sr, hr, crop_border=4)          # dB on the Y channel; uint8 HxWx3 (or floats in [0, 1]); inf if equal
ssim(sr, hr, crop_border=4)          # at most 1 (equal images)
niqe(rgb_to_y(sr), crop_border=4)    # lower is better; needs 96x96 px after the shave
```

`niqe` stays in its module, `srfeat.metrics.niqe`: a function of the module's name here would
hide the module (`from srfeat.metrics import niqe` would give one or the other depending on
what was imported first). Input a metric cannot score raises `srfeat.errors.MetricInputError`
(a `ValueError`), never NaN.
"""

from __future__ import annotations

from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim

__all__ = ["psnr", "rgb_to_y", "ssim"]
