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
            metric(photo, photo, 4, test_y_channel=flag)  # pyright: ignore[reportArgumentType]
    # numpy's bool is accepted as True and False are, though the annotation says bool.
    assert psnr(photo, photo, 4, test_y_channel=np.bool_(False)) == math.inf  # pyright: ignore[reportArgumentType]


def test_a_masked_array_is_refused_saying_to_fill_it_or_pass_its_data() -> None:
    """numpy's masked arrays were scored by their data: a masked SR scored the values it hid, as did NIQE."""
    from srfeat.metrics import psnr, rgb_to_y, ssim

    photo = data.astronaut()[:64, :64]
    hidden = np.zeros(photo.shape, bool)
    hidden[:8] = True  # 8 rows, 1,536 values
    masked = np.ma.masked_array(photo, mask=hidden)
    expected = (
        "{} is a numpy masked array (1,536 value(s) masked), and the metrics do not read masks: fill the "
        "masked values first (array.filled(value)), or pass array.data if the mask means nothing"
    )
    for metric in (psnr, ssim):
        for sr, hr, what in ((masked, photo, "the SR image"), (photo, masked, "the HR image")):
            with pytest.raises(MetricInputError) as refused:
                metric(sr, hr, 4)
            assert str(refused.value) == expected.format(what)
    # a masked channel in Y's range is refused as masked, not taken for rgb_to_y's output
    y = np.ma.masked_array(rgb_to_y(photo), mask=hidden[..., 0])
    with pytest.raises(MetricInputError, match="the SR image is a numpy masked array .512 value"):
        psnr(y, y, 4)
    with pytest.raises(MetricInputError) as refused:
        rgb_to_y(masked)
    assert str(refused.value) == expected.format("the image")
    with pytest.raises(MetricInputError) as refused:
        niqe(y)
    assert str(refused.value) == expected.format("the Y channel").replace("1,536", "512")
    # nothing masked is refused too (the type says a mask may be there); its data scores as the array
    unmasked = np.ma.masked_array(photo)
    with pytest.raises(MetricInputError, match=r"masked array \(0 value\(s\) masked\)"):
        psnr(unmasked, photo, 4)
    assert psnr(unmasked.data, photo, 4) == math.inf
