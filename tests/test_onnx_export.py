"""`srfeat export` to ONNX and `srfeat upscale --backend onnxruntime`, as a user meets them.

The exported files are run by ONNX Runtime itself (as another app would) and compared with
srfeat's own `Upscaler`; the CLI runs as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import CHILD_ENV, one_error_line, srfeat_cli
from PIL import Image

from srfeat.data.png16 import read_png16, write_png16
from srfeat.errors import WeightsError
from srfeat.inference import Upscaler, upscale_tiled
from srfeat.inference.onnx_runner import OnnxRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
samples = pytest.importorskip("skimage.data")
# For the stand-in graphs the tests build: opset 18 and the IR version it needs (8), as srfeat's exporter
# writes them. Without them, onnx's helper writes its newest IR version (14 for onnx 1.23), which ONNX
# Runtime 1.23 (the newest for Python 3.10) refuses: "Unsupported model IR version: 14, max supported IR version: 11".
OPSET_18 = {"opset_imports": [onnx.helper.make_opsetid("", 18)], "ir_version": 8}


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": batch})
    return output


def to_batch(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> (1, 3, H, W) float32 in [0, 1], the convention of the exported model."""
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def to_uint8(batch: np.ndarray) -> np.ndarray:
    return np.round(batch[0].transpose(1, 2, 0) * 255.0).astype(np.uint8)


def grey_levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    result = srfeat_cli("export", "--model", "default", "-o", path)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def default_upscaler() -> Upscaler:
    return Upscaler("default", device="cpu", tile=0)


@pytest.fixture(scope="module")
def blend_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "blend.onnx"
    result = srfeat_cli("export", "--model", "default", "--strength", "0.5", "-o", path)
    assert result.returncode == 0, result.stderr
    return path


@pytest.mark.parametrize("size", [(40, 56), (64, 48)])
def test_default_export_matches_the_upscaler_at_two_sizes(
    default_onnx: Path, default_upscaler: Upscaler, size: tuple[int, int]
) -> None:
    height, width = size
    image = samples.astronaut()[100 : 100 + height, 180 : 180 + width]
    output = run_onnx(default_onnx, to_batch(image))
    assert output.shape == (1, 3, 4 * height, 4 * width) and output.dtype == np.float32
    assert grey_levels(to_uint8(output), default_upscaler(image)) <= 1


def test_blend_export_matches_the_upscaler_at_two_sizes(blend_onnx: Path, default_upscaler: Upscaler) -> None:
    upscaler = Upscaler("default", strength=0.5, device="cpu", tile=0)
    for height, width in [(40, 56), (64, 48)]:
        image = samples.coffee()[120 : 120 + height, 250 : 250 + width]
        output = to_uint8(run_onnx(blend_onnx, to_batch(image)))
        assert grey_levels(output, upscaler(image)) <= 1
        assert grey_levels(output, default_upscaler(image)) > 4  # the blend, not default
    metadata = {entry.key: entry.value for entry in onnx.load(str(blend_onnx)).metadata_props}
    assert metadata["name"] == "default-gan-strength-0.5" and "gan" in metadata["training_data"]


def test_exported_file_is_checked_dynamic_folded_and_described(default_onnx: Path) -> None:
    model = onnx.load(str(default_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert {entry.domain: entry.version for entry in model.opset_import}[""] >= 18
    ops = {node.op_type for node in model.graph.node}
    plain = {"Conv", "LeakyRelu", "Add", "Mul", "Sub", "DepthToSpace", "Clip"}  # the README's list
    assert "Clip" in ops and ops <= plain, ops - plain
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert graph_input.name == "input" and graph_output.name == "output"
    for value in (graph_input, graph_output):
        tensor = value.type.tensor_type
        assert tensor.elem_type == onnx.TensorProto.FLOAT
        dims = tensor.shape.dim
        assert dims[1].dim_value == 3
        assert all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))  # batch, height, width
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert metadata["scale"] == "4" and metadata["name"] == "default"
    assert "T91" in metadata["training_data"] and "MIT" in metadata["license"]
    # One file, any batch and size; the output is clamped to [0, 1].
    batch = np.random.default_rng(0).uniform(-0.5, 1.5, (2, 3, 9, 14)).astype(np.float32)
    output = run_onnx(default_onnx, batch)
    assert output.shape == (2, 3, 36, 56)
    assert output.min() >= 0.0 and output.max() <= 1.0


@pytest.mark.parametrize("opset", [18, 23])
def test_the_file_declares_the_ir_version_its_opset_needs(opset: int) -> None:
    """PyTorch's exporter declared IR version 10 whatever the opset: runtimes that read opset 18 but
    not IR 10 (ONNX Runtime before 1.18) refused the default file, and an opset-23 file (IR 11)
    claimed an IR older than its operators. The file declares the least IR its opset needs."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.export.onnx import ModelInfo, onnx_model

    model = onnx_model(SRFeatGenerator(num_features=8, num_blocks=1), ModelInfo("t", "none", "CC0"), opset=opset)
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import)) == {18: 8, 23: 11}[opset]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": np.zeros((1, 3, 5, 7), np.float32)})
    assert output.shape == (1, 3, 20, 28)


def test_the_file_holds_no_paths_of_the_machine_that_made_it() -> None:
    """The exporter annotates each node with the Python stack trace that made it: the file (made to
    be shared) carried this machine's paths (`/home/NAME/...`, the site-packages folder) and so
    differed from one machine to another."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.export.onnx import ModelInfo, onnx_model

    model = onnx_model(SRFeatGenerator(num_features=8, num_blocks=2), ModelInfo("t", "none", "CC0"))
    data = model.SerializeToString()
    for path in (Path(__file__).resolve().parents[1], Path(torch.__file__).parent):
        assert str(path).encode() not in data, path
    assert not any(node.metadata_props for node in model.graph.node)


def test_fp16_export_within_a_few_grey_levels(tmp_path: Path, default_upscaler: Upscaler) -> None:
    path = tmp_path / "m16.onnx"
    result = srfeat_cli("export", "--model", "default", "--fp16", "-o", path)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stays float32
    assert {init.data_type for init in model.graph.initializer if len(init.dims) == 4} == {onnx.TensorProto.FLOAT16}
    image = samples.coffee()[150:198, 200:260]
    assert grey_levels(to_uint8(run_onnx(path, to_batch(image))), default_upscaler(image)) <= 4


