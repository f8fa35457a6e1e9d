"""Topic supervision: restart a crashed producer with backoff, drain on shutdown.

Each topic runs in its own task group holding its producer and its job tasks. A crash
in one topic's producer is caught here and never reaches another topic.
"""

from __future__ import annotations

import collections
import logging
import time

import anyio
from anyio.abc import TaskStatus

from . import events
from .config import RunnerSettings
from .producer import Producer

logger = logging.getLogger("jobrunner.supervisor")

RESTART_DELAY_BASE = 0.1
RESTART_DELAY_MAX = 5.0
FINAL_FLUSH_TIMEOUT = 10.0


class TopicSupervisor:
    """Supervises one topic's producer and jobs.

    Lifecycle: :meth:`run` reports ready once the producer loop is started, claims
    until :meth:`stop`, then gives running jobs ``shutdown_grace`` seconds, cancels the
    rest (putting them back as available) and writes every outcome before returning.
    """

    def __init__(self, producer: Producer, settings: RunnerSettings) -> None:
        self.producer = producer
        self.settings = settings
        self.name = producer.topic.name
        self.crashed_out = False
        self._stop_requested = anyio.Event()

    def stop(self) -> None:
        """Begin a graceful stop (idempotent)."""
        self.producer.stop_claiming()
        self._stop_requested.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the topic until stopped; never raises except for cancellation of the caller."""
        reason = "stopped"
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._enforce_grace)
                events.emit(events.topic_started, self.name, parallelism=self.producer.topic.parallelism)
                task_status.started()
                reason = await self._supervise(tg)
                # The producer is done; let the grace watcher go once no job is left.
                await self.producer.wait_idle()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.producer.cancel_running()
                await self._final_flush()
            self.producer.announcer.flush()
            events.emit(events.topic_stopped, self.name, reason=reason)

    async def _supervise(self, tg: anyio.abc.TaskGroup) -> str:
        restarts: collections.deque[float] = collections.deque()
        while True:
            try:
                await self.producer.run(tg)
                return "stopped"
            except Exception as exc:
                now = time.monotonic()
                restarts.append(now)
                while restarts and now - restarts[0] > self.settings.restart_window:
                    restarts.popleft()
                logger.error(
                    "topic_crashed topic=%s: producer raised %s: %s", self.name, type(exc).__name__, exc,
                    exc_info=exc, extra={"event": "topic_crashed", "topic": self.name},
                )
                events.emit(events.topic_crashed, self.name, error=exc, restarts=len(restarts))
                if len(restarts) > self.settings.max_restarts:
                    self.crashed_out = True
                    self.stop()
                    return f"too many restarts ({len(restarts)} within {self.settings.restart_window:g}s)"
                delay = min(RESTART_DELAY_MAX, RESTART_DELAY_BASE * 2 ** (len(restarts) - 1))
                with anyio.move_on_after(delay):
                    await self._stop_requested.wait()
                events.emit(events.topic_restarted, self.name, restarts=len(restarts), delay=delay)

    async def _enforce_grace(self) -> None:
        await self._stop_requested.wait()
        with anyio.move_on_after(self.settings.shutdown_grace):
            await self.producer.wait_idle()
        if self.producer.running:
            logger.warning(
                "topic_grace_expired topic=%s: cancelling %d running job(s) after %gs; they go back "
                "to the table", self.name, self.producer.running, self.settings.shutdown_grace,
                extra={"event": "topic_grace_expired", "topic": self.name},
            )
        self.producer.cancel_running()

    async def _final_flush(self) -> None:
        """Write what is left (outcomes and put-backs), retrying a failing database briefly."""
        with anyio.move_on_after(FINAL_FLUSH_TIMEOUT) as scope:
            await self.producer.wait_idle()
            delay = 0.05
            while self.producer.has_pending:
                try:
                    await self.producer.flush(0)
                except Exception as exc:  # noqa: BLE001 - retried until the flush timeout
                    logger.error("topic_flush_failed topic=%s: %s; retrying", self.name, exc)
                    await anyio.sleep(delay)
                    delay = min(1.0, delay * 2)
        if scope.cancelled_caught:
            logger.error(
                "topic_flush_abandoned topic=%s: outcomes not written; the jobs stay executing until "
                "rescued", self.name, extra={"event": "topic_flush_abandoned", "topic": self.name},
            )

