"""Wake-ups across nodes on PostgreSQL: ``NOTIFY`` when a change commits, ``LISTEN`` on every node.

Senders put the notice in the transaction that makes the change (the insert of jobs), or
send it right after the change committed (operator actions): PostgreSQL delivers a
``NOTIFY`` only when its transaction commits, and drops it on rollback, so nobody is woken
for a job that is not there. Every running node keeps one connection that listens on
:data:`CHANNEL` and hands each notice to the event loop.

A notice is ``KIND:TOPIC`` where KIND is :data:`INSERTED` (jobs of TOPIC became
available) or :data:`CONTROL` (TOPIC was paused or resumed, or one of its jobs cancelled).
Notices are only hints: the poll interval still finds everything, so a notice lost with a
dropped connection costs latency, never a job. After a reconnect every topic is woken,
since notices sent while the connection was down are gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.engine import URL

logger = logging.getLogger("jobrunner.pgnotify")

#: The channel every jobrunner node listens on (notices are scoped to one database).
CHANNEL = "jobrunner"
#: Kind of notice: jobs of the topic became available.
INSERTED = "insert"
#: Kind of notice: the topic's control changed (pause, resume, a cancelled job).
CONTROL = "control"

#: The statement that sends one notice (inside the caller's transaction).
NOTIFY = select(func.pg_notify(CHANNEL, bindparam("b_payload")))

#: Longest a stop waits for the listening thread (seconds).
STOP_CHECK = 0.1
#: Longest wait between two attempts to reconnect a lost listening connection (seconds).
MAX_RECONNECT_DELAY = 2.0

#: Receives (kind, topic) for each notice; (None, None) means "wake everything".
OnNotice = Callable[[str | None, str | None], None]


def payload(kind: str, topic: str) -> str:
    """The text of one notice."""
    return f"{kind}:{topic}"


def parse(text: str) -> tuple[str | None, str | None]:
    """(kind, topic) of a notice; (None, None) for text that is not ours (wake everything)."""
    kind, sep, topic = text.partition(":")
    if not sep or kind not in (INSERTED, CONTROL):
        return None, None
    return kind, topic


def send(conn: Connection, kind: str, topics: Iterable[str]) -> None:
    """Send one notice per topic on ``conn``; delivered when its transaction commits."""
    for topic in sorted(set(topics)):
        conn.execute(NOTIFY, {"b_payload": payload(kind, topic)})


def libpq_url(url: URL) -> str:
    """A connection URI psycopg understands for a SQLAlchemy URL (``postgresql+psycopg://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class NotificationListener:
    """Listens on :data:`CHANNEL` in a thread of its own and calls ``on_notice`` in the event loop."""

    def __init__(self, conninfo: str, on_notice: OnNotice) -> None:
        self.conninfo = conninfo
        self.on_notice = on_notice
        #: Set each time the connection is listening (first time and after every reconnect).
        self.listening = threading.Event()
        #: How many times the connection was (re)established: a test can tell a reconnect happened.
        self.connections = 0
        #: The server process of the listening connection (None while disconnected).
        self.backend_pid: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ready once the first connection listens (or failed once)."""
        stop = threading.Event()
        token = anyio.lowlevel.current_token()
        first = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(stop, token, first), name="jobrunner-pg-listener", daemon=True
        )
        thread.start()
        try:
            # A listener that cannot connect must not hold up the start: the poll still works.
            await anyio.to_thread.run_sync(first.wait, 10.0, abandon_on_cancel=True)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(thread.join)

    def _listen(self, stop: threading.Event, token: anyio.lowlevel.EventLoopToken, first: threading.Event) -> None:
        import psycopg

        delay = 0.05
        while not stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    self.listening.set()
                    first.set()
                    delay = 0.05
                    if self.connections > 1:
                        # Notices sent while we were away are lost: look at every topic once.
                        self._deliver(token, None, None)
                    while not stop.is_set():
                        for notice in conn.notifies(timeout=STOP_CHECK):
                            kind, topic = parse(notice.payload)
                            self._deliver(token, kind, topic)
            except RuntimeError:
                return  # the event loop is gone: nothing left to wake
            except Exception as exc:  # noqa: BLE001 - any connection failure: reconnect
                self.listening.clear()
                first.set()
                if stop.is_set():
                    return
                logger.warning("notification connection lost (%s: %s); reconnecting in %.2fs, "
                               "the poll interval covers the gap", type(exc).__name__, exc, delay,
                               extra={"event": "listener_reconnect"})
                time.sleep(delay)
                delay = min(MAX_RECONNECT_DELAY, delay * 2)
            finally:
                self.backend_pid = None

    def _deliver(self, token: anyio.lowlevel.EventLoopToken, kind: str | None, topic: str | None) -> None:
        anyio.from_thread.run_sync(self.on_notice, kind, topic, token=token)


__all__ = ["CHANNEL", "CONTROL", "INSERTED", "NOTIFY", "NotificationListener", "libpq_url", "parse",
           "payload", "send"]
