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
that are not finite, or have exploded (a diverged run), and negative BatchNorm variances are refused
on loading and saving.

Here: the bundled models, loading and saving. The checks: `srfeat.weights.checks`; reading a
file: `srfeat.weights.reading`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import InvalidOptionError, WeightsError, check_flag, shown
from srfeat.files import OutputExistsError, PendingFile, replace_option, write_file_atomically
from srfeat.weights.checks import MAX_WEIGHT_MAGNITUDE, check_layout, check_weights, tensor_kinds, weight_problem
from srfeat.weights.file_kinds import named_safetensors, only_the_safetensors_suffix
from srfeat.weights.reading import BUNDLED_AGAIN, CHECKPOINT_AGAIN, build_generator, generator_from_state, read_state

GENERATOR_FORMAT = "srfeat-generator"
# The precisions a generator file may hold; loading reads them all as float32.
SAVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Checking and reading live in srfeat.weights.checks and srfeat.weights.reading; their public
# names are imported from here.
__all__ = [
    "MAX_WEIGHT_MAGNITUDE",
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
    if only_the_safetensors_suffix(path):
        raise WeightsError(
            f"{path} has no name before .safetensors: give one, e.g. {path.with_name('generator.safetensors')}"
        )
    if not named_safetensors(path):
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
            tensor_kinds(state),
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
    *,
    command_line: bool = False,
) -> None:
    """Write the generator's state dict as safetensors, atomically (temp file + rename).

    `path` (str, bytes or path-like; `~` expanded) must end in `.safetensors`; missing folders
    are made. `dtype` is the stored precision (float32, float16 or bfloat16; `load_generator`
    returns float32 whatever was stored). With `replace` False an existing file is kept
    (`srfeat.files.OutputExistsError`); `replace` is True or False (`replace="false"` replaced it),
    else an `InvalidOptionError`, as is another dtype. Weights that are not finite or have exploded
    are refused (`WeightsError`), as are a folder or another suffix. Messages name replace=True;
    `command_line` (`srfeat convert`'s and `blend`'s) names --overwrite instead.
    """
    replace = check_flag(replace, "replace")
    file = generator_file(generator, path, dtype)
    if not replace and (file.path.exists() or file.path.is_symlink()):  # before writing, not after
        option = replace_option(command_line)
        raise OutputExistsError(f"{file.path} exists; it is kept: remove it, or pass {option} to replace it")
    write_file_atomically(file.path, file.write, file.size, replace, command_line=command_line)


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
    names = bundled_names()
    # a bundled model's file (by its name, or its path in the package) is damaged in the install, not a download
    bundled = path.stem in names and path == bundled_dir() / f"{path.stem}.safetensors"
    again = BUNDLED_AGAIN if bundled else CHECKPOINT_AGAIN
    state, layout = read_state(path, names, again)
    generator = build_generator(state, layout, str(path), again)
    return generator.to(target).eval()
