"""`evaluate`'s warnings and refusals name the options as their caller gave them: its keywords from Python
(`models`, `scale=4`), `srfeat eval`'s flags for the command line (`--model`, `--scale 4`). Both used to
name the flags, which a Python caller never gave."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import one_error_line, srfeat_cli, srfeat_cli_out_of_memory
from inference_helpers import tiny_generator
from skimage import data as samples

from srfeat import evaluation_inputs
from srfeat.data.io import write_png
from srfeat.errors import SRFeatError
from srfeat.evaluation import evaluate
from srfeat.weights import save_generator


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """a/Set (with a subfolder), the same folder under another name, and b/Set: another folder of its name."""
    photo = samples.astronaut()
    write_png(tmp_path / "a" / "Set" / "one.png", photo[:40, :44])
    write_png(tmp_path / "a" / "Set" / "inner" / "deep.png", photo[40:80, :44])
    write_png(tmp_path / "b" / "Set" / "two.png", photo[80:120, :44])
    return tmp_path / "a" / "Set", tmp_path / "b" / ".." / "a" / "Set", tmp_path / "b" / "Set"


def srfeat_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_warnings_name_evaluates_keywords_from_python_and_the_flags_from_the_command_line(
    folders: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    one, alias, other = folders
    with caplog.at_level(logging.WARNING, logger="srfeat"):
        evaluate(["bicubic", "bicubic"], [one, alias, other], metrics=["psnr", "psnr"], device="cpu")
    assert srfeat_warnings(caplog) == [
        "metrics names psnr more than once: each is evaluated once",
        "models names bicubic more than once: each is evaluated once",
        f"folders {alias} is given twice (the same folder as {one}): evaluated once",
        f"two folders are named Set: {other} is labelled Set#2",
        (
            f"{one}: its subfolder(s) inner are not searched, only its own files: give a subfolder in folders to "
            "score its images"
        ),
    ]
    child = srfeat_cli(
        "eval", "--model", "bicubic", "bicubic", "--data", one, alias, other, "--metrics", "psnr", "psnr"
    )
    assert child.returncode == 0, child.stderr
    assert [line for line in child.stderr.splitlines() if line.startswith("WARNING")] == [
        "WARNING: --metrics names psnr more than once: each is evaluated once",
        "WARNING: --model names bicubic more than once: each is evaluated once",
        f"WARNING: --data {alias} is given twice (the same folder as {one}): evaluated once",
        f"WARNING: two --data folders are named Set: {other} is labelled Set#2",
        (
            f"WARNING: {one}: its subfolder(s) inner are not searched, only its own files: give a subfolder as a "
            "--data folder to score its images"
        ),
    ]


def test_a_model_of_another_scale_is_refused_naming_scale_or_its_flag(
    folders: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """It said "pass --scale 4 (scale=4)" to both."""
    model = tmp_path / "x4.safetensors"
    save_generator(tiny_generator(scale=4), model)
    said = f"model {model} upscales x4, but the evaluation is at x2: pass "
    with pytest.raises(SRFeatError) as raised:
        evaluate([str(model)], [folders[0]], metrics=["psnr"], scale=2, device="cpu")
    assert str(raised.value) == said + "scale=4"
    child = srfeat_cli("eval", "--model", model, "--data", folders[0], "--metrics", "psnr", "--scale", "2")
    assert one_error_line(child) == f"ERROR: {said}--scale 4"


def test_hr_alone_is_refused_with_advice_in_keywords_from_python() -> None:
    """`evaluate(["hr"], ..., metrics=["psnr"])` was told to add a model "(e.g. --model bicubic hr)"
    (the command line's words are test_eval's)."""
    niqe = " or score it by NIQE (metrics=['niqe'])" if evaluation_inputs.niqe_available() else ""
    with pytest.raises(SRFeatError) as raised:
        evaluate(["hr"], ["unread"], metrics=["psnr"], device="cpu")
    assert str(raised.value) == (
        "hr (the ground truth) has no PSNR, which would compare it with itself: add a model to compare "
        f"(e.g. models=['bicubic', 'hr']){niqe}"
    )


def test_niqe_where_it_is_missing_is_refused_naming_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "drop it from --metrics (metrics=)"."""
    monkeypatch.setattr(evaluation_inputs, "niqe_available", lambda: False)
    with pytest.raises(SRFeatError, match=r"srfeat\.metrics\.niqe missing\): drop it from metrics$"):
        evaluate(["bicubic"], ["unread"], metrics=["psnr", "niqe"], device="cpu")


