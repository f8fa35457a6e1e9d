"""The wheel: built non-editably, it ships the migrations and works from anywhere."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobrunner.job import ALL_STATES

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _base_env() -> dict[str, str]:
    """The current environment without anything that could point at the checkout or a config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_") and k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_CACHE_DIR="1", PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the checkout, without build isolation (hatchling must be installed)."""
    missing = [tool for tool in ("pip", "hatchling") if importlib.util.find_spec(tool) is None]
    if missing:
        reason = f"cannot build the wheel: {', '.join(missing)} not installed"
        print(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("wheel")
    result = _run(
        [PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        cwd=out, env=_base_env(), timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("jobrunner-*.whl"))
    assert len(wheels) == 1, (wheels, result.stdout)
    return wheels[0]


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(metadata_name).decode()
    assert "jobrunner/migrations/sqlite/0001_create_jobs.sql" in names
    assert "jobrunner/migrations/postgresql/0001_create_jobs.sql" in names
    assert "jobrunner/py.typed" in names
    assert "jobrunner/__main__.py" in names
    # The dashboard's files ship (nothing is built or fetched when it runs).
    for static in (REPO / "jobrunner" / "web" / "static").iterdir():
        assert f"jobrunner/web/static/{static.name}" in names
    # Every migration of the checkout ships, for every dialect.
    for sql in (REPO / "migrations").rglob("*.sql"):
        assert f"jobrunner/migrations/{sql.relative_to(REPO / 'migrations').as_posix()}" in names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {"jobrunner", metadata_name.split("/", 1)[0]}, top_level
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    requires = [line.lower() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for dep in ("sqlalchemy", "anyio", "blinker", "prometheus-client", "rich"):
        assert any(dep in line for line in requires), (dep, requires)


def test_wheel_registers_the_pytest_plugin_and_requires_msgspec(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    section = entry_points[entry_points.index("[pytest11]"):]
    assert "jobrunner = jobrunner.pytest_plugin" in section.split("\n\n")[0], entry_points
    assert any(line.startswith("Requires-Dist: msgspec") for line in metadata.splitlines()), metadata


WORKER_MODULE = '''\
from jobrunner import Job, Worker


class Hello(Worker):
    topic = "wheel"

    async def perform(self, job: Job) -> str:
        return "hello"
'''


def test_installed_wheel_migrates_and_reports_from_elsewhere(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = _base_env()
    result = _run(
        [PYTHON, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        cwd=tmp_path, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "wheeljobs.py").write_text(WORKER_MODULE, encoding="utf-8")
    db = tmp_path / "data" / "jobs.db"
    db.parent.mkdir()
    cfg = conf_dir / "cfg.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{db.as_posix()}"\n\n'
        '[runner]\nmodules = ["wheeljobs"]\n\n'
        "[topics.wheel]\nparallelism = 2\n\n[topics.other]\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)

    # The installed copy is the one imported, not the checkout, and it finds its own migrations.
    probe = _run(
        [PYTHON, "-c",
         "import jobrunner, jobrunner.migrate as m; print(jobrunner.__file__); print(m.migrations_dir())"],
        cwd=elsewhere, env=env,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, migrations_dir = probe.stdout.split("\n")[:2]
    assert Path(module_file).resolve().is_relative_to(site.resolve()), module_file
    assert Path(migrations_dir).resolve() == (site / "jobrunner" / "migrations").resolve()

    cli = [PYTHON, "-m", "jobrunner", "--config", str(cfg)]
    migrated = _run([*cli, "migrate"], cwd=elsewhere, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_create_jobs" in migrated.stdout
    assert db.exists()

    again = _run([*cli, "migrate"], cwd=elsewhere, env=env)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout

    stats = _run([*cli, "stats", "--json"], cwd=elsewhere, env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == {
        "topics": {topic: dict.fromkeys(ALL_STATES, 0) for topic in ("wheel", "other")}
    }

    enqueued = _run([*cli, "enqueue", "wheeljobs.Hello", "--args", '{"n": 1}'], cwd=elsewhere, env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = int(enqueued.stdout.strip())

    shown = _run([*cli, "show", str(job_id), "--json"], cwd=elsewhere, env=env)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert (job["id"], job["topic"], job["worker"], job["args"], job["state"]) == (
        job_id, "wheel", "wheeljobs.Hello", {"n": 1}, "available"
    )

    stats = _run([*cli, "stats", "--json"], cwd=elsewhere, env=env)
    assert json.loads(stats.stdout)["topics"]["wheel"]["available"] == 1

    assert not (elsewhere / "jobrunner.db").exists()  # nothing fell back to a default database
