"""``GET /events``: lifecycle events as server-sent events.

Each reader gets its own queue, bounded in events and in bytes (events carry whole jobs,
arguments included): a reader that falls that far behind is sent a final ``lagged``
event and dropped, and what was queued for it is released at once. It can reconnect.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import events
from ..job import Job
from ..loop import EventLoop
from .group import RouteGroup

#: Bounds on what one event-stream reader may have queued: past either, it is dropped
#: with a final ``lagged`` event.
SSE_QUEUE = 1000
SSE_MAX_BYTES = 4 * 1024 * 1024
SSE_KEEPALIVE = 15.0


def _encode(value: Any) -> Any:
    if isinstance(value, Job):
        return value.to_dict()
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return repr(value)


class _Reader:
    """What one event-stream reader has not yet been sent, bounded by :data:`SSE_QUEUE`
    events and :data:`SSE_MAX_BYTES` bytes. Past either bound the queue is emptied (its
    memory returned) and the reader is told it lagged, then dropped."""

    #: Across the readers of this process (see :func:`stats`).
    queued_total = 0
    open_readers = 0
    lagged_readers = 0

    def __init__(self) -> None:
        self.items: deque[str] = deque()
        self.size = 0
        self.lagged = 0  # events dropped when the bound was hit; 0 while in step
        self.ready = anyio.Event()

    def push(self, text: str) -> None:
        """Queue one event's text (ASCII: JSON escapes the rest), or give up on the reader."""
        if self.lagged:
            return
        if len(self.items) >= SSE_QUEUE or self.size + len(text) > SSE_MAX_BYTES:
            self.lagged = len(self.items) + 1
            _Reader.lagged_readers += 1
            self.clear()
        else:
            self.items.append(text)
            self.size += len(text)
            _Reader.queued_total += len(text)
        self.ready.set()

    def pop(self) -> str | None:
        """The next text to send, or None when there is none."""
        if not self.items:
            return None
        text = self.items.popleft()
        self.size -= len(text)
        _Reader.queued_total -= len(text)
        return text

    def clear(self) -> None:
        """Forget everything queued."""
        _Reader.queued_total -= self.size
        self.items.clear()
        self.size = 0


def stats() -> dict[str, int]:
    """Event-stream readers of this process: how many are open, how many bytes wait to be
    sent to them, and how many were dropped for lagging so far."""
    return {"readers": _Reader.open_readers, "queued_bytes": _Reader.queued_total,
            "lagged": _Reader.lagged_readers}


async def event_stream(topic: str | None, stopping: anyio.Event) -> AsyncIterator[str]:
    """Server-sent events for every lifecycle event (of one topic, when given), until
    ``stopping`` is set or the reader falls too far behind (a final ``lagged`` event)."""
    reader = _Reader()
    loop = EventLoop.current()

    def receivers_for(name: str) -> Callable[..., None]:
        def receive_event(sender: Any, **payload: Any) -> None:
            if topic is not None and sender != topic and not name.startswith("runner_"):
                return
            if reader.lagged:  # nothing more is sent to it: spare the encoding
                return
            data = json.dumps({"event": name, "sender": sender, **{k: _encode(v) for k, v in payload.items()}})
            loop.call(reader.push, f"event: {name}\ndata: {data}\n\n")
        return receive_event

    connected = [(signal, receivers_for(signal.name)) for signal in events.ALL_SIGNALS]
    for signal, receiver in connected:
        signal.connect(receiver, weak=False)
    _Reader.open_readers += 1
    try:
        yield ": connected\n\n"
        while not stopping.is_set():
            text = reader.pop()
            if text is not None:
                yield text
                continue
            if reader.lagged:
                data = json.dumps({"event": "lagged", "dropped": reader.lagged, "max_events": SSE_QUEUE,
                                   "max_bytes": SSE_MAX_BYTES})
                yield f"event: lagged\ndata: {data}\n\n"
                return
            reader.ready = anyio.Event()
            with anyio.move_on_after(SSE_KEEPALIVE):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_when, stopping, tg.cancel_scope)
                    await reader.ready.wait()
                    tg.cancel_scope.cancel()
            if not reader.ready.is_set() and not stopping.is_set():
                yield ": keep-alive\n\n"
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver)
        reader.lagged = reader.lagged or 1  # a push still arriving from a thread is dropped
        reader.clear()
        _Reader.open_readers -= 1


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class EventRoutes(RouteGroup):
    """``GET /events[?topic=T]``: the event stream, until the runner stops."""

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [Route("/events", self.events, methods=["GET"])]

    async def events(self, request: Request) -> Response:
        """``GET /events``: every lifecycle event (of one topic, when given)."""
        topic = request.query_params.get("topic") or None
        return StreamingResponse(
            event_stream(topic, self.external.stopping), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


__all__ = ["SSE_MAX_BYTES", "SSE_QUEUE", "EventRoutes", "event_stream", "stats"]
