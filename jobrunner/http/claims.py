"""External workers: claim a job of an ``external = true`` topic under a lease, then
complete it, fail it or extend the lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..external import LeaseError
from ..job import Job, iso
from .group import RouteGroup
from .parsing import as_object, lease_token, number, path_id, query_number, read_body, storable
from .responses import ApiError, JSONResponse


class ClaimRoutes(RouteGroup):
    """The lease cycle of external workers: ``POST /topics/{topic}/claim`` (long-poll),
    then ``/jobs/{id}/complete``, ``/fail`` or ``/extend`` with the lease token."""

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [
            Route("/jobs/{id}/complete", self.complete, methods=["POST"]),
            Route("/jobs/{id}/fail", self.fail, methods=["POST"]),
            Route("/jobs/{id}/extend", self.extend, methods=["POST"]),
            Route("/topics/{topic}/claim", self.claim, methods=["POST"]),
        ]

    async def claim(self, request: Request) -> Response:
        """``POST /topics/{topic}/claim``: a job under a lease, or 204 after ``wait`` seconds."""
        topic = self._topic(request)
        if self.external.topic(topic) is None:
            raise ApiError(409, f"topic {topic!r} is run by the runner's own workers (set external = true to serve it)")
        wait = query_number(request, "wait", 0.0, 0.0, self.settings.max_wait)
        lease = query_number(request, "lease", self.settings.lease, 0.001, 86400.0)
        holder = request.headers.get("x-jobrunner-worker") or f"http:{request.client.host if request.client else '?'}"
        leased = await self.external.claim(topic, holder[:200], wait, lease)
        if leased is None:
            return Response(status_code=204)
        return JSONResponse({"job": leased.job.to_dict(), "lease_expires_at": iso(leased.expires_at),
                             "lease_token": leased.token})

    async def complete(self, request: Request) -> Response:
        """``POST /jobs/{id}/complete``: the job completed, with an optional result."""
        job_id = path_id(request)
        body = as_object(await read_body(request, self.settings.max_body), "the request body")
        storable(body.get("result"), "field 'result'")
        unknown = set(body) - {"result"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: result)")
        token = lease_token(request)
        return JSONResponse((await self._conclude(job_id, token, self.external.complete, body.get("result"))).to_dict())

    async def fail(self, request: Request) -> Response:
        """``POST /jobs/{id}/fail``: the attempt failed with ``error``; retried or discarded."""
        job_id = path_id(request)
        body = as_object(await read_body(request, self.settings.max_body), "the request body")
        storable(body.get("error"), "field 'error'")
        unknown = set(body) - {"error"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: error)")
        error = body.get("error")
        if not isinstance(error, str) or not error:
            raise ApiError(400, "field 'error' (a non-empty string) is required")
        token = lease_token(request)
        return JSONResponse((await self._conclude(job_id, token, self.external.fail, error[:10_000])).to_dict())

    async def extend(self, request: Request) -> Response:
        """``POST /jobs/{id}/extend``: the lease lasts ``seconds`` more from now."""
        job_id = path_id(request)
        body = as_object(await read_body(request, self.settings.max_body), "the request body")
        unknown = set(body) - {"seconds"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: seconds)")
        seconds = number(body.get("seconds"), "field 'seconds'", 0.001, 86400.0)
        token = lease_token(request)
        await self._known(job_id)
        try:
            expires = await self.external.extend(job_id, token, seconds)
        except LeaseError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"id": job_id, "lease_expires_at": iso(expires)})

    async def _conclude(
        self, job_id: int, token: str, conclude: Callable[[int, str, Any], Awaitable[Job]], value: Any
    ) -> Job:
        await self._known(job_id)
        try:
            return await conclude(job_id, token, value)
        except LeaseError as exc:
            raise ApiError(409, str(exc)) from None


__all__ = ["ClaimRoutes"]
