"""Slices of one value joined again along the axis they cut it on, torch.roll's (`x[:, -2:]` beside `x[:, :-2]`):
for `onnx_shapes` and `onnx_growth` to tell a Concat that moves the image's values from one that places the image
beside itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from srfeat.inference.onnx_shapes import MAX_DIMS, Dims

if TYPE_CHECKING:
    import onnx

__all__ = ["JoinedSlices"]


class JoinedSlices:
    """Slices of values made from the image in steps of 1 along one axis, noted as the graph is followed, and the
    Concats that join them again."""

    def __init__(self, dims: Mapping[str, Dims]) -> None:
        self._dims = dims  # the sizes the file fixes of values made from the image (`onnx_growth`'s, kept up to date)
        # Slices of a value in steps of 1 along one axis: the value, the axis, and the constant start and end
        self._cuts: dict[str, tuple[str, int, int, int]] = {}

    def note(self, node: onnx.NodeProto, given: list[list[int]] | None) -> None:
        """Note a Slice of constant starts, ends, axes and steps `given` (`ShapeVectors.integers`): one each, a step
        of 1."""
        if given is not None and all(len(each) == 1 for each in given) and given[3] == [1]:
            self._cuts[node.output[0]] = (node.input[0], given[2][0], given[0][0], given[1][0])

    def rolled(self, node: onnx.NodeProto) -> str | None:
        """The value a Concat joins slices of again, all of it (`rearranges`): torch.roll's; else None."""
        cut = self._cuts.get(node.input[0]) if node.op_type == "Concat" and node.input else None
        return cut[0] if cut is not None and self.rearranges(node, whole=True) else None

    def rearranges(self, node: onnx.NodeProto, whole: bool = False) -> bool:
        """Whether a Concat joins slices of one value along the axis they cut it on, which never take more of it
        than it has, whatever its size there: torch.roll's (`x[:, -2:]` beside `x[:, :-2]`) moves the image's
        values, and does not place it beside itself. `whole`: they take all of it, as torch.roll's do."""
        axis = next((each.i for each in node.attribute if each.name == "axis"), None)
        cuts = [self._cuts.get(name) for name in node.input]
        if axis is None or len(cuts) < 2 or any(cut is None for cut in cuts):
            return False
        sources = {cut[0] for cut in cuts if cut}
        rank = len(dims) if (dims := self._dims.get(next(iter(sources)))) is not None else None
        axes = {cut[1] for cut in cuts if cut} | {axis}
        if rank is not None and all(-rank <= each < rank for each in axes):
            axes = {each % rank for each in axes}  # else the same axis only where written alike
        if len(sources) != 1 or len(axes) != 1:
            return False
        # past 2^31 either way (PyTorch's `x[:, 2:]` ends at 2^63 - 1), a bound is the axis's end or start
        bounds = [bound for cut in cuts if cut for bound in cut[2:] if abs(bound) < 2**31]
        if (largest := max((abs(bound) for bound in bounds), default=0)) > MAX_DIMS:
            return False
        # the lengths are linear in the size from the largest bound on: sizes up to two past it tell them all
        taken = [sum(_cut_length(cut[2], cut[3], size) for cut in cuts if cut) for size in range(largest + 3)]
        return all(each == size if whole else each <= size for size, each in enumerate(taken)) and (
            taken[-1] - taken[-2] == 1 if whole else taken[-1] - taken[-2] <= 1
        )


def _cut_length(start: int, end: int, size: int) -> int:
    """How many entries `x[start:end]` takes of an axis of `size`, as ONNX Runtime's Slice does."""
    first, last = (min(max(bound + size if bound < 0 else bound, 0), size) for bound in (start, end))
    return max(last - first, 0)
