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


class StorageError(JobrunnerError):
    """The database could not be opened or written."""


class MigrationError(JobrunnerError):
    """The database schema could not be migrated."""


class JobStateError(JobrunnerError):
    """The job is not in a state that allows this action."""
