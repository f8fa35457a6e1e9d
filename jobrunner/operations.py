"""The part of :class:`~jobrunner.runner.Runner` that concerns operator actions: cancel,
retry, pause, resume and scale, each taking effect on every node."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .config import Settings
from .errors import JobStateError, ScaleError
from .job import RETRYABLE_STATES, Job, is_job_id
from .node import announce_cancelled

if TYPE_CHECKING:
    from .node import Node
    from .storage import Storage

#: The highest parallelism a topic can be scaled to.
MAX_PARALLELISM = 10_000


class OperatorActions:
    """Mixed into the Runner, which provides the attributes and methods declared here."""

    settings: Settings
    clock: Callable[[], float]
    _current: Node | None

    @property
    def _storage(self) -> Storage:  # pragma: no cover - the Runner's
        raise NotImplementedError

    def _wake(self, topic: str) -> None:  # pragma: no cover - the Runner's
        raise NotImplementedError

    def cancel_job(self, job_id: int) -> Job | None:
        """Cancel a job that has not finished (a running one is interrupted; on another
        node at once on PostgreSQL, else within its commit watcher's or poll interval).
        Returns the cancelled job, None if unknown; raises JobStateError when the job had
        already finished."""
        if not is_job_id(job_id):
            return None
        job, changed = self._storage.operator.cancel(job_id, self.clock())
        if job is not None and not changed:
            raise JobStateError(f"job {job_id} is already {job.state}")
        if job is not None:
            if self._current is not None:
                self._current.cancel(job)
            else:
                announce_cancelled(job)
        return job

    def retry_jobs(
        self, ids: Iterable[int] | None = None, *, topic: str | None = None,
        states: Iterable[str] = RETRYABLE_STATES,
    ) -> list[int]:
        """Make discarded or cancelled jobs available again (by id, or by topic and state)."""
        if ids is not None:
            ids = [job_id for job_id in ids if is_job_id(job_id)]  # others name no job
        retried = self._storage.operator.retry(self.clock(), ids=ids, topic=topic, states=states)
        for name in self.settings.topics:
            self._wake(name)
        return retried

    def pause(self, topic: str) -> None:
        """Stop claiming jobs of ``topic`` on every node (running jobs finish)."""
        self.settings.topic(topic)
        self._storage.operator.set_paused(topic, True, self.clock())
        self._control_changed(topic)

    def resume(self, topic: str) -> None:
        """Claim jobs of ``topic`` again."""
        self.settings.topic(topic)
        self._storage.operator.set_paused(topic, False, self.clock())
        self._control_changed(topic)

    def scale(self, topic: str, parallelism: int | None) -> int:
        """Set how many jobs of ``topic`` each node runs at once, on every running node
        and for every later start, until scaled again; ``None`` goes back to the
        configured ``parallelism``. Returns the parallelism now in force. Scaling down
        cancels nothing: nodes claim no more until they run fewer than the new value.
        Raises ScaleError unless ``parallelism`` is None or a whole number from 1 to
        :data:`MAX_PARALLELISM`."""
        configured = self.settings.topic(topic).parallelism
        if parallelism is not None and (
            not isinstance(parallelism, int) or isinstance(parallelism, bool)
            or not 1 <= parallelism <= MAX_PARALLELISM
        ):
            raise ScaleError(f"cannot scale topic {topic!r} to {parallelism!r}: a parallelism is a whole number "
                             f"from 1 to {MAX_PARALLELISM}")
        self._storage.operator.set_parallelism(topic, parallelism, self.clock())
        self._control_changed(topic)
        return configured if parallelism is None else parallelism

    def parallelism(self, topic: str) -> int:
        """The parallelism of ``topic`` in force: the one it was scaled to, else the configured one."""
        configured = self.settings.topic(topic).parallelism
        scaled = self._storage.operator.scaled_parallelism(topic)
        return configured if scaled is None else scaled

    def _control_changed(self, topic: str) -> None:
        if self._current is not None:
            self._current.control_changed(topic)


__all__ = ["MAX_PARALLELISM", "OperatorActions"]
