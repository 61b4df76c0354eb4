"""Network interpolation: one generator between two of the same architecture.

ESRGAN (Wang et al. 2018) showed that interpolating the *weights* of a PSNR-oriented and a
GAN-trained generator, theta = (1 - alpha) theta_A + alpha theta_B, gives a smooth dial from
faithful-but-soft to sharp-with-invented-texture, at no cost per image: the blend is done once
and the result is an ordinary generator. It works because both networks come from the same
start (stage 2 is fine-tuned from stage 1), so their weights lie in one basin.

Every floating-point tensor of the state dict is interpolated, BatchNorm running statistics
included (they are weights of the folded network too); integer buffers (BatchNorm's
`num_batches_tracked`) are bookkeeping and are taken from A.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, SRFeatError, WeightsError, is_real_number, printable, shown
from srfeat.weights import as_path, generator_from_state, load_generator

__all__ = [
    "DETAIL_MODELS",
    "SPEC_HELP",
    "BlendSpec",
    "blend_generators",
    "blend_states",
    "check_alpha",
    "expand_blend_specs",
    "is_blend_spec",
    "load_blended",
    "one_blend",
    "parse_blend_spec",
    "strength_generator",
]

# The two ends of the detail dial: `strength` 0 is the first, 1 the second.
DETAIL_MODELS = ("default", "gan")


def check_alpha(alpha: float, name: str = "alpha", error: type[SRFeatError] = WeightsError) -> float:
    """`alpha` as a float in [0, 1] (never -0.0), or a one-line `error` (NaN, inf and out-of-range values;
    a bool or a string, which `float` would take: `strength=True` silently meant gan)."""
    if not is_real_number(alpha):
        raise error(f"{name} must be a number between 0 and 1, got {type(alpha).__name__} {shown(alpha)}")
    value = float(alpha)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (0 = default, 1 = gan)" if name in ("strength", "--strength") else ""
        raise error(f"{name} must be between 0 and 1{hint}, got {alpha}")
    # -0.0 is 0: `srfeat blend --alpha -0.0` logged "1 x A + -0 x B", and a model was named `strength--0`
    return value + 0.0


def _describe(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _check_state(state: object, name: str) -> None:
    """A mapping of names to tensors (a generator's `state_dict()`), or a one-line `WeightsError`:
    a module, a list or numpy arrays failed inside with an AttributeError or TypeError."""
    if not isinstance(state, Mapping):
        hint = ": give its state_dict()" if isinstance(state, torch.nn.Module) else ""
        raise WeightsError(
            f"cannot blend {name}: expected a state dict (names to tensors), got {type(state).__name__}{hint}"
        )
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        more = f" (and {len(not_tensors) - 1} more)" if len(not_tensors) > 1 else ""
        raise WeightsError(
            f"cannot blend {name}: {not_tensors[0]}{more} is {type(state[not_tensors[0]]).__name__}, not a tensor; "
            "a state dict maps names to tensors (a generator's state_dict() does)"
        )


def blend_states(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    alpha: float,
    names: tuple[str, str] = ("A", "B"),
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * A + alpha * B for every float tensor, in float32; A's integer buffers.

    The two must be mappings of names to tensors with the same keys and shapes (else a `WeightsError`,
    a `ValueError`, naming the first that differs).
    alpha 0 gives A and alpha 1 gives B exactly (`torch.lerp` is exact at both ends).
    """
    alpha = check_alpha(alpha)
    if not (isinstance(names, (tuple, list)) and len(names) == 2):  # "AB" was unpacked into "A" and "B"
        raise InvalidOptionError(f"names must be a pair of names, e.g. ('A', 'B'), got {shown(names)}")
    name_a, name_b = names
    for name, state in ((name_a, state_a), (name_b, state_b)):
        _check_state(state, name)
    only_a = [key for key in state_a if key not in state_b]
    only_b = [key for key in state_b if key not in state_a]
    if only_a or only_b:
        key, holder, other = (only_a[0], name_a, name_b) if only_a else (only_b[0], name_b, name_a)
        extra = len(only_a) + len(only_b) - 1
        more = f" (and {extra} more key(s) differ)" if extra else ""
        raise WeightsError(
            f"cannot blend {name_a} and {name_b}: key {key} is in {holder} but not in {other}{more}; "
            "only generators of the same architecture (scale, width, depth) can be blended"
        )
    blended: dict[str, torch.Tensor] = {}
    for key, tensor_a in state_a.items():
        tensor_b = state_b[key]
        if tensor_a.shape != tensor_b.shape:
            raise WeightsError(
                f"cannot blend {name_a} and {name_b}: {key} is {_describe(tensor_a)} in {name_a} but "
                f"{_describe(tensor_b)} in {name_b}; only generators of the same architecture can be blended"
            )
        if tensor_a.is_floating_point() and tensor_b.is_floating_point():
            blended[key] = torch.lerp(tensor_a.float(), tensor_b.float(), alpha)
        else:
            blended[key] = tensor_a.clone()
    return blended


def blend_generators(model_a: str | os.PathLike[str], model_b: str | os.PathLike[str], alpha: float) -> SRFeatGenerator:
    """The generator (1 - alpha) A + alpha B of two bundled names, checkpoint paths or blend specs, on the CPU.

    Each is loaded (and so validated) on its own first; a blend of two different
    architectures fails naming the first key or shape that differs.
    """
    alpha = check_alpha(alpha)
    generator_a, generator_b = (_load_model(model) for model in (model_a, model_b))
    state = blend_states(generator_a.state_dict(), generator_b.state_dict(), alpha, names=(str(model_a), str(model_b)))
    return generator_from_state(state, source=f"the blend of {model_a} and {model_b}").eval()


def _load_model(model: str | os.PathLike[str]) -> SRFeatGenerator:
    """A blend spec's generator (`blend=strength=0.3,mine.safetensors,0.5`: blends are models too), else
    `load_generator`'s of a bundled name or path (which refuses a network already loaded, in one line)."""
    if isinstance(model, str) and is_blend_spec(model):
        return one_blend(model, None).build()
    return load_generator(model, "cpu")


def strength_generator(strength: float) -> SRFeatGenerator:
    """The detail dial: `default` at 0, `gan` at 1, their network interpolation in between."""
    return blend_generators(*DETAIL_MODELS, check_alpha(strength, "strength"))


def load_blended(
    model: str | bytes | os.PathLike[str] | SRFeatGenerator, strength: float | None, *, command_line: bool = False
) -> SRFeatGenerator:
    """`model` as `load_generator` reads it (or a copy of a generator given as such), or with a
    `strength` the default/gan blend, as an eval-mode float32 generator on the CPU.

    A strength applies to the bundled pair only: combined with another model it is an error
    rather than a silent choice of one of the two, naming the commands' flags and `srfeat blend` with
    `command_line`, else the keywords and `blend_generators`.
    """
    if isinstance(model, SRFeatGenerator) and strength is None:
        return copy.deepcopy(model).cpu().float().eval()
    if isinstance(model, str) and is_blend_spec(model):  # `strength=0.3`, `blend=A,B,ALPHA`: as srfeat eval takes them
        return one_blend(model, strength, command_line=command_line).build()
    if isinstance(model, SRFeatGenerator):
        name = type(model).__name__
    else:  # as load_generator takes it: 5 was looked for as a file named "5", b"default" as "b'default'"
        name = model if isinstance(model, str) else str(as_path(model, "the model"))
    if strength is None:
        return load_generator(name, "cpu")
    if problem := strength_model_problem(name, strength, command_line=command_line):
        # an option given with the wrong model, not a broken file: the caller's fix is which model to name
        raise InvalidOptionError(problem)
    return strength_generator(strength)


def one_blend(spec: str, strength: float | None, *, command_line: bool = False) -> BlendSpec:
    """The blend that model spec `spec` names where one model is wanted (upscale, export, the API): eval's
    blends are models in every command. A `strength` beside it, or a range of strengths, is refused. A path
    is never a spec: `./strength=0.3` names a file."""
    if strength is not None:
        option = "--strength" if command_line else "strength"
        raise InvalidOptionError(f"model {shown(spec)} is a blend already: leave {option} out")
    if spec.startswith(STRENGTH_PREFIX) and ":" in spec:
        raise WeightsError(
            f"model spec {shown(spec)} names several models, which srfeat eval scores each; here give one: strength=S"
        )
    blend = parse_blend_spec(spec)
    if blend is None:  # is_blend_spec's prefixes are parse_blend_spec's
        raise WeightsError(f"model spec {shown(spec)}: use {SPEC_HELP}")
    return blend


def strength_model_problem(name: str, strength: float, *, command_line: bool = False) -> str | None:
    """What is wrong with the detail dial's `strength` given with model `name` (a bundled name or a path), or
    None: it goes with the bundled default model only. `srfeat upscale` asks before any input is listed."""
    if name == DETAIL_MODELS[0]:
        return None
    low, high = DETAIL_MODELS
    strength_option, model_option, dial, blend = (
        (
            "--strength",
            "--model",
            f"--model {low} --strength {shown(strength)} (or leave --model out)",
            "`srfeat blend A B --alpha ALPHA -o out.safetensors`",
        )
        if command_line
        else (
            "strength",
            "model",
            f"model={low!r}, strength={shown(strength)} (or leave model out)",
            "srfeat.weights.blend.blend_generators(A, B, alpha)",
        )
    )
    return (
        f"{strength_option} is the detail dial from the bundled {low} model (0) to {high} (1) and goes with "
        f"{model_option} {low} only, not {model_option} {printable(name)}; give {dial}, or to blend your own "
        f"checkpoints use {blend}"
    )


# -- blend specs: how `srfeat eval --model` names a blend ---------------------------------

# The most models one strength=START:STOP:STEP range may name (0:1:0.01): each is a network run
# over every image, so a tiny STEP would mean days of work (and 1e-9 a billion names to list).
MAX_RANGE_MODELS = 101
# The most blends one spec may nest in A's place (`blend=blend=A,B,0.3,C,0.5` nests 2): each is built by a call
# within the last, so thousands (a spec as long as a command line allows) ran out of Python's stack.
MAX_NESTED_BLENDS = 16

STRENGTH_PREFIX = "strength="
BLEND_PREFIX = "blend="
SPEC_HELP = (
    "strength=S (the default/gan blend at S, 0..1), strength=START:STOP:STEP (one model per step, "
    "both ends included, e.g. strength=0:1:0.1), blend=A,B,ALPHA (any two generators of one architecture)"
)


@dataclass(frozen=True)
class BlendSpec:
    """(1 - alpha) model_a + alpha model_b, as named by a spec string."""

    model_a: str
    model_b: str
    alpha: float

    def build(self) -> SRFeatGenerator:
        return blend_generators(self.model_a, self.model_b, self.alpha)


def _spec_number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError as error:
        raise WeightsError(f"model spec {shown(spec)}: {shown(text)} is not a number; use {SPEC_HELP}") from error


def is_blend_spec(spec: str) -> bool:
    return spec.startswith((STRENGTH_PREFIX, BLEND_PREFIX))


def models_read(model: str) -> list[str]:
    """The bundled names and checkpoint paths that loading `model` reads: itself, or a blend spec's models
    (a command that writes weights must not write over any of them)."""
    if not is_blend_spec(model):
        return [model]
    blend = one_blend(model, None)
    return [*models_read(blend.model_a), *models_read(blend.model_b)]


def parse_blend_spec(spec: str) -> BlendSpec | None:
    """`strength=S` or `blend=A,B,ALPHA` -> a `BlendSpec`; any other string -> None (a model name)."""
    if spec.startswith(STRENGTH_PREFIX):
        strength = check_alpha(_spec_number(spec.removeprefix(STRENGTH_PREFIX), spec), "strength")
        return BlendSpec(*DETAIL_MODELS, strength)
    if spec.startswith(BLEND_PREFIX):
        nested = 0
        while spec.startswith(BLEND_PREFIX, nested * len(BLEND_PREFIX)):
            nested += 1
        if nested > MAX_NESTED_BLENDS:
            raise WeightsError(
                f"model spec {shown(spec)} nests {nested} blends, more than {MAX_NESTED_BLENDS}: "
                "write the inner ones to a file with `srfeat blend` and name the file"
            )
        parts = spec.removeprefix(BLEND_PREFIX).rsplit(",", 2)
        if len(parts) != 3 or not all(parts):
            raise WeightsError(f"model spec {shown(spec)} is not blend=A,B,ALPHA (e.g. blend=default,gan,0.3)")
        model_a, model_b, alpha = parts
        return BlendSpec(model_a, model_b, check_alpha(_spec_number(alpha, spec)))
    return None


def expand_blend_specs(specs: Sequence[str]) -> list[str]:
    """The model list with each `strength=START:STOP:STEP` replaced by its steps (`strength=0`, ...)."""
    expanded: list[str] = []
    for spec in specs:
        if not (spec.startswith(STRENGTH_PREFIX) and ":" in spec):
            expanded.append(spec)
            continue
        bounds = spec.removeprefix(STRENGTH_PREFIX).split(":")
        if len(bounds) != 3:
            raise WeightsError(f"model spec {shown(spec)} is not strength=START:STOP:STEP (e.g. strength=0:1:0.1)")
        start, stop, step = (_spec_number(text, spec) for text in bounds)
        check_alpha(start, "strength")
        check_alpha(stop, "strength")
        if not math.isfinite(step) or step <= 0 or stop < start:
            raise WeightsError(
                f"model spec {shown(spec)}: needs START <= STOP and a positive STEP (e.g. strength=0:1:0.1)"
            )
        # Counted in steps, not accumulated, so that 0.1 * 10 lands on 1 and is included.
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_RANGE_MODELS:
            raise WeightsError(
                f"model spec {shown(spec)} names {count:,} models, more than {MAX_RANGE_MODELS}: "
                f"use a STEP of at least {(stop - start) / (MAX_RANGE_MODELS - 1):g} (e.g. strength=0:1:0.1)"
            )
        expanded += [f"{STRENGTH_PREFIX}{round(start + index * step, 10):g}" for index in range(count)]
    return expanded
