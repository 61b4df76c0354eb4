"""Einsum equations read as ONNX Runtime reads them: each operand's letters and the output's, and which axis of a
value each letter names, for `onnx_products` to count what an Einsum makes and the sizes of its output, and for
`onnx_shapes` to follow the image's height and width through it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["Label", "axis_labels", "einsum_equation", "einsum_terms", "output_labels"]

# What names an axis of an Einsum's operand or output: a letter, or an axis the ellipsis spans, by its place from
# the last (-1, -2...)
Label = str | int


def einsum_equation(node: onnx.NodeProto) -> str:
    """An Einsum node's equation (its attribute; empty where it has none, refused by ONNX Runtime)."""
    equation = next((each.s for each in node.attribute if each.name == "equation"), b"")
    return equation.decode(errors="replace")


def einsum_terms(equation: str) -> tuple[list[str], str] | None:
    """The operands' terms of `equation` and the output's: as written after its arrow, or where it has none (implicit),
    the ellipsis where an operand has one, then the letters written once, in alphabetical order (numpy's rule). None for
    an output letter no operand has (refused by ONNX Runtime)."""
    terms, arrow, output = equation.replace(" ", "").partition("->")
    operands = terms.split(",")
    letters = "".join(operands).replace("...", "")
    if not arrow:
        once = sorted(letter for letter in set(letters) if letters.count(letter) == 1)
        output = ("..." if "..." in terms else "") + "".join(once)
    if any(letter not in letters for letter in output.replace("...", "")):
        return None
    return operands, output


def axis_labels(term: str, rank: int) -> list[Label] | None:
    """What names each axis of a value of `rank` axes written as `term`; None for a rank other than `term`'s (refused
    by ONNX Runtime)."""
    head, ellipsis, tail = term.partition("...")
    spanned = rank - len(head) - len(tail)
    if spanned < 0 or (spanned and not ellipsis):
        return None
    return [*head, *range(-spanned, 0), *tail]


def output_labels(output: str, spanned: int) -> list[Label]:
    """What names each axis of an Einsum's output written as `output`, the operands' ellipses spanning at most `spanned`
    axes (broadcast together, aligned from the last)."""
    head, ellipsis, tail = output.partition("...")
    return [*head, *range(-spanned if ellipsis else 0, 0), *tail]
