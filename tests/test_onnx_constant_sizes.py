"""An .onnx file whose constants alone size a huge tensor is refused when it loads, before ONNX Runtime is
given it: a ConstantOfShape [2^40] loaded and then stopped the first tile with "std::bad_alloc", and a
merely large one took gigabytes for nothing. So are a sparse weight that expands to such a size and a
weight declared larger than its data, constants broadcast into a huge tensor in several steps, and a graph
that enlarges the image far more than x4 by constant scales. What is small still runs; and each file is
parsed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image
from test_onnx_export import srfeat_like_onnx
from test_onnx_external_data import load_with_a_stand_in_session, point_a_weight_elsewhere

from srfeat.errors import WeightsError
from srfeat.inference import Upscaler
from srfeat.inference.onnx_contents import MAX_CONSTANT_VALUES

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
samples = pytest.importorskip("skimage.data")

HUGE = [100_000, 100_000, 100]


def with_tensor_made_by(path: Path, op: str, numbers: list[int]) -> Path:
    """The stand-in model at `path` whose output also adds the largest value of a tensor that `op` makes
    from constants: of shape `numbers` (ConstantOfShape, Expand, Resize's sizes; from a Constant node's
    value_ints for "Constant"), `numbers` repeats (Tile), a range to `numbers[0]` (Range), or `numbers`
    pads (Pad, on the input)."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    graph.node[0].output[0] = "resized"

    def constant(name: str, values: list[int], dims: list[int] | None = None) -> str:
        dims = [len(values)] if dims is None else dims
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, dims, values))
        return name

    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = {
        "ConstantOfShape": lambda: [
            helper.make_node("ConstantOfShape", [constant("shape", numbers)], ["big"], value=zero)
        ],
        "Constant": lambda: [
            helper.make_node("Constant", [], ["shape"], value_ints=numbers),
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=zero),
        ],
        "Expand": lambda: [helper.make_node("Expand", ["scales", constant("shape", numbers)], ["big"])],
        "Tile": lambda: [helper.make_node("Tile", ["scales", constant("repeats", numbers)], ["big"])],
        "Range": lambda: [
            helper.make_node(
                "Range",
                [constant("start", [0], []), constant("limit", numbers, []), constant("delta", [1], [])],
                ["big"],
            )
        ],
        "Resize": lambda: [helper.make_node("Resize", ["input", "", "", constant("sizes", numbers)], ["big"])],
        "Pad": lambda: [helper.make_node("Pad", ["input", constant("pads", numbers)], ["big"])],
    }[op]()
    reduced = [helper.make_node("ReduceMax", ["big"], ["largest"], keepdims=0)]
    if op == "Range":
        reduced.append(helper.make_node("Cast", ["largest"], ["largest_float"], to=TensorProto.FLOAT))
    added = helper.make_node("Add", ["resized", reduced[-1].output[0]], ["output"])
    graph.node.extend([*nodes, *reduced, added])
    onnx.save(model, str(path))
    return path


HOSTILE = {
    "ConstantOfShape": [2**40],
    "Constant": HUGE,
    "Expand": HUGE,
    "Tile": [2**40],
    "Range": [2**40],
    "Resize": [1, 3, 2**20, 2**20],
    "Pad": [0, 0, 2**20, 2**20, 0, 0, 2**20, 2**20],
}
SMALL = {
    "ConstantOfShape": [3, 5],
    "Constant": [2, 2, 2],
    "Expand": [2, 4],
    "Tile": [16],
    "Range": [100],
    "Resize": [1, 3, 8, 8],
    "Pad": [0, 0, 2, 2, 0, 0, 2, 2],
}


@pytest.mark.parametrize("op", sorted(HOSTILE))
def test_a_huge_tensor_from_constants_is_refused_when_the_file_loads(tmp_path: Path, op: str) -> None:
    """Each loaded, and the first tile failed in ONNX Runtime ("std::bad_alloc", or for Tile its own limit)."""
    path = with_tensor_made_by(tmp_path / "bomb.onnx", op, HOSTILE[op])
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    named = "a ConstantOfShape node" if op == "Constant" else f"an {op} node" if op == "Expand" else f"a {op} node"
    assert "\n" not in message and message.startswith(f"{path} makes a tensor of at least "), message
    assert f"({named})" in message and "export it again with `srfeat export`" in message, message


