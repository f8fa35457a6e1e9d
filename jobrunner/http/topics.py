"""``/topics``: counts per topic and state, pause and resume, scale."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import ScaleError
from .group import RouteGroup
from .parsing import as_object, read_body
from .responses import ApiError, JSONResponse


class TopicRoutes(RouteGroup):
    """Topics from the outside: their counts, and pausing or resuming one on every node."""

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [
            Route("/topics", self.topics, methods=["GET"]),
            Route("/topics/{topic}/pause", self.pause, methods=["POST"]),
            Route("/topics/{topic}/resume", self.resume, methods=["POST"]),
            Route("/topics/{topic}/scale", self.scale, methods=["POST"]),
        ]

    async def topics(self, request: Request) -> Response:
        """``GET /topics``: counts per topic and state."""
        return JSONResponse({"topics": await self.runner.in_read_thread(self.runner.stats)})

    async def pause(self, request: Request) -> Response:
        """``POST /topics/{topic}/pause``."""
        topic = self._topic(request)
        await self.runner.in_thread(lambda: self.runner.pause(topic))
        return JSONResponse({"topic": topic, "paused": True})

    async def resume(self, request: Request) -> Response:
        """``POST /topics/{topic}/resume``: waiting external claims look again at once."""
        topic = self._topic(request)
        await self.runner.in_thread(lambda: self.runner.resume(topic))
        self.external.notify(topic)
        return JSONResponse({"topic": topic, "paused": False})

    async def scale(self, request: Request) -> Response:
        """``POST /topics/{topic}/scale`` with ``{"parallelism": N}`` (``null``: back to the
        configured value): every node runs at most N jobs of the topic at once from now on."""
        topic = self._topic(request)
        body = as_object(await read_body(request, self.settings.max_body), "the request body")
        unknown = set(body) - {"parallelism"}
        if unknown or "parallelism" not in body:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r} (known: parallelism)" if unknown
                           else "field 'parallelism' is required (a whole number, or null to reset)")
        try:
            now = await self.runner.in_thread(lambda: self.runner.scale(topic, body["parallelism"]))
        except ScaleError as exc:
            raise ApiError(400, str(exc)) from None
        self.external.notify(topic)  # a waiting external claim may fit now
        configured = self.runner.settings.topic(topic).parallelism
        return JSONResponse({"topic": topic, "parallelism": now, "configured": configured,
                             "scaled": body["parallelism"] is not None})


__all__ = ["TopicRoutes"]
