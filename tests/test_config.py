"""Configuration: TOML file + environment → frozen dataclasses, with precise errors."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest

from jobrunner import Worker
from jobrunner.config import (
    BackoffSettings,
    DatabaseSettings,
    RunnerSettings,
    Settings,
    TopicSettings,
    load,
    parse,
)
from jobrunner.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No inherited JOBRUNNER_* variable may change what these tests see."""
    monkeypatch.delenv("JOBRUNNER_CONFIG", raising=False)
    monkeypatch.delenv("JOBRUNNER_DATABASE_URL", raising=False)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_defaults_when_everything_is_absent() -> None:
    settings = parse({}, source="empty")
    assert settings.database == DatabaseSettings(
        url="sqlite:///jobrunner.db", synchronous="FULL", busy_timeout=5.0, watch_interval=0.01
    )
    assert settings.runner == RunnerSettings(
        modules=(), shutdown_grace=15.0, max_restarts=5, restart_window=60.0, node=None
    )
    assert dict(settings.topics) == {}
    assert settings.source == "empty"


def test_dataclass_defaults_are_the_documented_ones() -> None:
    assert BackoffSettings() == BackoffSettings(strategy="exponential", base=1.0, max=32.0, jitter=0.1)
    topic = TopicSettings(name="x")
    assert (topic.parallelism, topic.priority, topic.poll_interval) == (4, 2, 1.0)
    assert topic.backoff == BackoffSettings()
    assert DatabaseSettings().url == "sqlite:///jobrunner.db"
    assert DatabaseSettings().synchronous == "FULL"
    assert RunnerSettings().shutdown_grace == 15.0
    assert RunnerSettings().modules == ()


def test_empty_tables_take_every_default() -> None:
    settings = parse({"database": {}, "runner": {}, "topics": {"x": {}}}, source="s")
    assert settings.database == DatabaseSettings()
    assert settings.runner == RunnerSettings()
    assert settings.topics["x"] == TopicSettings(
        name="x", parallelism=4, priority=2, poll_interval=1.0,
        backoff=BackoffSettings(strategy="exponential", base=1.0, max=32.0, jitter=0.1),
    )


def test_partial_backoff_keeps_the_other_defaults() -> None:
    settings = parse({"topics": {"x": {"backoff": {"strategy": "linear"}}}})
    assert settings.topics["x"].backoff == BackoffSettings(strategy="linear", base=1.0, max=32.0, jitter=0.1)


# ---------------------------------------------------------------- a full file


FULL = """\
    [database]
    url = "sqlite:///somewhere/jobs.db"
    synchronous = "normal"
    busy_timeout = 2
    watch_interval = 0.25

    [runner]
    modules = ["pkg.a", "pkg.b"]
    shutdown_grace = 7
    max_restarts = 3
    restart_window = 30.5
    node = "node-1"

    [topics.mail]
    parallelism = 8
    priority = 0
    poll_interval = 0.5
    backoff = { strategy = "linear", base = 2, max = 60.0, jitter = 0 }

    [topics.reports]
    parallelism = 1
    priority = 9

    [topics.reports.backoff]
    strategy = "constant"
    base = 5.0
    max = 5.0
    jitter = 1.0
"""


