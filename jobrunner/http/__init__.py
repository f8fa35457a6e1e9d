"""The daemon's HTTP API: a Starlette application served by Hypercorn.

Starlette runs on anyio, and Hypercorn is an established ASGI server that serves on
asyncio and on trio, like the rest of the runner (uvicorn only runs on asyncio).
Every response is JSON (errors: ``{"error": message}``) except the event stream.

``app`` assembles the route groups (``jobs``, ``claims``, ``topics``, ``sse``) behind
the token check of ``auth``; ``parsing`` reads requests; ``server`` serves the app.
"""

from __future__ import annotations

from .app import ROUTE_GROUPS, create_app, openapi_document
from .group import RouteGroup
from .parsing import LEASE_TOKEN_HEADER, MAX_PAGE
from .responses import ApiError, JSONResponse
from .server import serve

__all__ = [
    "LEASE_TOKEN_HEADER", "MAX_PAGE", "ROUTE_GROUPS", "ApiError", "JSONResponse", "RouteGroup", "create_app",
    "openapi_document", "serve",
]
