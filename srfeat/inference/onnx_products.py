"""What a MatMul, Gemm or Einsum makes, for `onnx_growth` to count: the sizes of its output's axes, and how many times
as many values it makes as each of its inputs holds; and sizes broadcast together (`broadcast_dims`), for it and
for `onnx_constants`.

By a weight (a Linear layer; an Einsum's, a 1x1 convolution as `bchw,oc->bohw`), its features for those it takes,
counted by one rule (`einsum_factor`: a MatMul is the Einsum `...mk,...kn->...mn`). Of two values made from the
image (attention's Q K^T, then its product by V), the sizes the file fixes bound it: over 8x8 windows (SwinIR), Q K^T
makes 64 values per head for each pixel, where over all a tile's pixels it makes the tile's pixels per head for each,
a tile's square in all (a 256-pixel tile's 4 billion, per head and byte); an Einsum of two (`bhqd,bhkd->bhqk`) as
the MatMul it is (`einsum_pairwise_values`). Where a size the output takes from the image
is not fixed (the pixels of a whole tile, reshaped to one axis), it is not bounded, and the file is refused. Across
the channels (Restormer's, DAT's), Q K^T sums over the pixels and makes heads x C^2 values per image, whatever the tile:
counted per pixel of the least tile (`LEAST_TILE_PIXELS`); its product by V, of the image's batch in both, as V.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar, cast

from srfeat.inference.onnx_einsum import Label, axis_labels, einsum_terms, output_labels
from srfeat.inference.onnx_image_axes import MIXED, ImageAxis
from srfeat.inference.onnx_shape_types import LEAST_TILE_PIXELS, Dims

__all__ = [
    "LEAST_TILE_PIXELS",
    "broadcast_dims",
    "crossed_growth",
    "einsum_dims",
    "einsum_factor",
    "einsum_pairwise_values",
    "pairwise_values",
    "product_dims",
    "weight_factor",
]

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


def crossed_growth(shapes: Sequence[Dims], image: Sequence[Mapping[int, ImageAxis]]) -> float:
    """How many times over values made from the image of sizes `shapes` broadcast together (an Add, a Mul) outgrow
    the largest of them: where one has a size the file does not fix against another's 1, and the other one against
    its 1 on another axis, the output holds the product of both (the image as a [P, 1, 1] column times itself as a
    [1, 1, P] row: P^2 values, of a tile's P pixels). As a size not fixed may be all a tile's pixels, counted as
    the least tile's (`LEAST_TILE_PIXELS`), so refused. Not where each side's so broadcast are of the image's
    height or width (their `image` axes) and the other has none of those: a column of H beside a row of W makes
    the image's own H x W (a grid of coordinates)."""
    rank = max(map(len, shapes), default=0)
    padded = [[1] * (rank - len(shape)) + list(shape) for shape in shapes]
    for first, second in ((a, b) for a in range(len(shapes)) for b in range(len(shapes)) if a < b):
        spread = [
            [axis - rank for axis in range(rank) if padded[one][axis] is None and padded[other][axis] == 1]
            for one, other in ((first, second), (second, first))
        ]
        if not spread[0] or not spread[1]:
            continue
        names = [
            {image[side].get(axis, MIXED)[0] for axis in axes}
            for side, axes in zip((first, second), spread, strict=True)
        ]
        owned = [{label for label, _ in image[side].values()} for side in (second, first)]
        if any(MIXED[0] in each for each in names) or names[0] & owned[0] or names[1] & owned[1]:
            return float(LEAST_TILE_PIXELS)
    return 1.0


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


def einsum_dims(equation: str, shapes: Sequence[Dims | None]) -> Dims | None:
    """The sizes of the output of an Einsum of `equation` of values of sizes `shapes`: each letter's (and each axis's
    the ellipses span) its operands' there broadcast together (`broadcast_dims`), as a MatMul's (`product_dims`). None
    where an operand's are not noted, or for an equation or ranks ONNX Runtime refuses."""
    if (parsed := einsum_terms(equation)) is None or len(parsed[0]) != len(shapes):
        return None
    sizes: dict[Label, list[Dims]] = {}
    for term, shape in zip(parsed[0], shapes, strict=True):
        if shape is None or (labels := axis_labels(term, len(shape))) is None:
            return None
        for label, size in zip(labels, shape, strict=True):
            sizes.setdefault(label, []).append([size])
    spanned = max((-label for label in sizes if isinstance(label, int)), default=0)
    return [broadcast_dims(sizes[label])[0] for label in output_labels(parsed[1], spanned)]


def weight_factor(weight: list[int], weight_first: bool, transposed: bool) -> float:
    """How many times as many values a MatMul or Gemm of a value made from the image by a weight of the shape
    `weight` makes (the weight `weight_first`, or second; `transposed` by Gemm's flag): as the Einsum it is
    (`einsum_factor`), the weight's sizes it makes over the one it takes (a [64, 256] weight after a [N, H, W, 64] map
    makes 4 times as many; [N, 3, H, W] times a [W, W'] one, W' / W), times the weight's batch sizes."""
    if len(weight) < 2:  # a vector: an axis taken off
        return 1.0
    weight_term = ("...km" if transposed else "...mk") if weight_first else ("...nk" if transposed else "...kn")
    image_term = "...kn" if weight_first else "...mk"  # A: [M, K] by B: [K, N]
    terms, shapes = [weight_term, image_term], [weight, None]
    if not weight_first:
        terms, shapes = terms[::-1], shapes[::-1]
    factor = einsum_factor(f"{terms[0]},{terms[1]}->...mn", shapes, 1 if weight_first else 0)
    return 1.0 if factor is None else factor


def einsum_factor(equation: str, shapes: Sequence[Sequence[int | None] | None], image: int) -> float | None:
    """How many times as many values an Einsum of `equation` makes as its operand `image` (made from the image, of the
    sizes `shapes[image]`, None where not noted) holds, its others weights of the shapes `shapes` (`math.inf` where
    one is None: not fixed by the file). A weight's size on a letter the output has and the image's operand not is
    made (o in `bchw,oc->bohw`, a 1x1 convolution's features); on one the image's has and the output not, taken
    (c); on one both have, made where larger than the image's there (broadcast), or where that is not fixed (a
    MatMul's batch axes). The image's own axes summed (not in the output) take nothing back. None for an equation
    ONNX Runtime refuses."""
    if (parsed := einsum_terms(equation)) is None:
        return None
    operands, output = parsed
    if len(operands) != len(shapes) or not 0 <= image < len(shapes):
        return None
    if any(shape is None for index, shape in enumerate(shapes) if index != image):
        return math.inf
    sizes = [_einsum_sizes(term, shape) for term, shape in zip(operands, shapes, strict=True)]
    unnoted = shapes[image] is None  # the image's sizes: its letters', its ellipsis's axes any
    sizes[image] = dict.fromkeys(operands[image].replace("...", "")) if unnoted else sizes[image]
    if any(each is None for each in sizes):
        return None
    image_sizes, broadcast_axes = sizes[image] or {}, unnoted and "..." in operands[image]
    made: dict[Label, int] = {}  # each letter's (or ellipsis's axis's) size in the weights, the largest
    for weight in (each for index, each in enumerate(sizes) if index != image and each is not None):
        for label, size in weight.items():
            made[label] = max(made.get(label, 1), size or 1)
    factor = 1.0
    for label, size in made.items():
        kept = label in output if isinstance(label, str) else "..." in output
        if label not in image_sizes and not (broadcast_axes and isinstance(label, int)):
            factor *= size if kept else 1  # a weight's own axis, made or summed
        elif (theirs := image_sizes.get(label)) is None:
            factor = factor * size if kept else factor / size
        else:
            factor = factor * max(size / max(theirs, 1), 1.0) if kept else factor / min(size, max(theirs, 1))
    return factor


def _einsum_sizes(term: str, shape: Sequence[int | None] | None) -> dict[Label, int | None] | None:
    """The sizes of the axes of an Einsum's operand of `shape` by its letters in `term`, and its ellipsis's axes by
    their place from the last (-1, -2...); None for `shape` None (not noted), or one of a rank other than `term`'s
    (refused by ONNX Runtime)."""
    if shape is None:
        return None
    if (labels := axis_labels(term, len(shape))) is None:
        return None
    return dict(zip(labels, shape, strict=True))


def pairwise_values(
    first: Dims | None,
    second: Dims | None,
    transposed: tuple[bool, bool],
    made: tuple[float, float],
    axes: Sequence[Mapping[int, ImageAxis]] = ({}, {}),
) -> float:
    """How many values per pixel of the image a MatMul (or Gemm) of two values made from the image makes, of sizes
    `first` and `second`, each making `made` values per pixel, where the sizes the file fixes bound it; `math.inf`
    where they do not. `axes`: those of each (from the last) that are the image's batch, height or width
    (`onnx_image_axes.ImageAxes`).

    Of [..., M, K] by [..., K, N], the output holds N / K times the first's values and M / K times the second's
    (K counted as 1 where not fixed), times what broadcasting their batch axes adds to each: either bound holds,
    and the lesser is returned. A batch axis whose size neither fixes (the windows of a tile, in Q and in K^T
    alike) is the larger input's there, so that one of the two bounds holds, not known which: the greater is
    returned; with two such axes, each could be broadcast by the other's (a [P, 1] by a [1, P]: P^2), and
    nothing is bounded. One both name the same axis of the image (its batch, in channel attention's Q and K^T) is
    as large in both, and broadcasts neither.

    An output whose every size the file fixes but the image's batch (channel attention's [N, heads, C, C], its
    pixels summed) holds as many values per image on any tile: as many per pixel of the least tile srfeat cuts
    (`LEAST_TILE_PIXELS`) at most, where the bounds above count its pixels summed as one."""
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
    shared_unknown, per_image = 0, [rows, columns]
    for axis, (size, other) in enumerate(zip(first_batch, second_batch, strict=True), start=-rank - 2):
        if (label := axes[0].get(axis)) is not None and label == axes[1].get(axis):
            per_image.append(label[1] if label[0] == "N" else None)
            continue
        per_image.append(broadcast_dims([[size], [other]])[0])
        if size is None and other is None:
            shared_unknown += 1
            continue
        by_first, by_second = _broadcast_factors(size, other)
        first_factor, second_factor = first_factor * by_first, second_factor * by_second
    bounds = (made[0] * first_factor, made[1] * second_factor)
    bound = math.inf if shared_unknown > 1 else max(bounds) if shared_unknown else min(bounds)
    if None in per_image:
        return bound
    return min(bound, math.prod(size or 0 for size in per_image) / LEAST_TILE_PIXELS)


def einsum_pairwise_values(
    equation: str,
    shapes: Sequence[Dims | None],
    made: tuple[float, float],
    axes: Sequence[Mapping[int, ImageAxis]] = ({}, {}),
) -> float:
    """As `pairwise_values`, for an Einsum of two values made from the image (attention as `bhqd,bhkd->bhqk`): its
    equation read as a MatMul's, the letters both operands and the output have its batch axes (the image's where
    both operands' `axes` say so), those of one operand and the output its rows (the first's) or columns (the
    second's), those of both and not the output what it sums over. A letter one operand alone sums over takes
    nothing back here; `math.inf` where sizes are not noted, or for an equation not so read (three operands, a
    letter twice in one)."""
    parsed = einsum_terms(equation)
    if parsed is None or len(parsed[0]) != 2 or len(shapes) != 2 or shapes[0] is None or shapes[1] is None:
        return math.inf
    (first_term, second_term), output = parsed
    first_shape, second_shape = shapes[0], shapes[1]
    first_labels, second_labels = axis_labels(first_term, len(first_shape)), axis_labels(second_term, len(second_shape))
    if first_labels is None or second_labels is None:
        return math.inf
    if len(set(first_labels)) != len(first_labels) or len(set(second_labels)) != len(second_labels):
        return math.inf
    first = dict(zip(first_labels, first_shape, strict=True))
    second = dict(zip(second_labels, second_shape, strict=True))
    kept = set(output_labels(output, max(len(first_shape), len(second_shape))))

    def joined(sizes: list[int | None]) -> int | None:  # several axes as one: a MatMul's rows of a window's pixels
        return None if None in sizes else math.prod(size or 0 for size in sizes)

    batch = [label for label in first if label in second and label in kept]
    summed = [label for label in first if label in second and label not in kept]
    rows = joined([size for label, size in first.items() if label not in second and label in kept])
    columns = joined([size for label, size in second.items() if label not in first and label in kept])
    # the image's axes among the batch axes, where the MatMul read puts them
    image = [
        {
            at - len(batch) - 2: found
            for at, label in enumerate(batch)
            if (found := own.get(labels.index(label) - len(labels)))
        }
        for own, labels in zip(axes, (first_labels, second_labels), strict=False)
    ]
    return pairwise_values(
        [*(first[label] for label in batch), rows, joined([first[label] for label in summed])],
        [*(second[label] for label in batch), joined([second[label] for label in summed]), columns],
        (False, False),
        made,
        image,
    )


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