@pytest.mark.parametrize("op", sorted(SMALL))
def test_a_small_tensor_from_constants_still_runs(tmp_path: Path, op: str) -> None:
    """The checks refuse what is too large, not what is unusual: each file adds the largest value of its tensor."""
    path = with_tensor_made_by(tmp_path / "small.onnx", op, SMALL[op])
    image = samples.astronaut()[:8, :8]
    largest = {"Expand": 4.0, "Tile": 4.0, "Range": 99.0, "Resize": image.max() / 255, "Pad": image.max() / 255}
    nearest = image.repeat(4, axis=0).repeat(4, axis=1) / 255
    expected = np.round(np.clip(nearest + largest.get(op, 0.0), 0, 1) * 255)
    assert np.abs(Upscaler(path, device="cpu", tile=0)(image) - expected).max() <= 1, op


def test_the_cap_is_where_the_refusal_starts(tmp_path: Path) -> None:
    """A tensor of `MAX_CONSTANT_VALUES` values loads (ONNX Runtime makes it only when it runs); one more is refused."""
    Upscaler(with_tensor_made_by(tmp_path / "cap.onnx", "ConstantOfShape", [MAX_CONSTANT_VALUES]), device="cpu")
    with pytest.raises(WeightsError, match=f"at least {MAX_CONSTANT_VALUES + 1:,} values"):
        Upscaler(
            with_tensor_made_by(tmp_path / "over.onnx", "ConstantOfShape", [MAX_CONSTANT_VALUES + 1]), device="cpu"
        )


def with_constants_combined(path: Path, op: str, length: int) -> Path:
    """The stand-in model at `path` adding the largest value of `op` (Add or MatMul) on a column and a row of
    `length` zeros: a `length` x `length` tensor from two weights of `length` values."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    graph.node[0].output[0] = "resized"
    graph.initializer.extend(
        numpy_helper.from_array(np.zeros(shape, np.float32), name)
        for name, shape in (("column", (length, 1)), ("row", (1, length)))
    )
    graph.node.extend(
        [
            helper.make_node(op, ["column", "row"], ["big"]),
            helper.make_node("ReduceMax", ["big"], ["largest"], keepdims=0),
            helper.make_node("Add", ["resized", "largest"], ["output"]),
        ]
    )
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("op", "named"), [("Add", "an Add"), ("MatMul", "a MatMul")])
def test_constants_broadcast_or_multiplied_into_a_huge_tensor_are_refused(tmp_path: Path, op: str, named: str) -> None:
    """Two weights of 10,000 values made 10^8 at the first tile (400 MB; at 10^5, "std::bad_alloc")."""
    with pytest.raises(WeightsError) as caught:
        Upscaler(with_constants_combined(tmp_path / "outer.onnx", op, 10_000), device="cpu")
    message = str(caught.value)
    assert f"makes a tensor of at least 100,000,000 values from its constants alone ({named} node)" in message
    image = samples.astronaut()[:4, :4]
    small = Upscaler(with_constants_combined(tmp_path / "small.onnx", op, 100), device="cpu", tile=0)
    assert np.array_equal(small(image), image.repeat(4, axis=0).repeat(4, axis=1))


def with_sparse_weight(path: Path, dims: list[int], *, in_constant: bool) -> Path:
    """The stand-in model at `path` adding the largest value of a sparse weight of shape `dims` holding one value."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    graph.node[0].output[0] = "resized"
    values = helper.make_tensor("sparse", TensorProto.FLOAT, [1], [0.5])
    sparse = helper.make_sparse_tensor(values, helper.make_tensor("at", TensorProto.INT64, [1], [0]), dims)
    if in_constant:
        graph.node.append(helper.make_node("Constant", [], ["sparse"], sparse_value=sparse))
    else:
        graph.sparse_initializer.append(sparse)
    graph.node.extend(
        [
            helper.make_node("ReduceMax", ["sparse"], ["largest"], keepdims=0),
            helper.make_node("Add", ["resized", "largest"], ["output"]),
        ]
    )
    onnx.save(model, str(path))
    return path


