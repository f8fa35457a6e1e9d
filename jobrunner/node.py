"""One run of a :class:`~jobrunner.Runner` on an event loop: the running node.

The supervision tree (a topic supervisor per topic, each with its producer and job
tasks), the housekeeper (heartbeat, rescue, pruning), the commit watcher, the external
topics and the HTTP API, and the wake-ups that reach them from other threads.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from . import events
from .config import Settings
from .context import current_progress, current_settings
from .cron import CronScheduler, schedules as cron_schedules
from .errors import ConfigError
from .executor import Executor
from .external import ExternalTopics
from .housekeeping import Housekeeper
from .job import Job
from .loop import EventLoop
from .producer import Producer
from .storage import INSERTED
from .summary import report_throughput
from .supervisor import TopicSupervisor
from .watcher import CommitWatcher

if TYPE_CHECKING:
    from .runner import Runner

logger = logging.getLogger("jobrunner.runner")


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


def announce_cancelled(job: Job) -> None:
    """Emit ``job_cancelled`` for a job cancelled while it was not running here (a
    running job is announced when it stops)."""
    events.emit(events.job_cancelled, job.topic, job=job, reason="cancelled by request", duration=None)


async def _run_in_scope(scope: anyio.CancelScope, fn: Callable[[], Awaitable[Any]]) -> None:
    with scope:
        await fn()


class Node:
    """What runs while :meth:`Runner.run` runs; made inside the event loop, for one run.

    Its methods that take a topic or a job may be called from any thread: they hop onto
    the loop's thread where they touch the loop's objects.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.id = runner.node
        self.loop = EventLoop.current()
        self.producers: dict[str, Producer] = {}
        self.supervisors: dict[str, TopicSupervisor] = {}
        self.external = ExternalTopics(self.settings, runner.storage, runner.clock)
        self._stop_requested = anyio.Event()
        self._finished = anyio.Event()

    @property
    def running(self) -> bool:
        """True until :meth:`run` has ended."""
        return not self._finished.is_set()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop_requested.is_set()

    async def stop(self) -> None:
        """Stop gracefully and return once :meth:`run` has ended (see :meth:`Runner.stop`)."""
        self._stop_requested.set()
        await self._finished.wait()

    # ------------------------------------------------------------ from any thread

    def wake(self, topic: str) -> None:
        """Jobs of ``topic`` may be claimable now: wake its producer or its waiting claims."""
        producer = self.producers.get(topic)
        if producer is not None:
            producer.notify()  # thread-safe
        elif self.external.topic(topic) is not None:
            self.loop.call(self.external.notify, topic)

    def control_changed(self, topic: str) -> None:
        """``topic`` was paused or resumed: its producer reads the change at once."""
        producer = self.producers.get(topic)
        if producer is not None:
            producer.notify_external()  # thread-safe

    def cancel(self, job: Job) -> None:
        """``job`` was cancelled in the table: interrupt it if it runs here, else announce it."""
        if not self.loop.call(self._cancel_here, job):
            announce_cancelled(job)  # the loop has finished: nothing runs here any more

    def _cancel_here(self, job: Job) -> None:
        producer = self.producers.get(job.topic)
        if producer is None or not producer.cancel_job(job.id):
            announce_cancelled(job)

    # ------------------------------------------------------------ the run

    async def run(self, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Migrate, import ``[runner] modules``, then supervise every topic until stopped
        (see :meth:`Runner.run`)."""
        runner = self.runner
        # Job tasks inherit this context: workers read their topic's options from it.
        settings_token = current_settings.set(self.settings)
        progress_token = current_progress.set(runner.report_progress)
        housekeeper = Housekeeper(runner.storage, self.settings.runner, self.id, self._wake_topics, runner.clock)
        try:
            await runner.storage.run_blocking(runner.ensure_schema)
            runner.store.db.warn_if_unsafe()
            import_modules(self.settings)
            cron = CronScheduler(cron_schedules(self.settings), self.settings, runner.store, runner.in_thread,
                                 runner.clock, self._cron_inserted)
            await housekeeper.register(self.settings.topics)
            try:
                await self._supervise(task_status, housekeeper, cron)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await housekeeper.unregister()
                    except Exception as exc:  # noqa: BLE001 - the node row then simply expires
                        logger.warning("could not unregister node %s: %s", self.id, exc)
        finally:
            current_settings.reset(settings_token)
            current_progress.reset(progress_token)
            self.producers.clear()
            self._finished.set()

    async def _supervise(self, task_status: TaskStatus[None], housekeeper: Housekeeper, cron: CronScheduler) -> None:
        topics = list(self.settings.topics)
        async with anyio.create_task_group() as outer:
            uninstall = events.install_async_host(events.AsyncReceiverHost(outer))
            try:
                watcher, keeper, serving = anyio.CancelScope(), anyio.CancelScope(), anyio.CancelScope()
                outer.start_soon(self._watch_commits, watcher)
                outer.start_soon(_run_in_scope, keeper, housekeeper.run)
                outer.start_soon(_run_in_scope, serving, self.external.run)
                scheduling = anyio.CancelScope()
                if cron.entries:
                    outer.start_soon(_run_in_scope, scheduling, cron.run)
                summarising = anyio.CancelScope()
                if self.settings.runner.summary_interval > 0:
                    outer.start_soon(_run_in_scope, summarising, functools.partial(
                        report_throughput, self.producers, self.settings.runner.summary_interval))
                http_stop = anyio.Event()
                if self.settings.http.enabled:
                    # Imported here: commands that serve no HTTP never load the HTTP stack.
                    from .http import create_app, serve as serve_http

                    app = create_app(self.runner, self.external, self.settings.http)
                    outer.start_soon(serve_http, app, self.settings.http, http_stop,
                                     self.settings.runner.shutdown_grace)
                async with anyio.create_task_group() as topic_group:
                    await self._start_topics(topic_group)
                    events.emit(events.runner_started, self.id, topics=topics)
                    task_status.started()
                    await self._stop_requested.wait()
                    self.external.stop()
                    for supervisor in self.supervisors.values():
                        supervisor.stop()
                watcher.cancel()
                keeper.cancel()
                serving.cancel()
                scheduling.cancel()
                summarising.cancel()
                http_stop.set()
                # Give async receivers still running a bounded time to finish.
                outer.cancel_scope.deadline = anyio.current_time() + self.settings.runner.shutdown_grace
            finally:
                uninstall()
                events.emit(events.runner_stopped, self.id, topics=topics)

    async def _start_topics(self, topic_group: TaskGroup) -> None:
        """A supervisor per topic the runner's own workers run; returns once each claims."""
        runner = self.runner
        for name, topic in self.settings.topics.items():
            if topic.external:
                continue
            producer = Producer(
                topic, runner.storage, self.id,
                Executor(topic, anyio.CapacityLimiter(topic.parallelism), runner.clock),
                runner.clock, log_jobs=self.settings.runner.log_jobs,
            )
            supervisor = TopicSupervisor(producer, self.settings.runner)
            self.producers[name] = producer
            self.supervisors[name] = supervisor
            await topic_group.start(supervisor.run)

    async def _watch_commits(self, scope: anyio.CancelScope) -> None:
        """Wake producers when another process commits (where the store can tell):
        notices from every node on PostgreSQL, a look at the SQLite file's log otherwise."""
        listener = self.runner.store.notices.notification_listener(self._on_notice)
        if listener is not None:
            with scope:
                await listener.run()
            return
        interval = self.settings.database.watch_interval
        probe = self.runner.store.db.change_probe() if interval > 0 else None
        if probe is None:
            return
        with scope:
            await CommitWatcher(probe, interval, self._notify_all).run()

    def _notify_all(self) -> None:
        for listener in list(self.runner.change_listeners):
            listener()  # waiters (jobrunner.waiting) read their job again
        for producer in self.producers.values():
            producer.notify_external()
        self.external.notify()

    def _cron_inserted(self, schedule: str, jobs: list[Job]) -> None:
        """Announce the jobs a cron schedule inserted (``job_inserted`` names the schedule)."""
        for job in jobs:
            events.emit(events.job_inserted, job.topic, job=job, schedule=schedule)
        self._wake_topics(jobs)

    def _on_notice(self, kind: str | None, topic: str | None) -> None:
        """A notice from some node (see :mod:`jobrunner.storage.notices`); runs in the loop."""
        if kind is None or topic is None:
            self._notify_all()
            return
        for listener in list(self.runner.change_listeners):
            listener()  # waiters (jobrunner.waiting) read their job again
        if kind == INSERTED:
            self.wake(topic)
        else:
            self.control_changed(topic)
            if self.external.topic(topic) is not None:
                self.external.notify(topic)

    def _wake_topics(self, jobs: list[Job]) -> None:
        for topic in {job.topic for job in jobs}:
            self.wake(topic)


__all__ = ["Node", "announce_cancelled", "default_node_id", "import_modules"]