def test_weights_that_overflow_float16_are_named_not_reported_as_an_exporter_bug(tmp_path: Path) -> None:
    """Weights finite in float32 but beyond float16's 65504 became inf in the `--fp16` file; the check
    against PyTorch then failed with "differs from PyTorch's by 0.62 ...: please report this"."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    generator = SRFeatGenerator(num_features=8, num_blocks=1)
    with torch.no_grad():
        generator.tail.weight[0, 0, 0, 0] = 3e5  # under the loader's 1e6 limit
    checkpoint = tmp_path / "big.safetensors"
    save_generator(generator, checkpoint, dtype=torch.float32)
    result = srfeat_cli("export", "--model", checkpoint, "--fp16", "-o", tmp_path / "big.onnx")
    error = one_error_line(result)
    assert "big's weights do not fit in float16" in error and "export without --fp16" in error, error
    assert "report" not in error and not (tmp_path / "big.onnx").exists()
    assert (
        srfeat_cli("export", "--model", checkpoint, "-o", tmp_path / "big.onnx").returncode == 0
    )  # float32 holds them


def test_a_checkpoint_that_is_not_a_generator_fails_in_one_line(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3))
    checkpoint = tmp_path / "other.safetensors"
    save_file(other.state_dict(), str(checkpoint))
    target = tmp_path / "other.onnx"
    result = srfeat_cli("export", "--model", checkpoint, "-o", target)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an SRFeat generator" in lines[0] and "Traceback" not in result.stderr
    assert not target.exists()


def test_export_does_not_overwrite_unless_asked(tmp_path: Path, model_path: Path) -> None:
    target = tmp_path / "tiny.onnx"
    target.write_bytes(b"mine")
    result = srfeat_cli("export", "--model", model_path, "-o", target)
    assert result.returncode == 1 and "--overwrite" in result.stderr and target.read_bytes() == b"mine"
    result = srfeat_cli("export", "--model", model_path, "-o", target, "--overwrite", "--license", "CC0")
    assert result.returncode == 0, result.stderr
    metadata = {entry.key: entry.value for entry in onnx.load(str(target)).metadata_props}
    assert metadata["name"] == "tiny" and metadata["license"] == "CC0" and metadata["training_data"] == "not recorded"


def test_upscale_cli_onnxruntime_backend_tiles_alpha_and_16_bit(tmp_path: Path, model_path: Path) -> None:
    """The same command through the ONNX file and through srfeat's path: the same images."""
    exported = tmp_path / "tiny.onnx"
    assert srfeat_cli("export", "--model", model_path, "-o", exported).returncode == 0
    rgba = np.dstack([samples.astronaut()[:44, :52], np.linspace(0, 255, 44 * 52).reshape(44, 52)]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    gray16 = (samples.camera()[:36, :30].astype(np.uint16) * 257 + 100).astype(np.uint16)
    write_png16(tmp_path / "gray16.png", gray16)
    inputs = [tmp_path / "rgba.png", tmp_path / "gray16.png"]
    common = ["--device", "cpu", "--tile", "20"]  # several tiles per image
    result = srfeat_cli("upscale", *inputs, "-o", tmp_path / "ort", "--model", exported, *common)
    assert result.returncode == 0, result.stderr
    assert "backend=onnxruntime" in result.stderr
    result = srfeat_cli("upscale", *inputs, "-o", tmp_path / "torch", "--model", model_path, *common)
    assert result.returncode == 0, result.stderr
    ort_rgba, torch_rgba = (np.asarray(Image.open(tmp_path / name / "rgba.png")) for name in ("ort", "torch"))
    assert ort_rgba.shape == (176, 208, 4)
    assert grey_levels(ort_rgba[..., :3], torch_rgba[..., :3]) <= 1
    assert np.array_equal(ort_rgba[..., 3], torch_rgba[..., 3])  # alpha: the same bicubic resize
    ort_gray, torch_gray = (read_png16(tmp_path / name / "gray16.png").array for name in ("ort", "torch"))
    assert ort_gray.dtype == np.uint16 and ort_gray.shape[:2] == (144, 120)
    assert grey_levels(ort_gray, torch_gray) <= 257  # one 8-bit level in 16-bit units


def test_onnxruntime_backend_exports_a_checkpoint_in_memory(model_path: Path) -> None:
    image = samples.astronaut()[:30, :26]
    through_onnx = Upscaler(model_path, device="cpu", backend="onnxruntime", tile=12)
    assert through_onnx.tile_pad == Upscaler(model_path, device="cpu").tile_pad
    assert grey_levels(through_onnx(image), Upscaler(model_path, device="cpu", tile=0)(image)) <= 1


def test_onnxruntime_runs_a_window_that_tiles_share_once(model_path: Path) -> None:
    """Tiles of 1 pixel on an 11x9 image all read the whole image (its receptive radius is 10): ONNX Runtime ran
    the whole network on it for each of the 99 tiles. It runs once now, and the tiles are cut from that output."""
    upscaler = Upscaler(model_path, device="cpu", backend="onnxruntime", tile=1)
    runner = upscaler.model
    assert isinstance(runner, OnnxRunner) and runner.receptive_radius >= 10
    session = runner.session
    runs: list[tuple[int, ...]] = []

    class CountedSession:
        def get_inputs(self) -> Any:
            return session.get_inputs()

        def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
            runs.append(next(iter(feeds.values())).shape)
            return session.run(outputs, feeds)

    runner.session = CountedSession()
    image = torch.rand(3, 11, 9, generator=torch.Generator().manual_seed(4))
    shared = upscaler.upscale_rgb(image)
    assert runs == [(1, 3, 11, 9)]
    runs.clear()
    cpu, pad = torch.device("cpu"), upscaler.tile_pad
    separate = upscale_tiled(
        lambda batch, region: runner(batch, region), image, 4, tile=1, pad=pad, device=cpu, dtype=torch.float32
    ).clamp_(0.0, 1.0)  # as the Upscaler clamps
    assert len(runs) == 99 and torch.equal(shared, separate)


def test_onnx_backend_errors_are_one_line(tmp_path: Path, model_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, **OPSET_18), str(foreign))
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    for args, message in [
        (["--model", foreign], "not a srfeat ONNX export"),
        (["--model", foreign, "--backend", "torch"], "onnxruntime backend"),
        (["--model", model_path, "--backend", "onnxruntime", "--bf16"], "own precision"),
        # Not "half precision (fp16) needs a GPU; on the CPU use fp32 (the default) or bf16", which then fails too.
        (["--model", model_path, "--backend", "onnxruntime", "--half"], "own precision"),
    ]:
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--device", "cpu", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "hidden, named",
    [
        # `pip install onnxruntime`, as the backend's message offers: a model that is not an .onnx
        # file is exported first, which needs onnx and onnxscript too (said after it had loaded).
        (("onnx", "onnxscript"), "needs onnx and onnxscript for a model that is not an .onnx file"),
        (("onnxruntime", "onnx", "onnxscript"), "needs onnxruntime, onnx and onnxscript"),
    ],
    ids=["onnxruntime-alone", "no-onnx-extra"],
)
def test_the_onnxruntime_backend_names_everything_missing_in_one_line(
    tmp_path: Path, hidden: tuple[str, ...], named: str
) -> None:
    # None in sys.modules makes `import onnx` fail (and find_spec find nothing), as where it is not installed.
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({hidden!r})); from srfeat.cli import main; "
        f"sys.exit(main(['upscale', {str(tmp_path / 'in.png')!r}, '-o', {str(tmp_path / 'out')!r}, "
        "'--backend', 'onnxruntime']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=CHILD_ENV, timeout=120
    )
    assert result.stderr.strip().count("\n") == 0, result.stderr  # nothing loaded (no "exporting" line) first
    error = one_error_line(result)
    assert named in error and 'pip install -e ".[onnx]" in srfeat\'s folder' in error
    assert not (tmp_path / "out").exists()


