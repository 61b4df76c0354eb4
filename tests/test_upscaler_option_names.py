"""`Upscaler`'s refusals name its options as the caller gave them: its keywords from Python (`compile=True`,
`backend='onnxruntime'`), the flags of `srfeat upscale`, `eval` and `serve` on the command line (`--compile`,
`--backend onnxruntime`). Each named both ("--compile (compile=True) applies to the torch backend only"),
one of which the caller never typed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli, srfeat_cli_out_of_memory
from inference_helpers import tiny_generator
from PIL import Image

from srfeat import Upscaler
from srfeat.errors import InvalidOptionError, SRFeatError, TileOutOfMemoryError
from srfeat.inference import devices
from srfeat.inference.fused import InferenceGenerator
from srfeat.weights import save_generator

KEYWORD = re.compile(r"\w+=")  # `device='cpu'`, `tile=`: a Python keyword in a message
FLAG = re.compile(r"(^|\s|\()--\w")  # `--device`: a command-line flag in a message

COMPILE_PYTHON = "compile=True applies to the torch backend only"
PRECISION_PYTHON = (
    "the onnxruntime backend runs the model in its own precision: use dtype='fp32', the default "
    "(for a float16 model, export it with export_onnx(..., fp16=True))"
)
PRECISION_FLAGS = (
    "the onnxruntime backend runs the model in its own precision: leave --half and --bf16 out "
    "(for a float16 model, export it with srfeat export --fp16)"
)


def python_says(message: str) -> str:
    """`message`, asserted to name no flag: what a Python caller was told."""
    assert not FLAG.search(message), message
    return message


def command_says(line: str) -> str:
    """The error line of a command, without its `ERROR: `, asserted to name no Python keyword."""
    assert line.startswith("ERROR: ") and not KEYWORD.search(line), line
    return line.removeprefix("ERROR: ")


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    Image.new("RGB", (16, 16), (90, 120, 150)).save(tmp_path / "a.png")
    return tmp_path / "a.png"


@pytest.mark.parametrize(
    ("keywords", "flags", "python", "command_line"),
    [
        ({"compile": True}, ["--compile"], COMPILE_PYTHON, "--compile applies to the torch backend only"),
        ({"dtype": "bf16"}, ["--bf16"], PRECISION_PYTHON, PRECISION_FLAGS),
        ({"dtype": "fp16"}, ["--half"], PRECISION_PYTHON, PRECISION_FLAGS),
    ],
    ids=["compile", "bf16", "fp16"],
)
def test_what_the_onnxruntime_backend_cannot_do_is_said_in_the_callers_words(
    tmp_path: Path, photo: Path, keywords: dict[str, Any], flags: list[str], python: str, command_line: str
) -> None:
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler("default", backend="onnxruntime", **keywords)
    assert python_says(str(refused.value)) == python
    child = srfeat_cli("upscale", photo, "-o", tmp_path / "out", "--backend", "onnxruntime", *flags)
    assert command_says(one_error_line(child, only=True)) == command_line
    assert not (tmp_path / "out").exists()


def test_an_onnx_file_given_the_torch_backend_is_told_the_backend_in_the_callers_words(
    tmp_path: Path, photo: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # refused by its name, before it is read
    said = f"{model} is an ONNX model: run it with the onnxruntime backend"
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler(model, backend="torch")
    assert python_says(str(refused.value)) == f"{said} (backend='onnxruntime')"
    child = srfeat_cli("upscale", photo, "-o", tmp_path / "out", "--model", model, "--backend", "torch")
    assert command_says(one_error_line(child, only=True)) == f"{said} (--backend onnxruntime)"


def test_the_onnxruntime_backend_on_a_gpu_is_told_the_cpu_in_the_callers_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GPU is needed to get this far through `srfeat upscale`; its message is built here with the flag."""
    said = "the onnxruntime backend runs on the CPU; use {}, or the torch backend on cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler("default", backend="onnxruntime", device="cuda:0")
    assert python_says(str(refused.value)) == said.format("device='cpu'")
    with pytest.raises(InvalidOptionError) as refused:
        devices.onnx_runner("default", None, torch.device("cuda:0"), torch.float32, False, command_line=True)
    assert command_says(f"ERROR: {refused.value}") == said.format("--device cpu")


