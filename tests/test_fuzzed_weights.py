"""Model files as a mutation fuzz left them (bytes flipped, fields edited, files cut): each case here is the
smallest form of one it found that came back as something other than a one-line refusal or a working model."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

from srfeat.errors import WeightsError


def onnx_with_bytes(path: Path, garbage: bytes, where: str = "metadata") -> Path:
    """srfeat's stand-in export with `garbage` as its `license` metadata value (`where="metadata"`) or as its
    Resize node's operator type (`where="operator"`): ONNX files store strings as bytes, unchecked, so a flipped
    byte there is read back as it is."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_onnx_export import srfeat_like_onnx

    marker = b"LICENSE-TEXT-MARKER" if where == "metadata" else b"Resize"
    srfeat_like_onnx(path, license="LICENSE-TEXT-MARKER")
    data = path.read_bytes()
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, garbage.ljust(len(marker), b"x")[: len(marker)]))
    return path


REFUSED = r"flipped\.onnx holds metadata or names that are not UTF-8 text \(b'"


@pytest.mark.parametrize(
    ("garbage", "where"),
    [(b"not recorde\x80", "metadata"), (b"\xff", "metadata"), (b"caf\xc3", "metadata"), (b"Res\xafze", "operator")],
)
def test_an_onnx_file_whose_text_is_not_utf8_is_refused_in_one_line(tmp_path: Path, garbage: bytes, where: str) -> None:
    """ONNX Runtime's Python side decodes the metadata when asked for it: a UnicodeDecodeError came back; an
    operator's type came back from `onnx` as bytes, and the load check failed with "startswith first arg must be
    bytes" (a TypeError)."""
    from srfeat.inference import Upscaler

    path = onnx_with_bytes(tmp_path / "flipped.onnx", garbage, where)
    with pytest.raises(WeightsError, match=REFUSED):
        Upscaler(path, device="cpu")


def test_without_the_onnx_package_metadata_that_is_not_utf8_is_refused_too(tmp_path: Path, monkeypatch) -> None:
    """Without `onnx` nothing parses the file before ONNX Runtime: its metadata is where the bytes are met."""
    from srfeat.inference import Upscaler, onnx_runner

    monkeypatch.setattr(onnx_runner, "parse_model", lambda data: None)
    with pytest.raises(WeightsError, match=REFUSED + r"not recorde\\x80"):
        Upscaler(onnx_with_bytes(tmp_path / "flipped.onnx", b"not recorde\x80"), device="cpu")


def test_the_cli_refuses_an_onnx_file_whose_metadata_is_not_utf8_in_one_line(tmp_path: Path) -> None:
    path = onnx_with_bytes(tmp_path / "flipped.onnx", b"\x80")
    Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", out, "--model", path, "--backend", "onnxruntime")
    line = one_error_line(child, only=True)
    assert "flipped.onnx holds metadata or names that are not UTF-8 text (b'\\x80" in line, line
    assert "export it again" in line and not out.exists()


# ----------------------------------------------------------------------------- training states


