"""What a generator checkpoint must hold, checked before anything is built or saved: the names and
shapes of the architecture they imply (from a file's header alone, so a hostile file cannot make
it allocate), and weights that are finite and have not exploded."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, WeightsError, given, is_real_number

__all__ = [
    "FLOAT",
    "INTEGER",
    "MAX_TENSORS",
    "MAX_WEIGHT_MAGNITUDE",
    "Shapes",
    "ValueProblem",
    "check_layout",
    "check_weights",
    "dtype_kind",
    "expected_shapes",
    "name_list",
    "tensor_kinds",
    "value_problem",
    "weight_problem",
]

# No trained generator comes near this (the bundled ones stay below 2); a run whose weights
# pass it has diverged, and its output is garbage even where it is finite.
MAX_WEIGHT_MAGNITUDE = 1e6
# An SRFeat generator has about 10 tensors per block; a header listing more than this is not one.
MAX_TENSORS = 100_000

Shapes = Mapping[str, tuple[int, ...]]

# What each entry must hold: weights and BatchNorm statistics are floating point, `num_batches_tracked` an
# integer count. A bool or complex count loaded, cast to int64 (the complex one with torch's warning), unsaid.
FLOAT, INTEGER = "floating point", "an integer"


def dtype_kind(dtype: torch.dtype) -> str:
    """FLOAT, INTEGER, or the dtype's own name (bool, complex: neither a weight nor a count)."""
    if dtype.is_floating_point:
        return FLOAT
    if dtype.is_complex or dtype == torch.bool:
        return str(dtype).removeprefix("torch.")
    return INTEGER


def tensor_kinds(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """`dtype_kind` of each tensor, `module.` prefixes stripped as `check_layout`'s shapes are."""
    return {key.removeprefix("module."): dtype_kind(value.dtype) for key, value in state.items()}


# ----------------------------------------------------------------------------- weights sanity


@dataclass(frozen=True)
class ValueProblem:
    """What is wrong with one tensor's values (`value_problem`); each caller words it, with its own advice."""

    non_finite: int = 0  # NaN or inf values; where there are any, the rest is not looked at
    exploded: float = 0.0  # the largest magnitude, where it is over the bound; else 0
    negative_variance: int = 0  # values below 0, of a tensor its caller said is a variance


def value_problem(
    tensor: torch.Tensor, *, is_variance: bool, max_magnitude: float = MAX_WEIGHT_MAGNITUDE
) -> ValueProblem | None:
    """None when `tensor` is finite, within `max_magnitude` and, being a variance (`is_variance`),
    not negative; else what is wrong. An integer tensor (a step count) holds no weights: None."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        return ValueProblem(non_finite=int((~finite).sum()))
    # a variance is never negative: BatchNorm's 1/sqrt(var + eps) made the whole output NaN
    negative = int((tensor < 0).sum()) if is_variance else 0
    magnitude = float(tensor.detach().abs().max())
    exploded = magnitude if magnitude > max_magnitude else 0.0
    return ValueProblem(exploded=exploded, negative_variance=negative) if exploded or negative else None


def weight_problem(
    tensors: Iterable[tuple[str, torch.Tensor]], max_magnitude: float = MAX_WEIGHT_MAGNITUDE
) -> str | None:
    """None when every float tensor is finite and within `max_magnitude` and no BatchNorm
    `running_var` is negative; else what is wrong. `tensors` are (name, tensor) pairs, a state
    dict's `items()`: the state dict itself is an `InvalidOptionError` (iterated, it gives its names)."""
    if isinstance(tensors, (Mapping, torch.nn.Module, str, bytes)):  # a 2-letter name was unpacked into two
        raise InvalidOptionError(
            f"the weights must be (name, tensor) pairs, e.g. state_dict().items(), got {type(tensors).__name__}"
        )
    # NaN compared false with every weight, so no explosion was ever found; a string failed inside
    if not is_real_number(max_magnitude) or not float(max_magnitude) > 0:
        raise InvalidOptionError(f"max_magnitude must be a number above 0 (inf: no bound), got {given(max_magnitude)}")
    non_finite: list[tuple[str, int]] = []
    negative_variance: list[tuple[str, int]] = []
    largest = ("", 0.0)
    for pair in tensors:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], torch.Tensor)):
            raise InvalidOptionError(f"the weights must be (name, tensor) pairs, got {type(pair).__name__} in them")
        name, tensor = pair
        # asked of every tensor now, integer ones too, which were skipped before their name was read: one under a
        # name that is no string (the type says str) is no variance's, where `endswith` was an AttributeError
        is_variance = isinstance(name, str) and name.endswith("running_var")
        problem = value_problem(tensor, is_variance=is_variance, max_magnitude=float(max_magnitude))
        if problem is None:
            continue
        if problem.non_finite:
            non_finite.append((name, problem.non_finite))
        if problem.negative_variance:
            negative_variance.append((name, problem.negative_variance))
        if problem.exploded > largest[1]:
            largest = (name, problem.exploded)
    if non_finite:
        name, count = non_finite[0]
        others = f" and {len(non_finite) - 1} other tensor(s)" if len(non_finite) > 1 else ""
        return f"weights are not finite (NaN or inf): {count} value(s) in {name}{others}"
    if negative_variance:
        name, count = negative_variance[0]
        others = f" and {len(negative_variance) - 1} other tensor(s)" if len(negative_variance) > 1 else ""
        return f"BatchNorm variances are negative, which no training writes: {count} value(s) in {name}{others}"
    if largest[1]:
        return (
            f"weights have exploded: {largest[0]} reaches {largest[1]:.3g} "
            f"(trained generators stay far below {max_magnitude:g})"
        )
    return None


