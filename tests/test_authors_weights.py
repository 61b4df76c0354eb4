"""`srfeat convert`: the authors' tensorlayer weights (SRFeat_full.npz) as a srfeat generator.

The real files cannot be downloaded here (and are AGPL). The test writes files in exactly
their layout, tensorlayer's `save_npz(net_g.all_params)` of the authors' `SRGAN_g`, from
named random parameters, and checks the converted generator against a NumPy forward pass
of that TF1 network with TF's semantics: NHWC, HWIO kernels, 'SAME' padding, BatchNorm on
moving statistics, `depth_to_space`, in [-1, 1].
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from numpy.lib import format as npy_format
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from srfeat.errors import WeightsError
from srfeat.weights import load_generator
from srfeat.weights.authors import load_authors_generator, read_tensorlayer_npz

Params = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- the authors' network


def random_params(features: int, blocks: int, stages: int, seed: int = 0) -> Params:
    """Named parameters of the authors' SRGAN_g (HWIO kernels), random but of a sane scale."""
    rng = np.random.default_rng(seed)

    def conv(name: str, k: int, cin: int, cout: int, bias: bool = True) -> None:
        params[f"{name}/W"] = rng.normal(0, 0.7 / np.sqrt(k * k * cin), (k, k, cin, cout)).astype(np.float32)
        if bias:
            params[f"{name}/b"] = rng.normal(0, 0.1, cout).astype(np.float32)

    def norm(name: str) -> None:
        params[f"{name}/beta"] = rng.normal(0, 0.1, features).astype(np.float32)
        params[f"{name}/gamma"] = rng.uniform(0.5, 1.5, features).astype(np.float32)
        params[f"{name}/moving_mean"] = rng.normal(0, 0.1, features).astype(np.float32)
        params[f"{name}/moving_variance"] = rng.uniform(0.5, 2.0, features).astype(np.float32)

    params: Params = {}
    conv("n64s1/c", 9, 3, features)
    for i in range(blocks):
        conv(f"n64s1/c1/{i}", 3, features, features, bias=False)
        norm(f"n64s1/b1/{i}")
        conv(f"n64s1/c2/{i}", 3, features, features, bias=False)
        norm(f"n64s1/b2/{i}")
        conv(f"n64s1/c3/{i}", 1, features, features, bias=False)  # built for every block, even the last
    for s in range(1, stages + 1):
        conv(f"n256s1/{s}", 3, features, 4 * features)
    conv("out", 3, features, 3)
    return params


def tensorlayer_order(params: Params, blocks: int, stages: int, with_unused_skip: bool = False) -> list[np.ndarray]:
    """net_g.all_params: the main chain in build order, then (appended by the ElementwiseLayer that
    sums them) the long-skip convs of blocks 1..blocks-1; block 16's is not in the sum, so not listed."""
    names = ["n64s1/c/W", "n64s1/c/b"]
    for i in range(blocks):
        for layer in ("c1", "b1", "c2", "b2"):
            if layer.startswith("c"):
                names.append(f"n64s1/{layer}/{i}/W")
            else:
                names += [f"n64s1/{layer}/{i}/{v}" for v in ("beta", "gamma", "moving_mean", "moving_variance")]
    names += [f"n64s1/c3/{i}/W" for i in range(blocks if with_unused_skip else blocks - 1)]
    for s in range(1, stages + 1):
        names += [f"n256s1/{s}/W", f"n256s1/{s}/b"]
    names += ["out/W", "out/b"]
    return [params[name] for name in names]


def write_tensorlayer_npz(path: Path, arrays: list[np.ndarray], protocol: int | None = None) -> Path:
    """np.savez(name, params=list): NumPy stores the list as one pickled object array.

    `protocol=2` writes the pickle as NumPy did for Python 3.4 in 2018 (bytes via _codecs.encode).
    """
    container = np.empty(len(arrays), dtype=object)
    for index, array in enumerate(arrays):
        container[index] = array
    if protocol is None:
        np.savez(path, params=container)
        return path
    entry = io.BytesIO()
    npy_format.write_array_header_1_0(entry, npy_format.header_data_from_array_1_0(container))
    pickle.dump(container, entry, protocol=protocol)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params.npy", entry.getvalue())
    return path


