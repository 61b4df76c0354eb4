"""`srfeat convert`: the authors' tensorlayer weights (SRFeat_full.npz) as a srfeat generator.

The real files cannot be downloaded here (and are AGPL). The test writes files in exactly
their layout, tensorlayer's `save_npz(net_g.all_params)` of the authors' `SRGAN_g`, from
named random parameters, and checks the converted generator against a NumPy forward pass
of that TF1 network with TF's semantics: NHWC, HWIO kernels, 'SAME' padding, BatchNorm on
moving statistics, `depth_to_space`, in [-1, 1]. What is refused (files of another kind or
layout, crafted pickles, unusable values) is in test_authors_weights_refused.py.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from authors_helpers import Params, random_params, rewritten_entry, tensorlayer_order, write_tensorlayer_npz
from cli_helpers import one_error_line, srfeat_cli
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from srfeat.weights import load_generator
from srfeat.weights.authors import load_authors_generator, read_tensorlayer_npz

# ----------------------------------------------------------------------------- the authors' network, in NumPy


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
    # NumPy 1.x pickled a type as dtype('f4', 0, 1) where NumPy 2 writes dtype('f4', False, True)
    rewritten_entry(npz, b"\x89\x88\x87", b"K\x00K\x01\x87")  # NEWFALSE NEWTRUE TUPLE3 -> BININT1 0, BININT1 1
    assert all(np.array_equal(a, b) for a, b in zip(read_tensorlayer_npz(npz), arrays, strict=True))


def test_command_errors_are_one_line_and_never_overwrite(tmp_path: Path) -> None:
    short = write_tensorlayer_npz(tmp_path / "short.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2)[:-2])
    result = srfeat_cli("convert", str(short), "-o", str(tmp_path / "x.safetensors"))  # no output conv
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


def test_the_path_is_taken_as_load_generator_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~` was not expanded ("not found: ~/SRFeat_full.npz"), and bytes or None were pathlib's TypeError."""
    from srfeat.errors import InvalidOptionError, WeightsError
    from srfeat.weights.authors import load_authors_generator

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=f"not found: {tmp_path / 'SRFeat_full.npz'}"):
        load_authors_generator("~/SRFeat_full.npz")
    with pytest.raises(WeightsError, match=f"not found: {tmp_path / 'x.npz'}"):
        load_authors_generator(bytes(tmp_path / "x.npz"))  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match="must be a path"):
        load_authors_generator(None)  # pyright: ignore[reportArgumentType]
