"""The habits CONTRIBUTING.md asks for, checked so that they stay kept."""

from __future__ import annotations

from pathlib import Path

SRFEAT = Path(__file__).resolve().parents[1] / "srfeat"
MAX_LINES = 500  # a module longer than this holds more than one concern: split it


def test_no_module_under_srfeat_is_over_500_lines() -> None:
    lengths = {path.relative_to(SRFEAT.parent): len(path.read_text().splitlines()) for path in SRFEAT.rglob("*.py")}
    assert len(lengths) > 20  # the package itself was found
    too_long = {str(path): count for path, count in lengths.items() if count > MAX_LINES}
    assert not too_long, f"split these modules by concern: {too_long}"
