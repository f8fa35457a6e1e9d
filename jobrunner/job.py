"""The Job record and its states."""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any


class JobState(enum.StrEnum):
    """Where a job is in its lifecycle.

    ``blocked``: waiting for the jobs it depends on (see ``depends_on``); never claimed
    until the transaction that completes its last dependency releases it.
    """

    SCHEDULED = "scheduled"
    BLOCKED = "blocked"
    AVAILABLE = "available"
    EXECUTING = "executing"
    RETRYABLE = "retryable"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"


ALL_STATES: tuple[str, ...] = tuple(s.value for s in JobState)
FINAL_STATES: frozenset[str] = frozenset({JobState.COMPLETED, JobState.DISCARDED, JobState.CANCELLED})
#: States an operator can retry a job from.
RETRYABLE_STATES: tuple[JobState, ...] = (JobState.DISCARDED, JobState.CANCELLED)

TIMESTAMP_FIELDS = (
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)


#: Stored times must render as ISO 8601 dates (years 1..9999, UTC): run times beyond these
#: bounds are refused at enqueue and clamped when a snooze or backoff would pass them.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 30, tzinfo=UTC).timestamp()
_FIRST_ISO = datetime.min.replace(tzinfo=UTC).isoformat()
_LAST_ISO = datetime.max.replace(tzinfo=UTC).isoformat()


def iso(ts: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 in UTC (``None`` stays ``None``).

    Never raises: a stored time outside the years 1..9999 (written by an older version
    or around jobrunner) renders as the first or last representable instant, and one
    that is not a number at all as ``None``.
    """
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat()
    except (OverflowError, ValueError, OSError, TypeError):
        if isinstance(ts, (int, float)) and not isinstance(ts, bool) and not math.isnan(ts):
            return _LAST_ISO if ts > 0 else _FIRST_ISO
        return None


class Unreadable(str):
    """Stands for a stored JSON value that cannot be decoded (bad JSON, nested too deeply).

    It renders as a string saying why, so listings never fail; a job whose arguments are
    unreadable is discarded at its next claim instead of running.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one row of the jobs table.

    Timestamps are POSIX seconds (UTC); :meth:`to_dict` renders them as ISO 8601.
    ``attempt`` is 1 during the first execution, 2 during the first retry, and so on.
    ``tags`` and ``meta`` are given at enqueue; ``progress`` (0..1, None until
    reported) is what ``perform`` last reported with :meth:`Worker.progress`.
    """

    id: int
    topic: str
    worker: str
    args: Any
    state: str
    priority: int
    attempt: int
    max_attempts: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    inserted_at: float | None = None
    scheduled_at: float | None = None
    attempted_at: float | None = None
    completed_at: float | None = None
    discarded_at: float | None = None
    cancelled_at: float | None = None
    attempted_by: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None
    unique_key: str | None = None
    #: Not a column: True when an enqueue found this job as a duplicate of the one it
    #: asked for (see ``unique``) and returned it instead of inserting.
    duplicate: bool = False

    @classmethod
    def of(cls, *values: Any) -> Job:
        """A Job from its field values in order (a fast path for claims and bulk inserts:
        the frozen ``__init__`` costs several microseconds a job). Fields not given take
        their defaults."""
        return _job_of(*values)

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied, like ``dataclasses.replace`` but several times
        faster (events take a snapshot of every job that changes state)."""
        if type(self) is not Job:  # a subclass may have slots of its own
            return replace(self, **changes)
        new = _job_of(*_all_values(self))
        for name, value in changes.items():
            _set_attribute(new, name, value)  # AttributeError for a name that is not a field
        return new

    def to_dict(self) -> dict[str, Any]:
        """The job as a JSON-ready dict with ISO 8601 timestamps."""
        return {
            "id": self.id,
            "topic": self.topic,
            "worker": self.worker,
            "args": self.args,
            "state": self.state,
            "priority": self.priority,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "errors": self.errors,
            "result": self.result,
            "inserted_at": iso(self.inserted_at),
            "scheduled_at": iso(self.scheduled_at),
            "attempted_at": iso(self.attempted_at),
            "completed_at": iso(self.completed_at),
            "discarded_at": iso(self.discarded_at),
            "cancelled_at": iso(self.cancelled_at),
            "attempted_by": self.attempted_by,
            "tags": self.tags,
            "meta": self.meta,
            "progress": self.progress,
        }


# Job.evolve copies the slots directly, bypassing the frozen __init__.
_FIELD_NAMES = tuple(f.name for f in fields(Job))
_SLOT_SETTERS = tuple(Job.__dict__[name].__set__ for name in _FIELD_NAMES)
_all_values = operator.attrgetter(*_FIELD_NAMES)
_new_job = object.__new__
_set_attribute = object.__setattr__


def _compile_job_of() -> Callable[..., Job]:
    """``Job.of`` as straight-line code, generated once (as dataclasses builds ``__init__``):
    a loop over the slots costs twice as much, and every claimed or inserted job pays it."""
    names: list[str] = []
    scope: dict[str, Any] = {"_new": _new_job, "_Job": Job, "_MISSING": MISSING}
    for i, f in enumerate(fields(Job)):
        scope[f"_set{i}"] = _SLOT_SETTERS[i]
        if f.default_factory is not MISSING:
            scope[f"_factory{i}"] = f.default_factory
            names.append(f"{f.name}=_MISSING")
        elif f.default is not MISSING:
            scope[f"_default{i}"] = f.default
            names.append(f"{f.name}=_default{i}")
        else:
            names.append(f.name)
    lines = [f"def job_of({', '.join(names)}):", "    new = _new(_Job)"]
    for i, f in enumerate(fields(Job)):
        value = f"(_factory{i}() if {f.name} is _MISSING else {f.name})" if f.default_factory is not MISSING else f.name
        lines.append(f"    _set{i}(new, {value})")
    lines.append("    return new")
    exec("\n".join(lines), scope)  # the source is built above from Job's own fields
    job_of: Callable[..., Job] = scope["job_of"]
    return job_of


_job_of = _compile_job_of()


#: The largest job id (ids are signed 64-bit integers in both databases).
MAX_JOB_ID = 2**63 - 1


def is_job_id(value: object) -> bool:
    """True when ``value`` is an integer a job can have as its id (1 … 2**63 - 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_JOB_ID