def test_a_sparse_weight_that_expands_to_a_huge_one_is_refused_in_one_line(tmp_path: Path) -> None:
    """ONNX Runtime expands a sparse weight when it loads: one of 3e8 values took 10 s and 2.6 GB, and
    of 1e12 values it failed with a line of C++ signature (graph.cc ... onnxruntime::Graph::Graph(...))."""
    Image.fromarray(samples.astronaut()[:16, :16]).save(tmp_path / "in.png")
    for in_constant in (False, True):
        path = with_sparse_weight(tmp_path / "sparse.onnx", HUGE, in_constant=in_constant)
        result = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out", "--model", path)
        line = one_error_line(result)
        assert "sparse.onnx has a sparse weight 'sparse' of at least 1,000,000,000,000 values" in line, result.stderr
        assert "export it again with `srfeat export`" in line and not (tmp_path / "out").exists()
    small = with_sparse_weight(tmp_path / "small.onnx", [4, 4], in_constant=False)
    image = samples.astronaut()[:4, :4]
    assert (Upscaler(small, device="cpu", tile=0)(image) >= image.repeat(4, axis=0).repeat(4, axis=1)).all()


def test_onnx_runtime_is_not_given_a_file_that_sizes_a_huge_tensor(tmp_path: Path) -> None:
    """The checks run before ONNX Runtime reads the file, which may allocate as it loads (a sparse weight;
    a weight declared far larger than its data, which it read unchecked before 1.2x). A stand-in session
    says if it ran."""
    from onnx import TensorProto

    declared = onnx.load(str(srfeat_like_onnx(tmp_path / "declared.onnx")))
    declared.graph.node.insert(
        0,
        onnx.helper.make_node(
            "Constant", [], ["unused"], value=TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=HUGE)
        ),
    )
    onnx.save(declared, str(tmp_path / "declared.onnx"))
    cases = {
        with_tensor_made_by(tmp_path / "bomb.onnx", "ConstantOfShape", HUGE): "makes a tensor of at least",
        with_sparse_weight(tmp_path / "sparse.onnx", HUGE, in_constant=False): "has a sparse weight",
        tmp_path / "declared.onnx": "its weight 'huge' cannot be read (it declares 1,000,000,000,000 values",
    }
    for path, message in cases.items():
        result = load_with_a_stand_in_session(path)
        assert "ONNX Runtime was given the model" not in result.stderr, result.stderr
        assert message in result.stderr, result.stderr


def test_a_file_is_parsed_once_and_a_parsed_model_not_again(tmp_path: Path, monkeypatch) -> None:
    """Every file was parsed twice on load (once to look for external data, once to check its weights):
    a fifth of the time a 25 MB export took to load. A model already parsed (srfeat's own export, in
    memory) is not parsed at all, and is still refused if its weights are in another file."""
    from srfeat.inference.onnx_runner import OnnxRunner

    path = srfeat_like_onnx(tmp_path / "nearest.onnx")
    parses: list[int] = []
    real_parse = onnx.load_from_string
    monkeypatch.setattr(onnx, "load_from_string", lambda data: parses.append(len(data)) or real_parse(data))
    OnnxRunner(path)
    assert len(parses) == 1
    OnnxRunner(onnx.load(str(path)), source="in memory")
    assert len(parses) == 1
    elsewhere = onnx.load(str(point_a_weight_elsewhere(tmp_path / "m.onnx", "../secret.bin")), load_external_data=False)
    with pytest.raises(WeightsError, match=r"in memory keeps its weights in another file \('../secret.bin'"):
        OnnxRunner(elsewhere, source="in memory")


