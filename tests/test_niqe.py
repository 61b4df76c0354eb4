"""NIQE against MATLAB's published scores, and its behaviour on degenerate images."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from srfeat.data.resize import imresize_np
from srfeat.errors import MetricInputError, SRFeatError
from srfeat.metrics import niqe as niqe_module
from srfeat.metrics.niqe import _aggd_fit, niqe
from srfeat.metrics.psnr_ssim import rgb_to_y


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_baboon_matches_matlab(datasets_dir: Path) -> None:
    # MATLAB R2021a, LIVE's niqe_release on Set14 baboon's Y channel: 5.72957338.
    score = niqe(rgb_to_y(read_rgb(datasets_dir / "Set14" / "baboon.png")), crop_border=0)
    assert score == pytest.approx(5.72957, abs=5e-5)
    assert round(score, 4) == 5.7296


def test_float32_path_is_the_one_that_matches_matlab(datasets_dir: Path) -> None:
    # float64 local means leave +-1e-14 residues in flat areas that shift the fits (5.7300 here).
    y = np.floor(rgb_to_y(read_rgb(datasets_dir / "Set14" / "baboon.png")) + 0.5)
    assert abs(niqe_module._niqe(y, np.float64) - 5.72957) > 1e-4
    assert niqe_module._niqe(y, np.float32) == pytest.approx(5.72957, abs=5e-5)


# Published x4 means (shave 4): bicubic upscales of MATLAB-bicubic LR, and the HR images.
PUBLISHED_MEANS = {"Set5": (8.51, 5.44), "Set14": (7.71, 4.92)}


# BSD100 (7.6972 / 3.3453 here) takes ten times longer; it is checked outside the test suite.
@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_benchmark_means_match_published(datasets_dir: Path, dataset: str) -> None:
    bicubic_scores, hr_scores = [], []
    for path in sorted((datasets_dir / dataset).glob("*.png")):
        hr = read_rgb(path)
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        bicubic = imresize_np(imresize_np(hr, 0.25), 4.0)
        bicubic_scores.append(niqe(rgb_to_y(bicubic), crop_border=4))
        hr_scores.append(niqe(rgb_to_y(hr), crop_border=4))
    bicubic_published, hr_published = PUBLISHED_MEANS[dataset]
    assert np.mean(bicubic_scores) == pytest.approx(bicubic_published, abs=0.05)
    assert np.mean(hr_scores) == pytest.approx(hr_published, abs=0.1)


def test_degradation_raises_the_score() -> None:
    y = rgb_to_y(skimage_data.astronaut())
    hr = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    blurred = imresize_np(imresize_np(hr, 0.25), 4.0).astype(np.float64)
    assert niqe(blurred) > niqe(y) + 2.0


def test_rounds_to_integers_and_shaves_border() -> None:
    y = rgb_to_y(skimage_data.astronaut()[:200, :300])
    integers = np.floor(y + 0.5)
    assert niqe(y) == niqe(integers)
    assert niqe(integers + 0.3) == niqe(integers - 0.3) == niqe(integers)
    assert niqe(y, crop_border=4) == niqe(y[4:-4, 4:-4])


def test_constant_image_is_a_clear_error_not_nan() -> None:
    with pytest.raises(SRFeatError, match="without texture"):
        niqe(np.full((200, 300), 128.0))


def test_partly_flat_image_is_finite() -> None:
    rng = np.random.default_rng(0)
    y = np.full((192, 192), 120.0)
    y[:96, :96] += rng.normal(0.0, 10.0, (96, 96))  # one textured block, three flat ones
    assert math.isfinite(niqe(y))


def test_image_smaller_than_a_block_is_a_clear_error() -> None:
    with pytest.raises(SRFeatError, match="at least 96x96"):
        niqe(np.full((100, 100), 128.0), crop_border=4)


def test_damaged_model_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    niqe_module.pristine_model.cache_clear()
    monkeypatch.setattr(niqe_module, "PRISTINE_PARAMS_SHA256", hashlib.sha256(b"other").hexdigest())
    try:
        with pytest.raises(SRFeatError, match="damaged"):
            niqe_module.pristine_model()
    finally:
        niqe_module.pristine_model.cache_clear()


def test_pristine_model_shapes() -> None:
    mean, covariance, window = niqe_module.pristine_model()
    assert mean.shape == (36,) and covariance.shape == (36, 36) and window.shape == (7, 7)
    np.testing.assert_allclose(covariance, covariance.T)
    assert window.sum() == pytest.approx(1.0)


def test_aggd_fit_recovers_known_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    gaussian = (torch.randn(1, 200_000, generator=generator, dtype=torch.float64) * 3.0).numpy()
    shape, left, right = _aggd_fit(gaussian)
    assert shape[0] == pytest.approx(2.0, abs=0.05)
    assert left[0] == pytest.approx(3.0 * math.sqrt(2), rel=0.02)  # AGGD scale = sqrt(2) * sigma at shape 2
    assert right[0] == pytest.approx(left[0], rel=0.02)

    laplace = torch.distributions.Laplace(0.0, 1.0).sample((1, 200_000)).double().numpy()
    shape, left, right = _aggd_fit(laplace)
    assert shape[0] == pytest.approx(1.0, abs=0.05)
    assert left[0] == pytest.approx(1.0, rel=0.03)

    one_sided = np.abs(gaussian)  # no negative samples: undefined left side, as MATLAB's NaN
    shape, left, right = _aggd_fit(one_sided)
    assert math.isnan(left[0]) and shape[0] == pytest.approx(0.2)


def _textured(shape: tuple[int, int] = (200, 200)) -> np.ndarray:
    return np.random.default_rng(0).random(shape) * 200 + 16


@pytest.mark.parametrize(
    ("y", "crop_border", "message"),
    [
        (np.where(_textured() > 210, np.nan, _textured()), 0, "NaN or infinite"),  # was "without texture"
        (np.full((200, 200), np.inf), 0, "40,000 NaN or infinite"),
        (_textured().astype(np.uint16) * 257, 0, "outside 0..255"),  # was 74, no error
        ((_textured() - 16) / 200, 0, "as of a \\[0, 1\\] image"),  # was 657, no error
        (_textured() > 100, 0, "dtype bool"),
        (_textured() + 0j, 0, "dtype complex"),
        (_textured(), 2.5, "integer >= 0"),  # was TypeError from slicing
        (_textured(), -1, "integer >= 0"),
    ],
)
def test_input_that_is_not_a_y_channel_is_refused(y: np.ndarray, crop_border: int, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        niqe(y, crop_border=crop_border)


def test_a_tensor_that_requires_grad_or_is_bfloat16_is_scored_as_its_values() -> None:
    """The docstring takes a tensor: one that requires grad (a network's output) was torch's "Can't call
    numpy() on Tensor that requires grad", a bfloat16 one "Got unsupported ScalarType BFloat16"."""
    y = np.floor(_textured())  # whole numbers to 215: bfloat16 holds them exactly, so all three score the same
    expected = niqe(y)
    assert niqe(torch.tensor(y, dtype=torch.float32, requires_grad=True)) == expected
    assert niqe(torch.tensor(y).bfloat16()) == expected


def test_a_ragged_list_is_a_metric_input_error() -> None:
    with pytest.raises(MetricInputError, match="niqe expects an HxW Y channel .*got a list that is not one array"):
        niqe([[20.0, 30.0], [40.0]])