def check_weights(tensors: Iterable[tuple[str, torch.Tensor]], source: str, advice: str = "") -> None:
    """WeightsError, one line, if the weights are not finite or have exploded; it ends with `advice`
    where given (what to do about a file no run of its user's wrote), else with "use an earlier checkpoint"."""
    problem = weight_problem(tensors)
    if problem is not None:
        why = "the file is damaged or edited" if problem.startswith("BatchNorm") else "the run that wrote it diverged"
        raise WeightsError(f"{source}: {problem}; {advice or f'{why}: use an earlier checkpoint'}")


# ----------------------------------------------------------------------------- the layout


def tensor_kind_problem(name: str, tensor: torch.Tensor) -> str | None:
    """What is wrong with `tensor` as weights, if it is not a dense tensor of values: a sparse, quantized or meta one
    (torch.load reads them; a traceback wherever their values were used), or None."""
    if tensor.layout != torch.strided:
        layout = str(tensor.layout).removeprefix("torch.").replace("_", " ")
        return f"{name} is a {layout} tensor, where a dense one is expected"
    if tensor.is_meta:
        return f"{name} is a tensor of the meta device, which holds a shape and no values"
    if tensor.is_quantized:
        return f"{name} is quantized ({tensor.dtype}), where a tensor of plain numbers is expected"
    return None


