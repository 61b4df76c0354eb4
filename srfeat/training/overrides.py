"""`key=value` overrides of a training config (the command line's, or `load_config`'s `overrides`): each is
parsed as YAML and set by its dotted name; anything else is one ConfigError saying what to give."""

from __future__ import annotations

import math
from typing import Any

import yaml

from srfeat.errors import ConfigError
from srfeat.training.typed_yaml import load_yaml, shown_value, yaml_problem

__all__ = ["parse_overrides", "set_dotted"]


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for depth, part in enumerate(parts[:-1], 1):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):  # was "lr is not a section", with no word of what to write
            key = ".".join(parts[:depth])
            raise ConfigError(f"override {dotted}: {key} is a value, not a section: write {key}=VALUE")
        node = child
    node[parts[-1]] = value


# A path on the command line that is not UTF-8 (`data.train_dirs=[/home/caf\xe9]`, a Latin-1 system's name)
# reaches Python with its odd bytes as lone surrogates (U+DC80-U+DCFF), which YAML's reader refuses ("value
# is not valid YAML (ReaderError)"): they are parsed as stand-ins from a private-use block, then put back.
_STAND_INS = {code: code + 0xF780 - 0xDC80 for code in range(0xDC80, 0xDD00)}
_PUT_BACK = {stand_in: code for code, stand_in in _STAND_INS.items()}


def _load_override(text: str, source: str) -> Any:
    stood_in = text.translate(_STAND_INS)
    if stood_in == text or any(chr(code) in text for code in _PUT_BACK):  # none, or the stand-ins are taken
        return load_yaml(text, source)
    return _put_back(load_yaml(stood_in, source))


def _put_back(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate(_PUT_BACK)
    if isinstance(value, list):
        return [_put_back(item) for item in value]
    if isinstance(value, dict):
        return {_put_back(key): _put_back(item) for key, item in value.items()}
    return value


# An override's example, in every message about one's form or type.
_EXAMPLE = "['optim.lr=2e-4', 'train.batch_size=8']"


def _checked_list(overrides: object) -> list[str] | tuple[str, ...]:
    """`overrides` if it is a list (or tuple) of strings, else a ConfigError saying what to give instead."""
    if isinstance(overrides, (list, tuple)):
        for item in overrides:
            if not isinstance(item, str):  # 1 or None was AttributeError, b"a=1" TypeError
                raise ConfigError(
                    f"override {shown_value(item)} is not a key=value string ({type(item).__name__}): "
                    f"overrides are strings such as {_EXAMPLE}"
                )
        return overrides
    if isinstance(overrides, str):  # its characters were taken as overrides: "override 'o' is not key=value"
        instead = f"[{overrides!r}]" if overrides.strip() else "None (no overrides)"
        raise ConfigError(f"overrides is a list of key=value strings: give {instead}")
    if isinstance(overrides, dict):  # {"optim.lr": 2e-4} was "got dict", with no word of what to give instead
        raise ConfigError(
            f"overrides is a list of key=value strings, not a dict: give {_as_strings(overrides)} "
            "(dotted names, values written as YAML)"
        )
    # 5 was "'int' object is not iterable"; a set has no order for the later of two to win, and a generator
    # is read once: the list or tuple the signature says
    raise ConfigError(
        f"overrides is a list of key=value strings, e.g. {_EXAMPLE}, "
        f"got {type(overrides).__name__} {shown_value(overrides)}"
    )


def _as_strings(overrides: dict[Any, Any]) -> str:
    """A dict of overrides as the list it stands for ({"optim": {"lr": 1}} as ['optim.lr=1']), cut short."""

    def flat(tree: dict[Any, Any], prefix: str) -> list[str]:
        items = []
        for key, value in tree.items():
            if isinstance(value, dict) and value:  # a section's keys one by one: `optim={lr: 1}` replaces optim
                items += flat(value, f"{prefix}{key}.")
            else:
                try:  # as YAML reads it back: 1e-4 as 0.0001, [a, b] as a flow list
                    text = yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]
                except yaml.YAMLError:  # a Path, a numpy number: its text
                    text = str(value)
                items.append(f"{prefix}{key}={text}")
        return items

    return shown_value(flat(overrides, ""))


def parse_overrides(overrides: object) -> list[tuple[str, Any]]:
    """`a.b=value` strings -> (dotted key, YAML-parsed value); anything else a ConfigError saying what to give."""
    parsed = []
    for item in _checked_list(overrides):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=2e-4)")
        if "" in key.strip().split("."):  # `.lr=1` was the file's "unknown config key " (an empty name)
            raise ConfigError(
                f"override {key.strip()}: a part of the name is empty (before, between or after its dots); "
                "write section.key=value, e.g. optim.lr=2e-4"
            )
        if bad := [char for char in key if chr(0xDC80) <= char < chr(0xDD00)]:  # never a key: they are ASCII
            raise ConfigError(
                f"override {key.strip()}: its name holds bytes that are not UTF-8 text ({''.join(bad)}); "
                "type the key again in plain letters, e.g. optim.lr=2e-4"
            )
        try:
            value = _load_override(text, f"override {key.strip()}") if text.strip() else ""
        except yaml.YAMLError as error:
            # the item itself may be thousands of characters (a number of 5,000 digits): shown cut short
            raise ConfigError(
                f"override {shown_value(item)}: value is not valid YAML ({yaml_problem(error)})"
            ) from error
        parsed.append((key.strip(), value))
    return parsed
