"""The dashboard's live feed: events aggregated on the server, deltas pushed once a second.

Lifecycle events only touch memory here (a bucket increment, a job summary kept by id);
nothing is read from the database per event or per client. Once a second, while at
least one dashboard is open, one of the open streams (whichever gets there first) turns
what changed into one delta message that every stream then sends: the jobs that changed,
the outcome buckets that moved, and the topic table (counts from the shared census,
refreshed when events say something changed; see :mod:`jobrunner.census`). With no
dashboard open nothing ticks at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..census import CensusCache
from ..events import Observed
from ..fanout import Handler
from ..job import Job
from ..storage.records import Census

if TYPE_CHECKING:
    from ..runner import Runner

#: Seconds per bucket of the throughput chart, and how many buckets it shows (10 minutes).
BUCKET = 5
HISTORY = 120
#: Seconds between deltas.
TICK = 1.0
#: The oldest census a delta shows after events changed the table: counts while jobs flow
#: may lag this much (a pause or retry from the page is shown at the next tick).
BUSY_CENSUS_AGE = 2.0
#: Changed jobs one delta carries at most; past that it carries none and says ``overflow``:
#: the pages then reload their tables, which costs less than rows nobody will draw.
MAX_CHANGED = 500
#: Deltas kept for streams that fell behind; one further behind gets a new snapshot.
KEPT = 30
#: Empty ticks between keep-alive comments.
KEEPALIVE_TICKS = 15

#: The outcome events the chart counts: event -> failed.
_OUTCOMES = {"job_completed": False, "job_failed": True, "job_discarded": True}
_FINISHED_AT = {"completed": "completed_at", "discarded": "discarded_at", "cancelled": "cancelled_at"}


def job_summary(job: Job) -> dict[str, Any]:
    """A job as a row of the dashboard's jobs table (times in epoch seconds)."""
    return {"id": job.id, "topic": job.topic, "worker": job.worker, "state": job.state, "priority": job.priority,
            "attempt": job.attempt, "max_attempts": job.max_attempts, "inserted_at": job.inserted_at,
            "scheduled_at": job.scheduled_at, "attempted_at": job.attempted_at, "completed_at": job.completed_at,
            "discarded_at": job.discarded_at, "cancelled_at": job.cancelled_at, "attempted_by": job.attempted_by}


class Rates:
    """Outcomes per topic in :data:`BUCKET`-second buckets over :data:`HISTORY` buckets."""

    def __init__(self) -> None:
        #: topic -> bucket start -> [completed, failed]
        self._buckets: dict[str, dict[int, list[int]]] = {}
        self._touched: set[tuple[str, int]] = set()

    def add(self, topic: str, now: float, completed: int, failed: int) -> None:
        """Count outcomes of ``topic`` at ``now``: ``completed`` ones and ``failed`` ones."""
        start = int(now) // BUCKET * BUCKET
        buckets = self._buckets.setdefault(topic, {})
        counts = buckets.get(start)
        if counts is None:
            counts = buckets[start] = [0, 0]
            oldest = start - BUCKET * HISTORY
            for old in [b for b in buckets if b <= oldest]:
                del buckets[old]
        counts[0] += completed
        counts[1] += failed
        self._touched.add((topic, start))

    def history(self) -> dict[str, list[list[int]]]:
        """Every kept bucket: topic -> [[start, completed, failed], ...]."""
        return {topic: [[start, *counts] for start, counts in sorted(buckets.items())]
                for topic, buckets in self._buckets.items()}

    def take_touched(self) -> dict[str, list[list[int]]]:
        """The buckets changed since the last call, with their totals."""
        touched, self._touched = self._touched, set()
        found: dict[str, list[list[int]]] = {}
        for topic, start in sorted(touched):
            counts = self._buckets.get(topic, {}).get(start)
            if counts is not None:
                found.setdefault(topic, []).append([start, *counts])
        return found