@pytest.fixture(scope="module")
def one_step_run(folders, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of one training step (tiny networks), whose state.pt the tests below edit in copies."""
    from training_helpers import tiny_config, train_in_process

    out = tmp_path_factory.mktemp("run") / "run"
    train_in_process(tiny_config(folders[0], None, out, 1, ["train.max_steps=1"]), out)
    return out


def edited_run(run: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of `run` at `target` whose state.pt is edited by `edit`."""
    import torch

    shutil.copytree(run, target)
    state = torch.load(target / "state.pt", weights_only=True)
    edit(state)
    torch.save(state, target / "state.pt")
    return target


def generator_options(**options: object) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["optimizers"]["generator"]["param_groups"][0].update(options)


def generator_tensor_as(key: str, dtype: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["generator"].update(
        {key: state["generator"][key].to(getattr(__import__("torch"), dtype))}
    )


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        # torch's fused Adam raised "does not support differentiable=True", or a TypeError of its arguments
        (generator_options(differentiable=True), "has differentiable=True, where srfeat train's Adam has False"),
        (generator_options(amsgrad=None), "has amsgrad=None, where srfeat train's Adam has False"),
        (generator_options(maximize=[]), "has maximize=[], where srfeat train's Adam has False"),
        # cast as it loaded: the run went on from weights truncated to integers, or to 0 and 1
        (generator_tensor_as("head.weight", "int32"), "the generator's head.weight is torch.int32, not floating point"),
        (generator_tensor_as("tail.bias", "bool"), "the generator's tail.bias is torch.bool, not floating point"),
    ],
)
def test_a_resumed_state_of_other_adam_options_or_integer_weights_is_refused_in_one_line(
    one_step_run: Path, tmp_path: Path, folders, edit: Callable[[dict[str, Any]], None], refusal: str
) -> None:
    from training_helpers import tiny_config, train_in_process

    run = edited_run(one_step_run, tmp_path / "run", edit)
    kept = (run / "generator_latest.safetensors").read_bytes()
    with pytest.raises(WeightsError, match=re.escape(refusal) + ".*damaged or edited; start a new run folder"):
        train_in_process(tiny_config(folders[0], None, run, 1, ["train.max_steps=2"]), run, resume=True)
    assert (run / "generator_latest.safetensors").read_bytes() == kept


def test_how_adam_steps_is_the_built_optimizers_whatever_the_state_saved(
    one_step_run: Path, tmp_path: Path, folders
) -> None:
    """foreach and fused say how a step runs, not what it computes (a state saved on another device has other
    ones): the resume runs as a fresh optimizer would, where "x" as foreach was passed to torch as it was."""
    from training_helpers import tiny_config, train_in_process

    run = edited_run(one_step_run, tmp_path / "run", generator_options(foreach="x", fused=None, capturable=None))
    result = train_in_process(tiny_config(folders[0], None, run, 1, ["train.max_steps=2"]), run, resume=True)
    assert result.step == 2
    import torch

    groups = torch.load(run / "state.pt", weights_only=True)["optimizers"]["generator"]["param_groups"]
    assert (groups[0]["foreach"], groups[0]["fused"], groups[0]["capturable"]) == (None, True, False)


def test_srfeat_train_refuses_to_resume_a_state_of_other_adam_options_in_one_line(
    one_step_run: Path, tmp_path: Path
) -> None:
    run = edited_run(one_step_run, tmp_path / "run", generator_options(differentiable=True))
    kept = (run / "state.pt").read_bytes()
    child = srfeat_cli("train", run / "config.yaml", "--out", run, "--resume", "--max-steps", "2", "--no-progress")
    line = one_error_line(child)
    assert "state.pt: the generator optimizer state has differentiable=True, where srfeat train's Adam" in line, line
    assert (run / "state.pt").read_bytes() == kept


def python_state_entry(value: int) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["rng"]["python"].__setitem__(0, value)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda state: state["rng"].update(numpy=__import__("torch").zeros(3)),
            r"cannot be restored \(not the python, numpy and torch",
        ),
        (python_state_entry(2**70), r"cannot be restored \(OverflowError: "),
        (python_state_entry(-1), r"cannot be restored \(OverflowError: "),
        (lambda state: state["rng"]["numpy"].update(pos=2**70), r"cannot be restored \(OverflowError: "),
    ],
)
def test_random_states_out_of_their_generators_range_are_refused_in_one_line(
    one_step_run: Path, tmp_path: Path, folders, edit: Callable[[dict[str, Any]], None], error: str
) -> None:
    """Random states are restored from what the file says: these were tracebacks (IndexError: a tensor indexed
    by a name, OverflowError)."""
    from training_helpers import tiny_config, train_in_process

    run = edited_run(one_step_run, tmp_path / "run", edit)
    with pytest.raises(WeightsError, match=rf"state\.pt: its random states {error}.*damaged or edited"):
        train_in_process(tiny_config(folders[0], None, run, 1, ["train.max_steps=2"]), run, resume=True)


# ----------------------------------------------------------------------------- zip records


