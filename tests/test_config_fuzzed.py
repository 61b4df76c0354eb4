"""What a mutation fuzz of training configs found (scripts/fuzz_configs.py): a YAML tag on a value it does not fit
(`!!float x`, `!!bool maybe`, `!!int ''`, `!!timestamp x`, `!!map 1`) and a path too long for the system (a name of
300 bytes, a path of 5,000) were tracebacks of `srfeat train --dry-run`; each is now one line that says what to fix."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import one_error_line, run_child, srfeat_cli

from srfeat.errors import ConfigError
from srfeat.training.config import TrainingConfig, check_built, load_config

EXAMPLE = "['optim.lr=2e-4', 'train.batch_size=8']"


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fuzzed.yaml"
    path.write_text(f"data:\n  train_dirs: [images]\n{text}\n")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim:\n  lr: !!float x", "'x' is tagged !!float but is not a number: remove the tag"),
        ("optim:\n  lr: !!float ''", "'' is tagged !!float but is not a number"),
        ("data2: !<tag:yaml.org,2002:float> .", "'.' is tagged !!float but is not a number"),
        ("train:\n  compile: !!bool maybe", "'maybe' is tagged !!bool but is not true or false"),
        ("train:\n  seed: !!int ''", "'' is tagged !!int but is not an integer"),
        ("train:\n  seed: !!int 0x", "'0x' is tagged !!int but is not an integer"),
        ("stage: !!timestamp x", "'x' is tagged !!timestamp but is not a date"),
        ("model: !!map 1", "tagged !!map but not a mapping (scalar): remove the tag"),
        ("model: !!set [image]", "tagged !!set but not a mapping (sequence): remove the tag"),
        # these three said only "could not determine a constructor for the tag ..." and "found undefined alias"
        ("stage: !custom 3", "the tag !custom is not read in a training config: remove it"),
        ("stage: !!python/object:os.system ls", "the tag !!python/object:os.system is not read in a training config"),
        ("stage: *base", "found undefined alias 'base': give the anchor &base before its first *base, or write"),
    ],
)
def test_a_yaml_tag_on_a_value_it_does_not_fit_is_one_line_with_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = written(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path} line ") and "\n" not in str(error.value), error.value
    assert message in str(error.value), error.value


def test_a_yaml_tag_that_does_not_fit_in_an_override_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"override 'optim.lr=!!float x': value is not valid YAML \('x' is tagged"):
        load_config(written(tmp_path, ""), ["optim.lr=!!float x"])


def test_a_tagged_value_through_the_command_line_is_one_error_line(tmp_path: Path) -> None:
    child = srfeat_cli("train", written(tmp_path, "train:\n  compile: !!bool maybe"), "--dry-run", cwd=tmp_path)
    assert "'maybe' is tagged !!bool but is not true or false: remove the tag" in one_error_line(child)
    child = srfeat_cli("train", written(tmp_path, "stage: !custom 2"), "--dry-run", "optim.lr=!py 1", cwd=tmp_path)
    assert "line 3, column 8: not valid YAML: the tag !custom is not read in a training config: remove it" in (
        one_error_line(child)
    )
    child = srfeat_cli("train", written(tmp_path, ""), "--dry-run", "optim.lr=!py 1", cwd=tmp_path)
    assert "override 'optim.lr=!py 1': value is not valid YAML (the tag !py is not read in a training config: " in (
        one_error_line(child)
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("out_dir", "x" * 5000, "config key out_dir is too long for a path: it is 5,000 bytes"),
        ("out_dir", "x/" * 2100, "config key out_dir is too long for a path: it is 4,199 bytes"),  # no last /
        ("datasets_dir", "d" * 300, "config key datasets_dir is too long for a path: a name in it is 300 bytes"),
        ("validation.dir", "v" * 256, "config key validation.dir is too long for a path: a name in it is 256 bytes"),
        ("train.init_generator", "g" * 300, "config key train.init_generator is too long"),
    ],
    ids=["long out_dir", "deep out_dir", "long datasets_dir", "long validation.dir", "long init_generator"],
)
def test_a_path_too_long_for_the_system_is_refused_when_read(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    values: dict = {"data": {"train_dirs": ["{datasets_dir}/images"]}}
    section, _, name = key.rpartition(".")
    (values.setdefault(section, {}) if section else values)[name] = value
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value) and "give a shorter one" in str(error.value), error.value


def test_a_path_too_long_is_one_error_line_of_the_dry_run(tmp_path: Path) -> None:
    """Was OSError's traceback (ENAMETOOLONG) from the run folder's first `exists()`."""
    (tmp_path / "images").mkdir()
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({"data": {"train_dirs": ["images"]}, "out_dir": "x" * 5000}))
    error = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert "config key out_dir is too long for a path: it is 5,000 bytes" in error, error
    error = one_error_line(srfeat_cli("train", config, "--dry-run", "out_dir=" + "y/" * 2100, cwd=tmp_path))
    assert "override out_dir: config key out_dir is too long for a path: it is 4,199 bytes" in error, error


def test_an_out_path_too_long_for_the_system_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    config = tmp_path / "short.yaml"
    config.write_text(yaml.safe_dump({"data": {"train_dirs": ["images"]}}))
    child = srfeat_cli("train", config, "--dry-run", "--out", "z/" * 2100, cwd=tmp_path)
    error = one_error_line(child, returncode=2)  # a usage error, as argparse's own
    assert "--out: it is 4,200 bytes, more than a path can have (4,095): give a shorter one" in error, error


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([1], "override 1 is not a key=value string (int): overrides are strings such as " + EXAMPLE),
        ([None], "override None is not a key=value string (NoneType): overrides are strings such as " + EXAMPLE),
        ([b"optim.lr=1"], "override b'optim.lr=1' is not a key=value string (bytes): overrides are strings such as "),
        (5, f"overrides is a list of key=value strings, e.g. {EXAMPLE}, got int 5"),
        ({"optim.lr=1"}, f"overrides is a list of key=value strings, e.g. {EXAMPLE}, got set {{'optim.lr=1'}}"),
        ((item for item in ["optim.lr=1"]), f"overrides is a list of key=value strings, e.g. {EXAMPLE}, got generator"),
        ("", "overrides is a list of key=value strings: give None (no overrides)"),
    ],
    ids=["int", "None", "bytes", "5", "set", "generator", "empty string"],
)
def test_overrides_that_are_not_strings_are_one_config_error(tmp_path: Path, overrides: object, message: str) -> None:
    """Were AttributeError ('int' object has no attribute 'partition') and TypeError from Python."""
    with pytest.raises(ConfigError) as error:
        load_config(written(tmp_path, ""), overrides)  # pyright: ignore[reportArgumentType]
    assert str(error.value).startswith(message), error.value


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a\x00b", r"config 'a\x00b': it holds '\x00', which no file name can hold"),
        ("a\ud800b", r"config 'a\ud800b': it holds '\ud800', which no file name can hold"),
        ("a" * 300, "a name in it is 300 bytes, more than the"),
        ("a/" * 2100, "it is 4,199 bytes, more than a path can have (4,095)"),
    ],
    ids=["NUL", "surrogate", "long name", "long path"],
)
def test_a_config_path_no_file_can_have_is_one_config_error(path: str, message: str) -> None:
    """Were ValueError (embedded null byte), UnicodeEncodeError and OSError (File name too long) from Python."""
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value) and "give a YAML training config file" in str(error.value), error.value


def test_check_built_refuses_a_section_that_is_not_its_dataclass_and_a_config_that_holds_itself() -> None:
    config = TrainingConfig()
    config.model = {"scale": 4}  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(ConfigError, match=r"^config.model must be a ModelConfig, got dict$"):
        check_built(config)  # was check's AttributeError ('dict' object has no attribute 'scale')
    config = TrainingConfig()
    config.optim.lr_milestones = [config]  # pyright: ignore[reportAttributeAccessIssue]
    with pytest.raises(ConfigError, match="the config holds itself among its values"):
        check_built(config)  # was RecursionError


@pytest.mark.parametrize(
    ("overrides", "suggested"),
    [
        ({"optim.lr": 2e-4}, ["optim.lr=0.0002"]),
        (
            {"optim": {"lr": 2e-4, "lr_milestones": [1, 2]}, "train.device": "cpu"},
            ["optim.lr=0.0002", "optim.lr_milestones=[1, 2]", "train.device=cpu"],
        ),
    ],
    ids=["dotted keys", "nested sections"],
)
def test_overrides_given_as_a_dict_are_refused_with_the_list_to_give(
    tmp_path: Path, overrides: dict, suggested: list[str]
) -> None:
    """Was "overrides is a list of key=value strings, got dict {...}": nothing said what to give instead."""
    config = written(tmp_path, "")
    with pytest.raises(ConfigError) as error:
        load_config(config, overrides)  # pyright: ignore[reportArgumentType]
    message = str(error.value)
    assert message.startswith("overrides is a list of key=value strings, not a dict: give ["), message
    given = ast.literal_eval(message.split("give ", 1)[1].split(" (dotted names")[0])
    assert given == suggested, message
    built = load_config(config, given)  # what it says to give is taken, with the dict's values
    assert built.optim.lr == 2e-4
    assert built.optim.beta1 == TrainingConfig().optim.beta1  # a section's keys one by one: the rest kept


@pytest.mark.parametrize(
    ("override", "shown", "advice"),
    [
        ("\udcff=1", "override \\xff: its name holds bytes that are not UTF-8 text (\\xff)", "type the key again"),
        ("opt\udcffim.lr=1", "override opt\\xffim.lr: its name holds bytes that are not UTF-8 text", "e.g. optim.lr="),
        ("optim.lr=\udcff", "override optim.lr: config key optim.lr must be float, got '\\xff' (str)", "must be"),
        ("optim.lr=1\udce9\udcff", "got '1\\xe9\\xff' (str)", "must be float"),
        ("\udcff", "override '\\xff' is not key=value", "e.g. optim.lr=2e-4"),
    ],
    ids=["key", "byte in a key", "value", "two bytes in a value", "no ="],
)
def test_an_override_of_bytes_that_are_not_utf8_shows_them_as_the_shell_writes_them(
    tmp_path: Path, override: str, shown: str, advice: str
) -> None:
    """`srfeat train CONFIG $'\\xff'=1` said "override \\udcff: unknown config key \\udcff", a character no shell
    or editor writes for the byte the user typed; its bytes are now `\\xff`, and a key's say to type it again."""
    (tmp_path / "images").mkdir()
    child = srfeat_cli("train", written(tmp_path, ""), "--dry-run", override, cwd=tmp_path)
    error = one_error_line(child)
    assert shown in error and advice in error and "\\udc" not in error, error


