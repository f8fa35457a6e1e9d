"""``/topics``: counts per topic and state, pause and resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .group import RouteGroup
from .responses import JSONResponse


class TopicRoutes(RouteGroup):
    """Topics from the outside: their counts, and pausing or resuming one on every node."""

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [
            Route("/topics", self.topics, methods=["GET"]),
            Route("/topics/{topic}/pause", self.pause, methods=["POST"]),
            Route("/topics/{topic}/resume", self.resume, methods=["POST"]),
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


__all__ = ["TopicRoutes"]
