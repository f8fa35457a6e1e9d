"""Just enough TOML writing for the configurations the README tests give their daemon."""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, time as dtime
from typing import Any


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_text(data: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """``data`` as TOML (tables as ``[a.b]`` headers), for the configurations we write."""
    out = [f"{k} = {_toml_value(v)}\n" for k, v in data.items() if not _is_table(v) and not _is_table_list(v)]
    for key, value in data.items():
        sub = (*path, _toml_key(key))
        if _is_table(value):
            out.append(f"\n[{'.'.join(sub)}]\n" + toml_text(value, sub))
        elif _is_table_list(value):
            out.extend(f"\n[[{'.'.join(sub)}]]\n" + toml_text(item, sub) for item in value)
    return "".join(out)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``, tables merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if both_tables else value
    return merged
