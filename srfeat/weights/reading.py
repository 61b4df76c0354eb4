"""Reading a generator checkpoint: what the file is (by its content), its tensors' layout checked
before they are read (safetensors: from the header; `.pt`: memory-mapped), and the generator
built from them. A file torch cannot read safely is refused in one line, never with torch's
advice to turn safety off."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import WeightsError
from srfeat.path_checks import unreadable_message, utf8_path
from srfeat.weights.checks import (
    FLOAT,
    INTEGER,
    MAX_TENSORS,
    check_layout,
    check_weights,
    name_list,
    odd_tensor,
    tensor_kind_problem,
    tensor_kinds,
)
from srfeat.weights.file_kinds import (
    DAMAGED_ZIP,
    DAMAGED_ZIP_ERRORS,
    ONNX,
    PICKLE,
    PYTORCH,
    SAFETENSORS,
    compressed_records,
    identify_file,
    named_safetensors,
    named_tensorflow_checkpoint,
    not_a_weights_file,
    tensor_records,
    torch_load_quietly,
    unpickling_problem,
)

__all__ = ["build_generator", "first_line", "generator_from_state", "read_state", "strip_prefix"]

_Value = TypeVar("_Value")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# What to do about a damaged file: a user's own checkpoint is fetched or copied again; a bundled
# model's file came with the package, which the README installs from a git clone (editable): restored there.
CHECKPOINT_AGAIN = "download or copy it again, or give another checkpoint"
BUNDLED_AGAIN = (
    "it came with srfeat: restore it from srfeat's clone (git checkout -- srfeat/weights) or reinstall srfeat"
)


def _from_package(again: str) -> bool:
    """Whether `again` is a bundled model's: its user named no file, so renaming or saving one again is no
    advice, whatever is wrong with it; restoring it is."""
    return again == BUNDLED_AGAIN


def _incomplete(path: Path, damage: str, again: str) -> WeightsError:
    return WeightsError(f"{path} is not a complete checkpoint: {damage}; {again}")


def _unreadable(path: Path, reason: str, again: str) -> WeightsError:
    return WeightsError(
        f"cannot read {path}: damaged, or not an SRFeat generator as .safetensors or a .pt state dict ({reason}); "
        f"{again}"
    )


def _refusal(path: Path, error: BaseException, again: str) -> WeightsError:
    """One line for a file torch cannot read safely; never torch's advice to turn safety off (`again`:
    what to do about a damaged file)."""
    problem, reason = unpickling_problem(error, path)
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
    if problem == "incomplete":
        return _incomplete(path, f"{reason} (a download or copy that did not finish?)", again)
    if problem == "header":
        return WeightsError(f"cannot read {path}: {reason}; {again}")
    return _unreadable(path, reason, again)


def _check_kind(path: Path, bundled: list[str], again: str) -> None:
    """The file's content must be what its name says (safetensors for `.safetensors`, a PyTorch
    checkpoint otherwise); if not, one line that says what it is and what to do."""
    kind = identify_file(path)
    wanted = SAFETENSORS if named_safetensors(path) else PYTORCH
    if kind.name == wanted:
        return
    if kind.name == DAMAGED_ZIP:  # torch said "[Errno 22] Invalid argument", or its zip reader's paragraph
        raise _incomplete(path, f"it is {kind.description}", again)
    if _from_package(again):  # "name it .pt", "give a bundled name" (the user gave one) were said of it
        raise WeightsError(f"{path} is {kind.description}; {again}")
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
    if kind.name == "other" and named_tensorflow_checkpoint(path):  # was "of an unknown format"
        raise WeightsError(
            f"{path} is (part of) a TensorFlow checkpoint, not generator weights: srfeat convert makes a checkpoint "
            "of the authors' tensorlayer .npz (save a TensorFlow generator with tl.files.save_npz first), or give a "
            f"bundled name ({', '.join(bundled) or 'none installed'})"
        )
    what_to_do = kind.hint or (
        f"give a bundled name ({', '.join(bundled) or 'none installed'}) or an SRFeat checkpoint (.safetensors or .pt)"
    )
    if what_to_do.endswith("?"):  # a guess at what happened ("did a download or copy not finish?"): no advice yet
        what_to_do = f"{what_to_do} {again}"
    raise WeightsError(f"{path} is {kind.description}, not generator weights: {what_to_do}")


def _safetensors_layout(path: Path, again: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Names, shapes and dtype kinds (`dtype_kind`'s) of the tensors in a safetensors file, from its header only."""
    with utf8_path(path) as name, safe_open(name, framework="pt") as handle:
        keys = list(handle.keys())
        if len(keys) > MAX_TENSORS:
            raise WeightsError(f"{path} holds {len(keys):,} tensors; an SRFeat generator has a few hundred; {again}")
        shapes: dict[str, tuple[int, ...]] = {}
        kinds: dict[str, str] = {}
        for key in keys:
            tensor_slice = handle.get_slice(key)
            shapes[key] = tuple(tensor_slice.get_shape())
            dtype = str(tensor_slice.get_dtype())
            kinds[key] = _SAFETENSORS_KINDS.get(dtype, dtype.lower())
    return shapes, kinds


