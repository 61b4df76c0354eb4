"""Generator weights: the bundled models and checkpoint files, loaded without running pickles.

A generator file is a safetensors state dict of `SRFeatGenerator`; its architecture (scale,
width, depth) is read off the tensor names and shapes, so any checkpoint `srfeat train` writes
loads here. `.pt`/`.pth` files are read with `torch.load(weights_only=True)`, and a training
state holding a `generator` entry works too.

A file's content must be what its name says (`srfeat.weights.file_kinds` reads its magic
numbers first): a PNG, a text file, an ONNX model, a folder or a `.pt` renamed `.safetensors` is
refused in one line that says what it is and what to do, before any reader is tried.

A checkpoint is untrusted input. Its names, count and shapes are checked against the
architecture they imply before anything is built: for safetensors from the file header alone
(no tensor is read), for `.pt` from a memory-mapped load. So a file that names block 3,000, or
a head of 20,000 channels, is refused in one line instead of allocating gigabytes. Weights
that are not finite, or have exploded (a diverged run), are refused on loading and saving.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, WeightsError, shown
from srfeat.files import OutputExistsError, PendingFile, write_file_atomically
from srfeat.weights.file_kinds import (
    ONNX,
    PICKLE,
    PYTORCH,
    SAFETENSORS,
    identify_file,
    not_a_weights_file,
    torch_load_quietly,
    unpickling_problem,
)

GENERATOR_FORMAT = "srfeat-generator"
# No trained generator comes near this (the bundled ones stay below 2); a run whose weights
# pass it has diverged, and its output is garbage even where it is finite.
MAX_WEIGHT_MAGNITUDE = 1e6
# An SRFeat generator has about 10 tensors per block; a header listing more than this is not one.
MAX_TENSORS = 100_000

Shapes = Mapping[str, tuple[int, ...]]
# The precisions a generator file may hold; loading reads them all as float32.
SAVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

__all__ = [
    "bundled_names",
    "check_weights",
    "generator_from_state",
    "generator_path",
    "load_generator",
    "save_generator",
    "weight_problem",
]

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def as_path(path: PathArg, what: str) -> Path:
    """A str, bytes or path-like as a Path with `~` expanded; anything else is a one-line error."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        # blend_generators(generator_a, ...): a module's repr is its layers, line after line
        hint = (
            ", a network already loaded (blend state dicts with srfeat.weights.blend.blend_states)"
            if isinstance(path, torch.nn.Module)
            else f" {shown(path)}"
        )
        raise InvalidOptionError(f"{what} must be a path (str or pathlib.Path), got {type(path).__name__}{hint}")
    text = os.fsdecode(path)
    if not text.strip():
        raise InvalidOptionError(f"{what} is an empty string: give a file path")
    return Path(text).expanduser()


def bundled_dir() -> Path:
    return Path(str(resources.files("srfeat.weights")))


def bundled_names() -> list[str]:
    """Names of the generators that ship with the package (`default`, `gan`, ...)."""
    return sorted(path.stem for path in bundled_dir().glob("*.safetensors"))


# ----------------------------------------------------------------------------- weights sanity


def weight_problem(
    tensors: Iterable[tuple[str, torch.Tensor]], max_magnitude: float = MAX_WEIGHT_MAGNITUDE
) -> str | None:
    """None when every float tensor is finite and within `max_magnitude`; else what is wrong."""
    non_finite: list[tuple[str, int]] = []
    largest = ("", 0.0)
    for name, tensor in tensors:
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            non_finite.append((name, int((~finite).sum())))
            continue
        magnitude = float(tensor.detach().abs().max())
        if magnitude > largest[1]:
            largest = (name, magnitude)
    if non_finite:
        name, count = non_finite[0]
        others = f" and {len(non_finite) - 1} other tensor(s)" if len(non_finite) > 1 else ""
        return f"weights are not finite (NaN or inf): {count} value(s) in {name}{others}"
    if largest[1] > max_magnitude:
        return (
            f"weights have exploded: {largest[0]} reaches {largest[1]:.3g} "
            f"(trained generators stay far below {max_magnitude:g})"
        )
    return None


