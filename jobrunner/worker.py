"""The Worker base class and the special results a worker may return.

Finding a Worker class by its import path is :mod:`jobrunner.worker_lookup`, and the
context variables a running runner sets are in :mod:`jobrunner.context`; both are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import anyio.from_thread

from .arguments import ArgsSpec
from .context import current_progress, current_settings
from .errors import EnqueueError
from .job import Job
from .metadata import check_progress
from .priority import ACCEPTED, PriorityError, parse_priority
from .schedule import Cron, ScheduleError
from .unique import Unique
from .worker_lookup import (
    register,
    registered_worker,
    registered_workers,
    resolve_worker,
    runnable_worker,
    worker_path,
)

if TYPE_CHECKING:
    from .process import ProcessOutcome



@dataclass(frozen=True, slots=True)
class Snooze:
    """Returned by ``perform``: run the job again in ``seconds`` without using up an attempt."""

    seconds: float

    def __post_init__(self) -> None:
        if not isinstance(self.seconds, (int, float)) or not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError(f"Snooze seconds must be a finite number >= 0, got {self.seconds!r}")


@dataclass(frozen=True, slots=True)
class Cancel:
    """Returned by ``perform``: stop the job for good (state ``cancelled``) with a reason."""

    reason: str = "cancelled by worker"


class Worker:
    """Base class of every job worker.

    Subclass it, set ``topic`` and implement ``perform``::

        class PrintSum(Worker):
            topic = "demo"
            async def perform(self, job):
                return job.args["a"] + job.args["b"]

    A plain ``def perform`` runs in a worker thread. Class options: ``topic``
    (required), ``max_attempts`` (default 50), ``priority`` (0..9 or ``"critical"``,
    ``"high"``, ``"normal"``, ``"low"``; None: the topic's default), ``timeout``
    (seconds, None: no limit), ``args_type`` (None: any JSON; else a ``msgspec.Struct``,
    dataclass or ``TypedDict`` the arguments must match, read in ``perform`` with
    :meth:`args_of`), ``unique`` (None, or ``{"period": seconds}`` with optional
    ``keys`` and ``states``: see :mod:`jobrunner.unique`);
    ``cron`` (periodic jobs of this worker: an expression such as
    ``"*/5 * * * *"``, a :class:`~jobrunner.Cron`, or a list or tuple of them; used by daemons
    whose ``[runner] modules`` include the worker's module).
    """

    topic: ClassVar[str | None] = None
    max_attempts: ClassVar[int] = 50
    priority: ClassVar[int | str | None] = None
    timeout: ClassVar[float | None] = None
    args_type: ClassVar[Any] = None
    unique: ClassVar[Mapping[str, Any] | None] = None

    #: ``unique`` parsed (set for every subclass; None when jobs are not unique).
    unique_spec: ClassVar[Unique | None] = None

    cron: ClassVar[str | Cron | Sequence[str | Cron] | None] = None

    #: ``cron`` checked, one :class:`~jobrunner.Cron` per schedule (set for every subclass).
    cron_schedules: ClassVar[tuple[Cron, ...]] = ()

    #: ``args_type`` checked and compiled (set for every subclass; None when untyped).
    args_spec: ClassVar[ArgsSpec | None] = None
    _jobrunner_args: tuple[Job, Any]

    #: True when ``perform`` is a coroutine function (set for every subclass).
    perform_is_async: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if cls.topic is not None and (not isinstance(cls.topic, str) or not cls.topic):
            raise TypeError(f"{name}.topic must be a non-empty string, got {cls.topic!r}")
        if not isinstance(cls.max_attempts, int) or isinstance(cls.max_attempts, bool) or cls.max_attempts < 1:
            raise TypeError(f"{name}.max_attempts must be an integer >= 1, got {cls.max_attempts!r}")
        if cls.priority is not None:
            try:
                cls.priority = parse_priority(cls.priority)  # a name becomes its number
            except PriorityError as exc:
                raise TypeError(f"{name}.priority must be None or {ACCEPTED}, got {exc.value!r}") from None
        if cls.timeout is not None and (
            not isinstance(cls.timeout, (int, float)) or isinstance(cls.timeout, bool) or cls.timeout <= 0
        ):
            raise TypeError(f"{name}.timeout must be None or a number > 0, got {cls.timeout!r}")
        cls.args_spec = None if cls.args_type is None else ArgsSpec.compile(cls.args_type, name)
        try:
            cls.unique_spec = Unique.parse(cls.unique, name)
        except EnqueueError as exc:
            raise TypeError(str(exc)) from None
        cls.perform_is_async = inspect.iscoroutinefunction(cls.perform)
        cls.cron_schedules = _cron_schedules(cls, name)
        register(cls)

    def perform(self, job: Job) -> Any:
        """Do the job's work. Return a value (completed), ``Snooze`` or ``Cancel``; raise to fail.

        Override it with ``async def perform`` (run on the event loop) or a plain ``def
        perform`` (run in a worker thread); declared plain here so that both type-check.
        """
        raise NotImplementedError(f"{type(self).__qualname__} must implement perform(job)")

    def args_of(self, job: Job) -> Any:
        """``job.args`` as an instance of ``args_type`` (``job.args`` itself when the
        worker declares none).

        The executor converts once before ``perform`` (a job whose stored arguments no
        longer match is discarded then), so calling this in ``perform`` costs nothing.
        Raises InvalidArgumentsError naming the field when the arguments do not match.
        """
        spec = self.args_spec
        if spec is None:
            return job.args
        cached = self.__dict__.get("_jobrunner_args")
        if cached is not None and cached[0] is job:
            return cached[1]
        value = spec.convert(job.args, worker_path(type(self)))
        self._jobrunner_args = (job, value)
        return value

    async def after_error(self, job: Job, error: BaseException) -> None:
        """Called after ``perform`` raised, before the failure is recorded. Default: nothing."""

    def backoff(self, job: Job) -> float | timedelta | None:
        """Seconds to wait before retrying ``job``; None (default) uses the topic's backoff."""
        return None

    async def after_async(self, job: Job, outcome: ProcessOutcome) -> Any:
        """Called when the process ``perform`` returned (``ExternalProcess``) has exited.

        ``outcome`` has ``exit_code`` and ``stderr_tail``. Its return value becomes the
        job's result when the process succeeded (default: ``{"exit_code": code}``).
        """
        return {"exit_code": outcome.exit_code}

    async def progress(self, job: Job, progress: float) -> None:
        """Record how far ``job`` has come, from 0 to 1 (``job.progress`` in ``show`` and
        ``GET /jobs/{id}``). Each call is one small write: report steps, not every item.
        Outside a running runner (a unit test calling ``perform``) it records nothing."""
        value = check_progress(progress)
        report = current_progress.get(None)
        if report is not None:
            await report(job, value)

    def progress_sync(self, job: Job, progress: float) -> None:
        """:meth:`progress` for a plain ``def perform`` (which runs in a worker thread)."""
        value = check_progress(progress)
        report = current_progress.get(None)
        if report is not None:
            anyio.from_thread.run(report, job, value)

    @property
    def options(self) -> Mapping[str, Any]:
        """The ``[topics.<topic>] options`` table of the running configuration."""
        settings = current_settings.get(None)
        topic = settings.topics.get(self.topic) if settings is not None and self.topic else None
        return topic.options if topic is not None else {}


def _cron_schedules(cls: type[Worker], name: str) -> tuple[Cron, ...]:
    """``cls.cron`` as schedules of ``cls``; TypeError naming the class when it is invalid."""
    declared = cls.cron
    if declared is None:
        return ()
    items = [declared] if isinstance(declared, (str, Cron)) else declared
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name}.cron must be a cron expression, a jobrunner.Cron or a list of them, got {declared!r}")
    schedules = []
    for item in items:
        try:
            spec = Cron(item) if isinstance(item, str) else item
            if not isinstance(spec, Cron):
                raise ScheduleError(f"expected a cron expression or a jobrunner.Cron, got {item!r}")
            schedules.append(dataclasses.replace(spec, worker=name))
        except ScheduleError as exc:
            raise TypeError(f"{name}.cron: {exc}") from None
    return tuple(schedules)



__all__ = [
    "Cancel", "Snooze", "Worker", "current_progress", "current_settings", "registered_worker", "registered_workers",
    "resolve_worker", "runnable_worker", "worker_path",
]
