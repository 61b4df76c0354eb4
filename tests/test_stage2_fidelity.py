"""Stage 2 as the authors' code trains it, and the paper's variants, through the trainer and the CLI.

Tiny networks on synthetic folders (training_helpers); docs/fidelity.md lists each item.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import one_error_line, srfeat_cli
from safetensors.torch import load_file
from training_helpers import tiny_config, tiny_generator_file

from srfeat.archs.discriminators import Discriminator
from srfeat.archs.generator import SRFeatGenerator
from srfeat.errors import ConfigError
from srfeat.training import checkpoint, trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def stage2_run(folders, tmp_path: Path, name: str, *overrides: str) -> tuple[Path, Path]:
    """A 3-step stage-2 run of tiny networks; returns (run folder, stage-1 generator file)."""
    train_dir, _ = folders
    init = tmp_path / "stage1.safetensors"
    if not init.is_file():
        tiny_generator_file(init)
    out = tmp_path / name
    config = tiny_config(
        train_dir,
        None,
        out,
        stage=2,
        overrides=[f"train.init_generator={init}", "train.max_steps=3", "data.hr_patch_size=16", *overrides],
    )
    trainer.train(config, out_dir=out, show_progress=False)
    return out, init


def batchnorm_affine(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if ".bn" in k and k.endswith((".weight", ".bias"))}


def test_generator_batchnorm_gamma_and_beta_stay_as_stage_1_left_them(folders, tmp_path) -> None:
    out, init = stage2_run(folders, tmp_path, "frozen")
    started = load_file(str(init))
    trained = checkpoint.load_state(out / checkpoint.STATE_FILE)["generator"]
    frozen = batchnorm_affine(started)
    assert len(frozen) == 2 * 2 * 2  # 2 blocks x 2 BatchNorms x (weight, bias)
    assert all(torch.equal(trained[key], value) for key, value in frozen.items())
    # ...while every convolution learned
    convs = [k for k in started if k.endswith("conv1.weight") or k.startswith("head.")]
    assert all(not torch.equal(trained[key], started[key]) for key in convs)


def test_generator_batchnorm_learns_when_asked(folders, tmp_path) -> None:
    out, init = stage2_run(folders, tmp_path, "trainable", "train.generator_bn_trainable=true")
    started = batchnorm_affine(load_file(str(init)))
    trained = checkpoint.load_state(out / checkpoint.STATE_FILE)["generator"]
    assert all(not torch.equal(trained[key], value) for key, value in started.items())


def test_a_resume_takes_the_frozen_batchnorms_without_moments_and_refuses_a_learning_parameter_without(
    folders, tmp_path
) -> None:
    """Adam keeps no moments for a parameter that never had a gradient: the frozen BatchNorms of stage 2. Any other
    parameter's removed from the state restarted its Adam without a word (as a frozen one's); it is refused, in the
    dry run too, while the frozen ones' absence resumes, with train.generator_bn_trainable changed on resume too."""
    out, _ = stage2_run(folders, tmp_path, "frozen")
    # the generator optimizer lists the generator's parameters in this order
    parameters = [name for name, _ in SRFeatGenerator(scale=4, num_features=8, num_blocks=2).named_parameters()]
    moments = checkpoint.load_state(out / checkpoint.STATE_FILE)["optimizers"]["generator"]["state"]
    without = [name for position, name in enumerate(parameters) if position not in moments]
    assert without and all(".bn" in name for name in without), without  # the BatchNorms', and only theirs
    config = out / trainer.CONFIG_FILE
    child = srfeat_cli("train", config, "--out", out, "--resume", "--max-steps", "4")
    assert child.returncode == 0, child.stderr
    child = srfeat_cli(
        "train", config, "train.generator_bn_trainable=true", "--out", out, "--resume", "--max-steps", "5"
    )
    assert child.returncode == 0, child.stderr  # BatchNorms that learn now start their moments
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    learning = parameters.index(next(name for name in parameters if name.endswith("conv1.weight")))
    del state["optimizers"]["generator"]["state"][learning]
    torch.save(state, out / checkpoint.STATE_FILE)
    for dry_run in (["--dry-run"], []):
        child = srfeat_cli("train", config, "--out", out, "--resume", "--max-steps", "6", *dry_run)
        assert f"has no moments for parameter {learning} (of shape" in one_error_line(child, only=True)


