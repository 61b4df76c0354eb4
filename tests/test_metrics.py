"""PSNR / SSIM by the BasicSR protocol: hand-computed values and scikit-image as an independent SSIM."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from skimage import data as samples
from skimage.metrics import structural_similarity

from srfeat import library_warnings
from srfeat.errors import MetricInputError
from srfeat.metrics import psnr_ssim
from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim


def test_rgb_to_y_bt601_values() -> None:
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(pixels)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])
    np.testing.assert_allclose(rgb_to_y(pixels.astype(np.float64) / 255.0), rgb_to_y(pixels))
    assert rgb_to_y(np.full((2, 2), 255, np.uint8)).tolist() == [[235.0, 235.0], [235.0, 235.0]]


def test_psnr_hand_computed_on_y_and_rgb() -> None:
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = hr + 1
    # Y differs by 219/255 everywhere: PSNR = 10 log10(255^2 / (219/255)^2).
    assert psnr(sr, hr, crop_border=4) == pytest.approx(10 * math.log10(255**2 / (219 / 255) ** 2), abs=1e-10)
    assert psnr(sr, hr, crop_border=4, test_y_channel=False) == pytest.approx(10 * math.log10(255**2), abs=1e-10)


def test_psnr_shaves_the_border() -> None:
    hr = samples.astronaut()[:40, :40]
    sr = hr.copy()
    sr[:4] = 0  # only the shaved border differs
    assert psnr(sr, hr, crop_border=4) == math.inf
    assert psnr(sr, hr, crop_border=0) < 30
    with pytest.raises(ValueError, match="shape"):
        psnr(sr[:-1], hr, crop_border=4)


def test_ssim_matches_scikit_image_gaussian_ssim() -> None:
    # scikit-image with Gaussian weights (sigma 1.5, window 11), population covariance and
    # the mean over the interior is Wang et al.'s SSIM: the protocol's, computed independently.
    hr = samples.astronaut()[100:180, 150:250]
    rng = np.random.default_rng(0)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    y_sr, y_hr = rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4]
    assert ssim(sr, hr, crop_border=4) == pytest.approx(structural_similarity(y_sr, y_hr, **options), abs=1e-9)
    rgb_reference = structural_similarity(
        sr[4:-4, 4:-4].astype(np.float64), hr[4:-4, 4:-4].astype(np.float64), channel_axis=2, **options
    )
    assert ssim(sr, hr, crop_border=4, test_y_channel=False) == pytest.approx(rgb_reference, abs=1e-9)
    assert ssim(hr, hr, crop_border=4) == pytest.approx(1.0)
    assert ssim(sr, hr, crop_border=4) < 0.95


def test_bands_of_a_few_rows_give_the_whole_images_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    hr = samples.astronaut()[100:180, 150:250]
    sr = np.clip(hr.astype(int) + np.random.default_rng(1).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    whole = {y: (psnr(sr, hr, 4, y), ssim(sr, hr, 4, y)) for y in (True, False)}
    monkeypatch.setattr(psnr_ssim, "BAND_PIXELS", 3 * 100)  # 3 rows of results a band: 24 bands
    for y in (True, False):
        assert (psnr(sr, hr, 4, y), ssim(sr, hr, 4, y)) == pytest.approx(whole[y], rel=1e-12)
    reference = structural_similarity(rgb_to_y(sr)[4:-4, 4:-4], rgb_to_y(hr)[4:-4, 4:-4], **options)
    assert ssim(sr, hr, crop_border=4) == pytest.approx(reference, abs=1e-9)


def test_large_images_are_scored_in_bounded_memory() -> None:
    # A 2048x2048 pair: whole planes in float64 peaked at 537 MB for RGB SSIM and 286 MB for
    # PSNR; a band of a million pixels at a time, at about 140 MB and 100 MB, whatever the size.
    hr = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    sr = hr[::-1].copy()
    for metric in (psnr, ssim):
        tracemalloc.start()
        try:
            metric(sr, hr, crop_border=4, test_y_channel=False)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 200 * 2**20, (metric.__name__, peak / 2**20)


HOSTILE_PAIRS = {
    # name: (sr, hr, crop_border, what the one-line error says)
    "nothing left after the shave": (np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8), 4, "nothing is left"),
    "negative border": (np.zeros((20, 20, 3), np.uint8), np.ones((20, 20, 3), np.uint8), -2, "integer >= 0"),
    "fractional border": (np.zeros((20, 20, 3), np.uint8), np.ones((20, 20, 3), np.uint8), 1.5, "integer >= 0"),
    "NaN pixels": (np.full((20, 20, 3), np.nan), np.zeros((20, 20, 3)), 4, "1,200 NaN"),
    "16-bit": (np.full((20, 20, 3), 700, np.uint16), np.zeros((20, 20, 3), np.uint16), 4, "uint16"),
    "0..255 floats": (np.full((20, 20, 3), 200.0), np.zeros((20, 20, 3)), 4, "outside \\[0, 1\\]"),
    "uint8 against float": (np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3)), 4, "must both be uint8"),
    "RGBA": (np.zeros((20, 20, 4), np.uint8), np.zeros((20, 20, 4), np.uint8), 4, "HxWx3"),
    "1-D": (np.zeros(20, np.uint8), np.zeros(20, np.uint8), 0, "HxWx3"),
}


@pytest.mark.parametrize("metric", [psnr, ssim])
@pytest.mark.parametrize("case", HOSTILE_PAIRS)
def test_inputs_that_would_give_a_meaningless_number_are_refused(metric: Callable[..., float], case: str) -> None:
    # Before: NaN with numpy warnings (nothing left, negative border, NaN pixels), 1.3 dB for
    # 16-bit or 0..255 floats read as 8-bit or [0, 1], IndexError/TypeError for the rest.
    sr, hr, border, message = HOSTILE_PAIRS[case]
    with pytest.raises(MetricInputError, match=message):
        metric(sr, hr, crop_border=border)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_a_y_channel_given_to_the_y_protocol_says_how_to_score_it(metric: Callable[..., float]) -> None:
    """`psnr(rgb_to_y(sr), rgb_to_y(hr), 4)` said to divide by 255, which had the channel converted to Y twice."""
    hr = samples.astronaut()[:40, :48]
    sr = np.clip(hr.astype(int) + np.random.default_rng(2).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    for sr_given, hr_given, what in ((rgb_to_y(sr), rgb_to_y(hr), "SR"), (sr / 255.0, rgb_to_y(hr)[..., None], "HR")):
        with pytest.raises(MetricInputError) as refused:
            metric(sr_given, hr_given, 4)
        assert str(refused.value) == (
            f"the {what} image is one channel of floats in Y's range [16, 235] (rgb_to_y's output?), which "
            "test_y_channel=True would convert to Y again: pass the RGB images, or, for a channel already "
            "converted, test_y_channel=False and the channel divided by 255"
        )
    # What it says to do scores what the protocol does.
    assert metric(rgb_to_y(sr) / 255, rgb_to_y(hr) / 255, 4, test_y_channel=False) == pytest.approx(metric(sr, hr, 4))
    # Floats of 0..255 in RGB, or one channel with test_y_channel=False, keep their message.
    for image, y in ((np.full((20, 20, 3), 200.0), True), (np.full((20, 20), 200.0), False)):
        with pytest.raises(MetricInputError, match=r"outside \[0, 1\].*divide by 255, or pass uint8"):
            metric(image, np.zeros_like(image), 4, test_y_channel=y)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the warnings given once a process as if none had been given yet, whatever ran first."""
    monkeypatch.setattr(library_warnings, "_warned", set())


