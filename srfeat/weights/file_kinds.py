"""What a weights file is, from its first bytes, so that a refusal says what the file is.

Loaders used to try the reader the file's extension names and report that reader's failure:
a PNG renamed `.pt` was called "pickled Python objects" (the unpickler's complaint about its first
byte), an ONNX file "pickled objects" too, a text file "(101)", a `.pt` renamed `.safetensors`
"header too large". `identify_file` looks at the magic numbers instead (it reads 4 KB, and a zip's
list of entries), and `torch_load_quietly` runs `torch.load(weights_only=True)` without the
warning torch prints before a refusal.
"""

from __future__ import annotations

import difflib
import io
import os
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from srfeat.library_warnings import WARNINGS_LOCK
from srfeat.path_checks import broken_link, file_on_the_way, special_file_kind, utf8_path
from srfeat.varint import read_varint

__all__ = [
    "DAMAGED_ZIP",
    "DAMAGED_ZIP_ERRORS",
    "ONNX",
    "PICKLE",
    "PYTORCH",
    "SAFETENSORS",
    "DamagedRecordError",
    "FileKind",
    "compressed_records",
    "damaged_record",
    "identify_file",
    "named_safetensors",
    "named_tensorflow_checkpoint",
    "not_a_weights_file",
    "pickle_cut_short",
    "tensor_records",
    "torch_load_quietly",
    "unpickling_problem",
]

SAFETENSORS = "safetensors"
PYTORCH = "pytorch"  # torch.save's zip archive, or its older format (a pickle that starts with torch's magic number)
PICKLE = "pickle"  # any other pickle: not written by torch.save, and it may hold any Python object
ONNX = "onnx"
DAMAGED_ZIP = "damaged zip"  # a zip archive whose list of entries is gone or unreadable: torch cannot read it either
# What zipfile raises for an archive whose records are damaged, besides OSError: NotImplementedError too, for a
# "version needed to extract" or compression method it does not know (a flipped bit: "zip file version 6.4")
DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, EOFError)


def named_safetensors(path: Path) -> bool:
    """Whether `path`'s name says safetensors: `.safetensors` in any case, as other tools read it (a
    MODEL.SAFETENSORS was told to be named .safetensors, which it was)."""
    return path.suffix.lower() == ".safetensors"


def only_the_safetensors_suffix(path: Path) -> bool:
    """Whether `path`'s name is `.safetensors` and nothing before it: it ends in .safetensors, but Python
    reads it as a hidden file with no suffix, and "must end in .safetensors (e.g. .safetensors.safetensors)"
    was what its user was told."""
    return path.name.lower() == ".safetensors"


def named_tensorflow_checkpoint(path: Path) -> bool:
    """Whether `path`'s name is one of a TensorFlow checkpoint's files (a .ckpt name, .index, .meta,
    .data-00000-of-00001), in any case: MODEL.INDEX, as a Windows copy or a zip tool may leave it, too."""
    name = path.name.lower()
    return ".ckpt" in name or name.endswith((".index", ".meta")) or ".data-0" in name


def not_a_weights_file(path: Path, bundled: list[str]) -> str | None:
    """Why `path` is no generator file to read (a folder, a pipe or device named as such, nothing there,
    with the bundled name it may have meant), or None when it is a file."""
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as error:  # a name longer than the file system takes (Errno 36): was a traceback
        return f"cannot read {path}: {error.strerror or error}; give a checkpoint path"
    if is_dir:
        return f"{path} is a folder: give a generator file in it (.safetensors or .pt) or a bundled name"
    if is_file:
        return None
    if kind := special_file_kind(path):
        return f"generator weights {path} is {kind}, not a file: give a checkpoint file or a bundled name"
    if reason := broken_link(path):
        return f"generator weights {path}: {reason}: give a checkpoint file or a bundled name"
    if (in_the_way := file_on_the_way(path)) is not None:
        return (
            f"generator weights {path}: {in_the_way} is a file, not a folder: give a checkpoint file or a bundled name"
        )
    # `GAN`, `default.safetensors`: the bundled names are lower case and taken without a suffix
    stem = path.name.lower().removesuffix(".safetensors")
    bare = path.parent == Path() and "." not in stem
    close = difflib.get_close_matches(stem, bundled, n=1) if bare else []
    hint = f"did you mean the bundled {close[0]!r}? " if close else ""
    names = ", ".join(bundled) or "none installed"
    return f"generator weights not found: {path} ({hint}give a bundled name: {names}, or a checkpoint path)"


