"""Job metadata: ``tags``, ``meta`` and ``progress`` — what is accepted and how it is stored.

``tags`` is a list of short strings to find jobs by (``jobs --tag``, ``GET /jobs?tag=``);
``meta`` is a free JSON object carried with the job (read it in ``perform`` as
``job.meta``); ``progress`` is a number from 0 to 1 that ``perform`` reports while it
runs. Reads never raise: a stored value that cannot be decoded comes back empty.
"""

from __future__ import annotations

import math
from typing import Any

from . import payload
from .errors import EnqueueError

#: At most this many tags per job, each at most MAX_TAG_LENGTH characters.
MAX_TAGS = 32
MAX_TAG_LENGTH = 100


def check_tags(tags: Any, owner: str) -> list[str]:
    """``tags`` as a list of distinct strings in the order given; EnqueueError naming ``owner`` otherwise."""
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise EnqueueError(f"tags of {owner} must be a list of strings, got {tags!r}")
    if len(tags) > MAX_TAGS:
        raise EnqueueError(f"tags of {owner}: at most {MAX_TAGS} tags, got {len(tags)}")
    kept: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise EnqueueError(f"tags of {owner} must be non-empty strings, got {tag!r}")
        if len(tag) > MAX_TAG_LENGTH:
            raise EnqueueError(f"tag {tag[:20]!r}… of {owner} is longer than {MAX_TAG_LENGTH} characters")
        if tag not in kept:
            kept.append(tag)
    try:
        payload.check(kept, f"tags of {owner}")
    except payload.PayloadError as exc:
        raise EnqueueError(str(exc)) from None
    return kept


def check_meta(meta: Any, owner: str) -> dict[str, Any]:
    """``meta`` as a JSON object (None: empty); EnqueueError naming ``owner`` otherwise."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise EnqueueError(f"meta of {owner} must be a JSON object (a dict), got {type(meta).__name__}")
    try:
        text, plain = payload.encode(meta, f"meta of {owner}")
    except payload.PayloadError as exc:
        raise EnqueueError(str(exc)) from None
    decoded: dict[str, Any] = meta if plain else payload.decode(text, "meta")
    return decoded


def check_progress(value: Any) -> float:
    """A progress value: a number from 0 to 1 (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"progress must be a number from 0 to 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"progress must be a number from 0 to 1, got {value!r}")
    return float(value)


def decode_tags(text: Any) -> list[str]:
    """The ``tags`` column decoded (an unreadable value: no tags)."""
    value = payload.decode(text, "tags")
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


def decode_meta(text: Any) -> dict[str, Any]:
    """The ``meta`` column decoded (an unreadable value: empty)."""
    value = payload.decode(text, "meta")
    return value if isinstance(value, dict) else {}


__all__ = ["MAX_TAGS", "MAX_TAG_LENGTH", "check_meta", "check_progress", "check_tags", "decode_meta", "decode_tags"]
