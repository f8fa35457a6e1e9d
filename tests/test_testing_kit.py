"""The testing kit users get: the pytest plugin's fixtures (run in real pytest
subprocesses on fresh folders, as a user would) and the one type both wait_for give."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobrunner import Runner, events as signals
from jobrunner.recording import EventRecorder, RecordedEvent
from jobrunner.testing import running, wait_for
from tests.helpers import MakeRunner
from tests.workers import Add

REPO = Path(__file__).resolve().parent.parent


def user_pytest(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``folder`` as a user runs it: no PYTHONPATH, no JOBRUNNER_*
    (without our test extras' heavy plugins, which only slow the start)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_") and k != "PYTHONPATH"}
    environ.update(env, PYTHONDONTWRITEBYTECODE="1")
    quiet = ["-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis"]
    return subprocess.run([sys.executable, "-m", "pytest", *quiet, *args],
                          cwd=folder, env=environ, capture_output=True, text=True, timeout=120, check=False)


def readme_test_file() -> str:
    """The complete test file of the README's "Testing your workers" section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Testing your workers\n"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```python\n(# test_demo\.py.*?)```", section, re.DOTALL)
    assert block is not None, "the section lost its test_demo.py example"
    return block.group(1)


def test_the_readme_example_runs_as_written_with_no_conftest(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.toml", tmp_path / "config.toml")
    shutil.copytree(REPO / "topics", tmp_path / "topics", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "test_demo.py").write_text(readme_test_file())
    result = user_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Five tests; anyio's plugin may run each async one on every installed backend.
    passed = re.search(r"^(\d+) passed in", result.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) >= 5, result.stdout
    assert not (tmp_path / "jobrunner.db").exists()  # the runner fixture used a file of its own


FIXTURE_CHECKS = '''
from pathlib import Path

from jobrunner import Runner
from jobrunner.testing import EventRecorder


def test_fixtures(jobrunner_config, runner, events, tmp_path):
    assert jobrunner_config == Path({expected_config!r})
    assert isinstance(runner, Runner) and sorted(runner.settings.topics) == {expected_topics!r}
    assert runner.settings.database.url == f"sqlite:///{{tmp_path / 'jobrunner.db'}}"
    assert not runner.settings.http.enabled
    assert isinstance(events, EventRecorder)
    {extra}
'''

OVERRIDE = '''
import pytest

@pytest.fixture
def jobrunner_config():
    return {value}
'''


def test_fixtures_follow_the_environment_and_conftest_overrides(tmp_path: Path) -> None:
    env_config = tmp_path / "env.toml"
    env_config.write_text('[runner]\nmodules = ["mine"]\n[http]\nenabled = true\n[topics.fromenv]\n')
    (tmp_path / "mine.py").write_text(
        "from jobrunner import Worker\n\n"
        "class Job(Worker):\n    topic = 'fromenv'\n\n    async def perform(self, job):\n        return 1\n"
    )
    (tmp_path / "config.toml").write_text("[topics.ignored]\n")  # $JOBRUNNER_CONFIG comes first
    (tmp_path / "test_env.py").write_text(FIXTURE_CHECKS.format(
        expected_config=str(env_config), expected_topics=["fromenv"],
        extra="runner.enqueue('mine.Job', {})\n    assert events.names() == ['job_inserted']",
    ))
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "custom.toml").write_text("[topics.x]\n")
    (custom / "conftest.py").write_text(OVERRIDE.format(value="Path(__file__).parent / 'custom.toml'")
                                        .replace("import pytest", "import pytest\nfrom pathlib import Path"))
    (custom / "test_custom.py").write_text(FIXTURE_CHECKS.format(
        expected_config=str(custom / "custom.toml"), expected_topics=["x"], extra="",
    ))
    defaults = tmp_path / "defaults"
    defaults.mkdir()
    (defaults / "conftest.py").write_text(OVERRIDE.format(value="None"))
    (defaults / "test_defaults.py").write_text(
        "def test_defaults(jobrunner_config, runner):\n"
        "    assert jobrunner_config is None and dict(runner.settings.topics) == {}\n"
    )
    result = user_pytest(tmp_path, JOBRUNNER_CONFIG=str(env_config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^3 passed", result.stdout, re.MULTILINE), result.stdout


def test_our_conftest_overrides_the_plugin_runner_and_the_events_fixture_records(
    runner: Runner, events: EventRecorder
) -> None:
    assert list(runner.settings.topics) == ["t"]  # tests/conftest.py's runner, not the plugin's
    job = runner.enqueue(Add, {"a": 1, "b": 2})
    [inserted] = events.of("job_inserted")
    assert inserted.job == job and inserted.sender == "t"


@pytest.mark.anyio
async def test_both_wait_fors_return_the_same_recorded_event(make_runner: MakeRunner) -> None:
    runner = make_runner({"t": {"poll_interval": 0.05}})
    with EventRecorder() as recorder:
        async with running(runner):
            waiter = wait_for(signals.job_completed, sender="t")
            job = runner.enqueue(Add, {"a": 1, "b": 2})
            awaited = await waiter
            recorded = await recorder.wait_for("job_completed", lambda p: p["job"].id == job.id)
    for event in (awaited, recorded):
        assert isinstance(event, RecordedEvent)
        assert event.name == "job_completed" and event.sender == "t"
        assert event.job is event.payload["job"] and event.job.id == job.id and event.job.state == "completed"
        assert event.payload["result"] == 3 and event.payload["duration"] >= 0
    assert awaited.payload.keys() == recorded.payload.keys()