# torch.save's older format: a protocol-2 pickle of its magic number (a LONG1 of 10 bytes) first.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Magic numbers of files people mistake for weights, or that a download leaves instead:
# (magic, what the file is, what to do about it).
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ""),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"GIF8", "a GIF image", ""),
    (b"II*\x00", "a TIFF image", ""),
    (b"MM\x00*", "a TIFF image", ""),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file", "Keras or TensorFlow weights? srfeat reads .safetensors and .pt"),
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first"),
    (b"version https://git-lfs", "a Git LFS pointer", "fetch the file it stands for (git lfs pull)"),
)
# The fields of an ONNX ModelProto after ir_version (field 1), as protobuf writes them: field
# numbers 2-8 and 14 with their wire types (producer_name ... opset_import, metadata_props).
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class FileKind:
    """`name`: SAFETENSORS, PYTORCH, PICKLE, ONNX, DAMAGED_ZIP or "other"; `description`: what it is, for a
    message; `hint`: what to do about it, where there is something more to say."""

    name: str
    description: str
    hint: str = ""


def identify_file(path: str | os.PathLike[str]) -> FileKind:
    """What the file at `path` holds, judged from its content (never its name)."""
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    size = path.stat().st_size
    if not head:
        return FileKind("other", "empty (0 bytes)", "did a download or copy not finish?")
    if _is_safetensors(head, size):
        return FileKind(SAFETENSORS, "a safetensors file")
    if head[8:10] == b'{"':  # a header length, then JSON, but the length does not fit the file
        return FileKind(
            "other", "a damaged safetensors file (its header runs past the end)", "truncated? copy it again"
        )
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip archive (an empty one too)
        return _zip_kind(path)
    # one cut inside its magic number too: it was called a pickle torch.save did not write, or (1 byte) a text file
    if head.startswith(_TORCH_LEGACY_MAGIC) or _TORCH_LEGACY_MAGIC.startswith(head):
        return FileKind(PYTORCH, "a PyTorch checkpoint of the older format (a pickle)")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle's PROTO opcode
        return FileKind(PICKLE, f"a Python pickle (protocol {head[1]}) that torch.save did not write")
    for magic, description, hint in _MAGIC:
        if head.startswith(magic):
            return FileKind("other", description, hint)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FileKind("other", "a WebP image")
    if _is_onnx(head):
        return FileKind(ONNX, "an ONNX model")
    text = _text(head)
    if text is not None:
        if re.match(r"\s*<(!doctype html|html)", text, re.IGNORECASE):
            return FileKind("other", "an HTML page", "a download that saved a web page instead of the file?")
        snippet = " ".join(text.split())[:40]
        return FileKind("other", f"a text file (it begins {snippet!r})")
    return FileKind("other", f"of an unknown format (it begins with the bytes {head[:8].hex(' ')})")


def _is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length that fits the file, then the header's JSON `{`."""
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return 2 <= header_length <= size - 8 and head[8:9] == b"{"


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (*DAMAGED_ZIP_ERRORS, OSError):  # torch.load said "[Errno 22] Invalid argument", or more
        return FileKind(
            DAMAGED_ZIP,
            "a zip archive cut short or damaged (a checkpoint whose download or copy did not finish?)",
            "download or copy it again",
        )
    if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return FileKind(PYTORCH, "a PyTorch checkpoint (a zip archive)")
    if names and all(name.endswith(".npy") for name in names):
        return FileKind(
            "other",
            "a NumPy .npz archive",
            "the authors' weights? srfeat convert FILE -o out.safetensors makes a checkpoint of them",
        )
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return FileKind("other", f"a zip archive that is not a PyTorch checkpoint (it holds {shown or 'nothing'})")


def _is_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with ir_version (field 1, a small varint), then one of its other fields."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    if (read := read_varint(head, 1)) is None:
        return False
    version, position = read
    return 1 <= version <= 100 and position < len(head) and head[position] in _ONNX_NEXT_TAGS


