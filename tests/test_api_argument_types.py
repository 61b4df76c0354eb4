"""The Python API given arguments of the wrong kind: a flag given as "no", 0 or None, a path given as
a number, a state dict where its items go. Each is one `InvalidOptionError` line before anything is
done, never a silent choice (a non-empty string is true: `overwrite="no"` overwrote) or a traceback
from inside. What was refused already is in tests/test_hostile_inputs.py and the test_api_* modules."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from inference_helpers import tiny_generator
from PIL import Image
from training_helpers import tiny_config, tiny_values, write_image_folders

from srfeat import Upscaler
from srfeat.data.resize import imresize, imresize_np
from srfeat.errors import ConfigError, InvalidImageError, InvalidOptionError, is_real_number, is_whole_number
from srfeat.evaluation import EvaluationResult, evaluate, json_records, markdown_table, write_json
from srfeat.export.onnx import ModelInfo, check_output_path, export_onnx, model_info
from srfeat.files import OutputExistsError
from srfeat.inference.image_files import upscale_file
from srfeat.training import trainer
from srfeat.training.config import load_config
from srfeat.video import VideoOptions
from srfeat.weights import check_weights, load_generator, save_generator, weight_problem
from srfeat.weights.blend import blend_states, load_blended

NOT_FLAGS = ["no", "false", 0, 1, None]
INFO = ModelInfo("tiny", "nothing", "MIT")


@pytest.mark.parametrize("flag", NOT_FLAGS)
def test_save_generator_refuses_a_replace_that_is_not_true_or_false_and_keeps_the_file(
    tmp_path: Path, flag: object
) -> None:
    """`replace="false"` replaced the file (the string is true); 0 and None kept it, by luck of falsiness."""
    existing = tmp_path / "kept.safetensors"
    existing.write_bytes(b"the user's file")
    with pytest.raises(InvalidOptionError, match=f"replace must be True or False, got {type(flag).__name__}"):
        save_generator(tiny_generator(), existing, replace=flag)  # pyright: ignore[reportArgumentType]
    assert existing.read_bytes() == b"the user's file"


@pytest.mark.parametrize("flag", NOT_FLAGS)
@pytest.mark.parametrize("name", ["overwrite", "fp16"])
def test_export_onnx_refuses_flags_that_are_not_true_or_false_before_the_export(
    tmp_path: Path, name: str, flag: object
) -> None:
    """`export_onnx(..., overwrite="no")` replaced an existing file; `fp16="no"` exported in float16."""
    existing = tmp_path / "kept.onnx"
    existing.write_bytes(b"the user's model")
    with pytest.raises(InvalidOptionError, match=f"{name} must be True or False, got {type(flag).__name__}"):
        export_onnx(tiny_generator(), existing, INFO, **{name: flag})  # pyright: ignore[reportArgumentType]
    assert existing.read_bytes() == b"the user's model"


def test_check_output_path_refuses_an_overwrite_of_another_kind_and_a_path_that_is_not_one(tmp_path: Path) -> None:
    existing = tmp_path / "kept.onnx"
    existing.write_bytes(b"the user's model")
    with pytest.raises(InvalidOptionError, match="overwrite must be True or False, got str 'no'"):
        check_output_path(existing, overwrite="no")  # pyright: ignore[reportArgumentType]
    for call in (lambda: check_output_path(5), lambda: export_onnx(tiny_generator(), 5, INFO)):  # pyright: ignore[reportArgumentType]
        with pytest.raises(InvalidOptionError, match="the ONNX file must be a path .*, got int 5"):
            call()
    # bytes are a path, as save_generator takes them (they were a TypeError from pathlib)
    assert check_output_path(bytes(tmp_path / "new.onnx")) == tmp_path / "new.onnx"


@pytest.mark.parametrize("info", [None, "tiny", {"name": "tiny"}])
def test_export_onnx_refuses_info_that_is_not_model_info(tmp_path: Path, info: object) -> None:
    with pytest.raises(InvalidOptionError, match="info must be a srfeat.export.onnx.ModelInfo"):  # AttributeError
        export_onnx(tiny_generator(), tmp_path / "x.onnx", info)  # pyright: ignore[reportArgumentType]
    assert not (tmp_path / "x.onnx").exists()


def test_model_info_refuses_a_model_that_is_no_name_path_or_generator() -> None:
    with pytest.raises(InvalidOptionError, match="the model must be a path .*, got int 5"):  # was named "5"
        model_info(5)  # pyright: ignore[reportArgumentType]


RESIZES: list[tuple[str, Callable[[object], object]]] = [
    ("antialiasing", lambda flag: imresize(torch.rand(1, 8, 8), 0.5, antialiasing=flag)),  # pyright: ignore[reportArgumentType]
    ("antialiasing", lambda flag: imresize_np(np.zeros((8, 8), np.uint8), 0.5, antialiasing=flag)),  # pyright: ignore[reportArgumentType]
    ("round_each_pass", lambda flag: imresize_np(np.zeros((8, 8), np.uint8), 2, round_each_pass=flag)),  # pyright: ignore[reportArgumentType]
]


@pytest.mark.parametrize("flag", ["no", None, 0])
@pytest.mark.parametrize(("name", "resize"), RESIZES, ids=["imresize", "imresize_np", "round_each_pass"])
def test_the_resize_flags_must_be_true_or_false(name: str, resize: Callable[[object], object], flag: object) -> None:
    """`antialiasing="no"` antialiased a shrink and `round_each_pass="no"` rounded each pass: strings are true."""
    with pytest.raises(InvalidOptionError, match=f"{name} must be True or False, got {type(flag).__name__}"):
        resize(flag)
    image = torch.rand(1, 8, 8)  # numpy's bools are flags (an array's comparison gives them)
    assert torch.equal(imresize(image, 0.5, antialiasing=np.False_), imresize(image, 0.5, antialiasing=False))  # pyright: ignore[reportArgumentType]


def test_weight_checks_refuse_a_state_dict_or_module_where_its_items_go() -> None:
    """A state dict iterated gives its names: a two-letter name was unpacked into name and tensor."""
    generator = tiny_generator()
    for given in (generator.state_dict(), generator, {"ab": torch.zeros(1)}):
        with pytest.raises(InvalidOptionError, match=r"\(name, tensor\) pairs, e.g. state_dict\(\).items\(\)"):
            weight_problem(given)  # pyright: ignore[reportArgumentType]
        with pytest.raises(InvalidOptionError, match=r"\(name, tensor\) pairs"):
            check_weights(given, "the generator")  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match="max_magnitude must be a number above 0"):  # NaN found nothing
        weight_problem(generator.state_dict().items(), math.nan)


def test_blend_names_must_be_a_pair_not_a_string() -> None:
    state = tiny_generator().state_dict()
    with pytest.raises(InvalidOptionError, match="names must be a pair of names"):  # "AB" was "A" and "B"
        blend_states(state, state, 0.5, names="AB")  # pyright: ignore[reportArgumentType]


def test_load_blended_takes_paths_as_load_generator_does(tmp_path: Path) -> None:
    """5 was looked for as a file named "5", a bytes path as the file "b'...'"."""
    path = tmp_path / "tiny.safetensors"
    save_generator(tiny_generator(), path)
    assert load_blended(bytes(path), None).num_blocks == load_generator(path).num_blocks
    with pytest.raises(InvalidOptionError, match="the model must be a path .*, got int 5"):
        load_blended(5, None)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("flag", NOT_FLAGS)
def test_evaluation_reports_refuse_flags_that_are_not_true_or_false(tmp_path: Path, flag: object) -> None:
    """`write_json(replace="no")` replaced the file; `markdown_table(per_image="no")` added the per-image table."""
    result = EvaluationResult(metrics=["psnr"], scale=4, channel="y", results=[], figure_samples=[])
    existing = tmp_path / "kept.json"
    existing.write_bytes(b"the user's scores")
    for call, name in (
        (lambda: write_json(existing, result, replace=flag), "replace"),  # pyright: ignore[reportArgumentType]
        (lambda: write_json(existing, result, per_image=flag), "per_image"),  # pyright: ignore[reportArgumentType]
        (lambda: markdown_table(result, per_image=flag), "per_image"),  # pyright: ignore[reportArgumentType]
        (lambda: json_records(result, per_image=flag), "per_image"),  # pyright: ignore[reportArgumentType]
    ):
        with pytest.raises(InvalidOptionError, match=f"{name} must be True or False, got {type(flag).__name__}"):
            call()
    assert existing.read_bytes() == b"the user's scores"


def test_evaluate_refuses_a_figure_image_that_is_not_a_name_before_reading_a_folder(tmp_path: Path) -> None:
    """5 was looked for in every folder, then warned of as missing from each, after the models were built."""
    with pytest.raises(InvalidOptionError, match="figure_image must be an image's name or None, got 5"):
        evaluate(["bicubic"], [tmp_path / "no such folder"], figure_image=5)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(("device", "shown"), [(1.5, "float 1.5"), (True, "bool True"), ([0], "list [0]")])
def test_a_device_that_is_not_a_name_is_one_line_for_the_upscaler_and_evaluate(
    tmp_path: Path, device: object, shown: str
) -> None:
    """`Upscaler(device=1.5)` and `evaluate(..., device=True)` were torch's many-line TypeError listing
    `torch.device`'s overloads, where "gpu" was one line."""
    message = f"unknown device {shown}: use cpu, cuda, cuda:N or auto"
    with pytest.raises(InvalidOptionError, match=re.escape(message)) as upscaler_error:
        Upscaler(tiny_generator(), device=device)  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match=re.escape(message)):
        evaluate(["bicubic"], [tmp_path], metrics=["psnr"], device=device)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(upscaler_error.value)


