"""`srfeat.data.resize` as a developer calls it: arguments that are not a scale or a size, and
integer arrays, get one-line srfeat errors or correct pixels, never a numpy/torch failure."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from srfeat.data.resize import MAX_CONTRIBUTIONS, imresize, imresize_np
from srfeat.errors import InvalidImageError, NotAnImageError


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf, 0, -2, True, "2"])
def test_a_scale_that_is_not_a_finite_positive_number_is_refused_in_one_line(scale: object) -> None:
    with pytest.raises(InvalidImageError, match="scale") as caught:
        imresize(torch.rand(3, 8, 8), scale=scale)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("size", [(0, 4), (4.7, 4), (4, 4, 4), 4, "44", (math.nan, 4), (True, 4)])
def test_a_size_that_is_not_two_positive_whole_numbers_is_refused(size: object) -> None:
    with pytest.raises(InvalidImageError, match="size"):
        imresize(torch.rand(3, 8, 8), size=size)  # pyright: ignore[reportArgumentType]


def test_sizes_given_as_numpy_integers_or_a_torch_size_work() -> None:
    image = torch.rand(3, 8, 8)
    # taken as Python's integers are, though the annotation says tuple[int, int]
    assert imresize(image, size=(np.int64(5), np.int32(6))).shape == (3, 5, 6)  # pyright: ignore[reportArgumentType]
    assert imresize(image, size=torch.Size([5, 6])).shape == (3, 5, 6)  # pyright: ignore[reportArgumentType]


def test_a_vanishing_scale_is_refused_before_its_filter_is_allocated() -> None:
    # 1e-9 asked numpy for a 30 GB kernel (MemoryError); 1e5 torch for 7 TB of output.
    with pytest.raises(InvalidImageError, match="filter weights"):
        imresize(torch.rand(3, 8, 8), scale=1e-9)
    with pytest.raises(InvalidImageError, match="free memory|filter weights"):
        imresize(torch.rand(3, 8, 8), scale=1e5)


def test_the_refusal_quotes_the_count_it_checked() -> None:
    # 3.5M outputs of 4 taps are 14M weights, under the 16.8M limit; with MATLAB's 2 extra taps, 21M.
    with pytest.raises(InvalidImageError, match="filter weights") as refusal:
        imresize(torch.rand(1, 1, 8), size=(1, 3_500_000))
    quoted = re.search(r"would need ([0-9.e+]+) filter weights", str(refusal.value))
    assert quoted is not None and float(quoted.group(1)) > MAX_CONTRIBUTIONS


def test_numpy_arrays_and_integer_tensors_are_type_errors_that_say_what_to_use() -> None:
    with pytest.raises(NotAnImageError, match="imresize_np"):
        imresize(np.ones((8, 8), np.float32), scale=2)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="floating-point"):
        imresize(torch.ones(3, 8, 8, dtype=torch.uint8), scale=2)
    with pytest.raises(NotAnImageError, match="bool"):
        imresize_np(np.ones((8, 8), bool), 2)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
def test_integer_arrays_are_rounded_and_clipped_not_wrapped_around(dtype: type[np.integer]) -> None:
    """Bicubic overshoots at an edge: cast back unclipped, a uint16 edge's undershoot became 64001."""
    high = np.iinfo(dtype).max
    step = np.zeros((8, 8), dtype)
    step[:, 4:] = high
    resized = imresize_np(step, 2)
    low = np.iinfo(dtype).min
    reference = imresize(torch.from_numpy(step.astype(np.float64)), scale=2).round().clamp(low, high)
    assert resized.dtype == dtype
    np.testing.assert_array_equal(resized, reference.numpy().astype(dtype))


def test_rounding_each_pass_is_for_integer_pixels() -> None:
    with pytest.raises(InvalidImageError, match="round_each_pass rounds integer pixels; this array is float32"):
        imresize_np(np.ones((8, 8), np.float32), 0.5, round_each_pass=True)


def test_a_channels_last_tensor_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """`imresize(torch.from_numpy(rgb), scale=0.5)` silently resized the width and the channels: a
    16x16x3 image came back 16x8x2. `imresize_np` warned of the opposite mistake, this one did not."""
    image = torch.rand(16, 12, 3)
    with caplog.at_level("WARNING", logger="srfeat.data.resize"):
        result = imresize(image, scale=0.5)
    assert result.shape == (16, 6, 2)  # resized as asked: the last two dimensions
    assert any("channels last? use tensor.permute(2, 0, 1)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="srfeat.data.resize"):
        imresize(torch.rand(3, 16, 3), scale=0.5)  # an RGB image 3 pixels wide
        imresize(torch.rand(2, 3, 16, 12), scale=0.5)  # a batch
    assert not caplog.records


def test_a_large_value_quoted_in_an_error_stays_on_one_line() -> None:
    """The value's repr was quoted, cut at 200 characters: an array's spans lines."""
    with pytest.raises(InvalidImageError) as caught:
        imresize(torch.rand(3, 8, 8), scale=np.full((4, 4), 0.5))  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
