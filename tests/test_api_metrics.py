"""The metrics as imported from Python: `srfeat.metrics.psnr / ssim / rgb_to_y`, and NIQE's
undefined cases as `ValueError`s a caller can catch with the other input errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from skimage import data

from srfeat.errors import MetricInputError
from srfeat.metrics.niqe import niqe


def test_psnr_ssim_and_rgb_to_y_are_importable_from_srfeat_metrics_without_torch() -> None:
    code = (
        "import sys; from srfeat.metrics import psnr, ssim, rgb_to_y; import srfeat.metrics as m; "
        "assert set(m.__all__) == {'psnr', 'ssim', 'rgb_to_y'}; "
        "assert 'torch' not in sys.modules, 'psnr needs numpy and scipy only'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_identical_and_constant_images_give_the_limits_not_nan() -> None:
    from srfeat.metrics import psnr, ssim

    photo = data.astronaut()[:64, :64]
    assert psnr(photo, photo, crop_border=4) == math.inf
    assert ssim(photo, photo, crop_border=4) == 1.0
    flat = np.full((32, 32, 3), 7, np.uint8)
    assert ssim(flat, flat, crop_border=4) == 1.0
    assert math.isfinite(psnr(flat, flat + 1, crop_border=4))


@pytest.mark.parametrize(
    ("y", "match"),
    [(np.full((120, 120), 100.0), "without texture"), (np.random.default_rng(0).random((50, 50)) * 200, "96x96")],
)
def test_niqe_where_it_is_undefined_raises_a_metric_input_error(y: np.ndarray, match: str) -> None:
    """These were plain SRFeatErrors: `except ValueError`, as for the other bad inputs, missed them."""
    with pytest.raises(MetricInputError, match=match):
        niqe(y)
    with pytest.raises(ValueError, match=match):
        niqe(y)


@pytest.mark.parametrize("flag", ["no", 0, None, 4])
def test_a_test_y_channel_that_is_not_true_or_false_is_refused(flag: object) -> None:
    """`psnr(sr, hr, 4, "no")` scored the Y channel (a non-empty string is true), 0 the RGB channels:
    a number for another protocol than the caller meant, without a word."""
    from srfeat.metrics import psnr, ssim

    photo = data.astronaut()[:32, :32]
    for metric in (psnr, ssim):
        with pytest.raises(MetricInputError, match="test_y_channel must be True .* or False"):
            metric(photo, photo, 4, test_y_channel=flag)  # type: ignore[arg-type]
    assert psnr(photo, photo, 4, test_y_channel=np.bool_(False)) == math.inf