def test_an_export_on_a_pytorch_too_old_to_export_is_one_line(tmp_path: Path) -> None:
    """PyTorch 2.5.1's exporter failed on the model with a traceback ("Unsupported opset-version")."""
    output = tmp_path / "old.onnx"
    code = (
        "import sys, torch; torch.__version__ = '2.5.1+cu124'; from srfeat.cli import main; "
        f"sys.exit(main(['export', '-o', {str(output)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=CHILD_ENV, timeout=300
    )
    error = one_error_line(result)
    assert "needs PyTorch 2.7 or newer, this is 2.5.1+cu124" in error and "pip install 'torch>=2.7'" in error
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_an_export_without_onnxruntime_says_it_was_not_checked(tmp_path: Path) -> None:
    """`pip install onnx onnxscript` (as the export's message offers) leaves out onnxruntime: the
    file was written unchecked against PyTorch, and nothing said so."""
    output = tmp_path / "unchecked.onnx"
    code = (
        "import sys; sys.modules['onnxruntime'] = None; from srfeat.cli import main; "
        f"sys.exit(main(['export', '-o', {str(output)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=CHILD_ENV, timeout=300
    )
    assert result.returncode == 0 and output.is_file(), result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "onnxruntime is not installed" in warnings[0], result.stderr
    assert "not run and compared with PyTorch" in warnings[0] and 'pip install -e ".[onnx]"' in warnings[0]


def test_automatic_cpu_tiles_are_wide_for_onnxruntime_within_half_the_free_memory(
    default_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime holds the whole network's largest maps per tile: under srfeat's 1 GiB CPU
    budget it got 87-pixel tiles, 3.5x the work in overlap. It gets 256 where memory allows."""
    from srfeat.inference import tiling

    cpu = torch.device("cpu")
    through_onnx = Upscaler(default_onnx, device="cpu", backend="onnxruntime")
    srfeat_path = Upscaler("default", device="cpu")

    def plan(upscaler: Upscaler) -> tiling.MemoryPlan:
        return tiling.plan_memory(*upscaler.model.bytes_per_pixel(), pad=upscaler.tile_pad, device=cpu)

    def body_bytes(upscaler: Upscaler, tile: int) -> int:
        return (tile + 2 * upscaler.tile_pad) ** 2 * upscaler.model.bytes_per_pixel()[0]

    monkeypatch.setattr(tiling, "available_memory", lambda device: 16 << 30)
    assert plan(through_onnx).tile >= 256
    assert body_bytes(srfeat_path, plan(srfeat_path).tile) <= tiling.CPU_TILE_BUDGET  # srfeat's own: as before
    assert body_bytes(srfeat_path, plan(srfeat_path).tile + 1) > tiling.CPU_TILE_BUDGET * 3 // 4

    monkeypatch.setattr(tiling, "available_memory", lambda device: 2 << 30)  # never more than half of it
    small = plan(through_onnx).tile
    assert small < 256 and body_bytes(through_onnx, small) <= 1 << 30


# ----------------------------------------------------------------------------- both backends agree


def hard_inputs() -> dict[str, np.ndarray]:
    """Where the network overshoots [0, 1]: uniform noise, and black/white edges and a thin line."""
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    edges = np.zeros((20, 20), np.uint8)
    edges[:, 10:] = 255
    edges[6:8] = 255 - edges[6:8]
    return {"noise": noise, "edges, grey": edges, "noise, grey": noise[..., 1]}


@pytest.mark.parametrize(("outscale", "tta"), [(2.0, False), (3.0, False), (None, True), (2.0, True)])
def test_onnx_backend_matches_torch_with_outscale_tta_and_grey(
    default_onnx: Path, outscale: float | None, tta: bool
) -> None:
    """The exported graph clamps the network's output to [0, 1]; the torch path clamps at the same
    place, so the outscale resize, the self-ensemble's average and the grey mix agree (they differed
    by up to 49 grey levels when the torch path clamped only at the end)."""
    through_torch = Upscaler("default", device="cpu", tile=0, tta=tta)
    through_onnx = Upscaler(default_onnx, device="cpu", tile=0, tta=tta)
    for name, image in hard_inputs().items():
        expected = through_torch(image, outscale)
        result = through_onnx(image, outscale)
        assert result.shape == expected.shape, name
        assert grey_levels(result, expected) <= 1, name


# ----------------------------------------------------------------------------- hostile ONNX files


def srfeat_like_onnx(
    path: Path,
    graph: str = "nearest",
    input_shape: tuple[int | str, ...] | None = ("batch", 3, "height", "width"),
    **metadata: str,
) -> Path:
    """A tiny ONNX file with srfeat's input, output and metadata around a stand-in graph:
    `nearest` (a nearest-neighbour x4 Resize), `identity` (returns its input) or `reshape8` (the
    input reshaped to 1x3x8x8, then `nearest`: it runs on 8x8 inputs only); `input_shape` is what
    the graph's input declares (None: no shape)."""
    from onnx import TensorProto, helper

    initializers = []
    if graph == "identity":
        nodes = [helper.make_node("Identity", ["input"], ["output"])]
    else:
        initializers = [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4])]
        nodes = [helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")]
    if graph == "reshape8":
        initializers.append(helper.make_tensor("shape", TensorProto.INT64, [4], [1, 3, 8, 8]))
        nodes = [helper.make_node("Reshape", ["input", "shape"], ["reshaped"])] + [
            helper.make_node("Resize", ["reshaped", "", "scales"], ["output"], mode="nearest")
        ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            graph,
            [
                helper.make_tensor_value_info(
                    "input", TensorProto.FLOAT, None if input_shape is None else list(input_shape)
                )
            ],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, None, None])],
            initializers,
        ),
        **OPSET_18,
    )
    entries = {"format": "srfeat-onnx", "scale": "4", "receptive_radius": "38", "num_features": "128", **metadata}
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_a_stand_in_graph_with_true_metadata_runs(tmp_path: Path) -> None:
    """The checks below refuse what is wrong, not what is unusual: a x4 graph that says x4 runs."""
    image = samples.astronaut()[:10, :12]
    result = Upscaler(srfeat_like_onnx(tmp_path / "nearest.onnx"), device="cpu", tile=4)(image)
    assert np.array_equal(result, image.repeat(4, axis=0).repeat(4, axis=1))


