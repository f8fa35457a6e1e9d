"""The base of every group of routes: the handlers of one concern, bound to a running runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.routing import BaseRoute

from ..config import HttpSettings
from ..external import ExternalTopics
from .responses import ApiError

if TYPE_CHECKING:
    from ..runner import Runner


class RouteGroup:
    """Handlers of one concern (jobs, topics, claims...) and the routes that reach them.

    A subclass implements :meth:`routes`; the application lists the groups it serves
    (:data:`jobrunner.http.app.ROUTE_GROUPS`) and builds each with the running runner,
    its external topics and the ``[http]`` settings.
    """

    def __init__(self, runner: Runner, external: ExternalTopics, settings: HttpSettings) -> None:
        self.runner = runner
        self.external = external
        self.settings = settings

    def routes(self) -> list[BaseRoute]:
        """The routes of this group, bound to its handlers."""
        raise NotImplementedError

    def _topic(self, request: Request) -> str:
        """The configured topic named in the path; 404 otherwise."""
        topic: str = request.path_params["topic"]
        if topic not in self.runner.settings.topics:
            raise ApiError(404, f"no topic named {topic!r}")
        return topic

    async def _known(self, job_id: int) -> None:
        """404 unless a job ``job_id`` exists."""
        if await self.runner.in_read_thread(lambda: self.runner.get_job(job_id)) is None:
            raise ApiError(404, f"no job with id {job_id}")


__all__ = ["RouteGroup"]
