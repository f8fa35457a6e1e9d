"""jobrunner's pytest plugin: fixtures for testing your workers with no conftest of your own.

Installed with jobrunner (entry point ``pytest11``; disable with ``-p no:jobrunner``):

- ``jobrunner_config``: the configuration file the runner starts from. Default:
  ``$JOBRUNNER_CONFIG`` when set, else ``config.toml`` in pytest's rootdir when it
  exists, else None (the built-in defaults, which configure no topic). Override it to
  point elsewhere.
- ``jobrunner_settings``: that configuration with the database replaced by a fresh
  SQLite file in ``tmp_path`` and the HTTP API off. Override it to adjust more.
- ``runner``: a migrated :class:`~jobrunner.Runner` on those settings, with
  ``[runner] modules`` imported; its connections are closed after the test.
- ``events``: an :class:`~jobrunner.testing.EventRecorder` recording every event for the
  whole test (setup and teardown included).

Fixtures of the same name in a ``conftest.py`` override these, as pytest always does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .config import DEFAULT_CONFIG_FILE, ENV_CONFIG, Settings, load, parse
from .recording import EventRecorder
from .runner import Runner, import_modules


@pytest.fixture
def jobrunner_config(request: pytest.FixtureRequest) -> Path | None:
    """The configuration file of the ``runner`` fixture (None: the built-in defaults).

    ``$JOBRUNNER_CONFIG`` when set, else ``config.toml`` in pytest's rootdir if present.
    """
    named = os.environ.get(ENV_CONFIG)
    if named:
        return Path(named)
    default = request.config.rootpath / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


@pytest.fixture
def jobrunner_settings(jobrunner_config: Path | None, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The settings of ``jobrunner_config`` on a fresh SQLite file in ``tmp_path``, HTTP off."""
    if jobrunner_config is not None:
        settings = load(jobrunner_config)
    else:
        settings = parse({}, source="<defaults>", base_dir=request.config.rootpath)
    database = dataclasses.replace(settings.database, url=f"sqlite:///{tmp_path / 'jobrunner.db'}")
    http = dataclasses.replace(settings.http, enabled=False)
    return dataclasses.replace(settings, database=database, http=http)


@pytest.fixture
def runner(jobrunner_settings: Settings) -> Iterator[Runner]:
    """A migrated runner on ``jobrunner_settings``; closed after the test."""
    import_modules(jobrunner_settings)
    made = Runner(jobrunner_settings)
    made.migrate()
    try:
        yield made
    finally:
        made.store.close()


@pytest.fixture
def events() -> Iterator[EventRecorder]:
    """Every jobrunner event of this test, recorded (an EventRecorder)."""
    with EventRecorder() as recorder:
        yield recorder