def test_an_onnx_file_runs_on_the_cpu_when_the_device_is_auto(tmp_path: Path, monkeypatch) -> None:
    """`device="auto"` (`--device auto`, the default) picks the GPU where there is one, and ONNX Runtime
    runs on the CPU here: `Upscaler("m.onnx")` and `srfeat upscale --model m.onnx` failed on every
    machine with a GPU, asking for --device cpu. A GPU asked for by name is still refused."""
    from srfeat.errors import SRFeatError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU
    path = srfeat_like_onnx(tmp_path / "nearest.onnx")
    image = samples.astronaut()[:6, :5]
    for device in ("auto", None):
        upscaler = Upscaler(path, device=device)
        assert upscaler.device == torch.device("cpu")
        assert np.array_equal(upscaler(image), image.repeat(4, axis=0).repeat(4, axis=1))
    with pytest.raises(SRFeatError, match="runs on the CPU"):
        Upscaler(path, device="cuda")


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"scale": "0"}, "scale '0'"),
        ({"scale": "-4"}, "scale '-4'"),
        ({"scale": "3"}, "scale '3'"),
        ({"scale": "4.0"}, "scale '4.0'"),
        ({"receptive_radius": "-5"}, "receptive_radius '-5'"),
        ({"receptive_radius": "10000000"}, "receptive_radius '10000000'"),
        ({"num_features": "0"}, "num_features '0'"),
        ({"num_features": "99999999999"}, "num_features '99999999999'"),
    ],
)
def test_onnx_metadata_out_of_range_is_refused_in_one_line(tmp_path: Path, metadata: dict, named: str) -> None:
    path = srfeat_like_onnx(tmp_path / "hostile.onnx", **metadata)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and named in message and "export it again" in message, message


def test_a_folder_named_like_an_onnx_file_is_called_a_folder(tmp_path: Path) -> None:
    """`Upscaler("models.onnx")` on a folder said "ONNX model not found: models.onnx", which is there."""
    from srfeat.errors import WeightsError

    (tmp_path / "models.onnx").mkdir()
    with pytest.raises(WeightsError, match=r"models\.onnx is a folder: give the \.onnx file"):
        Upscaler(tmp_path / "models.onnx", device="cpu")


def test_a_pipe_or_device_named_as_a_model_is_named_as_what_it_is(tmp_path: Path) -> None:
    """A named pipe at `x.onnx` (or `x.safetensors`, or /dev/null) was "not found", though it is
    there: the error names what it is, as `srfeat upscale` does for an image input, without reading it
    (a pipe with no writer would block the run)."""
    import os

    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    for name in ("x.onnx", "x.safetensors"):
        os.mkfifo(tmp_path / name)
    for model, named in (
        ("x.onnx", "x.onnx is a named pipe (FIFO)"),
        ("x.safetensors", "x.safetensors is a named pipe"),
    ):
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / model)
        assert named in one_error_line(result), result.stderr
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", "/dev/null")
    assert "/dev/null is a character device" in one_error_line(result), result.stderr
    assert not (tmp_path / "out").exists()


def test_onnx_runtime_threads_sleep_rather_than_spin_while_they_wait(tmp_path: Path) -> None:
    """ONNX Runtime's intra-op threads spin-wait by default: CPU burnt between layers and after every
    image (between a batch's images), on cores other work needs. srfeat's sessions turn that off
    (the effect is measured by `python3 -m benchmarks.onnx_runtime`, not asserted here)."""
    from srfeat.inference.onnx_runner import OnnxRunner

    runner = Upscaler(srfeat_like_onnx(tmp_path / "nearest.onnx"), device="cpu").model
    assert isinstance(runner, OnnxRunner)
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_an_onnx_file_over_two_gib_is_refused_before_it_is_read(tmp_path: Path, monkeypatch) -> None:
    """No ONNX file with its weights inside exceeds protobuf's 2 GiB; a larger one (sparse here) is
    refused from its size instead of read into memory whole."""
    from srfeat.errors import WeightsError

    path = tmp_path / "huge.onnx"
    with path.open("wb") as file:
        file.truncate(2**31 + 1)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self} whole"))
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "2.0 GiB" in message and "huge.onnx" in message, message


def test_hostile_onnx_files_through_the_cli_are_one_line(tmp_path: Path) -> None:
    """An identity graph that claims x4 (the output's shape is checked), and metadata that says x0."""
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    cases = {
        srfeat_like_onnx(tmp_path / "identity.onnx", "identity"): "returned 1x3x16x16 instead of 1x3x64x64",
        srfeat_like_onnx(tmp_path / "scale0.onnx", scale="0"): "scale '0'",
    }
    for model, message in cases.items():
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", model, "--device", "cpu")
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert message in errors[0] and model.name in errors[0], result.stderr
        assert not (tmp_path / "out" / "in.png").exists()


