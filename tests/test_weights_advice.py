"""What a refusal of a generator file says to do, by where the file came from, as `srfeat upscale --model`'s user
meets it: a bundled model's file came with srfeat, so whatever is wrong with it, it is restored from srfeat's clone
(its user gave a bundled name: "give a bundled name", "name it .pt" or "use an earlier checkpoint" were said of
it); a user's own file is downloaded or copied again, or another given. Each refusal is one line ending so."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from inference_helpers import tiny_generator
from safetensors.torch import load, save_file
from weights_helpers import bundled_copy, pickle_cut_to, pickle_length, rezipped, upscale_error, upscale_errors

from srfeat.weights import bundled_dir

BUNDLED_AGAIN = (
    "it came with srfeat: restore it from srfeat's clone (git checkout -- srfeat/weights) or reinstall srfeat"
)
CHECKPOINT_AGAIN = "download or copy it again, or give another checkpoint"


def _html_page(path: Path) -> None:
    path.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")


def _text(path: Path) -> None:
    path.write_text("hello world\n")


def _cut_in_its_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:64])


def _a_pytorch_checkpoint(path: Path) -> None:
    torch.save(load(path.read_bytes()), path)  # read whole first: load_file maps the file it replaces


def _another_layout(path: Path) -> None:
    state = tiny_generator().state_dict()
    del state["head.bias"]
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))


def _not_finite(path: Path) -> None:
    state = load(path.read_bytes())
    state["head.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(path))


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


# How default.safetensors was damaged, what the refusal says it is, and what it said to do before.
DAMAGES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "an HTML page": (_html_page, "default.safetensors is an HTML page; it came", "a download that saved a web page"),
    "a text file": (_text, "is a text file (it begins 'hello world')", "give a bundled name"),
    "cut in its header": (_cut_in_its_header, "is a damaged safetensors file", "copy it again"),
    "a PyTorch checkpoint": (
        _a_pytorch_checkpoint,
        "is a PyTorch checkpoint (a zip archive); it came",
        "name it .pt",
    ),
    "another layout": (_another_layout, "missing key(s) head.bias", ""),
    "not finite": (_not_finite, "weights are not finite (NaN or inf): 1 value(s) in head.weight", "earlier"),
    "a folder": (_a_folder, "default.safetensors is not a file", "give a generator file in it"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_bundled_model_says_to_restore_it_whatever_is_wrong_with_it(tmp_path: Path, damage: str) -> None:
    make, what, said_before = DAMAGES[damage]
    package = bundled_copy(tmp_path)
    make(package / "default.safetensors")
    line = upscale_error(tmp_path, package, "default")
    assert f"{package / 'default.safetensors'}" in line and what in line, line
    assert line.endswith(f"; {BUNDLED_AGAIN}"), line
    assert not said_before or said_before not in line, line


def _cut_short_in_its_pickle(path: Path) -> None:
    """Its data.pkl cut in half: the unpickler's EOFError, refused as "damaged" with nothing to do, then as "damaged,
    or not an SRFeat generator (EOFError)"."""
    whole = path.with_name("whole.pt")
    with zipfile.ZipFile(whole) as archive:
        pickle_name = next(name for name in archive.namelist() if name.endswith("/data.pkl"))
        pickled = archive.read(pickle_name)
    rezipped(whole, path, {pickle_name: pickled[: len(pickled) // 2]})


def _a_record_cut_short(path: Path) -> None:
    """A tensor's record (not the last) cut to 16 bytes: the tensor that maps to it has no record of its size."""
    whole = path.with_name("whole.pt")
    with zipfile.ZipFile(whole) as archive:
        records = [info for info in archive.infolist() if "/data/" in info.filename]
    middle = max(records[:-1], key=lambda info: info.file_size)
    rezipped(whole, path, {middle.filename: b"\0" * 16})


def _too_many_tensors(path: Path) -> None:
    """A header of 100,001 one-value tensors: refused from the header, before its layout is looked at."""
    save_file({f"t{index}": torch.zeros(1) for index in range(100_001)}, str(path))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


OWN_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty.pt": (_empty, "empty.pt is empty (0 bytes), not generator weights: did a download or copy not finish?"),
    "page.safetensors": (_html_page, "page.safetensors is an HTML page, not generator weights: a download that"),
    "cut.pt": (_cut_short_in_its_pickle, "cut.pt is not a complete checkpoint: its pickled contents are cut short"),
    "record.pt": (_a_record_cut_short, "bytes has no record of that size)"),
    "other.safetensors": (_another_layout, "other.safetensors does not match the SRFeat generator architecture"),
    "many.safetensors": (_too_many_tensors, "many.safetensors holds 100,001 tensors; an SRFeat generator has a few"),
}


@pytest.mark.parametrize("name", list(OWN_FILES))
def test_a_users_damaged_or_foreign_checkpoint_says_to_copy_it_again_or_give_another(tmp_path: Path, name: str) -> None:
    """These said what was wrong (of the empty file and the web page, a guess at why) and no more; too many tensors
    was said inside "cannot read: damaged (...)"."""
    make, what = OWN_FILES[name]
    torch.save(tiny_generator().state_dict(), tmp_path / "whole.pt")
    make(tmp_path / name)
    line = upscale_error(tmp_path, bundled_dir(), name)
    assert what in line and line.endswith(CHECKPOINT_AGAIN), line
    assert line.count(name) == 1, line


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "pre-1.6"])
def test_a_checkpoint_whose_pickle_is_cut_short_anywhere_is_called_incomplete(tmp_path: Path, zipped: bool) -> None:
    """torch's safe unpickler reads a global's name up to a newline the cut left out: a data.pkl cut to 3 bytes was
    refused as "it holds pickled Python objects (.), not only tensors, and loading them could run code", one cut in
    `torch.FloatStorage` as holding torch.FloatSt; cut elsewhere, "damaged, or not an SRFeat generator" with
    EOFError, "index out of range" or "unpack requires a buffer of 4 bytes". Every byte of the pickle's start (its
    globals, first names and numbers) is a cut point, then one in every 97 bytes to its end."""
    whole = tmp_path / "whole.pt"
    torch.save(tiny_generator().state_dict(), whole, _use_new_zipfile_serialization=zipped)
    end = pickle_length(whole)
    cuts = [*range(0 if zipped else 1, 150), *range(150, end, 97)]  # the older format's file cut to 0 is empty
    models = [pickle_cut_to(whole, tmp_path / f"cut{length}.pt", length).name for length in cuts]
    for model, line in zip(models, upscale_errors(tmp_path, models), strict=True):
        assert line.startswith(f"ERROR: {model} is not a complete checkpoint: its pickled contents are cut short"), line
        assert line.endswith(f"; {CHECKPOINT_AGAIN}") and "pickled Python objects" not in line, line
