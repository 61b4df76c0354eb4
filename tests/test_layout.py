"""The habits CONTRIBUTING.md asks for, checked so that they stay kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRFEAT = Path(__file__).resolve().parents[1] / "srfeat"
MAX_LINES = 500  # a module longer than this holds more than one concern: split it


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


def unexplained_ignores(package: Path) -> list[str]:
    """Each ignore comment under `package` that pyright would read as a blanket one (mypy's
    `# type: ignore`, a rule-less `# pyright: ignore`) or that gives no reason, neither after it on
    its line nor in a comment on the line above."""
    found = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package.parent).as_posix()
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            if "# type: ignore" in line:
                found.append(f"{name}:{number}: `# type: ignore` (pyright reads it as a blanket ignore)")
                continue
            _, marker, after = line.partition("# pyright: ignore")
            if not marker:
                continue
            if not after.startswith("["):
                found.append(f"{name}:{number}: `# pyright: ignore` without the rule it silences")
                continue
            reason_after = "#" in after.partition("]")[2]
            reason_above = number > 1 and lines[number - 2].lstrip().startswith("#")
            if not (reason_after or reason_above):
                found.append(f"{name}:{number}: `# pyright: ignore` without a reason")
    return found


def test_every_ignore_under_srfeat_names_its_rule_and_says_why() -> None:
    """CONTRIBUTING.md: where an ignore is right it names the rule and a comment says why, so that
    pyright silences only that rule and a reader knows what the stubs get wrong."""
    unexplained = unexplained_ignores(SRFEAT)
    assert not unexplained, "name the rule and say why, or fix the typing:\n" + "\n".join(unexplained)
