"""The README's Layout section lists every module under srfeat/, every script and benchmark, and none that is gone
(CONTRIBUTING.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS_PREFIX = "commands/:"


def layout_block(readme: str) -> list[str]:
    """The srfeat/ part of the Layout section's tree: the lines after `srfeat/` up to the next top-level folder."""
    section = readme.split("## Layout", 1)[1]
    tree = section.split("```", 2)[1].splitlines()
    start = tree.index("srfeat/") + 1
    block: list[str] = []
    for line in tree[start:]:
        if line and not line.startswith(" "):  # configs/, tests/...: the package's tree has ended
            break
        block.append(line)
    return block


def modules_listed(block: list[str]) -> set[str]:
    """Module paths relative to srfeat/: a `folder/` is named once, its files on that line and the ones after."""
    listed: set[str] = set()
    folder = ""
    for line in block:
        # Columns are separated by two or more spaces: folder (only on its first line), files, what they are.
        columns = re.split(r"\s{2,}", line.strip())
        if not line.strip():
            continue
        if not line.startswith("   "):  # a new entry of the tree: a folder, or top-level modules
            folder = columns[0] if columns[0].endswith("/") else ""
            file_columns = columns[1:2] if folder else columns[:2]
        else:
            file_columns = columns[:1]
        for column in file_columns:
            if column.startswith(COMMANDS_PREFIX):
                names = column.removeprefix(COMMANDS_PREFIX).split(",")
                listed.update(f"commands/{name.strip()}.py" for name in names)
            else:
                listed.update(folder + name for name in re.findall(r"\w+\.py", column))
    return listed


def test_readme_layout_lists_every_module_and_no_gone_one() -> None:
    block = layout_block((ROOT / "README.md").read_text())
    listed = modules_listed(block)
    package = ROOT / "srfeat"
    every_file = {str(path.relative_to(package)) for path in package.rglob("*.py")}
    # A package's __init__.py is listed where it holds more than imports (video/: its flags); never required.
    modules = {name for name in every_file if Path(name).name != "__init__.py"}
    assert len(modules) > 40 and len(listed) > 40  # both the tree and the package were found
    assert not modules - listed, f"add these to the README's Layout section: {sorted(modules - listed)}"
    assert not listed - every_file, (
        f"the README's Layout section names modules that are gone: {sorted(listed - every_file)}"
    )


def top_level_block(readme: str, folder: str) -> list[str]:
    """The Layout tree's lines of a top-level `folder/`: its own line and the indented ones after it."""
    tree = readme.split("## Layout", 1)[1].split("```", 2)[1].splitlines()
    start = next(i for i, line in enumerate(tree) if line.startswith(folder + " "))
    block = [tree[start]]
    for line in tree[start + 1 :]:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return block


def test_readme_layout_lists_every_script_and_benchmark_and_no_gone_one() -> None:
    readme = (ROOT / "README.md").read_text()
    for folder, patterns in (("scripts/", ("*.py", "*.sh")), ("benchmarks/", ("*.py",))):
        listed = set(re.findall(r"[\w-]+\.(?:py|sh)", "\n".join(top_level_block(readme, folder))))
        present = {path.name for pattern in patterns for path in (ROOT / folder).glob(pattern)} - {"__init__.py"}
        assert len(present) > 5 and len(listed) > 5  # both the tree's lines and the files were found
        assert not present - listed, f"add these to the README's Layout section: {folder} {sorted(present - listed)}"
        assert not listed - present, (
            f"the README's Layout section names {folder} files that are gone: {sorted(listed - present)}"
        )
