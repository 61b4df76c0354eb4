"""What a MatMul or Gemm makes, for `onnx_growth` to count: the sizes of its output's axes, and how many times as many
values it makes as each of its inputs holds.

By a weight (a Linear layer), its features for those it takes. Of two values made from the image (attention's
Q K^T, then its product by V), the sizes the file fixes bound it: over 8x8 windows (SwinIR), Q K^T makes 64 values
per head for each pixel, where over all a tile's pixels it makes the tile's pixels per head for each, a tile's
square in all (a 256-pixel tile's 4 billion, per head and byte). Where a size the output takes from the image is not
fixed (the pixels of a whole tile, reshaped to one axis), it is not bounded, and the file is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar, cast

from srfeat.inference.onnx_shapes import MAX_DIMS, Dims

__all__ = ["broadcast_dims", "pairwise_values", "product_dims", "weight_factor"]

# A size of an axis: fixed (int), or where it may not be, None for one the file does not fix
Size = TypeVar("Size", int, int | None)


def broadcast_dims(shapes: Sequence[Sequence[Size]]) -> list[Size]:
    """The sizes of `shapes` broadcast together, as ONNX (and numpy) do: 0 where one is 0 (no values), else the
    largest other than 1 where one has it (where two disagree, ONNX Runtime refuses them itself), else None where
    one is not fixed, else 1. Of sizes all fixed (a constant's shape), all fixed."""
    rank = max(map(len, shapes), default=0)
    result: Dims = []
    for sizes in zip(*([1] * (rank - len(shape)) + list(shape) for shape in shapes), strict=True):
        known = [each for each in sizes if each is not None and each != 1]
        result.append(0 if 0 in known else max(known) if known else (None if None in sizes else 1))
    return cast("list[Size]", result)  # None only where a shape has one


def _as_matrices(first: Dims, second: Dims, transposed: tuple[bool, bool]) -> tuple[Dims, Dims] | None:
    """`first` and `second` as [..., M, K] and [..., K, N] (a vector made a matrix, as MatMul does; Gemm's
    `transA` and `transB` undone); None for a rank ONNX Runtime refuses (0)."""
    if not first or not second:
        return None
    first = [1, *first] if len(first) == 1 else list(first)
    second = [*second, 1] if len(second) == 1 else list(second)
    if transposed[0]:
        first[-2:] = first[-1], first[-2]
    if transposed[1]:
        second[-2:] = second[-1], second[-2]
    return first, second


def product_dims(first: Dims, second: Dims, transposed: tuple[bool, bool] = (False, False)) -> Dims | None:
    """The sizes of the output of a MatMul (or a Gemm, `transposed` its `transA` and `transB`) of values of sizes
    `first` and `second`: their batch axes broadcast, then M and N. A vector's axis is kept (1): a size noted
    smaller than the true one counts less, so None is returned for one (a MatMul of a vector)."""
    if len(first) < 2 or len(second) < 2 or (matrices := _as_matrices(first, second, transposed)) is None:
        return None
    (*first_batch, rows, _), (*second_batch, _, columns) = matrices
    return [*broadcast_dims([first_batch, second_batch]), rows, columns]


def weight_factor(weight: list[int], weight_first: bool, transposed: bool) -> float:
    """How many times as many values a MatMul or Gemm of a value made from the image by a weight of the shape
    `weight` makes (the weight `weight_first`, or second; `transposed` by Gemm's flag): the weight's sizes it makes
    over the one it takes (a [64, 256] weight after a [N, H, W, 64] map makes 4 times as many; [N, 3, H, W] times
    a [W, W'] one, W' / W), times the weight's batch sizes."""
    if len(weight) < 2:  # a vector: an axis taken off
        return 1.0
    *batch, rows, columns = weight
    rows, columns = (columns, rows) if transposed else (rows, columns)
    taken, made = (columns, rows) if weight_first else (rows, columns)  # B: [K, N]; A: [M, K] (its rows)
    return math.prod(float(max(size, 1)) for size in [*batch[:MAX_DIMS], made]) / taken if taken > 0 else 1.0


def pairwise_values(
    first: Dims | None, second: Dims | None, transposed: tuple[bool, bool], made: tuple[float, float]
) -> float:
    """How many values per pixel of the image a MatMul (or Gemm) of two values made from the image makes, of sizes
    `first` and `second`, each making `made` values per pixel, where the sizes the file fixes bound it; `math.inf`
    where they do not.

    Of [..., M, K] by [..., K, N], the output holds N / K times the first's values and M / K times the second's
    (K counted as 1 where not fixed), times what broadcasting their batch axes adds to each: either bound holds,
    and the lesser is returned. A batch axis whose size neither fixes (the windows of a tile, in Q and in K^T
    alike) is the larger input's there, so that one of the two bounds holds, not known which: the greater is
    returned; with two such axes, each could be broadcast by the other's (a [P, 1] by a [1, P]: P^2), and
    nothing is bounded."""
    if first is None or second is None or (matrices := _as_matrices(first, second, transposed)) is None:
        return math.inf
    (*first_batch, rows, taken), (*second_batch, taken_too, columns) = matrices
    inner = taken if taken is not None else taken_too
    inner_size = float(max(inner, 1)) if inner is not None else 1.0
    first_factor = columns / inner_size if columns is not None else math.inf
    second_factor = rows / inner_size if rows is not None else math.inf
    rank = max(len(first_batch), len(second_batch))
    first_batch = [1] * (rank - len(first_batch)) + first_batch
    second_batch = [1] * (rank - len(second_batch)) + second_batch
    shared_unknown = 0
    for size, other in zip(first_batch, second_batch, strict=True):
        if size is None and other is None:
            shared_unknown += 1
            continue
        by_first, by_second = _broadcast_factors(size, other)
        first_factor, second_factor = first_factor * by_first, second_factor * by_second
    bounds = (made[0] * first_factor, made[1] * second_factor)
    if shared_unknown > 1:
        return math.inf
    return max(bounds) if shared_unknown else min(bounds)


def _broadcast_factors(size: int | None, other: int | None) -> tuple[float, float]:
    """How many times a batch axis of sizes `size` and `other` (one at least fixed) broadcast together enlarges
    each: the larger over each where both are fixed; where one is not, the fixed one (if it is not 1: the other is
    it, or 1), else unbounded for the fixed side (1 broadcast to the other's)."""
    if size is not None and other is not None:
        largest = max(size, other)
        return (largest / size if size > 0 else 1.0), (largest / other if other > 0 else 1.0)
    fixed = size if size is not None else other
    assert fixed is not None  # both unknown: counted by the caller
    factors = (1.0, math.inf) if fixed == 1 else (float(max(fixed, 1)), 1.0)
    return factors if size is None else (factors[1], factors[0])
