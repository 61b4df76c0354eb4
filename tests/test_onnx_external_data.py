"""An .onnx file is untrusted input: one whose weights point at another file (external data) is refused
before ONNX Runtime looks for that file, wherever it points (a parent folder, an absolute path, a link
out of the folder, a device, a pipe), and the CLI says so in one line naming the file and the place. So is
a file, or a parsed model, of millions of parts; and without the onnx package, which the other checks need,
the first file loaded says what goes unchecked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CHILD_ENV, one_error_line, srfeat_cli
from PIL import Image
from test_onnx_export import srfeat_like_onnx

from srfeat.errors import WeightsError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")


def point_a_weight_elsewhere(
    path: Path, location: str, *, in_constant: bool = False, length: int | None = None
) -> Path:
    """The stand-in model at `path` with a bias added to its input whose values are in `location`
    (an initializer, or a Constant node's value), declared `length` bytes when given."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    bias = TensorProto(name="bias", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    bias.external_data.add(key="location", value=location)
    if length is not None:
        bias.external_data.add(key="length", value=str(length))
    resize = model.graph.node[0]
    resize.input[0] = "biased"
    added = helper.make_node("Add", ["input", "bias"], ["biased"])
    nodes = [helper.make_node("Constant", [], ["bias"], value=bias), added] if in_constant else [added]
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    if not in_constant:
        model.graph.initializer.append(bias)
    onnx.save(model, str(path))
    return path


def test_external_data_anywhere_is_refused_in_one_line_naming_the_file_and_place(tmp_path: Path) -> None:
    """A Constant node's external value was not looked for: ONNX Runtime's own multi-line reason came back."""
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.array([0.5], dtype=np.float32).tobytes())
    (folder / "out.bin").symlink_to(tmp_path / "secret.bin")
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe")
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    cases = {
        "parent.onnx": ("../secret.bin", {}),
        "absolute.onnx": (str(tmp_path / "secret.bin"), {}),
        "passwd.onnx": ("/etc/passwd", {}),
        "link.onnx": ("out.bin", {}),
        "device.onnx": ("zero", {"length": 1 << 40}),
        "pipe.onnx": ("pipe", {}),
        "constant.onnx": ("../secret.bin", {"in_constant": True}),
    }
    for name, (location, options) in cases.items():
        model = point_a_weight_elsewhere(folder / name, location, **options)
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", model, timeout=60)
        line = one_error_line(result)
        # The message quotes a location's first 80 characters (a hostile file's can be any length), which the
        # absolute case's temporary folder can pass (pytest-xdist's are deeper).
        assert f"{name} keeps its weights in another file ({location[:80]!r}, external data)" in line, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def load_with_a_stand_in_session(model: Path) -> subprocess.CompletedProcess[str]:
    """`OnnxRunner(model)` in a child whose ONNX Runtime session, if it is made, says so on stderr and fails."""
    code = (
        "import sys, onnxruntime\n"
        "def opened(*args, **kwargs):\n"
        "    print('ONNX Runtime was given the model', file=sys.stderr)\n"
        "    raise RuntimeError('stand-in')\n"
        "onnxruntime.InferenceSession = opened\n"
        "from srfeat.inference.onnx_runner import OnnxRunner\n"
        "OnnxRunner(sys.argv[1])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(model)],
        check=False,
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=120,
    )


def test_onnx_runtime_is_not_given_a_model_with_external_data(tmp_path: Path) -> None:
    """ONNX Runtime was given the model first, and asked about its external data only when it failed: given
    bytes, it looks for the file beside the working folder (and before its own path checks, 1.20 among
    the versions srfeat takes, read an absolute or ../ path as it stood). A stand-in session says if it ran."""
    result = load_with_a_stand_in_session(point_a_weight_elsewhere(tmp_path / "m.onnx", "/etc/passwd"))
    assert "ONNX Runtime was given the model" not in result.stderr, result.stderr
    assert "keeps its weights in another file ('/etc/passwd', external data)" in result.stderr, result.stderr


