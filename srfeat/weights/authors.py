"""The authors' released generator weights as srfeat checkpoints (`srfeat convert`).

Their repository (HyeongseokSon1/SRFeat) publishes `models/SRFeat_init.npz` (stage 1) and
`models/SRFeat_full.npz` (stage 2), AGPL-licensed, so never bundled here. Both are
tensorlayer's `save_npz(net_g.all_params)`: one entry `params`, an object array holding the
generator's parameters as NumPy arrays in tensorlayer's order. Reading their `model.py`
(`SRGAN_g`) with the tensorlayer it ships gives that order:

- head: conv 9x9 weight (HWIO), bias;
- per residual block: conv weight; BatchNorm beta, gamma, moving mean, moving variance;
  conv weight; BatchNorm beta, gamma, moving mean, moving variance (convs before BatchNorm
  have no bias);
- the long-skip 1x1 conv weights of blocks 1..15: their layers hang off the main chain, so
  tensorlayer's merge layer appends their parameters after all blocks. The authors also build
  a 1x1 conv on block 16, but never add it in; it is not in `all_params`, so not in the file. A
  file that does hold a 16th is accepted, the unused conv dropped;
- per upsampling stage: conv weight, bias (then TF's `depth_to_space`, no parameters);
- tail: conv weight, bias.

Converting: HWIO -> OIHW; the upsampling convs' output channels reordered, since TF's
`depth_to_space` reads channel (i*2 + j)*C + c for sub-pixel (i, j) of channel c where
PyTorch's `PixelShuffle` reads c*4 + i*2 + j; tensorlayer's beta/gamma are PyTorch's
bias/weight. 'SAME' padding of odd kernels at stride 1 is PyTorch's padding k // 2, the
epsilon of both BatchNorms is 1e-5, and the network maps [-1, 1] to [-1, 1] as srfeat's does
inside, so nothing else changes.

The object array is a pickle. It is read with an unpickler that builds NumPy arrays and
nothing else, so a crafted file cannot run code.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import WeightsError
from srfeat.path_checks import broken_link, special_file_kind, unreadable_message
from srfeat.weights import as_path, generator_from_state
from srfeat.weights.checks import MAX_WEIGHT_MAGNITUDE, value_problem
from srfeat.weights.file_kinds import DAMAGED_ZIP_ERRORS

logger = logging.getLogger(__name__)

NPZ_ENTRY = "params.npy"
# The real files hold about 6.2 M float32 values (25 MB); anything far beyond is not one of them
# (a 1 MB zip can declare 1 GB of zeros: the limit is what may be inflated).
MAX_ENTRY_BYTES = 128 << 20
EXPECTED = (
    "expected tensorlayer's save_npz of the authors' generator (SRGAN_g in their model.py): one entry "
    "'params' listing head conv, 16 residual blocks (conv, BatchNorm beta/gamma/mean/variance, conv, "
    "BatchNorm), 15 long-skip 1x1 convs, two upsampling convs and the output conv"
)


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        # NumPy 2's stubs mark the first import Final; on NumPy 1 this is the only one that runs.
        from numpy.core.multiarray import _reconstruct  # pyright: ignore[reportGeneralTypeIssues]
    return _reconstruct


class _CheckedArray(np.ndarray):
    """The arrays the unpickler builds: their pickled state is checked before NumPy takes it. NumPy's
    own `__setstate__` takes an object array's shape from the state and its items from a list of any
    length: a 200-byte file declaring 1,000 items and giving 2 crashed `srfeat convert` (a segfault),
    and one declaring 300 M took 5 GB before anything was checked."""

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)):
            raise pickle.UnpicklingError("an array's pickled state is not NumPy's")
        shape, dtype, data = state[1], state[2], state[4]
        if not (isinstance(dtype, np.dtype) and all(type(size) is int and size >= 0 for size in shape)):
            raise pickle.UnpicklingError(f"an array's pickled shape {shape!r:.60} or dtype is not NumPy's")
        count = math.prod(shape)
        if count * max(dtype.itemsize, 1) > MAX_ENTRY_BYTES:
            raise pickle.UnpicklingError(f"an array of shape {shape!r:.60}, far beyond the generator's")
        if dtype.hasobject and not (isinstance(data, list) and len(data) == count and dtype == np.dtype(object)):
            raise pickle.UnpicklingError(f"an object array of shape {shape!r:.60} does not hold as many items")
        super().__setstate__(state)


def _checked_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """NumPy's `_reconstruct` as its pickles call it (an empty array, filled by `__setstate__`): another
    shape would allocate it before anything is checked (an object array of 300 M items: 2.4 GB)."""
    if subtype is not np.ndarray or shape != (0,):
        raise pickle.UnpicklingError(f"an array is made as {shape!r:.60}, not as NumPy's pickles make it")
    return _numpy_reconstruct()(_CheckedArray, (0,), dtype)


def _checked_dtype(code: object, align: object = False, copy: object = True) -> np.dtype:
    """NumPy's `dtype` as its pickles call it (`dtype('f4', False, True)`, then `__setstate__`), for floating-point
    and object (the list's) types only: the authors' file holds nothing else, and NumPy crashed (a segmentation
    fault, in `__setstate__`) on a datetime type ('f4' damaged to 'M8') given the state a float's pickle carries."""
    if not (isinstance(code, str) and isinstance(align, int) and isinstance(copy, int)):  # NumPy 1.x pickled 0, 1
        raise pickle.UnpicklingError(f"an array's type is pickled as {code!r:.40}, not as NumPy pickles it")
    try:
        dtype = np.dtype(code, bool(align), bool(copy))
    except TypeError as error:  # not a type NumPy knows
        raise pickle.UnpicklingError(f"an array's type {code!r:.40} is not NumPy's") from error
    if dtype.kind not in ("f", "O"):
        raise pickle.UnpicklingError(f"an array's type is {code!r:.40}, where floating-point numbers are expected")
    return dtype


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays (and the object arrays that hold them), refusing everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _checked_reconstruct
        if (module, name) == ("numpy", "dtype"):
            return _checked_dtype
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("_codecs", "encode"):
            # pickle protocol 2 under Python 3 stores bytes as _codecs.encode(text, "latin1")
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected")


def _read_object_array(stream: IO[bytes], path: Path) -> object:
    """The npy object array of `stream`, unpickled by `_ArrayUnpickler`."""
    try:
        version = npy_format.read_magic(stream)
        header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = header(stream)
        if not dtype.hasobject:
            raise WeightsError(
                f"{path}: 'params' is one {dtype} array of shape {shape}, not a list of arrays: {EXPECTED}"
            )
        return _ArrayUnpickler(stream, encoding="latin1").load()
    except WeightsError:
        raise
    except Exception as error:  # npy header and pickle parsing raise many types on foreign data
        raise WeightsError(f"{path}: cannot read 'params' ({type(error).__name__}: {error}): {EXPECTED}") from error


GIVE_THEIRS = "give the authors' SRFeat_init.npz or SRFeat_full.npz file"


def read_tensorlayer_npz(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The arrays of a tensorlayer `save_npz` file, in order, read without running pickled code.
    `path`: a str, bytes or path-like, `~` expanded, as `load_generator` takes it."""
    path = as_path(path, "the authors' weights file")
    if path.is_dir():
        raise WeightsError(f"{path} is a folder: {GIVE_THEIRS}")
    if not path.is_file():
        if kind := special_file_kind(path):  # a pipe or device is named as such
            raise WeightsError(f"{path} is {kind}, not a file: {GIVE_THEIRS}")
        if reason := broken_link(path):
            raise WeightsError(f"{path}: {reason}: {GIVE_THEIRS}")
        raise WeightsError(f"authors' weights file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if NPZ_ENTRY not in names:
                if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
                    raise _not_theirs(path, "a PyTorch checkpoint (torch.save)")
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                raise WeightsError(f"{path} has no 'params' entry (it has {shown or 'none'}): {EXPECTED}")
            record = archive.getinfo(NPZ_ENTRY)
            if not 0 <= record.header_offset < path.stat().st_size:
                # its place, from a damaged central directory, is outside the file: the seek's "Invalid argument"
                # was called a failed read
                raise zipfile.BadZipFile(f"the entry's header offset {record.header_offset} is outside the file")
            size = record.file_size
            if size > MAX_ENTRY_BYTES:
                raise WeightsError(
                    f"{path}: 'params' unpacks to {size:,} bytes, far beyond the generator's: {EXPECTED}"
                )
            # Read from the zip stream: no copy of the whole entry in memory besides the arrays.
            with archive.open(NPZ_ENTRY) as stream:
                container = _read_object_array(stream, path)
    except WeightsError:  # a ValueError, as some of zipfile's errors are: said already
        raise
    except DAMAGED_ZIP_ERRORS as error:  # not OSError: a read that failed is said as such below
        try:
            refusal = _not_an_npz(path)
        except OSError as read_error:  # its first bytes, read to say what it is: a traceback
            raise _read_failed(path, read_error) from read_error
        raise refusal from error
    except OSError as error:
        raise _read_failed(path, error) from error
    items = list(container.ravel()) if isinstance(container, np.ndarray) else None
    if items is None or not all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in items):
        raise WeightsError(f"{path}: 'params' does not hold floating-point arrays: {EXPECTED}")
    return [np.asarray(item) for item in items]  # plain arrays, not the unpickler's _CheckedArray


CONVERTS = "srfeat convert reads the authors' tensorlayer .npz files (SRFeat_init.npz, SRFeat_full.npz)"


def _not_theirs(path: Path, what: str) -> WeightsError:
    return WeightsError(
        f"{path} is {what}, not the authors' weights: {CONVERTS}; a srfeat generator (.safetensors, .pt) needs no "
        "converting: give it to srfeat upscale --model as it is"
    )


def _read_failed(path: Path, error: OSError) -> WeightsError:
    """A file that is there but whose read failed (a failing disk, no permission): said as such, where it was
    called no authors' weights ("cannot be read (...): expected tensorlayer's save_npz ...")."""
    return WeightsError(unreadable_message(path, error, "download or copy it again"))


def _not_an_npz(path: Path) -> WeightsError:
    """What a file that is no zip archive is, rather than zipfile's word for it ("File is not a zip file")."""
    from srfeat.weights.file_kinds import PYTORCH, SAFETENSORS, identify_file, named_tensorflow_checkpoint

    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):  # a zip whose end (its list of entries) is missing or damaged: zipfile's words for it
        # ("File is not a zip file") contradict it
        return WeightsError(f"{path} is a zip archive cut short or damaged: download it again")
    if named_tensorflow_checkpoint(path):
        return WeightsError(
            f"{path} is (part of) a TensorFlow checkpoint: {CONVERTS}; to convert a checkpoint of their code, save its "
            "generator with tensorlayer first: tl.files.save_npz(net_g.all_params, name='generator.npz')"
        )
    kind = identify_file(path)
    if kind.name in (SAFETENSORS, PYTORCH):
        return _not_theirs(path, kind.description)
    hint = f" ({kind.hint})" if kind.hint and "srfeat reads" not in kind.hint else ""  # not load_generator's
    return WeightsError(f"{path} is not an .npz file: it is {kind.description}{hint}: {EXPECTED}")


class _Cursor:
    """Walks the parameter list, checking each array's shape against what comes next."""

    def __init__(self, arrays: list[np.ndarray], source: str) -> None:
        self.arrays, self.source, self.index = arrays, source, 0

    def next_shape(self) -> tuple[int, ...] | None:
        return self.arrays[self.index].shape if self.index < len(self.arrays) else None

    def take(self, shape: tuple[int, ...], what: str, *, is_variance: bool = False) -> torch.Tensor:
        """The next array as a tensor, `what` naming it in errors; `is_variance`: a BatchNorm moving variance."""
        found = self.next_shape()
        if found != shape:
            where = (
                f"array {self.index} has shape {found}"
                if found is not None
                else f"the file ends at {self.index} arrays"
            )
            raise WeightsError(f"{self.source}: {where}, expected {what} of shape {shape}: {EXPECTED}")
        self.index += 1
        array = self.arrays[self.index - 1]
        # A float64 array (the authors' are float32) can hold values float32 has no room for: the cast made
        # them inf, with NumPy's RuntimeWarning and its source line on stderr, and the weights were then
        # called "diverged". Such a value is named here instead, in one line.
        with np.errstate(over="ignore", invalid="ignore"):
            converted = np.array(array, dtype=np.float32)
        overflowed = np.isfinite(array) & ~np.isfinite(converted)
        if overflowed.any():
            raise WeightsError(
                f"{self.source}: array {self.index - 1} ({what}) holds {int(overflowed.sum()):,} value(s) too large "
                f"for float32, up to {float(np.abs(array[overflowed]).max()):.3g}, where trained generators stay far "
                f"below {MAX_WEIGHT_MAGNITUDE:g}: the file is damaged or not the authors' weights; download it again"
            )
        tensor = torch.from_numpy(converted)
        problem = _value_problem(tensor, f"array {self.index - 1} ({what})", is_variance)
        if problem is not None:
            raise WeightsError(f"{self.source}: {problem}")
        return tensor


# Neither the authors' files nor a TensorFlow run's were written by a srfeat run: "the run that wrote it
# diverged: use an earlier checkpoint" (load_generator's words) was not what a user of them could act on.
_NOT_USABLE = (
    "it cannot be used: convert a file saved before the TensorFlow run diverged, or download the authors' file again"
)


def _value_problem(tensor: torch.Tensor, where: str, is_variance: bool) -> str | None:
    """What makes one array of the file unusable (`where` names it), or None."""
    problem = value_problem(tensor, is_variance=is_variance)
    if problem is None:
        return None
    values = tensor.numel()
    if problem.non_finite:
        return f"it holds NaN/infinite weights: {problem.non_finite:,} of {values:,} values in {where}; {_NOT_USABLE}"
    if problem.exploded:
        return (
            f"its weights have exploded: {where} reaches {problem.exploded:.3g}, where trained generators stay far "
            f"below {MAX_WEIGHT_MAGNITUDE:g}; {_NOT_USABLE}"
        )
    return (
        f"it holds negative BatchNorm variances, which no training writes: {problem.negative_variance:,} of "
        f"{values:,} values in {where}; the file is damaged or edited: download the authors' file again"
    )


def _conv(weight_hwio: torch.Tensor) -> torch.Tensor:
    return weight_hwio.permute(3, 2, 0, 1).contiguous()


def authors_state_dict(arrays: list[np.ndarray], source: str = "the file") -> dict[str, torch.Tensor]:
    """An `SRFeatGenerator` state dict from the authors' parameter list (order as in the module doc)."""
    if not arrays or arrays[0].ndim != 4 or arrays[0].shape[:3] != (9, 9, 3):
        first = arrays[0].shape if arrays else "nothing"
        raise WeightsError(f"{source}: the first array is {first}, expected the 9x9 head conv (9, 9, 3, F): {EXPECTED}")
    features = arrays[0].shape[3]
    square = (3, 3, features, features)
    vector = (features,)
    cursor = _Cursor(arrays, source)
    state = {
        "head.weight": _conv(cursor.take((9, 9, 3, features), "the head conv")),
        "head.bias": cursor.take(vector, "the head bias"),
    }

    blocks = 0
    while cursor.next_shape() == square:
        for conv, norm in (("conv1", "bn1"), ("conv2", "bn2")):
            prefix = f"body.{blocks}"
            state[f"{prefix}.{conv}.weight"] = _conv(cursor.take(square, f"block {blocks + 1}'s {conv}"))
            for name, key in (
                ("beta", "bias"),
                ("gamma", "weight"),
                ("moving mean", "running_mean"),
                ("moving variance", "running_var"),
            ):
                state[f"{prefix}.{norm}.{key}"] = cursor.take(
                    vector, f"block {blocks + 1}'s {norm} {name}", is_variance=key == "running_var"
                )
            state[f"{prefix}.{norm}.num_batches_tracked"] = torch.tensor(0)
        blocks += 1
    if blocks == 0:
        cursor.take(square, "block 1's first conv")  # raises: says what came instead

    skips = 0
    while cursor.next_shape() == (1, 1, features, features):
        weight = _conv(cursor.take((1, 1, features, features), f"long skip {skips + 1}"))
        if skips < blocks - 1:
            state[f"long_skips.{skips}.weight"] = weight
        skips += 1
    if skips == blocks:
        logger.info(
            "%s holds the unused long-skip conv of block %d; dropped as the authors' network ignores it", source, blocks
        )
    elif skips != blocks - 1:
        raise WeightsError(
            f"{source}: {skips} long-skip 1x1 convs for {blocks} blocks, expected {blocks - 1}: {EXPECTED}"
        )

    # PyTorch's PixelShuffle channel k = c*4 + i*2 + j is TF depth_to_space's (i*2 + j)*F + c.
    shuffle = torch.tensor([(k % 4) * features + k // 4 for k in range(4 * features)])
    stages = 0
    while cursor.next_shape() == (3, 3, features, 4 * features):
        weight = _conv(cursor.take((3, 3, features, 4 * features), f"upsampling conv {stages + 1}"))
        bias = cursor.take((4 * features,), f"upsampling conv {stages + 1}'s bias")
        state[f"upsampler.{stages}.conv.weight"] = weight[shuffle].contiguous()
        state[f"upsampler.{stages}.conv.bias"] = bias[shuffle].contiguous()
        stages += 1
    if stages not in (1, 2):
        raise WeightsError(
            f"{source}: {stages} upsampling convs (3, 3, {features}, {4 * features}), "
            f"expected 2 (x4) or 1 (x2): {EXPECTED}"
        )
    state["tail.weight"] = _conv(cursor.take((3, 3, features, 3), "the output conv"))
    state["tail.bias"] = cursor.take((3,), "the output conv's bias")
    if cursor.index != len(arrays):
        raise WeightsError(f"{source}: {len(arrays) - cursor.index} array(s) after the output conv's bias: {EXPECTED}")
    return state


def load_authors_generator(path: str | os.PathLike[str]) -> SRFeatGenerator:
    """The authors' SRFeat_init.npz / SRFeat_full.npz (or any save_npz of their SRGAN_g) as an eval-mode generator."""
    path = as_path(path, "the authors' weights file")  # bytes too; `~` expanded
    arrays = read_tensorlayer_npz(path)
    return generator_from_state(authors_state_dict(arrays, str(path)), source=str(path)).eval()
