"""MATLAB-compatible bicubic resize, checked against values worked out by hand.

The expected numbers below come from MATLAB's `contributions` definition done on paper:
cubic kernel (a = -0.5) values at the offsets that occur for a factor of 2 are
k(0.25) = 0.8671875, k(0.75) = 0.2265625, k(1.25) = -0.0703125, k(1.75) = -0.0234375, k(2.25) = 0;
output pixel x (1-based) samples input position u = x/scale + 0.5*(1 - 1/scale); positions
outside 1..n are mirrored (0 -> 1, -1 -> 2, n+1 -> n, ...). When shrinking by 2 with
antialiasing the kernel is 0.5*k(0.5*d), over 10 taps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srfeat.data import resize
from srfeat.data.resize import imresize, imresize_np

# Enlarge [1, 2, 4, 8] by 2. E.g. output 1: u = 0.75, taps at input 0 (-> 1), 1, 2 with
# k(0.75) + k(0.25) on a1 and k(1.75) + k(1.25) on a2: 1.09375*1 - 0.09375*2 = 0.90625.
UPSCALE_INPUT = [1.0, 2.0, 4.0, 8.0]
UPSCALE_EXPECTED = [0.90625, 1.15625, 1.65625, 2.3828125, 3.3359375, 4.953125, 7.234375, 8.375]

# Shrink [1, 2, 4, ..., 128] by 2 with antialiasing. E.g. output 1: u = 1.5, weights
# 0.546875, 0.3984375, 0.1015625, -0.03515625, -0.01171875 on inputs 1..5 (the taps at
# 0, -1, -2 fold onto 1, 2, 3), giving 1.28125.
DOWNSCALE_INPUT = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
DOWNSCALE_EXPECTED = [1.28125, 5.3203125, 22.8046875, 98.09375]


def test_upscale_matches_hand_computed_matlab_values() -> None:
    row = torch.tensor([UPSCALE_INPUT], dtype=torch.float64)
    assert imresize(row, size=(1, 8)).squeeze(0).tolist() == pytest.approx(UPSCALE_EXPECTED, abs=1e-12)
    column = row.T.contiguous()
    assert imresize(column, size=(8, 1)).squeeze(1).tolist() == pytest.approx(UPSCALE_EXPECTED, abs=1e-12)


def test_antialiased_downscale_matches_hand_computed_matlab_values() -> None:
    column = torch.tensor(DOWNSCALE_INPUT, dtype=torch.float64).reshape(8, 1)
    assert imresize(column, size=(4, 1)).squeeze(1).tolist() == pytest.approx(DOWNSCALE_EXPECTED, abs=1e-12)


def test_downscale_without_antialiasing_samples_with_the_plain_kernel() -> None:
    # Without antialiasing, output 1 of a x1/2 shrink sits at u = 1.5: k(0.5) on inputs 1 and 2,
    # k(1.5) on inputs 0 (-> 1) and 3, k(0.5) = 0.5625, k(1.5) = -0.0625.
    column = torch.tensor(DOWNSCALE_INPUT, dtype=torch.float64).reshape(8, 1)
    out = imresize(column, scale=0.5, antialiasing=False).squeeze(1)
    assert out[0].item() == pytest.approx((0.5625 - 0.0625) * 1 + 0.5625 * 2 - 0.0625 * 4)


def test_two_dimensional_resize_is_separable() -> None:
    # A separable image a*b^T must resize to (R_h a)(R_w b)^T: checks both axes and their order.
    a = torch.tensor(DOWNSCALE_INPUT, dtype=torch.float64)
    b = torch.tensor(UPSCALE_INPUT, dtype=torch.float64)
    image = torch.outer(a, b)
    out = imresize(image, size=(4, 8))
    expected = torch.outer(
        torch.tensor(DOWNSCALE_EXPECTED, dtype=torch.float64), torch.tensor(UPSCALE_EXPECTED, dtype=torch.float64)
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_shapes_dtypes_and_leading_dimensions() -> None:
    image = torch.rand(2, 3, 10, 13)
    out = imresize(image, scale=0.25)
    # MATLAB's output size is ceil(in * scale).
    assert out.shape == (2, 3, 3, 4)
    assert out.dtype == torch.float32
    assert imresize(image.double(), scale=4).shape == (2, 3, 40, 52)
    assert imresize(image, scale=4).dtype == torch.float32
    # Each (batch, channel) plane is resized independently.
    torch.testing.assert_close(imresize(image[1, 2], scale=0.25), out[1, 2])


def test_x4_round_trip_preserves_constants_and_is_close_on_smooth_images() -> None:
    constant = torch.full((3, 32, 24), 0.7, dtype=torch.float64)
    torch.testing.assert_close(imresize(constant, scale=0.25), torch.full((3, 8, 6), 0.7, dtype=torch.float64))
    torch.testing.assert_close(imresize(constant, scale=4), torch.full((3, 128, 96), 0.7, dtype=torch.float64))
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, 64, dtype=torch.float64), torch.linspace(0, 1, 64, dtype=torch.float64), indexing="ij"
    )
    smooth = torch.sin(3 * ys) * torch.cos(2 * xs)
    restored = imresize(imresize(smooth, scale=0.25), scale=4)
    assert (restored - smooth)[8:-8, 8:-8].abs().max() < 0.01


def test_rejects_integer_tensors_and_bad_arguments() -> None:
    with pytest.raises(TypeError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), scale=2)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4), scale=2, size=(8, 8))
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4))


def test_numpy_wrapper_rounds_uint8_and_keeps_layout() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    small = imresize_np(rgb, 0.25)
    assert small.shape == (4, 3, 3) and small.dtype == np.uint8
    reference = imresize(torch.from_numpy(rgb).permute(2, 0, 1).double(), scale=0.25).round().clamp(0, 255)
    np.testing.assert_array_equal(small, reference.permute(1, 2, 0).numpy().astype(np.uint8))
    gray = rng.random((8, 8)).astype(np.float32)
    big = imresize_np(gray, 2)
    assert big.shape == (16, 16) and big.dtype == np.float32


def test_gather_path_matches_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long dimensions are resized by gathering taps instead of a dense matrix product.
    image = torch.rand(2, 37, 29, dtype=torch.float64)
    dense_down, dense_up = imresize(image, scale=0.25), imresize(image, scale=4)
    monkeypatch.setattr(resize, "DENSE_INPUT_PER_TAP", 0)
    torch.testing.assert_close(imresize(image, scale=0.25), dense_down, rtol=0, atol=1e-12)
    torch.testing.assert_close(imresize(image, scale=4), dense_up, rtol=0, atol=1e-12)


def test_a_channels_first_array_is_resized_as_the_layout_says_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """imresize_np takes HxWxC: a 3x64x64 array is 3 rows of 64 channels, which a caller who meant
    channels first did not want; before, it was resized so without a word."""
    chw = np.zeros((3, 64, 64), np.uint8)
    with caplog.at_level("WARNING", logger="srfeat.data.resize"):
        assert imresize_np(chw, 0.5).shape == (2, 32, 64)
        imresize_np(np.zeros((64, 64, 3), np.uint8), 0.5)  # HxWxC says nothing
    expected = "imresize_np resizes the 3x64x64 array as 64x3 pixels of 64 channels: channels first? use array."
    assert caplog.messages == [expected + "transpose(1, 2, 0)"]
