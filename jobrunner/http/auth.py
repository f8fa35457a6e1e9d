"""The bearer token: checked on every request before any route sees it."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError
from .responses import JSONResponse


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


__all__ = ["Guard"]