def test_full_file_parses_into_frozen_dataclasses(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    settings = load(path)

    assert isinstance(settings, Settings)
    assert settings.source == str(path)
    assert settings.base_dir == tmp_path.resolve()
    assert settings.database == DatabaseSettings(
        url="sqlite:///somewhere/jobs.db", synchronous="NORMAL", busy_timeout=2.0, watch_interval=0.25
    )
    assert settings.runner == RunnerSettings(
        modules=("pkg.a", "pkg.b"), shutdown_grace=7.0, max_restarts=3, restart_window=30.5, node="node-1"
    )
    assert dict(settings.topics) == {
        "mail": TopicSettings(
            name="mail", parallelism=8, priority=0, poll_interval=0.5,
            backoff=BackoffSettings(strategy="linear", base=2.0, max=60.0, jitter=0.0),
        ),
        "reports": TopicSettings(
            name="reports", parallelism=1, priority=9, poll_interval=1.0,
            backoff=BackoffSettings(strategy="constant", base=5.0, max=5.0, jitter=1.0),
        ),
    }
    # Integers given for float keys become floats; lists become tuples.
    assert type(settings.database.busy_timeout) is float
    assert type(settings.runner.shutdown_grace) is float
    assert type(settings.topics["mail"].backoff.base) is float
    assert type(settings.topics["mail"].parallelism) is int
    assert isinstance(settings.runner.modules, tuple)

    for obj, attr in [
        (settings, "source"),
        (settings.database, "url"),
        (settings.runner, "node"),
        (settings.topics["mail"], "parallelism"),
        (settings.topics["mail"].backoff, "base"),
    ]:
        assert dataclasses.is_dataclass(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, getattr(obj, attr))


def test_settings_topic_lookup(tmp_path: Path) -> None:
    settings = load(write(tmp_path, FULL))
    assert settings.topic("mail") is settings.topics["mail"]
    with pytest.raises(ConfigError) as info:
        settings.topic("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert "mail" in message and "reports" in message


def test_settings_topic_lookup_without_topics() -> None:
    with pytest.raises(ConfigError, match=r"'x' is not configured.*none"):
        parse({}).topic("x")


# ---------------------------------------------------------------- errors name file, table and key


# (TOML text, fragments the message must contain: the table, the key, and what is wrong)
BAD = {
    # unknown keys
    "unknown top-level key": ("colour = 'blue'\n", ["'colour'", "unknown key"]),
    "unknown key in database": ("[database]\nurll = 'sqlite:///x.db'\n", ["[database]", "'urll'", "unknown key"]),
    "unknown key in runner": ("[runner]\nmodule = ['a']\n", ["[runner]", "'module'", "unknown key"]),
    "unknown key in topic": ("[topics.mail]\nparalelism = 3\n", ["[topics.mail]", "'paralelism'", "unknown key"]),
    "unknown key in backoff": (
        "[topics.mail]\nbackoff = { strategy = 'linear', factor = 3 }\n",
        ["[topics.mail]", "backoff", "'factor'", "unknown key"],
    ),
    "unknown key in backoff subtable": (
        "[topics.mail.backoff]\nmaximum = 3\n",
        ["[topics.mail]", "backoff", "'maximum'", "unknown key"],
    ),
    # wrong types
    "string for parallelism": ("[topics.mail]\nparallelism = '4'\n", ["[topics.mail]", "'parallelism'", "integer"]),
    "float for parallelism": ("[topics.mail]\nparallelism = 2.5\n", ["[topics.mail]", "'parallelism'", "integer"]),
    "bool for an int": ("[topics.mail]\npriority = true\n", ["[topics.mail]", "'priority'", "integer"]),
    "bool for max_restarts": ("[runner]\nmax_restarts = false\n", ["[runner]", "'max_restarts'", "integer"]),
    "bool for a float": ("[database]\nbusy_timeout = true\n", ["[database]", "'busy_timeout'", "number"]),
    "string for a float": ("[topics.mail]\npoll_interval = 'fast'\n", ["[topics.mail]", "'poll_interval'", "number"]),
    "int for a string": ("[database]\nurl = 5\n", ["[database]", "'url'", "string"]),
    "int for node": ("[runner]\nnode = 7\n", ["[runner]", "'node'", "string"]),
    "number for strategy": (
        "[topics.mail.backoff]\nstrategy = 2\n", ["[topics.mail]", "backoff", "'strategy'", "string"]
    ),
    "list for database table": ("database = ['sqlite:///x.db']\n", ["'database'", "table"]),
    "list for runner table": ("runner = []\n", ["'runner'", "table"]),
    "string for topics table": ("topics = 'mail'\n", ["'topics'", "table"]),
    "list for a topic table": ("[topics]\nmail = [1, 2]\n", ["[topics]", "'mail'", "table"]),
    "string for backoff table": ("[topics.mail]\nbackoff = 'exponential'\n", ["[topics.mail]", "'backoff'", "table"]),
    "string for modules": ("[runner]\nmodules = 'topics.demo'\n", ["[runner]", "'modules'", "list"]),
    "table for modules": ("[runner.modules]\na = 1\n", ["[runner]", "'modules'", "list"]),
    "non-string in modules": ("[runner]\nmodules = ['a', 3]\n", ["[runner]", "'modules'", "list of strings"]),
    # out of range
    "parallelism 0": ("[topics.mail]\nparallelism = 0\n", ["[topics.mail]", "'parallelism'", "at least 1"]),
    "negative parallelism": ("[topics.mail]\nparallelism = -3\n", ["[topics.mail]", "'parallelism'"]),
    "priority 10": ("[topics.mail]\npriority = 10\n", ["[topics.mail]", "'priority'", "between 0 and 9"]),
    "priority -1": ("[topics.mail]\npriority = -1\n", ["[topics.mail]", "'priority'", "between 0 and 9"]),
    "negative poll_interval": ("[topics.mail]\npoll_interval = -1.0\n", ["[topics.mail]", "'poll_interval'"]),
    "zero poll_interval": (
        "[topics.mail]\npoll_interval = 0\n", ["[topics.mail]", "'poll_interval'", "greater than 0"]
    ),
    "infinite poll_interval": ("[topics.mail]\npoll_interval = inf\n", ["[topics.mail]", "'poll_interval'", "finite"]),
    "nan busy_timeout": ("[database]\nbusy_timeout = nan\n", ["[database]", "'busy_timeout'", "finite"]),
    "jitter 2": ("[topics.mail.backoff]\njitter = 2\n", ["[topics.mail]", "backoff", "'jitter'", "between 0 and 1"]),
    "negative jitter": ("[topics.mail.backoff]\njitter = -0.1\n", ["[topics.mail]", "backoff", "'jitter'"]),
    "negative base": ("[topics.mail.backoff]\nbase = -1\n", ["[topics.mail]", "backoff", "'base'"]),
    "negative max": ("[topics.mail.backoff]\nmax = -1\n", ["[topics.mail]", "backoff", "'max'"]),
    "unknown backoff strategy": (
        "[topics.mail.backoff]\nstrategy = 'fibonacci'\n",
        ["[topics.mail]", "backoff", "'strategy'", "'fibonacci'", "exponential, linear, constant"],
    ),
    "unknown synchronous level": (
        "[database]\nsynchronous = 'sometimes'\n",
        ["[database]", "'synchronous'", "'sometimes'", "FULL"],
    ),
    "negative busy_timeout": ("[database]\nbusy_timeout = -1\n", ["[database]", "'busy_timeout'"]),
    "negative watch_interval": ("[database]\nwatch_interval = -0.5\n", ["[database]", "'watch_interval'"]),
    "negative shutdown_grace": ("[runner]\nshutdown_grace = -1\n", ["[runner]", "'shutdown_grace'"]),
    "negative max_restarts": ("[runner]\nmax_restarts = -1\n", ["[runner]", "'max_restarts'"]),
    "zero restart_window": ("[runner]\nrestart_window = 0\n", ["[runner]", "'restart_window'"]),
}


@pytest.mark.parametrize("text, fragments", list(BAD.values()), ids=list(BAD))
def test_errors_name_the_file_the_table_and_the_key(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text, name="bad.toml")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


def test_errors_from_parse_name_the_given_source() -> None:
    with pytest.raises(ConfigError, match=r"^my-source: \[topics\.a\]: key 'priority'"):
        parse({"topics": {"a": {"priority": 11}}}, source="my-source")


def test_synchronous_level_is_case_insensitive() -> None:
    for given in ("full", "Normal", "EXTRA", "off"):
        assert parse({"database": {"synchronous": given}}).database.synchronous == given.upper()


def test_boundary_values_are_accepted() -> None:
    settings = parse({
        "topics": {
            "lo": {"parallelism": 1, "priority": 0, "poll_interval": 0.001,
                   "backoff": {"base": 0, "max": 0, "jitter": 0}},
            "hi": {"priority": 9, "backoff": {"jitter": 1}},
        },
        "runner": {"shutdown_grace": 0, "max_restarts": 0},
        "database": {"busy_timeout": 0, "watch_interval": 0},
    })
    assert settings.topics["lo"].priority == 0
    assert settings.topics["hi"].priority == 9
    assert settings.topics["hi"].backoff.jitter == 1.0
    assert settings.runner.max_restarts == 0


def test_invalid_toml_syntax_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[topics.mail]\nparallelism = = 4\n", name="broken.toml")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "not valid TOML" in message
    assert "line 2" in message


# ---------------------------------------------------------------- which file


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load(missing)
    assert str(missing) in str(info.value)


def test_missing_default_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load()
    assert settings.database == DatabaseSettings()
    assert settings.runner == RunnerSettings()
    assert dict(settings.topics) == {}


def test_default_file_is_config_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[topics.here]\nparallelism = 2\n")
    monkeypatch.chdir(tmp_path)
    settings = load()
    assert list(settings.topics) == ["here"]
    assert settings.topics["here"].parallelism == 2


def test_env_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[topics.from_env]\npriority = 5\n", name="elsewhere.toml")
    monkeypatch.chdir(tmp_path)  # no config.toml here: only the env var can find the file
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(path))
    settings = load()
    assert settings.source == str(path)
    assert settings.topics["from_env"].priority == 5


def test_env_naming_a_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[topics.default]\n")  # a default file exists but must not be used
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml"):
        load()


def test_explicit_path_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write(tmp_path, "[topics.env]\n", name="env.toml")
    arg_file = write(tmp_path, "[topics.arg]\n", name="arg.toml")
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(env_file))
    assert list(load(arg_file).topics) == ["arg"]


