"""Serving the API with Hypercorn, on asyncio or on trio like the rest of the runner."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import anyio
from starlette.types import ASGIApp

from ..config import HttpSettings
from ..errors import JobrunnerError

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework


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


__all__ = ["serve"]
