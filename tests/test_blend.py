"""The detail dial: network interpolation of `default` and `gan` (API, `srfeat blend`, --strength)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli
from inference_helpers import tiny_generator
from PIL import Image
from skimage import data as samples

from srfeat.errors import InvalidOptionError, WeightsError
from srfeat.inference import Upscaler
from srfeat.weights import load_generator, save_generator
from srfeat.weights.blend import blend_generators, blend_states, check_alpha

# A detailed 32x32 patch (hair and the flag): the two models differ most where there is texture.
PHOTO = samples.astronaut()[100:132, 150:182]


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels: how much fine detail an image has."""
    pixels = image.astype(np.float64)
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


@pytest.fixture(scope="module")
def dial_outputs() -> dict[str, np.ndarray]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    settings = {
        "default": {"model": "default"},
        "gan": {"model": "gan"},
        "strength 0": {"strength": 0.0},
        "strength 0.5": {"strength": 0.5},
        "strength 1": {"strength": 1.0},
    }
    return {name: Upscaler(**kwargs, device="cpu")(PHOTO).astype(np.int16) for name, kwargs in settings.items()}


# -- blending state dicts -------------------------------------------------------------------


def test_blend_is_the_weighted_mean_exact_at_both_ends() -> None:
    state_a = tiny_generator().state_dict()
    state_b = tiny_generator().state_dict()
    state_b["body.0.bn1.num_batches_tracked"] = torch.tensor(7)
    for key, value in blend_states(state_a, state_b, 0.0).items():
        assert torch.equal(value, state_a[key].float() if value.is_floating_point() else state_a[key]), key
    for key, value in blend_states(state_a, state_b, 1.0).items():
        if value.is_floating_point():
            assert torch.equal(value, state_b[key]), key
    quarter = blend_states(state_a, state_b, 0.25)
    torch.testing.assert_close(quarter["head.weight"], 0.75 * state_a["head.weight"] + 0.25 * state_b["head.weight"])
    torch.testing.assert_close(
        quarter["body.1.bn2.running_var"],
        0.75 * state_a["body.1.bn2.running_var"] + 0.25 * state_b["body.1.bn2.running_var"],
    )
    # Integer bookkeeping (BatchNorm's batch counter) is A's, not a blend.
    assert quarter["body.0.bn1.num_batches_tracked"].dtype == torch.int64
    assert int(quarter["body.0.bn1.num_batches_tracked"]) == int(state_a["body.0.bn1.num_batches_tracked"])


def test_blends_of_different_architectures_name_the_key_and_the_shapes() -> None:
    narrow = tiny_generator(num_features=8).state_dict()
    wide = tiny_generator(num_features=16).state_dict()
    with pytest.raises(WeightsError, match=r"head\.weight is 8x3x9x9 in mine but 16x3x9x9 in theirs") as error:
        blend_states(narrow, wide, 0.5, names=("mine", "theirs"))
    assert "\n" not in str(error.value)
    deep = tiny_generator(num_blocks=3).state_dict()
    with pytest.raises(WeightsError, match=r"key body\.2\.\S+ is in B but not in A") as error:
        blend_states(narrow, deep, 0.5)
    assert "same architecture" in str(error.value)


@pytest.mark.parametrize("alpha", [1.5, -0.1, math.nan, math.inf, "half"])
def test_bad_alphas_are_refused(alpha: object) -> None:
    state = tiny_generator().state_dict()
    with pytest.raises(WeightsError, match="alpha must be") as error:
        blend_states(state, state, alpha)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(error.value)


def test_blended_checkpoints_load_like_any_checkpoint(tmp_path: Path) -> None:
    save_generator(tiny_generator(), tmp_path / "a.safetensors")
    save_generator(tiny_generator(), tmp_path / "b.safetensors")
    blended = blend_generators(tmp_path / "a.safetensors", tmp_path / "b.safetensors", 0.5)
    save_generator(blended, tmp_path / "blend.safetensors")
    reloaded = load_generator(tmp_path / "blend.safetensors")
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, blended.state_dict()[key]), key


# -- the dial in the API --------------------------------------------------------------------


def test_strength_0_is_default_and_1_is_gan(dial_outputs: dict[str, np.ndarray]) -> None:
    assert np.abs(dial_outputs["strength 0"] - dial_outputs["default"]).max() <= 1
    assert np.abs(dial_outputs["strength 1"] - dial_outputs["gan"]).max() <= 1
    # ... and the two ends really are different pictures.
    assert np.abs(dial_outputs["default"] - dial_outputs["gan"]).mean() > 2


