"""The typed values the storage API takes and returns (all frozen)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..job import Job, JobState, iso
from ..limits import TopicLimits
from ..transitions import Transition


class NewJob(NamedTuple):
    """One row to insert into the jobs table (JSON columns already encoded).

    A named tuple: immutable like the other records, and several times cheaper to make
    than a frozen dataclass, which counts on the enqueue path.

    Made by :func:`jobrunner.enqueue.build_row`. ``decoded_args`` (and ``decoded_tags``,
    ``decoded_meta``) optionally hold the values already decoded (None: not given), which
    saves decoding them again after a bulk insert. The fields after those are not columns:
    ``unique`` (a :class:`jobrunner.unique.Unique`: look for a duplicate first),
    ``depends_on`` (ids of stored jobs), ``depends_on_rows`` (indexes of earlier rows of the
    same insert) and ``on_failure`` (``cancel`` or ``run``); see
    :meth:`jobrunner.storage.scheduling.SchedulingVerbs.insert_linked`.
    """

    topic: str
    worker: str
    args: str
    state: str
    priority: int
    attempt: int
    max_attempts: int
    errors: str
    inserted_at: float
    scheduled_at: float
    tags: str = "[]"
    meta: str = "{}"
    unique_key: str | None = None
    decoded_args: Any = None
    decoded_tags: list[str] | None = None
    decoded_meta: dict[str, Any] | None = None
    unique: Any = None
    depends_on: tuple[int, ...] = ()
    depends_on_rows: tuple[int, ...] = ()
    on_failure: str = "cancel"

    @property
    def linked(self) -> bool:
        """True when inserting this row needs a look-up first (unique, or dependencies)."""
        return self.unique is not None or bool(self.depends_on) or bool(self.depends_on_rows)


class Ack(NamedTuple):
    """One finished execution to record: ``job`` leaves ``executing`` by ``transition``.

    A named tuple, like :class:`NewJob`: one is made for every job run.

    ``at`` is the transition's time (the retry or snooze time for those); ``result``
    and ``errors`` are JSON text. The write only applies while the row is still
    ``executing`` at ``job.attempt``: otherwise the job was rescued or cancelled
    meanwhile, and it is not overwritten.
    """

    transition: Transition
    job: Job
    at: float | None = None
    result: str | None = None
    errors: str | None = None

    @property
    def kind(self) -> Transition:
        """The transition (the name the summary and the logs use)."""
        return self.transition


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a producer asks of one claim/ack cycle besides writing its acks.

    Claim up to ``limit`` jobs of ``topic`` for ``node`` at ``now``; with ``stage``,
    first make due scheduled and retryable jobs available; with ``running`` (the
    producer's (id, attempt) executions), first read the topic's control, and with
    ``parallelism`` (the configured one) cap the claim to the parallelism in force (the
    one the topic was scaled to, else that) minus ``taken`` (the producer's slots in
    use); with ``limits``, claim only what the topic's limits across nodes let start.
    """

    topic: str
    limit: int
    node: str
    now: float
    stage: bool = False
    running: Sequence[tuple[int, int]] | None = None
    parallelism: int | None = None
    taken: int = 0
    limits: TopicLimits | None = None


@dataclass(frozen=True, slots=True)
class TopicControl:
    """What a producer must obey right now: pause; running jobs cancelled elsewhere;
    running jobs it no longer owns (rescued, retried or claimed again meanwhile); and the
    parallelism the topic was scaled to (None: the configured one)."""

    paused: bool
    cancelled: frozenset[int]
    lost: frozenset[int] = frozenset()
    parallelism: int | None = None


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one claim/ack cycle did.

    ``applied[i]`` says whether the i-th ack was written (False: its job had left
    ``executing`` at that attempt); ``claimed`` are the jobs claimed, in priority then
    FIFO order; ``control`` is the topic's control when it was asked for; ``retry_at``,
    when a rate limit held jobs back, is when its window next has room.
    """

    applied: tuple[bool, ...]
    claimed: list[Job]
    control: TopicControl | None = None
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A job held by an external worker until ``expires_at``; ``token`` proves it holds it."""

    job: Job
    holder: str
    expires_at: float
    token: str


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One live node: its id, when it started, its last heartbeat, its topics and how many
    jobs of each topic it is executing now."""

    node: str
    started_at: float
    heartbeat_at: float
    topics: list[str]
    running: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The node as a JSON object (timestamps ISO 8601, UTC)."""
        return {"node": self.node, "started_at": iso(self.started_at), "heartbeat_at": iso(self.heartbeat_at),
                "topics": self.topics, "running": self.running, "running_total": sum(self.running.values())}


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One row of the nodes table: a runner process and its last heartbeat."""

    node: str
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class Census:
    """What the table says at ``taken_at``: jobs per topic and state, paused topics, nodes."""

    counts: dict[str, dict[str, int]]
    paused: frozenset[str]
    nodes: tuple[NodeRow, ...]
    taken_at: float


def judge_running(
    running: Iterable[tuple[int, int]], node: str, rows: Iterable[Sequence[Any]]
) -> tuple[frozenset[int], frozenset[int]]:
    """Split our running (id, attempt) pairs by their rows (id, state, attempt, attempted_by)
    into those cancelled and those no longer ours."""
    mine = dict(running)
    seen = {row[0]: row for row in rows}
    cancelled, lost = set(), set()
    for job_id, attempt in mine.items():
        row = seen.get(job_id)
        if row is not None and row[1] == JobState.CANCELLED:
            cancelled.add(job_id)
        elif row is None or not (row[1] == JobState.EXECUTING and row[2] == attempt and row[3] == node):
            lost.add(job_id)
    return frozenset(cancelled), frozenset(lost)


__all__ = [
    "Ack", "Census", "ClaimRequest", "CycleResult", "Lease", "NewJob", "NodeInfo", "NodeRow", "TopicControl",
    "judge_running",
]