def with_central_field(path: Path, offset: int, value: int) -> Path:
    """The zip archive at `path` with a 2-byte field of its first central directory record set to `value`."""
    data = bytearray(path.read_bytes())
    record = data.find(b"PK\x01\x02")
    data[record + offset : record + offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("kind", "offset", "value"),
    [("pt", 6, 64), ("npz", 6, 64), ("npz", 10, 99)],
    ids=["pt-version-6.4", "npz-version-6.4", "npz-compression-99"],
)
def test_a_zip_record_of_a_version_or_compression_zipfile_does_not_know_is_a_damaged_archive(
    tmp_path: Path, kind: str, offset: int, value: int
) -> None:
    """A flipped bit in the version needed to extract, or in the compression method (found by
    scripts/fuzz_models.py): zipfile raises NotImplementedError ("zip file version 6.4", "That compression method
    is not supported"), which came out as a traceback of `srfeat upscale --model` and of `srfeat convert`."""
    import torch
    from authors_helpers import random_params, tensorlayer_order, write_tensorlayer_npz

    from srfeat.archs.generator import SRFeatGenerator

    out = tmp_path / ("out.png" if kind == "pt" else "out.safetensors")
    if kind == "pt":
        torch.save(SRFeatGenerator(num_features=8, num_blocks=2).state_dict(), model := tmp_path / "model.pt")
        Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
        command = ("upscale", tmp_path / "in.png", "-o", out, "--model", with_central_field(model, offset, value))
    else:
        npz = write_tensorlayer_npz(tmp_path / "model.npz", tensorlayer_order(random_params(8, 2, 2), 2, 2))
        command = ("convert", with_central_field(npz, offset, value), "-o", out)
    line = one_error_line(srfeat_cli(*command), only=True)
    assert "is a zip archive cut short or damaged" in line, line
    assert not out.exists()


# ----------------------------------------------------------------------------- strides


def strided_like(tensor: Any, strides: tuple[int, ...]) -> Any:
    """`tensor`'s shape over a storage of as many values, read with `strides`: what a damaged stride in a .pt's pickle
    (found by scripts/fuzz_models.py: 72 made 51) gives torch.load, which reads it without a word."""
    import torch

    return torch.arange(tensor.numel(), dtype=tensor.dtype).as_strided(tensor.shape, strides)


@pytest.mark.parametrize(("strides", "said"), [((51, 9, 3, 1), "(51, 9, 3, 1)"), ((0, 9, 3, 1), "(0, 9, 3, 1)")])
def test_a_pt_whose_tensor_overlaps_in_its_storage_is_refused_in_one_line(
    tmp_path: Path, strides: tuple[int, ...], said: str
) -> None:
    import torch

    from srfeat.archs.generator import SRFeatGenerator

    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    state["body.0.conv2.weight"] = strided_like(state["body.0.conv2.weight"], strides)
    torch.save(state, model := tmp_path / "model.pt")
    Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model)
    line = one_error_line(child, only=True)
    assert (
        f"body.0.conv2.weight's values overlap or skip places in its storage (shape (8, 8, 3, 3), strides {said}), "
        "as no saved tensor's do" in line
    ), line
    assert not (tmp_path / "out.png").exists()


def test_a_pt_whose_weights_were_saved_transposed_reads_as_they_are(tmp_path: Path) -> None:
    """A converter's weights saved as a permuted view (HWIO storage read as OIHW, not made contiguous) cover their
    storage once: they are read, the same as when saved contiguous."""
    import torch

    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.weights import load_generator

    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    weight = state["head.weight"]
    state["head.weight"] = weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)  # HWIO storage, OIHW view
    assert not state["head.weight"].is_contiguous()
    torch.save(state, tmp_path / "transposed.pt")
    plain, transposed = load_generator(tmp_path / "plain.pt"), load_generator(tmp_path / "transposed.pt")
    assert torch.equal(transposed.head.weight, plain.head.weight)


def test_a_training_state_whose_tensor_overlaps_in_its_storage_is_refused(one_step_run: Path, tmp_path: Path) -> None:
    from srfeat.training.checkpoint import load_state

    def overlap(state: dict[str, Any]) -> None:
        moments = state["optimizers"]["generator"]["state"][0]
        moments["exp_avg"] = strided_like(moments["exp_avg"], (0,) * moments["exp_avg"].dim())

    run = edited_run(one_step_run, tmp_path / "run", overlap)
    with pytest.raises(WeightsError) as refused:
        load_state(run / "state.pt")
    assert f"cannot read training state {run / 'state.pt'}: it is damaged: optimizers.generator.state.0.exp_avg's" in (
        str(refused.value)
    )
    assert "values overlap or skip places in its storage" in str(refused.value)


