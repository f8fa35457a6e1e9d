"""The ASGI application: the route groups it serves, the bearer-token guard, and the
error handlers that answer every failure as ``{"error": message}``."""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ..config import HttpSettings
from ..errors import JobrunnerError
from ..external import ExternalTopics
from .auth import Guard
from .claims import ClaimRoutes
from .group import RouteGroup
from .jobs import JobRoutes
from .responses import ApiError, JSONResponse
from .sse import EventRoutes
from .topics import TopicRoutes

if TYPE_CHECKING:
    from ..runner import Runner

logger = logging.getLogger("jobrunner.http")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document shipped with the package (``jobrunner/openapi.json``)."""
    text = resources.files("jobrunner").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


class DocumentRoutes(RouteGroup):
    """``GET /openapi.json``: the API described (the document every route is tested against)."""

    def routes(self) -> list[BaseRoute]:
        """The routes of this group."""
        return [Route("/openapi.json", self.openapi, methods=["GET"])]

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``."""
        return JSONResponse(openapi_document())


#: Every group of routes the API serves. A new group (a dashboard, metrics) is a
#: :class:`RouteGroup` subclass added here, and its routes in ``jobrunner/openapi.json``.
ROUTE_GROUPS: tuple[type[RouteGroup], ...] = (JobRoutes, ClaimRoutes, TopicRoutes, EventRoutes, DocumentRoutes)


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
    """The ASGI application of the API: every route of :data:`ROUTE_GROUPS`, behind the token."""
    from ..web import WebViews  # the dashboard and /metrics: their page is served outside the guard

    web = WebViews(runner, external.stopping)
    routes = [route for group in ROUTE_GROUPS for route in group(runner, external, settings).routes()]
    app = Starlette(
        routes=[*routes, *web.routes()],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=web.lifespan,
    )
    return web.shell(Guard(app, settings.token))


__all__ = ["ROUTE_GROUPS", "DocumentRoutes", "create_app", "openapi_document"]
