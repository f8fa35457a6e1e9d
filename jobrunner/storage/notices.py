"""Notices: telling every node that a change committed (PostgreSQL ``LISTEN``/``NOTIFY``).

A notice rides in the transaction that makes the change (an insert, a cancel, a pause,
a retry, a rescue): PostgreSQL delivers a ``NOTIFY`` only when its transaction commits,
and drops it on rollback, so nobody is woken for a change that is not there. Every
running node listens through :class:`~.listener.NotificationListener`.

A notice is ``KIND:TOPIC`` where KIND is :data:`INSERTED` (jobs of TOPIC became
available) or :data:`CONTROL` (TOPIC was paused or resumed, or one of its jobs
cancelled). Notices are only hints: the poll interval still finds everything. Where the
database has no notifications (SQLite; :attr:`NoticeVerbs.notifies` is False) every
verb here does nothing, and other processes' commits are noticed on the file instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select

from .listener import NotificationListener, libpq_url

if TYPE_CHECKING:  # the database settles dependents, which sends notices: no import cycle
    from .database import Database

#: The channel every jobrunner node listens on (notices are scoped to one database).
CHANNEL = "jobrunner"
#: Kind of notice: jobs of the topic became available.
INSERTED = "insert"
#: Kind of notice: the topic's control changed (pause, resume, a cancelled job).
CONTROL = "control"
#: The statement that sends one notice (inside the caller's transaction).
NOTIFY = select(func.pg_notify(CHANNEL, bindparam("b_payload")))

#: Receives (kind, topic) for each notice; (None, None) means "wake everything".
OnNotice = Callable[[str | None, str | None], None]


def payload(kind: str, topic: str) -> str:
    """The text of one notice."""
    return f"{kind}:{topic}"


def parse(text: str | None) -> tuple[str | None, str | None]:
    """(kind, topic) of a notice; (None, None) for None (notices may have been missed) or
    text that is not ours: wake everything."""
    if text is None:
        return None, None
    kind, sep, topic = text.partition(":")
    if not sep or kind not in (INSERTED, CONTROL):
        return None, None
    return kind, topic


class NoticeVerbs:
    """Send notices inside transactions, and listen for other nodes' ones."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: True when commits can be announced to every node; elsewhere other processes'
        #: commits are noticed by :meth:`.database.Database.change_probe`.
        self.notifies = db.dialect.notifies
        self._notify = db.prepare(NOTIFY) if self.notifies else None

    def send(self, conn: Connection, kind: str, topics: Iterable[str]) -> None:
        """Within ``conn``'s transaction: one notice per topic, delivered at commit."""
        if self.notifies:
            for topic in sorted(set(topics)):
                conn.execute(NOTIFY, {"b_payload": payload(kind, topic)})

    def send_on_cursor(self, cursor: Any, kind: str, topics: Iterable[str]) -> None:
        """:meth:`send` on a raw DBAPI cursor (the hot path's transactions)."""
        if self._notify is not None:
            for topic in sorted(set(topics)):
                cursor.execute(self._notify.sql, self._notify.params({"b_payload": payload(kind, topic)}))

    def announce(self, kind: str, topics: Iterable[str]) -> None:
        """Tell every node that ``topics`` changed, in a transaction of its own (after the
        change committed elsewhere)."""
        wanted = sorted(set(topics))
        if self.notifies and wanted:
            self.db.transaction(lambda conn: self.send(conn, kind, wanted))

    def notification_listener(self, on_notice: OnNotice) -> NotificationListener | None:
        """A listener for every node's notices, calling ``on_notice(kind, topic)`` in the
        event loop; None where the database has no notifications."""
        if not self.notifies:
            return None
        url = libpq_url(self.db.engine.url, self.db.application_name)
        return NotificationListener(url, CHANNEL, lambda text: on_notice(*parse(text)))


__all__ = ["CHANNEL", "CONTROL", "INSERTED", "NOTIFY", "NoticeVerbs", "OnNotice", "parse", "payload"]
