"""The Runner: the embedding API (enqueue, queries, operator actions, run and stop).

Parts of it are mixed in from modules of their own: enqueueing (:mod:`jobrunner.enqueuing`),
operator actions (:mod:`jobrunner.operations`), linked jobs (:mod:`jobrunner.linked`).
What runs while :meth:`Runner.run` runs is a :class:`~jobrunner.node.Node`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus

from . import config as config_module
from .config import Settings
from .enqueuing import EnqueueItem, Enqueuing
from .errors import JobNotFoundError, MigrationError
from .job import Job, is_job_id
from .linked import LinkedJobs
from .node import Node, default_node_id, import_modules
from .operations import OperatorActions
from .storage import AsyncStorage, Storage
from .supervisor import TopicSupervisor
from .waiting import wait_for_job

T = TypeVar("T")


# Enqueuing first: its store_rows is the one LinkedJobs declares.
class Runner(Enqueuing, LinkedJobs, OperatorActions):
    """Runs every configured topic and enqueues jobs.

    ``Runner.from_config("config.toml")`` or ``Runner(settings)``. Enqueue from sync code
    with :meth:`enqueue` / :meth:`enqueue_many`, from async code with
    :meth:`enqueue_async` / :meth:`enqueue_many_async`; ``await runner.run()``
    supervises every topic until ``await runner.stop()`` or cancellation.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        #: This node's id: its heartbeat row, ``attempted_by`` of the jobs it claims.
        self.node = settings.runner.node or default_node_id()
        #: The storage, for sync callers (its verb groups: jobs, operator, nodes, leases).
        self.store = Storage(settings.database, f"jobrunner {self.node}")
        #: The typed async storage API the engine uses (the one thread hop).
        self.storage = AsyncStorage(self.store)
        self.store.db.on_settled = self._dependents_settled
        #: What runs during :meth:`run` (kept after it ends: its supervisors stay readable).
        self._current: Node | None = None
        #: True once the schema is known to be current (checked once per runner).
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        #: Called (on the loop's thread) when another process may have changed jobs: waiters re-read.
        self.change_listeners: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Runner:
        """A runner configured from a TOML file (see :func:`jobrunner.config.load`)."""
        return cls(config_module.load(path), **kwargs)

    def _wake(self, topic: str) -> None:
        if self._current is not None:
            self._current.wake(topic)

    # ------------------------------------------------------------ waiting

    def wait(self, job: Job | int, timeout: float | None = None) -> Job:
        """Block until the job is final (completed, discarded or cancelled) and return it.

        Raises WaitTimeoutError (its ``job`` is the last state read) after ``timeout``
        seconds (None: no limit), JobNotFoundError when no job has that id. From
        async code use :meth:`wait_async`; see :mod:`jobrunner.waiting` for how it
        wakes without polling the table in a loop.
        """
        if self._current is not None and self._current.running and self._current.loop.is_current_thread():
            raise RuntimeError("runner.wait() would block the runner's event loop: use await runner.wait_async()")
        return anyio.run(lambda: self.wait_async(job, timeout=timeout))

    async def wait_async(self, job: Job | int, timeout: float | None = None) -> Job:
        """Like :meth:`wait`, without blocking the event loop."""
        job_id = job.id if isinstance(job, Job) else job
        if not is_job_id(job_id):
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return await wait_for_job(self, job_id, timeout, self._on_change)

    def _on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        self.change_listeners.append(listener)
        return lambda: self.change_listeners.remove(listener)

    # ------------------------------------------------------------ queries

    def get_job(self, job_id: int) -> Job | None:
        """The job with that id, or None (also for ids no job can have, like 0 or 2**63)."""
        if not is_job_id(job_id):
            return None
        return self._storage.jobs.get(job_id)

    def list_jobs(
        self, *, topic: str | None = None, state: str | None = None, worker: str | None = None, limit: int = 100,
        newest_first: bool = True, tag: str | None = None,
    ) -> list[Job]:
        """Jobs filtered by topic, state, worker name and tag, newest first unless told otherwise."""
        return self._storage.jobs.listing(topic, state, limit, worker, newest_first, tag)

    def page_jobs(
        self, topic: str | None, state: str | None, limit: int, before_id: int | None = None, tag: str | None = None,
    ) -> tuple[list[Job], int | None]:
        """One page of jobs, newest first, and the id to pass as ``before_id`` for the next
        page (None: this is the last page)."""
        return self._storage.jobs.page(topic, state, limit, before_id, tag)

    def stats(self) -> dict[str, dict[str, int]]:
        """Counts per topic and state, every state present for every configured topic."""
        return self._storage.jobs.stats(self.settings.topics)

    # ------------------------------------------------------------ from async code

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a call of this runner's sync API that writes: enqueue, cancel,
        retry, pause...) in the storage writers' thread, without blocking the event loop."""
        return await self.storage.run_blocking(fn)

    async def in_read_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a read: get_job, list_jobs, page_jobs, stats) in a reader thread;
        reads never wait behind writes, nor delay the claims and acks of running topics."""
        return await self.storage.read_blocking(fn)

    def slots(self) -> dict[str, tuple[int, int]]:
        """Per topic run by this node's own workers: jobs running here and its parallelism."""
        producers = self._current.producers if self._current is not None else {}
        return {name: (producer.running, producer.parallelism) for name, producer in list(producers.items())}

    # ------------------------------------------------------------ running

    def migrate(self) -> list[Any]:
        """Apply pending schema migrations."""
        applied = self.store.db.migrate()
        self._schema_ready = True
        return applied

    @property
    def _storage(self) -> Storage:
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
            pending = self.store.db.pending_migrations()
            if pending and not self.settings.database.auto_migrate:
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
                raise MigrationError(
                    f"database {self.settings.database.url!r} needs migrations ({names}) and "
                    f"[database] auto_migrate is false: run `python -m jobrunner migrate` first"
                )
            if pending:
                self.store.db.migrate()
            self._schema_ready = True

    @property
    def running(self) -> bool:
        """True between the start of :meth:`run` and its end."""
        return self._current is not None and self._current.running

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called while running (until the next :meth:`run`)."""
        return self._current is not None and self._current.stopping

    def supervisor(self, topic: str) -> TopicSupervisor:
        """The supervisor of a running topic (KeyError for others)."""
        if self._current is None:
            raise KeyError(topic)
        return self._current.supervisors[topic]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Migrate, import ``[runner] modules``, then supervise every topic until stopped.

        Reports ready (``task_status.started()``, event ``runner_started``) once every
        topic is claiming.
        """
        if self.running:
            raise RuntimeError("this runner is already running")
        self._current = Node(self)
        await self._current.run(task_status)

    async def stop(self) -> None:
        """Stop gracefully: claim nothing more, let running jobs finish within
        ``shutdown_grace``, put the rest back, and return once :meth:`run` has ended."""
        if self._current is not None:
            await self._current.stop()


__all__ = ["EnqueueItem", "Runner", "default_node_id", "import_modules"]