class LiveBoard:
    """Aggregates one runner's events for the dashboards open on it."""

    def __init__(self, runner: Runner, census: CensusCache) -> None:
        self.runner = runner
        self.census = census
        self.rates = Rates()
        self._lock = threading.Lock()  # events arrive from worker threads too
        #: Jobs changed since the last tick, newest last: the job after its change, or the
        #: batch item that makes it (see :meth:`observe_batch`).
        self._changed: dict[int, Job | Observed] = {}
        self._overflow = False
        self._dirty = 0.0  # monotonic time of the first change the census may not show yet; 0: none
        self._poked = False
        self._seq = 0
        self._kept: deque[tuple[int, str | None]] = deque(maxlen=KEPT)
        self._ticking: anyio.Event | None = None
        self._next_tick = 0.0
        self._last_topics = ""
        self.streams = 0

    # ------------------------------------------------------------ events

    def handler(self, name: str) -> Handler | None:
        """What to do with events of the signal ``name`` (see :func:`jobrunner.fanout.subscribe`):
        those that do not come in a claim loop's batch."""
        outcome = _OUTCOMES.get(name)

        def receive(sender: Any, payload: dict[str, Any]) -> None:
            job = payload.get("job")
            if (outcome is None and not self.streams) or not isinstance(job, Job):
                self._dirty = self._dirty or time.monotonic()  # the common case while nobody looks
                return
            now = self.runner.clock()
            with self._lock:
                self._note(job, outcome, job, now)
        return receive

    def observe_batch(self, sender: Any, items: Sequence[Observed]) -> None:
        """Take a claim loop's batch of job events under one lock: the chart counts its
        outcomes at once, and the changes are kept only while a dashboard is open (their
        rows are made at the next tick)."""
        now = self.runner.clock()
        completed = failed = 0
        topic = ""  # a batch comes from the claim loop of one topic
        for item in items:
            outcome = _OUTCOMES.get(item.name)
            if outcome is not None:
                topic = item.job.topic
                if outcome:
                    failed += 1
                else:
                    completed += 1
        keep = self.streams and not self._overflow
        with self._lock:
            self._dirty = self._dirty or time.monotonic()
            if topic:
                self.rates.add(topic, now, completed, failed)
            if keep:
                for item in items:
                    self._keep(item.job.id, item)

    def _note(self, job: Job, outcome: bool | None, change: Job | Observed, now: float) -> None:
        """Count an outcome (``outcome``: failed or not; None: not an outcome) and keep the
        change for the open dashboards (call under the lock)."""
        self._dirty = self._dirty or time.monotonic()
        if outcome is not None:
            self.rates.add(job.topic, now, 0 if outcome else 1, 1 if outcome else 0)
        if self.streams:
            self._keep(job.id, change)

    def _keep(self, job_id: int, change: Job | Observed) -> None:
        """Keep the change of ``job_id`` for the next delta (call under the lock)."""
        changed = self._changed
        if self._overflow:
            return  # the pages reload their tables: no row is kept until the next tick
        if len(changed) >= MAX_CHANGED and job_id not in changed:
            self._overflow = True
            changed.clear()
            return
        changed.pop(job_id, None)  # re-inserted: the newest change last
        changed[job_id] = change

    def poke(self) -> None:
        """Something changed that sends no event (a pause, a retry): read the census again
        for the next delta."""
        self._dirty = self._dirty or time.monotonic()
        self._poked = True

    # ------------------------------------------------------------ views

    def topics_view(self, census: Census) -> dict[str, Any]:
        """Per configured topic: counts, paused, running here / parallelism, external."""
        slots = self.runner.slots()
        view = {}
        for name, topic in self.runner.settings.topics.items():
            running, parallelism = slots.get(name, (None, topic.parallelism))
            view[name] = {"counts": census.counts.get(name, {}), "paused": name in census.paused,
                          "running_here": running, "parallelism": parallelism, "external": topic.external}
        return view

    def nodes_view(self, census: Census) -> list[dict[str, Any]]:
        """Every node row, with whether its heartbeat is recent enough to count as alive."""
        since = self.runner.clock() - self.runner.settings.runner.rescue_after
        return [{"node": n.node, "started_at": n.started_at, "heartbeat_at": n.heartbeat_at,
                 "alive": n.heartbeat_at >= since, "this": n.node == self.runner.node} for n in census.nodes]

    async def snapshot(self) -> dict[str, Any]:
        """Everything a dashboard shows but the jobs table."""
        census = await self.census.get(TICK)
        with self._lock:
            history = self.rates.history()
        return {"seq": self._seq, "now": self.runner.clock(), "node": self.runner.node, "bucket": BUCKET,
                "history": HISTORY, "topics": self.topics_view(census), "nodes": self.nodes_view(census),
                "rates": history}

    # ------------------------------------------------------------ ticking

    async def _tick(self) -> None:
        with self._lock:
            kept, self._changed = list(self._changed.values()), {}
            overflow, self._overflow = self._overflow, False
            dirty, self._dirty = self._dirty, 0.0
            poked, self._poked = self._poked, False
            rates = self.rates.take_touched()
        changed = [job_summary(c if isinstance(c, Job) else c.snapshot) for c in kept]
        census = await self.census.get(0.0 if poked else BUSY_CENSUS_AGE if dirty else 10 * TICK)
        if dirty and self.census.read_since < dirty:
            with self._lock:  # the census is rationed (see jobrunner.census): try at the next tick
                self._dirty = min(self._dirty or dirty, dirty)
        topics = self.topics_view(census)
        nodes = self.nodes_view(census)
        encoded_topics = json.dumps([topics, [(n["node"], n["alive"]) for n in nodes]], sort_keys=True)
        delta: dict[str, Any] = {}
        if encoded_topics != self._last_topics:
            self._last_topics = encoded_topics
            delta.update(topics=topics, nodes=nodes)
        if changed:
            delta["jobs"] = changed
        if overflow:
            delta["overflow"] = True
        if rates:
            delta["rates"] = rates
        self._seq += 1
        text = None
        if delta:
            delta.update(seq=self._seq, now=self.runner.clock())
            text = f"event: delta\ndata: {json.dumps(delta, default=str)}\n\n"
        self._kept.append((self._seq, text))

    async def _advance(self, seq: int) -> None:
        """Wait until a delta newer than ``seq`` exists, making it when it is due."""
        while self._seq <= seq:
            ticking = self._ticking
            if ticking is not None:
                await ticking.wait()
                continue
            ticking = self._ticking = anyio.Event()
            try:
                await anyio.sleep(max(0.0, self._next_tick - time.monotonic()))
                self._next_tick = time.monotonic() + TICK
                await self._tick()
            finally:
                self._ticking = None
                ticking.set()

    async def stream(self, stopping: anyio.Event) -> AsyncIterator[str]:
        """The server-sent events of one open dashboard: a ``snapshot``, then ``delta``
        messages, until ``stopping`` is set."""
        self.streams += 1
        try:
            snapshot = await self.snapshot()
            seq = snapshot["seq"]
            yield f"event: snapshot\ndata: {json.dumps(snapshot, default=str)}\n\n"
            quiet = 0
            while not stopping.is_set():
                await self._advance(seq)
                missed = [(s, text) for s, text in self._kept if s > seq]
                if not missed or missed[0][0] != seq + 1:  # fell too far behind: start again
                    snapshot = await self.snapshot()
                    seq = snapshot["seq"]
                    yield f"event: snapshot\ndata: {json.dumps(snapshot, default=str)}\n\n"
                    continue
                seq = missed[-1][0]
                texts = [text for _, text in missed if text is not None]
                quiet = 0 if texts else quiet + len(missed)
                for text in texts:
                    yield text
                if quiet >= KEEPALIVE_TICKS:
                    quiet = 0
                    yield ": keep-alive\n\n"
        finally:
            self.streams -= 1


__all__ = ["BUCKET", "HISTORY", "LiveBoard", "Rates", "job_summary"]