ROUNDED_Y_WARNING = (
    "the SR and HR images are one channel of uint8 all in Y's range [16, 235] (rgb_to_y's output, "
    "rounded?), which test_y_channel=True converts to Y again, as gray images: for a Y channel, pass the "
    "RGB images (the protocol's Y is not rounded), or test_y_channel=False to score the channel as it is; "
    "for gray images, nothing is wrong"
)


def _sr_and_hr() -> tuple[np.ndarray, np.ndarray]:
    """A photo (HR) and a noisy copy of it (SR), uint8 RGB."""
    hr = samples.astronaut()[:40, :48]
    sr = np.clip(hr.astype(int) + np.random.default_rng(2).integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    return sr, hr


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_a_y_channel_rounded_to_uint8_given_to_the_y_protocol_is_warned_about(
    metric: Callable[..., float], caplog: pytest.LogCaptureFixture
) -> None:
    """`rgb_to_y(sr).round().astype(np.uint8)` read as a gray image and was converted to Y again without a
    word, where its floats are refused; a gray image can lie in [16, 235] too, so it is said, not refused."""
    sr, hr = _sr_and_hr()
    sr_y, hr_y = (np.round(rgb_to_y(image)).astype(np.uint8) for image in (sr, hr))
    for sr_given, hr_given in ((sr_y, hr_y), (sr_y[..., None], hr_y[..., None])):
        caplog.clear()
        library_warnings._warned.clear()  # given once a process: the HxWx1 channels are warned about afresh
        with caplog.at_level("WARNING", logger="srfeat.metrics"):
            twice = metric(sr_given, hr_given, 4)
        assert [record.getMessage() for record in caplog.records] == [ROUNDED_Y_WARNING]
        assert twice == pytest.approx(metric(rgb_to_y(sr_y) / 255, rgb_to_y(hr_y) / 255, 4, test_y_channel=False))
    # What it says to do is not warned about, and scores the channel (the protocol's Y, within its rounding).
    caplog.clear()
    with caplog.at_level("WARNING", logger="srfeat.metrics"):
        as_it_is = metric(sr_y, hr_y, 4, test_y_channel=False)
        assert metric(sr, hr, 4) == pytest.approx(as_it_is, rel=0.02)
        # Gray images reaching past Y's range, and RGB, are not warned about.
        gray = samples.camera()[::8, ::8]  # 0..255
        metric(gray, gray, 4)
        metric(np.repeat(sr_y[..., None], 3, axis=2), np.repeat(hr_y[..., None], 3, axis=2), 4)
    assert caplog.records == []


def test_the_rounded_y_channel_is_warned_about_once_a_process(caplog: pytest.LogCaptureFixture) -> None:
    """It was logged on every call: an evaluation loop scoring rounded Y channels said it for every image and
    metric, hundreds of times."""
    sr_y, hr_y = (np.round(rgb_to_y(image)).astype(np.uint8) for image in _sr_and_hr())
    with caplog.at_level("WARNING", logger="srfeat.metrics"):
        for metric in (psnr, psnr, ssim):
            metric(sr_y, hr_y, 4)
            metric(sr_y[..., None], hr_y[..., None], 4)
    assert [record.getMessage() for record in caplog.records] == [ROUNDED_Y_WARNING]


def test_one_pixel_images() -> None:
    pixel = np.full((1, 1, 3), 100, np.uint8)
    assert psnr(pixel, pixel, crop_border=0) == math.inf
    assert psnr(pixel, pixel + 1, crop_border=0) < 60
    with pytest.raises(MetricInputError, match="11x11"):
        ssim(pixel, pixel, crop_border=0)


def test_every_size_message_reads_width_x_height() -> None:
    # SSIM's said "got (8, 12)", height first as a tuple, where PSNR's and NIQE's say "12x8" (width x height)
    image = samples.astronaut()[:16, :20]  # 20x16: 12x8 after a 4-pixel shave
    with pytest.raises(MetricInputError, match=r"at least 11x11 after the border crop, got 12x8$"):
        ssim(image, image, crop_border=4)
    with pytest.raises(MetricInputError, match=r"nothing is left of a 20x16 image"):
        psnr(image, image, crop_border=8)