def test_a_model_that_fills_the_gpu_as_it_loads_is_told_the_cpu_in_the_callers_words() -> None:
    """Only a GPU others have filled gets this message; it is built here as each caller gets it."""
    said = (
        "out of memory on cuda:1 loading the model: other processes hold its memory (nvidia-smi lists them); "
        "free it, choose another GPU, or use {}"
    )
    cuda = torch.device("cuda:1")
    assert python_says(str(devices.out_of_memory_loading(cuda))) == said.format("device='cpu'")
    assert command_says(f"ERROR: {devices.out_of_memory_loading(cuda, command_line=True)}") == said.format(
        "--device cpu"
    )


FREE_SAID = "free memory (other programs, or the processes nvidia-smi lists on a GPU) and run again"
TILE_SAID = FREE_SAID + ", or "


def test_the_advice_for_a_tile_out_of_memory_names_the_tile_size_as_each_caller_gives_it() -> None:
    from srfeat.inference.tiling import tile_memory_advice

    assert python_says(tile_memory_advice()) == TILE_SAID + "give the Upscaler a smaller tile="
    assert command_says(f"ERROR: {tile_memory_advice(command_line=True)}") == (
        TILE_SAID + "give srfeat upscale or srfeat serve a smaller --tile"
    )


def test_a_tile_out_of_memory_from_python_names_the_tile_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    def runs_out_of_memory(*args: object) -> torch.Tensor:
        return torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator's refusal, as under `ulimit -v`

    upscaler = Upscaler(tiny_generator(), device="cpu")
    monkeypatch.setattr(InferenceGenerator, "for_window", runs_out_of_memory)  # what runs it on a tile's window
    with pytest.raises(TileOutOfMemoryError) as refused:
        upscaler(torch.rand(3, 16, 16))
    message = python_says(str(refused.value))
    assert message == f"out of memory on cpu upscaling a 16x16 tile; {TILE_SAID}give the Upscaler a smaller tile="


@pytest.mark.parametrize(
    ("command", "advice"),
    [
        ("upscale", f"{TILE_SAID}give srfeat upscale or srfeat serve a smaller --tile"),
        # eval has no --tile (it plans the tile size from free memory), and on the CPU no other device to name:
        # it was told to give upscale or serve a smaller --tile
        ("eval", FREE_SAID),
    ],
)
def test_a_tile_out_of_memory_on_the_command_line_names_what_the_command_can_do(
    tmp_path: Path, photo: Path, command: str, advice: str
) -> None:
    model = tmp_path / "x4.safetensors"
    save_generator(tiny_generator(scale=4), model)
    arguments = (
        ["upscale", photo, "-o", tmp_path / "out", "--model", model, "--device", "cpu"]
        if command == "upscale"
        else ["eval", "--model", model, "--data", tmp_path, "--metrics", "psnr", "--device", "cpu"]
    )
    child = srfeat_cli_out_of_memory("srfeat.inference.fused", "InferenceGenerator.for_window", "True", *arguments)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    # upscale's is the image's line, then its count of failed inputs
    said = command_says(next(line for line in child.stderr.splitlines() if line.startswith("ERROR: ")))
    assert said.endswith(f" tile; {advice}"), said


