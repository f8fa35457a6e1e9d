"""``/jobs``: enqueue, list, show, retry and cancel jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..enqueue import WorkerDefaults, build_row, job_defaults
from ..errors import ConfigError, EnqueueError, JobNotFoundError, JobStateError, UnknownWorkerError
from ..job import ALL_STATES, FINAL_STATES, MAX_JOB_ID, Job
from ..storage.records import NewJob
from .group import RouteGroup
from .parsing import MAX_PAGE, as_object, loaded_worker, path_id, query_int, query_number, read_body
from .responses import ApiError, JSONResponse


class JobRoutes(RouteGroup):
    """Jobs from the outside: ``POST /jobs`` enqueues one or a list, ``GET /jobs`` pages
    through them, ``/jobs/{id}`` shows one, and operators retry and cancel."""

    _ENQUEUE_KEYS = frozenset({"worker", "args", "topic", "priority", "delay", "scheduled_at", "max_attempts"})

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [
            Route("/jobs", self.jobs, methods=["GET", "POST"]),
            Route("/jobs/{id}", self.get_job, methods=["GET"]),
            Route("/jobs/{id}/retry", self.retry, methods=["POST"]),
            Route("/jobs/{id}/cancel", self.cancel, methods=["POST"]),
        ]

    def _row(self, item: Any, now: float, cache: dict[tuple[str, str | None], WorkerDefaults]) -> NewJob:
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
            defaults = cache[key] = job_defaults(self.runner.settings, worker, topic, loaded_worker)
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
        """``POST /jobs``: one job (an object) or many in one transaction (a list)."""
        body = await read_body(request, self.settings.max_body)
        items = body if isinstance(body, list) else [as_object(body, "the request body")]
        if not items:
            raise ApiError(400, "an empty list enqueues nothing")
        cache: dict[tuple[str, str | None], WorkerDefaults] = {}
        now = self.runner.clock()
        try:
            rows = [self._row(item, now, cache) for item in items]
        except (EnqueueError, UnknownWorkerError, ConfigError) as exc:
            raise ApiError(400, str(exc)) from None
        stored = await self.runner.in_thread(lambda: self.runner.store_rows(rows))
        return JSONResponse([j.to_dict() for j in stored] if isinstance(body, list) else stored[0].to_dict(), 201)

    async def jobs(self, request: Request) -> Response:
        """``/jobs``: GET lists, POST enqueues."""
        return await (self.enqueue(request) if request.method == "POST" else self.list_jobs(request))

    async def get_job(self, request: Request) -> Response:
        """``GET /jobs/{id}``; with ``?wait=S``, once the job is final or S seconds passed."""
        job_id = path_id(request)
        wait = query_number(request, "wait", 0.0, 0.0, self.settings.max_wait)
        job = await self.runner.in_read_thread(lambda: self.runner.get_job(job_id))
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        if wait > 0 and job.state not in FINAL_STATES:
            job = await self._wait(job_id, wait)
        return JSONResponse(job.to_dict())

    async def _wait(self, job_id: int, seconds: float) -> Job:
        """The job once final, else as it is after ``seconds`` (or when the daemon stops)."""
        final: Job | None = None
        failure: Exception | None = None

        async def cancel_when_stopping(scope: anyio.CancelScope) -> None:
            await self.external.stopping.wait()
            scope.cancel()

        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(cancel_when_stopping, tasks.cancel_scope)
                try:
                    final = await self.runner.wait_async(job_id)
                except JobNotFoundError:
                    pass  # deleted meanwhile: the read below answers 404
                except Exception as exc:  # noqa: BLE001 - re-raised outside the task group
                    failure = exc
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        current = final or await self.runner.in_read_thread(lambda: self.runner.get_job(job_id))
        if current is None:
            raise ApiError(404, f"no job with id {job_id}")
        return current

    async def list_jobs(self, request: Request) -> Response:
        """``GET /jobs``: one page, filtered by topic and state, after a cursor."""
        state = request.query_params.get("state")
        if state is not None and state not in ALL_STATES:
            raise ApiError(400, f"query parameter state must be one of {', '.join(ALL_STATES)}, got {state!r}")
        topic = request.query_params.get("topic") or None
        limit = query_int(request, "limit", 100, 1, MAX_PAGE)
        after = query_int(request, "after", None, 1, MAX_JOB_ID)
        assert limit is not None  # it has a default
        return await self.runner.in_read_thread(lambda: self._page(topic, state, limit, after))

    def _page(self, topic: str | None, state: str | None, limit: int, after: int | None) -> Response:
        """One page of jobs, encoded in the read thread: turning up to 1000 jobs into
        JSON on the event loop would stall claims, acks and heartbeats meanwhile."""
        page, cursor = self.runner.page_jobs(topic, state, limit, after)
        return JSONResponse({"jobs": [j.to_dict() for j in page], "next": cursor})

    async def retry(self, request: Request) -> Response:
        """``POST /jobs/{id}/retry``: a discarded or cancelled job becomes available."""
        job_id = path_id(request)
        retried = await self.runner.in_thread(lambda: self.runner.retry_jobs([job_id]))
        job = await self.runner.in_read_thread(lambda: self.runner.get_job(job_id))
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        if not retried:
            raise ApiError(409, f"job {job_id} is {job.state}; only discarded or cancelled jobs can be retried")
        return JSONResponse(job.to_dict())

    async def cancel(self, request: Request) -> Response:
        """``POST /jobs/{id}/cancel``: 409 when the job had already finished."""
        job_id = path_id(request)
        try:
            job = await self.runner.in_thread(lambda: self.runner.cancel_job(job_id))
        except JobStateError as exc:
            raise ApiError(409, str(exc)) from None
        if job is None:
            raise ApiError(404, f"no job with id {job_id}")
        return JSONResponse(job.to_dict())


__all__ = ["JobRoutes"]
