"""The documentation names what exists: every command-line option in the README, only tests, scripts,
configs and config keys that are there, and `--help` ranges that the commands enforce."""

from __future__ import annotations

import argparse
import dataclasses
import re
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


def config_keys() -> set[str]:
    keys: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for field in dataclasses.fields(cls):
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")
            else:
                keys.add(prefix + field.name)

    walk(TrainingConfig, "")
    return keys


def test_config_keys_named_in_the_docs_and_configs_exist() -> None:
    keys = config_keys()
    assert {"train.ema_decay", "model.discriminators", "validation.every"} <= keys
    # `train.batch_size`, not `validation.py` (a file) or `model.discriminators=[image]`'s value
    pattern = re.compile(r"(?<![\w./-])((?:model|data|optim|train|validation)\.[a-z_0-9]+)(?![\w(])(?!\.\w)")
    named = {
        (name, key) for name in DOCS + CONFIGS + ["srfeat/training/config.py"] for key in pattern.findall(read(name))
    }
    assert len({key for _, key in named}) > 40  # the pattern finds them
    unknown = {
        f"{name}: {key}" for name, key in named if key not in keys and key.rsplit(".", 1)[1] not in ("py", "json")
    }
    assert not unknown, f"config keys that srfeat/training/config.py does not define: {sorted(unknown)}"


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
