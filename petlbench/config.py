"""Configs are dataclasses; user values arrive as dicts or `key=value` strings and are checked here, once.

An unknown key, a wrong type or a value outside a `Literal[...]` is a `ConfigError` that names the key, the
value and what is accepted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .registry import did_you_mean


def cache_dir(*parts: str) -> str:
    """petlbench's cache folder joined with `parts`: $PETLBENCH_CACHE, else ~/.cache/petlbench (the mini data, the
    decoded-split cache, check-data's memory of checked files)."""
    base = os.environ.get("PETLBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "petlbench")
    return os.path.join(base, *parts)


@dataclasses.dataclass
class EmptyConfig:
    """For methods with no options (BitFit, full fine-tuning, linear probing)."""


def _check_value(where: str, key: str, value: Any, hint: Any) -> Any:
    """Return `value` converted to `hint` where the conversion is lossless, else raise ConfigError."""
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {key}={value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_value(where, key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key}={value!r} has the wrong type; expected {hint}")
    return _check_plain(where, key, value, hint)


def _check_plain(where: str, key: str, value: Any, hint: Any) -> Any:
    """`_check_value` for a hint that is neither a Literal nor a union: bool, int, float, str or a class."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if value is None:  # `key=none` on the command line parses to None; for a text field it is the word
            return "none"
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: {key}={value!r} has the wrong type ({type(value).__name__}); expected {name}")


def build_config(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
    """An instance of dataclass `cls` from `values`, defaults filling the rest. `where` prefixes errors."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        accepted = ", ".join(fields) or "none"
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; accepted keys: {accepted}{did_you_mean(unknown[0], fields)}"
        )
    checked = {k: _check_value(where, k, v, hints[k]) for k, v in values.items()}
    cfg = cls(**checked)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        problem = validate()
        if problem:
            raise ConfigError(f"{where}: {problem}")
    return cfg


def parse_value(text: str) -> Any:
    """`'8'` -> 8, `'0.1'` -> 0.1, `'true'` -> True, `'null'` -> None, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str], where: str = "override") -> dict[str, Any]:
    """`['dim=8', 'where=attn']` -> {'dim': 8, 'where': 'attn'}; a malformed item names itself."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: {item!r} is not of the form key=value")
        out[key.strip()] = parse_value(value)
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def added_later(default: Any, **kwargs: Any) -> Any:
    """A dataclass field added after records were first written: its value enters a config's hash only when it
    differs from `default`, so every record written before the field existed keeps its hash (and is still found
    in the store, not rerun). `hashed_view` applies it."""
    return dataclasses.field(default=default, metadata={"added_later": True}, **kwargs)


def hashed_view(cfg: Any) -> dict[str, Any]:
    """`dataclasses.asdict(cfg)` without the `added_later` fields that hold their default: what a config
    contributes to a run's hash."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get("added_later") and out.get(f.name) == f.default:
            out.pop(f.name, None)
    return out


def not_positive(**values: float) -> str | None:
    """For a config's `validate`: the first of `values` below 1, as "NAME must be positive, got V"; else None."""
    return next((f"{k} must be positive, got {v}" for k, v in values.items() if v < 1), None)


def not_probability(**values: float) -> str | None:
    """For a config's `validate`: the first of `values` outside [0, 1), as "NAME must be in [0, 1), got V"."""
    return next((f"{k} must be in [0, 1), got {v}" for k, v in values.items() if not 0 <= v < 1), None)
