"""YAML-shaped values read into typed dataclasses, and YAML files read as text, with one-line errors.

The machinery behind `srfeat.training.config`: `build_dataclass` checks every value against its
field's type (Literal, unions, lists, nested dataclasses, bool/int/float/str) and fails with the
field's dotted name; `parse_overrides` and `set_dotted` apply `key=value` overrides;
`config_text` and `yaml_error` turn an unreadable file into one line that says what it is.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from srfeat.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "build_dataclass", "config_text", "parse_overrides", "set_dotted", "yaml_error"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against (and lightly coerced to) type `tp`; ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"config key {key} must not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
            raise ConfigError(f"config key {key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item_type is str:
            value = [value]  # a single folder is a list of one
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list of {_type_name(item_type)}, got {value!r}")
        return [_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a mapping (a section), got {value!r}")
        return build_dataclass(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # NaN passes every `<= 0` check: refuse it here, once
                raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this reader does not know
        raise TypeError(f"unsupported config type {tp} for {key}")
    raise ConfigError(f"config key {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown config key {prefix}{key} (known in this section: {', '.join(sorted(names))})")
    kwargs = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in values.items()}
    return cls(**kwargs)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`a.b=value` strings -> (dotted key, YAML-parsed value)."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=2e-4)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({error.__class__.__name__})") from error
        parsed.append((key.strip(), value))
    return parsed


# Configs are a few kB; anything far larger is not one (and is not read into memory).
MAX_CONFIG_BYTES = 1 << 20
# File signatures of what people pass by mistake, to say what the file is.
_BINARY_KINDS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"RIFF": "a WebP image",
    b"BM": "a BMP image",
    b"PK\x03\x04": "a zip file (a PyTorch checkpoint?)",
}


def config_text(path: Path) -> str:
    """The file's text; a ConfigError if it is too large or not text (an image, a checkpoint)."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is {path.stat().st_size / 1e6:.1f} MB, not a YAML training config; "
            "give one such as configs/dev/stage1.yaml"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        kind = next((name for magic, name in _BINARY_KINDS.items() if data.startswith(magic)), "binary data")
        raise ConfigError(
            f"{path} is {kind}, not a YAML training config (text); give one such as configs/dev/stage1.yaml"
        )
    return text


def yaml_error(path: Path, error: yaml.YAMLError) -> ConfigError:
    """One line with the line and column where the YAML parser stopped."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context += f" from line {context_mark.line + 1}"
    detail = f"{problem} ({context})" if context else problem
    return ConfigError(f"{path}{where}: not valid YAML: {detail}")