def test_strength_half_lies_between_default_and_gan(dial_outputs: dict[str, np.ndarray]) -> None:
    default, gan, half = dial_outputs["default"], dial_outputs["gan"], dial_outputs["strength 0.5"]
    # Nearer each end than the ends are to each other, and far from both (the output is not
    # linear in the weights, so not at the midpoint: nearer default on this patch).
    apart = np.abs(default - gan).mean()
    assert 0.2 * apart < np.abs(half - default).mean() < 0.9 * apart
    assert 0.2 * apart < np.abs(half - gan).mean() < 0.9 * apart
    # Detail grows along the dial: gan's invented texture is half there.
    assert high_frequency_energy(default) < high_frequency_energy(half) < high_frequency_energy(gan)


@pytest.mark.parametrize("strength", [1.5, -0.5, math.nan])
def test_bad_strengths_are_refused_in_one_line(strength: float) -> None:
    with pytest.raises(InvalidOptionError, match=r"strength must be between 0 and 1 \(0 = default, 1 = gan\)") as error:
        Upscaler(strength=strength, device="cpu")
    assert "\n" not in str(error.value)


def test_strength_with_another_model_is_an_option_error_saying_which_model_it_goes_with() -> None:
    # the options do not fit together; no weights file is at fault
    with pytest.raises(InvalidOptionError, match=r"goes with model default only, not model gan; give model='default'"):
        Upscaler("gan", strength=0.5, device="cpu")


# -- the command line: srfeat upscale --strength, srfeat blend ------------------------------


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "patch.png"
    Image.fromarray(PHOTO).save(path)
    return path


def upscaled_by_cli(photo: Path, output: Path, *options: str | Path) -> np.ndarray:
    process = srfeat_cli("upscale", photo, "-o", output, "--device", "cpu", *options)
    assert process.returncode == 0, process.stderr
    return np.asarray(Image.open(output)).astype(np.int16)


def test_cli_strength_ends_are_the_bundled_models(photo_file: Path, tmp_path: Path) -> None:
    default = upscaled_by_cli(photo_file, tmp_path / "default.png", "--model", "default")
    gan = upscaled_by_cli(photo_file, tmp_path / "gan.png", "--model", "gan")
    assert np.abs(upscaled_by_cli(photo_file, tmp_path / "s0.png", "--strength", "0") - default).max() <= 1
    assert np.abs(upscaled_by_cli(photo_file, tmp_path / "s1.png", "--strength", "1") - gan).max() <= 1


def test_cli_blend_then_model_equals_strength(photo_file: Path, tmp_path: Path) -> None:
    blend = tmp_path / "half.safetensors"
    process = srfeat_cli("blend", "default", "gan", "--alpha", "0.5", "-o", blend)
    assert process.returncode == 0, process.stderr
    from_file = upscaled_by_cli(photo_file, tmp_path / "file.png", "--model", blend)
    dialled = upscaled_by_cli(photo_file, tmp_path / "dial.png", "--strength", "0.5")
    assert np.abs(from_file - dialled).max() <= 1
    # eval's model specs name the same model in upscale: they were looked for as files ("not found")
    for spec in ("strength=0.5", "blend=default,gan,0.5"):
        named = upscaled_by_cli(photo_file, tmp_path / f"{spec.split('=')[0]}.png", "--model", spec)
        assert np.array_equal(named, dialled), spec
    # Nothing a user has is overwritten: a second blend to the same file is refused.
    before = blend.read_bytes()
    again = srfeat_cli("blend", "default", "gan", "--alpha", "0.7", "-o", blend)
    assert again.returncode == 1 and "exists; use --overwrite" in again.stderr and blend.read_bytes() == before


