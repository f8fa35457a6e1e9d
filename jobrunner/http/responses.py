"""What every handler answers with: JSON, and :class:`ApiError` for a refusal."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSON


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
    """An error answered as ``{"error": message}`` with ``status``.

    Raised by handlers and turned into the response by the application's error
    handler; it never leaves the HTTP layer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


__all__ = ["ApiError", "JSONResponse"]
