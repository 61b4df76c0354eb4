"""A srfeat export's metadata states its receptive radius (how far its tiles overlap) and features (how much memory a
tile is planned for); both were trusted. The graph itself says how far its convolutions see and how many values its
largest map makes: where the metadata understates them, the graph's are taken (with a warning naming both), so a
crafted or hand-edited file tiles without seams and is planned the memory it takes. Real exports load as they are."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import tiny_generator
from test_onnx_attention import refusal
from test_onnx_missing_inputs import srfeat_metadata_onnx

from srfeat.inference import Upscaler
from srfeat.inference.onnx_contents import check_before_loading, parse_model
from srfeat.inference.onnx_runner import MAX_RECEPTIVE_RADIUS, OnnxRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
samples = pytest.importorskip("skimage.data")


def exported(path: Path, model: str | tuple[int, int, int], strength: float | None = None, fp16: bool = False) -> Path:
    """`model` (a bundled name, or a tiny generator's scale, blocks and features) exported as `srfeat export` does."""
    from srfeat.export.onnx import export_onnx, model_info
    from srfeat.weights.blend import load_blended

    generator = load_blended(model, strength) if isinstance(model, str) else tiny_generator(*model)
    export_onnx(generator, path, model_info(model if isinstance(model, str) else generator, strength), fp16=fp16)
    return path


def stated(path: Path) -> dict[str, int]:
    metadata = {each.key: each.value for each in onnx.load(str(path)).metadata_props}
    return {key: int(metadata[key]) for key in ("receptive_radius", "num_features")}


@pytest.mark.parametrize(
    ("model", "strength", "fp16"),
    [
        ("default", None, False),
        ("gan", None, False),
        ("default", 0.5, False),
        ("gan", None, True),
        ((2, 3, 8), None, False),
        ((4, 1, 16), None, True),
    ],
)
def test_real_exports_load_with_the_metadata_they_state(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    model: str | tuple[int, int, int],
    strength: float | None,
    fp16: bool,
) -> None:
    """The graph's bounds are srfeat's own (38 for 16 blocks, x4 or x2; 4 F values per pixel at most), not merely
    within them: every bundled model, a blend, float16, x2 and x4 load as they state, without a warning."""
    path = exported(tmp_path / "model.onnx", model, strength, fp16)
    data = path.read_bytes()
    bounds = check_before_loading(data, parse_model(data), str(path))
    assert bounds is not None
    assert {"receptive_radius": bounds.receptive_radius, "num_features": bounds.num_features} == stated(path)
    with caplog.at_level(logging.WARNING):
        runner = OnnxRunner(path)
    assert {"receptive_radius": runner.receptive_radius, "num_features": runner.num_features} == stated(path)
    assert not [each for each in caplog.records if each.levelno >= logging.WARNING], caplog.text


def understated(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny x4 export (radius 12, 8 features), and the same file stating radius 2 and 1 feature."""
    true = exported(tmp_path / "true.onnx", (4, 3, 8))
    model = onnx.load(str(true))
    for entry in model.metadata_props:
        entry.value = {"receptive_radius": "2", "num_features": "1"}.get(entry.key, entry.value)
    onnx.save(model, str(tmp_path / "crafted.onnx"))
    return true, tmp_path / "crafted.onnx"


def test_understated_metadata_gives_way_to_the_graph_s_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    true, crafted = understated(tmp_path)
    with caplog.at_level(logging.WARNING):
        runner = OnnxRunner(crafted)
    assert (runner.receptive_radius, runner.num_features) == (12, 8)
    assert runner.bytes_per_pixel() == OnnxRunner(true).bytes_per_pixel()  # the memory the graph takes
    lines = [each.getMessage() for each in caplog.records if each.levelno >= logging.WARNING]
    assert len(lines) == 2 and all("\n" not in line and "export it again" in line for line in lines), lines
    assert "receptive_radius 2, where its graph's convolutions see 12 pixels" in lines[0], lines
    assert "num_features 1, where its graph's largest map" in lines[1] and "of 8 features" in lines[1], lines


def test_tiles_of_a_file_that_understates_its_radius_show_no_seams(tmp_path: Path) -> None:
    """Tiled by 32 pixels with the 2 it stated, its tiles' edges differed from the whole image's; by the graph's 12,
    the tiled image is the untiled one."""
    _, crafted = understated(tmp_path)
    image = samples.astronaut()[100:180, 150:230]
    tiled = Upscaler(crafted, device="cpu", tile=32)(image)
    assert np.array_equal(tiled, Upscaler(crafted, device="cpu", tile=0)(image))


def test_a_graph_that_sees_farther_than_any_export_is_refused(tmp_path: Path) -> None:
    """A 3x3 Conv dilated by 5,000 sees 5,000 pixels a side, farther than the metadata may state (4,096): tiles
    overlapping by as much would each be 10,000 pixels wide."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Conv", ["input", "weight"], ["maps"], dilations=[5000, 5000], pads=[5000] * 4),
        helper.make_node("Resize", ["maps", "", "scales"], ["output"], mode="nearest"),
    ]
    weights = [
        helper.make_tensor("weight", TensorProto.FLOAT, [3, 3, 3, 3], np.zeros(81, np.float32)),
        helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 4, 4]),
    ]
    message = refusal(srfeat_metadata_onnx(tmp_path / "far.onnx", nodes, weights))
    assert f"convolutions see 5,000 pixels into the image, where a srfeat export sees {MAX_RECEPTIVE_RADIUS:,}" in (
        message
    ), message