def test_a_failing_onnx_runtime_tile_is_advised_in_the_callers_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's own failures (its out-of-memory among them) end in the tile advice too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from srfeat.inference.onnx_runner import OnnxRunner, load_onnx_runner

    class FailingSession:
        def __init__(self, session: Any) -> None:
            self.inputs = session.get_inputs()

        def get_inputs(self) -> object:
            return self.inputs

        def run(self, *args: object) -> object:
            raise RuntimeError("bad allocation\nmore lines")

    generator = tiny_generator()
    upscaler = Upscaler(generator, backend="onnxruntime")
    assert isinstance(upscaler.model, OnnxRunner)
    monkeypatch.setattr(upscaler.model, "session", FailingSession(upscaler.model.session))
    with pytest.raises(TileOutOfMemoryError) as refused:  # its advice apart: the web page says its own
        upscaler(torch.rand(3, 8, 8))
    assert python_says(str(refused.value)).endswith(
        f"bad allocation; if it ran out of memory {TILE_SAID}give the Upscaler a smaller tile=, else export the "
        "model again"
    )
    runner = load_onnx_runner(generator, command_line=True)
    monkeypatch.setattr(runner, "session", FailingSession(runner.session))
    with pytest.raises(SRFeatError) as refused:
        runner(torch.rand(1, 3, 8, 8))
    assert command_says(f"ERROR: {refused.value}").endswith(
        f"bad allocation; if it ran out of memory {TILE_SAID}give srfeat upscale or srfeat serve a smaller --tile, "
        "else export the model again"
    )


@pytest.mark.parametrize("command", ["upscale", "export"])
def test_a_strength_with_another_model_is_refused_in_the_callers_words(
    tmp_path: Path, photo: Path, command: str
) -> None:
    said = (
        "{0} is the detail dial from the bundled default model (0) to gan (1) and goes with {1} default only, "
        "not {1} gan; give {2} (or leave {1} out), or to blend your own checkpoints use {3}"
    )
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler("gan", strength=0.5)
    assert python_says(str(refused.value)) == said.format(
        "strength", "model", "model='default', strength=0.5", "srfeat.weights.blend.blend_generators(A, B, alpha)"
    )
    output = ["-o", tmp_path / "out"] if command == "upscale" else ["-o", tmp_path / "gan.onnx"]
    inputs = [photo] if command == "upscale" else []
    child = srfeat_cli(command, *inputs, *output, "--model", "gan", "--strength", "0.5")
    assert command_says(one_error_line(child, only=True)) == said.format(
        "--strength", "--model", "--model default --strength 0.5", "`srfeat blend A B --alpha ALPHA -o out.safetensors`"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "gan.onnx").exists()


def test_a_strength_with_another_model_is_said_before_a_missing_input(tmp_path: Path) -> None:
    # Options before inputs, as --device is: the input's error alone, fixed, then gave this one on the next try.
    child = srfeat_cli("upscale", tmp_path / "missing.png", "-o", tmp_path / "out", "--model", "gan", "--strength", "1")
    said = one_error_line(child, only=True)
    assert "--strength is the detail dial" in said and "not --model gan" in said and "missing.png" not in said
    assert not (tmp_path / "out").exists()


def test_a_strength_with_an_onnx_file_is_refused_in_the_callers_words(tmp_path: Path, photo: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # refused by its name, before it is read
    said = (
        f"{model} is an exported model, whose weights are fixed: export the blend you want ({{}}) "
        "instead of giving {} with it"
    )
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler(model, strength=0.5)
    assert python_says(str(refused.value)) == said.format("export_onnx(load_blended('default', S), ...)", "strength")
    child = srfeat_cli("upscale", photo, "-o", tmp_path / "out", "--model", model, "--strength", "0.5")
    assert command_says(one_error_line(child, only=True)) == said.format("srfeat export --strength S", "--strength")


def test_an_onnx_file_newer_than_onnx_runtime_says_how_to_export_it_again_in_the_callers_words(
    tmp_path: Path, photo: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_onnx_export import srfeat_like_onnx

    model = onnx.load(str(srfeat_like_onnx(tmp_path / "opset.onnx")))
    model.opset_import[0].version = 99
    onnx.save(model, str(tmp_path / "opset.onnx"))
    with pytest.raises(SRFeatError) as refused:
        Upscaler(tmp_path / "opset.onnx")
    assert python_says(str(refused.value)).endswith("or export the model again with export_onnx(..., opset=18)")
    child = srfeat_cli("upscale", photo, "-o", tmp_path / "out", "--model", tmp_path / "opset.onnx")
    assert command_says(one_error_line(child)).endswith("or export the model again with srfeat export --opset 18")
