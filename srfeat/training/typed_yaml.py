"""YAML-shaped values read into typed dataclasses, and YAML files read as text, with one-line errors.

The machinery behind `srfeat.training.config`: `build_dataclass` checks every value against its
field's type (Literal, unions, lists, nested dataclasses, bool/int/float/str) and fails with the
field's dotted name (`srfeat.training.overrides` applies `key=value` overrides);
`config_text` and `yaml_error` turn an unreadable file into one line that says what it is.
"""

from __future__ import annotations

import codecs
import dataclasses
import decimal
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from srfeat.errors import ConfigError, shown
from srfeat.path_checks import unreadable_message

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_NODES",
    "build_dataclass",
    "config_text",
    "load_yaml",
    "shown_value",
    "yaml_error",
]

# A config has a few hundred values. YAML aliases let a 1 kB file stand for billions of them
# ("billion laughs"): the parser shares them, but checking or printing the value walks them all.
MAX_CONFIG_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!map 1`, `!!set [1]`: was the loop's ValueError below
            raise yaml.constructor.ConstructorError(
                None, None, f"tagged {_tag_name(node)} but not a mapping ({node.id}): remove the tag", node.start_mark
            )
        seen: set[str | int | float | bool] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges a mapping in; its keys may be overridden after it
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: SafeLoader's own error
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping: keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_undefined(self, node: yaml.Node) -> Any:
        # was "could not determine a constructor for the tag '!custom'", which said nothing of what to do
        raise yaml.constructor.ConstructorError(
            None, None, f"the tag {_tag_name(node)} is not read in a training config: remove it", node.start_mark
        )

    # PyYAML turns a scalar into a number, a bool or a date with int(), float(), a dict lookup and a regular
    # expression, whose ValueError, IndexError, KeyError or AttributeError (a number of 5,000 digits, a 13th
    # month, `!!float x`, `!!bool maybe`, `!!int ''`) was a traceback: here each is a YAML error with its line.
    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except (ValueError, IndexError) as error:
            digits = sum(char.isdigit() for char in str(node.value))
            if digits > 1000:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a number of {digits:,} digits, far more than any config value needs", node.start_mark
                ) from error
            raise _not_of_its_tag(node, "an integer") from error

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        try:
            return super().construct_yaml_float(node)
        except (ValueError, IndexError) as error:
            raise _not_of_its_tag(node, "a number") from error

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        try:
            return super().construct_yaml_bool(node)
        except KeyError as error:
            raise _not_of_its_tag(node, "true or false") from error

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as error:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} reads as a date that does not exist ({error}); quote it", node.start_mark
            ) from error
        except AttributeError as error:  # no match of the date pattern
            raise _not_of_its_tag(node, "a date") from error


def _tag_name(node: yaml.Node) -> str:
    """A node's tag as written: `!!float` for YAML's own, else the whole tag."""
    prefix = "tag:yaml.org,2002:"
    return f"!!{node.tag[len(prefix) :]}" if node.tag.startswith(prefix) else node.tag


def _not_of_its_tag(node: yaml.ScalarNode, what: str) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None,
        None,
        f"{shown_value(node.value)} is tagged {_tag_name(node)} but is not {what}: remove the tag",
        node.start_mark,
    )


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_yaml_float)
_ConfigLoader.add_constructor("tag:yaml.org,2002:bool", _ConfigLoader.construct_yaml_bool)
_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _ConfigLoader.construct_yaml_timestamp)
# any tag SafeLoader does not know (PyYAML keys that one by None; its stubs say str)
_ConfigLoader.add_constructor(None, _ConfigLoader.construct_undefined)  # pyright: ignore[reportArgumentType]


def _expanded_size(value: Any, limit: int) -> int:
    """How many values `value` holds with aliases expanded, counting up to just past `limit`."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def load_yaml(text: str, what: str) -> Any:
    """YAML text as Python values: no duplicate keys, no alias bombs, no recursion blow-up.

    `what` names the text in messages (a file, an override). Parser errors are left to the
    caller (`yaml_error` words them with line and column).
    """
    try:
        value = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no Python objects
    except RecursionError as error:
        raise ConfigError(
            f"{what}: nested too deeply to be a training config, whose values are numbers, text and lists of "
            "them in five sections (see configs/dev/stage1.yaml)"
        ) from error
    if _expanded_size(value, MAX_CONFIG_NODES) > MAX_CONFIG_NODES:
        raise ConfigError(
            f"{what}: more than {MAX_CONFIG_NODES:,} values once its YAML aliases are expanded "
            "(an alias bomb?): not a training config; write its values out, as configs/dev/stage1.yaml does"
        )
    return value


def shown_value(value: Any) -> str:
    """A value for a message: its repr, cut short (a value can be huge; the message is one line)."""
    return shown(value, limit=120)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:  # "a list of Literal" said nothing of what the list may hold
        return " or ".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _as_integer(value: object) -> str:
    """For an int key given a whole number in another spelling, how to write it: YAML 1.1 reads `1e3` (no
    dot) as the string '1e3' and `1000.0` as a float, and "got '1e3' (str)" left the fix to guess. Else ""."""
    if isinstance(value, bool) or not isinstance(value, (str, float)):
        return ""
    try:
        number = decimal.Decimal(value.strip() if isinstance(value, str) else value)
    except decimal.InvalidOperation:
        return ""
    # a short whole number only: 1e400 would be a 401-digit suggestion (and no key takes it)
    if not number.is_finite() or number != number.to_integral_value() or abs(number) >= 10**18:
        return ""
    return f": write it as the integer {int(number)} (digits, unquoted)"


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
        # of the allowed value's own type: `stage: 1.0` equals 1, passed, and its run was written with
        # stage 1.0, which its resume refused as a damaged state (and True equals 1 too)
        if not any(value == option and type(value) is type(option) for option in allowed):
            raise ConfigError(
                f"config key {key} must be one of {', '.join(map(repr, allowed))}, got {shown_value(value)}"
            )
        return value
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, str) and item_type is str:
            value = [value]  # a single folder is a list of one
        if not isinstance(value, list):
            # a lone number was wrapped as a list of one and blamed as its item: "train_dirs[0] must be str"
            if item_type is not str:
                raise ConfigError(
                    f"config key {key} must be a list of {_type_name(item_type)}, got {shown_value(value)}"
                )
            # YAML reads `2024` (and `007`, as 7) as a number: a folder so named is written in quotes
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            quoted = "; a folder whose name YAML reads as a number is written in quotes" if number else ""
            raise ConfigError(
                f"config key {key} must be a path or a list of paths, "
                f"got {shown_value(value)} ({type(value).__name__}){quoted}"
            )
        return [_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a mapping (a section), got {shown_value(value)}")
        return build_dataclass(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            # YAML 1.1 reads 1e-4 (no dot) as a string; an integer of 400 digits overflows a float
            try:
                number = float(value)
            except ValueError:
                pass
            except OverflowError:
                number = math.inf
        if number is not None:
            if not math.isfinite(number):  # NaN passes every `<= 0` check: refuse it here, once
                raise ConfigError(f"config key {key} must be a finite number, got {shown_value(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this reader does not know
        raise TypeError(f"unsupported config type {tp} for {key}")
    advice = _as_integer(value) if tp is int else ""
    raise ConfigError(
        f"config key {key} must be {_type_name(tp)}, got {shown_value(value)} ({type(value).__name__}){advice}"
    )


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            # a key of 10,000 characters (a value pasted where its key goes) was a message as long
            name = f"{prefix}{key}" if len(f"{prefix}{key}") <= 80 else f"{prefix}{str(key)[:60]}..."
            raise ConfigError(f"unknown config key {name} (known in this section: {', '.join(sorted(names))})")
    kwargs = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in values.items()}
    return cls(**kwargs)


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
    try:
        data = path.read_bytes()
    except OSError as error:  # there, but a failing disk or no permission: was a traceback
        again = "copy it again, or give another config"
        raise ConfigError(unreadable_message(path, error, again, what="config")) from error
    # YAML streams may be UTF-16 with its byte-order mark (Windows PowerShell's `>` writes that):
    # taken as UTF-8, one was "binary data, not a YAML training config (text)"
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
    undecodable = 0
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        text = None
        undecodable = error.start
    if text is None and b"\x00" not in data and not any(data.startswith(magic) for magic in _BINARY_KINDS):
        # text in another encoding (Latin-1's `caf\xe9`): "binary data" said it was not text at all
        line = data[:undecodable].count(b"\n")
        raise ConfigError(
            f"{path} is not UTF-8 text (line {line + 1}): save it as UTF-8; a path that is not UTF-8 can be "
            "given as an override on the command line (key=path)"
        )
    if text is None or "\x00" in text:
        kind = next((name for magic, name in _BINARY_KINDS.items() if data.startswith(magic)), "binary data")
        raise ConfigError(
            f"{path} is {kind}, not a YAML training config (text); give one such as configs/dev/stage1.yaml"
        )
    return text


def yaml_error(path: Path, error: yaml.YAMLError) -> ConfigError:
    """One line with the line and column where the YAML parser stopped."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = yaml_problem(error)
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context += f" from line {context_mark.line + 1}"
    detail = f"{problem} ({context})" if context else problem
    return ConfigError(f"{path}{where}: not valid YAML: {detail}")


# PyYAML's problems that say what is wrong but not what to do, and what to do.
_ADVICE = [
    (r"found undefined alias '(.*)'", r": give the anchor &\1 before its first *\1, or write the value out"),
    (r"found character '\\t' that cannot start any token", ": indent with spaces, not tabs"),
    (r"found unhashable key", ": a key is a name; a list or a mapping cannot be one"),
    (r"found incompatible YAML document", ": remove the %YAML line"),
    (r"but found another document", ": a config is one document; remove the second '---' and what follows it"),
    (r"it holds .*, which YAML does not allow", ": remove it"),
]


def yaml_problem(error: yaml.YAMLError) -> str:
    """What PyYAML found wrong, and what to do about it where it does not say (": indent with spaces, not tabs")."""
    if isinstance(error, yaml.reader.ReaderError):  # "unacceptable character #x0000: special characters ..."
        problem = f"it holds {chr(error.character)!a}, which YAML does not allow"
    else:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    for pattern, advice in _ADVICE:
        if found := re.match(pattern, problem):
            return problem + found.expand(advice)
    return problem