def conv_same(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """tf.nn.conv2d(x, W, strides 1, padding 'SAME'), NHWC x HWIO: pad (k-1)//2 before, the rest after."""
    kh, kw = weight.shape[:2]
    pad = ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0))
    windows = sliding_window_view(np.pad(x, pad), (kh, kw), axis=(1, 2))  # N, H, W, C, kh, kw
    y = np.tensordot(windows, weight, axes=([3, 4, 5], [2, 0, 1]))
    return y if bias is None else y + bias


def depth_to_space(x: np.ndarray, block: int) -> np.ndarray:
    """tf.depth_to_space (NHWC, DCR): output[h*r+i, w*r+j, c] = input[h, w, (i*r + j)*C + c]."""
    n, h, w, d = x.shape
    c = d // (block * block)
    return x.reshape(n, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, c)


def reference_forward(params: Params, x: np.ndarray, blocks: int, stages: int) -> np.ndarray:
    """SRGAN_g(is_train=False) of the authors' model.py, in float64, NHWC in [-1, 1]."""
    p = {k: v.astype(np.float64) for k, v in params.items()}

    def lrelu(v: np.ndarray) -> np.ndarray:
        return np.maximum(v, 0.2 * v)

    def batch_norm(v: np.ndarray, name: str) -> np.ndarray:
        scale = p[f"{name}/gamma"] / np.sqrt(p[f"{name}/moving_variance"] + 1e-5)
        return (v - p[f"{name}/moving_mean"]) * scale + p[f"{name}/beta"]

    n = conv_same(x, p["n64s1/c/W"], p["n64s1/c/b"])
    skips = []
    for i in range(blocks):
        nn = lrelu(batch_norm(conv_same(n, p[f"n64s1/c1/{i}/W"]), f"n64s1/b1/{i}"))
        nn = batch_norm(conv_same(nn, p[f"n64s1/c2/{i}/W"]), f"n64s1/b2/{i}")
        n = n + nn
        skips.append(conv_same(n, p[f"n64s1/c3/{i}/W"]))
    n = n + sum(skips[:-1])  # temp[0] .. temp[14]: the last block's skip is built, not added
    for s in range(1, stages + 1):
        n = lrelu(depth_to_space(conv_same(n, p[f"n256s1/{s}/W"], p[f"n256s1/{s}/b"]), 2))
    return conv_same(n, p["out/W"], p["out/b"])


def assert_matches_reference(generator: torch.nn.Module, params: Params, blocks: int, stages: int) -> None:
    lr = np.random.default_rng(1).random((2, 11, 13, 3))  # not square: a swapped H/W would show
    expected = (reference_forward(params, lr * 2 - 1, blocks, stages) + 1) / 2
    with torch.no_grad():
        ours = generator(torch.from_numpy(lr).permute(0, 3, 1, 2).float()).permute(0, 2, 3, 1).double().numpy()
    assert ours.shape == expected.shape == (2, 11 * 2**stages, 13 * 2**stages, 3)
    assert expected.std() > 0.02  # a real signal, not a flat image
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=2e-4 * np.abs(expected).max())


# ----------------------------------------------------------------------------- tests


