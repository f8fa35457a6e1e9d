"""The reads for looking at the runner, importable here as before.

They are the storage's :class:`~jobrunner.storage.insight.InsightVerbs` (``store.insight``);
these functions call them, and hold no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .storage import Storage
from .storage.operator_statements import SUMMARY_COLUMNS
from .storage.records import Census, NodeRow


def take_census(store: Storage, names: Iterable[str], now: float) -> Census:
    """``store.insight.census(names, now)``."""
    return store.insight.census(names, now)


def recent_outcomes(store: Storage, since: float) -> dict[str, dict[str, int]]:
    """``store.insight.recent_outcomes(since)``."""
    return store.insight.recent_outcomes(since)


def job_summaries(store: Storage, **options: Any) -> tuple[list[dict[str, Any]], int | None]:
    """``store.insight.job_summaries(**options)``."""
    return store.insight.job_summaries(**options)


__all__ = ["SUMMARY_COLUMNS", "Census", "NodeRow", "job_summaries", "recent_outcomes", "take_census"]
