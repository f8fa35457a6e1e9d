"""Exceptions raised by jobrunner. Each message defaults to the class docstring."""

from __future__ import annotations


class JobrunnerError(Exception):
    """A jobrunner error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(JobrunnerError):
    """The configuration is invalid."""


class UnknownWorkerError(JobrunnerError):
    """The worker named by a job cannot be imported or is not a Worker subclass."""


class EnqueueError(JobrunnerError):
    """A job could not be enqueued (bad arguments, options or worker)."""


class InvalidArgumentsError(EnqueueError):
    """The job's arguments do not match its worker's ``args_type``."""


class JobNotFoundError(JobrunnerError):
    """No job has that id."""


class MigrationError(JobrunnerError):
    """The database schema could not be migrated."""


class JobStateError(JobrunnerError):
    """The job is not in a state that allows this action."""


class WaitTimeoutError(JobrunnerError, TimeoutError):
    """The job did not reach a final state (completed, discarded, cancelled) in time."""

    def __init__(self, message: str | None = None, job: object = None) -> None:
        super().__init__(message)
        #: The job as it was last read (a :class:`~jobrunner.Job`), or None.
        self.job = job
