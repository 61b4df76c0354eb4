"""Which axes of the values an .onnx graph makes from the image are the image's height or width times a whole number
(`ImageAxes`), for `onnx_shapes` to tell a size computed from a map's shape from one of the image's: 4 H is once the
height of a map a x4 Resize made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from srfeat.inference.onnx_einsum import Label, axis_labels, einsum_equation, einsum_terms, output_labels
from srfeat.inference.onnx_node_axes import NodeAxes
from srfeat.inference.onnx_shape_types import MAX_DIMS, ConstantValues, Dims, Entry

if TYPE_CHECKING:
    import onnx

__all__ = ["MIXED", "ImageAxes", "ImageAxis", "size_changes", "whole_multiple"]

# An axis of a value made from the image whose size is the image's height or width ("H", "W"; "N" its batch) times
# a whole number: 4 after a x4 Resize (`ImageAxes.note`); `MIXED` where the values an operator
# takes disagree on it
ImageAxis = tuple[str, int]
MIXED: ImageAxis = ("?", 0)


class ImageAxes:
    """The axes (from the last) of values made from the image whose size is the image's height or width times a whole
    number (`ImageAxis`): of the image (the one input of 4 axes), then where an operator keeps them or enlarges them
    by whole numbers (`note`)."""

    def __init__(self, constants: ConstantValues, dims: Mapping[str, Dims], elementwise: frozenset[str]) -> None:
        self._constants = constants
        self._elementwise = elementwise  # operators on each value (`note`): onnx_growth's lists
        self._node_axes = NodeAxes(constants, dims)  # the axes a Squeeze lists, a Slice cuts
        self._dims = dims
        images = [name for name, sizes in dims.items() if len(sizes) == 4 and constants.shape(name) is None]
        whole = {-4: ("N", 1), -2: ("H", 1), -1: ("W", 1)}  # its batch too: a shape's entries all told
        self._axes: dict[str, dict[int, ImageAxis]] = {images[0]: whole} if len(images) == 1 else {}
        # The axes a constant Pad added to (its output's), and how many values: a convolution without pads of its own
        # (a reflect-padded one, PyTorch's `padding_mode`) takes them back, to the image's height or width again
        self._padded: dict[str, dict[int, tuple[ImageAxis, int]]] = {}

    def get(self, name: str, default: dict[int, ImageAxis]) -> dict[int, ImageAxis]:
        """The axes of `name` that are the image's height or width, else `default`."""
        return self._axes.get(name, default)

    def __setitem__(self, name: str, axes: dict[int, ImageAxis]) -> None:
        self._axes[name] = axes

    def note(
        self, node: onnx.NodeProto, rolled: str | None, sized: list[Entry] | None, labels: list[str | None]
    ) -> None:
        """Note which axes of `node`'s output are the image's height, width or batch, where it keeps them: an operator
        on each value (`SAME_SHAPE`), or one that broadcasts values (ONNX Runtime refuses a height beside another
        size but 1); a Transpose; a MatMul of its rows, or of two values made from the image of its rows, columns and
        the batch axes both name alike (`_product_axes`); a Gather, Split, Slice, Squeeze or Unsqueeze of the axes it
        does not take, cut or list (Q of [3, N, heads, H W, C]); an Einsum of its letters (`_einsum`); a convolution
        that keeps the height and width, or takes back what a constant Pad just before it added (reflect padding:
        `_note_pad`); torch.roll's Concat (`rolled`); a Reshape (`ShapeVectors.reshaped`); a Reduce of other axes.
        A Resize by whole scales, or to the image's height and width times whole numbers, multiplies them: `sized`,
        the entries of its sizes (`ShapeVectors.entries`), and their `labels`."""
        inputs, op, options = list(node.input), node.op_type, {each.name: each for each in node.attribute}
        axes = [self._axes.get(name, {}) for name in inputs]
        kept: dict[int, ImageAxis] = {}
        if op in self._elementwise:
            shapes = [self._dims.get(name) or self._constants.shape(name) for name in inputs if name]
            for axis, label in (pair for each in axes for pair in each.items()):
                kept[axis] = label if kept.get(axis, label) == label else MIXED
                # a height of 1 broadcast against 5 rows is 5: kept where no value beside it has another size
                if any(shape is None or (len(shape) >= -axis and (shape[axis] or 1) > 1) for shape in shapes):
                    kept[axis] = MIXED
        elif op == "Transpose" and (dims := self._dims.get(node.output[0])) is not None and "perm" in options:
            perm = list(options["perm"].ints)
            kept = {
                place - len(dims): axes[0][axis - len(dims)]
                for place, axis in enumerate(perm)
                if axis - len(dims) in axes[0]
            }
        elif op == "MatMul" and len(inputs) == 2 and len(self._constants.shape(inputs[1]) or []) == 2:
            kept = {axis: label for axis, label in axes[0].items() if axis != -1}
        elif op == "MatMul" and len(inputs) == 2:  # of two values made from the image: attention's
            kept = _product_axes(axes, [self._dims.get(name) for name in inputs])
        elif op == "Gather" and len(inputs) > 1 and (dims := self._dims.get(inputs[0])):
            kept = self._gathered(node, axes[0], len(dims))
        elif (
            op == "Split" and (dims := self._dims.get(inputs[0])) and -len(dims) <= (axis := _axis(options)) < len(dims)
        ):
            kept = {each: label for each, label in axes[0].items() if each != axis % len(dims) - len(dims)}
        elif op == "Slice" and (dims := self._dims.get(inputs[0])):  # those it does not cut (Q of [3, N, ...])
            uncut = self._node_axes.sliced_dims(node, [0] * len(dims))  # None on those it cuts
            kept = {each: label for each, label in axes[0].items() if -len(dims) <= each and uncut[each] is not None}
        elif op in ("Squeeze", "Unsqueeze") and (dims := self._dims.get(inputs[0])) is not None:
            kept = _squeezed_axes(axes[0], len(dims), self._node_axes.listed_axes(node) or [], op == "Unsqueeze")
        elif op == "Einsum":
            kept = self._einsum(node, axes)
        elif op == "Reshape":  # noted by `ShapeVectors.reshaped`, just before
            kept = self._axes.get(node.output[0], {})
        elif op == "Conv" and (changes := size_changes(options)) is not None:  # those it keeps, or a Pad's it undoes
            kept = {axis: label for axis, label in axes[0].items() if changes.get(axis, 0) == 0}
            padded = self._padded.get(inputs[0], {})
            kept |= {axis: label for axis, (label, added) in padded.items() if added + changes.get(axis, 1) == 0}
        elif op == "Pad":
            kept = self._note_pad(node, axes[0])
        elif op == "Concat" and rolled is not None:
            kept = self._axes.get(rolled, {})
        elif op.startswith("Reduce") and (dims := self._dims.get(node.output[0])) is not None:  # of the features
            kept = {axis: label for axis, label in axes[0].items() if -len(dims) <= axis and dims[axis] is None}
        elif op in ("Resize", "Upsample") and inputs:
            kept = self._resized(node, axes[0], sized, labels)
        kept = {axis: label for axis, label in kept.items() if label != MIXED}
        self._axes.update((name, kept) for name in (node.output if op == "Split" else node.output[:1]))

    def _gathered(self, node: onnx.NodeProto, axes: dict[int, ImageAxis], rank: int) -> dict[int, ImageAxis]:
        """The axes of a Gather's output (of a value of `rank` axes) that are the image's: its input's but the one it
        gathers on, those before it moved by the indices' axes put in its place (Q of [3, N, heads, H W, C])."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        indices = self._constants.shape(inputs[1])
        indices = self._dims.get(inputs[1]) if indices is None else indices
        axis = _axis(options)
        if indices is None or not -rank <= axis < rank:
            return {}
        gathered = axis % rank - rank
        return {
            each if each > gathered else each - len(indices) + 1: label
            for each, label in axes.items()
            if each != gathered
        }

    def _note_pad(self, node: onnx.NodeProto, axes: dict[int, ImageAxis]) -> dict[int, ImageAxis]:
        """The axes of a Pad's output that are the image's height or width (`axes`, its input's, where it pads none),
        and those it adds a constant number of values to (`_padded`); none where its pads are not constants, or it
        lists its axes (opset 18)."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        if len(inputs) > 3 and inputs[3]:
            return {}
        given = self._constants.values(inputs[1]) if len(inputs) > 1 and inputs[1] else None
        if given is None and "pads" in options:  # an attribute before opset 11
            given = np.asarray(options["pads"].ints)
        if given is None or given.dtype.kind != "i" or given.size % 2 or given.size > 2 * MAX_DIMS:
            return {}
        pads, rank = given.ravel().tolist(), given.size // 2
        added = {axis: pads[rank + axis] + pads[2 * rank + axis] for axis in axes if -rank <= axis}
        self._padded[node.output[0]] = {axis: (axes[axis], count) for axis, count in added.items() if count > 0}
        return {axis: axes[axis] for axis, count in added.items() if count == 0}

    def _resized(
        self, node: onnx.NodeProto, axes: dict[int, ImageAxis], sized: list[Entry] | None, labels: list[str | None]
    ) -> dict[int, ImageAxis]:
        """The image's axes a Resize or Upsample makes of its input's (`axes`): each times its constant scale where
        that is a whole number (ONNX Runtime's size is the floor of the product: of whole numbers, the product); or
        the size a computed entry of its sizes gives, the image's height or width times a whole number. None where
        it lists its axes (Resize-18), or fits its sizes to the aspect ratio."""
        inputs, options = list(node.input), {each.name: each for each in node.attribute}
        policy = options["keep_aspect_ratio_policy"].s if "keep_aspect_ratio_policy" in options else b"stretch"
        if "axes" in options or policy not in (b"", b"stretch"):
            return {}
        index = 2 if len(inputs) > 2 else 1
        scales = self._constants.values(inputs[index]) if index < len(inputs) and inputs[index] else None
        if scales is None and "scales" in options:  # Upsample-7's attribute
            scales = np.asarray(options["scales"].floats)
        if scales is not None and scales.dtype.kind == "f" and 0 < scales.size <= MAX_DIMS:
            by = scales.ravel().tolist()
            return {
                axis: (label, multiple * int(by[axis]))
                for axis, (label, multiple) in axes.items()
                if -len(by) <= axis and float(by[axis]).is_integer() and 1 <= by[axis] * multiple <= 2**20
            }
        if sized is None:
            return {}
        return {
            axis - len(sized): (label, int(factor))
            for axis, ((factor, constant), label) in enumerate(zip(sized, labels, strict=True))
            if label and whole_multiple((factor, constant))
        }

    def _einsum(self, node: onnx.NodeProto, axes: list[dict[int, ImageAxis]]) -> dict[int, ImageAxis]:
        """The axes of an Einsum's output that are the image's height or width: those its operands' letters name there
        (`bhwc,oc->bhwo` keeps h and w), where no operand has another size on that letter (as `note`)."""
        parsed, dims = einsum_terms(einsum_equation(node)), self._dims.get(node.output[0])
        if parsed is None or dims is None or len(parsed[0]) != len(node.input):
            return {}
        found: dict[Label, ImageAxis] = {}
        for term, name, image in zip(parsed[0], node.input, axes, strict=True):
            shape = self._dims.get(name) or self._constants.shape(name)
            if shape is None or (labels := axis_labels(term, len(shape))) is None:
                return {}
            for axis, (label, size) in enumerate(zip(labels, shape, strict=True)):
                ours = image.get(axis - len(shape), MIXED if size != 1 else None)
                if ours is not None:
                    found[label] = ours if found.get(label, ours) == ours else MIXED
        named = output_labels(parsed[1], len(dims) - len(parsed[1].replace("...", "")))
        return {axis - len(named): found[label] for axis, label in enumerate(named) if found.get(label, MIXED) != MIXED}


def _product_axes(axes: list[dict[int, ImageAxis]], shapes: list[Dims | None]) -> dict[int, ImageAxis]:
    """The axes of a MatMul's output of two values made from the image (their `axes`, of sizes `shapes`) that are the
    image's: its rows the first's, its columns the second's, and a batch axis where each that has it (not 1, nor
    beyond its axes) names the same one (the image's batch in Q and in K^T)."""
    if any(shape is None or len(shape) < 2 for shape in shapes):
        return {}
    kept = {axis: label for axis, label in ((-2, axes[0].get(-2)), (-1, axes[1].get(-1))) if label}
    for axis in range(-max(len(shape or []) for shape in shapes), -2):
        present = [
            each.get(axis, MIXED)
            for each, shape in zip(axes, shapes, strict=True)
            if shape and len(shape) >= -axis and shape[axis] != 1
        ]
        if present and all(label == present[0] != MIXED for label in present):
            kept[axis] = present[0]
    return kept


def _axis(options: Mapping[str, onnx.AttributeProto]) -> int:
    """The axis a Gather or Split takes (0 where it names none)."""
    return options["axis"].i if "axis" in options else 0


def _squeezed_axes(axes: dict[int, ImageAxis], rank: int, listed: list[int], unsqueezed: bool) -> dict[int, ImageAxis]:
    """The image's axes (`axes`, of a value of `rank` axes) of a Squeeze's output, its `listed` axes taken off, or an
    Unsqueeze's, axes put in at `listed` of the output: the others in their order. None where it lists none (a
    Squeeze of every axis of 1), or axes ONNX Runtime refuses."""
    whole = rank + len(listed) if unsqueezed else rank  # the rank `listed` counts in
    places = {axis % whole for axis in listed if -whole <= axis < whole}
    if not listed or len(places) < len(listed):
        return {}
    output_rank = whole if unsqueezed else rank - len(listed)
    others = [place for place in range(whole) if place not in places]  # the output's (Unsqueeze), else the input's
    pairs = zip(range(rank), others, strict=True) if unsqueezed else zip(others, range(output_rank), strict=True)
    return {place - output_rank: axes[axis - rank] for axis, place in pairs if axis - rank in axes}


def whole_multiple(entry: Entry) -> bool:
    """Whether an entry of a shape is a size times a whole number (up to 2^20), and nothing added: (H + 2) / 4 is
    floored, and not a quarter of H in every image."""
    return entry[1] == 0 and entry[0].is_integer() and 1 <= entry[0] <= 2**20


def size_changes(options: Mapping[str, onnx.AttributeProto]) -> dict[int, int] | None:
    """What a convolution of these attributes adds to each of its input's spatial axes (from the last), where strides
    and dilations are 1 and its pads are given: its pads less its kernel's size less one (0 for PyTorch's
    `padding=k // 2` of an odd kernel; -2 for a 3x3 one without pads, which takes back a Pad of 1 a side); else None."""
    if "kernel_shape" not in options or ("auto_pad" in options and options["auto_pad"].s not in (b"", b"NOTSET")):
        return None
    kernel = list(options["kernel_shape"].ints)
    pads = list(options["pads"].ints) if "pads" in options else [0] * 2 * len(kernel)
    ones = all(each == 1 for key in ("strides", "dilations") if key in options for each in options[key].ints)
    if not ones or len(pads) != 2 * len(kernel):
        return None
    return {i - len(kernel): pads[i] + pads[i + len(kernel)] - (k - 1) for i, k in enumerate(kernel)}
