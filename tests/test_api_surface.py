"""What `import srfeat` and its packages expose: the names in each `__all__` exist and say what they
are; the version is the package's; the errors are reachable without importing torch."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import srfeat

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ["srfeat", "srfeat.errors", "srfeat.inference", "srfeat.metrics", "srfeat.weights"]


def test_a_bare_import_reaches_the_errors_and_the_subpackages_without_loading_torch() -> None:
    code = (
        "import sys, srfeat; "
        "assert issubclass(srfeat.errors.InvalidImageError, srfeat.errors.SRFeatError); "
        "assert 'torch' not in sys.modules, 'import srfeat must stay light'; "
        "assert {'errors', 'metrics', 'weights', 'Upscaler'} <= set(dir(srfeat)); "
        "assert srfeat.metrics.psnr is not None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'upscaler'"):
        srfeat.upscaler  # noqa: B018 - the access is the test


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_public_name_exists_and_public_callables_have_docstrings(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names, f"{package} has no __all__"
    for name in names:
        value = getattr(module, name)
        if callable(value):
            assert inspect.getdoc(value), f"{package}.{name} has no docstring"


def test_the_version_is_the_one_pyproject_declares() -> None:
    # No tomllib: it is Python 3.11's, and the package (and its tests) support 3.10.
    project = (ROOT / "pyproject.toml").read_text().partition("[project]\n")[2].partition("\n[")[0]
    declared = re.search(r'^version = "([^"]+)"$', project, re.MULTILINE)
    assert declared, "pyproject.toml's [project] has no version"
    declared = declared.group(1)
    assert srfeat.__version__ == declared


def test_every_error_is_an_srfeat_error_of_the_builtin_kind_its_docstring_names() -> None:
    from srfeat import errors

    for name in errors.__all__:
        kind = getattr(errors, name)
        assert issubclass(kind, errors.SRFeatError) and inspect.getdoc(kind), name
    for name in ("InvalidImageError", "InvalidOptionError", "WeightsError", "MetricInputError", "ConfigError"):
        assert issubclass(getattr(errors, name), ValueError), name
    assert issubclass(errors.NotAnImageError, TypeError)
