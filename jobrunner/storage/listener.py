"""The listening end of notices (see :mod:`.notices`): one PostgreSQL connection per node.

It runs in a thread of its own and hands each notice's text to the event loop. A dropped
connection is reopened with backoff; notices sent while it was down are gone, so after
a reconnect the handler gets None ("look at everything").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus
from sqlalchemy.engine import URL

logger = logging.getLogger("jobrunner.pgnotify")

#: Longest a stop waits for the listening thread (seconds).
STOP_CHECK = 0.1
#: Longest wait between two attempts to reconnect a lost listening connection (seconds).
MAX_RECONNECT_DELAY = 2.0


def libpq_url(url: URL, application_name: str | None = None) -> str:
    """A connection URI psycopg understands for a SQLAlchemy URL (``postgresql+psycopg://``),
    with ``application_name`` unless the URL names one."""
    if application_name is not None and "application_name" not in url.query:
        url = url.update_query_dict({"application_name": application_name})
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class NotificationListener:
    """Listens on ``channel`` in a thread of its own and calls ``on_text`` in the event loop
    with each notice's text (None after a reconnect: notices may have been missed)."""

    def __init__(self, conninfo: str, channel: str, on_text: Callable[[str | None], None]) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.on_text = on_text
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
                    conn.execute(f"LISTEN {self.channel}")
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    self.listening.set()
                    first.set()
                    delay = 0.05
                    if self.connections > 1:
                        # Notices sent while we were away are lost: look at everything once.
                        self._deliver(token, None)
                    while not stop.is_set():
                        for notice in conn.notifies(timeout=STOP_CHECK):
                            self._deliver(token, notice.payload)
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

    def _deliver(self, token: anyio.lowlevel.EventLoopToken, text: str | None) -> None:
        anyio.from_thread.run_sync(self.on_text, text, token=token)


__all__ = ["MAX_RECONNECT_DELAY", "STOP_CHECK", "NotificationListener", "libpq_url"]
