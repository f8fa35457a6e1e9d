"""The part of :class:`~jobrunner.runner.Runner` that concerns jobs linked to others:
workflows, the dependencies and dependents of a job, what finishing a job settled, and
progress reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import events
from .config import Settings
from .job import Job, JobState, is_job_id
from .storage import AsyncStorage, NewJob, Storage
from .storage.dependencies import Settled
from .workflow import Workflow

if TYPE_CHECKING:
    from .node import Node

T = TypeVar("T")


def _announce_dependents_cancelled(cancelled: list[tuple[Job, str]]) -> None:
    for job, reason in cancelled:
        events.emit(events.job_cancelled, job.topic, job=job, reason=reason, duration=None)


class LinkedJobs:
    """Mixed into the Runner, which provides the attributes and methods declared here."""

    settings: Settings
    clock: Callable[[], float]
    store: Storage
    storage: AsyncStorage
    _current: Node | None

    def store_rows(self, rows: Sequence[NewJob]) -> list[Job]:  # pragma: no cover - the Runner's
        """Insert and announce ``rows`` (see :meth:`jobrunner.runner.Runner.store_rows`)."""
        raise NotImplementedError

    async def in_thread(self, fn: Callable[[], T]) -> T:  # pragma: no cover - the Runner's
        """Run ``fn`` in the storage writers' thread."""
        raise NotImplementedError

    def _wake(self, topic: str) -> None:  # pragma: no cover - the Runner's
        raise NotImplementedError

    @property
    def _storage(self) -> Storage:  # pragma: no cover - the Runner's
        raise NotImplementedError

    def enqueue_workflow(self, workflow: Workflow) -> dict[str, Job]:
        """Store every step of ``workflow`` in one transaction (all or none); returns its
        jobs by step name. Raises EnqueueError for a cycle, an unknown step or job id."""
        return workflow.jobs(self.store_rows(workflow.rows(self.settings, self.clock())))

    async def enqueue_workflow_async(self, workflow: Workflow) -> dict[str, Job]:
        """Like :meth:`enqueue_workflow`, without blocking the event loop."""
        rows = workflow.rows(self.settings, self.clock())
        return workflow.jobs(await self.in_thread(lambda: self.store_rows(rows)))

    def _dependents_settled(self, settled: Settled) -> None:
        """Dependents were released or cancelled (called from the writing thread, after
        the commit): wake the topics that can run them, announce the cancellations."""
        for topic in {job.topic for job in settled.released if job.state == JobState.AVAILABLE}:
            self._wake(topic)
        if settled.cancelled:
            node = self._current
            if node is None or not node.loop.call(_announce_dependents_cancelled, settled.cancelled):
                _announce_dependents_cancelled(settled.cancelled)

    async def report_progress(self, job: Job, progress: float) -> None:
        """Record the progress of ``job`` while it executes (see :meth:`Worker.progress`)."""
        await self.storage.set_progress(job.id, job.attempt, progress)

    def job_links(self, job_id: int) -> dict[str, list[dict[str, Any]]]:
        """The dependencies and dependents of a job: ``{"depends_on": [{"id", "state",
        "on_failure"}, ...], "dependents": [{"id", "state"}, ...]}`` (state None: pruned)."""
        before, after = self._storage.scheduling.job_links(job_id) if is_job_id(job_id) else ([], [])
        return {"depends_on": [link.to_dict() for link in before], "dependents": [link.to_dict() for link in after]}

    def job_in_full(self, job: Job) -> dict[str, Any]:
        """``job.to_dict()`` with ``depends_on`` and ``dependents`` (see :meth:`job_links`)
        added when it has any: what ``show --json`` and ``GET /jobs/{id}`` answer."""
        data = job.to_dict()
        links = self.job_links(job.id)
        if links["depends_on"] or links["dependents"]:
            data.update(links)
        return data


__all__ = ["LinkedJobs"]