def _text(head: bytes) -> str | None:
    """The head as text, if it is printable UTF-8 (a multi-byte character cut at the end is allowed)."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text if all(char.isprintable() or char in "\t\r\n\f" for char in text) else None
    return None


def tensor_records(path: Path) -> list[zipfile.ZipInfo]:
    """The tensor records (`<archive>/data/<key>`) of a torch.save zip archive, from its list of entries.

    torch's reader trusts them: unmapped, it inflates a compressed record whole before it compares its
    size with the tensor's (a 2 MB file deflated from 2 GB of zeros took 2 GB); memory-mapped, it takes
    a tensor's bytes from where its record starts, whatever the record's length or compression.
    Raises one of `DAMAGED_ZIP_ERRORS` (or OSError) for what is no readable zip archive.
    """
    with zipfile.ZipFile(path) as archive:
        return [info for info in archive.infolist() if re.fullmatch(r"[^/]+/data/\d+", info.filename)]


def compressed_records(records: Iterable[zipfile.ZipInfo]) -> bool:
    """Whether any of a torch.save zip's tensor `records` (`tensor_records`) is compressed (torch.save stores
    them as they are: such a file was zipped again, or made to inflate to more than it holds)."""
    return any(record.compress_type != zipfile.ZIP_STORED for record in records)


# torch's words for a file it cannot read, in srfeat's: its zip reader's (miniz's, which goes on with sentences of
# advice), and a tensor whose stored bytes do not fit it (the last one prints its C format, "%ld").
_INCOMPLETE_ZIP = "its zip archive is cut short or damaged"
_INCOMPLETE_LEGACY = "it ends before its tensors' data does"  # a pre-1.6 (not zipped) file cut short
_INCOMPLETE_PICKLE = "its pickled contents are cut short"
_TORCH_REASONS = (
    ("PytorchStreamReader failed", _INCOMPLETE_ZIP),
    ("unexpected EOF", _INCOMPLETE_LEGACY),
    ("Trying to resize storage that is not resizable", "a tensor's data runs past the end of the file"),
    ("storage has wrong byte size", "a tensor's stored size is not the size its shape needs"),
)
# safetensors' words for a header it cannot read (its JSON, a tensor's dtype, shape or offsets) were shown as they
# were, "Error while deserializing header: invalid JSON in header: key must be a string at line 1 column 2"
_SAFETENSORS_HEADER = "Error while deserializing header: "


def unpickling_problem(error: BaseException, path: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """What an error of `torch.load(weights_only=True)` means, and its reason in one line of srfeat's words.

    "objects": the file holds a global the safe unpickler would not call (objects other than
    tensors); "opcodes": its pickle uses instructions the safe unpickler does not read (a
    protocol above 3, say), so what it holds is unknown; "incomplete": torch's zip reader failed, or
    a pre-1.6 file ended early (a download or copy that did not finish, or a damaged file);
    "header": safetensors could not read the header of a file that starts as one (the reason says
    what is wrong with it); "damaged": anything else.

    `path`, the file torch read, is looked at when given: a pickle cut short is "incomplete" whatever torch made of
    it. Its unpickler reads a global's name up to a newline the cut left out, so `ctorch\nFloatSt` was refused as
    "Unsupported global: GLOBAL torch.FloatS" (and a data.pkl cut to 3 bytes as GLOBAL "."): called pickled
    Python objects, not a damaged file; elsewhere it raised EOFError, IndexError or struct's "unpack requires".
    """
    text = str(error)
    if isinstance(error, DamagedRecordError):
        return "damaged", text
    if text.startswith(_SAFETENSORS_HEADER):
        return "header", _safetensors_header_problem(text.removeprefix(_SAFETENSORS_HEADER))
    if path is not None and pickle_cut_short(Path(path)):
        return "incomplete", _INCOMPLETE_PICKLE
    lines = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    name = type(error).__name__
    reason = lines[0].strip() if lines else name
    if isinstance(error, pickle.UnpicklingError):
        if re.match(r"invalid load key|pickle data was truncated", reason):
            return "damaged", reason
        return ("opcodes" if reason.startswith("Unsupported operand") else "objects"), reason
    reason = reason.split(". ")[0]  # torch's zip reader adds sentences of advice
    if " " not in reason and reason != name:  # a bare key or number (KeyError: 101) means nothing alone
        reason = f"{name}: {reason}"
    words = next((words for start, words in _TORCH_REASONS if reason.startswith(start)), reason)
    return ("incomplete" if words in (_INCOMPLETE_ZIP, _INCOMPLETE_LEGACY) else "damaged"), words


# The most of a pickle `pickle_cut_short` reads (a generator's is some 100 KB); a longer one is not judged.
_MAX_PICKLE_BYTES = 64 * 2**20
# The pickles a pre-1.6 torch.save writes before its tensors' data: magic number, protocol, system, object, storages.
_LEGACY_PICKLES = 5


def pickle_cut_short(path: Path) -> bool:
    """Whether the pickle torch.load reads from `path` (a zip checkpoint's data.pkl; the pickles that begin a file of
    the older format) ends before its STOP: its instructions are read (`pickletools.genops`, which runs nothing) to
    the end of the bytes there are. False for what is no such file, or a pickle read to its end."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                record = next(info for info in archive.infolist() if info.filename.rsplit("/", 1)[-1] == "data.pkl")
                if record.file_size > _MAX_PICKLE_BYTES:
                    return False
                return _ends_in_a_pickle(archive.read(record), 1, whole=True)
        with path.open("rb") as handle:
            head = handle.read(1)
            if head != _TORCH_LEGACY_MAGIC[:1]:  # no pickle (a safetensors file, say): not read further
                return False
            head += handle.read(_MAX_PICKLE_BYTES - 1)
        return _ends_in_a_pickle(head, _LEGACY_PICKLES, whole=len(head) == path.stat().st_size)
    except (StopIteration, *DAMAGED_ZIP_ERRORS, OSError):  # no data.pkl, or not readable
        return False


