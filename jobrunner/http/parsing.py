"""Reading requests: the JSON body (bounded), query parameters, path ids and headers.

Each helper raises :class:`~jobrunner.http.responses.ApiError` naming what was wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from ..job import is_job_id
from ..payload import MAX_DEPTH, PayloadError, check as check_value
from ..worker_lookup import registered_worker
from .responses import ApiError

#: The most jobs one ``GET /jobs`` page holds.
MAX_PAGE = 1000

#: The header that carries the lease token a claim handed out (complete, fail, extend).
LEASE_TOKEN_HEADER = "X-Jobrunner-Lease-Token"


async def read_body(request: Request, limit: int) -> Any:
    """The JSON body (None when empty); 413 past ``limit`` bytes, 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, f"request body is nested too deeply (job values nest at most {MAX_DEPTH} levels)") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def as_object(body: Any, what: str) -> dict[str, Any]:
    """``body`` when it is a JSON object ({} for no body); 400 naming ``what`` otherwise."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    return body


def number(value: Any, name: str, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a finite number between ``low`` and ``high``; 400 naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def query_number(request: Request, name: str, default: float, low: float, high: float) -> float:
    """The number in query parameter ``name`` (``default`` when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be a number, got {raw!r}") from None
    return number(value, f"query parameter {name}", low, high)


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    """The integer in query parameter ``name`` (``default`` when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name} must be between {low} and {high}, got {value}")
    return value


def storable(value: Any, name: str) -> None:
    """400 unless ``value`` can be stored (see :mod:`jobrunner.payload`)."""
    try:
        check_value(value, name)
    except PayloadError as exc:
        raise ApiError(400, str(exc)) from None


def path_id(request: Request) -> int:
    """The job id in the path; 404 when it is no id a job can have."""
    raw = request.path_params["id"]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(404, f"no job with id {raw!r}") from None
    if not is_job_id(value):
        raise ApiError(404, f"no job with id {raw!r}")
    return value


def lease_token(request: Request) -> str:
    """The lease token of :data:`LEASE_TOKEN_HEADER`; 400 when missing."""
    token = request.headers.get(LEASE_TOKEN_HEADER, "").strip()
    if not token:
        raise ApiError(400, f"header {LEASE_TOKEN_HEADER} is required: the lease_token the claim returned")
    return token


def loaded_worker(worker: Any) -> Any:
    """The Worker class of a loaded module named by ``worker``; the API never imports."""
    cls = registered_worker(worker) if isinstance(worker, str) else None
    if cls is None:
        raise ApiError(400, f"unknown worker {worker!r}: not a Worker of the modules this daemon loaded "
                            "([runner] modules)")
    return cls


__all__ = [
    "LEASE_TOKEN_HEADER", "MAX_PAGE", "as_object", "lease_token", "loaded_worker", "number", "path_id",
    "query_int", "query_number", "read_body", "storable",
]