def odd_tensor(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """What is wrong with the first of `tensors` (name, tensor, as torch.load read them) that is not a dense tensor of
    values (`tensor_kind_problem`) covering a block of its storage once, its axes in any order; None when each is.
    Every saved parameter or state is (a transposed one too), where a damaged stride in the pickle (72 made 51, or 0)
    read the values from the wrong places without a word."""
    for name, tensor in tensors:
        if problem := tensor_kind_problem(name, tensor):
            return problem
        if not tensor.numel():  # no values to read from anywhere
            continue
        covered = 1
        for stride, size in sorted((stride, size) for size, stride in zip(tensor.shape, tensor.stride(), strict=True)):
            if size != 1 and stride != covered:
                return (
                    f"{name}'s values overlap or skip places in its storage (shape {tuple(tensor.shape)}, strides "
                    f"{tensor.stride()}), as no saved tensor's do"
                )
            covered *= size
    return None


def name_list(keys: list[str]) -> str:
    """The first three keys, and how many more."""
    shown = ", ".join(keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def expected_shapes(scale: int, num_features: int, num_blocks: int, in_channels: int) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of that generator and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        generator = SRFeatGenerator(scale, num_features, num_blocks, in_channels)
    return {key: tuple(value.shape) for key, value in generator.state_dict().items()}


def _indices(shapes: Shapes, prefix: str) -> dict[int, str]:
    """Index -> first key, of the `prefix.<index>.` entries."""
    found: dict[int, str] = {}
    for key in shapes:
        if (match := re.match(rf"{re.escape(prefix)}\.(\d+)\.", key)) is not None:
            found.setdefault(int(match.group(1)), key)
    return found


def check_layout(shapes: Shapes, kinds: Mapping[str, str], source: str) -> tuple[int, int, int, int]:
    """(scale, num_features, num_blocks, in_channels) that the names and shapes describe.

    Fails in one line naming the first key that does not fit: a name the architecture does
    not have, a missing one, a shape other than the architecture's (both shapes named), or a
    dtype of another kind than its own (`kinds`: each key's `dtype_kind`).
    """
    if len(shapes) > MAX_TENSORS:
        raise WeightsError(f"{source} holds {len(shapes):,} tensors; an SRFeat generator has a few hundred")
    head = shapes.get("head.weight")
    blocks, stages = _indices(shapes, "body"), _indices(shapes, "upsampler")
    if head is None or not blocks or not stages:
        raise WeightsError(f"{source} is not an SRFeat generator (no head/body/upsampler weights): wrong architecture")
    if len(head) != 4:
        raise WeightsError(f"{source}: head.weight has shape {head}; an SRFeat generator's is 4-D (features, 3, 9, 9)")
    num_features, in_channels = head[0], head[1]
    if num_features < 1 or in_channels < 1:  # SRFeatGenerator's own refusal did not name the file
        raise WeightsError(
            f"{source}: head.weight has shape {head}, with no {'features' if num_features < 1 else 'channels'}: "
            "damaged or not an SRFeat generator"
        )
    for what, found, allowed in (("block", blocks, None), ("upsampling stage", stages, (1, 2))):
        count = len(found)
        outside = sorted(index for index in found if index >= count)
        if outside:
            raise WeightsError(
                f"{source}: {found[outside[0]]} names {what} {outside[0]}, but the file has {count} {what}(s) "
                f"(indices 0 to {count - 1} expected): damaged or not an SRFeat generator"
            )
        if allowed is not None and count not in allowed:
            raise WeightsError(f"{source} has {count} upsampling stages; an SRFeat generator has 1 (x2) or 2 (x4)")
    scale, num_blocks = 2 ** len(stages), len(blocks)
    expected = expected_shapes(scale, num_features, num_blocks, in_channels)
    architecture = f"x{scale}, {num_features} features, {num_blocks} blocks (from head.weight {head})"
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        raise WeightsError(
            f"{source} does not match the SRFeat generator architecture ({architecture}): "
            f"unexpected key(s) {name_list(unexpected)}"
        )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise WeightsError(
            f"{source} does not match the SRFeat generator architecture ({architecture}): "
            f"missing key(s) {name_list(missing)}"
        )
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise WeightsError(
                f"{source} does not match the SRFeat generator architecture: {key} has shape {tuple(shapes[key])} "
                f"in the file, but {architecture} needs {shape}"
            )
        wanted = INTEGER if key.endswith("num_batches_tracked") else FLOAT
        if kinds.get(key) != wanted:
            raise WeightsError(f"{source}: {key} has the wrong dtype (expected {wanted}, got {kinds.get(key)})")
    return scale, num_features, num_blocks, in_channels