def test_the_figures_bicubic_out_of_memory_names_figure_image_or_its_flag(
    folders: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure's bicubic image (made for it, as no model is bicubic) that runs out of memory said to
    choose a smaller image "(--figure-image)" to a Python caller too."""
    import torch

    from srfeat import evaluation

    model = tmp_path / "x4.safetensors"
    save_generator(tiny_generator(scale=4), model)
    said = "one: out of memory upscaling it by bicubic for the figure: choose a smaller image for it "

    def runs_out_of_memory(*args: object) -> object:
        torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator refuses it, as under `ulimit -v`
        raise AssertionError("2**60 bytes were allocated")

    with monkeypatch.context() as patched:
        patched.setattr(evaluation, "bicubic_upscale", runs_out_of_memory)
        with pytest.raises(SRFeatError) as raised:
            evaluate([str(model)], [folders[0]], metrics=["psnr"], device="cpu", keep_figure_samples=True)
    assert str(raised.value) == said + "(figure_image)"
    child = srfeat_cli_out_of_memory(
        "srfeat.evaluation", "bicubic_upscale", "True",
        "eval", "--model", model, "--data", folders[0], "--metrics", "psnr", "--figure", tmp_path / "f.png",
    )  # fmt: skip
    assert one_error_line(child) == f"ERROR: {said}(--figure-image)"


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (["--data", "FOLDER"], "--model"),
        (["--model", "--data", "FOLDER"], "--model"),
        (["--model", "bicubic", "--data"], "--data"),
        (["--model", "bicubic", "--data", "FOLDER", "--metrics"], "--metrics"),
        (["--model", "bicubic", "--data", "FOLDER", "--metrics", "psnrx"], "--metrics"),
        (["--model", "bicubic", "--data", "FOLDER", "--figure-image"], "--figure-image"),
    ],
)
def test_srfeat_eval_refuses_itself_what_evaluates_keyword_refusals_guard(
    folders: tuple[Path, Path, Path], arguments: list[str], flag: str
) -> None:
    # why check_arguments names only `evaluate`'s keywords (models, folders, metrics, figure_image): a missing,
    # empty or unknown value never reaches it from the command line, whose parser names the flag itself
    child = srfeat_cli("eval", *(str(folders[0]) if word == "FOLDER" else word for word in arguments))
    line = one_error_line(child, returncode=2, only=True)
    assert line.startswith("ERROR: srfeat eval: ") and flag in line, line


FREE_SAID = "free memory (other programs, or the processes nvidia-smi lists on a GPU) and run again"


def test_a_tile_out_of_memory_tells_evaluate_what_it_can_do(
    folders: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate` has no tile size to give (it is planned from the memory free): a tile out of memory told it
    to "give the Upscaler a smaller tile=", an Upscaler it never made."""
    import torch

    from srfeat.errors import TileOutOfMemoryError
    from srfeat.inference.fused import InferenceGenerator
    from srfeat.inference.winograd_path import Region

    model = tmp_path / "x4.safetensors"
    save_generator(tiny_generator(scale=4), model)
    for_window = InferenceGenerator.for_window  # what runs the network on a tile's window

    def runs_out_of_memory(self: InferenceGenerator, batch: torch.Tensor) -> Callable[[Region], torch.Tensor]:
        if tuple(batch.shape[-2:]) == (10, 11):  # two.png's LR, not the test image every model runs first
            torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator refuses it, as under `ulimit -v`
        return for_window(self, batch)

    monkeypatch.setattr(InferenceGenerator, "for_window", runs_out_of_memory)
    with pytest.raises(TileOutOfMemoryError) as raised:
        evaluate([str(model)], [folders[2]], metrics=["psnr"], device="cpu")
    assert str(raised.value) == f"out of memory on cpu upscaling a 10x11 tile; {FREE_SAID}"


def test_a_tile_out_of_memory_on_a_gpu_tells_the_evaluation_to_use_the_cpu_in_its_callers_words() -> None:
    """The advice on a GPU (where others may hold its memory for as long as they like): the CPU, named as
    `evaluate`'s keyword or `srfeat eval`'s flag; not a tile size, which neither takes."""
    import torch

    from srfeat.evaluation import evaluation_tile_advice

    cuda = torch.device("cuda:0")
    assert evaluation_tile_advice(cuda, command_line=False) == f"{FREE_SAID}, or evaluate on the CPU (device='cpu')"
    assert evaluation_tile_advice(cuda, command_line=True) == f"{FREE_SAID}, or evaluate on the CPU (--device cpu)"
    assert evaluation_tile_advice(torch.device("cpu"), command_line=True) == FREE_SAID
