"""What the ONNX checks count of products (`onnx_products`): sizes broadcast together, of a constant's shape (every
size fixed) and of a value made from the image (a size the file does not fix is None) by one rule; and how many
values an Einsum or a MatMul by weights makes, by one rule too."""

from __future__ import annotations

import numpy as np
import pytest

from srfeat.inference.onnx_products import (
    broadcast_dims,
    einsum_dims,
    einsum_factor,
    einsum_pairwise_values,
    pairwise_values,
    product_dims,
    weight_factor,
)


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


@pytest.mark.parametrize(
    ("equation", "shapes", "image", "expected"),
    [
        ("bchw,oc->bohw", [[1, 3, None, None], [5_000, 3]], 0, 5_000 / 3),  # a 1x1 convolution: o made, c taken
        ("...c,oc->...o", [[1, None, None, 64], [256, 64]], 0, 4.0),  # a Linear layer on the pixels' features
        ("oc,...c", [[256, 64], None], 1, 4.0),  # implicit output: the letters written once (o), the ellipsis's
        ("bchw,oc,po->bphw", [None, [16, 3], [64, 16]], 0, 64 / 3),  # o summed between the two weights
        ("bhwc,c->bhwc", [[1, None, None, 64], [64]], 0, 1.0),  # a scale per feature: no more values
        ("bhwc,c->bhwc", [[1, None, None, 1], [64]], 0, 64.0),  # one feature broadcast to 64
        ("bhwc,c->bhwc", [None, [64]], 0, 64.0),  # the image's features not noted: as many as may be broadcast
        ("...c,...oc->...o", [[None, None, 64], [8, 2, 64]], 0, 2 / 64 * 8),  # the weight's batch axis added
        ("bchw,oc->bohw", [[1, 3, None, None], None], 0, float("inf")),  # the weight's shape not fixed
        ("bchw,oc->bohw", [[1, 3, None], [5, 3]], 0, None),  # an operand of another rank: refused by ONNX Runtime
        ("bchw,oc->bxhw", [None, [5, 3]], 0, None),  # an output letter no operand has
        ("bchw->bhwc", [None], 0, 1.0),  # of the image alone: rearranged
    ],
)
def test_an_einsum_by_weights_counts_the_values_they_make(
    equation: str, shapes: list[list[int | None] | None], image: int, expected: float | None
) -> None:
    """How many times as many values an Einsum makes as its operand made from the image holds."""
    factor = einsum_factor(equation, shapes, image)
    assert factor == pytest.approx(expected) if expected is not None else factor is None


@pytest.mark.parametrize(("first", "transposed"), [(False, False), (False, True), (True, False), (True, True)])
def test_a_matmul_by_a_weight_counts_as_the_einsum_it_is(first: bool, transposed: bool) -> None:
    """A [2, 64, 256] weight makes 256 for each 64 it takes (4 times as many), times its batch of 2."""
    weight = [2, 64, 256] if first == transposed else [2, 256, 64]  # A is [M, K]; B is [K, N]
    assert weight_factor(weight, first, transposed) == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("equation", "shapes", "expected"),
    [
        ("bhwc,oc->bhwo", [[1, None, None, 64], [128, 64]], [1, None, None, 128]),  # a Linear layer on the pixels
        ("bchw,oc->bohw", [[1, 3, None, None], [64, 3]], [1, 64, None, None]),  # a 1x1 convolution
        ("...c,oc->...o", [[None, 16, 64], [256, 64]], [None, 16, 256]),
        ("...ij,...jk", [[2, 1, 5, 3], [4, 3, 7]], [2, 4, 5, 7]),  # implicit: the ellipsis's axes broadcast, then i, k
        ("ki,kj", [[3, 5], [3, 7]], [5, 7]),  # implicit: the letters written once, in alphabetical order
        ("bij,bjk->bik", [[None, 16, 8], [1, 8, 16]], [None, 16, 16]),  # a batch not fixed against a 1: not fixed
        ("ii->i", [[4, 4]], [4]),  # a diagonal
        ("bhwc,oc->bhwo", [None, [128, 64]], None),  # an operand's sizes not noted
        ("bchw,oc->bohw", [[1, 3, None], [5, 3]], None),  # an operand of another rank: refused by ONNX Runtime
        ("bchw,oc->bxhw", [[1, 3, 4, 4], [5, 3]], None),  # an output letter no operand has
    ],
)
def test_an_einsum_fixes_the_sizes_its_operands_fix(
    equation: str, shapes: list[list[int | None] | None], expected: list[int | None] | None
) -> None:
    """The sizes of an Einsum's output, as numpy's where every size is fixed; None where they cannot be told."""
    assert einsum_dims(equation, shapes) == expected
    fixed = [[size for size in shape if size is not None] for shape in shapes if shape is not None]
    if expected is not None and fixed == shapes:  # numpy agrees where every size is fixed
        assert list(np.einsum(equation, *(np.zeros(shape) for shape in fixed)).shape) == expected


def test_a_matmul_fixes_the_sizes_of_the_einsum_it_is() -> None:
    first: list[int | None] = [None, 2, 16, 8]
    second: list[int | None] = [1, 8, 32]
    assert einsum_dims("...mk,...kn->...mn", [first, second]) == product_dims(first, second) == [None, 2, 16, 32]


@pytest.mark.parametrize(
    ("equation", "first", "second", "transposed"),
    [
        ("bhqd,bhkd->bhqk", [None, 2, 16, 8], [None, 2, 16, 8], (False, True)),  # Q K^T over windows of 16 pixels
        ("bhqk,bhkd->bhqd", [None, 2, 16, 16], [None, 2, 16, 8], (False, False)),  # its product by V
        ("bhqd,bhkd->bhqk", [1, 2, None, 8], [1, 2, None, 8], (False, True)),  # over a whole tile's pixels
        ("bcp,bcq->bpq", [1, 3, None], [1, 3, None], (True, False)),
    ],
)
def test_an_einsum_of_two_values_of_the_image_counts_as_the_matmul_it_is(
    equation: str, first: list[int | None], second: list[int | None], transposed: tuple[bool, bool]
) -> None:
    made = (8.0, 8.0)
    expected = pairwise_values(first, second, transposed, made)
    assert einsum_pairwise_values(equation, [first, second], made) == expected
    assert (expected == float("inf")) == (None in first[2:])


def test_an_einsum_not_read_as_a_matmul_is_not_bounded() -> None:
    assert einsum_pairwise_values("ii,ij->ij", [[4, 4], [4, 4]], (1.0, 1.0)) == float("inf")
    assert einsum_pairwise_values("ab,bc,cd->ad", [[4, 4], [4, 4], [4, 4]], (1.0, 1.0)) == float("inf")
