"""The Runner: the embedding API and the root supervisor of every topic."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus

from . import config as config_module, events
from .config import Settings
from .enqueue import WorkerDefaults, build_row, job_defaults
from .errors import ConfigError, JobStateError, MigrationError
from .executor import Executor
from .external import ExternalTopics
from .housekeeping import Housekeeper
from .job import Job, is_job_id
from .producer import Producer
from .store import Store
from .summary import report_throughput
from .supervisor import TopicSupervisor
from .watcher import CommitWatcher
from .worker import Worker, current_settings

logger = logging.getLogger("jobrunner.runner")

T = TypeVar("T")

#: One item of :meth:`Runner.enqueue_many`: (worker, args) or (worker, args, options).
EnqueueItem = tuple[type[Worker] | str, Any] | tuple[type[Worker] | str, Any, Mapping[str, Any]]


async def _run_in_scope(scope: anyio.CancelScope, fn: Callable[[], Awaitable[Any]]) -> None:
    with scope:
        await fn()


#: Threads serving read-only user queries (HTTP listings, stats) at once.
READ_THREADS = 4


def default_node_id() -> str:
    """A node id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def import_modules(settings: Settings) -> None:
    """Import ``[runner] modules`` so their Workers exist, resolving names from the config's folder."""
    if settings.base_dir is not None and str(settings.base_dir) not in sys.path:
        sys.path.insert(0, str(settings.base_dir))
    for name in settings.runner.modules:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:
            raise ConfigError(
                f"{settings.source}: [runner] modules: importing {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


class Runner:
    """Runs every configured topic and enqueues jobs.

    ``Runner.from_config("config.toml")`` or ``Runner(settings)``. Enqueue from sync code
    with :meth:`enqueue` / :meth:`enqueue_many`, from async code with
    :meth:`enqueue_async` / :meth:`enqueue_many_async`; ``await runner.run()``
    supervises every topic until ``await runner.stop()`` or cancellation.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.store = Store(settings.database)
        self.node = settings.runner.node or default_node_id()
        self._producers: dict[str, Producer] = {}
        self._supervisors: dict[str, TopicSupervisor] = {}
        self._stop_requested: anyio.Event | None = None
        self._finished: anyio.Event | None = None
        self._db_limiter: anyio.CapacityLimiter | None = None
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._external: ExternalTopics | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        #: True once the schema is known to be current (checked once per runner).
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Runner:
        """A runner configured from a TOML file (see :func:`jobrunner.config.load`)."""
        return cls(config_module.load(path), **kwargs)

    # ------------------------------------------------------------ enqueue

    def enqueue(
        self,
        worker: type[Worker] | str,
        args: Any = None,
        *,
        priority: int | str | None = None,
        delay: float | None = None,
        scheduled_at: Any = None,
        max_attempts: int | None = None,
        topic: str | None = None,
    ) -> Job:
        """Store one job and return it. Raises EnqueueError, storing nothing, on bad input.

        ``priority`` is 0 (highest) .. 9 or ``"critical"``, ``"high"``, ``"normal"``,
        ``"low"``. ``topic`` names a topic declared ``external = true`` to enqueue for
        its external workers (``worker`` is then any name they understand); for a
        Worker class it must be the worker's own topic.
        """
        options = {"priority": priority, "delay": delay, "scheduled_at": scheduled_at,
                   "max_attempts": max_attempts, "topic": topic}
        return self.store_rows([build_row(self.settings, worker, args, options, self.clock())])[0]

    def enqueue_many(self, items: Iterable[EnqueueItem]) -> list[Job]:
        """Store many jobs in one transaction; all or none. Returns them in the order given.

        Each item is ``(worker, args)`` or ``(worker, args, options)``; options are the
        keyword arguments of :meth:`enqueue` (``priority``, ``delay``, ``scheduled_at``,
        ``max_attempts``, ``topic``).
        """
        return self.store_rows(self._rows(items))

    async def enqueue_async(
        self,
        worker: type[Worker] | str,
        args: Any = None,
        *,
        priority: int | str | None = None,
        delay: float | None = None,
        scheduled_at: Any = None,
        max_attempts: int | None = None,
        topic: str | None = None,
    ) -> Job:
        """Like :meth:`enqueue`, without blocking the event loop."""
        options = {"priority": priority, "delay": delay, "scheduled_at": scheduled_at,
                   "max_attempts": max_attempts, "topic": topic}
        row = build_row(self.settings, worker, args, options, self.clock())
        return (await self.run_db(self.store_rows, [row]))[0]

    async def enqueue_many_async(self, items: Iterable[EnqueueItem]) -> list[Job]:
        """Like :meth:`enqueue_many`, without blocking the event loop."""
        rows = self._rows(items)
        return await self.run_db(self.store_rows, rows)

    def _rows(self, items: Iterable[EnqueueItem]) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        resolved: dict[tuple[Any, Any], WorkerDefaults] = {}
        for item in items:
            worker, args, *rest = item
            options = rest[0] if rest else None
            topic = options.get("topic") if isinstance(options, Mapping) else None
            defaults = resolved.get((worker, topic))
            if defaults is None:
                defaults = resolved[(worker, topic)] = job_defaults(self.settings, worker, topic)
            rows.append(build_row(self.settings, worker, args, options, now, defaults))
        return rows

    def store_rows(self, rows: Sequence[dict[str, Any]]) -> list[Job]:
        """Insert rows made by :func:`jobrunner.enqueue.build_row` in one transaction,
        announce them, and wake the topics that can start them now."""
        stored = self._storage.insert_jobs(rows)
        if events.wanted(events.job_inserted):
            for job in stored:
                events.emit(events.job_inserted, job.topic, job=job)
        for topic in {job.topic for job in stored if job.state == "available"}:
            self._wake(topic)
        return stored

    def _wake(self, topic: str) -> None:
        producer = self._producers.get(topic)
        if producer is not None:
            producer.notify()  # thread-safe
        elif self._external is not None and self._external.topic(topic) is not None:
            self._in_loop(self._external.notify, topic)

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` on the running loop's thread (directly when already there)."""
        if self._token is None or threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        try:
            anyio.from_thread.run_sync(fn, *args, token=self._token)
        except RuntimeError:
            pass  # the loop has finished: nothing left to wake

    # ------------------------------------------------------------ queries

    def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None (also for ids no job can have, like 0 or 2**63)."""
        if not is_job_id(job_id):
            return None
        return self._storage.get_job(job_id)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counts per topic and state, every state present for every configured topic."""
        return self._storage.stats(self.settings.topics)

    def slots(self) -> dict[str, tuple[int, int]]:
        """Per topic run by this node's own workers: jobs running here and its parallelism."""
        return {name: (producer.running, producer.parallelism) for name, producer in list(self._producers.items())}

    # ------------------------------------------------------------ running

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking storage call in a worker thread (SQLite writes queue here, one at a time)."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._db_limiter)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking read-only storage call (user queries) in a worker thread.

        Reads have threads of their own, so a flood of them never delays the claim/ack
        path or the heartbeat, and they never wait behind writes.
        """
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._read_limiter)

    def migrate(self) -> list[Any]:
        """Apply pending schema migrations."""
        applied = self.store.migrate()
        self._schema_ready = True
        return applied

    @property
    def _storage(self) -> Store:
        """The store, once the schema is known to be current."""
        if not self._schema_ready:
            self.ensure_schema()
        return self.store

    def ensure_schema(self) -> None:
        """Make sure the schema is current before this runner first uses the database.

        Enqueueing, queries and :meth:`run` call it; it does its work once per runner.
        With ``[database] auto_migrate`` (the default) pending migrations are applied
        (safe when several processes start at once); without it a database that needs
        them raises MigrationError naming ``python -m jobrunner migrate``.
        """
        with self._schema_lock:
            if self._schema_ready:
                return
            pending = self.store.pending_migrations()
            if pending and not self.settings.database.auto_migrate:
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
                raise MigrationError(
                    f"database {self.settings.database.url!r} needs migrations ({names}) and "
                    f"[database] auto_migrate is false: run `python -m jobrunner migrate` first"
                )
            if pending:
                self.store.migrate()
            self._schema_ready = True

    @property
    def running(self) -> bool:
        """True between the start of :meth:`run` and its end."""
        return self._finished is not None and not self._finished.is_set()

    def supervisor(self, topic: str) -> TopicSupervisor:
        """The supervisor of a running topic."""
        return self._supervisors[topic]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Migrate, import ``[runner] modules``, then supervise every topic until stopped.

        Reports ready (``task_status.started()``, event ``runner_started``) once every
        topic is claiming.
        """
        if self.running:
            raise RuntimeError("this runner is already running")
        self._stop_requested = anyio.Event()
        self._finished = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        # Job tasks inherit this context: workers read their topic's options from it.
        settings_token = current_settings.set(self.settings)
        self._external = ExternalTopics(self.settings, self.store, self.run_db, self.clock)
        # SQLite takes one writer at a time: queue our own writes here, not on its lock.
        self._db_limiter = anyio.CapacityLimiter(1 if self.store.serial_writes else 8)
        self._read_limiter = anyio.CapacityLimiter(READ_THREADS)
        housekeeper = Housekeeper(
            self.store, self.settings.runner, self.node, self.run_db, self._wake_topics, self.clock
        )
        try:
            await self.run_db(self.ensure_schema)
            import_modules(self.settings)
            await housekeeper.register()
            try:
                await self._supervise(task_status, housekeeper)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await housekeeper.unregister()
                    except Exception as exc:  # noqa: BLE001 - the node row then simply expires
                        logger.warning("could not unregister node %s: %s", self.node, exc)
        finally:
            current_settings.reset(settings_token)
            self._producers.clear()
            self._token = self._loop_thread = None
            self._finished.set()

    async def _supervise(self, task_status: TaskStatus[None], housekeeper: Housekeeper) -> None:
        assert self._stop_requested is not None
        topics = list(self.settings.topics)
        async with anyio.create_task_group() as outer:
            uninstall = events.install_async_host(events.AsyncReceiverHost(outer))
            try:
                watcher, keeper, serving = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
                outer.start_soon(self._watch_commits, watcher)
                outer.start_soon(_run_in_scope, keeper, housekeeper.run)
                assert self._external is not None
                outer.start_soon(_run_in_scope, serving, self._external.run)
                summarising = anyio.CancelScope()
                if self.settings.runner.summary_interval > 0:
                    outer.start_soon(_run_in_scope, summarising, functools.partial(
                        report_throughput, self._producers, self.settings.runner.summary_interval))
                http_stop = anyio.Event()
                if self.settings.http.enabled:
                    # Imported here: commands that serve no HTTP never load the HTTP stack.
                    from .http import create_app, serve as serve_http

                    app = create_app(self, self._external, self.settings.http)
                    outer.start_soon(serve_http, app, self.settings.http, http_stop,
                                     self.settings.runner.shutdown_grace)
                async with anyio.create_task_group() as topic_group:
                    for name, topic in self.settings.topics.items():
                        if topic.external:
                            continue
                        producer = Producer(
                            topic, self.store, self.node, self.run_db,
                            Executor(topic, anyio.CapacityLimiter(topic.parallelism), self.clock),
                            self.clock,
                        )
                        supervisor = TopicSupervisor(producer, self.settings.runner)
                        self._producers[name] = producer
                        self._supervisors[name] = supervisor
                        await topic_group.start(supervisor.run)
                    events.emit(events.runner_started, self.node, topics=topics)
                    task_status.started()
                    await self._stop_requested.wait()
                    self._external.stop()
                    for supervisor in self._supervisors.values():
                        supervisor.stop()
                watcher.cancel()
                keeper.cancel()
                serving.cancel()
                summarising.cancel()
                http_stop.set()
                # Give async receivers still running a bounded time to finish.
                outer.cancel_scope.deadline = anyio.current_time() + self.settings.runner.shutdown_grace
            finally:
                uninstall()
                events.emit(events.runner_stopped, self.node, topics=topics)

    async def _watch_commits(self, scope: anyio.CancelScope) -> None:
        """Wake every producer when another process commits (where the store can tell)."""
        interval = self.settings.database.watch_interval
        probe = self.store.change_probe() if interval > 0 else None
        if probe is None:
            return
        with scope:
            await CommitWatcher(probe, interval, self._notify_all).run()

    def _notify_all(self) -> None:
        for producer in self._producers.values():
            producer.notify_external()
        if self._external is not None:
            self._external.notify()

    def _wake_topics(self, jobs: list[Job]) -> None:
        for topic in {job.topic for job in jobs}:
            self._wake(topic)

    # ------------------------------------------------------------ operator actions

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished (a running one is interrupted; on another
        node within its poll interval). Returns the cancelled job, None if unknown;
        raises JobStateError when the job had already finished."""
        if not is_job_id(job_id):
            return None
        job, changed = self._storage.cancel_job(job_id, self.clock())
        if job is not None and not changed:
            raise JobStateError(f"job {job_id} is already {job.state}")
        if job is not None:
            self._in_loop(self._cancel_here, job)
        return job

    def _cancel_here(self, job: Job) -> None:
        producer = self._producers.get(job.topic)
        if producer is None or not producer.cancel_job(job.id):
            # Not running here: announce it (a running job is announced when it stops).
            events.emit(events.job_cancelled, job.topic, job=job, reason="cancelled by request", duration=None)

    def retry_jobs(
        self, ids: Iterable[int] | None = None, *, topic: str | None = None,
        states: Iterable[str] = ("discarded", "cancelled"),
    ) -> list[int]:
        """Make discarded or cancelled jobs available again (by id, or by topic and state)."""
        if ids is not None:
            ids = [job_id for job_id in ids if is_job_id(job_id)]  # others name no job
        retried = self._storage.retry_jobs(self.clock(), ids=ids, topic=topic, states=states)
        for name in self.settings.topics:
            self._wake(name)
        return retried

    def pause(self, topic: str) -> None:
        """Stop claiming jobs of ``topic`` on every node (running jobs finish)."""
        self.settings.topic(topic)
        self._storage.set_paused(topic, True, self.clock())
        self._control_changed(topic)

    def resume(self, topic: str) -> None:
        """Claim jobs of ``topic`` again."""
        self.settings.topic(topic)
        self._storage.set_paused(topic, False, self.clock())
        self._control_changed(topic)

    def _control_changed(self, topic: str) -> None:
        producer = self._producers.get(topic)
        if producer is not None:
            producer.notify_external()  # thread-safe

    async def stop(self) -> None:
        """Stop gracefully: claim nothing more, let running jobs finish within
        ``shutdown_grace``, put the rest back, and return once :meth:`run` has ended."""
        if self._stop_requested is None or self._finished is None:
            return
        self._stop_requested.set()
        await self._finished.wait()

    def request_stop(self) -> None:
        """Ask a running runner to stop without waiting (safe from signal handlers in the loop)."""
        if self._stop_requested is not None:
            self._stop_requested.set()


__all__ = ["Runner", "default_node_id", "import_modules"]