# ----------------------------------------------------------------------------- checksums


def test_a_pt_whose_tensor_bytes_changed_is_refused_by_its_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bit flipped in a tensor's bytes (found by scripts/fuzz_states.py: 8 bits flipped, the resume ran): torch's
    zip reader never compares a record's CRC-32, so the weight was read changed, without a word. A file torch.save
    wrote without checksums (its `compute_crc32` off: all 0) is read as before."""
    import torch
    import torch.utils.serialization
    from weights_helpers import flip_a_tensor_bit

    from srfeat.archs.generator import SRFeatGenerator

    state = SRFeatGenerator(num_features=8, num_blocks=2).state_dict()
    torch.save(state, model := tmp_path / "model.pt")
    flip_a_tensor_bit(model)
    Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model)
    line = one_error_line(child, only=True)
    assert "model/data/0 does not match its CRC-32 checksum, so its bytes changed after it was written" in line, line
    assert "download or copy it again" in line and not (tmp_path / "out.png").exists(), line

    monkeypatch.setattr(torch.utils.serialization.config.save, "compute_crc32", False)
    torch.save(state, unchecked := tmp_path / "unchecked.pt")
    monkeypatch.undo()
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", unchecked)
    assert child.returncode == 0 and Image.open(tmp_path / "out.png").size == (32, 32), child.stderr


@pytest.mark.parametrize("length", [None, 65534], ids=["one-short", "65534"])
def test_a_pt_whose_record_header_names_another_file_is_refused(tmp_path: Path, length: int | None) -> None:
    """A record's name length damaged in its local header (found by scripts/fuzz_states.py: 15 made 14, or 65534,
    whose name zipfile read from the record's bytes, no UTF-8): torch's reader took the tensor's data from the wrong
    place, and the resume trained on garbage moments until it diverged."""
    import torch
    from weights_helpers import with_record_name_length

    from srfeat.archs.generator import SRFeatGenerator

    torch.manual_seed(0)
    torch.save(SRFeatGenerator(num_features=8, num_blocks=2).state_dict(), model := tmp_path / "model.pt")
    with_record_name_length(model, "data/3", length)
    Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model)
    line = one_error_line(child, only=True)
    assert "the header of its record model/data/3 names another file, so torch would read the record's data" in line
    assert not (tmp_path / "out.png").exists()


def test_a_training_state_or_vgg_weights_whose_tensor_bytes_changed_are_refused(
    one_step_run: Path, tmp_path: Path
) -> None:
    import torch
    from weights_helpers import flip_a_tensor_bit

    from srfeat.archs.vgg import VGG19FeatureExtractor
    from srfeat.training.checkpoint import load_state

    shutil.copytree(one_step_run, run := tmp_path / "run")
    flip_a_tensor_bit(run / "state.pt", "data/3")
    with pytest.raises(WeightsError, match=r"state\.pt: the file is cut short or damaged \(its record archive/data/3 "):
        load_state(run / "state.pt")

    torch.save({"features.0.weight": torch.ones(64, 3, 3, 3)}, vgg := tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match=r"vgg\.pth: .*its record vgg/data/0 does not match its CRC-32 checksum"):
        VGG19FeatureExtractor(flip_a_tensor_bit(vgg))


# ----------------------------------------------------------------------------- tensors and optimizer states of a resume


def replaced_tensor(path: tuple[Any, ...], make: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    """An edit of a state: the tensor at `path` (keys and indices) replaced by `make(tensor)`."""

    def edit(state: dict[str, Any]) -> None:
        parent = state
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = make(parent[path[-1]])

    return edit


@pytest.mark.parametrize(
    ("path", "make", "refusal"),
    [
        (("generator", "head.bias"), lambda t: t.to_sparse(), "generator.head.bias is a sparse coo tensor, where a"),
        (
            ("optimizers", "generator", "state", 3, "step"),
            lambda t: __import__("torch").empty_like(t, device="meta"),
            "optimizers.generator.state.3.step is a tensor of the meta device, which holds a shape and no values",
        ),
        (
            ("generator", "tail.bias"),
            lambda t: __import__("torch").quantize_per_tensor(t, 0.1, 0, __import__("torch").qint8),
            "generator.tail.bias is quantized (torch.qint8), where a tensor of plain numbers is expected",
        ),
    ],
    ids=["sparse", "meta", "quantized"],
)
def test_a_training_state_of_a_sparse_meta_or_quantized_tensor_is_refused_in_one_line(
    one_step_run: Path, tmp_path: Path, path: tuple[Any, ...], make: Callable[[Any], Any], refusal: str
) -> None:
    """torch.load reads them from a state (found by scripts/fuzz_states.py), and the resume's checks or steps were a
    traceback: "Tensor.item() cannot be called on meta tensors", "Creation of quantized tensor requires quantized
    dtype", a sparse tensor's dispatcher paragraph. The dry run says the same line."""
    run = edited_run(one_step_run, tmp_path / "run", replaced_tensor(path, make))
    kept = (run / "state.pt").read_bytes()
    for dry_run in (["--dry-run"], []):
        child = srfeat_cli("train", run / "config.yaml", "--out", run, "--resume", "--max-steps", "2", *dry_run)
        line = one_error_line(child, only=True)  # torch's warning on a quantized tensor's storage came first
        assert f"cannot read training state {run / 'state.pt'}: it is damaged: {refusal}" in line, line
    assert (run / "state.pt").read_bytes() == kept


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (
            lambda state: state["optimizers"]["generator"].update(state=[]),
            "is not an optimizer's state (its param_groups and state)",
        ),
        (  # torch kept the moments under an id no parameter had: the parameter's Adam restarted
            lambda state: state["optimizers"]["generator"]["param_groups"][0]["params"].__setitem__(5, -1),
            "holds the moments of parameter 5, which none of its parameter groups lists",
        ),
        (
            lambda state: state["optimizers"]["generator"]["param_groups"][0]["params"].__setitem__(5, 4),
            "lists a parameter id twice",
        ),
        (  # cast to float as it loaded
            replaced_tensor(
                ("optimizers", "generator", "state", 2, "exp_avg_sq"), lambda t: t.to(__import__("torch").uint8)
            ),
            "has exp_avg_sq of parameter 2 as torch.uint8, not floating point",
        ),
        (
            replaced_tensor(("optimizers", "generator", "state", 2, "step"), lambda t: t.fill_(3e38)),
            "has step 3e+38 for parameter 2, not a whole number from 1 to the run's 1",
        ),
        (  # the parameter's Adam restarted, as a frozen parameter's would (which has no entry)
            lambda state: state["optimizers"]["generator"]["state"].__setitem__(4, {}),
            "holds moments of parameter 4 that are nothing, not Adam's",
        ),
        (lambda state: state["optimizers"]["generator"].update(state={}), "holds no moments, after 1 steps"),
        (  # a flipped bit renamed it: a KeyError traceback in the first step
            lambda state: state["optimizers"]["generator"]["param_groups"][0].pop("weight_decay"),
            "lacks Adam's weight_decay option",
        ),
        (  # removed, not emptied: the parameter's Adam restarted, as a frozen parameter's would
            lambda state: state["optimizers"]["generator"]["state"].pop(4),
            "has no moments for parameter 4 (of shape (8,)), which learns at every step",
        ),
    ],
    ids=[
        "state-a-list",
        "id-unlisted",
        "id-twice",
        "integer-moment",
        "step-past-the-run",
        "entry-empty",
        "none",
        "option-missing",
        "entry-removed",
    ],
)
def test_a_resumed_optimizer_state_of_another_form_is_refused_in_one_line(
    one_step_run: Path, tmp_path: Path, folders, edit: Callable[[dict[str, Any]], None], refusal: str
) -> None:
    """Found by scripts/fuzz_states.py: an AttributeError traceback ('list' object has no attribute 'items'), or a
    resume that went on from moments dropped, cast or counted past the run without a word."""
    from training_helpers import tiny_config, train_in_process

    run = edited_run(one_step_run, tmp_path / "run", edit)
    kept = (run / "generator_latest.safetensors").read_bytes()
    with pytest.raises(WeightsError, match=r"state\.pt: the generator optimizer state " + re.escape(refusal)):
        train_in_process(tiny_config(folders[0], None, run, 1, ["train.max_steps=2"]), run, resume=True)
    assert (run / "generator_latest.safetensors").read_bytes() == kept


