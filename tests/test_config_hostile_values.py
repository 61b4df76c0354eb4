"""Hostile values in a training config file (huge, infinite, NaN, of the wrong type): each key refuses
them when the file is read, with one line that names it; none is left to fail (or pass) in the run."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from srfeat.errors import ConfigError
from srfeat.training import config as config_module
from srfeat.training.config import config_from_dict, load_config

SECTIONS = {
    "model": config_module.ModelConfig,
    "data": config_module.DataConfig,
    "optim": config_module.OptimConfig,
    "train": config_module.TrainConfig,
    "validation": config_module.ValidationConfig,
}


def keys_of(*types: object) -> list[str]:
    """Every `section.key` whose type is one of `types` (read from the dataclasses: a new key is covered)."""
    return [
        f"{section}.{field.name}"
        for section, cls in SECTIONS.items()
        for field in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[field.name] in types
    ]


INT_KEYS = keys_of(int, int | None)
FLOAT_KEYS = keys_of(float, float | None)
BOOL_KEYS = keys_of(bool)
NULLABLE = set(keys_of(int | None, float | None))
ZERO_ALLOWED = {"data.num_workers", "train.seed", "validation.sample_images"}  # 0: none (or seed 0)
# YAML text, as a user writes it; 10**400 is an int to YAML and past a float's range
HUGE = "1" + "0" * 400
WRONG_FOR_INT = [".inf", "-.inf", ".nan", "-0.0", "3.0", "3.5", "true", "abc", "[1, 2]", "{a: 1}", "-1", "0", HUGE]
WRONG_FOR_FLOAT = [".inf", "-.inf", ".nan", "1e400", "true", "abc", "[1.5]", "{a: 1}", HUGE]
WRONG_FOR_BOOL = ["1", "0", "abc", "null", "[true]", ".nan"]


def base() -> dict:
    return {"data": {"train_dirs": ["images"]}}


def config_file(tmp_path: Path, key: str, text: str) -> Path:
    """A config of the defaults (one training folder) with `key` set to the YAML `text`, written as is."""
    section, name = key.split(".")
    values = base()
    values.setdefault(section, {})[name] = "VALUE_HERE"
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(values).replace("VALUE_HERE", text))
    return path


def refusal(path: Path, limit: int = 250) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert len(message.removeprefix(f"{path}: ")) < limit, message  # a 401-digit value is shown cut short
    return message


def test_the_keys_are_found() -> None:
    assert {"train.log_every", "validation.max_images", "data.num_workers"} <= set(INT_KEYS)
    assert {"optim.lr", "train.ema_decay", "train.max_minutes"} <= set(FLOAT_KEYS)
    assert "data.pin_memory" in BOOL_KEYS


@pytest.mark.parametrize("key", INT_KEYS)
def test_a_whole_number_key_refuses_what_is_not_one(tmp_path: Path, key: str) -> None:
    wrong = WRONG_FOR_INT if key in NULLABLE else [*WRONG_FOR_INT, "null"]
    for text in wrong:
        if (text == HUGE and key == "validation.max_images") or (text == "0" and key in ZERO_ALLOWED):
            continue  # the first 10**400 images of a folder are all of them (below)
        message = refusal(config_file(tmp_path, key, text))
        assert f"config key {key} " in message, (text, message)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_a_number_key_refuses_what_is_not_a_finite_number(tmp_path: Path, key: str) -> None:
    wrong = WRONG_FOR_FLOAT if key in NULLABLE else [*WRONG_FOR_FLOAT, "null"]
    for text in wrong:
        message = refusal(config_file(tmp_path, key, text))
        assert f"config key {key} " in message, (text, message)


@pytest.mark.parametrize("key", BOOL_KEYS)
def test_a_flag_refuses_what_is_not_true_or_false(tmp_path: Path, key: str) -> None:
    for text in WRONG_FOR_BOOL:
        message = refusal(config_file(tmp_path, key, text))
        assert f"config key {key} must be bool" in message, (text, message)


@pytest.mark.parametrize("key", ["train.log_every", "train.checkpoint_every", "validation.every"])
def test_a_step_interval_no_run_reaches_is_refused(tmp_path: Path, key: str) -> None:
    # 10**30, 2**63 and 10**400 passed, where train.epochs and train.max_steps beside them stop at 2**53
    section, name = key.split(".")
    assert getattr(getattr(config_from_dict({**base(), section: {name: 2**53}}), section), name) == 2**53
    for text in (str(2**53 + 1), str(10**30), str(2**63), HUGE):
        message = refusal(config_file(tmp_path, key, text))
        assert f"config key {key} must be in 1..2**53 (9,007,199,254,740,992)" in message, message
        assert "saves at its last step anyway" in message, message
    with pytest.raises(ConfigError, match=rf"^override {key}: config key {key} must be in 1\.\.2\*\*53 "):
        config_from_dict(base(), [f"{key}={10**30}"])


def test_validation_max_images_past_any_folder_means_all_of_them(tmp_path: Path) -> None:
    # a cap, compared with the images read so far: no arithmetic, no allocation by it (a run with it validates all)
    config = load_config(config_file(tmp_path, "validation.max_images", HUGE))
    assert config.validation.max_images == 10**400


@pytest.mark.parametrize(
    ("key", "text", "named"),
    [
        ("train.device", "x" * 5000, "config key train.device must be auto, cpu, cuda or cuda:N, got 'xxx"),
        ("optim.lr_milestones", "[" + ", ".join(["0.5"] * 5000) + "]", "must be whole epoch numbers >= 1"),
        ("train." + "k" * 5000, "1", "unknown config key train.kkk"),
    ],
    ids=["device", "milestones", "key"],
)
def test_a_long_value_or_key_is_shown_cut_short(tmp_path: Path, key: str, text: str, named: str) -> None:
    # each was quoted whole: a message of 5,000 characters and more
    # (an unknown key's message lists the section's keys: train's are 300 characters)
    assert named in refusal(config_file(tmp_path, key, text), limit=450)


def test_a_built_config_is_checked_as_a_file_is() -> None:
    from srfeat.training.config import check_built

    config = config_from_dict(base())
    config.train.log_every = 2**63
    with pytest.raises(ConfigError, match=r"config key train\.log_every must be in 1\.\.2\*\*53"):
        check_built(config)
