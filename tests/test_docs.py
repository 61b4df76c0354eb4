"""The documentation names what exists: every command-line option in the README, only tests, scripts,
configs and config keys that are there, only options that its `srfeat` and scripts/ command lines
have, the scripts' environment variables with their defaults, code it quotes, and `--help` ranges
that the commands enforce."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

from cli_helpers import srfeat_cli

from srfeat.cli import build_parser
from srfeat.training.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
# The prose a user or contributor reads; configs/ comments too, for the config keys they name.
DOCS = [
    "README.md",
    "CONTRIBUTING.md",
    "docs/fidelity.md",
    "docs/gpu_plan.md",
    "docs/ablation.md",
    "benchmarks/README.md",
]
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
        for path in re.findall(
            r"(?<![\w/.-])((?:scripts|configs)/[\w/.-]+\.(?:py|sh|yaml)|docs/training/[\w.-]+\.jsonl)", text
        ):
            if not (ROOT / path).is_file():
                missing.add(f"{name}: {path}")
        # recorded benchmark runs: `results/epyc-zen4-2core-shared-{1thread,2threads}.json` is two files
        for stem, choices, rest in re.findall(r"(?<![\w.-])results/([\w-]*)(?:\{([\w,-]+)\})?([\w-]*)\.json", text):
            for choice in choices.split(","):
                if not (ROOT / "benchmarks" / "results" / f"{stem}{choice}{rest}.json").is_file():
                    missing.add(f"{name}: benchmarks/results/{stem}{choice}{rest}.json")
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


def command_lines(text: str, program: str) -> list[str]:
    """The arguments of each `PROGRAM ...` command line of a doc, from its code blocks (a line
    continued with `\\` joined to the next) and its inline code, up to a pipe, `&&`, `;`, a
    redirection or a comment."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += [
        span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    ]
    # after `VAR=value` settings too: `OMP_WAIT_POLICY=active python3 -m benchmarks.inference --size 64`
    start = r"(?:^|&&|[;|(]|\$ )\s*(?:[A-Z][A-Z0-9_]*=\S+\s+)*" + re.escape(program) + r" "
    return [found.strip() for line in lines for found in re.findall(start + r"([^|;&#>]*)", line)]


def flags(arguments: str) -> list[str]:
    """The options in a command line's arguments (`--json`, `-o`), not a value's dashes (`5e-5`, `a-b.png`)."""
    return re.findall(r"(?<![\w=/.<-])(--?[a-zA-Z][\w-]*)", arguments)


def test_every_srfeat_command_line_in_the_docs_uses_options_its_command_has() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unknown = []
    found = 0
    top_level = {o for action in parser._actions for o in action.option_strings}
    for name in DOCS:
        for line in command_lines(read(name), "srfeat"):
            while line.startswith("-") and line.split()[0] in top_level:  # `srfeat --verbose COMMAND ...`
                line = line.partition(" ")[2]
            command, _, arguments = line.rstrip(").,").partition(" ")  # `(srfeat convert)` in prose too
            if not command or command == "COMMAND":
                continue
            if command not in subparsers.choices:
                unknown.append(f"{name}: srfeat {command}")
                continue
            options = {o for action in subparsers.choices[command]._actions for o in action.option_strings}
            unknown += [f"{name}: srfeat {command} {flag}" for flag in flags(arguments) if flag not in options]
            found += 1
    assert found > 50  # the command lines were found
    assert not unknown, f"the docs give options (or commands) that srfeat does not have: {unknown}"


def python3_options_in_the_docs(target: str) -> dict[str, set[tuple[str, str]]]:
    """The (doc, option) pairs of the docs' `python3 TARGET ...` command lines, by the TARGET that the
    regular expression `target` catches (`scripts/ship_weights.py`, `-m benchmarks.memory`)."""
    used: dict[str, set[tuple[str, str]]] = {}
    for name in DOCS:
        for line in command_lines(read(name), "python3"):
            found = re.match(rf"({target})\b(.*)", line)
            if found:
                used.setdefault(found[1], set()).update((name, flag) for flag in flags(found[2]))
    return used


