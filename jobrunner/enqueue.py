"""Turning a worker, its arguments and options into a row of the jobs table.

Everything is validated here, before anything is stored: the worker, the topic, the
options, and that the arguments are JSON.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Mapping

from .config import Settings
from .errors import EnqueueError
from .worker import Worker, resolve_worker, worker_path

_OPTIONS = {"priority", "delay", "scheduled_at", "max_attempts"}


def _as_worker(worker: type[Worker] | str) -> type[Worker]:
    if isinstance(worker, str):
        return resolve_worker(worker)
    if isinstance(worker, type) and issubclass(worker, Worker):
        return worker
    raise EnqueueError(f"worker must be a Worker subclass or its import path, got {worker!r}")


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise EnqueueError(f"scheduled_at must be a datetime or POSIX seconds, got {value!r}")


def encode_args(name: str, args: Any) -> str:
    """The JSON text of ``args``; EnqueueError naming the worker when it is not JSON."""
    try:
        return json.dumps({} if args is None else args, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise EnqueueError(f"arguments of {name} are not JSON: {exc}") from None


def build_row(
    settings: Settings,
    worker: type[Worker] | str,
    args: Any,
    options: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """Validate one job and return its row (column → value, JSON columns encoded)."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise EnqueueError(f"unknown enqueue option {sorted(unknown)[0]!r} (known: {', '.join(sorted(_OPTIONS))})")
    cls = _as_worker(worker)
    name = worker_path(cls)
    if not cls.topic:
        raise EnqueueError(f"worker {name} has no topic: set `topic = \"...\"` on the class")
    topic = settings.topic(cls.topic)

    priority = options.get("priority")
    if priority is None:
        priority = cls.priority if cls.priority is not None else topic.priority
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
        raise EnqueueError(f"priority of {name} must be an integer 0..9, got {priority!r}")

    max_attempts = options.get("max_attempts")
    if max_attempts is None:
        max_attempts = cls.max_attempts
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise EnqueueError(f"max_attempts of {name} must be an integer >= 1, got {max_attempts!r}")

    delay = options.get("delay")
    scheduled_at = options.get("scheduled_at")
    if delay is not None and scheduled_at is not None:
        raise EnqueueError(f"give {name} either delay or scheduled_at, not both")
    run_at = now
    if delay is not None:
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not math.isfinite(delay) or delay < 0:
            raise EnqueueError(f"delay of {name} must be a number of seconds >= 0, got {delay!r}")
        run_at = now + delay
    elif scheduled_at is not None:
        run_at = _timestamp(scheduled_at)

    return {
        "topic": cls.topic,
        "worker": name,
        "args": encode_args(name, args),
        "state": "scheduled" if run_at > now else "available",
        "priority": priority,
        "attempt": 0,
        "max_attempts": max_attempts,
        "errors": "[]",
        "inserted_at": now,
        "scheduled_at": run_at,
    }