@pytest.mark.parametrize("kinds", [["image"], ["feature"]], ids=["SRFeat_I", "SRFeat_F"])
def test_one_discriminator_variants_train_only_that_discriminator(folders, tmp_path, caplog, kinds) -> None:
    weight = "model.image_adversarial_weight=2e-3" if kinds == ["image"] else "model.feature_adversarial_weight=2e-3"
    with caplog.at_level(logging.INFO, logger="srfeat"):
        out, _ = stage2_run(folders, tmp_path, "variant", f"model.discriminators=[{kinds[0]}]", weight)
    variant = "SRFeat_I" if kinds == ["image"] else "SRFeat_F"
    assert f"stage 2 ({variant}): perceptual + {kinds[0]} x 0.002; discriminators first" in caplog.text
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert list(state["discriminators"]) == kinds
    assert yaml.safe_load(state["config"])["model"]["discriminators"] == kinds  # saved with the run
    assert yaml.safe_load((out / trainer.CONFIG_FILE).read_text())["model"]["discriminators"] == kinds
    records = [json.loads(line) for line in (out / trainer.METRICS_FILE).read_text().splitlines()]
    keys = {key for record in records for key in record if key.startswith("loss/")}
    other = "feature" if kinds == ["image"] else "image"
    assert f"loss/adversarial_{kinds[0]}" in keys and f"loss/discriminator_{kinds[0]}" in keys
    assert not any(other in key for key in keys)
    for record in records:
        expected = record["loss/perceptual"] + 2e-3 * record[f"loss/adversarial_{kinds[0]}"]
        assert record["loss/generator"] == pytest.approx(expected, rel=1e-5)


def test_authors_initialisation_for_a_new_generator(folders, tmp_path) -> None:
    train_dir, _ = folders
    config = tiny_config(train_dir, None, tmp_path / "run", overrides=["model.init=authors", "model.num_features=32"])
    loop = trainer.Trainer(config, out_dir=tmp_path / "run", show_progress=False)
    loop._build(None)
    generator = loop.generator
    assert isinstance(generator, SRFeatGenerator) and generator.head.bias is not None
    body_conv = generator.body[0].conv1.weight
    assert body_conv.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(generator.head.bias == 0)
    assert torch.all(generator.body[0].bn1.weight == 1)


def test_authors_initialisation_for_new_discriminators(folders, tmp_path) -> None:
    train_dir, _ = folders
    init = tiny_generator_file(tmp_path / "g.safetensors")
    overrides = ["model.discriminator_init=authors", "data.hr_patch_size=16", f"train.init_generator={init}"]
    config = tiny_config(train_dir, None, tmp_path / "run", stage=2, overrides=overrides)
    loop = trainer.Trainer(config, out_dir=tmp_path / "run", show_progress=False)
    loop._build(None)
    for discriminator in loop.discriminators.values():
        assert isinstance(discriminator, Discriminator)
        dense_layer = discriminator.classifier[-1]
        assert isinstance(dense_layer, torch.nn.Linear)
        dense = dense_layer.weight  # 16 -> 1: tensorlayer's N(0, 0.1), cut at 0.2
        assert 0.05 < dense.std().item() and dense.abs().max().item() <= 0.2 + 1e-6


def test_adam_epsilons_are_the_authors(folders, tmp_path) -> None:
    out, _ = stage2_run(folders, tmp_path, "eps")
    state = checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert state["optimizers"]["generator"]["param_groups"][0]["eps"] == 1e-10
    assert state["optimizers"]["image"]["param_groups"][0]["eps"] == pytest.approx(1e-7)


# ----------------------------------------------------------------------------- resuming