def enlarging(path: Path, *steps: tuple[str, list[float]]) -> Path:
    """The stand-in model at `path` (a nearest x4 Resize) with its input first put through each (op, factors) of
    `steps`: a nearest Resize by constant scales `factors`, or a Tile by constant repeats."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    previous = "input"
    for index, (op, factors) in enumerate(steps):
        kind = TensorProto.FLOAT if op == "Resize" else TensorProto.INT64
        graph.initializer.append(helper.make_tensor(f"factors{index}", kind, [len(factors)], factors))
        inputs = [previous, "", f"factors{index}"] if op == "Resize" else [previous, f"factors{index}"]
        options = {"mode": "nearest"} if op == "Resize" else {}
        graph.node.insert(index, helper.make_node(op, inputs, [f"enlarged{index}"], **options))
        previous = f"enlarged{index}"
    graph.node[len(steps)].input[0] = previous
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("steps", "growth", "op"),
    [
        ([("Resize", [1, 1, 1e5, 1])], "100,000", "Resize"),
        ([("Resize", [1, 1, 8, 8]), ("Resize", [1, 1, 4, 4])], "1,024", "Resize"),
        ([("Tile", [1, 1, 8, 4])], "512", "Resize"),  # then the stand-in's own x4
        ([("Tile", [1, 1, 1000, 1])], "1,000", "Tile"),
    ],
)
def test_a_graph_that_enlarges_the_image_by_huge_constant_scales_is_refused(
    tmp_path: Path, steps: list, growth: str, op: str
) -> None:
    """A Resize by 1e5 (or Resizes, or a Tile, that enlarge the image as much together) loaded, and the first
    tile asked for that many times its memory: the tile plan counts memory per input pixel."""
    path = enlarging(tmp_path / "enlarging.onnx", *steps)
    with pytest.raises(WeightsError) as caught:
        Upscaler(path, device="cpu")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path} enlarges the image {growth} times over"), message
    assert f"(at a {op} node)" in message and "export it again with `srfeat export`" in message, message


def test_enlarging_up_to_the_bound_still_runs(tmp_path: Path) -> None:
    """The bound (256 times: x4 a side, then the stand-in's own x4) loads; a shrink takes back what it enlarged."""
    image = samples.astronaut()[:4, :4]
    path = enlarging(tmp_path / "bound.onnx", ("Resize", [1, 1, 2, 2]), ("Resize", [1, 1, 0.5, 0.5]))
    assert np.array_equal(Upscaler(path, device="cpu", tile=0)(image), image.repeat(4, axis=0).repeat(4, axis=1))
    Upscaler(enlarging(tmp_path / "x16.onnx", ("Resize", [1, 1, 4, 1]), ("Tile", [1, 1, 1, 4])), device="cpu")


def with_constants_chained(path: Path, length: int) -> Path:
    """The stand-in model at `path` adding the largest value of a column, a row and a depth of `length` zeros
    broadcast together in steps, through a Cast: a cube of `length`^3 values from weights of `length`."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(srfeat_like_onnx(path)))
    graph = model.graph
    graph.node[0].output[0] = "resized"
    shapes = {"column": (length, 1, 1), "row": (1, length, 1), "depth": (1, 1, length)}
    graph.initializer.extend(
        numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in shapes.items()
    )
    graph.node.extend(
        [
            helper.make_node("Add", ["column", "row"], ["plane"]),
            helper.make_node("Cast", ["plane"], ["cast"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["cast", "depth"], ["cube"]),
            helper.make_node("ReduceMax", ["cube"], ["largest"], keepdims=0),
            helper.make_node("Add", ["resized", "largest"], ["output"]),
        ]
    )
    onnx.save(model, str(path))
    return path


def test_constants_broadcast_into_a_huge_tensor_in_steps_are_refused(tmp_path: Path) -> None:
    """Each step was checked on its constant inputs alone: the million-value plane passed, and the billion-value
    cube made from it (4 GB) was not counted, as the plane is not a weight."""
    with pytest.raises(WeightsError) as caught:
        Upscaler(with_constants_chained(tmp_path / "cube.onnx", 1000), device="cpu")
    message = str(caught.value)
    assert "makes a tensor of at least 1,000,000,000 values from its constants alone (a Mul node)" in message
    image = samples.astronaut()[:4, :4]
    small = Upscaler(with_constants_chained(tmp_path / "small.onnx", 8), device="cpu", tile=0)
    assert np.array_equal(small(image), image.repeat(4, axis=0).repeat(4, axis=1))


@pytest.mark.parametrize(
    ("op", "opset", "named"),
    [("Upsample", 7, "an Upsample"), ("Upsample", 9, "an Upsample"), ("Resize", 10, "a Resize")],
)
def test_older_operators_enlarging_by_huge_scales_are_refused_too(
    tmp_path: Path, op: str, opset: int, named: str
) -> None:
    """Before opset 11 the scales were Resize's second input, as Upsample's (an attribute before opset 9)."""
    from onnx import TensorProto, helper

    model = onnx.load(str(srfeat_like_onnx(tmp_path / "old.onnx")))
    model.opset_import[0].version = opset
    scales = [1.0, 1.0, 1e4, 1e4]
    del model.graph.node[:]
    if opset == 7:
        model.graph.node.append(helper.make_node(op, ["input"], ["output"], scales=scales))
    else:
        model.graph.initializer.append(helper.make_tensor("huge", TensorProto.FLOAT, [4], scales))
        model.graph.node.append(helper.make_node(op, ["input", "huge"], ["output"]))
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(
        WeightsError, match=f"enlarges the image 100,000,000 times over by constant scales \\(at {named} node"
    ):
        Upscaler(tmp_path / "old.onnx", device="cpu")
