"""What `srfeat convert` and `load_authors_generator` refuse, each in one line saying what the file is and
what to do: files of another kind or layout, pickles that would run code or crash NumPy, zip bombs, and
weights that are NaN, exploded, negative variances or beyond float32. The files are written in the authors'
layout (authors_helpers.py) and then spoiled; the conversion itself is test_authors_weights.py's.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_helpers import random_params, rewritten_entry, tensorlayer_order, write_tensorlayer_npz
from cli_helpers import one_error_line, srfeat_cli
from numpy.lib import format as npy_format

from srfeat.errors import WeightsError
from srfeat.weights.authors import load_authors_generator, read_tensorlayer_npz


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (str(EXPLOIT_MARKER),))


EXPLOIT_MARKER = Path("/nonexistent")


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setattr(sys.modules[__name__], "EXPLOIT_MARKER", marker)
    container = np.empty(2, dtype=object)
    container[0], container[1] = np.zeros((9, 9, 3, 8), np.float32), _Exploit()
    npz = tmp_path / "evil.npz"
    np.savez(npz, params=container)
    with pytest.raises(WeightsError, match=r"refusing to load posix\.mkdir") as error:
        read_tensorlayer_npz(npz)
    assert not marker.exists()
    assert "\n" not in str(error.value)


def _layouts(tmp_path: Path) -> dict[str, Path]:
    params = random_params(8, 2, 2)
    arrays = tensorlayer_order(params, 2, 2)
    files = {
        "no params entry": tmp_path / "named.npz",
        "one numeric array": tmp_path / "stacked.npz",
        "missing output conv": write_tensorlayer_npz(tmp_path / "short.npz", arrays[:-2]),
        "an extra array": write_tensorlayer_npz(tmp_path / "long.npz", [*arrays, arrays[-1]]),
        "a BatchNorm vector short": write_tensorlayer_npz(tmp_path / "bn.npz", arrays[:3] + arrays[4:]),
        "not an npz": tmp_path / "text.npz",
    }
    np.savez(files["no params entry"], *arrays)  # arr_0, arr_1, ...: no "params"
    np.savez(files["one numeric array"], params=np.zeros((4, 3)))
    files["not an npz"].write_text("hello")
    return files


@pytest.mark.parametrize(
    "case, message",
    [
        ("no params entry", "has no 'params' entry"),
        ("one numeric array", "not a list of arrays"),
        ("missing output conv", "the file ends at 27 arrays, expected the output conv of shape \\(3, 3, 8, 3\\)"),
        (
            "a BatchNorm vector short",
            "array 6 has shape \\(3, 3, 8, 8\\), expected block 1's bn1 moving variance of shape \\(8,\\)",
        ),
        ("an extra array", "1 array\\(s\\) after the output conv's bias"),
        ("not an npz", "is not an .npz file"),
    ],
)
def test_a_file_of_another_layout_says_what_was_expected(tmp_path: Path, case: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message) as error:
        load_authors_generator(_layouts(tmp_path)[case])
    assert "expected tensorlayer's save_npz of the authors' generator" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_float64_value_beyond_float32_is_one_line_naming_it(tmp_path: Path) -> None:
    # float64 arrays convert (float32 is what the authors saved); a value float32 cannot hold was cast to
    # inf with NumPy's RuntimeWarning and its source line on stderr, then called "diverged: use an
    # earlier checkpoint". One line names the array and the value now, and nothing is written.
    arrays = [array.astype(np.float64) for array in tensorlayer_order(random_params(8, 2, 2), 2, 2)]
    arrays[2][0, 0, 0, 0] = 1e300  # block 1's first conv
    npz = write_tensorlayer_npz(tmp_path / "wide.npz", arrays)
    out = tmp_path / "wide.safetensors"
    result = srfeat_cli("convert", str(npz), "-o", str(out))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "array 2 (block 1's conv1) holds 1 value(s) too large for float32, up to 1e+300" in result.stderr
    assert not out.exists()
    arrays[2][0, 0, 0, 0] = 0.5  # within float32's range: float64 files convert as before
    generator = load_authors_generator(write_tensorlayer_npz(tmp_path / "fine.npz", arrays))
    assert float(generator.state_dict()["body.0.conv1.weight"][0, 0, 0, 0]) == 0.5


@pytest.mark.parametrize(
    ("index", "value", "says"),
    [
        (2, np.nan, "it holds NaN/infinite weights: 3 of 576 values in array 2 (block 1's conv1); it cannot be used"),
        (0, -np.inf, "it holds NaN/infinite weights: 3 of 1,944 values in array 0 (the head conv); it cannot be used"),
        (2, 3e7, "its weights have exploded: array 2 (block 1's conv1) reaches 3e+07, where trained generators"),
        (6, -1.0, "negative BatchNorm variances, which no training writes: 3 of 8 values in array 6 (block 1's bn1"),
    ],
)
def test_unusable_weights_in_an_npz_are_named_without_blaming_a_srfeat_run(
    tmp_path: Path, index: int, value: float, says: str
) -> None:
    # Before: "weights are not finite ...; the run that wrote it diverged: use an earlier checkpoint", of the
    # authors' download or a TensorFlow run's file, which no srfeat run wrote and which has no earlier checkpoint.
    arrays = tensorlayer_order(random_params(8, 2, 2), 2, 2)
    arrays[index].flat[:3] = value
    out = tmp_path / "out.safetensors"
    line = one_error_line(srfeat_cli("convert", write_tensorlayer_npz(tmp_path / "w.npz", arrays), "-o", out))
    assert line.startswith(f"ERROR: {tmp_path / 'w.npz'}: ") and says in line and "the run that wrote it" not in line
    advice = (
        "damaged or edited: download the authors' file again" if value == -1.0 else "saved before the TensorFlow run"
    )
    assert advice in line and not out.exists()


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    # 300 MB of zeros declared in a 300 KB file: the entry was read whole (and copied) up to a 1 GiB
    # limit, 2.2 GB of memory for a 1 GB bomb; the authors' files are 25 MB.
    path = tmp_path / "bomb.npz"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("params.npy", "w") as entry,
    ):
        header = io.BytesIO()
        npy_format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        entry.write(header.getvalue())
        zeros = bytes(1 << 24)
        for _ in range(18):
            entry.write(zeros)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(WeightsError, match="unpacks to 301,990,016 bytes"):
        read_tensorlayer_npz(path)


def _wrong_files(tmp_path: Path) -> dict[str, Path]:
    """Files a user may hand to convert instead of the authors' .npz."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    good = write_tensorlayer_npz(tmp_path / "good.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2))
    files = {name: tmp_path / name for name in ("SRFeat_full.npz", "model.ckpt.index", "model.h5", "named.npz")}
    files["SRFeat_full.npz"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a download cut short
    # 4 bytes of the data gone: the end record's offsets place the entry 4 bytes before the file's start, and
    # zipfile's seek there failed with "Invalid argument", called a failed read
    files["SRFeat_init.npz"] = tmp_path / "SRFeat_init.npz"
    middle = good.stat().st_size // 2
    files["SRFeat_init.npz"].write_bytes(good.read_bytes()[:middle] + good.read_bytes()[middle + 4 :])
    files["model.ckpt.index"].write_bytes(bytes(64))
    files["model.h5"].write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    # pyright checks each unpacked value against savez's allow_pickle too, as if a name could be "allow_pickle".
    np.savez(files["named.npz"], **{f"layer{i}/W": np.zeros(1) for i in range(3000)})  # pyright: ignore[reportArgumentType]
    files["mine.safetensors"] = tmp_path / "mine.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2), files["mine.safetensors"])
    files["mine.pt"] = tmp_path / "mine.pt"
    torch.save(SRFeatGenerator(num_features=8, num_blocks=2).state_dict(), files["mine.pt"])
    return files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("SRFeat_full.npz", "is a zip archive cut short or damaged: download it again"),
        ("SRFeat_init.npz", "is a zip archive cut short or damaged: download it again"),
        ("model.ckpt.index", "is (part of) a TensorFlow checkpoint: srfeat convert reads the authors' tensorlayer"),
        ("model.h5", "is not an .npz file: it is an HDF5 file: expected tensorlayer's save_npz"),
        ("named.npz", "has no 'params' entry (it has layer0/W.npy, layer1/W.npy, layer2/W.npy, layer3/W.npy, "),
        ("mine.safetensors", "is a safetensors file, not the authors' weights"),
        ("mine.pt", "is a PyTorch checkpoint (torch.save), not the authors' weights"),
    ],
)
def test_convert_says_what_a_wrong_file_is(tmp_path: Path, name: str, message: str) -> None:
    # Each was "is not an .npz file (File is not a zip file)" (a truncated download too), a line of
    # 3,000 entry names, a PyTorch checkpoint's entries, or for a srfeat .safetensors given alone
    # "the output is the input": the file was never named for what it is.
    path = _wrong_files(tmp_path)[name]
    args = ("convert", path) if name == "mine.safetensors" else ("convert", path, "-o", tmp_path / "x.safetensors")
    child = srfeat_cli(*args)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) < 600, lines
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("kind", ["character device", "named pipe"])
def test_a_device_or_pipe_given_to_load_authors_generator_says_what_to_give(kind: str, tmp_path: Path) -> None:
    """From Python, `load_authors_generator("/dev/zero")` said "is a character device, not a file" and
    no more (`srfeat convert` had its own check, with the advice)."""
    import os

    from srfeat.errors import WeightsError
    from srfeat.weights.authors import load_authors_generator

    path = Path("/dev/zero")
    if kind == "named pipe":
        path = tmp_path / "SRFeat_full.npz"
        os.mkfifo(path)
    with pytest.raises(WeightsError) as refused:
        load_authors_generator(path)
    assert str(refused.value) == f"{path} is a {kind}{' (FIFO)' if kind == 'named pipe' else ''}, not a file: " + (
        "give the authors' SRFeat_init.npz or SRFeat_full.npz file"
    )


