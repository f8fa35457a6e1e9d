"""jobrunner: a topic-based, supervised job runner on SQLite (and PostgreSQL).

Subclass :class:`Worker`, configure topics in ``config.toml``, run ``python -m jobrunner``.
"""

from __future__ import annotations

from . import events
from .config import Settings, load as load_config
from .errors import (
    ConfigError,
    EnqueueError,
    ExternalJobError,
    InvalidArgumentsError,
    JobrunnerError,
    JobStateError,
    LeaseError,
    MigrationError,
    PayloadError,
    PriorityError,
    ProcessFailed,
    ScaleError,
    StartupError,
    StorageError,
    UnknownWorkerError,
    UsageError,
)
from .job import Job, JobState
from .process import ExternalProcess, ProcessOutcome
from .runner import Runner
from .worker import Cancel, Snooze, Worker

__all__ = [
    "Cancel",
    "ConfigError",
    "EnqueueError",
    "ExternalJobError",
    "ExternalProcess",
    "InvalidArgumentsError",
    "Job",
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
    "Settings",
    "Snooze",
    "StartupError",
    "StorageError",
    "UnknownWorkerError",
    "UsageError",
    "Worker",
    "events",
    "load_config",
]