def test_upscale_file_refuses_arguments_of_the_wrong_kind_before_reading_and_keeps_the_file(tmp_path: Path) -> None:
    """`upscale_file(..., replace="no")` replaced the file (a string is true); `replace=False` refused an
    existing file only after the upscale, saying it "appeared while it was being written"; an outscale of
    "2" was a TypeError from round() and a model name as the upscaler an AttributeError."""
    source, target = tmp_path / "a.png", tmp_path / "kept.png"
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(source)
    target.write_bytes(b"the user's picture")
    tiles: list[int] = []
    upscaler = Upscaler(tiny_generator(), device="cpu", tile=0, on_tile=lambda done, total: tiles.append(done))
    for call, error, message in (
        # a string for a bool, on purpose
        (lambda: upscale_file(upscaler, source, target, replace="no"), InvalidOptionError, "replace must be True or"),  # pyright: ignore[reportArgumentType]
        (lambda: upscale_file(upscaler, source, target, replace=False), OutputExistsError, "kept.png exists; it is"),
        # a string for a number, on purpose
        (lambda: upscale_file(upscaler, source, tmp_path / "b.png", outscale="2"), InvalidImageError, "outscale must"),  # pyright: ignore[reportArgumentType]
        # a model's name for the Upscaler, on purpose
        (lambda: upscale_file("default", source, tmp_path / "b.png"), InvalidOptionError, "must be an srfeat.Upscaler"),  # pyright: ignore[reportArgumentType]
    ):
        with pytest.raises(error, match=message):
            call()
    assert target.read_bytes() == b"the user's picture" and not (tmp_path / "b.png").exists() and tiles == []
    # numpy's bool is accepted as True and False are, though the annotation says bool.
    assert upscale_file(upscaler, source, target, replace=np.bool_(True)) == (20, 24)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("name", ["resume", "overwrite", "show_progress"])