def test_env_database_url_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[database]\nurl = 'sqlite:///from-file.db'\nsynchronous = 'NORMAL'\n")
    assert load(path).database.url == "sqlite:///from-file.db"
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", "sqlite:///from-env.db")
    settings = load(path)
    assert settings.database.url == "sqlite:///from-env.db"
    assert settings.database.synchronous == "NORMAL"  # the rest of [database] is kept


def test_env_database_url_applies_without_a_database_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", "postgresql://u@h/db")
    assert parse({}).database.url == "postgresql://u@h/db"


# ---------------------------------------------------------------- the shipped configuration


def test_shipped_config_parses_and_declares_the_demo_topic() -> None:
    settings = load(REPO / "config.toml")
    assert "demo" in settings.topics
    demo = settings.topic("demo")
    assert demo.parallelism >= 1
    assert 0 <= demo.priority <= 9
    assert demo.backoff.strategy in ("exponential", "linear", "constant")
    assert "topics.demo" in settings.runner.modules
    assert settings.database.url.startswith("sqlite:///")


def test_shipped_modules_only_define_workers_of_configured_topics() -> None:
    settings = load(REPO / "config.toml")
    found = 0
    for name in settings.runner.modules:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Worker) and obj.__module__ == module.__name__:
                found += 1
                assert obj.topic in settings.topics, f"{name}.{obj.__name__} uses unconfigured topic {obj.topic!r}"
    assert found > 0


def test_integer_too_large_for_a_float_key_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[topics.mail]\npoll_interval = 1" + "0" * 400 + "\n")
    with pytest.raises(ConfigError, match=r"\[topics\.mail\].*'poll_interval'"):
        load(path)


@pytest.mark.parametrize("table,key", [("database", "busy_timeout"), ("runner", "heartbeat_interval"),
                                       ("runner", "shutdown_grace"), ("http", "max_wait")])
def test_numbers_beyond_the_documented_bound_are_refused(tmp_path: Path, table: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[{table}]\n{key} = 1e308\n")
    with pytest.raises(ConfigError, match=rf"\[{table}\]: key '{key}' must be at most 1e\+09, got 1e\+308"):
        load(path)


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[database]\n# caf\xe9\nurl = "sqlite:///x.db"\n')
    with pytest.raises(ConfigError, match=r"config\.toml: not UTF-8 text"):
        load(path)