def with_first_value(tensor: Any, value: float) -> Any:
    changed = tensor.clone()
    changed.view(-1)[0] = value
    return changed


@pytest.fixture(scope="module")
def one_step_ema_run(folders, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of one training step with an EMA of the generator (train.ema_decay)."""
    from training_helpers import tiny_config, train_in_process

    out = tmp_path_factory.mktemp("run") / "run"
    train_in_process(tiny_config(folders[0], None, out, 1, ["train.max_steps=1", "train.ema_decay=0.9"]), out)
    return out


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (  # trained a step, wrote config.yaml, then refused to save the exploded weights
            replaced_tensor(("generator", "body.0.conv1.weight"), lambda t: with_first_value(t, 1e30)),
            "the generator's weights have exploded: body.0.conv1.weight reaches 1e+30",
        ),
        (
            replaced_tensor(("ema", "averaged", "module.tail.bias"), lambda t: with_first_value(t, float("nan"))),
            "the EMA average's weights are not finite (NaN or inf): 1 value(s) in tail.bias",
        ),
        (  # torch's first line alone: "Error(s) in loading state_dict for AveragedModel:"
            replaced_tensor(("ema", "averaged", "module.tail.bias"), lambda t: t[:2]),
            "the EMA average's tail.bias is (2,), the config builds (3,): the file is damaged or edited",
        ),
        (
            lambda state: state["ema"]["averaged"].pop("module.head.bias"),
            "the EMA average lacks head.bias (1 tensors), which the config's generator has: the file is damaged",
        ),
        (
            replaced_tensor(("ema", "averaged", "module.head.bias"), lambda t: t.long()),
            "the EMA average's head.bias is torch.int64, not floating point",
        ),
    ],
    ids=["generator-exploded", "average-nan", "average-shape", "average-missing", "average-integer"],
)
def test_a_state_whose_generator_or_average_is_unusable_is_refused_by_the_dry_run_and_the_resume(
    one_step_ema_run: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], refusal: str
) -> None:
    """Found by scripts/fuzz_states.py: the dry run passed an EMA average that the resume refused (in a line that
    said nothing of what was wrong, for another shape), and a generator weight of 1e30 (finite) was trained on for a
    step before the save refused it, after the resume had written config.yaml. Nothing in the folder changes."""
    run = edited_run(one_step_ema_run, tmp_path / "run", edit)
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    for dry_run in (["--dry-run"], []):
        child = srfeat_cli("train", run / "config.yaml", "--out", run, "--resume", "--max-steps", "2", *dry_run)
        line = one_error_line(child)
        assert f"{run / 'state.pt'}: {refusal}" in line, line
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_a_small_fuzz_of_training_states_finds_nothing(tmp_path: Path) -> None:
    """scripts/fuzz_states.py as the README runs it, on a few states of each stage: it makes its seed runs, damages
    their states, resumes each (and its dry run), and finds no rule broken."""
    import json
    import os
    import subprocess
    import sys

    repository = Path(__file__).resolve().parents[1]
    child = subprocess.run(
        [sys.executable, "scripts/fuzz_states.py", tmp_path, "--per-seed", "3", "--seed", "1"],
        cwd=repository,
        env={**os.environ, "PYTHONPATH": str(repository)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-2000:]
    counts = json.loads(child.stdout[child.stdout.rindex("{") :])
    assert counts and not [kind for kind in counts if kind.split(" ", 1)[0].isupper()], counts
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((result["seed"], result["number"]) for result in results) == [
        (seed, number) for seed in ("stage1.pt", "stage2.pt") for number in range(3)
    ]
