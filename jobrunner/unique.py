"""Unique jobs: what makes two enqueues the same job, and for how long.

``unique = {"period": 300}`` (on a Worker class, or per enqueue) means: an enqueue of
the same worker, topic and arguments within 300 seconds of a matching job's insertion
returns that job (``job.duplicate`` is True) instead of inserting another. Optional:

- ``keys``: the argument keys that count (the arguments must then be an object);
  default every argument;
- ``states``: the states a matching job must be in; default every state but
  ``discarded`` and ``cancelled`` (a job that failed for good or was cancelled does not
  keep a new one out);
- ``period`` may be ``None``: no time limit.

The match is a hash of the topic, the worker, ``keys`` and the arguments that count
(the ``unique_key`` column). Only jobs enqueued as unique with the same ``keys`` are
compared. The storage layer checks and inserts under a lock of that key, so
concurrent enqueues in any number of processes insert one job.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EnqueueError

#: The states that count when ``states`` is not given.
DEFAULT_STATES = ("scheduled", "blocked", "available", "executing", "retryable", "completed")
_STATES = frozenset({*DEFAULT_STATES, "discarded", "cancelled"})
_FIELDS = ("period", "keys", "states")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class Unique:
    """A parsed ``unique`` option: ``period`` seconds (None: forever), ``keys`` (None:
    every argument) and the ``states`` that count."""

    period: float | None
    keys: tuple[str, ...] | None = None
    states: tuple[str, ...] = DEFAULT_STATES

    @classmethod
    def parse(cls, value: Any, owner: str) -> Unique | None:
        """The option ``value`` of ``owner`` parsed (None or False: not unique).

        Raises EnqueueError naming ``owner`` and the field that is wrong.
        """
        if value is None or value is False:
            return None
        if isinstance(value, Unique):
            return value
        if not isinstance(value, Mapping):
            raise EnqueueError(f"unique of {owner} must be an object like {{\"period\": 300}}, got {value!r}")
        unknown = set(value) - set(_FIELDS)
        if unknown:
            raise EnqueueError(f"unique of {owner}: unknown field {sorted(unknown)[0]!r} "
                               f"(known: {', '.join(_FIELDS)})")
        if "period" not in value:
            raise EnqueueError(f"unique of {owner} needs a period: seconds, or null for no time limit")
        period = value["period"]
        if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float))
                                   or not math.isfinite(period) or period <= 0):
            raise EnqueueError(f"unique period of {owner} must be a number of seconds > 0 or null, got {period!r}")
        keys = value.get("keys")
        if keys is not None:
            if isinstance(keys, str) or not isinstance(keys, (list, tuple)) or not keys \
                    or not all(isinstance(k, str) and k for k in keys):
                raise EnqueueError(f"unique keys of {owner} must be a non-empty list of argument names, got {keys!r}")
            keys = tuple(sorted(set(keys)))
        states = value.get("states")
        if states is None:
            states = DEFAULT_STATES
        else:
            if isinstance(states, str) or not isinstance(states, (list, tuple)) or not states:
                raise EnqueueError(f"unique states of {owner} must be a non-empty list of states, got {states!r}")
            wrong = [s for s in states if s not in _STATES]
            if wrong:
                raise EnqueueError(f"unique states of {owner}: {wrong[0]!r} is not a job state "
                                   f"(states: {', '.join(sorted(_STATES))})")
            states = tuple(sorted(set(states)))
        return cls(None if period is None else float(period), keys, states)

    def key(self, topic: str, worker: str, args: Any) -> str:
        """The ``unique_key`` of a job of ``worker`` in ``topic`` with ``args`` (decoded JSON)."""
        counted = args
        if self.keys is not None:
            if not isinstance(args, dict):
                raise EnqueueError(f"unique keys of {worker} need arguments that are an object, "
                                   f"got {type(args).__name__}")
            counted = {k: args[k] for k in self.keys if k in args}
        text = _canonical.encode([topic, worker, self.keys, counted])
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def since(self, now: float) -> float | None:
        """The earliest insertion time a matching job may have (None: any)."""
        return None if self.period is None else now - self.period

    def to_dict(self) -> dict[str, Any]:
        """The option as given (JSON-ready)."""
        return {"period": self.period, "keys": None if self.keys is None else list(self.keys),
                "states": list(self.states)}


__all__ = ["DEFAULT_STATES", "Unique"]