# The safetensors dtypes a generator's tensors may be stored in, and two a refusal names as torch does; any
# other (F8_E4M3, C128) is named in lower case.
_SAFETENSORS_KINDS: dict[str, str] = {
    **dict.fromkeys(("F16", "BF16", "F32", "F64"), FLOAT),
    **dict.fromkeys(("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"), INTEGER),
    "BOOL": "bool",
    "C64": "complex64",
}


def strip_prefix(state: Mapping[str, _Value], source: str = "the state dict") -> dict[str, _Value]:
    """The names without the `module.` a DistributedDataParallel-wrapped save adds; a name given both
    ways (`head.weight` and `module.head.weight`) is a WeightsError: one of the two was dropped unread."""
    stripped: dict[str, _Value] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name in stripped:
            raise WeightsError(
                f"{source} holds {name} twice (as {name} and module.{name}): damaged or not an SRFeat generator"
            )
        stripped[name] = value
    return stripped


def _file_layout(
    path: Path, shapes: Mapping[str, tuple[int, ...]], kinds: Mapping[str, str], again: str
) -> tuple[int, int, int, int]:
    """`check_layout` of a file's tensors (`module.` prefixes stripped); its refusal, and `strip_prefix`'s,
    end with what to do about the file (`again`): they say only what is wrong."""
    try:
        stripped = strip_prefix(shapes, str(path))
        return check_layout(stripped, {key.removeprefix("module."): kind for key, kind in kinds.items()}, str(path))
    except WeightsError as error:
        raise WeightsError(f"{error}; {again}") from error


def read_state(
    path: Path, bundled: list[str], again: str = CHECKPOINT_AGAIN
) -> tuple[dict[str, torch.Tensor], tuple[int, int, int, int]]:
    """The checked tensors of a generator file and the architecture they describe (`bundled`: the
    bundled models' names, which a refusal suggests; `again`: what a damaged file's refusal says to
    do, BUNDLED_AGAIN for a bundled model's file)."""
    if problem := not_a_weights_file(path, bundled):
        # the package listed it: a folder or a link to nothing, where "give a file or a bundled name" was said
        raise WeightsError(f"{path} is not a file; {again}" if _from_package(again) else problem)
    try:
        _check_kind(path, bundled, again)
    except OSError as error:
        raise WeightsError(unreadable_message(path, error, again)) from error
    if named_safetensors(path):
        try:
            shapes, kinds = _safetensors_layout(path, again)
        except WeightsError:  # a ValueError: its line was put inside "cannot read: damaged (...)"
            raise
        except (SafetensorError, OSError, ValueError) as error:
            raise _refusal(path, error, again) from error
        layout = _file_layout(path, shapes, kinds, again)
        try:
            with utf8_path(path) as name:
                return strip_prefix(load_file(name), str(path)), layout
        except (SafetensorError, OSError, ValueError) as error:
            raise _refusal(path, error, again) from error
    try:
        try:  # memory-mapped: shapes are checked before the tensors are read
            mapped = _pt_state(path, torch_load_quietly(path, map_location="cpu", mmap=True), again)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return _pt_state(path, torch_load_quietly(path, map_location="cpu"), again)  # the pre-1.6 format
    except WeightsError:
        raise
    except Exception as error:  # pickle, zip and torch raise their own types
        raise _refusal(path, error, again) from error
    _check_records(path, mapped[0].values(), again)
    return mapped


