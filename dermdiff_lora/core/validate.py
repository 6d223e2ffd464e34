"""Typed validation of nested dicts against dataclasses: every error collected, with "did you mean" hints.

``build(cls, data, prefix, errors)`` returns an instance of the dataclass ``cls`` from ``data`` and appends
one line per unknown key, wrong type, bad choice or out-of-range value (``dataclasses.field`` metadata
``choices``, ``min``, ``max``) to ``errors``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


def build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (valid: {', '.join(fields)})"
            errors.append(f"unknown key '{prefix}{key}'{hint}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = build(hints[name], data[name], f"{prefix}{name}.", errors)
        else:
            values[name] = _check_value(f"{prefix}{name}", data[name], hints[name], f.metadata, errors)
    return cls(**values)


def _check_value(key: str, value: Any, hint: Any, meta: dict, errors: list[str]) -> Any:
    if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans: give back the choice's word
        words = [w for w in (("on", "yes") if value else ("off", "no")) if w in (meta.get("choices") or ())]
        value = words[0] if words else value
    ok, value = _coerce(value, hint)
    if not ok:
        errors.append(f"{key}: expected {_type_name(hint)}, got {value!r}")
        return value
    if value is None:
        return value
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint_txt = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint_txt}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            errors.append(f"{key}: {value!r} is out of range [{lo}, {hi}]")
    return value


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is not type(None):
                ok, coerced = _coerce(value, arg)
                if ok:
                    return True, coerced
        return False, value
    if origin is list:
        if isinstance(value, str) and args[0] is str:  # one item given on its own: data.images=imgs
            value = [value]
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, args[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        items = {str(k): _coerce(v, args[1]) for k, v in value.items()}
        return all(ok for ok, _ in items.values()), {k: v for k, (_, v) in items.items()}
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if hint is float:
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), (
            float(value) if isinstance(value, (int, float)) else value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))
