"""The documentation names what exists: every command-line option in the README, only tests, scripts,
configs and config keys that are there, and `--help` ranges that the commands enforce."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize
from pathlib import Path

from cli_helpers import srfeat_cli

from srfeat.cli import build_parser
from srfeat.training.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
# The prose a user or contributor reads; configs/ comments too, for the config keys they name.
DOCS = ["README.md", "CONTRIBUTING.md", "docs/fidelity.md", "docs/gpu_plan.md", "docs/ablation.md"]
CONFIGS = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "configs").glob("*/*.yaml"))


def read(name: str) -> str:
    return (ROOT / name).read_text()


def command_options() -> dict[str, list[str]]:
    """Each command's long options ('' for `srfeat`'s own), as its parser defines them."""
    parser = build_parser()
    options = {"": [o for action in parser._actions for o in action.option_strings]}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in subparsers.choices.items():
        options[name] = [o for action in subparser._actions for o in action.option_strings]
    return {name: [o for o in found if o.startswith("--") and o != "--help"] for name, found in options.items()}


def test_readme_names_every_option_of_every_command() -> None:
    readme = read("README.md")
    options = command_options()
    assert len(options) == 9 and "--tile-pad" in options["upscale"]  # the parsers were found
    missing = [
        f"srfeat {name} {option}".replace("  ", " ")
        for name, found in options.items()
        for option in found
        if not re.search(re.escape(option) + r"(?![\w-])", readme)
    ]
    assert not missing, f"the README does not mention: {missing}"


def config_sections() -> dict[str, type]:
    """Each config dataclass by the dotted prefix of its keys ('' for `TrainingConfig`'s own), from the
    dataclasses themselves: a section's fields are keys wherever the code that checks them lives."""
    sections: dict[str, type] = {}

    def walk(cls: type, prefix: str) -> None:
        sections[prefix] = cls
        for field in dataclasses.fields(cls):
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")

    walk(TrainingConfig, "")
    return sections


def config_keys() -> set[str]:
    return {
        prefix + field.name
        for prefix, cls in config_sections().items()
        for field in dataclasses.fields(cls)
        if f"{prefix}{field.name}." not in config_sections()
    }


def srfeat_strings_and_comments() -> dict[str, str]:
    """The text of every string and comment of every module under srfeat/ (not its code: `data.shape` there
    is an array's), by module: where a message or a comment names a config key."""
    texts: dict[str, str] = {}
    for path in sorted((ROOT / "srfeat").rglob("*.py")):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        # f-strings are STRING tokens up to Python 3.11, FSTRING_MIDDLE pieces from 3.12
        kinds = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
        texts[str(path.relative_to(ROOT))] = "\n".join(token.string for token in tokens if token.type in kinds)
    return texts


def test_config_keys_named_in_the_docs_configs_and_code_exist() -> None:
    """A key the docs, a config's comments, or an error message or comment anywhere in srfeat/ names
    (config_checks.py's range checks, networks.py's shape checks, ...) is a field of the config."""
    keys = config_keys()
    assert {"train.ema_decay", "model.discriminators", "validation.every", "out_dir"} <= keys
    # `train.batch_size`, not `validation.py` (a file) or `model.discriminators=[image]`'s value;
    # `model.discriminator_*` stands for the keys it starts
    pattern = re.compile(r"(?<![\w./-])((?:model|data|optim|train|validation)\.[a-z_0-9]+\*?)(?![\w(])(?!\.\w)")
    texts = {name: read(name) for name in DOCS + CONFIGS} | srfeat_strings_and_comments()
    named = {(name, key) for name, text in texts.items() for key in pattern.findall(text)}
    in_checks = {key for name, key in named if name == "srfeat/training/config_checks.py"}
    assert len(in_checks) > 30 and len({key for _, key in named}) > 40  # the pattern finds them
    unknown = {
        f"{name}: {key}"
        for name, key in named
        if not (key[:-1] in {k[: len(key) - 1] for k in keys} if key.endswith("*") else key in keys)
        and key.rsplit(".", 1)[1] not in ("py", "json", "pkl", "onnx")  # file names
    }
    assert not unknown, f"config keys that srfeat/training/config.py does not define: {sorted(unknown)}"


def test_every_config_key_is_documented_where_it_is_defined() -> None:
    """The README sends the reader to srfeat/training/config.py, where each field has its comment above it
    (one comment may cover the fields that follow it, as Adam's beta1 and beta2)."""
    undocumented = []
    for prefix, cls in config_sections().items():
        lines = inspect.getsource(cls).splitlines()
        for field in dataclasses.fields(cls):
            at = next(i for i, line in enumerate(lines) if re.match(rf"\s+{field.name}: ", line))
            above = at - 1
            while re.match(r"\s+\w+: ", lines[above]):  # a field of the same comment
                above -= 1
            if not lines[above].strip().startswith("#") and f"{prefix}{field.name}." not in config_sections():
                undocumented.append(prefix + field.name)
    assert len(config_keys()) > 50
    assert not undocumented, f"config keys without their comment in srfeat/training/config.py: {undocumented}"


def test_files_named_in_the_docs_exist() -> None:
    missing = set()
    for name in DOCS + CONFIGS:
        text = read(name)
        for test_file in re.findall(r"\btest_\w+\.py", text):
            if not (ROOT / "tests" / test_file).is_file():
                missing.add(f"{name}: tests/{test_file}")
        for path in re.findall(r"(?<![\w/.-])((?:scripts|configs)/[\w/.-]+\.(?:py|sh|yaml))", text):
            if not (ROOT / path).is_file():
                missing.add(f"{name}: {path}")
        for module in re.findall(r"python3? -m (benchmarks\.\w+)", text):
            if not (ROOT / (module.replace(".", "/") + ".py")).is_file():
                missing.add(f"{name}: {module}")
    assert not missing, f"the docs name files that are not there: {sorted(missing)}"


def test_contributing_one_test_command_names_a_test_that_exists() -> None:
    nodes = re.findall(r"pytest -q (tests/\w+\.py)::(\w+)", read("CONTRIBUTING.md"))
    assert nodes
    for path, test in nodes:
        assert re.search(rf"^def {test}\(", read(path), re.MULTILINE), f"CONTRIBUTING.md runs {path}::{test}: not there"


def test_prepare_help_states_the_workers_range_the_command_enforces() -> None:
    stated = re.search(r"--workers N\s+parallel\s+processes,\s+1\.\.(\d+)", srfeat_cli("prepare", "--help").stdout)
    assert stated, "srfeat prepare --help does not give --workers' range"
    refused = srfeat_cli("prepare", "missing_src", "missing_out", "--workers", str(int(stated[1]) + 1))
    assert refused.returncode != 0
    assert f"--workers must be in 1..{stated[1]} " in refused.stderr
