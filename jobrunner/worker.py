"""The Worker base class, the special results a worker may return, and worker lookup."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from .arguments import ArgsSpec
from .errors import UnknownWorkerError
from .job import Job
from .priority import ACCEPTED, PriorityError, parse_priority
from .schedule import Cron, ScheduleError

if TYPE_CHECKING:
    from .config import Settings
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
    :meth:`args_of`), ``cron`` (periodic jobs of this worker: an expression such as
    ``"*/5 * * * *"``, a :class:`~jobrunner.Cron`, or a list or tuple of them; used by daemons
    whose ``[runner] modules`` include the worker's module).
    """

    topic: ClassVar[str | None] = None
    max_attempts: ClassVar[int] = 50
    priority: ClassVar[int | str | None] = None
    timeout: ClassVar[float | None] = None
    args_type: ClassVar[Any] = None
    cron: ClassVar[str | Cron | Sequence[str | Cron] | None] = None

    #: ``cron`` checked, one :class:`~jobrunner.Cron` per schedule (set for every subclass).
    cron_schedules: ClassVar[tuple[Cron, ...]] = ()

    #: ``args_type`` checked and compiled (set for every subclass; None when untyped).
    args_spec: ClassVar[ArgsSpec | None] = None
    _jobrunner_args: tuple[Job, Any]

    #: True when ``perform`` is a coroutine function (set for every subclass).
    perform_is_async: ClassVar[bool] = True

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
        cls.perform_is_async = inspect.iscoroutinefunction(cls.perform)
        cls.cron_schedules = _cron_schedules(cls, name)
        _registered[f"{cls.__module__}.{cls.__qualname__}"] = cls

    async def perform(self, job: Job) -> Any:
        """Do the job's work. Return a value (completed), ``Snooze`` or ``Cancel``; raise to fail."""
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


#: The configuration of the runner executing jobs in this context (set by Runner.run).
current_settings: ContextVar[Settings] = ContextVar("jobrunner_settings")


def worker_path(worker: type[Worker]) -> str:
    """The import path that names ``worker`` in the jobs table."""
    return f"{worker.__module__}.{worker.__qualname__}"


_resolved: dict[str, type[Worker]] = {}
_registered: dict[str, type[Worker]] = {}


def registered_workers() -> list[type[Worker]]:
    """Every Worker class defined so far (in modules already imported)."""
    return list(_registered.values())


def registered_worker(path: str) -> type[Worker] | None:
    """The Worker class of that import path if its module is already loaded; never imports."""
    return _registered.get(path)


def resolve_worker(path: str) -> type[Worker]:
    """Import the Worker class named by ``path`` (``package.module.ClassName``).

    Raises :class:`UnknownWorkerError` with the reason when the module does not
    import, the name is missing, or it is not a Worker subclass.
    """
    cached = _resolved.get(path)
    if cached is not None:
        return cached
    module_name, _, attr_path = path.rpartition(".")
    if not module_name or not attr_path:
        raise UnknownWorkerError(f"worker {path!r} is not an import path like 'package.module.Class'")
    module = None
    missing: str | None = None
    # Nested classes (Outer.Inner) have dots after the module part: try longest module first.
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:split])
        try:
            module = importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name is not None and candidate.startswith(exc.name):
                missing = missing or exc.name
                continue
            raise UnknownWorkerError(f"worker {path!r}: importing {candidate!r} failed: {exc}") from exc
        except (Exception, SystemExit) as exc:  # the module itself is broken (or exits, e.g. argparse)
            raise UnknownWorkerError(
                f"worker {path!r}: importing {candidate!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        attr_path = ".".join(parts[split:])
        break
    if module is None:
        raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}")
    obj: Any = module
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            if missing is not None and missing != module.__name__:
                raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}") from None
            raise UnknownWorkerError(
                f"worker {path!r}: module {module.__name__!r} has no attribute {attr_path!r}"
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, Worker)):
        raise UnknownWorkerError(f"worker {path!r} is not a jobrunner.Worker subclass")
    _resolved[path] = obj
    return obj


def runnable_worker(path: str) -> type[Worker]:
    """The Worker class a node runs for a job naming ``path``.

    Only code the node already loaded or was configured with runs: a Worker of a module
    already imported in this process (by ``[runner] modules``, or by the code that
    enqueued it), else one whose module lies inside a package of ``[runner] modules``.
    Any other path is refused with :class:`UnknownWorkerError` without importing
    anything, so a worker name stored by someone else (an HTTP client of an external
    topic) never runs import-time code.
    """
    cls = _registered.get(path) or _resolved.get(path)
    if cls is not None:
        return cls
    settings = current_settings.get(None)
    modules = settings.runner.modules if settings is not None else ()
    if path.rpartition(".")[0] in sys.modules or any(path.startswith(f"{module}.") for module in modules):
        return resolve_worker(path)  # imports nothing new, or only the operator's own modules
    missing = _missing_module(path.rpartition(".")[0])
    if missing is not None:
        raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}")
    raise UnknownWorkerError(
        f"worker {path!r} is not a Worker of the modules this node loaded ([runner] modules: "
        f"{', '.join(modules) or 'none'}); other code is never imported to run a job"
    )


def _missing_module(name: str) -> str | None:
    """The first part of dotted module ``name`` that does not exist, found without running
    any module's code (only below packages already loaded); None when it may exist."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(prefix)  # its parent is loaded: nothing is imported
        except (ImportError, ValueError):
            return prefix
        return prefix if spec is None else None
    return None