def test_without_the_onnx_package_external_data_is_still_found(tmp_path: Path, monkeypatch) -> None:
    """A plain `pip install onnxruntime` has no onnx package to parse the file with: its bytes are searched."""
    import builtins

    from srfeat.inference.onnx_contents import external_data_location, parse_model

    model = point_a_weight_elsewhere(tmp_path / "m.onnx", "../" + "x" * 200).read_bytes()
    plain = srfeat_like_onnx(tmp_path / "plain.onnx").read_bytes()
    real_import = builtins.__import__

    def without_onnx(name: str, *args, **kwargs):
        if name == "onnx":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnx)
    assert parse_model(model) is None and parse_model(plain) is None
    assert external_data_location(model, None) == ("../" + "x" * 200)[:80]
    assert external_data_location(plain, None) is None


def test_without_the_onnx_package_loading_a_file_warns_once_what_goes_unchecked(tmp_path: Path) -> None:
    """After a plain `pip install onnxruntime` no size or weight check ran, and nothing said so: a file whose
    constants make a huge tensor loaded without a word. Now the first file warns, naming the fix; a second
    does not repeat it."""
    first, second = srfeat_like_onnx(tmp_path / "first.onnx"), srfeat_like_onnx(tmp_path / "second.onnx")
    code = (
        "import logging, sys; sys.modules['onnx'] = None\n"
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "from srfeat.inference.onnx_runner import OnnxRunner\n"
        "for path in sys.argv[1:]:\n"
        "    print(OnnxRunner(path).scale)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(first), str(second)],
        check=False,
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.split() == ["4", "4"], result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert f"the onnx package is not installed, so {first} (and any other .onnx file) runs without" in warnings[0]
    assert 'pip install -e ".[onnx]"' in warnings[0]


def test_with_the_onnx_package_loading_a_file_does_not_warn(tmp_path: Path, caplog) -> None:
    from srfeat.inference.onnx_runner import OnnxRunner

    with caplog.at_level(logging.WARNING):
        OnnxRunner(srfeat_like_onnx(tmp_path / "m.onnx"))
    assert not caplog.records, caplog.text


def test_a_file_declaring_millions_of_parts_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """Three hundred thousand empty nodes (600 KB) loaded: the three million of a 6 MB file took ONNX
    Runtime 3.1 GB and 7 s, so a 2 GB file could take all the memory there is."""
    model = onnx.load(str(srfeat_like_onnx(tmp_path / "nodes.onnx")))
    model.graph.node.extend([onnx.NodeProto()] * 300_000)
    (tmp_path / "nodes.onnx").write_bytes(model.SerializeToString())
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / "nodes.onnx")
    assert "nodes.onnx declares more than 200,000 nodes, attributes and weights" in one_error_line(result)
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_parsed_model_of_millions_of_parts_is_refused_before_onnx_runtime_reads_it(tmp_path: Path) -> None:
    """A caller's `onnx.ModelProto` skipped the count that a file gets: ONNX Runtime parsed its bytes again
    (three million empty nodes took it 3.1 GB)."""
    from srfeat.inference.onnx_runner import OnnxRunner

    model = onnx.load(str(srfeat_like_onnx(tmp_path / "nodes.onnx")))
    model.graph.node.extend([onnx.NodeProto()] * 300_000)
    with pytest.raises(WeightsError) as caught:
        OnnxRunner(model, source="in memory")
    assert str(caught.value).startswith("in memory declares more than 200,000 nodes, attributes and weights")
    assert "\n" not in str(caught.value)


def test_a_file_newer_than_onnx_runtime_says_so_and_what_to_do(tmp_path: Path) -> None:
    """ONNX Runtime's reason came back as its first line, a C++ function signature."""
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    opset, ir = onnx.load(str(srfeat_like_onnx(tmp_path / "opset.onnx"))), onnx.load(str(tmp_path / "opset.onnx"))
    opset.opset_import[0].version, ir.ir_version = 99, 99
    onnx.save(opset, str(tmp_path / "opset.onnx"))
    onnx.save(ir, str(tmp_path / "ir.onnx"))
    for name, what in (("opset.onnx", "opset 99"), ("ir.onnx", "IR version 99")):
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / name)
        line = one_error_line(result)
        assert f"{name} is {what} (up to " in line and "pip install -U onnxruntime" in line, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