def test_cli_blend_takes_model_specs_as_its_models(tmp_path: Path) -> None:
    """`srfeat blend strength=0.3 gan` was "not found" (the spec looked for as a file), though a spec is a model
    in upscale, export and eval: halfway from strength 0.3 to gan is strength 0.65."""
    outputs = {
        "specs": ["strength=0.3", "gan", "--alpha", "0.5"],
        "nested": ["blend=default,gan,0.65", "blend=gan,default,1", "--alpha", "0"],
        "names": ["default", "gan", "--alpha", "0.65"],
    }
    for name, arguments in outputs.items():
        process = srfeat_cli("blend", *arguments, "-o", tmp_path / f"{name}.safetensors")
        assert process.returncode == 0, process.stderr
    expected = load_generator(tmp_path / "names.safetensors").state_dict()
    for name in ("specs", "nested"):
        blended = load_generator(tmp_path / f"{name}.safetensors").state_dict()
        assert blended.keys() == expected.keys()
        for key, tensor in expected.items():
            torch.testing.assert_close(blended[key], tensor, rtol=0, atol=1e-6, msg=f"{name}: {key}")
    refused = srfeat_cli("blend", "strength=1.5", "gan", "--alpha", "0.5", "-o", tmp_path / "no.safetensors")
    assert one_error_line(refused) == "ERROR: strength must be between 0 and 1 (0 = default, 1 = gan), got 1.5"
    assert not (tmp_path / "no.safetensors").exists()


def test_blend_specs_nest_sixteen_deep_and_a_deeper_one_is_one_line(tmp_path: Path) -> None:
    """A spec nests blends in A's place; thousands of them (as long as a command line allows) were a
    RecursionError's traceback."""
    from srfeat.weights.blend import MAX_NESTED_BLENDS, load_blended

    def nested(depth: int) -> str:
        return "blend=" * depth + "default" + ",gan,0.5" * depth

    deepest = load_blended(nested(MAX_NESTED_BLENDS), None).state_dict()
    expected = blend_generators("default", "gan", 1 - 0.5**MAX_NESTED_BLENDS).state_dict()
    for key, tensor in expected.items():
        torch.testing.assert_close(deepest[key], tensor, rtol=0, atol=1e-6, msg=key)
    too_deep = nested(3000)
    said = f"nests 3000 blends, more than {MAX_NESTED_BLENDS}: write the inner ones to a file with `srfeat blend`"
    photo = tmp_path / "photo.png"
    Image.fromarray(PHOTO[:8, :8]).save(photo)
    for arguments in (
        ["upscale", photo, "-o", tmp_path / "out.png", "--model", too_deep],
        ["blend", too_deep, "gan", "--alpha", "0.5", "-o", tmp_path / "out.safetensors"],
        ["eval", "--model", too_deep, "--data", tmp_path, "--metrics", "psnr"],
    ):
        assert said in one_error_line(srfeat_cli(*arguments)), arguments[0]
    assert sorted(tmp_path.iterdir()) == [photo]


@pytest.mark.parametrize(
    "command, arguments, said",
    [
        ("upscale", ["--model", "strength=0:1:0.1"], "model spec 'strength=0:1:0.1' names several models, which"),
        ("export", ["--model", "strength=0:1:0.1"], "model spec 'strength=0:1:0.1' names several models, which"),
        ("upscale", ["--model", "blend=default,gan"], "model spec 'blend=default,gan' is not blend=A,B,ALPHA"),
        ("export", ["--model", "strength=2"], "strength must be between 0 and 1"),
    ],
)
def test_cli_a_model_spec_that_is_not_one_model_is_one_line_and_writes_nothing(
    photo_file: Path, tmp_path: Path, command: str, arguments: list[str], said: str
) -> None:
    inputs, output = ([photo_file], "out.png") if command == "upscale" else ([], "out.onnx")
    process = srfeat_cli(command, *inputs, "-o", tmp_path / output, *arguments)
    assert said in one_error_line(process), process.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_model_spec_with_a_strength_beside_it_is_refused() -> None:
    with pytest.raises(
        InvalidOptionError, match=r"^model 'blend=default,gan,0.3' is a blend already: leave strength out$"
    ):
        Upscaler("blend=default,gan,0.3", strength=0.5, device="cpu")


def test_an_export_of_a_model_spec_is_named_as_the_blend_it_is() -> None:
    """`srfeat export --model strength=0.3` was named `strength=0` (the spec read as a file, `.3` its suffix)."""
    from srfeat.export.metadata import model_info

    assert model_info("strength=0.3") == model_info("default", 0.3)
    assert model_info("blend=default,gan,0.3") == model_info("default", 0.3)
    other = model_info("blend=gan,default,0.25")
    assert other.name == "gan-default-blend-0.25"
    assert other.training_data.startswith("network interpolation 0.75 x gan + 0.25 x default; gan: ")
    assert other.license == model_info("gan").license