class _ArrayPickle:
    """Pickles as NumPy pickles an array, `_reconstruct(ndarray, made_as, b"b")` then its state, with
    the shape it is made as and the state's shape and items given."""

    def __init__(self, made_as: tuple[int, ...], shape: tuple[int, ...] | None = None, items: list | None = None):
        self.made_as, self.shape, self.items = made_as, shape, items

    def __reduce__(self):
        reconstruct = np.empty(0).__reduce__()[0]  # NumPy's _reconstruct, wherever this NumPy keeps it
        if self.shape is None:
            return (reconstruct, (np.ndarray, self.made_as, b"b"))
        return (reconstruct, (np.ndarray, self.made_as, b"b"), (1, self.shape, np.dtype(object), False, self.items))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # NumPy filled 1,000 items from a list of 2 and read the rest from memory it never set: a segfault
        (_ArrayPickle((0,), (1000,), [1.0, 2.0]), "an object array of shape (1000,) does not hold as many items"),
        # allocated at once, before anything was read: 2.4 GB from a 200-byte file
        (_ArrayPickle((300_000_000,)), "an array is made as (300000000,), not as NumPy's pickles make it"),
        (_ArrayPickle((0,), (1 << 40,), []), "an array of shape (1099511627776,), far beyond the generator's"),
    ],
    ids=["items short", "made large", "declared huge"],
)
def test_a_crafted_array_pickle_is_refused_in_one_line_before_numpy_takes_it(
    tmp_path: Path, params: _ArrayPickle, message: str
) -> None:
    entry = io.BytesIO()
    npy_format.write_array_header_1_0(entry, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    pickle.dump(params, entry, protocol=2)
    with zipfile.ZipFile(tmp_path / "crafted.npz", "w") as archive:
        archive.writestr("params.npy", entry.getvalue())
    result = srfeat_cli("convert", tmp_path / "crafted.npz", "-o", tmp_path / "out.safetensors")
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])  # -11 was the segfault
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("code", [b"M8", b"m8"])
def test_an_array_pickled_with_a_datetime_type_is_refused_without_crashing_numpy(tmp_path: Path, code: bytes) -> None:
    """A flipped type code (found by scripts/fuzz_models.py: 'f4' made 'M8'): NumPy's dtype.__setstate__, given a
    float's state for a datetime type, crashed the process (a segmentation fault, exit code -11)."""
    npz = write_tensorlayer_npz(tmp_path / "w.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2), protocol=2)
    rewritten_entry(npz, b"X\x02\x00\x00\x00f4", b"X\x02\x00\x00\x00" + code)  # the type code, a 2-char string
    result = srfeat_cli("convert", npz, "-o", tmp_path / "out.safetensors")
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])
    line = one_error_line(result)
    assert f"an array's type is '{code.decode()}', where floating-point numbers are expected" in line, line
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("name", ["MODEL.INDEX", "MODEL.META", "Model.Data-00000-Of-00001", "model.index"])
def test_a_tensorflow_checkpoint_is_named_so_whatever_the_case_of_its_name(tmp_path: Path, name: str) -> None:
    """MODEL.INDEX and .META (a name a Windows copy or a zip tool leaves) were "not an .npz file: it is of an
    unknown format", without the word that they are a TensorFlow checkpoint and how to convert one."""
    path = tmp_path / name
    path.write_bytes(bytes(64))
    with pytest.raises(WeightsError, match=r"is \(part of\) a TensorFlow checkpoint: .*tl\.files\.save_npz") as error:
        load_authors_generator(path)
    assert "\n" not in str(error.value)
