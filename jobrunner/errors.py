"""Every exception jobrunner raises. Each message defaults to the class docstring.

All of them are importable from ``jobrunner``. :class:`JobrunnerError` is the base of
what a caller may want to catch; a few derive from the built-in they refine instead
(:class:`PriorityError` is a ``ValueError``), and :class:`ExternalJobError` and
:class:`ProcessFailed` describe a job's failure rather than a fault of jobrunner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job


class JobrunnerError(Exception):
    """A jobrunner error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(JobrunnerError):
    """The configuration is invalid."""


class UsageError(JobrunnerError):
    """A command-line argument is invalid."""


class StartupError(JobrunnerError):
    """The daemon could not start."""


class UnknownWorkerError(JobrunnerError):
    """The worker named by a job cannot be imported or is not a Worker subclass."""


class EnqueueError(JobrunnerError):
    """A job could not be enqueued (bad arguments, options or worker)."""


class InvalidArgumentsError(EnqueueError):
    """The job's arguments do not match its worker's ``args_type``."""


class PayloadError(JobrunnerError):
    """A value cannot be stored as a job's JSON (not JSON, nested too deeply, or not valid Unicode)."""


class PriorityError(ValueError):
    """A value that is not a priority; the message says what is accepted."""

    def __init__(self, value: object, accepted: str) -> None:
        super().__init__(f"must be {accepted}, got {value!r}")
        self.value = value


class MigrationError(JobrunnerError):
    """The database schema could not be migrated."""


class StorageError(JobrunnerError):
    """The database could not be opened or written."""


class ScaleError(JobrunnerError):
    """A parallelism to scale a topic to must be a whole number from 1 to 10,000."""


class CopyError(JobrunnerError):
    """A copy between databases was refused (non-empty target, same database) or failed;
    the target is unchanged."""


class JobStateError(JobrunnerError):
    """The job is not in a state that allows this action."""


class ScheduleError(ConfigError):
    """A cron schedule is invalid: its expression, time zone or missed policy (the message says which)."""


class JobNotFoundError(JobrunnerError):
    """No job has that id (raised by ``Runner.wait``: the job is unknown, or was pruned meanwhile)."""


class WaitTimeoutError(JobrunnerError, TimeoutError):
    """The job did not reach a final state (completed, discarded, cancelled) in time."""

    def __init__(self, message: str | None = None, job: Job | None = None) -> None:
        super().__init__(message)
        #: The job as it was last read, or None.
        self.job = job


class LeaseError(JobrunnerError):
    """The job holds no live lease under the token presented (never claimed, already
    concluded, its lease expired, or it was claimed again by another worker)."""


class ExternalJobError(Exception):
    """The failure an external worker reported for a job."""


class ProcessFailed(Exception):
    """An external process exited with a non-zero code."""

    def __init__(self, exit_code: int | None, stderr_tail: str) -> None:
        detail = f"; stderr: {stderr_tail.strip()[-1000:]}" if stderr_tail.strip() else ""
        super().__init__(f"process exited with code {exit_code}{detail}")
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


__all__ = [
    "ConfigError", "CopyError", "EnqueueError", "ExternalJobError", "InvalidArgumentsError", "JobNotFoundError",
    "JobStateError", "JobrunnerError", "LeaseError", "MigrationError", "PayloadError", "PriorityError", "ProcessFailed",
    "ScheduleError", "StartupError", "StorageError", "UnknownWorkerError", "UsageError", "WaitTimeoutError",
]
