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

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import events
from .census import CensusCache
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

#: Counters per event: (metric suffix, help, the events that count, a predicate on the payload).
_COUNTED: tuple[tuple[str, str, tuple[str, ...], Callable[[dict[str, Any]], bool] | None], ...] = (
    ("inserted", "Jobs stored.", ("job_inserted",), None),
    ("completed", "Jobs whose perform returned a value.", ("job_completed",), None),
    ("failed", "Failed attempts (retried or discarded).", ("job_failed", "job_discarded"), None),
    ("retried", "Failed attempts that will run again.", ("job_failed",), lambda p: bool(p.get("will_retry"))),
    ("discarded", "Jobs discarded (failed for the last time, or cannot run).", ("job_discarded",), None),
    ("cancelled", "Jobs cancelled.", ("job_cancelled",), None),
    ("snoozed", "Jobs snoozed.", ("job_snoozed",), None),
    ("rescued", "Jobs put back after their node died.", ("job_rescued",), None),
)

#: Events whose ``duration`` is a run time.
_TIMED = frozenset({"job_completed", "job_failed", "job_discarded", "job_cancelled", "job_snoozed"})


class _CensusCollector(Collector):
    """The gauges read from the census (cached; see :meth:`RunnerMetrics.render`)."""

    def __init__(self, census: CensusCache, runner: Runner) -> None:
        self.census = census
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        census = self.census.latest
        runner = self.runner
        names = list(runner.settings.topics)
        jobs = GaugeMetricFamily("jobrunner_jobs", "Jobs in the table by topic and state.", labels=["topic", "state"])
        paused = GaugeMetricFamily("jobrunner_topic_paused", "1 while the topic is paused.", labels=["topic"])
        alive = GaugeMetricFamily("jobrunner_nodes_alive", "Nodes whose heartbeat is recent.")
        if census is not None:
            for topic, counts in sorted(census.counts.items()):
                for state in ALL_STATES:
                    jobs.add_metric([topic, state], counts.get(state, 0))
            for topic in names:
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

    :meth:`connect` subscribes to the lifecycle events (returns the function that
    unsubscribes); :meth:`render` answers a scrape.
    """

    def __init__(self, runner: Runner, census: CensusCache, *, max_age: float = 5.0) -> None:
        self.runner = runner
        self.census = census
        self.max_age = max_age
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["topic", "worker"]
        self._counters = {
            name: Counter(f"jobrunner_jobs_{name}", text, labels, registry=self.registry)
            for name, text, _, _ in _COUNTED
        }
        self.run_seconds = Histogram("jobrunner_job_run_seconds", "Seconds spent in perform.", labels,
                                     buckets=RUN_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("jobrunner_job_queue_wait_seconds", "Seconds from due (or enqueued) to start.",
                                    labels, buckets=WAIT_BUCKETS, registry=self.registry)
        self.claim_seconds = Histogram("jobrunner_claim_seconds", "Seconds from the claim's start to the job's start.",
                                       ["topic"], buckets=CLAIM_BUCKETS, registry=self.registry)
        self.registry.register(_CensusCollector(census, runner))

    def _receiver(self, name: str) -> Callable[..., None]:
        counted = [(self._counters[suffix], test) for suffix, _, names, test in _COUNTED if name in names]
        timed = name in _TIMED
        started = name == "job_started"
        clock = self.runner.clock

        def receive(sender: Any, **payload: Any) -> None:
            job = payload.get("job")
            if not isinstance(job, Job):
                return
            for counter, test in counted:
                if test is None or test(payload):
                    counter.labels(job.topic, job.worker).inc()
            duration = payload.get("duration")
            if timed and isinstance(duration, (int, float)):
                self.run_seconds.labels(job.topic, job.worker).observe(max(0.0, duration))
            if started and job.attempted_at is not None:
                if job.scheduled_at is not None:
                    wait = job.attempted_at - job.scheduled_at
                    self.queue_wait.labels(job.topic, job.worker).observe(max(0.0, wait))
                self.claim_seconds.labels(job.topic).observe(max(0.0, clock() - job.attempted_at))
        return receive

    def connect(self) -> Callable[[], None]:
        """Count the lifecycle events from now on; returns the function that stops it."""
        connected = []
        for signal in events.ALL_SIGNALS:
            if signal.name.startswith("job_"):
                receiver = self._receiver(signal.name)
                signal.connect(receiver, weak=False)
                connected.append((signal, receiver))

        def disconnect() -> None:
            for signal, receiver in connected:
                signal.disconnect(receiver)
        return disconnect

    async def render(self) -> bytes:
        """The metrics in Prometheus text format (the census refreshed when older than ``max_age``)."""
        await self.census.get(self.max_age)
        return await self.runner.run_read(generate_latest, self.registry)


__all__ = ["RunnerMetrics"]
