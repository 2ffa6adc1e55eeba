"""Turning a TOML document into frozen, validated config dataclasses.

Config is parsed once at start-up; services receive the dataclass, never a dict. Field
types drive the conversion: ints accept human sizes for fields named *_bytes* ("100 GB",
"64 MiB"), Paths are expanded, nested dataclasses are TOML tables, unknown keys are errors
(a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, misspelt or out of range; the message names the key."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as "100 GB", "64MiB", "512k"."""
    if isinstance(value, bool):
        raise ConfigError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number, unit = m.groups()
            return int(float(number) * _UNITS[(unit or "").lower()])
    raise ConfigError(f"not a size: {value!r}")


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e


def build(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """An instance of the dataclass `cls` from `data` (a TOML table), defaults for what is
    absent. Raises ConfigError naming the offending key."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {e}") from e


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table")
        return build(tp, value, where=f"{key}.")  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if tp is int:
        if "bytes" in key.rsplit(".", 1)[-1]:
            try:
                return parse_size(value)
            except ConfigError as e:
                raise ConfigError(f"{key}: {e}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a path")
        return Path(value).expanduser()
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from e
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, f"{key}[]") for v in value)
    raise ConfigError(f"{key}: unsupported config type {tp!r}")
