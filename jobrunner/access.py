"""What the storage verb mixins need from :class:`jobrunner.store.Store`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from sqlalchemy import Connection

from .job import Job

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T = TypeVar("T")


class StoreAccess:
    """Transactions, reads and row decoding, provided by the Store the verbs are mixed into."""

    engine: Engine

    def _transaction(self, body: Callable[[Connection], T]) -> T:  # pragma: no cover - interface
        raise NotImplementedError

    def _read(self) -> Connection:  # pragma: no cover - interface
        raise NotImplementedError

    def _row_to_job(self, row: Sequence[Any]) -> Job:  # pragma: no cover - interface
        raise NotImplementedError