def _check_records(path: Path, tensors: Iterable[torch.Tensor], again: str) -> None:
    """The mapped reader takes each tensor's bytes from where its record starts (`tensor_records`): a
    record cut short (a damaged file) or deflated (a re-zipped one) loaded as weights read from the
    records after it. Each tensor's storage must be the size of a record, stored as is."""
    try:
        records = tensor_records(path)
    except (*DAMAGED_ZIP_ERRORS, OSError) as error:
        raise _refusal(path, error, again) from error
    if compressed_records(records):
        raise WeightsError(
            f"{path} holds its tensors compressed (zipped again after torch.save wrote it?), which srfeat does not "
            "read: save the generator's state_dict again with torch.save, or as .safetensors"
        )
    sizes = Counter(record.file_size for record in records)
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in tensors}
    unmatched = Counter(storages.values()) - sizes
    if unmatched:
        raise _unreadable(path, f"a tensor of {min(unmatched):,} bytes has no record of that size", again)


def _pt_state(path: Path, state: object, again: str) -> tuple[dict[str, torch.Tensor], tuple[int, int, int, int]]:
    """The generator tensors of what torch.load read from `path`, and their checked layout."""
    if isinstance(state, dict) and isinstance(state.get("generator"), dict):
        state = state["generator"]  # a full training state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors: expected an SRFeat generator checkpoint")
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    layout = _file_layout(path, shapes, tensor_kinds(state), again)
    if problem := odd_tensor(state.items()):
        raise _unreadable(path, problem, again)
    return strip_prefix(state, str(path)), layout


def build_generator(
    state: dict[str, torch.Tensor], layout: tuple[int, int, int, int], source: str, again: str = CHECKPOINT_AGAIN
) -> SRFeatGenerator:
    """The generator of `layout` with the checked `state` loaded (weights checked first; `again`: what
    read_state was told to say about a damaged file, BUNDLED_AGAIN for a bundled model's)."""
    # no run of its user's wrote a bundled model: "use an earlier checkpoint" was said of one
    check_weights(state.items(), source, again if _from_package(again) else "")
    scale, num_features, num_blocks, in_channels = layout
    generator = SRFeatGenerator(scale=scale, num_features=num_features, num_blocks=num_blocks, in_channels=in_channels)
    try:
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, ValueError) as error:  # check_layout should have caught it: say so plainly
        raise WeightsError(f"{source} does not match the SRFeat generator architecture: {first_line(error)}") from error
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
            f"{source} must map names to tensors: {name_list([str(key) for key in not_tensors])} "
            f"{'is not a tensor' if len(not_tensors) == 1 else 'are not tensors'} (a generator's state_dict() is)"
        )
    if problem := next(filter(None, (tensor_kind_problem(str(key), value) for key, value in state.items())), None):
        raise WeightsError(f"{source}: {problem}")  # a sparse one was NotImplementedError, a meta one RuntimeError
    state = strip_prefix(state, source)
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    layout = check_layout(shapes, tensor_kinds(state), source)
    return build_generator(state, layout, source)
