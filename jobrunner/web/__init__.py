"""The web dashboard and ``/metrics`` of the daemon's HTTP server."""

from __future__ import annotations

from .routes import DASHBOARD_PATH, WebViews

__all__ = ["DASHBOARD_PATH", "WebViews"]
