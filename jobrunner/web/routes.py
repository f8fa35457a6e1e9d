"""The routes of the dashboard and of ``/metrics``, added to the daemon's HTTP API.

The dashboard's page and its static files (``jobrunner/web/static``, shipped in the
wheel, nothing fetched at run time) are served to anyone, since they hold no data: the
page asks for the API token itself when the API wants one. Everything with data
(``/dashboard/api/…``, ``/metrics`` and the API the page calls) stays behind the token.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..census import CensusCache
from ..fanout import subscribe
from ..job import ALL_STATES, MAX_JOB_ID
from ..metrics import RunnerMetrics
from .live import LiveBoard

if TYPE_CHECKING:
    from ..runner import Runner

#: Where the dashboard is served; ``/`` serves it too.
DASHBOARD_PATH = "/dashboard"
#: The largest page of the dashboard's jobs table.
MAX_ROWS = 200

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
#: The page runs only its own files: no inline script, nothing from elsewhere, no framing.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """The shipped static files: name -> (content, content type, ETag)."""
    found = {}
    folder = resources.files("jobrunner.web").joinpath("static")
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            found[entry.name] = (body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return found


class StaticShell:
    """Serves the dashboard's page and files in front of ``app`` (the guarded API), and
    calls ``on_write`` for every other POST: a pause, resume or retry sends no event, yet
    open dashboards should show it at their next delta."""

    def __init__(self, app: ASGIApp, on_write: Callable[[], None]) -> None:
        self.app = app
        self.on_write = on_write
        self.files = _static_files()

    def _name(self, path: str) -> str | None:
        if path in ("/", DASHBOARD_PATH, DASHBOARD_PATH + "/"):
            return "index.html"
        prefix = DASHBOARD_PATH + "/static/"
        if path.startswith(prefix) and path[len(prefix):] in self.files:
            return path[len(prefix):]
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._name(scope.get("path", "")) if scope["type"] == "http" else None
        if name is None or scope.get("method") not in ("GET", "HEAD"):
            try:
                await self.app(scope, receive, send)
            finally:
                if scope.get("method") == "POST":
                    self.on_write()
            return
        body, media_type, etag = self.files[name]
        headers = {**_HEADERS, "ETag": etag}
        if etag in Request(scope).headers.get("if-none-match", ""):
            response = Response(status_code=304, headers=headers)
        else:
            response = Response(body, media_type=media_type, headers=headers)
        await response(scope, receive, send)


def _query(request: Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and allowed is not None and value not in allowed:
        raise HTTPException(400, f"query parameter {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _query_int(request: Request, name: str, default: int | None, high: int) -> int | None:
    raw = request.query_params.get(name) or None
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= high:
        raise HTTPException(400, f"query parameter {name} must be between 1 and {high}, got {value}")
    return value


class WebViews:
    """The dashboard's data routes and ``/metrics`` of one runner.

    Their event subscriptions live as long as the HTTP server (:meth:`lifespan`).
    """

    def __init__(self, runner: Runner, stopping: anyio.Event) -> None:
        self.runner = runner
        self.stopping = stopping
        self.census = CensusCache(runner)
        self.metrics = RunnerMetrics(runner, self.census)
        self.board = LiveBoard(runner, self.census)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Follow the runner's events while the server serves."""
        unsubscribe = subscribe(self.metrics, self.board)
        try:
            yield
        finally:
            unsubscribe()

    def routes(self) -> list[Route]:
        """The routes to add to the API."""
        return [
            Route("/metrics", self.metrics_text, methods=["GET"]),
            Route(DASHBOARD_PATH + "/api/stream", self.stream, methods=["GET"]),
            Route(DASHBOARD_PATH + "/api/jobs", self.jobs, methods=["GET"]),
        ]

    def shell(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the dashboard's page and static files served in front of it."""
        return StaticShell(app, self.board.poke)

    async def metrics_text(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stream(self, request: Request) -> Response:
        """``GET /dashboard/api/stream``: a snapshot, then a delta a second (server-sent events)."""
        return StreamingResponse(self.board.stream(self.stopping), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def jobs(self, request: Request) -> Response:
        """``GET /dashboard/api/jobs?topic=&state=&worker=&order=newest|oldest&after=&limit=``."""
        topic = _query(request, "topic")
        state = _query(request, "state", ALL_STATES)
        worker = _query(request, "worker")
        order = _query(request, "order", ("newest", "oldest")) or "newest"
        limit = _query_int(request, "limit", 50, MAX_ROWS) or 50
        after = _query_int(request, "after", None, MAX_JOB_ID)
        rows, cursor = await self.runner.in_read_thread(
            lambda: self.runner.store.insight.job_summaries(topic=topic, state=state, worker=worker, limit=limit,
                                                            after=after, oldest_first=order == "oldest"))
        return JSONResponse({"jobs": rows, "next": cursor})


__all__ = ["DASHBOARD_PATH", "StaticShell", "WebViews"]