def test_train_refuses_flags_that_are_not_true_or_false_and_keeps_the_run(tmp_path: Path, name: str) -> None:
    """`train(config, out, overwrite="no")` replaced the run in `out` once the networks were built."""
    train_dir, _ = write_image_folders(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("the user's run")
    with pytest.raises(InvalidOptionError, match=f"{name} must be True or False, got str 'no'"):
        trainer.train(tiny_config(train_dir, None, out), out_dir=out, **{name: "no"})  # pyright: ignore[reportArgumentType]
    assert [path.name for path in out.iterdir()] == ["config.yaml"]
    assert (out / "config.yaml").read_text() == "the user's run"
    with pytest.raises(InvalidOptionError, match="out_dir must be a path .*, got int 5"):
        trainer.train(tiny_config(train_dir, None, out), out_dir=5, show_progress=False)  # pyright: ignore[reportArgumentType]


def test_load_config_refuses_a_path_that_is_not_one_and_takes_bytes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the config must be a path .*, got int 5"):  # pathlib's TypeError
        load_config(5)  # pyright: ignore[reportArgumentType]
    train_dir, _ = write_image_folders(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values(train_dir, None, tmp_path / "run")))
    assert load_config(bytes(config)) == load_config(config)


@pytest.mark.parametrize(
    ("value", "whole", "real"),
    [
        (4, True, True),
        (np.int64(4), True, True),
        (np.uint8(4), True, True),
        (4.0, False, True),
        (np.float32(0.5), False, True),
        (math.nan, False, True),  # a number: the range checks after refuse it, with its own message
        (True, False, False),  # an int to Python, a flag to the caller
        (np.bool_(True), False, False),
        ("4", False, False),
        (None, False, False),
        (1 + 2j, False, False),
        (torch.tensor(4), False, False),
    ],
)
def test_the_number_checks_take_numbers_but_not_bools_strings_or_tensors(
    value: object, whole: bool, real: bool
) -> None:
    """Every option check of the API asks these two; `scale=True` was a scale of 1 where `isinstance(..., int)`
    alone was asked, and a numpy integer (a config read with numpy, an array's item) a refusal."""
    assert is_whole_number(value) is whole
    assert is_real_number(value) is real


def test_a_refused_value_is_quoted_as_given_with_its_spaces_while_a_tensor_is_one_line(tmp_path: Path) -> None:
    # Runs of spaces inside a string are the value's own: '12  ' was quoted as '12 ', a value never given.
    with pytest.raises(InvalidOptionError, match=re.escape("got str '1  2\\t'")):
        Upscaler(tile="1  2\t")  # pyright: ignore[reportArgumentType]
    config = tmp_path / "config.yaml"
    config.write_text('stage: 1\noptim:\n  lr_schedule: "every  epoch"\n')
    with pytest.raises(ConfigError, match=re.escape("got 'every  epoch'")):
        load_config(config)
    with pytest.raises(InvalidOptionError) as refused:
        Upscaler(tile=torch.zeros(3, 3))  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(refused.value) and "got Tensor tensor([[0., 0., 0.], [0., 0., 0.]," in str(refused.value)
    with pytest.raises(InvalidOptionError) as refused:
        VideoOptions(frames=np.arange(100))  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(refused.value) and "got ndarray array([ 0,  1,  2," in str(refused.value)
    assert len(str(refused.value)) < 200  # 100 numbers, cut short