def options_missing_from_help(used: dict[str, set[tuple[str, str]]]) -> list[str]:
    """`doc: python3 TARGET --option` for each option that TARGET's --help does not list."""
    unknown = []
    for target, uses in sorted(used.items()):
        if not uses:
            continue
        result = subprocess.run(
            [sys.executable, *target.split(), "--help"], cwd=ROOT, check=False, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{target} --help: {result.stderr}"
        unknown += [
            f"{name}: python3 {target} {flag}"
            for name, flag in uses
            if not re.search(re.escape(flag) + r"(?![\w-])", result.stdout)
        ]
    return sorted(unknown)


def test_every_script_command_line_in_the_docs_uses_options_the_script_has() -> None:
    used = python3_options_in_the_docs(r"scripts/\w+\.py")
    assert {"scripts/ship_weights.py", "scripts/better_on_all_sets.py"} <= used.keys()
    unknown = options_missing_from_help(used)
    assert not unknown, f"the docs give script options that the scripts do not have: {unknown}"


def test_every_benchmark_command_line_in_the_docs_uses_options_the_benchmark_has() -> None:
    """`python3 -m benchmarks.memory --sizes 200`: each option is one that benchmark's --help lists."""
    used = python3_options_in_the_docs(r"-m benchmarks\.\w+")
    assert {"-m benchmarks.run_all", "-m benchmarks.memory", "-m benchmarks.onnx_runtime"} <= used.keys()
    unknown = options_missing_from_help(used)
    assert not unknown, f"the docs give benchmark options that the benchmarks do not have: {unknown}"


def test_environment_variables_the_docs_name_are_read_by_the_scripts_with_the_stated_defaults() -> None:
    """`STAGE1_PATCH` (256), `ABLATION_STEPS`, 3,000 by default, `PLAN_MINUTES=9` (the default):
    each is a `${NAME:-default}` of scripts/*.sh, with that default."""
    scripts = "\n".join(path.read_text() for path in sorted((ROOT / "scripts").glob("*.sh")))
    defaults = dict(re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", scripts))
    wrong = []
    stated = 0
    for name in ("docs/gpu_plan.md", "docs/ablation.md"):
        text = read(name)
        wrong += [
            f"{name}: {v} is not read" for v in re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)", text) if v not in defaults
        ]
        values = re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`(?:\s\(|,\s)(\d[\d.,e-]*\d|\d)", text)
        values += re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)=([^`\s]+)`\s\(the default\)", text)
        for variable, value in values:
            stated += 1
            if defaults.get(variable) != value.replace(",", ""):
                wrong.append(f"{name}: {variable} defaults to {defaults.get(variable)!r}, not {value}")
    assert stated >= 6  # the pattern finds them
    assert not wrong, wrong


def test_code_the_docs_quote_exists() -> None:
    """A dotted name (`srfeat.cli.write_output`) imports; a lint or type-check comment the docs give as the
    project's way (`# noqa: T201`) is one the code carries."""
    missing = []
    for name in DOCS:
        text = read(name)
        for dotted in sorted(set(re.findall(r"(?<![\w./-])srfeat(?:\.\w+)+", text))):
            parts = dotted.split(".")
            found = next(i for i in range(len(parts), 0, -1) if module_exists(".".join(parts[:i])))
            target: object = importlib.import_module(".".join(parts[:found]))
            for attribute in parts[found:]:
                target = getattr(target, attribute, None)
            if target is None:
                missing.append(f"{name}: {dotted}")
        for comment in re.findall(r"#\s*(?:noqa: \w+|pyright: ignore\[\w+\])", text):
            if not any(comment in module for module in srfeat_sources()):
                missing.append(f"{name}: {comment}")
    assert not missing, f"the docs quote code that is not there: {missing}"


def module_exists(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except ModuleNotFoundError:  # a name inside a module (`srfeat.data.resize.imresize`), not a module
        return False


def srfeat_sources() -> list[str]:
    return [path.read_text() for path in sorted((ROOT / "srfeat").rglob("*.py"))]


def test_an_exported_bundled_models_training_data_agrees_with_its_model_card() -> None:
    """An ONNX export's training_data said `default` saw all 291 images where its README card trained its GPU
    run on T91 and 80 of BSDS200's: each count of images the card's data row gives, the metadata gives, and each
    number the metadata gives (`192x192`, `291`) is in the card's row."""
    from srfeat.export.metadata import BUNDLED_INFO
    from srfeat.weights import bundled_names

    readme = read("README.md")
    assert sorted(BUNDLED_INFO) == bundled_names(), "each bundled model has its card in srfeat/export/metadata.py"
    wrong = []
    for name, info in BUNDLED_INFO.items():
        card = re.search(rf"^### `{name}`.*?^\| data \| (.*?) \|$", readme, re.MULTILINE | re.DOTALL)
        assert card, f"the README has no data row in the card of {name}"
        counts = set(re.findall(r"\b(\d+) (?:of )?BSDS200", card[1]))
        numbers = set(re.findall(r"(?<![\w/])\d+(?:x\d+)?(?![\w/])", info.training_data))
        wrong += [f"{name}: the card's {count} BSDS200 images" for count in counts - numbers]
        wrong += [f"{name}: the metadata's {number}" for number in numbers if number not in card[1]]
    assert not wrong, f"the bundled models' ONNX metadata and README cards disagree: {wrong}"


def test_every_table_in_the_docs_stands_apart_from_the_text_around_it() -> None:
    """Markdown takes a line right after a table as one more row, and a table's header right after a
    paragraph may be read as the paragraph's text: the ONNX Runtime timing table swallowed its own note
    "(A quiet machine, ...)" as a row."""
    joined = []
    for name in DOCS:
        lines = re.sub(r"```.*?```", "```", read(name), flags=re.DOTALL).splitlines()
        for number, (before, line) in enumerate(zip(["", *lines[:-1]], lines, strict=True), start=1):
            if before.strip() and line.strip() and line.startswith("|") != before.startswith("|"):
                joined.append(f"{name}: {before[:40]!r} / {line[:40]!r} (line {number} of the text without code)")
    assert not joined, joined


def test_the_crf_defaults_that_help_and_readme_give_are_the_encoders() -> None:
    """--crf's help gave H.264's 18 alone: VP9 (.webm's codec) is encoded at 24, H.265 at 20, AV1 at 30."""
    from srfeat.video.encoding import CRF_SCALES

    defaults = {"H.264": "libx264", "H.265": "libx265", "VP9": "libvpx-vp9", "AV1": "libsvtav1"}
    help_text = " ".join(srfeat_cli("upscale", "--help").stdout.split())
    stated = {
        name: value for value, name in re.findall(r"(\d+) for (H\.26[45]|VP9|AV1)", help_text.partition("--crf Q")[2])
    }
    assert stated == {name: f"{CRF_SCALES[codec].default:g}" for name, codec in defaults.items()}, stated
    assert CRF_SCALES["libaom-av1"].default == CRF_SCALES["libsvtav1"].default
    readme = " ".join(read("README.md").split())
    by_default = "x264, x265, VP9 and AV1 (by default {}, {}, {} and {};"
    assert by_default.format(*(f"{CRF_SCALES[c].default:g}" for c in defaults.values())) in readme
