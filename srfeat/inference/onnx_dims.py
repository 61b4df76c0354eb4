"""The sizes of the axes of what a Split, a Concat, a Squeeze or an Unsqueeze makes, from the sizes the file fixes
of its input's (`Dims`), for `onnx_growth` to follow them through Q, K and V split off one map and joined again."""

from __future__ import annotations

from srfeat.inference.onnx_shapes import Dims

__all__ = ["concat_dims", "slice_dims", "split_dims", "squeezed_dims"]


def split_dims(dims: Dims, axis: int, sizes: list[int] | None, count: int) -> list[Dims | None]:
    """The sizes of each of `count` outputs of a Split of a value of sizes `dims` along `axis`: `sizes` there where
    given (one a part), else the axis's size over `count` where the file fixes it and they divide it; the other
    axes' as they are. None for a part where `axis` is not one of them (refused by ONNX Runtime)."""
    if not -len(dims) <= axis < len(dims):
        return [None] * count
    axis %= len(dims)
    if sizes is not None and len(sizes) == count:
        parts: list[int | None] = list(sizes)
    else:
        size = dims[axis]
        parts = [size // count if size is not None and count and size % count == 0 else None] * count
    return [[*dims[:axis], part, *dims[axis + 1 :]] for part in parts]


def concat_dims(shapes: list[Dims | None], axis: int) -> Dims | None:
    """The sizes of a Concat of values of sizes `shapes` (None where not noted) along `axis`: the sum of theirs
    there where all are fixed; on another axis, one's that is fixed (ONNX Runtime refuses ones that disagree)."""
    known = [shape for shape in shapes if shape is not None]
    if not known or len({len(shape) for shape in known}) != 1 or not -len(known[0]) <= axis < len(known[0]):
        return None
    axis %= len(known[0])
    along = [shape[axis] for shape in shapes if shape is not None]
    total = sum(each for each in along if each is not None) if len(along) == len(shapes) and None not in along else None
    others = [next((size for size in sizes if size is not None), None) for sizes in zip(*known, strict=True)]
    return [total if index == axis else size for index, size in enumerate(others)]


def squeezed_dims(dims: Dims, axes: list[int], unsqueezed: bool) -> Dims | None:
    """The sizes of a Squeeze of a value of sizes `dims` (its `axes` taken off; with none listed, those fixed at 1,
    and None where one is not fixed) or an Unsqueeze (axes of 1 put in at `axes` of the output); None where an
    axis is out of range (refused by ONNX Runtime)."""
    rank = len(dims) + len(axes) if unsqueezed else len(dims)
    if not all(-rank <= axis < rank for axis in axes):
        return None
    places = {axis % rank for axis in axes}
    if unsqueezed:
        sizes = iter(dims)
        return [1 if index in places else next(sizes, None) for index in range(rank)]
    if not axes and None in dims:
        return None
    return [size for index, size in enumerate(dims) if index not in places and (axes or size != 1)]


def slice_dims(dims: Dims, bounds: list[list[int] | None]) -> Dims | None:
    """The sizes of a Slice of a value of sizes `dims` by its `starts`, `ends`, `axes` and `steps` (`bounds`; the
    last two None where not given: the first axes, steps of 1), as numpy slices (as ONNX's); an axis whose size the
    file does not fix stays not fixed. None where starts or ends are not known, or ONNX Runtime refuses them
    (lengths that disagree, an axis out of range or listed twice, a step of 0)."""
    starts, ends, axes, steps = [*bounds, None, None, None, None][:4]
    if starts is None or ends is None:
        return None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        return None
    if not all(-len(dims) <= axis < len(dims) for axis in axes) or len({axis % len(dims) for axis in axes}) < len(axes):
        return None
    result = list(dims)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        size = dims[axis]
        result[axis] = None if size is None else len(range(size)[start:end:step])
    return result
