"""Sizes broadcast together (`onnx_products.broadcast_dims`), as the ONNX checks follow them: of a constant's shape
(every size fixed) and of a value made from the image (a size the file does not fix is None), by one rule."""

from __future__ import annotations

import numpy as np
import pytest

from srfeat.inference.onnx_products import broadcast_dims


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ([[4, 1, 3], [5, 1]], [4, 5, 3]),  # a 1 takes the other's size; the shorter shape is aligned from the last
        ([[2, 0], [1, 1]], [2, 0]),  # a 0 broadcast with a 1 holds no values
        ([[0], [1], [0]], [0]),
        ([[1, 1], [1]], [1, 1]),
        ([[None, 64], [1, 1]], [None, 64]),  # not fixed: stays so against a 1
        ([[None, 1], [7, None]], [7, None]),  # a fixed size other than 1 is the size there
        ([[None], [0]], [0]),  # a 0 wins against a size not fixed too
        ([[None], [None]], [None]),
        ([[], [3]], [3]),
        ([], []),
    ],
)
def test_sizes_broadcast_as_numpy_does(shapes: list[list[int | None]], expected: list[int | None]) -> None:
    assert broadcast_dims(shapes) == expected
    fixed = [[each for each in shape if each is not None] for shape in shapes]
    if fixed == shapes:  # numpy agrees where every size is fixed
        assert list(np.broadcast_shapes(*(tuple(shape) for shape in fixed))) == expected


def test_sizes_that_disagree_give_the_largest_or_a_zero() -> None:
    """ONNX Runtime refuses sizes that disagree itself; the checks count the largest, and a 0 as none."""
    assert broadcast_dims([[3, 8], [5, 8]]) == [5, 8]
    assert broadcast_dims([[None, 3], [2, 5]]) == [2, 5]
    assert broadcast_dims([[0], [5]]) == [0]
