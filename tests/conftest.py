"""Shared fixtures: both anyio backends, a fresh SQLite file per test, a runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from jobrunner import Runner
from jobrunner.config import Settings, parse

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return request.param


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    """Build Settings on this test's database: make_settings(topics={...}, runner={...})."""

    def make(topics: dict[str, Any] | None = None, **sections: Any) -> Settings:
        data: dict[str, Any] = {
            "database": {"url": db_url, **sections.pop("database", {})},
            "topics": topics if topics is not None else {"t": {"parallelism": 4}},
        }
        data.update(sections)
        return parse(data, source="test-config")

    return make


@pytest.fixture
def make_runner(make_settings: Callable[..., Settings]) -> Any:
    """Build migrated runners; their connections are closed after the test."""
    made: list[Runner] = []

    def make(topics: dict[str, Any] | None = None, **sections: Any) -> Runner:
        runner = Runner(make_settings(topics, **sections))
        runner.migrate()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.store.close()


@pytest.fixture
def runner(make_runner: Any) -> Runner:
    """A migrated runner with one topic ``t`` (parallelism 4)."""
    return make_runner()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the repo importable, no inherited config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _fresh_worker_records() -> None:
    """Job ids restart with each test database: forget what test workers saw."""
    from tests import workers

    workers.seen.clear()