@pytest.mark.parametrize(
    ("input_shape", "described"),
    [(("batch", 1, "height", "width"), "?x1x?x?"), ((1, 3, 8, 8), "1x3x8x8"), (None, "scalar or undeclared")],
)
def test_an_onnx_file_that_takes_other_inputs_is_refused_when_it_loads(
    tmp_path: Path, input_shape: tuple[int | str, ...] | None, described: str
) -> None:
    """A srfeat-like file made for grey input, or for one input size, loaded and then failed at its
    first tile with ONNX Runtime's multi-line INVALID_ARGUMENT (a traceback from `srfeat upscale`).
    One that declares no input shape was said to take "  input"."""
    from srfeat.errors import WeightsError

    path = srfeat_like_onnx(tmp_path / "fixed.onnx", input_shape=input_shape)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and f"fixed.onnx takes {described} input" in message, message


def test_an_onnx_file_that_fails_at_some_sizes_fails_in_one_line(tmp_path: Path) -> None:
    """What ONNX Runtime raises while running a file (here: a graph that reshapes to 8x8) was its own
    exception type with a multi-line message: `srfeat upscale` showed a traceback and stopped."""
    path = srfeat_like_onnx(tmp_path / "only8.onnx", "reshape8")
    image = samples.astronaut()[:8, :8]
    upscaler = Upscaler(path, device="cpu", tile=0)
    assert np.array_equal(upscaler(image), image.repeat(4, axis=0).repeat(4, axis=1))
    from srfeat.errors import SRFeatError

    with pytest.raises(SRFeatError) as caught:
        upscaler(samples.astronaut()[:10, :9])
    message = str(caught.value)
    assert "\n" not in message and "only8.onnx on a 1x3x10x9 tile" in message, message
    Image.fromarray(samples.astronaut()[:10, :9]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", path, "--tile", "0")
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "only8.onnx on a 1x3x10x9 tile" in errors[0] and errors[1:] == ["ERROR: 1 of 1 input(s) failed"]
    assert len(result.stderr.strip().splitlines()) == 3, result.stderr  # the INFO line and these two: no ORT log
    assert not (tmp_path / "out" / "in.png").exists()


def test_a_generator_that_does_not_take_rgb_is_refused_in_one_line(tmp_path: Path) -> None:
    """A checkpoint whose head takes one channel loads (its shapes agree with each other): `srfeat
    upscale` then failed at the first tile with a traceback from inside the network, and `srfeat
    export` wrote a file against its own convention (RGB) that the onnxruntime backend could not run."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    checkpoint = tmp_path / "grey.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=1, in_channels=1), checkpoint)
    Image.fromarray(samples.camera()[:8, :8]).save(tmp_path / "in.png")
    for backend in ("torch", "onnxruntime"):
        result = srfeat_cli(
            "upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", checkpoint, "--backend", backend
        )
        assert "is a generator of 1-channel images" in one_error_line(result), result.stderr
    assert not (tmp_path / "out" / "in.png").exists()
    result = srfeat_cli("export", "--model", checkpoint, "-o", tmp_path / "grey.onnx")
    assert "is a generator of 1-channel images" in one_error_line(result), result.stderr
    assert not (tmp_path / "grey.onnx").exists()


def test_an_onnx_file_with_an_inf_weight_is_refused_not_drawn_white(tmp_path: Path, default_onnx: Path) -> None:
    """An inf in the last bias makes one channel inf everywhere, which the graph's clamp would turn into
    a silent all-white red channel: the file is refused when it loads, in one line."""
    from onnx import numpy_helper

    model = onnx.load(str(default_onnx))
    (bias,) = [each for each in model.graph.initializer if each.name == "tail.bias"]
    values = numpy_helper.to_array(bias).copy()
    values[0] = np.inf
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "inf.onnx"))
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / "inf.onnx")
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "inf.onnx has 1 weight value(s) that are not finite" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_an_inf_weight_kept_in_a_constant_node_is_refused_too(tmp_path: Path, default_onnx: Path) -> None:
    """Only initializers were checked: the same inf bias as a Constant node (as other tools keep weights)
    gave an all-white image, and exit code 0."""
    from onnx import numpy_helper

    model = onnx.load(str(default_onnx))
    (bias,) = [each for each in model.graph.initializer if each.name == "tail.bias"]
    values = numpy_helper.to_array(bias).copy()
    values[:] = np.inf
    model.graph.initializer.remove(bias)
    constant = onnx.helper.make_node("Constant", [], ["tail.bias"], value=numpy_helper.from_array(values))
    model.graph.node.insert(0, constant)
    onnx.save(model, str(tmp_path / "inf.onnx"))
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / "inf.onnx")
    assert "inf.onnx has 3 weight value(s) that are not finite" in one_error_line(result), result.stderr
    assert not (tmp_path / "out").exists()


def test_a_weight_with_a_flipped_exponent_bit_is_refused_not_run(tmp_path: Path, default_onnx: Path) -> None:
    """A damaged file whose weight became 1e36 (the top bit of its float's exponent flipped) is finite: it
    ran, and its image came out up to 158 grey levels off, without a word. A checkpoint's would be refused."""
    from onnx import numpy_helper

    model = onnx.load(str(default_onnx))
    (head,) = [each for each in model.graph.initializer if each.name == "head.weight"]
    values = numpy_helper.to_array(head).copy()
    values.view(np.uint32).flat[5] ^= np.uint32(1 << 30)
    head.CopyFrom(numpy_helper.from_array(values, head.name))
    onnx.save(model, str(tmp_path / "flipped.onnx"))
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / "flipped.onnx")
    line = one_error_line(result)
    assert "flipped.onnx has a weight of" in line and "'head.weight'" in line and "far below 1e+06" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("attribute", ["value_float", "value_floats"])
def test_a_huge_weight_in_a_constant_node_s_float_attribute_is_refused_too(tmp_path: Path, attribute: str) -> None:
    """A Constant node's `value_float` or `value_floats` was checked for NaN and inf, but not for size as
    other weights are: a gain of 3e36 on the image (a flipped exponent bit) loaded. 0.5 loads and runs."""
    from onnx import helper

    def scaled(path: Path, gain: float) -> Path:
        model = onnx.load(str(srfeat_like_onnx(path)))
        value = gain if attribute == "value_float" else [1.0, gain, 1.0]
        shape = [1, 1 if attribute == "value_float" else 3, 1, 1]
        # pyright checks the unpacked attribute against make_node's own keywords (name, domain...) too.
        model.graph.node.insert(0, helper.make_node("Constant", [], ["gain"], **{attribute: value}))  # pyright: ignore[reportArgumentType]
        model.graph.node.insert(1, helper.make_node("Constant", [], ["gain_shape"], value_ints=shape))
        model.graph.node.insert(2, helper.make_node("Reshape", ["gain", "gain_shape"], ["gains"]))
        model.graph.node.insert(3, helper.make_node("Mul", ["input", "gains"], ["scaled"]))
        model.graph.node[4].input[0] = "scaled"
        onnx.save(model, str(path))
        return path

    with pytest.raises(WeightsError) as caught:
        Upscaler(scaled(tmp_path / "flipped.onnx", 3e36), device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "flipped.onnx has a weight of 3e+36 (in 'gain')" in message, message
    image = samples.astronaut()[:6, :5]
    half = Upscaler(scaled(tmp_path / "half.onnx", 0.5), device="cpu", tile=0)(image).astype(np.int64)
    expected = image.astype(np.float64) * (0.5 if attribute == "value_float" else [1.0, 0.5, 1.0])
    assert np.abs(half - np.round(expected).repeat(4, axis=0).repeat(4, axis=1)).max() <= 1


def test_exporting_leaves_the_callers_generator_as_it_was(tmp_path: Path) -> None:
    """`export_onnx` (the Python API) checked its file against the caller's own generator after
    `.cpu().float().eval()`, which change a module in place: a generator exported mid-training came
    back in eval mode (its BatchNorm frozen for the rest of the run), in float32, moved off its GPU."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.export.onnx import ModelInfo, export_onnx

    generator = SRFeatGenerator(num_features=8, num_blocks=2).double().train()
    before = {key: value.clone() for key, value in generator.state_dict().items()}
    result = export_onnx(generator, tmp_path / "g.onnx", ModelInfo("g", "none", "CC0"))
    assert result.max_difference is not None and result.max_difference < 1e-5
    assert generator.training and all(module.training for module in generator.modules())
    after = generator.state_dict()
    assert all(after[key].dtype == before[key].dtype and torch.equal(after[key], before[key]) for key in before)
    assert generator.head.weight.dtype == torch.float64


# ----------------------------------------------------------------------------- where export writes


def test_export_checks_its_output_path_before_exporting(tmp_path: Path, default_onnx: Path) -> None:
    """A parent that is a file, or a name without .onnx, is refused before the model is even read
    (the missing checkpoint is not what the error names); nothing is written."""
    (tmp_path / "afile").write_text("mine")
    missing_model = tmp_path / "absent.safetensors"
    for output, message in [
        (tmp_path / "afile" / "x.onnx", "afile is a file, not a folder"),
        (tmp_path / "afile" / "sub" / "x.onnx", "afile is a file, not a folder"),
        (tmp_path / "op17", f"use -o {tmp_path / 'op17.onnx'}"),
        (tmp_path / "model.pt", f"use -o {tmp_path / 'model.onnx'}"),
        (tmp_path / ".onnx", f".onnx has no name before .onnx: use -o {tmp_path / 'model.onnx'}"),
    ]:
        result = srfeat_cli("export", "--model", missing_model, "-o", output)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "mine"
    # An ONNX file named without .onnx (as export wrote them before) is called what it is.
    renamed = tmp_path / "op17"
    renamed.write_bytes(default_onnx.read_bytes())
    Image.fromarray(samples.astronaut()[:8, :8]).save(tmp_path / "in.png")
    result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", renamed)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "looks like an ONNX file: name it .onnx" in errors[0] and "pickle" not in errors[0], errors[0]


def test_export_from_python_names_its_keywords_and_the_command_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export_onnx(..., overwrite=False)` over an existing file said "use --overwrite", and a name without
    .onnx "use -o X.onnx"; a file saved while it exported was refused by the writer, "allow replacing it
    (replace=True)" (a keyword export_onnx does not take), to `srfeat export` too. Python gets overwrite=True,
    the command (`command_line=True`) --overwrite."""
    from inference_helpers import tiny_generator

    from srfeat.errors import SRFeatError
    from srfeat.export import onnx as onnx_export
    from srfeat.export.onnx import ModelInfo, check_output_path, export_onnx
    from srfeat.files import OutputExistsError

    generator, info = tiny_generator(), ModelInfo("g", "none", "CC0")
    existing = tmp_path / "g.onnx"
    existing.write_bytes(b"mine")
    for command_line, option in ((False, "overwrite=True"), (True, "--overwrite")):
        with pytest.raises(SRFeatError) as raised:
            export_onnx(generator, existing, info, command_line=command_line)
        assert str(raised.value) == f"{existing} exists; use {option} to replace it"
    for command_line, flag in ((False, ""), (True, "-o ")):
        with pytest.raises(SRFeatError) as raised:
            check_output_path(tmp_path / "model.pt", command_line=command_line)
        assert str(raised.value).endswith(f"know an ONNX model: use {flag}{tmp_path / 'model.onnx'}")
    onnx_model = onnx_export.onnx_model

    def saving_meanwhile(*args: Any, **kwargs: Any) -> object:
        (tmp_path / "new.onnx").write_bytes(b"saved meanwhile")
        return onnx_model(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "onnx_model", saving_meanwhile)
    said = f"{tmp_path / 'new.onnx'} appeared while the model was exported (another program?); it is kept: "
    for command_line, option in ((False, "overwrite=True"), (True, "--overwrite")):
        (tmp_path / "new.onnx").unlink(missing_ok=True)
        with pytest.raises(OutputExistsError) as raised:
            export_onnx(generator, tmp_path / "new.onnx", info, command_line=command_line)
        assert str(raised.value) == said + f"remove it or allow replacing it ({option}), and run again"
        assert (tmp_path / "new.onnx").read_bytes() == b"saved meanwhile"
        assert sorted(path.name for path in tmp_path.iterdir()) == ["g.onnx", "new.onnx"]  # no temporary left


def test_the_metadata_of_a_blend_at_minus_zero_names_strength_0() -> None:
    """`--strength -0` (0, the default model) was named `default-gan-strength--0`, `+ -0 x gan`."""
    from srfeat.export.onnx import model_info

    info = model_info("default", -0.0)
    assert info.name == "default-gan-strength-0" == model_info("default", 0.0).name
    assert "-0" not in info.training_data


def test_export_from_python_refuses_what_it_cannot_export_in_one_line(tmp_path: Path) -> None:
    """`export_onnx("default", ...)` was AttributeError ('str' object has no attribute 'in_channels'), an
    opset of "18" a TypeError, and `model_info("default", strength=2)` described "-1 x default + 2 x gan"."""
    from inference_helpers import tiny_generator

    from srfeat.errors import InvalidOptionError
    from srfeat.export.onnx import export_onnx, model_info

    info = model_info("default")
    with pytest.raises(InvalidOptionError, match="export takes an SRFeatGenerator, got str: load .*load_generator"):
        export_onnx("default", tmp_path / "a.onnx", info)  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match="opset must be a whole number"):
        export_onnx(tiny_generator(), tmp_path / "b.onnx", info, opset="18")  # pyright: ignore[reportArgumentType]
    for strength in (2, -0.5, float("nan")):
        with pytest.raises(InvalidOptionError, match="strength must be between 0 and 1"):
            model_info("default", strength=strength)
    assert list(tmp_path.iterdir()) == []


def test_an_opset_that_is_no_whole_number_is_quoted_on_one_line(tmp_path: Path) -> None:
    """The message quoted the value's repr, which for an array spans lines: "got ndarray array([17, 17, ...\n"."""
    from inference_helpers import tiny_generator

    from srfeat.errors import InvalidOptionError
    from srfeat.export.onnx import OPSET, export_onnx, model_info

    with pytest.raises(InvalidOptionError) as refused:
        export_onnx(tiny_generator(), tmp_path / "a.onnx", model_info("default"), opset=np.full(40, 17))  # pyright: ignore[reportArgumentType]
    assert str(refused.value).startswith(f"opset must be a whole number (e.g. {OPSET}), got ndarray array([17, 17,")
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_an_opset_of_numpy_s_integers_is_a_whole_number(tmp_path: Path) -> None:
    # np.int64(18), as read from a config array or a sweep, was refused: "opset must be a whole number"
    import onnx
    from inference_helpers import tiny_generator

    from srfeat.export.onnx import export_onnx, model_info

    export_onnx(tiny_generator(), tmp_path / "a.onnx", model_info("default"), opset=np.int64(18))  # pyright: ignore[reportArgumentType]
    opsets = {entry.domain: entry.version for entry in onnx.load(str(tmp_path / "a.onnx")).opset_import}
    assert opsets[""] == 18


def test_options_the_onnxruntime_backend_cannot_take_are_option_errors(tmp_path: Path) -> None:
    """They were bare `SRFeatError`s: not the `InvalidOptionError` (a `ValueError`) the README promises
    for an `Upscaler` option that cannot be used, so `except ValueError` missed them."""
    from srfeat.errors import InvalidOptionError

    path = srfeat_like_onnx(tmp_path / "nearest.onnx")
    for build, message in (
        (lambda: Upscaler(path, device="cpu", dtype="bf16"), "dtype='fp32'"),
        (lambda: Upscaler(path, device="cpu", compile=True), r"compile=True"),
    ):
        with pytest.raises(InvalidOptionError, match=message):
            build()


def test_an_onnx_file_whose_weights_are_elsewhere_or_declared_huge_is_refused_in_one_line(tmp_path: Path) -> None:
    """A srfeat-like file with its weights in a separate file (external data) failed with ONNX Runtime's
    "model_path must not be empty"; one with a weight declared 2^40 values but holding none loaded in
    ONNX Runtime and then stopped `srfeat upscale` with a traceback (a ValueError from onnx's reader)."""
    from onnx import TensorProto, numpy_helper

    external = tmp_path / "external.onnx"
    model = onnx.load(str(srfeat_like_onnx(tmp_path / "nearest.onnx")))
    (scales,) = model.graph.initializer
    scales.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scales), scales.name))  # raw data: movable
    onnx.save_model(model, str(external), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    huge = tmp_path / "huge.onnx"
    model = onnx.load(str(tmp_path / "nearest.onnx"))
    tensor = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20])
    model.graph.initializer.append(tensor)
    onnx.save(model, str(huge))
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    cases = {
        external: "external.onnx keeps its weights in another file ('weights.bin', external data)",
        huge: "huge.onnx is damaged or not a srfeat export: its weight 'huge' cannot be read",
    }
    for path, message in cases.items():
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", path)
        assert message in one_error_line(result), result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_an_export_that_onnxruntime_cannot_run_fails_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """An onnxruntime older than the onnx package refuses a newer --opset with its own exception type
    (here raised by a stand-in session): the self-check let it through as a traceback."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    checkpoint, output = tmp_path / "tiny.safetensors", tmp_path / "tiny.onnx"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=1), checkpoint)
    code = (
        "import sys, onnxruntime\n"
        "class Fail(Exception): pass\n"
        "def refuse(*args, **kwargs):\n"
        "    raise Fail('[ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 99 is not supported\\nmore detail')\n"
        "onnxruntime.InferenceSession = refuse\n"
        "from srfeat.cli import main\n"
        f"sys.exit(main(['export', '--model', {str(checkpoint)!r}, '-o', {str(output)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=CHILD_ENV, timeout=300
    )
    error = one_error_line(result)
    assert "cannot run the exported model ([ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 99" in error, error
    assert "nothing was written" in error and "--opset" in error, error
    assert not output.exists()


def test_export_onto_a_link_to_a_missing_file_is_refused_before_exporting(tmp_path: Path) -> None:
    """`-o` naming a dangling symbolic link: `exists()` follows it, so the export ran its seconds and
    then said the file 'appeared while it was being written (another program?)'."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    checkpoint, link = tmp_path / "tiny.safetensors", tmp_path / "link.onnx"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=1), checkpoint)
    link.symlink_to(tmp_path / "gone" / "target.onnx")
    error = one_error_line(srfeat_cli("export", "--model", checkpoint, "-o", link))
    assert "link.onnx exists (a link to" in error and "which is missing); use --overwrite" in error, error
    assert link.is_symlink() and not link.exists()