@pytest.mark.parametrize("strength", ["1.5", "nan", "-0.1"])
def test_cli_bad_strength_is_one_line_and_writes_nothing(photo_file: Path, tmp_path: Path, strength: str) -> None:
    process = srfeat_cli("upscale", photo_file, "-o", tmp_path / "out", "--strength", strength, "--device", "cpu")
    assert (
        one_error_line(process) == f"ERROR: --strength must be between 0 and 1 (0 = default, 1 = gan), got {strength}"
    )
    assert not (tmp_path / "out").exists()


def test_cli_blend_of_different_architectures_is_one_line(tmp_path: Path) -> None:
    save_generator(tiny_generator(num_features=8), tmp_path / "narrow.safetensors")
    save_generator(tiny_generator(num_features=16), tmp_path / "wide.safetensors")
    output = tmp_path / "blend.safetensors"
    process = srfeat_cli(
        "blend", tmp_path / "narrow.safetensors", tmp_path / "wide.safetensors", "--alpha", "0.3", "-o", output
    )
    line = one_error_line(process)
    assert "head.weight is 8x3x9x9 in" in line and "but 16x3x9x9 in" in line and "wide.safetensors" in line
    assert not output.exists()
    process = srfeat_cli("blend", "default", "gan", "--alpha", "2", "-o", output)
    assert one_error_line(process) == "ERROR: --alpha must be between 0 and 1, got 2.0" and not output.exists()


def test_cli_blend_reads_and_writes_an_upper_case_suffix(tmp_path: Path) -> None:
    # A.SAFETENSORS was "name it .safetensors"; -o BLEND.SAFETENSORS "must end in .safetensors"
    save_generator(tiny_generator(num_features=8), tmp_path / "a.safetensors")
    (tmp_path / "a.safetensors").rename(tmp_path / "A.SAFETENSORS")
    save_generator(tiny_generator(num_features=8), tmp_path / "b.safetensors")
    output = tmp_path / "BLEND.SAFETENSORS"
    process = srfeat_cli(
        "blend", tmp_path / "A.SAFETENSORS", tmp_path / "b.safetensors", "--alpha", "0.5", "-o", output
    )
    assert process.returncode == 0, process.stderr
    assert load_generator(output).num_features == 8


def test_cli_blend_never_writes_over_its_own_input(tmp_path: Path) -> None:
    # Before: `srfeat blend A B -o A --overwrite` replaced A with the blend (through a symbolic link too).
    model_a, model_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_generator(tiny_generator(num_features=8), model_a)
    save_generator(tiny_generator(num_features=8), model_b)
    before = model_a.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(model_a)
    for first, output in (
        (model_a, model_a),
        (tmp_path / "link.safetensors", model_a),
        (model_a, tmp_path / "link.safetensors"),
    ):
        process = srfeat_cli("blend", first, model_b, "--alpha", "0.5", "-o", output, "--overwrite")
        line = one_error_line(process)
        assert "is the input" in line and "(the input would be lost)" in line
    assert model_a.read_bytes() == before and (tmp_path / "link.safetensors").is_symlink()
    process = srfeat_cli("blend", model_a, model_a, "--alpha", "0.5", "-o", tmp_path / "copy.safetensors")
    assert process.returncode == 0 and "A and B are the same model" in process.stderr


def test_cli_blend_output_that_cannot_be_made_is_one_line_before_loading(tmp_path: Path) -> None:
    # Before: an output under a file was a FileExistsError traceback, after both models were loaded.
    (tmp_path / "notes.txt").write_text("x")
    process = srfeat_cli("blend", "default", "gan", "--alpha", "0.5", "-o", tmp_path / "notes.txt" / "x.safetensors")
    expected = f"the output {tmp_path / 'notes.txt' / 'x.safetensors'} cannot be made: {tmp_path / 'notes.txt'}"
    assert one_error_line(process) == f"ERROR: {expected} is a file, not a folder"