def check_weights(tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """WeightsError, one line, if the weights are not finite or have exploded."""
    problem = weight_problem(tensors)
    if problem is not None:
        raise WeightsError(f"{source}: {problem}; the run that wrote it diverged: use an earlier checkpoint")


# ----------------------------------------------------------------------------- saving


def generator_file(generator: SRFeatGenerator, path: PathArg, dtype: torch.dtype = torch.float32) -> PendingFile:
    """The generator's state dict as safetensors, ready to be written (weights checked first).

    The name must end in `.safetensors` (`load_generator` reads a file by what its name says)
    and must not be a folder; `dtype` is float32, float16 or bfloat16. Each is a one-line
    error before anything is written.
    """
    path = as_path(path, "the generator file")
    # duck-typed: training hands over its own module (an EMA's copy), which is one in all but name
    if not isinstance(generator, torch.nn.Module) or not all(
        hasattr(generator, name) for name in ("scale", "num_features", "num_blocks")
    ):
        raise InvalidOptionError(f"save_generator saves an SRFeatGenerator, got {type(generator).__name__}")
    if dtype not in SAVE_DTYPES:
        raise InvalidOptionError(
            f"a generator is saved as torch.float32, torch.float16 or torch.bfloat16, not {shown(dtype)}"
        )
    if path.is_dir():
        raise WeightsError(f"{path} is a folder: give a file name in it ending in .safetensors")
    if path.suffix != ".safetensors":
        raise WeightsError(
            f"{path}: a generator is saved as safetensors, and its name must end in .safetensors to load again "
            f"(e.g. {path.with_suffix('.safetensors').name})"
        )
    if any(value.is_meta for value in generator.state_dict().values()):
        raise WeightsError(f"not saving {path}: the generator is on the meta device (it has no weights to save)")
    state = {
        key: (value.to(dtype) if value.is_floating_point() else value).detach().cpu().contiguous()
        for key, value in generator.state_dict().items()
    }
    try:  # what load_generator would refuse (an Upscaler's folded InferenceGenerator has other tensors)
        check_layout(
            {key.removeprefix("module."): tuple(value.shape) for key, value in state.items()},
            {key.removeprefix("module.") for key, value in state.items() if value.is_floating_point()},
            type(generator).__name__,
        )
    except WeightsError as error:
        raise WeightsError(f"not saving {path}: load_generator could not read it back: {error}") from error
    problem = weight_problem(state.items())
    if problem is not None:
        raise WeightsError(f"not saving {path}: the generator's {problem}")
    metadata = {
        "format": GENERATOR_FORMAT,
        "scale": str(generator.scale),
        "num_features": str(generator.num_features),
        "num_blocks": str(generator.num_blocks),
    }
    # Serialised here, written by srfeat.files: a new file gets the mode the umask gives
    # (safetensors' own writer makes it 0600) and a full disk is reported by name.
    data = safetensors_bytes(state, metadata=metadata)
    return PendingFile(path, lambda handle: handle.write(data), len(data))


def save_generator(
    generator: SRFeatGenerator,
    path: PathArg,
    dtype: torch.dtype = torch.float32,
    replace: bool = True,
) -> None:
    """Write the generator's state dict as safetensors, atomically (temp file + rename).

    `path` (str, bytes or path-like; `~` expanded) must end in `.safetensors`; missing folders
    are made. `dtype` is the stored precision (float32, float16 or bfloat16; `load_generator`
    returns float32 whatever was stored). With `replace` False an existing file is kept
    (`srfeat.files.OutputExistsError`). Weights that are not finite or have exploded are
    refused (`WeightsError`), as are a folder, another suffix or another dtype.
    """
    file = generator_file(generator, path, dtype)
    if not replace and (file.path.exists() or file.path.is_symlink()):  # before writing, not after
        raise OutputExistsError(f"{file.path} exists; it is kept: remove it, or pass replace=True to replace it")
    write_file_atomically(file.path, file.write, file.size, replace)


# ----------------------------------------------------------------------------- checking a layout


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _name_list(keys: list[str]) -> str:
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


def check_layout(shapes: Shapes, float_keys: set[str], source: str) -> tuple[int, int, int, int]:
    """(scale, num_features, num_blocks, in_channels) that the names and shapes describe.

    Fails in one line naming the first key that does not fit: a name the architecture does
    not have, a missing one, or a shape other than the architecture's (both shapes named).
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
            f"unexpected key(s) {_name_list(unexpected)}"
        )
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise WeightsError(
            f"{source} does not match the SRFeat generator architecture ({architecture}): "
            f"missing key(s) {_name_list(missing)}"
        )
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise WeightsError(
                f"{source} does not match the SRFeat generator architecture: {key} has shape {tuple(shapes[key])} "
                f"in the file, but {architecture} needs {shape}"
            )
        if key.endswith("num_batches_tracked") != (key not in float_keys):
            kind = "an integer" if key.endswith("num_batches_tracked") else "floating point"
            raise WeightsError(f"{source}: {key} has the wrong dtype (expected {kind})")
    return scale, num_features, num_blocks, in_channels


# ----------------------------------------------------------------------------- reading


def _refusal(path: Path, error: BaseException) -> WeightsError:
    """One line for a file torch cannot read safely; never torch's advice to turn safety off."""
    problem, reason = unpickling_problem(error)
    if problem == "objects":
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        return WeightsError(
            f"refusing {path}: it holds pickled Python objects{what}, not only tensors, and loading them could "
            "run code; save the generator's state_dict as .safetensors (or a .pt of tensors only)"
        )
    if problem == "opcodes":
        return WeightsError(
            f"refusing {path}: its pickle uses instructions torch's safe loader does not read ({reason}; a pickle "
            "protocol above 3?); save the generator's state_dict as .safetensors, or with torch.save's default protocol"
        )
    if not isinstance(error, pickle.UnpicklingError):
        reason = _first_line(error).split(". ")[0]  # torch's zip reader adds sentences of advice
        if " " not in reason:  # a bare key or number (KeyError: 101) means nothing alone
            reason = f"{type(error).__name__}: {reason}"
    return WeightsError(
        f"cannot read {path}: damaged, or not an SRFeat generator as .safetensors or a .pt state dict ({reason})"
    )


def _check_kind(path: Path) -> None:
    """The file's content must be what its name says (safetensors for `.safetensors`, a PyTorch
    checkpoint otherwise); if not, one line that says what it is and what to do."""
    kind = identify_file(path)
    wanted = SAFETENSORS if path.suffix == ".safetensors" else PYTORCH
    if kind.name == wanted:
        return
    if kind.name == PYTORCH:
        raise WeightsError(f"{path} is {kind.description}, not safetensors: name it .pt to load it (tensors only)")
    if kind.name == SAFETENSORS:
        raise WeightsError(f"{path} is {kind.description}: name it .safetensors to load it")
    if kind.name == ONNX and path.suffix.lower() == ".onnx":  # "name it .onnx" would say to do what is done
        raise WeightsError(
            f"{path} is an ONNX model, which only srfeat upscale runs (with ONNX Runtime): here a generator "
            "checkpoint (.safetensors or .pt) is needed, e.g. the generator_*.safetensors of a run"
        )
    if kind.name == ONNX:  # misnamed
        raise WeightsError(
            f"{path} looks like an ONNX file: name it .onnx (srfeat upscale runs .onnx files with ONNX Runtime); "
            "here a .safetensors or .pt checkpoint is needed"
        )
    if kind.name == PICKLE:
        raise WeightsError(
            f"refusing {path}: it is {kind.description}; it may hold any Python objects, and loading them could "
            "run code; save the generator's state_dict as .safetensors (or with torch.save, tensors only)"
        )
    what_to_do = kind.hint or (
        f"give a bundled name ({', '.join(bundled_names()) or 'none installed'}) "
        "or an SRFeat checkpoint (.safetensors or .pt)"
    )
    raise WeightsError(f"{path} is {kind.description}, not generator weights: {what_to_do}")


def _safetensors_layout(path: Path) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Names, shapes and float-ness of the tensors in a safetensors file, from its header only."""
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if len(keys) > MAX_TENSORS:
            raise WeightsError(f"{path} holds {len(keys):,} tensors; an SRFeat generator has a few hundred")
        shapes: dict[str, tuple[int, ...]] = {}
        float_keys: set[str] = set()
        for key in keys:
            tensor_slice = handle.get_slice(key)
            shapes[key] = tuple(tensor_slice.get_shape())
            if tensor_slice.get_dtype() in ("F16", "BF16", "F32", "F64"):
                float_keys.add(key)
    return shapes, float_keys


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}  # DDP-wrapped saves


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], tuple[int, int, int, int]]:
    """The checked tensors of a generator file and the architecture they describe."""
    if problem := not_a_weights_file(path, bundled_names()):
        raise WeightsError(problem)
    try:
        _check_kind(path)
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error.strerror or error}") from error
    if path.suffix == ".safetensors":
        try:
            shapes, float_keys = _safetensors_layout(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise _refusal(path, error) from error
        shapes = {key.removeprefix("module."): shape for key, shape in shapes.items()}
        float_keys = {key.removeprefix("module.") for key in float_keys}
        layout = check_layout(shapes, float_keys, str(path))
        try:
            return _strip_prefix(load_file(str(path))), layout
        except (SafetensorError, OSError, ValueError) as error:
            raise _refusal(path, error) from error
    try:
        try:  # memory-mapped: shapes are checked before the tensors are read
            state = torch_load_quietly(path, map_location="cpu", mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch_load_quietly(path, map_location="cpu")  # the pre-1.6 format
    except Exception as error:  # pickle, zip and torch raise their own types
        raise _refusal(path, error) from error
    if isinstance(state, dict) and isinstance(state.get("generator"), dict):
        state = state["generator"]  # a full training state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors: expected an SRFeat generator checkpoint")
    state = _strip_prefix(state)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    layout = check_layout(shapes, {k for k, v in state.items() if v.is_floating_point()}, str(path))
    return state, layout


def _build(state: dict[str, torch.Tensor], layout: tuple[int, int, int, int], source: str) -> SRFeatGenerator:
    check_weights(state.items(), source)
    scale, num_features, num_blocks, in_channels = layout
    generator = SRFeatGenerator(scale=scale, num_features=num_features, num_blocks=num_blocks, in_channels=in_channels)
    try:
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, ValueError) as error:  # check_layout should have caught it: say so plainly
        raise WeightsError(
            f"{source} does not match the SRFeat generator architecture: {_first_line(error)}"
        ) from error
    return generator


def generator_from_state(state: dict[str, torch.Tensor], source: str = "state dict") -> SRFeatGenerator:
    """Build the generator the tensors describe and load them; a foreign state dict fails clearly
    (`WeightsError`: names, shapes, values; anything but a mapping of names to tensors too)."""
    if not isinstance(state, Mapping):
        raise WeightsError(f"{source}: expected a state dict (names to tensors), got {type(state).__name__}")
    if isinstance(state.get("generator"), Mapping):  # a training state.pt, loaded
        raise WeightsError(f"{source} is a training state: give its generator entry, state['generator']")
    if not_tensors := [key for key, value in state.items() if not isinstance(value, torch.Tensor)]:
        raise WeightsError(
            f"{source} must map names to tensors: {_name_list([str(key) for key in not_tensors])} "
            f"{'is not a tensor' if len(not_tensors) == 1 else 'are not tensors'} (a generator's state_dict() is)"
        )
    state = _strip_prefix(state)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    layout = check_layout(shapes, {k for k, v in state.items() if v.is_floating_point()}, source)
    return _build(state, layout, source)


def _device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device that exists here; else one line (torch's is a list of 20 device
    types, or an AssertionError "Torch not compiled with CUDA enabled" from deep inside `.to`)."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidOptionError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from error
    if target.type not in ("cpu", "cuda", "meta"):  # mps, xpu...: torch's error came after the file was read
        try:
            torch.empty(0, device=target)
        except (RuntimeError, AssertionError) as error:
            raise InvalidOptionError(
                f"device {target} is not available in this PyTorch; use cpu, cuda or cuda:N"
            ) from error
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidOptionError(f"device {target} requested but no CUDA GPU is available; use cpu")
        if target.index is not None and target.index >= count:
            raise InvalidOptionError(
                f"device {target} requested but there are {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})"
            )
    return target


def generator_path(spec: PathArg) -> Path:
    """The file `load_generator(spec)` reads: a bundled name's file in the package, else the path
    (`~` expanded). Commands that write files compare their outputs with it: `-o` naming the
    bundled `default.safetensors` is the input `default`."""
    text = spec if isinstance(spec, str) else os.fsdecode(spec) if isinstance(spec, (bytes, os.PathLike)) else None
    return bundled_dir() / f"{text}.safetensors" if text in bundled_names() else as_path(spec, "the generator to load")


def load_generator(spec: PathArg, device: str | torch.device = "cpu") -> SRFeatGenerator:
    """A bundled name (`default`, `gan`) or a checkpoint path -> eval-mode float32 generator on `device`.

    `spec` is a str, bytes or path-like (`~` expanded); `device` any torch device (`"cpu"`, the
    default; `"cuda"`, `"cuda:N"`), checked before the file is read. Raises `WeightsError` (a `ValueError`) for a
    missing, unreadable or foreign file, `InvalidOptionError` for a device that is not there.
    The parameters require grad (ready to fine-tune); wrap inference in `torch.no_grad()`.
    """
    target = _device(device)
    path = generator_path(spec)
    state, layout = _read_state(path)
    generator = _build(state, layout, str(path))
    return generator.to(target).eval()
