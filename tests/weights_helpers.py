"""Damaged checkpoint files, as a copy or a disk leaves them, for the loaders' refusals."""

from __future__ import annotations

import io
import pickletools
import shutil
import zipfile
from pathlib import Path

from cli_helpers import one_error_line, python_code
from PIL import Image

from srfeat.weights import bundled_dir, bundled_names


def damage_first_tensor_record(source: Path, target: Path) -> Path:
    """`source` (a torch.save zip) written to `target` with its first tensor record's local header overwritten:
    the zip's list of entries still reads, and torch's zip reader fails on the record ("PytorchStreamReader failed
    reading file data/0: invalid header or archive is corrupted. This is an internal miniz error. ...")."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    data[record.header_offset : record.header_offset + 4] = b"XXXX"
    target.write_bytes(bytes(data))
    return target


def flip_a_tensor_bit(path: Path, record_name: str = "data/0") -> Path:
    """`path` (a torch.save zip) with one bit of a tensor record's bytes flipped in place, its CRC-32 left as it
    was: what a bad copy or disk makes of a file, which torch's reader loads as a changed weight."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith(f"/{record_name}"))
    local = record.header_offset  # the local header: 30 bytes, then the name and an extra field
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    data[start + record.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def with_record_name_length(path: Path, record_name: str = "data/0", length: int | None = None) -> Path:
    """`path` (a torch.save zip) with the name length in a tensor record's local header made `length` (one less by
    default), as a flipped bit makes it: torch's reader takes the record's data to start that much off."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith(f"/{record_name}"))
    at = record.header_offset + 26  # the local header's name length
    old = int.from_bytes(data[at : at + 2], "little")
    data[at : at + 2] = (old - 1 if length is None else length).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


def rezipped(source: Path, target: Path, record_bytes: dict[str, bytes], deflate: bool = False) -> None:
    """`source`, a torch.save zip, written again with the given records' bytes replaced (in place: order kept)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = record_bytes.get(info.filename, old.read(info.filename))
            new.writestr(info.filename, data, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)


# The child: srfeat's command line with the bundled models read from the folder its first argument names, so that
# a test damages its copy of them, never the real files in srfeat/weights.
_PACKAGE_IN = """
import sys
from pathlib import Path
import srfeat.weights
folder = Path(sys.argv.pop(1))
srfeat.weights.bundled_dir = lambda: folder
from srfeat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def bundled_copy(folder: Path) -> Path:
    """`folder`/package, a copy of the bundled models' files for a test to damage (`upscale_error` reads it)."""
    package = folder / "package"
    package.mkdir()
    for name in bundled_names():
        shutil.copy(bundled_dir() / f"{name}.safetensors", package)
    return package


def upscale_error(folder: Path, package: Path, model: str) -> str:
    """The one error line of `srfeat upscale x.png -o out/ --model MODEL` run in `folder`, the bundled models
    read from `package` (`bundled_copy`'s); nothing was written."""
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    child = python_code(_PACKAGE_IN, package, "upscale", "x.png", "-o", "out/", "--model", model, cwd=folder)
    line = one_error_line(child)
    assert not (folder / "out").exists(), line
    return line


def pickle_cut_to(source: Path, target: Path, length: int) -> Path:
    """`source`, a torch.save file, written to `target` with its pickle cut to `length` bytes: a zip checkpoint's
    data.pkl record (the zip around it whole), or the file itself in the older format (its pickles come first)."""
    if not zipfile.is_zipfile(source):
        target.write_bytes(source.read_bytes()[:length])
        return target
    with zipfile.ZipFile(source) as archive:
        name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        pickled = archive.read(name)
    rezipped(source, target, {name: pickled[:length]})
    return target


def pickle_length(source: Path) -> int:
    """How many bytes of a torch.save file are its pickles: a zip's data.pkl; in the older format, the five
    (magic number, protocol, system, the object, its storages' keys) before its tensors' data."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            return next(info.file_size for info in archive.infolist() if info.filename.endswith("/data.pkl"))
    stream = io.BytesIO(source.read_bytes())
    for _ in range(5):
        for _ in pickletools.genops(stream):
            pass
    return stream.tell()


# The child: srfeat's command line run once for each model it is given, one after another, each run's exit status
# written after its lines, so that many files are refused with torch imported once.
_EACH_MODEL = """
import sys
from srfeat.cli import main
for model in sys.argv[1:]:
    status = main(["upscale", "x.png", "-o", "out/", "--model", model])
    print(f"exit {status}", file=sys.stderr, flush=True)
"""


def upscale_errors(folder: Path, models: list[str]) -> list[str]:
    """The one error line of each `srfeat upscale x.png -o out/ --model MODEL` run in `folder`, `models` one after
    another in one child process; each ended with exit status 1, no traceback, and nothing was written."""
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    child = python_code(_EACH_MODEL, *models, cwd=folder)
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr[-3000:]
    errors: list[str] = []
    run: list[str] = []
    for line in child.stderr.splitlines():
        if line.startswith("exit "):
            assert line == "exit 1" and len(run) == 1, (models[len(errors)], run, line)
            errors.append(run[0])
            run = []
        elif line.startswith("ERROR"):
            run.append(line)
    assert len(errors) == len(models) and not (folder / "out").exists(), child.stderr[-3000:]
    return errors
