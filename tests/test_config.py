"""Typed training configs: shipped files load, mistakes fail at once with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srfeat.errors import ConfigError
from srfeat.training.config import TrainingConfig, config_from_dict, load_config
from srfeat.training.networks import adam_eps
from srfeat.training.trainer import lr_factor

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def base() -> dict:
    return {"data": {"train_dirs": ["images"]}}


def test_every_shipped_config_loads() -> None:
    assert len(CONFIGS) >= 6
    for path in CONFIGS:
        assert isinstance(load_config(path), TrainingConfig), path


def test_paper_recipes_are_the_seed_numbers() -> None:
    stage1 = load_config(REPO / "configs/paper/stage1.yaml")
    assert (stage1.stage, stage1.data.kind, stage1.data.hr_patch_size) == (1, "center_crop", 296)
    assert (stage1.train.batch_size, stage1.train.epochs, stage1.optim.lr, stage1.optim.beta1) == (9, 20, 1e-4, 0.9)
    stage2 = load_config(REPO / "configs/paper/stage2.yaml")
    assert (stage2.stage, stage2.data.kind, stage2.train.batch_size, stage2.train.epochs) == (2, "patches", 5, 5)
    assert stage2.train.init_generator
    # lr by epoch (counted from 1): stage 1 1e-4, 1e-5 from epoch 10, 1e-6 from 15;
    # stage 2 1e-4, 1e-5 from epoch 3, 1e-6 at epoch 5.
    lrs1 = [stage1.optim.lr * lr_factor(stage1, epoch, 0.0) for epoch in range(20)]
    assert lrs1 == pytest.approx([1e-4] * 9 + [1e-5] * 5 + [1e-6] * 6)
    lrs2 = [stage2.optim.lr * lr_factor(stage2, epoch, 0.0) for epoch in range(5)]
    assert lrs2 == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-6])
    # The author's batch 9 for stage 2 is one override away.
    assert load_config(REPO / "configs/paper/stage2.yaml", ["train.batch_size=9"]).train.batch_size == 9


def test_authors_recipes_are_the_numbers_of_their_code() -> None:
    """main_gan_init.py / main_gan_train.py with config.py: batch 9, beta1 0.9, lr 1e-4, lr_decay
    0.1; stage 1 loops epochs 0..20 decaying every 17, stage 2 epochs 0..4 decaying every 2."""
    stage1 = load_config(REPO / "configs/authors/stage1.yaml")
    stage2 = load_config(REPO / "configs/authors/stage2.yaml")
    for config in (stage1, stage2):
        assert (config.data.kind, config.data.train_dirs, config.data.hr_patch_size) == (
            "patches",
            ["data/div2k_patches"],
            296,
        )
        assert config.data.shuffle == "once"  # random.shuffle(lr_hr_list) before the epoch loop
        assert (config.train.batch_size, config.optim.lr, config.optim.beta1) == (9, 1e-4, 0.9)
    assert stage1.model.init == "authors" and stage1.train.epochs == 21
    lrs1 = [stage1.optim.lr * lr_factor(stage1, epoch, 0.0) for epoch in range(21)]
    assert lrs1 == pytest.approx([1e-4] * 17 + [1e-5] * 4)
    lrs2 = [stage2.optim.lr * lr_factor(stage2, epoch, 0.0) for epoch in range(stage2.train.epochs)]
    assert lrs2 == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-6])
    assert stage2.model.discriminators == ["image", "feature"]
    assert (stage2.model.image_adversarial_weight, stage2.model.feature_adversarial_weight) == (1e-3, 1e-3)
    assert (stage2.train.generator_bn_eval, stage2.train.generator_bn_trainable) == (True, False)
    assert stage2.train.update_order == "discriminators_first"
    # Adam epsilon: TF's default in stage 1 (on a 4x larger loss), 1e-10 in stage 2 (on a
    # discriminator loss scaled by 1e-3 there)
    assert adam_eps(stage1, "generator") == pytest.approx(2.5e-9)
    assert adam_eps(stage2, "generator") == 1e-10
    assert adam_eps(stage2, "discriminator") == pytest.approx(1e-7)
    assert adam_eps(load_config(REPO / "configs/authors/stage2.yaml", ["optim.eps=1e-8"]), "generator") == 1e-8


def test_stage2_defaults_follow_the_authors_code() -> None:
    config = config_from_dict({**base(), "stage": 2})
    assert config.model.discriminators == ["image", "feature"]
    assert (config.train.generator_bn_trainable, config.train.update_order) == (False, "discriminators_first")


@pytest.mark.parametrize(
    "discriminators, message",
    [
        ([], "model.discriminators is empty: name at least one of image, feature"),
        (["foo"], r"model.discriminators\[0\] must be one of 'image', 'feature', got 'foo'"),
        (["image", "image"], "names one twice"),
        ("image", "model.discriminators must be a list"),
    ],
)
def test_discriminators_must_be_a_non_empty_subset(discriminators, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        config_from_dict({**base(), "stage": 2, "model": {"discriminators": discriminators}})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "key",
    ["model.image_adversarial_weight", "model.feature_adversarial_weight", "optim.eps", "optim.discriminator_eps"],
)
def test_loss_weights_and_epsilons_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be positive"):
        config_from_dict(base(), [f"{key}=0"])


@pytest.mark.parametrize("value, message", [("10", "must be in \\(0, 1\\]"), ("0", "must be positive")])
def test_lr_gamma_must_lower_the_learning_rate(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"optim.lr_gamma {message}"):
        config_from_dict(base(), [f"optim.lr_gamma={value}"])
    assert config_from_dict(base(), ["optim.lr_gamma=1"]).optim.lr_gamma == 1.0


@pytest.mark.parametrize("key", ["optim.lr", "optim.discriminator_lr"])
def test_a_learning_rate_above_one_is_refused_before_the_run(key: str) -> None:
    """1e4 for 1e-4 passed the check (it is positive and finite) and diverged at the first step, after the data
    and the networks were built."""
    with pytest.raises(
        ConfigError, match=rf"^override {key}: config key {key} must be in \(0, 1\] \(Adam .*got 10000\.0$"
    ):
        config_from_dict(base(), [f"{key}=1e4"])
    assert getattr(config_from_dict(base(), [f"{key}=1"]).optim, key.split(".")[1]) == 1.0


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "nan", "inf"])
def test_ema_decay_must_be_in_zero_one(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train.ema_decay must be|train.ema_decay must be a finite number"):
        config_from_dict(base(), [f"train.ema_decay={value}"])


@pytest.mark.parametrize("value, expected", [("0.999", 0.999), ("0", 0.0), ("null", None), ("1e-1", 0.1)])
def test_ema_decay_accepts_off_and_fractions(value: str, expected: float | None) -> None:
    assert config_from_dict(base(), [f"train.ema_decay={value}"]).train.ema_decay == expected


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_grad_clip_norm_must_be_positive_and_finite(value: str) -> None:
    with pytest.raises(ConfigError, match="train.grad_clip_norm must be"):
        config_from_dict(base(), [f"train.grad_clip_norm={value}"])
    assert config_from_dict(base(), ["train.grad_clip_norm=0.5"]).train.grad_clip_norm == 0.5


def test_progress_schedule_uses_fractions_of_the_run() -> None:
    config = config_from_dict(
        {**base(), "optim": {"lr_schedule": "progress", "lr_milestones": [0.5, 0.75], "lr_gamma": 0.5}}
    )
    assert [lr_factor(config, 0, p) for p in (0.0, 0.49, 0.5, 0.8)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "values, key",
    [
        ({"optim": {"lrr": 1e-4}}, "optim.lrr"),
        ({"trian": {}}, "trian"),
        ({"validation": {"dir": "x", "evry": 5}}, "validation.evry"),
    ],
)
def test_unknown_key_fails_with_its_name(values, key) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key {key}\b"):
        config_from_dict({**base(), **values})


@pytest.mark.parametrize(
    "values, key",
    [
        ({"train": {"batch_size": "nine"}}, "train.batch_size"),
        ({"train": {"batch_size": 9.5}}, "train.batch_size"),
        ({"train": {"bf16": "yes please"}}, "train.bf16"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"stage": 3}, "stage"),
        ({"data": {"kind": "crops", "train_dirs": ["a"]}}, "data.kind"),
        ({"data": {"train_dirs": ["ok", {"a": 2}]}}, r"data.train_dirs\[1\]"),
        ({"model": 5}, "model"),
    ],
)
def test_wrong_type_fails_with_the_key(values, key) -> None:
    with pytest.raises(ConfigError, match=rf"config key {key} must"):
        config_from_dict({**base(), **values})


def test_value_checks() -> None:
    with pytest.raises(ConfigError, match="train.batch_size must be positive"):
        config_from_dict({**base(), "train": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="multiple of model.scale"):
        config_from_dict({**base(), "data": {"train_dirs": ["a"], "hr_patch_size": 30}})
    with pytest.raises(ConfigError, match="data.train_dirs is empty"):
        config_from_dict({})
    with pytest.raises(ConfigError, match="fractions"):
        config_from_dict({**base(), "optim": {"lr_schedule": "progress", "lr_milestones": [3]}})


def test_yaml_exponent_without_dot_is_a_float(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: {train_dirs: [a]}\noptim:\n  lr: 1e-4\n")  # YAML 1.1 reads 1e-4 as a string
    assert load_config(path).optim.lr == 1e-4


@pytest.mark.parametrize(
    ("written", "shown", "integer"),
    [("1e3", "'1e3' (str)", "1000"), ("2.5e+1", "25.0 (float)", "25"), ('"16"', "'16' (str)", "16")],
)
def test_an_int_key_written_as_another_kind_of_number_says_how_to_write_it(
    tmp_path: Path, written: str, shown: str, integer: str
) -> None:
    """YAML 1.1 reads `1e3` (no dot) as the string '1e3': "must be int, got '1e3' (str)" left the fix to guess."""
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{train_dirs: [a]}}\ntrain:\n  epochs: {written}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (
        f"{path}: config key train.epochs must be int, got {shown}: "
        f"write it as the integer {integer} (digits, unquoted)"
    )


@pytest.mark.parametrize("written", ["1e-3", "2.5", "1e400", "ten"])
def test_an_int_key_given_no_whole_number_is_not_offered_one(tmp_path: Path, written: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{train_dirs: [a]}}\ntrain:\n  epochs: {written}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: config key train.epochs must be int, got [^:]*\)$"):
        load_config(path)


def test_dotted_overrides() -> None:
    config = config_from_dict(
        base(),
        [
            "optim.lr=2e-4",
            "train.batch_size=4",
            "data.train_dirs=[a, b]",
            "train.bf16=true",
            "validation.dir=null",
            "model.vgg_weights=torchvision",
        ],
    )
    assert config.optim.lr == 2e-4 and config.train.batch_size == 4 and config.train.bf16
    assert config.data.train_dirs == ["a", "b"] and config.validation.dir is None
    assert config.model.vgg_weights == "torchvision"
    with pytest.raises(ConfigError, match="unknown config key train.batchsize"):
        config_from_dict(base(), ["train.batchsize=4"])
    with pytest.raises(ConfigError, match="not key=value"):
        config_from_dict(base(), ["optim.lr"])


def test_datasets_dir_substitution_and_environment(monkeypatch) -> None:
    values = {"datasets_dir": "/from/file", "data": {"train_dirs": ["{datasets_dir}/T91"]}}
    monkeypatch.delenv("SRFEAT_DATASETS", raising=False)
    config = config_from_dict(values)
    assert config.resolve_path(config.data.train_dirs[0]) == Path("/from/file/T91")
    monkeypatch.setenv("SRFEAT_DATASETS", "/from/env")
    config = config_from_dict(values)
    assert config.resolve_path(config.data.train_dirs[0]) == Path("/from/env/T91")
    config = config_from_dict(values, ["datasets_dir=/from/override"])
    assert config.resolve_path(config.data.train_dirs[0]) == Path("/from/override/T91")


def test_resolved_config_round_trips() -> None:
    config = load_config(REPO / "configs/dev/stage1_gpu.yaml")
    again = config_from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_missing_or_invalid_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def billion_laughs(levels: int) -> str:
    """A list value whose aliases expand to 10**levels items in a few hundred bytes."""
    items = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"&l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return f"[{', '.join(items)}]"


def test_a_yaml_alias_bomb_is_refused_in_one_line_at_once(tmp_path: Path) -> None:
    # A 1 kB config whose aliases expand to 10^9 values: checking the value (and the error's repr
    # of it) used to take 50 s and all memory, then end in a MemoryError traceback.
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(f"train:\n  max_steps: {billion_laughs(9)}\n")
    result = subprocess.run(
        [sys.executable, "-m", "srfeat.cli", "train", str(path), "--dry-run"],
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "aliases are expanded" in result.stderr


def test_an_alias_bomb_in_an_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="aliases are expanded"):
        config_from_dict(base(), [f"stage={billion_laughs(7)}"])


def test_small_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("data: &d\n  train_dirs: [images]\noptim: {<<: {lr: 0.01}, beta1: 0.5}\n")
    config = load_config(path)
    assert config.optim.lr == 0.01 and config.optim.beta1 == 0.5


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"nested too deeply to be a training config, whose values are .*configs/dev"):
        load_config(path)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    # YAML keeps the last one silently: `stage: 1` ... `stage: 2` trained stage 2
    path = tmp_path / "twice.yaml"
    path.write_text("stage: 1\ndata:\n  train_dirs: [images]\nstage: 2\n")
    with pytest.raises(ConfigError, match=r"line 4, column 1: .*key 'stage' is given twice in one mapping: keep one"):
        load_config(path)


def test_a_huge_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(base(), [f"train.max_steps=[{', '.join(['123456789'] * 5000)}]"])
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "is a folder"), ("", "is empty"), ("# only a comment\n", "is empty")],
)
def test_a_folder_or_an_empty_file_as_the_config(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("kind", ["a named pipe (FIFO)", "a character device", "a folder"])
def test_a_config_that_is_no_regular_file_is_named_as_every_input_is(tmp_path: Path, kind: str) -> None:
    # Before: "config file is not a regular file: PATH" (its own wording; a pipe or a device not named), and
    # a folder "PATH is a folder: give a YAML ..."; now "{path} is {kind}, not a file", as models and images say.
    import os

    from cli_helpers import one_error_line, srfeat_cli

    path = Path("/dev/null") if kind == "a character device" else tmp_path / "stage1.yaml"
    if kind == "a named pipe (FIFO)":
        os.mkfifo(path)
    elif kind == "a folder":
        path.mkdir()
    line = one_error_line(srfeat_cli("train", path, "--dry-run", cwd=tmp_path), only=True)
    assert line == f"ERROR: config {path} is {kind}, not a file: give a YAML training config file, e.g. " + (
        "configs/dev/stage1.yaml"
    )


@pytest.mark.parametrize("key", ["train.epochs", "train.max_steps"])
def test_a_run_length_no_run_reaches_is_refused(key: str) -> None:
    # 10**23 passed; 10**400 epochs was the dry run's OverflowError in the progress schedule's arithmetic
    assert getattr(config_from_dict(base(), [f"{key}={2**53}"]).train, key.split(".")[1]) == 2**53
    for value in (2**53 + 1, 10**23, 10**400):
        with pytest.raises(ConfigError, match=rf"^override {key}: config key {key} must be at most 2\*\*53 ") as error:
            config_from_dict(base(), [f"{key}={value}", "optim.lr_schedule=progress", "optim.lr_milestones=[0.5]"])
        assert "\n" not in str(error.value) and len(str(error.value)) < 250, str(error.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.repeat=1000000000000", "data.repeat must be in 1..100,000"),  # a 24 TB permutation
        # the DataLoader's priming loop ran 10^12 times: the run hung before its first step
        ("data.prefetch_factor=1000000000000", "data.prefetch_factor must be in 1..64"),
        ("train.device=cuda:abc", "train.device must be auto, cpu, cuda or cuda:N"),
        ("train.device=cudax", "train.device must be auto, cpu, cuda or cuda:N"),
        # an empty path is the working directory: these trained on, validated on or wrote into it
        ("data.train_dirs=", r"data.train_dirs\[0\] is an empty path"),
        ("data.train_dirs=[a, ' ']", r"data.train_dirs\[1\] is an empty path"),
        ("validation.dir=", "validation.dir is an empty path: give one \\(null for none\\)"),
        ("train.init_generator=", "train.init_generator is an empty path"),
        ("out_dir=", "out_dir is an empty path"),
    ],
)
def test_values_that_pass_the_type_but_cannot_run(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(base(), [override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # an item of the override's list, and a key of the section it gave, were blamed on the file
        ("optim.lr_milestones=[10, ten]", "override optim.lr_milestones: config key optim.lr_milestones[1] must be"),
        ("train={seed: x}", "override train: config key train.seed must be int"),
        # "must be a list of Literal": what the list may hold was not said
        ("model.discriminators=image", "model.discriminators must be a list of 'image' or 'feature', got 'image'"),
        # a key the override made up on its way was blamed on the file: "stage1.yaml: unknown config key TRAIN"
        ("TRAIN.seed=1", "override TRAIN.seed: unknown config key TRAIN (known in this section: data,"),
        # an empty part of the name: `.lr=1` was blamed on the file ("stage1.yaml: unknown config key  (known ...")
        ("train..seed=1", "override train..seed: a part of the name is empty (before, between or after its dots)"),
        (".lr=1", "override .lr: a part of the name is empty (before, between or after its dots); write section.key"),
        ("optim.=1", "override optim.: a part of the name is empty"),
        ("train.seed.x=1", "override train.seed.x: config key train.seed must be int, got {'x': 1} (dict)"),
        # the checks of one key against another name no "config key": these were blamed on the file
        ("optim.lr_milestones=[10, 10]", "override optim.lr_milestones: optim.lr_milestones lists 10 more than once"),
        ("optim.lr_milestones=[0.5]", "override optim.lr_milestones: optim.lr_milestones must be whole epoch numbers"),
        ("data.hr_patch_size=95", "override data.hr_patch_size: data.hr_patch_size (95) must be a multiple of"),
    ],
)
def test_a_bad_item_of_an_override_is_named_as_the_override(override: str, expected: str) -> None:
    from cli_helpers import one_error_line, srfeat_cli

    line = one_error_line(srfeat_cli("train", "configs/dev/stage1.yaml", override, "--dry-run"))
    assert expected in line and "stage1.yaml" not in line, line


def test_a_bad_value_from_the_command_line_is_named_as_an_override_not_the_files(tmp_path: Path) -> None:
    from cli_helpers import REPO, one_error_line, srfeat_cli

    child = srfeat_cli("train", "configs/dev/stage1.yaml", "optim.lr=nan", "--dry-run")
    line = one_error_line(child)
    assert line == "ERROR: override optim.lr: config key optim.lr must be a finite number, got 'nan'", line
    # The file's own bad value is still the file's.
    config = tmp_path / "stage1.yaml"
    config.write_text((REPO / "configs/dev/stage1.yaml").read_text().replace("lr: 2.0e-4", "lr: .nan", 1))
    with pytest.raises(ConfigError, match=r"stage1\.yaml: config key optim.lr must be a finite number"):
        load_config(config)


def test_a_file_where_a_folder_belongs_is_called_a_file(tmp_path: Path) -> None:
    """Before: 'training folder not found' for a file that is there, as if the path were mistyped."""
    from srfeat.training.config import check_paths

    image = tmp_path / "photo.png"
    image.write_bytes(b"not a folder")
    folder = tmp_path / "images"
    folder.mkdir()
    base = {"out_dir": str(tmp_path / "run"), "data": {"train_dirs": [str(folder)]}}
    for key, value in (("data", {"train_dirs": [str(image)]}), ("validation", {"dir": str(image)})):
        config = config_from_dict({**base, key: value})
        with pytest.raises(ConfigError, match=r"folder is a file, not a folder: .*photo\.png"):
            check_paths(config)


@pytest.mark.parametrize("value", ["1.0", "2.0", "true"])
def test_a_stage_of_another_type_is_refused(value: str) -> None:
    # `stage: 1.0` equals 1 and passed; its run saved stage 1.0, and its --resume was refused as a
    # damaged state ("stage is 1.0, not a number >= 1") after the run had trained
    with pytest.raises(ConfigError, match=f"override stage: config key stage must be one of 1, 2, got {value.title()}"):
        config_from_dict(base(), [f"stage={value}"])
    assert config_from_dict(base(), ["stage=2"]).stage == 2


def test_a_config_path_with_a_tilde_is_read_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_config("~/stage1.yaml")` was "config file not found: ~/stage1.yaml"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "stage1.yaml").write_text(yaml.safe_dump(base()))
    assert load_config("~/stage1.yaml").data.train_dirs == ["images"]


def test_overrides_given_as_one_string_say_to_give_a_list() -> None:
    with pytest.raises(ConfigError, match=r"overrides is a list of key=value strings: give \['optim.lr=1e-4'\]"):
        config_from_dict(base(), "optim.lr=1e-4")  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("device", "gpu", "config key train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("batch_size", "16", "config key train.batch_size must be int, got .16. \\(str\\)"),
        ("batch_size", 0, "config key train.batch_size must be positive"),
    ],
)
def test_train_checks_a_config_changed_in_python_before_anything_runs(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    """`train` took the config as it came: `train.device = "gpu"` was torch's RuntimeError listing twenty
    device types, a batch size of "16" a TypeError from inside the run."""
    from srfeat.training.trainer import train

    (tmp_path / "images").mkdir()
    config = config_from_dict({"data": {"train_dirs": [str(tmp_path / "images")]}})
    setattr(config.train, key, value)
    with pytest.raises(ConfigError, match=message):
        train(config, out_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("milestones", "schedule", "named"),
    [("[10, 15, 10]", "epoch", "10"), ("[3, 3.0]", "epoch", "3"), ("[0.7, 0.7]", "progress", "0.7")],
)
def test_a_milestone_given_twice_is_refused_in_one_line(milestones: str, schedule: str, named: str) -> None:
    """Each milestone multiplies the learning rate by lr_gamma: [10, 10] dropped it by lr_gamma squared at
    epoch 10 (1e-4 to 1e-6), with no word."""
    from cli_helpers import one_error_line, srfeat_cli

    overrides = [f"optim.lr_milestones={milestones}", f"optim.lr_schedule={schedule}"]
    result = srfeat_cli("train", "configs/dev/stage1.yaml", *overrides, "--dry-run")
    line = one_error_line(result)
    assert f"optim.lr_milestones lists {named} more than once" in line and "give it once" in line, line


@pytest.mark.parametrize(
    ("discriminators", "hr_patch_size"),
    [(["image", "feature"], 96), (["feature"], 256), (["feature"], 260), (["image"], 16), (["image"], 20)],
)
def test_one_patch_a_step_is_refused_where_a_discriminators_batch_norm_would_see_one_value(
    discriminators: list[str], hr_patch_size: int
) -> None:
    """`srfeat train configs/dev/stage2.yaml train.batch_size=1` (less memory) failed its first step
    with PyTorch's traceback: the feature discriminator's last BatchNorm saw a 1x1 map of one patch."""
    import torch

    from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator
    from srfeat.archs.vgg import conv5_4_size

    values = base()
    values["stage"] = 2
    values["model"] = {"discriminators": discriminators}
    values["data"]["hr_patch_size"] = hr_patch_size
    values["train"] = {"batch_size": 1}
    builds = {
        "image": lambda: (ImageDiscriminator(hr_patch_size, 8, 16), hr_patch_size, 3),
        "feature": lambda: (FeatureDiscriminator(hr_patch_size, 8, 16), conv5_4_size(hr_patch_size), 512),
    }
    trainable = True
    for name in discriminators:  # what the first step does with each: one patch, in training mode
        network, size, channels = builds[name]()
        try:
            network.train()(torch.rand(1, channels, size, size))
        except ValueError as error:
            assert "Expected more than 1 value per channel" in str(error)
            trainable = False
    if trainable:
        assert config_from_dict(values).train.batch_size == 1
    else:
        with pytest.raises(ConfigError, match="stage 2 with train.batch_size 1 needs data.hr_patch_size above"):
            config_from_dict(values)


def test_one_patch_a_step_with_the_dev_stage_2_config_is_one_line() -> None:
    from cli_helpers import one_error_line, srfeat_cli

    error = one_error_line(srfeat_cli("train", REPO / "configs/dev/stage2.yaml", "train.batch_size=1", "--dry-run"))
    assert error.endswith(
        "needs data.hr_patch_size above 256, got 96: the feature discriminator's BatchNorm would see a 1x1 map, "
        "one value per channel, which it cannot normalise; use train.batch_size 2 or more, or data.hr_patch_size "
        "260 or more"
    ), error


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1" + "0" * 5000, "line 2, column 14: not valid YAML: a number of 5,001 digits"),
        ("2026-02-30", "line 2, column 14: not valid YAML: '2026-02-30' reads as a date that does not exist"),
    ],
    ids=["5001 digits", "30 February"],
)
def test_a_scalar_python_cannot_convert_is_a_yaml_error_with_its_line(tmp_path: Path, value: str, message: str) -> None:
    """PyYAML reads such scalars with int() and datetime(): their ValueError (Python's 4,300-digit limit,
    with its advice to raise it; "day is out of range for month") was a traceback."""
    path = tmp_path / "config.yaml"
    path.write_text(f"train:\n  max_steps: {value}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError) as caught:
        config_from_dict(base(), [f"train.max_steps={value}"])
    error = str(caught.value)
    assert error.startswith("override 'train.max_steps=") and "value is not valid YAML" in error, error
    assert message.split("YAML: ")[1] in error and len(error) < 200, error
