"""JSON values of jobs (arguments and results): their bounds, encoding and tolerant decoding.

A value is stored only if every later read can render it: plain JSON, nested at most
:data:`MAX_DEPTH` containers deep, with text that is valid Unicode (no lone surrogates,
which no UTF-8 response can carry). Values are checked iteratively, so even a value
nested thousands of levels deep (or a circular one) gets a clear error rather than a
RecursionError. Reads never raise: a stored value that cannot be decoded (written
around jobrunner, or by an older version) comes back as :class:`~jobrunner.job.Unreadable`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import PayloadError
from .job import Unreadable

#: How many containers (objects, arrays) deep a job's arguments or result may nest.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_loads = json.loads


def _text_error(what: str, text: str) -> PayloadError:
    return PayloadError(f"{what}: text {text[:40]!r} holds a lone surrogate, which is not valid Unicode")


def check(value: Any, what: str) -> bool:
    """Check that ``value`` may be stored; True when it is plain JSON (decodes back equal).

    Raises :class:`PayloadError` naming ``what`` (e.g. "arguments of topics.demo.Add")
    for a value nested deeper than :data:`MAX_DEPTH` or holding a lone surrogate. Types
    JSON cannot hold are left to the encoder (the value is then not plain).
    """
    plain = True
    level = [value]
    depth = 0
    while level:  # one pass per nesting level; scalars inside containers are checked in place
        depth += 1
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict or kind is list or isinstance(item, (dict, list, tuple)):
                if depth > MAX_DEPTH:
                    raise PayloadError(f"{what}: nested deeper than {MAX_DEPTH} levels (the bound on job values)")
                if kind is dict or isinstance(item, dict):
                    plain = plain and kind is dict
                    for key in item:
                        if type(key) is not str:
                            plain = False  # the encoder turns keys into strings (or refuses them)
                        elif not key.isascii() and _SURROGATE.search(key):
                            raise _text_error(what, key)
                    children = item.values()
                else:
                    plain = plain and kind is list
                    children = item
                for child in children:
                    ckind = type(child)
                    if ckind is str:
                        if not child.isascii() and _SURROGATE.search(child):
                            raise _text_error(what, child)
                    elif not (ckind is int or ckind is float or ckind is bool or child is None):
                        below.append(child)
            elif kind is str:
                if not item.isascii() and _SURROGATE.search(item):
                    raise _text_error(what, item)
            elif not (kind is int or kind is float or kind is bool or item is None):
                plain = False
                if isinstance(item, str) and _SURROGATE.search(item):
                    raise _text_error(what, item)
        level = below
    return plain


def encode(value: Any, what: str) -> tuple[str, bool]:
    """The JSON text of ``value`` and whether it is plain; PayloadError naming ``what``."""
    plain = check(value, what)
    try:
        return _encoder.encode(value), plain
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} are not JSON: {exc}") from None


def storable(value: Any) -> bool:
    """True when ``value`` passes :func:`check` (it may still be no JSON at all)."""
    try:
        check(value, "the value")
    except PayloadError:
        return False
    return True


def _too_deep(value: Any) -> bool:
    level = [value]
    depth = 0
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            if type(item) is dict:
                if depth > MAX_DEPTH:
                    return True
                below.extend(item.values())
            elif type(item) is list:
                if depth > MAX_DEPTH:
                    return True
                below.extend(item)
        level = below
    return False


def decode(text: Any, column: str) -> Any:
    """The value stored as JSON ``text`` in ``column``; never raises.

    Text that is not JSON, or nests deeper than :data:`MAX_DEPTH`, comes back as an
    :class:`~jobrunner.job.Unreadable` saying why.
    """
    try:
        value = _loads(text)
    except RecursionError:
        return Unreadable(f"unreadable {column}: nested too deeply to decode")
    except (TypeError, ValueError) as exc:
        return Unreadable(f"unreadable {column}: not JSON ({exc})")
    # Counting brackets is cheap; only text with many of them is walked.
    many = not isinstance(text, str) or (len(text) > 2 * MAX_DEPTH and text.count("[") + text.count("{") > MAX_DEPTH)
    if many and _too_deep(value):
        return Unreadable(f"unreadable {column}: nested deeper than {MAX_DEPTH} levels")
    return value


def decode_errors(text: Any) -> list[Any]:
    """The ``errors`` column decoded; an unreadable one becomes a single entry saying so."""
    value = decode(text, "errors")
    if isinstance(value, list):
        return value
    reason = value if isinstance(value, Unreadable) else f"unreadable errors: not a list ({type(value).__name__})"
    return [{"attempt": None, "at": None, "error": str(reason), "traceback": None}]


__all__ = ["MAX_DEPTH", "PayloadError", "check", "decode", "decode_errors", "encode", "storable"]