def test_a_file_named_onnx_that_is_a_checkpoint_or_an_image_says_what_it_is(tmp_path: Path) -> None:
    """A generator checkpoint or a PNG saved under an .onnx name was refused as 'protobuf parsing
    failed', which said neither what the file is nor what to do."""
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import save_generator

    checkpoint = tmp_path / "tiny.safetensors"
    save_generator(SRFeatGenerator(num_features=8, num_blocks=1), checkpoint)
    (tmp_path / "checkpoint.onnx").write_bytes(checkpoint.read_bytes())
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    (tmp_path / "picture.onnx").write_bytes((tmp_path / "in.png").read_bytes())
    cases = {
        "checkpoint.onnx": "checkpoint.onnx is a safetensors file, not an ONNX model: name it .safetensors",
        "picture.onnx": "picture.onnx is a PNG image, not an ONNX model",
    }
    for name, message in cases.items():
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", tmp_path / name)
        assert message in one_error_line(result), result.stderr
    assert not (tmp_path / "out").exists()


def test_the_tile_plan_covers_what_onnxruntime_takes_for_an_fp16_file(tmp_path: Path) -> None:
    """The `--fp16` file takes 69 to 148 KB per input pixel in ONNX Runtime's CPU, varying from run to
    run (the float32 file 24 KB), but its tiles were planned at the float32 file's 28.7 KB: an automatic
    tile several times the memory it was planned for (and at four times, 115 KB, CI still found more)."""
    path = tmp_path / "m16.onnx"
    assert srfeat_cli("export", "--model", "default", "--fp16", "-o", path).returncode == 0
    code = (
        "import resource, sys, torch\n"
        "from srfeat.inference.onnx_runner import OnnxRunner\n"
        f"runner = OnnxRunner({str(path)!r})\n"
        "runner(torch.rand(1, 3, 8, 8))\n"  # the session's own buffers, before the measured run
        "before = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        "runner(torch.rand(1, 3, 128, 128))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(peak - before, runner.bytes_per_pixel()[0] * 128 * 128)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=CHILD_ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr
    used, planned = map(int, result.stdout.split())
    assert used <= planned, (used, planned)


def test_metadata_text_that_is_not_utf8_is_one_line_and_keeps_the_old_file(tmp_path: Path, model_path: Path) -> None:
    """`--license` typed in a Latin-1 terminal reaches Python as surrogates (its bytes are not UTF-8), which
    ONNX metadata cannot hold: protobuf's UnicodeEncodeError was a traceback after the export's work. The
    refusal names the flag alone, not the field as well ("the model's training_data (--training-data)")."""
    from srfeat.export.onnx import model_info

    old = tmp_path / "m.onnx"
    old.write_bytes(b"the old export")
    for option in ("--license", "--training-data"):
        result = srfeat_cli("export", "--model", model_path, "-o", old, "--overwrite", option, "\udca9 M\udcfcller")
        assert one_error_line(result, only=True) == (
            f"ERROR: {option} '\\xa9 M\\xfcller' holds bytes that are not UTF-8, which ONNX metadata must be: "
            "give it in UTF-8 (e.g. set a UTF-8 locale, LANG=C.UTF-8)"
        )
    assert old.read_bytes() == b"the old export"
    # A checkpoint whose file name is in another encoding is named as best it can be, not refused.
    assert model_info(Path("caf\udce9.safetensors")).name == "caf\ufffd"


def test_metadata_text_that_is_not_utf8_from_python_is_named_by_its_field() -> None:
    """From Python, `ModelInfo` and `model_info` were refused naming srfeat export's flag beside the field
    ("the model's training_data (--training-data)"), a flag of a command the caller never ran."""
    from srfeat.errors import InvalidOptionError
    from srfeat.export.onnx import ModelInfo, model_info

    latin1 = "\udca9 M\udcfcller"
    advice = "holds bytes that are not UTF-8, which ONNX metadata must be: give it in UTF-8"
    for field in ("training_data", "license"):
        given = {"training_data": "none", "license": "CC0", field: latin1}
        with pytest.raises(InvalidOptionError) as by_the_class:
            ModelInfo("g", given["training_data"], given["license"])
        with pytest.raises(InvalidOptionError) as by_the_function:
            # pyright checks the unpacked field against model_info's other keywords (strength...) too.
            model_info("default", **{field: latin1})  # pyright: ignore[reportArgumentType]
        for refused in (by_the_class, by_the_function):
            assert str(refused.value).startswith(f"the model's {field} '\\xa9 M\\xfcller' {advice}"), refused.value
            assert "--" not in str(refused.value)
    with pytest.raises(InvalidOptionError, match=r"^the model's name 'caf\\xe9' holds bytes that are not UTF-8"):
        ModelInfo("caf\udce9", "none", "CC0")
    # a command that builds it says so, and its flags are named
    with pytest.raises(InvalidOptionError, match=r"^--license '\\xa9 M\\xfcller' holds bytes that are not UTF-8"):
        model_info("default", license=latin1, command_line=True)


# Ctrl-C as it lands in the middle of the exporter's first import of torch._dynamo (a real one landed a few
# modules further): the import of torch._dynamo.variables.builder raises KeyboardInterrupt, once.
INTERRUPTED_IMPORT = """
import sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch._dynamo.variables.builder":
            sys.meta_path.remove(self)
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from srfeat.cli import main
sys.argv[0] = "srfeat"
sys.exit(main())
"""


def test_ctrl_c_during_the_export_is_one_line_and_keeps_the_old_file(tmp_path: Path, model_path: Path) -> None:
    """The exporter's own `except torch._dynamo.exc.UserError` met a half-imported torch._dynamo and raised
    AttributeError, which it wrapped in a TorchExportError: about 100 lines of traceback and exit code 1."""
    old = tmp_path / "m.onnx"
    old.write_bytes(b"the old export")
    command = [sys.executable, "-c", INTERRUPTED_IMPORT, "export", "--model", model_path, "-o", old, "--overwrite"]
    result = subprocess.run(command, check=False, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 130 and result.stderr.strip() == "ERROR: interrupted", result.stderr[-3000:]
    assert old.read_bytes() == b"the old export" and [path.name for path in tmp_path.iterdir()] == ["m.onnx"]


def test_export_refusals_name_the_python_keywords_to_a_python_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export_onnx` from Python was told to "export without --fp16" and "with a lower --opset", flags of a
    command it never ran (the command's words: the two tests above)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.errors import SRFeatError
    from srfeat.export.onnx import ModelInfo, export_onnx

    generator = SRFeatGenerator(num_features=8, num_blocks=1)
    with torch.no_grad():
        generator.tail.weight[0, 0, 0, 0] = 3e5  # beyond float16 once BatchNorm is folded in
    info = ModelInfo("big", "none", "CC0")
    with pytest.raises(SRFeatError, match=r"\(they overflow\): export without fp16=True$"):
        export_onnx(generator, tmp_path / "big.onnx", info, fp16=True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 99 is not supported")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(SRFeatError, match=r"nothing was written: export with a lower opset \(the default is \d+\)"):
        export_onnx(SRFeatGenerator(num_features=8, num_blocks=1), tmp_path / "tiny.onnx", info)
    assert list(tmp_path.iterdir()) == []
