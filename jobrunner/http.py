"""The daemon's HTTP API: a Starlette application served by Hypercorn.

Starlette runs on anyio, and Hypercorn is an established ASGI server that serves on
asyncio and on trio, like the rest of the runner (uvicorn only runs on asyncio).
Every response is JSON (errors: ``{"error": message}``) except the event stream.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import HttpSettings
from .enqueue import WorkerDefaults, build_row, job_defaults
from .errors import ConfigError, EnqueueError, JobrunnerError, JobStateError, UnknownWorkerError
from .external import ExternalTopics, LeaseError
from .job import ALL_STATES, Job, iso
from .payload import MAX_DEPTH, PayloadError, check as check_value
from .sse import event_stream
from .web import WebViews
from .worker import registered_worker

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

    from .runner import Runner

logger = logging.getLogger("jobrunner.http")

MAX_PAGE = 1000


class JSONResponse(_StarletteJSON):
    """Starlette's JSON response, except that text which is not valid Unicode (lone
    surrogates, from a row written around jobrunner) is answered as U+FFFD rather than
    failing the whole response."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document shipped with the package (``jobrunner/openapi.json``)."""
    text = resources.files("jobrunner").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


# ---------------------------------------------------------------- request helpers


async def _body(request: Request, limit: int) -> Any:
    """The JSON body (None when empty); 413 past ``limit`` bytes, 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, f"request body is nested too deeply (job values nest at most {MAX_DEPTH} levels)") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _object(body: Any, what: str) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    return body


def _number(value: Any, name: str, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _query_number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be a number, got {raw!r}") from None
    return _number(value, f"query parameter {name}", low, high)


def _query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name} must be between {low} and {high}, got {value}")
    return value


def _storable(value: Any, name: str) -> None:
    """400 unless ``value`` can be stored (see :mod:`jobrunner.payload`)."""
    try:
        check_value(value, name)
    except PayloadError as exc:
        raise ApiError(400, str(exc)) from None


def _path_id(request: Request) -> int:
    raw = request.path_params["id"]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(404, f"no job with id {raw!r}") from None
    if not 0 < value < 2**63:
        raise ApiError(404, f"no job with id {raw!r}")
    return value


def _job(job: Job) -> dict[str, Any]:
    return job.to_dict()


#: The header that carries the lease token a claim handed out (complete, fail, extend).
LEASE_TOKEN_HEADER = "X-Jobrunner-Lease-Token"


def _lease_token(request: Request) -> str:
    token = request.headers.get(LEASE_TOKEN_HEADER, "").strip()
    if not token:
        raise ApiError(400, f"header {LEASE_TOKEN_HEADER} is required: the lease_token the claim returned")
    return token


def _loaded_worker(worker: Any) -> Any:
    """The Worker class of a loaded module named by ``worker``; the API never imports."""
    cls = registered_worker(worker) if isinstance(worker, str) else None
    if cls is None:
        raise ApiError(400, f"unknown worker {worker!r}: not a Worker of the modules this daemon loaded "
                            "([runner] modules)")
    return cls


# ---------------------------------------------------------------- the API


class Api:
    """The handlers, bound to a running :class:`~jobrunner.Runner`."""

    _ENQUEUE_KEYS = frozenset({"worker", "args", "topic", "priority", "delay", "scheduled_at", "max_attempts"})

    def __init__(self, runner: Runner, external: ExternalTopics, settings: HttpSettings) -> None:
        self.runner = runner
        self.external = external
        self.settings = settings

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.runner.run_db(fn, *args)

    # -- producers

    def _row(self, item: Any, now: float, cache: dict[tuple[str, str | None], WorkerDefaults]) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ApiError(400, "each job must be a JSON object")
        unknown = set(item) - self._ENQUEUE_KEYS
        if unknown:
            known = ", ".join(sorted(self._ENQUEUE_KEYS))
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: {known})")
        worker = item.get("worker")
        if not isinstance(worker, str) or not worker:
            raise ApiError(400, "field 'worker' (a non-empty string) is required")
        topic = item.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise ApiError(400, "field 'topic' must be a string")
        key = (worker, topic)
        defaults = cache.get(key)
        if defaults is None:
            if topic is not None and topic not in self.runner.settings.topics:
                raise ApiError(400, f"topic {topic!r} is not configured")
            defaults = cache[key] = job_defaults(self.runner.settings, worker, topic, _loaded_worker)
        options: dict[str, Any] = {k: item[k] for k in ("priority", "delay", "max_attempts") if item.get(k) is not None}
        scheduled = item.get("scheduled_at")
        if scheduled is not None:
            if not isinstance(scheduled, str):
                raise ApiError(400, "field 'scheduled_at' must be an ISO 8601 date-time string")
            try:
                when = datetime.fromisoformat(scheduled)
            except ValueError:
                raise ApiError(400, f"field 'scheduled_at' is not an ISO 8601 date-time: {scheduled!r}") from None
            options["scheduled_at"] = when if when.tzinfo else when.replace(tzinfo=UTC)
        return build_row(self.runner.settings, worker, item.get("args", {}), options, now, defaults)

    async def enqueue(self, request: Request) -> Response:
        body = await _body(request, self.settings.max_body)
        items = body if isinstance(body, list) else [_object(body, "the request body")]
        if not items:
            raise ApiError(400, "an empty list enqueues nothing")
        cache: dict[tuple[str, str | None], WorkerDefaults] = {}
        now = self.runner.clock()
        try:
            rows = [self._row(item, now, cache) for item in items]
        except (EnqueueError, UnknownWorkerError, ConfigError) as exc:
            raise ApiError(400, str(exc)) from None
        stored = await self._db(self.runner.store_rows, rows)
        return JSONResponse([_job(j) for j in stored] if isinstance(body, list) else _job(stored[0]), 201)

    async def jobs(self, request: Request) -> Response:
        """``/jobs``: GET lists, POST enqueues."""
        return await (self.enqueue(request) if request.method == "POST" else self.list_jobs(request))

    async def get_job(self, request: Request) -> Response:
        job_id = _path_id(request)
        job = await self.runner.run_read(self.runner.store.get_job, job_id)
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        return JSONResponse(_job(job))

    async def list_jobs(self, request: Request) -> Response:
        state = request.query_params.get("state")
        if state is not None and state not in ALL_STATES:
            raise ApiError(400, f"query parameter state must be one of {', '.join(ALL_STATES)}, got {state!r}")
        topic = request.query_params.get("topic") or None
        limit = _query_int(request, "limit", 100, 1, MAX_PAGE)
        after = _query_int(request, "after", None, 1, 2**63 - 1)
        return await self.runner.run_read(self._page, topic, state, limit, after)

    def _page(self, topic: str | None, state: str | None, limit: int, after: int | None) -> Response:
        """One page of jobs, encoded in the read thread: turning up to 1000 jobs into
        JSON on the event loop would stall claims, acks and heartbeats meanwhile."""
        page, cursor = self.runner.store.page_jobs(topic, state, limit, after)
        return JSONResponse({"jobs": [_job(j) for j in page], "next": cursor})

    async def retry(self, request: Request) -> Response:
        job_id = _path_id(request)
        retried = await self._db(self.runner.retry_jobs, [job_id])
        job = await self.runner.run_read(self.runner.store.get_job, job_id)
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        if not retried:
            raise ApiError(409, f"job {job_id} is {job.state}; only discarded or cancelled jobs can be retried")
        return JSONResponse(_job(job))

    async def cancel(self, request: Request) -> Response:
        job_id = _path_id(request)
        try:
            job = await self._db(self.runner.cancel_job, job_id)
        except JobStateError as exc:
            raise ApiError(409, str(exc)) from None
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        return JSONResponse(_job(job))

    async def topics(self, request: Request) -> Response:
        return JSONResponse({"topics": await self.runner.run_read(self.runner.stats)})

    def _topic(self, request: Request) -> str:
        topic: str = request.path_params["topic"]
        if topic not in self.runner.settings.topics:
            raise ApiError(404, f"no topic named {topic!r}")
        return topic

    async def pause(self, request: Request) -> Response:
        topic = self._topic(request)
        await self._db(self.runner.pause, topic)
        return JSONResponse({"topic": topic, "paused": True})

    async def resume(self, request: Request) -> Response:
        topic = self._topic(request)
        await self._db(self.runner.resume, topic)
        self.external.notify(topic)
        return JSONResponse({"topic": topic, "paused": False})

    # -- external workers

    async def claim(self, request: Request) -> Response:
        topic = self._topic(request)
        if self.external.topic(topic) is None:
            raise ApiError(409, f"topic {topic!r} is run by the runner's own workers (set external = true to serve it)")
        wait = _query_number(request, "wait", 0.0, 0.0, self.settings.max_wait)
        lease = _query_number(request, "lease", self.settings.lease, 0.001, 86400.0)
        holder = request.headers.get("x-jobrunner-worker") or f"http:{request.client.host if request.client else '?'}"
        leased = await self.external.claim(topic, holder[:200], wait, lease)
        if leased is None:
            return Response(status_code=204)
        return JSONResponse({"job": _job(leased.job), "lease_expires_at": iso(leased.expires_at),
                             "lease_token": leased.token})

    async def complete(self, request: Request) -> Response:
        job_id = _path_id(request)
        body = _object(await _body(request, self.settings.max_body), "the request body")
        _storable(body.get("result"), "field 'result'")
        unknown = set(body) - {"result"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: result)")
        token = _lease_token(request)
        return JSONResponse(_job(await self._conclude(job_id, token, self.external.complete, body.get("result"))))

    async def fail(self, request: Request) -> Response:
        job_id = _path_id(request)
        body = _object(await _body(request, self.settings.max_body), "the request body")
        _storable(body.get("error"), "field 'error'")
        unknown = set(body) - {"error"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: error)")
        error = body.get("error")
        if not isinstance(error, str) or not error:
            raise ApiError(400, "field 'error' (a non-empty string) is required")
        token = _lease_token(request)
        return JSONResponse(_job(await self._conclude(job_id, token, self.external.fail, error[:10_000])))

    async def extend(self, request: Request) -> Response:
        job_id = _path_id(request)
        body = _object(await _body(request, self.settings.max_body), "the request body")
        unknown = set(body) - {"seconds"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: seconds)")
        seconds = _number(body.get("seconds"), "field 'seconds'", 0.001, 86400.0)
        token = _lease_token(request)
        await self._known(job_id)
        try:
            expires = await self.external.extend(job_id, token, seconds)
        except LeaseError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"id": job_id, "lease_expires_at": iso(expires)})

    async def _known(self, job_id: int) -> None:
        if await self.runner.run_read(self.runner.store.get_job, job_id) is None:
            raise ApiError(404, f"no job with id {job_id}")

    async def _conclude(
        self, job_id: int, token: str, conclude: Callable[[int, str, Any], Awaitable[Job]], value: Any
    ) -> Job:
        await self._known(job_id)
        try:
            return await conclude(job_id, token, value)
        except LeaseError as exc:
            raise ApiError(409, str(exc)) from None

    # -- events and documents

    async def events(self, request: Request) -> Response:
        topic = request.query_params.get("topic") or None
        return StreamingResponse(
            event_stream(topic, self.external.stopping), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


# ---------------------------------------------------------------- middleware and app


class Guard:
    """Bearer-token check on every request when a token is set, and JSON for every error."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        if token is not None and not token.isascii():
            raise ConfigError("[http] key 'token' must be printable ASCII")
        self._expected = f"Bearer {token}".encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.token is not None:
            supplied = b""
            for key, value in scope.get("headers", []):
                if key == b"authorization":
                    supplied = value
            # Tokens are printable ASCII (checked in the config): compare the raw bytes.
            if not hmac.compare_digest(supplied, self._expected):
                headers = {"WWW-Authenticate": "Bearer"}
                if scope.get("method") in ("POST", "PUT", "PATCH"):
                    headers["Connection"] = "close"  # the body is never read
                response = JSONResponse({"error": "missing or wrong bearer token"}, 401, headers=headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _close_if_unread(request: Request) -> dict[str, str]:
    """An answer sent before the request body was read must close the connection:
    the unread body would otherwise be taken for the next request."""
    if request.method in ("POST", "PUT", "PATCH") and not getattr(request, "_stream_consumed", False):
        return {"Connection": "close"}
    return {}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.message}, exc.status, headers=_close_if_unread(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = {**(getattr(exc, "headers", None) or {}), **_close_if_unread(request)}
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("HTTP %s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    if isinstance(exc, JobrunnerError):
        return JSONResponse({"error": str(exc)}, 503)
    return JSONResponse({"error": "internal error"}, 500)


def create_app(runner: Runner, external: ExternalTopics, settings: HttpSettings) -> ASGIApp:
    """The ASGI application of the API."""
    api = Api(runner, external, settings)
    web = WebViews(runner, external.stopping)  # the dashboard and /metrics
    routes = [
        Route("/jobs", api.jobs, methods=["GET", "POST"]),
        Route("/jobs/{id}", api.get_job, methods=["GET"]),
        Route("/jobs/{id}/retry", api.retry, methods=["POST"]),
        Route("/jobs/{id}/cancel", api.cancel, methods=["POST"]),
        Route("/jobs/{id}/complete", api.complete, methods=["POST"]),
        Route("/jobs/{id}/fail", api.fail, methods=["POST"]),
        Route("/jobs/{id}/extend", api.extend, methods=["POST"]),
        Route("/topics", api.topics, methods=["GET"]),
        Route("/topics/{topic}/pause", api.pause, methods=["POST"]),
        Route("/topics/{topic}/resume", api.resume, methods=["POST"]),
        Route("/topics/{topic}/claim", api.claim, methods=["POST"]),
        Route("/events", api.events, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        *web.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=web.lifespan,
    )
    return web.shell(Guard(app, settings.token))


async def serve(app: ASGIApp, settings: HttpSettings, shutdown: anyio.Event, graceful: float = 2.0) -> None:
    """Serve ``app`` on ``settings.host:port`` until ``shutdown`` is set (asyncio or trio);
    open requests get ``graceful`` seconds (at most 2) to finish."""
    import sniffio
    from hypercorn.config import Config

    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("jobrunner.http.server")
    config.graceful_timeout = min(2.0, graceful)
    # Starlette spells ASGI scopes and messages as plain mappings, hypercorn as TypedDicts:
    # one protocol, two spellings that mypy cannot match.
    asgi_app = cast("ASGIFramework", app)
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as serve_trio

        serving = serve_trio(asgi_app, config, shutdown_trigger=shutdown.wait)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        serving = serve_asyncio(asgi_app, config, shutdown_trigger=shutdown.wait)
    try:
        await serving
    except OSError as exc:
        raise JobrunnerError(
            f"HTTP API cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from exc
