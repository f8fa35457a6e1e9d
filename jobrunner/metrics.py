"""``GET /metrics``: the runner in Prometheus text format (the official ``prometheus_client``).

Counters and histograms are fed by the lifecycle events (a counter increment per event,
no query); the gauges of jobs per topic and state, paused topics and live nodes come
from the shared, cached census (:mod:`jobrunner.census`), read at most once per scrape
interval whatever the number of scrapers. Each runner has a registry of its own, so
runners embedded side by side (tests, several runners in one process) never collide.

Metrics (``topic``/``worker`` labels as noted):

- ``jobrunner_jobs{topic,state}``: jobs in the table (gauge, every state of every topic);
- ``jobrunner_jobs_inserted_total``, ``_completed_total``, ``_failed_total`` (every failed
  attempt: retried or discarded), ``_retried_total``, ``_discarded_total``,
  ``_cancelled_total``, ``_snoozed_total``, ``_rescued_total`` ``{topic,worker}``: counters;
- ``jobrunner_job_run_seconds{topic,worker}``: time in ``perform`` (histogram);
- ``jobrunner_job_queue_wait_seconds{topic,worker}``: from when a job was due (its
  enqueue, for a job without delay) to its start (histogram);
- ``jobrunner_claim_seconds{topic}``: from the start of the claim to the job's start on
  this node: the claim statement's round trip (histogram);
- ``jobrunner_topic_running{topic}``, ``jobrunner_topic_parallelism{topic}`` (this node),
  ``jobrunner_topic_paused{topic}``, ``jobrunner_nodes_alive``: gauges.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .census import CensusCache
from .events import Observed
from .fanout import Handler
from .histogram import Histogram
from .job import ALL_STATES, Job

if TYPE_CHECKING:
    from .runner import Runner

#: Seconds: run times from a millisecond to an hour.
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
               3600.0)
#: Seconds: queue waits from a millisecond to a day.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
                86400.0)
#: Seconds: claim round trips.
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: The counters per topic and worker: (name, help).
COUNTERS = (
    ("inserted", "Jobs stored."),
    ("completed", "Jobs whose perform returned a value."),
    ("failed", "Failed attempts (retried or discarded)."),
    ("retried", "Failed attempts that will run again."),
    ("discarded", "Jobs discarded (failed for the last time, or cannot run)."),
    ("cancelled", "Jobs cancelled."),
    ("snoozed", "Jobs snoozed."),
    ("rescued", "Jobs put back after their node died."),
)
_INDEX = {name: i for i, (name, _) in enumerate(COUNTERS)}
#: The counters each event adds one to (``job_failed`` adds to ``retried`` only when it will retry).
_COUNTED: dict[str, tuple[int, ...]] = {
    "job_inserted": (_INDEX["inserted"],),
    "job_completed": (_INDEX["completed"],),
    "job_failed": (_INDEX["failed"],),
    "job_discarded": (_INDEX["failed"], _INDEX["discarded"]),
    "job_cancelled": (_INDEX["cancelled"],),
    "job_snoozed": (_INDEX["snoozed"],),
    "job_rescued": (_INDEX["rescued"],),
}
_RETRIED = _INDEX["retried"]
#: Events whose ``duration`` is a run time.
_TIMED = frozenset({"job_completed", "job_failed", "job_discarded", "job_cancelled", "job_snoozed"})


class _Series:
    """The counters and histograms of one (topic, worker)."""

    __slots__ = ("counts", "run", "wait")

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTERS)
        self.run = Histogram(RUN_BUCKETS)
        self.wait = Histogram(WAIT_BUCKETS)


class _Collector(Collector):
    """Every metric, built at scrape time from the accumulators and the cached census."""

    def __init__(self, metrics: RunnerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        with metrics.lock:
            series = {key: (list(s.counts), *s.run.read(), *s.wait.read()) for key, s in metrics.series.items()}
            claims = {topic: h.read() for topic, h in metrics.claims.items()}
        labels = ["topic", "worker"]
        for i, (name, text) in enumerate(COUNTERS):
            family = CounterMetricFamily(f"jobrunner_jobs_{name}", text, labels=labels)
            for key, (counts, *_) in sorted(series.items()):
                family.add_metric(list(key), counts[i])
            yield family
        run = HistogramMetricFamily("jobrunner_job_run_seconds", "Seconds spent in perform.", labels=labels)
        wait = HistogramMetricFamily("jobrunner_job_queue_wait_seconds", "Seconds from due (or enqueued) to start.",
                                     labels=labels)
        for key, (_, run_buckets, run_sum, wait_buckets, wait_sum) in sorted(series.items()):
            run.add_metric(list(key), run_buckets, run_sum)
            wait.add_metric(list(key), wait_buckets, wait_sum)
        claim = HistogramMetricFamily("jobrunner_claim_seconds", "Seconds from the claim's start to the job's start.",
                                      labels=["topic"])
        for topic, (buckets, total) in sorted(claims.items()):
            claim.add_metric([topic], buckets, total)
        yield from (run, wait, claim)
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        runner = self.metrics.runner
        census = self.metrics.census.latest
        jobs = GaugeMetricFamily("jobrunner_jobs", "Jobs in the table by topic and state.", labels=["topic", "state"])
        paused = GaugeMetricFamily("jobrunner_topic_paused", "1 while the topic is paused.", labels=["topic"])
        alive = GaugeMetricFamily("jobrunner_nodes_alive", "Nodes whose heartbeat is recent.")
        if census is not None:
            for topic, counts in sorted(census.counts.items()):
                for state in ALL_STATES:
                    jobs.add_metric([topic, state], counts.get(state, 0))
            for topic in runner.settings.topics:
                paused.add_metric([topic], 1.0 if topic in census.paused else 0.0)
            since = runner.clock() - runner.settings.runner.rescue_after
            alive.add_metric([], sum(1 for node in census.nodes if node.heartbeat_at >= since))
        running = GaugeMetricFamily("jobrunner_topic_running", "Jobs running on this node.", labels=["topic"])
        limit = GaugeMetricFamily("jobrunner_topic_parallelism", "The topic's parallelism on this node.",
                                  labels=["topic"])
        for topic, (now_running, parallelism) in sorted(runner.slots().items()):
            running.add_metric([topic], now_running)
            limit.add_metric([topic], parallelism)
        yield from (jobs, paused, alive, running, limit)


class RunnerMetrics:
    """The Prometheus metrics of one runner, in a registry of its own.

    :meth:`handler` and :meth:`observe_batch` observe the lifecycle events (see
    :mod:`jobrunner.fanout`);
    :meth:`render` answers a scrape. An event costs a few additions
    under a lock; the metric families are built only when scraped.
    """

    def __init__(self, runner: Runner, census: CensusCache, *, max_age: float = 5.0) -> None:
        self.runner = runner
        self.census = census
        self.max_age = max_age
        self.lock = threading.Lock()  # events arrive from worker threads too
        self.series: dict[tuple[str, str], _Series] = {}
        self.claims: dict[str, Histogram] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def _series(self, job: Job) -> _Series:
        """The series of ``job``'s topic and worker (call under the lock)."""
        key = (job.topic, job.worker)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = _Series()
        return found

    def handler(self, name: str) -> Handler | None:
        """What to do with events of the signal ``name`` (see :func:`jobrunner.fanout.subscribe`):
        those that do not come in a claim loop's batch (inserts, rescues, cancellations by
        request, external workers' outcomes)."""
        if name != "job_started" and name not in _COUNTED:
            return None
        lock, clock = self.lock, self.runner.clock

        def observe(sender: Any, payload: dict[str, Any]) -> None:
            job = payload.get("job")
            if job is not None:
                now = clock()
                with lock:
                    self._record(name, job, payload, now)
        return observe

    def observe_batch(self, sender: Any, items: Sequence[Observed]) -> None:
        """Count a claim loop's batch of job events (starts and outcomes) under one lock.

        The same as :meth:`_record` for each item, written out for the batch: a busy
        runner sends two of these events per job."""
        now = self.runner.clock()
        series = self.series
        last: tuple[str, str] | None = None
        found = _Series()  # replaced at the first item
        with self.lock:
            for item in items:
                job = item.job
                key = (job.topic, job.worker)
                if key != last:
                    last, found = key, series.get(key) or self._series(job)
                name = item.name
                if name == "job_started":
                    attempted = job.attempted_at
                    if attempted is not None:
                        if job.scheduled_at is not None:
                            found.wait.observe(attempted - job.scheduled_at)
                        self._claim(job.topic).observe(now - attempted)
                    continue
                counted = _COUNTED.get(name)
                if counted is None:
                    continue
                counts = found.counts
                for i in counted:
                    counts[i] += 1
                payload = item.payload
                if name == "job_failed" and payload.get("will_retry"):
                    counts[_RETRIED] += 1
                if name in _TIMED:
                    duration = payload.get("duration")
                    if duration is not None:
                        found.run.observe(duration)

    def _claim(self, topic: str) -> Histogram:
        """The claim histogram of ``topic`` (call under the lock)."""
        claim = self.claims.get(topic)
        if claim is None:
            claim = self.claims[topic] = Histogram(CLAIM_BUCKETS)
        return claim

    def _record(self, name: str, job: Job, payload: dict[str, Any], now: float) -> None:
        """Count one event of ``job`` (call under the lock)."""
        if name == "job_started":
            if job.attempted_at is None:
                return
            if job.scheduled_at is not None:
                self._series(job).wait.observe(max(0.0, job.attempted_at - job.scheduled_at))
            self._claim(job.topic).observe(max(0.0, now - job.attempted_at))
            return
        counted = _COUNTED.get(name)
        if counted is None:
            return
        found = self._series(job)
        for i in counted:
            found.counts[i] += 1
        if name == "job_failed" and payload.get("will_retry"):
            found.counts[_RETRIED] += 1
        duration = payload.get("duration") if name in _TIMED else None
        if duration is not None:
            found.run.observe(max(0.0, duration))

    async def render(self) -> bytes:
        """The metrics in Prometheus text format (the census refreshed when older than ``max_age``)."""
        await self.census.get(self.max_age)
        return await self.runner.in_read_thread(lambda: generate_latest(self.registry))


__all__ = ["Histogram", "RunnerMetrics"]