def _ends_in_a_pickle(data: bytes, count: int, whole: bool) -> bool:
    """Whether `data` ends inside the first `count` pickles it holds (`whole`: it is all the file holds; if not, a
    pickle running past its end says nothing). A pickle that cannot be read before its end is damaged, not cut."""
    stream = io.BytesIO(data)
    try:
        for _ in range(count):
            for _ in pickletools.genops(stream):
                pass
    except ValueError:  # "pickle exhausted before seeing STOP", an argument's bytes or newline missing, or damage
        return whole and stream.tell() >= len(data)
    return False


class DamagedRecordError(ValueError):
    """A torch.save zip archive's record that torch would read without a word, and wrongly (`damaged_record`)."""


def torch_load_quietly(path: str | os.PathLike[str], **options: Any) -> Any:
    """`torch.load(path, weights_only=True, **options)` without torch's own two-line warnings (a pickle protocol it
    did not write, a quantized tensor's storage and type): they came before srfeat's one-line refusal. A name that is
    not UTF-8 is opened through a descriptor (`srfeat.path_checks.utf8_path`): torch's reader refused it.
    A zip archive whose records are damaged where torch's reader does not look is refused first (`damaged_record`)."""
    # the filters are process-wide (web worker, requests)
    with utf8_path(path) as name, WARNINGS_LOCK, warnings.catch_warnings():
        if (damage := damaged_record(name)) is not None:
            raise DamagedRecordError(damage)
        # torch's own as it reads: of a pickle protocol, and of the storage and deprecated type of a quantized tensor
        # (which srfeat then refuses)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
        return torch.load(name, weights_only=True, **options)


# How much of a record `damaged_record` reads at a time.
_CHECKSUM_CHUNK = 2**20


def damaged_record(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the first record of the zip archive at `path` whose bytes do not match their CRC-32, or
    whose local header names another file than the archive's list of entries, or None.

    torch's reader looks at neither: a flipped bit in a tensor's bytes loaded as a changed weight, and a name length
    one short in a record's header had a tensor read from one byte on (garbage, trained on until the run diverged),
    without a word. Only stored records are read (torch.save stores every one; a compressed one is for its reader to
    refuse, not to inflate here); one whose checksum is 0, torch.save's without its `compute_crc32`, has none. What is
    no readable zip archive is left to torch, whose errors say what is wrong with it.
    """
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.compress_type != zipfile.ZIP_STORED:
                    continue
                try:
                    with archive.open(record) as data:  # its header is compared with the list's entry here, and
                        while record.CRC and data.read(_CHECKSUM_CHUNK):  # its checksum once its last byte is read
                            pass
                except (zipfile.BadZipFile, UnicodeDecodeError) as error:
                    if str(error).startswith("Bad CRC-32"):
                        return (
                            f"its record {record.filename} does not match its CRC-32 checksum, so its bytes changed "
                            "after it was written"
                        )
                    # a name length made 65534 read the record's bytes as its name, which are no UTF-8
                    if isinstance(error, UnicodeDecodeError) or str(error).startswith("File name in directory"):
                        return (
                            f"the header of its record {record.filename} names another file, so torch would read "
                            "the record's data from the wrong place"
                        )
                    raise
    except (*DAMAGED_ZIP_ERRORS, OSError):
        return None
    return None


def _safetensors_header_problem(detail: str) -> str:
    """What safetensors' `detail` on a header it could not read means, in plain words."""
    if detail.startswith("incomplete metadata"):  # the tensors' offsets do not end where the file does
        return "its data is not the size its header says (cut short, or with bytes added)"
    if found := re.search(r"unknown variant `(\w+)`", detail):  # went on with the 20 dtypes it knows
        return (
            f"its header names a tensor type safetensors does not know ({found.group(1)}): damaged, or saved by a "
            "newer safetensors"
        )
    return "its header is damaged or it is not a safetensors file"