def test_a_backslash_typed_before_udc_in_an_override_is_shown_as_typed(tmp_path: Path) -> None:
    """Only the bytes are rewritten: the text `\\udcff` typed (a backslash, then letters) stays as typed."""
    with pytest.raises(ConfigError) as error:
        load_config(written(tmp_path, ""), ["optim.lr=\\udcff"])
    assert "got '\\\\udcff' (str)" in str(error.value), error.value


def test_a_small_fuzz_of_every_shipped_config_finds_nothing(tmp_path: Path) -> None:
    """scripts/fuzz_configs.py seeds from all 8 shipped configs (its first run used 2); 16 cases spread evenly over
    its list, each through `srfeat train --dry-run` or load_config in a child: no traceback, hang or second line."""
    child = run_child([sys.executable, "scripts/fuzz_configs.py", tmp_path, "--budget", "16"], timeout=120)
    lines = child.stdout.splitlines()
    assert child.returncode == 0 and lines[0].startswith("8 seed configs: configs/authors/stage1.yaml"), child.stdout
    for seed in ["authors/stage2", "dev/stage1", "dev/stage1_gpu", "dev/stage2", "dev/stage2_gpu", "paper/stage2"]:
        assert f"configs/{seed}.yaml" in lines[0], lines[0]
    counts = json.loads(lines[-1])  # a hostile value is read twice: by the dry run and by load_config
    assert counts == {"cases": counts["cases"], "ok": counts["cases"]} and counts["cases"] >= 16, child.stdout
    seeds = {json.loads(line)["seed"] for line in (tmp_path / "results.jsonl").read_text().splitlines()}
    assert len(seeds - {""}) == 8, seeds  # the sample reaches every seed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\tstage: 1", "found character '\\t' that cannot start any token: indent with spaces, not tabs"),
        ("? [a, b]\n: 1", "found unhashable key: a key is a name; a list or a mapping cannot be one"),
        ("---\nstage: 1", "but found another document: a config is one document; remove the second '---' and what"),
        ("stage: 1\x07", "it holds '\\x07', which YAML does not allow: remove it"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(5)),
            "(an alias bomb?): not a training config; write its values out, as configs/dev/stage1.yaml does",
        ),
    ],
    ids=["tab", "list as a key", "control character", "alias bomb", "two documents"],
)
def test_a_yaml_problem_says_what_to_do(tmp_path: Path, text: str, message: str) -> None:
    """Were PyYAML's words alone ("found unhashable key", "unacceptable character #x0007: special characters are
    not allowed"), which say what is wrong and not what to do."""
    with pytest.raises(ConfigError) as error:
        load_config(written(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value), error.value


def test_a_yaml_version_line_and_a_control_character_in_an_override_say_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "versioned.yaml"
    path.write_text("%YAML 9.9\n---\ndata:\n  train_dirs: [images]\n")
    error = one_error_line(srfeat_cli("train", path, "--dry-run", cwd=tmp_path))
    assert "found incompatible YAML document (version 1.* is required): remove the %YAML line" in error, error
    child = srfeat_cli("train", written(tmp_path, ""), "--dry-run", "model.scale=4\x01", cwd=tmp_path)
    error = one_error_line(child)  # was "value is not valid YAML (ReaderError)"
    assert (
        "override 'model.scale=4\\x01': value is not valid YAML (it holds '\\x01', which YAML does not allow: "
        "remove it)" in error
    ), error


def test_a_missing_validation_folder_says_how_to_give_one_or_none(tmp_path: Path) -> None:
    """Was "validation folder not found: Set5 (config key validation.dir)", with no word of what to do."""
    (tmp_path / "images").mkdir()
    child = srfeat_cli("train", written(tmp_path, "validation:\n  dir: Set5"), "--dry-run", cwd=tmp_path)
    error = one_error_line(child)
    assert error.endswith(
        "validation folder not found: Set5 (config key validation.dir; give its folder: "
        "validation.dir=/path/to/Set5, or null for none)"
    ), error
    child = srfeat_cli(
        "train", written(tmp_path, "validation:\n  dir: Set5"), "--dry-run", "validation.dir=null", cwd=tmp_path
    )
    # what it says to give is taken: the dry run goes on to the (empty) training folder
    assert "validation folder" not in child.stderr and "training data: 0 image(s)" in child.stderr, child.stderr


def test_an_override_below_a_value_says_what_to_write(tmp_path: Path) -> None:
    """`optim.lr.x=1` (lr set in the file) was "override optim.lr.x: lr is not a section"."""
    config = written(tmp_path, "optim:\n  lr: 1.0e-4")
    error = one_error_line(srfeat_cli("train", config, "--dry-run", "optim.lr.x=1", cwd=tmp_path))
    assert error.endswith("override optim.lr.x: optim.lr is a value, not a section: write optim.lr=VALUE"), error
