"""jobrunner: a topic-based, supervised job runner on SQLite (and PostgreSQL).

Subclass :class:`Worker`, configure topics in ``config.toml``, run ``python -m jobrunner``.
"""

from __future__ import annotations

from . import events
from .config import Settings, load as load_config
from .errors import (
    ConfigError,
    CopyError,
    EnqueueError,
    ExternalJobError,
    InvalidArgumentsError,
    JobNotFoundError,
    JobrunnerError,
    JobStateError,
    LeaseError,
    MigrationError,
    PayloadError,
    PriorityError,
    ProcessFailed,
    ScaleError,
    ScheduleError,
    StartupError,
    StorageError,
    UnknownWorkerError,
    UsageError,
    WaitTimeoutError,
)
from .job import Job, JobState
from .process import ExternalProcess, ProcessOutcome
from .runner import Runner
from .schedule import Cron
from .worker import Cancel, Snooze, Worker
from .workflow import Workflow

__all__ = [
    "Cancel",
    "ConfigError",
    "CopyError",
    "Cron",
    "EnqueueError",
    "ExternalJobError",
    "ExternalProcess",
    "InvalidArgumentsError",
    "Job",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "JobrunnerError",
    "LeaseError",
    "MigrationError",
    "PayloadError",
    "PriorityError",
    "ProcessFailed",
    "ProcessOutcome",
    "Runner",
    "ScaleError",
    "ScheduleError",
    "Settings",
    "Snooze",
    "StartupError",
    "StorageError",
    "UnknownWorkerError",
    "UsageError",
    "WaitTimeoutError",
    "Worker",
    "Workflow",
    "events",
    "load_config",
]
