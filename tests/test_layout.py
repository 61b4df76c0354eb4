"""The habits CONTRIBUTING.md asks for, checked so that they stay kept."""

from __future__ import annotations

import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

SRFEAT = Path(__file__).resolve().parents[1] / "srfeat"
ROOT = SRFEAT.parent
MAX_LINES = 500  # a module longer than this holds more than one concern: split it
# What pyright reads as an ignore comment: mypy's, which it honours as a blanket one, and its own.
MYPY_IGNORE = re.compile(r"#\s*type:\s*ignore\b")
PYRIGHT_IGNORE = re.compile(r"#\s*pyright:\s*ignore(?P<rules>\[[^\]]+\])?")


def test_no_module_under_srfeat_is_over_500_lines() -> None:
    lengths = {path.relative_to(SRFEAT.parent): len(path.read_text().splitlines()) for path in SRFEAT.rglob("*.py")}
    assert len(lengths) > 20  # the package itself was found
    too_long = {str(path): count for path, count in lengths.items() if count > MAX_LINES}
    assert not too_long, f"split these modules by concern: {too_long}"


def test_the_suite_collects_without_the_optional_extras() -> None:
    """A test file that needs an extra skips itself without it: test_web.py imported srfeat.web
    (Starlette) before its importorskip, and without the web extra that collection error stopped
    the whole run before any test ran (as test_api_surface.py's tomllib did on Python 3.10). An
    import hook hides them, as where they are not installed."""
    # The extras, and tomllib: Python 3.11's, not in 3.10, which requires-python admits.
    extras = {"starlette", "uvicorn", "anyio", "av", "onnx", "onnxscript", "onnxruntime", "tomllib"}
    # Hidden once pytest has read its configuration (pytest itself reads pyproject.toml with tomllib).
    code = f"""
import sys
import pytest

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {extras!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

class HideAtSessionStart:
    def pytest_sessionstart(self, session):
        for name in [name for name in sys.modules if name.partition(".")[0] in {extras!r}]:
            del sys.modules[name]
        sys.meta_path.insert(0, NotInstalled())

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"], plugins=[HideAtSessionStart()]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=SRFEAT.parent, check=False, capture_output=True, text=True, timeout=600
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0 and "error" not in summary, result.stdout[-3000:] + result.stderr[-2000:]
    assert "tests collected" in summary, summary


def comments(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each comment in `path`, as Python's tokenizer reads them: a string that
    mentions an ignore (as this file's do) is no comment."""
    with path.open("rb") as file:
        for token in tokenize.tokenize(file.readline):
            if token.type == tokenize.COMMENT:
                yield token.start[0], token.string


def unexplained_ignores(folder: Path, *, reason_required: bool = True) -> list[str]:
    """Each ignore comment under `folder` that pyright would read as a blanket one (mypy's
    `# type: ignore`, a rule-less `# pyright: ignore`) or, where `reason_required`, that gives no
    reason, neither after it on its line nor in a comment on the line above."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        name = path.relative_to(folder.parent).as_posix()
        lines = path.read_text().splitlines()
        for number, comment in comments(path):
            if MYPY_IGNORE.search(comment):
                found.append(f"{name}:{number}: `# type: ignore` (pyright reads it as a blanket ignore)")
                continue
            ignore = PYRIGHT_IGNORE.search(comment)
            if not ignore:
                continue
            if not ignore.group("rules"):
                found.append(f"{name}:{number}: `# pyright: ignore` without the rule it silences")
                continue
            reason_after = "#" in comment[ignore.end() :]
            reason_above = number > 1 and lines[number - 2].lstrip().startswith("#")
            if reason_required and not (reason_after or reason_above):
                found.append(f"{name}:{number}: `# pyright: ignore` without a reason")
    return found


def test_every_ignore_in_the_code_names_its_rule_and_says_why() -> None:
    """CONTRIBUTING.md: where an ignore is right it names the rule and a comment says why, so that
    pyright silences only that rule and a reader knows what the stubs get wrong."""
    folders = [ROOT / name for name in ("srfeat", "benchmarks", "scripts")]
    unexplained = [found for folder in folders for found in unexplained_ignores(folder)]
    assert not unexplained, "name the rule and say why, or fix the typing:\n" + "\n".join(unexplained)


def test_every_ignore_in_the_tests_names_its_rule() -> None:
    """A test that passes a wrong type on purpose says so with the rule pyright reports
    (`# pyright: ignore[reportArgumentType]`); mypy's `# type: ignore[arg-type]` or a rule-less
    ignore silenced every other mistake on the line as well. The test's name says why."""
    blanket = unexplained_ignores(ROOT / "tests", reason_required=False)
    assert not blanket, "name the rule pyright reports, or fix the typing:\n" + "\n".join(blanket)


def test_the_ignore_check_reads_comments_only_and_finds_each_kind(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        'TEXT = "# type: ignore and # pyright: ignore, in a string"\n'
        "a = f(1)  # type: ignore[arg-type]\n"
        "b = f(2)  # pyright: ignore\n"
        "c = f(3)  # pyright: ignore[reportArgumentType]\n"
        "d = f(4)  # pyright: ignore[reportArgumentType]  # why\n"
        "# why\n"
        "e = f(5)  # pyright: ignore[reportCallIssue]\n"
    )
    assert unexplained_ignores(tmp_path / "pkg") == [
        "pkg/m.py:2: `# type: ignore` (pyright reads it as a blanket ignore)",
        "pkg/m.py:3: `# pyright: ignore` without the rule it silences",
        "pkg/m.py:4: `# pyright: ignore` without a reason",
    ]
    assert unexplained_ignores(tmp_path / "pkg", reason_required=False) == [
        "pkg/m.py:2: `# type: ignore` (pyright reads it as a blanket ignore)",
        "pkg/m.py:3: `# pyright: ignore` without the rule it silences",
    ]