def test_the_papers_generator_converts_and_matches_tf(tmp_path: Path) -> None:
    """Full size (128 features, 16 blocks, x4), through the command a user runs, then upscale."""
    params = random_params(128, 16, 2)
    arrays = tensorlayer_order(params, 16, 2)
    assert len(arrays) == 2 + 16 * 10 + 15 + 2 * 2 + 2 == 183
    npz = write_tensorlayer_npz(tmp_path / "SRFeat_full.npz", arrays)
    out = tmp_path / "authors.safetensors"
    result = srfeat_cli("convert", str(npz), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "x4, 128 features, 16 blocks, 6,187,907 parameters" in result.stderr
    generator = load_generator(out)
    assert_matches_reference(generator, params, 16, 2)

    image = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(2).random((12, 10, 3)) * 255).astype(np.uint8)).save(image)
    result = srfeat_cli("upscale", str(image), "--model", str(out), "-o", str(tmp_path / "sr.png"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "sr.png").size == (40, 48)
    benchmark = tmp_path / "benchmark"
    benchmark.mkdir()
    Image.fromarray((np.random.default_rng(3).random((32, 40, 3)) * 255).astype(np.uint8)).save(benchmark / "a.png")
    result = srfeat_cli("eval", "--model", str(out), "--data", str(benchmark), "--metrics", "psnr", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "authors" in result.stdout and "benchmark" in result.stdout


@pytest.mark.parametrize("stages", [1, 2], ids=["x2", "x4"])
def test_other_widths_and_scales_convert_too(tmp_path: Path, stages: int) -> None:
    params = random_params(8, 3, stages, seed=stages)
    npz = write_tensorlayer_npz(tmp_path / "g.npz", tensorlayer_order(params, 3, stages))
    generator = load_authors_generator(npz)
    assert (generator.scale, generator.num_features, generator.num_blocks) == (2**stages, 8, 3)
    assert_matches_reference(generator, params, 3, stages)


def test_a_file_holding_the_unused_16th_skip_conv_drops_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = random_params(8, 3, 2)
    plain = load_authors_generator(write_tensorlayer_npz(tmp_path / "a.npz", tensorlayer_order(params, 3, 2)))
    arrays = tensorlayer_order(params, 3, 2, with_unused_skip=True)
    with caplog.at_level(logging.INFO, logger="srfeat"):
        extended = load_authors_generator(write_tensorlayer_npz(tmp_path / "b.npz", arrays))
    assert "unused long-skip conv of block 3" in caplog.text
    state = extended.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in plain.state_dict().items())
    assert_matches_reference(extended, params, 3, 2)


def test_a_2018_pickle_protocol_reads(tmp_path: Path) -> None:
    params = random_params(8, 2, 2)
    arrays = tensorlayer_order(params, 2, 2)
    npz = write_tensorlayer_npz(tmp_path / "old.npz", arrays, protocol=2)
    assert b"_codecs" in zipfile.ZipFile(npz).read("params.npy")
    assert all(np.array_equal(a, b) for a, b in zip(read_tensorlayer_npz(npz), arrays, strict=True))


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
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


def test_command_errors_are_one_line_and_never_overwrite(tmp_path: Path) -> None:
    files = _layouts(tmp_path)
    result = srfeat_cli("convert", str(files["missing output conv"]), "-o", str(tmp_path / "x.safetensors"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists()

    good = write_tensorlayer_npz(tmp_path / "good.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2))
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    result = srfeat_cli("convert", str(good), "-o", str(existing))
    assert result.returncode == 1 and "--overwrite" in result.stderr and existing.read_bytes() == b"keep me"
    assert srfeat_cli("convert", str(good), "-o", str(existing), "--overwrite").returncode == 0
    assert load_generator(existing).num_blocks == 2
    result = srfeat_cli("convert", str(good), "-o", str(tmp_path / "out.pt"))
    assert result.returncode == 1 and "must end in .safetensors" in result.stderr
    assert srfeat_cli("convert", str(good)).returncode == 0  # default: beside the input
    assert (tmp_path / "good.safetensors").is_file()
    # --output, as upscale, blend and export spell it (convert had only --out); --out stays
    for option in ("--output", "--out"):
        assert srfeat_cli("convert", str(good), option, str(tmp_path / f"{option}.safetensors")).returncode == 0
        assert load_generator(tmp_path / f"{option}.safetensors").num_blocks == 2


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


def test_output_folder_or_under_a_file_is_one_line(tmp_path: Path) -> None:
    # Before: both were tracebacks (IsADirectoryError from the rename, FileExistsError from mkdir),
    # after the conversion.
    good = write_tensorlayer_npz(tmp_path / "good.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2))
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for output, message in (
        (tmp_path / "folder.safetensors", "is a folder"),
        (tmp_path / "notes.txt" / "x.safetensors", "is a file, not a folder"),
    ):
        result = srfeat_cli("convert", str(good), "-o", str(output), "--overwrite")
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert (tmp_path / "folder.safetensors").is_dir()


def test_a_folder_named_like_the_output_is_blamed_as_the_input(tmp_path: Path) -> None:
    # `srfeat convert weights.safetensors` on a folder: the default output is the input's name, so the error
    # was "the output weights.safetensors is a folder; give a file name", about an -o that was never given.
    folder = tmp_path / "weights.safetensors"
    folder.mkdir()
    result = srfeat_cli("convert", str(folder))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"{folder} is a folder: give the authors' SRFeat_init.npz or SRFeat_full.npz file" in result.stderr
    assert "the output" not in result.stderr and folder.is_dir() and not any(folder.iterdir())


@pytest.mark.parametrize(("source", "output"), [(".", None), ("/", None), ("notes.txt", "."), ("notes.txt", "/")])
def test_a_path_of_no_name_is_one_line(tmp_path: Path, source: str, output: str | None) -> None:
    # Before: `convert .`, `convert /` and `-o .` were ValueError tracebacks from Path.with_suffix (empty name).
    (tmp_path / "notes.txt").write_text("x")
    line = one_error_line(srfeat_cli("convert", source, *(["-o", output] if output else []), cwd=tmp_path))
    assert line.endswith(
        f"{source} is a folder: give the authors' SRFeat_init.npz or SRFeat_full.npz file"
        if output is None
        else f"the output {output} is a folder; give a file name ending in .safetensors"
    ), line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


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


def test_the_path_is_taken_as_load_generator_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` was not expanded ("not found: ~/SRFeat_full.npz"), and bytes or None were pathlib's TypeError."""
    from srfeat.errors import InvalidOptionError, WeightsError
    from srfeat.weights.authors import load_authors_generator

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=f"not found: {tmp_path / 'SRFeat_full.npz'}"):
        load_authors_generator("~/SRFeat_full.npz")
    with pytest.raises(WeightsError, match=f"not found: {tmp_path / 'x.npz'}"):
        load_authors_generator(bytes(tmp_path / "x.npz"))  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="must be a path"):
        load_authors_generator(None)  # type: ignore[arg-type]


def _wrong_files(tmp_path: Path) -> dict[str, Path]:
    """Files a user may hand to convert instead of the authors' .npz."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    good = write_tensorlayer_npz(tmp_path / "good.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2))
    files = {name: tmp_path / name for name in ("SRFeat_full.npz", "model.ckpt.index", "model.h5", "named.npz")}
    files["SRFeat_full.npz"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a download cut short
    files["model.ckpt.index"].write_bytes(bytes(64))
    files["model.h5"].write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    np.savez(files["named.npz"], **{f"layer{i}/W": np.zeros(1) for i in range(3000)})
    files["mine.safetensors"] = tmp_path / "mine.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=2), files["mine.safetensors"])
    files["mine.pt"] = tmp_path / "mine.pt"
    torch.save(SRFeatGenerator(num_features=8, num_blocks=2).state_dict(), files["mine.pt"])
    return files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("SRFeat_full.npz", "is a zip archive cut short or damaged: download it again"),
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

    def __reduce__(self):  # type: ignore[no-untyped-def]
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


@pytest.mark.parametrize("name", ["MODEL.INDEX", "MODEL.META", "Model.Data-00000-Of-00001", "model.index"])
def test_a_tensorflow_checkpoint_is_named_so_whatever_the_case_of_its_name(tmp_path: Path, name: str) -> None:
    """MODEL.INDEX and .META (a name a Windows copy or a zip tool leaves) were "not an .npz file: it is of an
    unknown format", without the word that they are a TensorFlow checkpoint and how to convert one."""
    path = tmp_path / name
    path.write_bytes(bytes(64))
    with pytest.raises(WeightsError, match=r"is \(part of\) a TensorFlow checkpoint: .*tl\.files\.save_npz") as error:
        load_authors_generator(path)
    assert "\n" not in str(error.value)