def resume(folders, out: Path, init: Path, *overrides: str) -> None:
    train_dir, _ = folders
    config = tiny_config(
        train_dir,
        None,
        out,
        stage=2,
        overrides=[f"train.init_generator={init}", "train.max_steps=4", "data.hr_patch_size=16", *overrides],
    )
    trainer.train(config, out_dir=out, resume=True, show_progress=False)


def test_resuming_a_state_of_an_older_srfeat_is_one_clear_line(folders, tmp_path) -> None:
    out, init = stage2_run(folders, tmp_path, "old")
    path = out / checkpoint.STATE_FILE
    state = checkpoint.load_state(path)
    del state["discriminator_inputs"]  # what states of earlier versions lack
    state.pop("format")
    checkpoint.save_state(state, path)
    with pytest.raises(ConfigError, match="older srfeat.*train.init_generator=") as error:
        resume(folders, out, init)
    assert "\n" not in str(error.value)


def test_a_dry_run_of_a_resume_refuses_other_discriminators_without_building_them(folders, tmp_path) -> None:
    # the dry run passed these; it now says the resume's line, from the networks' shapes alone: a paper-size
    # image discriminator (0.8 GB of weights) is not allocated to find that the state's is not one
    from test_training_faults import address_space_after_import

    out, _ = stage2_run(folders, tmp_path, "run")
    config = tmp_path / "run.yaml"
    config.write_bytes((out / "config.yaml").read_bytes())
    limit = address_space_after_import() + 2**29
    state = out / checkpoint.STATE_FILE
    for overrides, said in (
        (
            ["model.discriminators=[image]"],
            (
                f"{state} holds the discriminators ['image', 'feature'], the config names ['image']: set "
                "model.discriminators to match, or start a new run folder"
            ),
        ),
        (
            ["data.hr_patch_size=296", "model.discriminator_channels=64", "model.discriminator_dense_features=1024"],
            (
                f"{state}: the image discriminator's features.0.weight is (8, 3, 3, 3), the config builds "
                "(64, 3, 3, 3): set data.hr_patch_size and model.discriminator_* as in that run, or start a new run "
                "folder"
            ),
        ),
    ):
        child = srfeat_cli("train", config, "--out", out, "--resume", "--dry-run", *overrides, memory_limit=limit)
        assert one_error_line(child, only=True) == f"ERROR: {said}"


def test_resuming_with_other_discriminators_or_sizes_is_one_clear_line(folders, tmp_path) -> None:
    out, init = stage2_run(folders, tmp_path, "run")
    with pytest.raises(
        ConfigError, match=r"holds the discriminators \['image', 'feature'\], the config names \['image'\]"
    ):
        resume(folders, out, init, "model.discriminators=[image]")
    with pytest.raises(
        ConfigError, match=r"image discriminator's .* is \(16, 64\), the config builds \(16, 256\)"
    ) as error:
        resume(folders, out, init, "data.hr_patch_size=32")
    assert "\n" not in str(error.value)
    resume(folders, out, init)  # the matching config resumes
    assert checkpoint.load_state(out / checkpoint.STATE_FILE)["step"] == 4


# ----------------------------------------------------------------------------- the command


def srfeat(*argv: str, datasets: Path) -> subprocess.CompletedProcess[str]:
    return srfeat_cli(*argv, timeout=120, env={"SRFEAT_DATASETS": str(datasets)})


def test_dry_run_of_a_variant_and_bad_variants_in_one_line(datasets_dir: Path) -> None:
    config = "configs/dev/stage2.yaml"
    result = srfeat("train", config, "--dry-run", "model.discriminators=[image]", datasets=datasets_dir)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["model"]["discriminators"] == ["image"]
    for bad, message in (
        ("[]", "model.discriminators is empty"),
        ("[foo]", "model.discriminators[0] must be one of 'image', 'feature', got 'foo'"),
    ):
        result = srfeat("train", config, "--dry-run", f"model.discriminators={bad}", datasets=datasets_dir)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