@pytest.mark.parametrize("model_a", ["default", "strength=0.5", "blend=blend=gan,default,0.2,gan,0.1"])
def test_cli_blend_never_writes_over_a_bundled_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_a: str
) -> None:
    # Before: `srfeat blend default gan -o .../srfeat/weights/default.safetensors --overwrite` replaced the
    # bundled default (every later `default` and --strength was the blend): the input was compared as the
    # path "default", which is no file. A copy of the package's folder stands in for it here. A blend spec
    # reads its models: `strength=0.5` reads default, as the nested blend does.
    import argparse

    from srfeat.commands import blend as blend_command
    from srfeat.errors import SRFeatError

    bundled = tmp_path / "weights"
    bundled.mkdir()
    for name in ("default", "gan"):
        save_generator(tiny_generator(num_features=8), bundled / f"{name}.safetensors")
    monkeypatch.setattr("srfeat.weights.bundled_dir", lambda: bundled)
    before = (bundled / "default.safetensors").read_bytes()
    parser = argparse.ArgumentParser()
    blend_command.add_arguments(parser)
    args = [model_a, "gan", "--alpha", "0.5", "-o", str(bundled / "default.safetensors"), "--overwrite"]
    with pytest.raises(SRFeatError, match=r"is the input .*default.safetensors: choose another -o"):
        blend_command.run(parser.parse_args(args))
    assert (bundled / "default.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"head.weight": 1.0}, "head.weight is float, not a tensor"),
        ({"head.weight": np.ones(3)}, "head.weight is ndarray, not a tensor"),
        (None, "expected a state dict .names to tensors., got NoneType"),
        ([("head.weight", torch.ones(1))], "expected a state dict .names to tensors., got list"),
    ],
)
def test_blend_states_of_something_else_than_state_dicts_is_one_weights_error(state: object, message: str) -> None:
    """A float, a numpy array or a module in place of a state dict was an AttributeError ('float' object has
    no attribute 'shape') or a TypeError ('SRFeatGenerator' object is not iterable) from inside."""
    good = {"head.weight": torch.ones(3)}
    with pytest.raises(WeightsError, match=f"cannot blend B: {message}") as error:
        blend_states(good, state, 0.5)  # pyright: ignore[reportArgumentType]
    assert "\n" not in str(error.value) and isinstance(error.value, ValueError)
    module = tiny_generator()
    with pytest.raises(WeightsError, match="cannot blend A: .*got SRFeatGenerator: give its state_dict"):
        blend_states(module, module.state_dict(), 0.5)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("output", [".", "/"])
def test_cli_blend_output_of_no_name_is_one_line(tmp_path: Path, output: str) -> None:
    # Before: `-o .` or `-o /` was a ValueError traceback from Path.with_suffix ("has an empty name").
    process = srfeat_cli("blend", "default", "gan", "--alpha", "0.5", "-o", output, cwd=tmp_path)
    assert one_error_line(process) == f"ERROR: the output {output} is a folder; give a file name ending in .safetensors"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("command", "output"), [("blend", ".safetensors"), ("convert", "sub/.SAFETENSORS")])
def test_cli_output_that_is_only_the_suffix_is_one_clear_line(tmp_path: Path, command: str, output: str) -> None:
    # Before: "the output .safetensors must end in .safetensors (... e.g. .safetensors.safetensors)": it does end so.
    arguments = ("default", "gan", "--alpha", "0.5") if command == "blend" else ("authors.npz",)
    process = srfeat_cli(command, *arguments, "-o", output, cwd=tmp_path)
    example = Path(output).with_name("generator.safetensors")
    expected = f"ERROR: the output {output} has no name before .safetensors: give one, e.g. {example}"
    assert one_error_line(process, only=True) == expected
    assert not any(tmp_path.iterdir())


def test_save_generator_to_only_the_suffix_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as refused:
        save_generator(tiny_generator(), tmp_path / ".safetensors")
    assert str(refused.value) == f"{tmp_path / '.safetensors'} has no name before .safetensors: give one, e.g. " + str(
        tmp_path / "generator.safetensors"
    )
    assert not any(tmp_path.iterdir())


def test_cli_blend_of_alpha_minus_zero_logs_zero(tmp_path: Path) -> None:
    # Before: `--alpha -0.0` logged "wrote OUT: 1 x default + -0 x gan".
    output = tmp_path / "blend.safetensors"
    process = srfeat_cli("blend", "default", "gan", "--alpha", "-0.0", "-o", output)
    assert process.returncode == 0, process.stderr
    assert f"INFO: wrote {output}: 1 x default + 0 x gan" in process.stderr.splitlines()
    assert math.copysign(1.0, check_alpha(-0.0)) == 1.0
