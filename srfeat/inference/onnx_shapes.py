"""Shapes an .onnx graph computes from the image's (`ShapeVectors`), followed entry by entry, for `onnx_growth`
to tell how much a Resize to them or an Expand to them enlarges the image, and what sizes a Reshape to them fixes
(a -1 among the image's height and width: window_reverse's)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_image_axes import ImageAxes, ImageAxis, whole_multiple
from srfeat.inference.onnx_shape_types import LEAST_TILE_PIXELS, MAX_DIMS, ConstantValues, Dims, Entry

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_DIMS", "ConstantValues", "Dims", "Entry", "ImageAxis", "ShapeVectors"]

# Operators that pass a shape's entries on as they are (Gather and Slice pick some: `ShapeVectors.follow`)
_KEEPS_ENTRIES = frozenset({"Identity", "Cast", "Floor", "Ceil", "Round", "Squeeze", "Unsqueeze", "Reshape"})
# Labels of a shape's entries none of which is the image's height or width (`ShapeVectors._labels`)
_UNLABELLED: list[str | None] = [None] * MAX_DIMS


class ShapeVectors:
    """Shapes the graph computes from the image's: Shape, then Gather or Slice of its entries, Cast, times or
    plus a constant (a constant's integer division, Cast, Floor, Ceil and Round as ONNX Runtime computes them),
    Concat with constants, Where by an Equal of them (PyTorch's `x.expand(...)`). Each entry is
    followed as a factor times the size of an axis plus a constant: a Resize to sizes [N, C, 4 H, 4 W] so made
    enlarges the image 16 times, as one by scales [1, 1, 4, 4] does. What else a graph computes of a shape (two
    shapes multiplied, a shape's size in a division) is not followed, and counts nothing."""

    def __init__(self, constants: ConstantValues, dims: Mapping[str, Dims], elementwise: frozenset[str]) -> None:
        self._constants = constants
        self._dims = dims
        self._vectors: dict[str, list[Entry]] = {}
        # Which entries of a shape followed here are the image's height or width ("H", "W") times their factor plus
        # their constant; and shapes of several entries, some of them not followed (None: the height times the width)
        self._labels: dict[str, list[str | None]] = {}
        self._loose: dict[str, list[Entry | None]] = {}
        # Which axes of values made from the image are its height or width times a whole number
        self._image_axes = ImageAxes(constants, dims, elementwise)
        # Which entries of two shapes are equal (an Equal of them), where each is known: a Where chooses by them
        self._equal: dict[str, list[bool]] = {}

    def entries(self, name: str) -> list[Entry] | None:
        """The entries of the shape `name`: a constant's (of integers), or one followed here; else None."""
        if (values := self._constants.values(name)) is not None:
            if values.dtype.kind not in "iuf" or values.size > MAX_DIMS:  # ONNX Runtime refuses a float shape
                return None
            return [(0.0, float(each)) for each in values.ravel().tolist()]
        return self._vectors.get(name)

    def image_axes(self, name: str) -> dict[int, ImageAxis]:
        """The axes (from the last) of the value `name` that are the image's height, width or batch times a whole
        number (`ImageAxes`)."""
        return self._image_axes.get(name, {})

    def loose_entries(self, name: str) -> list[Entry | None] | None:
        """The entries of the shape `name` (`entries`), or of a Concat of followed ones and single ones not followed
        (`_loose`: None there); else None."""
        followed: list[Entry | None] = list(self.entries(name) or [])
        return followed or self._loose.get(name)

    def follow(self, node: onnx.NodeProto, rolled: str | None = None) -> None:
        """Note the entries of `node`'s output, where it computes a shape from the image's as above; and which of its
        axes are the image's height or width. `rolled`: the value a Concat joins slices of again, whole (torch.roll's,
        `onnx_slices.JoinedSlices`)."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if not inputs or not node.output or not node.output[0]:
            return
        op, entries, result = node.op_type, self._vectors.get(inputs[0]), None
        labels: list[str | None] = [None] * MAX_DIMS if entries is None else self._labels_of(inputs[0])
        sized = inputs[3] if op in ("Resize", "Upsample") and len(inputs) > 3 and inputs[3] else ""
        self._image_axes.note(node, rolled, self.entries(sized) if sized else None, self._labels_of(sized))
        if op == "Shape" and entries is not None and not options:  # of a shape followed here: its length
            result, labels = [(0.0, float(len(entries)))], _UNLABELLED
        elif op == "Shape" and (dims := self._dims.get(inputs[0])) is not None:  # its rank is known
            start, end = (
                options[key].i if key in options else default for key, default in (("start", 0), ("end", len(dims)))
            )
            # a size the file fixes is a constant: an Expand to a map's shape of 200 features counts them; the
            # height of a map a x4 Resize made is 4 times the image's
            image = [self._image_axes.get(inputs[0], {}).get(axis - len(dims)) for axis in range(len(dims))]
            result = [
                (float(axis[1]) if axis else 1.0, 0.0) if size is None else (0.0, float(size))
                for size, axis in zip(dims, image, strict=True)
            ][start:end]
            labels = [axis[0] if axis else None for axis in image][start:end]
        elif op == "Concat":
            parts = [self.entries(name) for name in inputs]
            self._note_loose(node, parts)
            if any(part is None for part in parts) or not any(name in self._vectors for name in inputs):
                return
            result = [each for part in parts if part for each in part]
            labels = [label for name in inputs for label in self._labels_of(name)]
        elif op in ("Mul", "Add", "Div", "Sub") and len(inputs) == 2:
            result = self._arithmetic(op, inputs)  # a label stays with its entry: (H + 2) / 4 is still of H
            labels = self._labels_of(
                inputs[1] if op in ("Mul", "Add") and inputs[0] not in self._vectors else inputs[0]
            )
        elif op == "ConstantOfShape" and (filled := self._filled(node)) is not None:
            result, labels = filled, _UNLABELLED
        elif op == "Equal" and len(inputs) == 2:  # not a shape: which entries of two are equal
            self._note_equal(node)
        elif op == "Where" and len(inputs) == 3 and (chosen := self._chosen(inputs)) is not None:
            result, labels = chosen
        elif entries is None:
            return
        elif op in _KEEPS_ENTRIES:
            result = _rounded(op, options, entries)
        elif op in ("Gather", "Slice") and (given := self.integers(inputs[1:], 4)) is not None:
            if op == "Gather" and all(-len(entries) <= index < len(entries) for index in given[0]):
                result, labels = [entries[index] for index in given[0]], [labels[index] for index in given[0]]
            elif op == "Slice" and len(given) >= 2 and all(len(each) == 1 for each in given[:2]):
                axes = given[2] if len(given) > 2 else []
                steps = given[3] if len(given) > 3 and given[3] else [1]
                if axes in ([], [0], [-1]) and len(steps) == 1 and steps[0]:
                    result = entries[given[0][0] : given[1][0] : steps[0]]
                    labels = labels[given[0][0] : given[1][0] : steps[0]]
        if result is not None:
            self._vectors[node.output[0]] = result[:MAX_DIMS]
            self._labels[node.output[0]] = labels[: len(result[:MAX_DIMS])]

    def _filled(self, node: onnx.NodeProto) -> list[Entry] | None:
        """A ConstantOfShape's entries, where it makes a vector of a length followed here: PyTorch's legacy exporter
        writes `x.expand(...)`'s target of sizes computed from shapes as Where(Equal(shape, ones * -1), ones, shape),
        `ones` a ConstantOfShape of the shape's shape."""
        sized = self.entries(node.input[0])
        if sized is None or len(sized) != 1 or sized[0][0] != 0 or not 0 <= sized[0][1] <= MAX_DIMS:
            return None
        value = next((each.t for each in node.attribute if each.name == "value"), None)
        if value is not None and (len(value.dims) > 1 or any(each != 1 for each in value.dims)):
            return None  # one value, or refused by ONNX Runtime
        from onnx import numpy_helper

        try:  # 0.0 where it gives none (ONNX's default)
            filled = np.zeros(1) if value is None else numpy_helper.to_array(value)
        except (ValueError, TypeError):  # its data does not fill it: ONNX Runtime refuses it
            return None
        if filled.size != 1 or filled.dtype.kind not in "iuf":
            return None
        return [(0.0, float(filled.ravel()[0]))] * int(sized[0][1])

    def _stretched(self, names: list[str]) -> list[list[Entry]] | None:
        """The entries of the shapes `names` (one at least followed here), one-entry ones broadcast to the others'
        length; None where one is not known, or lengths disagree (refused by ONNX Runtime)."""
        sides = [self.entries(name) for name in names]
        if any(side is None for side in sides) or not any(name in self._vectors for name in names):
            return None
        length = max(len(side or []) for side in sides)
        if any(len(side or []) not in (1, length) for side in sides):
            return None
        return [side * length if len(side) == 1 else side for side in sides if side is not None]

    def _note_equal(self, node: onnx.NodeProto) -> None:
        """Note which entries of an Equal of two shapes are equal, where each is known (`_entries_equal`)."""
        if (sides := self._stretched(list(node.input))) is not None:
            found = [_entries_equal(first, second) for first, second in zip(*sides, strict=True)]
            if None not in found:
                self._equal[node.output[0]] = [bool(each) for each in found]

    def _chosen(self, inputs: list[str]) -> tuple[list[Entry], list[str | None]] | None:
        """A Where's entries and their labels, where its condition is known entry by entry (a constant, or an Equal
        `_note_equal` noted) and it chooses between shapes (`_stretched`): a -1 of `x.expand(-1, 64, -1, -1)` made
        the size it keeps (`_filled`)."""
        condition = self._constants.values(inputs[0])
        if condition is not None and condition.size <= MAX_DIMS:
            mask: list[bool] | None = [bool(each) for each in condition.ravel().tolist()]
        else:
            mask = None if condition is not None else self._equal.get(inputs[0])
        sides = self._stretched(inputs[1:])
        if mask is None or sides is None or len(mask) not in (1, len(sides[0])):
            return None
        mask = mask * len(sides[0]) if len(mask) == 1 else mask
        labels = [self._labels_of(name) or [None] for name in inputs[1:]]
        labels = [each * len(mask) if len(each) == 1 else each for each in labels]
        chosen = [0 if each else 1 for each in mask]
        return [sides[side][at] for at, side in enumerate(chosen)], [labels[side][at] for at, side in enumerate(chosen)]

    def _labels_of(self, name: str) -> list[str | None]:
        """The labels of the entries of the shape `name` (`_labels`), one an entry."""
        length = len(self.entries(name) or [])
        return [*(self._labels.get(name) or [])[:length], *[None] * length][:length]

    def _note_loose(self, node: onnx.NodeProto, parts: list[list[Entry] | None]) -> None:
        """Note a Concat of shapes, one or more of them single entries not followed (`_loose`: the height times the
        width), and the labels of those followed (the image's batch beside it: channel attention's [N, heads, C, H W]).
        """
        loose: list[Entry | None] = []
        labels: list[str | None] = []
        for name, part in zip(node.input, parts, strict=True):
            if part is None and self._dims.get(name) not in ([1], []):
                return
            loose.extend([None] if part is None else part)
            labels.extend([None] if part is None else self._labels_of(name))
        self._loose[node.output[0]], self._labels[node.output[0]] = loose[:MAX_DIMS], labels[:MAX_DIMS]

    def reshaped(self, node: onnx.NodeProto, known: Dims | None, per_pixel: float) -> Dims | None:
        """The sizes of a Reshape's output where its shape is followed (constants, entries of the image's shape,
        `_loose` ones), and its -1 where the others are the image's height and width once each (times constants), its
        batch or not, and constants: `per_pixel` (its input's values per pixel of the image) over their constants,
        window_reverse's `view(B, H, W, -1)` (else its features are lost, and the attention after it is not bounded);
        a lone -1 of sizes `known` all fixed, their product (the dynamo exporter's `(h * w).reshape(-1)`, one entry
        of a `_loose` shape). The axes so given the image's height or width (times whole numbers) are noted as such."""
        inputs, dims = list(node.input), known or []
        shape = inputs[1] if len(inputs) > 1 else ""
        entries = self.loose_entries(shape)
        if entries is None:
            return None
        if entries == [(0.0, -1.0)] and known is not None and None not in known:
            return [math.prod(size or 0 for size in known)]
        labels = self._labels_of(shape) if self.entries(shape) else self._labels.get(shape, [None] * len(entries))
        result: Dims = []
        for axis, entry in enumerate(entries[:MAX_DIMS]):
            factor, size = entry or (math.nan, math.nan)
            if factor == 0 and size > 0 and size == int(size):
                result.append(int(size))
            else:  # 0 copies the input's size there
                result.append(dims[axis] if factor == size == 0 and axis < len(dims) else None)
        image = {  # the image's height, or 4 times it (of a map a x4 Resize made)
            axis - len(result): (label, int(entry[0]))
            for axis, (label, entry) in enumerate(zip(labels, entries, strict=True))
            if label and entry is not None and whole_multiple(entry)
        }
        self._image_axes[node.output[0]] = image
        rest = [(each, label) for each, label in zip(entries, labels, strict=True) if each != (0.0, -1.0)]
        named = sorted(label or "" for each, label in rest if each and each[0])
        if len(rest) + 1 != len(entries) or named not in (["H", "W"], ["H", "N", "W"]):
            return result
        if any(each is None or (each[0] != 0 and each[1] != 0) or (each[0] == 0 and each[1] <= 0) for each, _ in rest):
            return result
        # H / 4 is floored: where the height is not a multiple of 4, the -1 is up to twice this on each such axis
        constant = math.prod(factor or plus for factor, plus in (each for each, _ in rest if each))
        if math.isfinite(whole := per_pixel / constant) and whole == int(whole) and 1 <= whole < 2**40:
            result[entries.index((0.0, -1.0))] = int(whole)
        return result

    def expanded(self, source: str, target: str) -> np.ndarray | None:
        """How many times over an Expand of the image value `source` to the shape `target` enlarges it, on
        each axis. An Expand adds nothing where `source` has the target's size already (a [1, 64, 1, 1] on a
        map of 64 features, which a deep network broadcasts at every layer), so it counts the target's size
        over the size the file fixes of `source` there (a convolution's features, the input's 3), and the
        whole of it where no size is fixed: then a grey map expanded to 200 features after a x16 Resize counts
        3,200 times, as it takes, and not 200 alone. Not the height and width given as constants: a model
        made for one size may expand a map to the size it has. A size computed from a shape counts its
        factor (`follow`), over `source`'s own there (`relative_entries`): a map a x4 Resize made, expanded to 4
        times the image's height, is not enlarged again. An entry of the image's height or width on an axis where
        `source` has 1 adds a new axis of it (`[H, W]` to `[H, W, H, H]`): values that grow with the tile's side, where
        the tile plan counts the same memory for each pixel of any tile; so such axes, one or more, count as
        `crossed_growth` counts a size that may be all a tile's pixels, the least tile's (`LEAST_TILE_PIXELS`), times
        their factors: more than `onnx_growth.MAX_GROWTH`. A new axis counted as the least tile's side (32) loaded,
        and made 512 times the image on a 512-pixel tile."""
        if (entries := self.relative_entries(source, target)) is None:
            return None
        labels, image = self._labels_of(target), self._image_axes.get(source, {})
        known = self._dims.get(source)
        rank = max(len(entries), 0 if known is None else len(known))
        sizes: Dims = [None] * rank if known is None else [1] * (rank - len(known)) + known
        labels = [None] * (rank - len(entries)) + labels
        entries = [(0.0, 1.0)] * (rank - len(entries)) + entries
        factors, new_axes = [], False
        for axis, ((factor, constant), size) in enumerate(zip(entries, sizes, strict=True)):
            if factor > 0 and size == 1 and labels[axis] in ("H", "W") and (axis - rank) not in image:
                factors.append(factor * (1 if new_axes else LEAST_TILE_PIXELS))
                new_axes = True
            elif factor > 0:
                factors.append(max(factor, 1.0))
            elif axis < rank - 2:
                factors.append(max(constant / size, 1.0) if size else max(constant, 1.0))
            else:
                factors.append(1.0)
        return np.asarray(factors, dtype=np.float64)

    def relative_entries(self, source: str, target: str, node: onnx.NodeProto | None = None) -> list[Entry] | None:
        """The entries of the shape `target` (`entries`), those of the image's height or width with their factor over
        the axis of `source` they fall on (from the last), where it is the same one's times a whole number
        (`_image_axes`): 4 H is once the height of a map a x4 Resize made, and 8 H twice. Elsewhere, and where
        `node` lists its axes (Resize-18: the entries are those axes'), the factor is the image's."""
        if (matched := self._matched(source, target, node)) is None:
            return None
        return [(factor / (own or 1), constant) for (factor, constant), own in matched]

    def resolved(self, source: str, target: str, node: onnx.NodeProto | None = None) -> bool:
        """Whether each entry of `target` that is a size times a factor is of the image's height or width, over the
        same one of `source` (`relative_entries`): then the entries tell all the growth from `source`, and whatever
        the map `target` was taken the shape of had grown adds nothing to it."""
        matched = self._matched(source, target, node)
        return matched is not None and all(own is not None or factor == 0 for (factor, _), own in matched)

    def _matched(self, source: str, target: str, node: onnx.NodeProto | None) -> list[tuple[Entry, int | None]] | None:
        """Each entry of `target`, and the whole number of times the image's height or width `source`'s axis it falls
        on is (from the last), where the entry is of the same one; None beside the others (`relative_entries`)."""
        if (entries := self.entries(target)) is None:
            return None
        if node is not None and any(each.name == "axes" for each in node.attribute):
            return [(entry, None) for entry in entries]
        image, labels = self._image_axes.get(source, {}), self._labels_of(target)
        matched: list[tuple[Entry, int | None]] = []
        for axis, (entry, label) in enumerate(zip(entries, labels, strict=True)):
            own = image.get(axis - len(entries))
            matched.append((entry, own[1] if own and label == own[0] and entry[0] > 0 else None))
        return matched

    def resized(self, source: str, sizes: str, node: onnx.NodeProto) -> np.ndarray | None:
        """The factors by which a Resize of `source` to `sizes` enlarges it, where those are its shape times
        constants (`follow`); a constant size of the batch or features over the size `source` has
        there, where the file fixes it, else counted whole. A constant height or width is left: the image's
        is not known before it runs (sizes that are all constants are counted as values made from
        constants, `onnx_constants.FileConstants.output_values`). Where it keeps the aspect ratio `not_smaller`
        (Resize-18), every axis it resizes takes the largest of them, a constant's (over 1, the least a size is) too:
        sizes [N, 3, 64 H, 1] so enlarge the batch, the features and the width 64 times as well."""
        if (entries := self.relative_entries(source, sizes, node)) is None:
            return None
        known = self._dims.get(source) or []
        along_axes = any(each.name == "axes" for each in node.attribute)  # Resize-18: sizes of those axes only
        largest = any(each.name == "keep_aspect_ratio_policy" and each.s == b"not_smaller" for each in node.attribute)
        factors = []
        for axis, (factor, constant) in enumerate(entries):
            if factor > 0:
                factors.append(factor)
            elif (axis < len(entries) - 2 or largest) and not along_axes:
                size = known[axis] if axis < len(known) else None
                factors.append(constant / size if size else constant)
            elif largest:
                factors.append(constant)
        return np.asarray([max(factors, default=1.0)] * len(entries) if largest else factors)

    def resize_constants(self, node: onnx.NodeProto, base: int, axes: dict[int, int]) -> tuple[int, dict[int, int]]:
        """What a Resize to sizes computed from the image's adds to each of its last two axes beyond its scales
        (`onnx_growth.GraphGrowth.padded`'s `base` and `axes`): its sizes' positive constants, as a Pad of as many
        (H + 2,000 is 2,000 values more, whatever the tile), a constant size as one too. Where it lists its axes
        (Resize-18), the most of them on every axis."""
        inputs = list(node.input)
        scales = self._constants.values(inputs[2]) if len(inputs) > 2 and inputs[2] else None
        if (scales is not None and scales.size) or len(inputs) < 4 or not (sized := self.entries(inputs[3])):
            return base, axes
        added = [int(min(math.ceil(constant), 2**40)) if constant > 0 else 0 for _, constant in sized]
        if any(each.name == "axes" for each in node.attribute):
            return base + max(added), axes
        axes = dict(axes)
        for axis in range(max(len(added) - 2, 0), len(added)):
            axes[axis - len(added)] = axes.get(axis - len(added), 0) + added[axis]
        return base, axes

    def _arithmetic(self, op: str, inputs: list[str]) -> list[Entry] | None:
        """A followed shape times, over, plus or minus a constant (of one value or one an entry)."""
        swapped = op in ("Mul", "Add") and inputs[0] not in self._vectors
        vector, other = reversed(inputs) if swapped else inputs
        if (entries := self._vectors.get(vector)) is None:
            return None  # nor are the constant's values read: a weight, at most Mul and Add nodes
        constant = self._constants.values(other)
        if constant is None or constant.dtype.kind not in "iuf" or constant.size not in (1, len(entries)):
            return None
        numbers = np.broadcast_to(constant.ravel().astype(np.float64), (len(entries),)).tolist()
        if op == "Div" and 0 in numbers:
            return None
        if op in ("Mul", "Div"):
            scale = numbers if op == "Mul" else [1 / each for each in numbers]
            # integers' (a shape's) division truncates: a constant alone so, exactly (a size times a factor is not)
            whole = op == "Div" and constant.dtype.kind in "iu"
            return [
                (factor * by, float(math.trunc(plus / divisor)) if whole and not factor else plus * by)
                for (factor, plus), by, divisor in zip(entries, scale, numbers, strict=True)
            ]
        sign = 1 if op == "Add" else -1
        return [(factor, plus + sign * by) for (factor, plus), by in zip(entries, numbers, strict=True)]

    def whole_numbers(self, name: str) -> list[int] | None:
        """The integers of the shape `name`, where each is known: a constant's, or entries followed here that are
        whole constants (a Slice's end computed from a size the file fixes: `chunk` in PyTorch's legacy exporter)."""
        values = self._constants.values(name)
        if values is not None:
            return (
                [int(each) for each in values.ravel().tolist()]
                if values.dtype.kind in "iu" and values.size <= MAX_DIMS
                else None
            )
        entries = self._vectors.get(name)
        if entries is None or any(factor != 0 or not plus.is_integer() for factor, plus in entries):
            return None
        return [int(plus) for _, plus in entries]

    def integers(self, names: list[str], count: int, defaults: list[int] | None = None) -> list[list[int]] | None:
        """The constant integers of `names` (at most `count`, each flattened; for a name left out, none, or
        its entry of `defaults`), or None if one is not such."""
        given = []
        for index, name in enumerate(names[:count]):
            default = [] if defaults is None else defaults[index : index + 1]
            values = self._constants.values(name) if name else np.asarray(default, np.int64)
            if values is None or values.dtype.kind not in "iu":
                return None
            given.append([int(each) for each in values.ravel()[:MAX_DIMS].tolist()])
        return given


def _entries_equal(first: Entry, second: Entry) -> bool | None:
    """Whether two entries of shapes are equal: known where both are constants, or where one is a size times a
    positive factor plus a constant and the other a constant less than that (a size is never negative: never -1)."""
    if first[0] == second[0] == 0:
        return first[1] == second[1]
    sized, constant = (first, second) if second[0] == 0 else (second, first)
    return False if constant[0] == 0 and sized[0] > 0 and constant[1] < sized[1] else None


# ONNX's integer types (uint8 to int64, uint32, uint64): a Cast to one truncates
_INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})


def _rounded(op: str, options: Mapping[str, onnx.AttributeProto], entries: list[Entry]) -> list[Entry]:
    """The entries of what `op` (one of `_KEEPS_ENTRIES`) makes of `entries`: their constants floored, ceiled or rounded
    as it does (a Cast to an integer type truncates them), so that a constant alone stays what ONNX Runtime computes;
    a size times a factor kept as it is (up to twice a floored one, on tiny images)."""
    integer = op == "Cast" and "to" in options and options["to"].i in _INTEGER_TYPES
    rounding = {"Floor": math.floor, "Ceil": math.ceil, "Round": round}.get(op, math.trunc if integer else None)
    if rounding is None:
        return entries
    return [(factor, plus if factor or not math.isfinite(plus) else float(rounding(plus))) for factor, plus in entries]
