"""Turning a worker, its arguments and options into a row of the jobs table.

Everything is validated here, before anything is stored: the worker, the topic, the
options, that the arguments are JSON that every later read can render (see
:mod:`jobrunner.payload`: at most ``MAX_DEPTH`` levels deep, valid Unicode text) and,
when the worker declares ``args_type``, that they match it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import payload
from .arguments import ArgsSpec
from .config import Settings, TopicSettings
from .errors import EnqueueError
from .job import EARLIEST, LATEST, Job, JobState, is_job_id
from .metadata import check_meta, check_tags
from .priority import PriorityError, parse_priority
from .storage.records import NewJob
from .unique import Unique
from .worker import Worker
from .worker_lookup import registered_worker, resolve_worker, worker_path

_OPTIONS = {"topic", "priority", "delay", "scheduled_at", "max_attempts", "tags", "meta", "unique", "depends_on",
            "on_dependency_failure"}
#: What ``on_dependency_failure`` may say: cancel the job (default) or run it anyway.
ON_DEPENDENCY_FAILURE = ("cancel", "run")
MAX_ATTEMPTS_LIMIT = 2**31 - 1
# Plain strings: the row goes to the database driver as it is.
_SCHEDULED, _AVAILABLE = JobState.SCHEDULED.value, JobState.AVAILABLE.value


def _as_worker(worker: type[Worker] | str) -> type[Worker]:
    if isinstance(worker, str):
        return resolve_worker(worker)
    if isinstance(worker, type) and issubclass(worker, Worker):
        return worker
    raise EnqueueError(f"worker must be a Worker subclass or its import path, got {worker!r}")


def _timestamp(value: object) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise EnqueueError(f"scheduled_at must be a datetime or POSIX seconds, got {value!r}")


_decoder = json.JSONDecoder()


def _encode(name: str, args: Any) -> tuple[str, bool]:
    """The JSON text of ``args`` and whether it decodes back unchanged; EnqueueError naming the worker."""
    try:
        return payload.encode({} if args is None else args, f"arguments of {name}")
    except payload.PayloadError as exc:
        raise EnqueueError(str(exc)) from None


def encode_args(name: str, args: Any) -> str:
    """The JSON text of ``args``; EnqueueError naming the worker when it cannot be stored
    (not JSON, nested deeper than ``payload.MAX_DEPTH``, or holding a lone surrogate)."""
    return _encode(name, args)[0]


@dataclass(frozen=True, slots=True)
class WorkerDefaults:
    """What a worker class contributes to each of its jobs, resolved once."""

    name: str
    topic: str
    priority: int
    max_attempts: int
    args_spec: ArgsSpec | None = None
    unique: Unique | None = None


def worker_defaults(settings: Settings, worker: type[Worker] | str) -> WorkerDefaults:
    """Resolve ``worker`` and its defaults; errors name the worker."""
    cls = _as_worker(worker)
    name = worker_path(cls)
    if not cls.topic:
        raise EnqueueError(f"worker {name} has no topic: set `topic = \"...\"` on the class")
    topic = settings.topic(cls.topic)
    priority = parse_priority(cls.priority) if cls.priority is not None else topic.priority
    return WorkerDefaults(name, cls.topic, priority, cls.max_attempts, cls.args_spec, cls.unique_spec)


def external_defaults(worker: str, topic: TopicSettings) -> WorkerDefaults:
    """Defaults of a job for an external topic: ``worker`` is any name its workers understand
    (valid Unicode text: EnqueueError otherwise)."""
    try:
        payload.check(worker, f"worker name {worker!r} of topic {topic.name!r}")
    except payload.PayloadError as exc:
        raise EnqueueError(str(exc)) from None
    return WorkerDefaults(worker, topic.name, topic.priority, Worker.max_attempts)


def job_defaults(
    settings: Settings,
    worker: type[Worker] | str,
    topic: str | None = None,
    lookup: Callable[[type[Worker] | str], type[Worker]] | None = None,
) -> WorkerDefaults:
    """The defaults of a job of ``worker`` for ``topic`` (None: the worker's own topic).

    For a topic declared ``external = true``, a ``worker`` given as a string is any
    name that topic's external workers understand (nothing is imported), unless it
    names a loaded Python Worker. Otherwise ``worker`` is a Worker class or its import
    path, found with ``lookup`` (default: import it), and ``topic``, when given, must
    be the worker's.
    """
    if topic is not None:
        if not isinstance(topic, str):
            raise EnqueueError(f"topic must be a string, got {topic!r}")
        configured = settings.topic(topic)
        if configured.external and isinstance(worker, str) and registered_worker(worker) is None:
            if not worker:
                raise EnqueueError(f"a job for the external topic {topic!r} needs a non-empty worker name")
            return external_defaults(worker, configured)
    defaults = worker_defaults(settings, (lookup or _as_worker)(worker))
    if topic is not None and defaults.topic != topic:
        raise EnqueueError(f"worker {defaults.name} belongs to topic {defaults.topic!r}, not {topic!r}")
    return defaults


def build_row(
    settings: Settings,
    worker: type[Worker] | str,
    args: Any,
    options: Mapping[str, Any] | None,
    now: float,
    defaults: WorkerDefaults | None = None,
) -> NewJob:
    """Validate one job and return its row (JSON columns encoded).

    ``defaults`` (from :func:`job_defaults`) saves resolving the worker again when
    many jobs share it; without them the ``topic`` option chooses the topic.
    """
    d = defaults or job_defaults(settings, worker, (options or {}).get("topic"))
    name = d.name
    priority = d.priority
    max_attempts = d.max_attempts
    run_at = now
    unique = d.unique
    tags: list[str] = []
    meta: dict[str, Any] = {}
    depends_on: list[int] = []
    on_failure = "cancel"
    if options:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise EnqueueError(
                f"unknown enqueue option {sorted(unknown)[0]!r} (known: {', '.join(sorted(_OPTIONS))})"
            )
        if options.get("priority") is not None:
            try:
                priority = parse_priority(options["priority"])
            except PriorityError as exc:
                raise EnqueueError(f"priority of {name} {exc}") from None
        if options.get("max_attempts") is not None:
            max_attempts = options["max_attempts"]
            if (not isinstance(max_attempts, int) or isinstance(max_attempts, bool)
                    or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT):
                raise EnqueueError(
                    f"max_attempts of {name} must be an integer 1..{MAX_ATTEMPTS_LIMIT}, got {max_attempts!r}"
                )
        delay = options.get("delay")
        scheduled_at = options.get("scheduled_at")
        if delay is not None and scheduled_at is not None:
            raise EnqueueError(f"give {name} either delay or scheduled_at, not both")
        if delay is not None:
            if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not math.isfinite(delay) or delay < 0:
                raise EnqueueError(f"delay of {name} must be a number of seconds >= 0, got {delay!r}")
            run_at = now + delay
        elif scheduled_at is not None:
            run_at = _timestamp(scheduled_at)
        if not EARLIEST <= run_at <= LATEST:
            raise EnqueueError(f"run time of {name} must fall within the years 1..9999 (UTC)")
        tags = check_tags(options.get("tags"), name)
        meta = check_meta(options.get("meta"), name)
        if options.get("unique") is not None:  # None: the worker's own; False: not unique
            unique = Unique.parse(options["unique"], name)
        depends_on = dependency_ids(options.get("depends_on"), name)
        on_failure = options.get("on_dependency_failure") or "cancel"
        if on_failure not in ON_DEPENDENCY_FAILURE:
            raise EnqueueError(f"on_dependency_failure of {name} must be one of {', '.join(ON_DEPENDENCY_FAILURE)}, "
                               f"got {on_failure!r}")

    spec = d.args_spec
    if spec is not None:
        args = spec.to_json_args(args)
    encoded, plain = _encode(name, args)
    # The stored job carries args exactly as a later read decodes them.
    decoded = args if args is not None and plain else _decoder.decode(encoded)
    if spec is not None:
        spec.convert(decoded, name)  # what perform will read must match the type
    state = _SCHEDULED if run_at > now else _AVAILABLE
    if not (tags or meta or unique is not None or depends_on):  # the common case: positional, cheapest
        return NewJob(d.topic, name, encoded, state, priority, 0, max_attempts, "[]", now, run_at, "[]", "{}", None,
                      decoded)
    # ``unique``, ``depends_on`` and ``on_failure`` are not columns: what the storage layer
    # needs to check uniqueness and link dependencies.
    return NewJob(
        d.topic, name, encoded, state, priority, 0, max_attempts, "[]", now, run_at,
        encode_args(name, tags) if tags else "[]", encode_args(name, meta) if meta else "{}",
        None if unique is None else unique.key(d.topic, name, decoded),
        decoded, tags, meta, unique, tuple(depends_on), (), on_failure,
    )


def dependency_ids(depends_on: Any, owner: str) -> list[int]:
    """The job ids of a ``depends_on`` option (jobs or ids, duplicates dropped); EnqueueError otherwise."""
    if depends_on is None:
        return []
    if isinstance(depends_on, (str, bytes, Job)) or not isinstance(depends_on, (list, tuple, set, frozenset)):
        raise EnqueueError(f"depends_on of {owner} must be a list of jobs or job ids, got {depends_on!r}")
    ids: list[int] = []
    for item in depends_on:
        job_id = item.id if isinstance(item, Job) else item
        if not is_job_id(job_id):
            raise EnqueueError(f"depends_on of {owner}: {item!r} is not a job or a job id")
        if job_id not in ids:
            ids.append(job_id)
    return ids
