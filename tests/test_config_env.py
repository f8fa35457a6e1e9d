"""Environment and command-line overrides of every configuration key (JOBRUNNER_<TABLE>__<KEY>)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import NO_FILE, load, parse
from jobrunner.errors import ConfigError
from jobrunner.overrides import Override, env_value

FILE = """\
    [database]
    url = "sqlite:///from-file.db"
    synchronous = "NORMAL"

    [runner]
    modules = ["pkg.a"]

    [topics.demo]
    parallelism = 2
    priority = "high"
    backoff = { strategy = "linear", base = 1.0 }
    options = { output_dir = "out" }

    [topics.Mixed]
    parallelism = 1
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(FILE), encoding="utf-8")
    return path


def test_every_table_and_nested_key_can_be_set_and_wins_over_the_file(config_file: Path) -> None:
    settings = load(config_file, environ={
        "JOBRUNNER_HTTP__PORT": "8631",
        "JOBRUNNER_HTTP__ENABLED": "true",
        "JOBRUNNER_DATABASE__BUSY_TIMEOUT": "2",
        "JOBRUNNER_RUNNER__MODULES": '["topics.demo", "pkg.b"]',
        "JOBRUNNER_TOPICS__DEMO__PARALLELISM": "8",
        "JOBRUNNER_TOPICS__DEMO__BACKOFF__BASE": "2.5",
        "JOBRUNNER_TOPICS__DEMO__OPTIONS__OUTPUT_DIR": "/tmp/elsewhere",
        "JOBRUNNER_TOPICS__MIXED__POLL_INTERVAL": "0.5",  # the file spells the topic "Mixed"
    })
    assert (settings.http.port, settings.http.enabled) == (8631, True)
    assert settings.database.busy_timeout == 2.0
    assert settings.database.synchronous == "NORMAL" and settings.database.url == "sqlite:///from-file.db"
    assert settings.runner.modules == ("topics.demo", "pkg.b")
    demo = settings.topics["demo"]
    assert (demo.parallelism, demo.priority) == (8, 1)
    assert (demo.backoff.strategy, demo.backoff.base) == ("linear", 2.5)  # the rest of the table is kept
    assert dict(demo.options) == {"output_dir": "/tmp/elsewhere"}
    assert settings.topics["Mixed"].poll_interval == 0.5
    assert settings.source == str(config_file)


@pytest.mark.parametrize(("text", "value"), [
    ("8", 8), ("2.5", 2.5), ("true", True), ('"x"', "x"), ('["a"]', ["a"]), ("{a = 1}", {"a": 1}),
    ("sqlite:///x.db", "sqlite:///x.db"), ("127.0.0.1", "127.0.0.1"), ("hello world", "hello world"),
    ("", ""), ("1\nother = 2", "1\nother = 2"),
])
def test_values_are_toml_values_else_plain_strings(text: str, value: Any) -> None:
    assert env_value(text) == value


@pytest.mark.parametrize(("environ", "fragments"), [
    ({"JOBRUNNER_TOPICS__DEMO__PARALLELISM": "x"}, ["[topics.demo]", "'parallelism'", "integer", "'x'"]),
    ({"JOBRUNNER_TOPICS__DEMO__PARALLELISM": "0"}, ["[topics.demo]", "'parallelism'", "at least 1"]),
    ({"JOBRUNNER_TOPICS__DEMO__PRIORITY": "12"}, ["'priority'", "between 0 and 9", "critical (0)"]),
    ({"JOBRUNNER_TOPICS__DEMO__BACKOFF__JITTER": "2"}, ["backoff", "'jitter'", "between 0 and 1"]),
    ({"JOBRUNNER_TOPICS__DEMO__BACKOFF": "fast"}, ["'backoff'", "table"]),
    ({"JOBRUNNER_TOPICS__DEMO__PARALELISM": "3"}, ["[topics.demo]", "unknown key 'paralelism'"]),
    ({"JOBRUNNER_HTTP__PORTT": "1"}, ["[http]", "unknown key 'portt'", "port"]),
    ({"JOBRUNNER_DATABSE__URL": "sqlite:///x.db"}, ["unknown key 'databse'"]),
    ({"JOBRUNNER_HTTP__PORT": "99999"}, ["'port'", "between 0 and 65535"]),
    ({"JOBRUNNER_RUNNER__MODULES": "topics.demo"}, ["'modules'", "list of strings"]),
    ({"JOBRUNNER_RUNNER__HEARTBEAT_INTERVAL": "40"}, ["'rescue_after'", "heartbeat_interval"]),
    ({"JOBRUNNER_HTTP__HOST": "0.0.0.0", "JOBRUNNER_HTTP__ENABLED": "true"}, ["'token'", "0.0.0.0"]),
    ({"JOBRUNNER_HTTP____PORT": "1"}, ["empty"]),
    ({"JOBRUNNER_DATABASE__URL__PATH": "x"}, ["[database.url]", "not a table"]),
])
def test_errors_from_the_environment_name_the_variable(
    config_file: Path, environ: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load(config_file, environ=environ)
    message = str(info.value)
    assert any(message.startswith(f"environment {name}:") for name in environ), message
    assert str(config_file) not in message.split(":")[0]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


def test_errors_in_the_file_still_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[topics.demo]\nparallelism = 0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: \[topics\.demo\]: key 'parallelism'"):
        load(path, environ={"JOBRUNNER_TOPICS__DEMO__PRIORITY": "1"})


def test_a_topic_the_file_does_not_declare_needs_its_whole_table(config_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(config_file, environ={"JOBRUNNER_TOPICS__DEMOO__PARALLELISM": "8"})  # a typo, not a new topic
    message = str(info.value)
    assert message.startswith("environment JOBRUNNER_TOPICS__DEMOO__PARALLELISM:")
    assert "'demoo' is not declared" in message and "JOBRUNNER_TOPICS__DEMOO='{" in message

    settings = load(config_file, environ={
        "JOBRUNNER_TOPICS__REPORTS": "{ parallelism = 3 }",
        "JOBRUNNER_TOPICS__REPORTS__PRIORITY": "low",  # applied after the whole table
    })
    reports = settings.topics["reports"]
    assert (reports.name, reports.parallelism, reports.priority) == ("reports", 3, 3)
    assert list(settings.topics) == ["demo", "Mixed", "reports"]


def test_without_a_file_the_environment_can_declare_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load(environ={
        "JOBRUNNER_DATABASE__URL": f"sqlite:///{tmp_path / 'env.db'}",
        "JOBRUNNER_TOPICS__DEMO": "{}",
    })
    assert settings.source == NO_FILE
    assert list(settings.topics) == ["demo"] and settings.topics["demo"].parallelism == 4
    assert settings.database.url.endswith("env.db")


def test_old_aliases_still_work_and_the_double_underscore_name_wins() -> None:
    assert parse({}, environ={"JOBRUNNER_DATABASE_URL": "sqlite:///alias.db"}).database.url == "sqlite:///alias.db"
    both = {"JOBRUNNER_DATABASE_URL": "sqlite:///alias.db", "JOBRUNNER_DATABASE__URL": "sqlite:///scheme.db"}
    assert parse({}, environ=both).database.url == "sqlite:///scheme.db"
    assert parse({}, environ={"JOBRUNNER_DATABASE_URL": ""}).database.url == "sqlite:///jobrunner.db"
    # The alias value is taken verbatim (no TOML parsing): a numeric token stays a string.
    assert parse({}, environ={"JOBRUNNER_HTTP_TOKEN": "12345"}).http.token == "12345"
    # A token from the environment lets a file serve on a non-loopback host.
    served = parse({"http": {"enabled": True, "host": "0.0.0.0"}}, environ={"JOBRUNNER_HTTP_TOKEN": "s3cret"})
    assert served.http.token == "s3cret"
    assert parse({"http": {"token": "x"}}, environ={"JOBRUNNER_HTTP__TOKEN": ""}).http.token is None


def test_variables_that_are_not_config_keys_are_left_alone() -> None:
    environ = {"JOBRUNNER_CONFIG": "x.toml", "JOBRUNNER_LOG_LEVEL": "debug", "JOBRUNNER_BACKEND": "trio",
               "JOBRUNNER_WEBHOOK_SECRET": "s", "OTHER__THING": "1"}
    assert parse({}, environ=environ) == parse({}, environ={})


def test_command_line_overrides_win_over_environment_and_file() -> None:
    data = {"http": {"port": 1000}, "topics": {"demo": {"parallelism": 2}}}
    flags = [Override("option --http-port", ("http", "port"), 3000),
             Override("option --parallelism demo=5", ("topics", "demo", "parallelism"), 5)]
    environ = {"JOBRUNNER_HTTP__PORT": "2000", "JOBRUNNER_TOPICS__DEMO__PARALLELISM": "4"}
    settings = parse(data, environ=environ, overrides=flags)
    assert settings.http.port == 3000 and settings.topics["demo"].parallelism == 5
    with pytest.raises(ConfigError, match=r"^option --http-port: \[http\]: key 'port'"):
        parse(data, environ=environ, overrides=[Override("option --http-port", ("http", "port"), -1)])
    assert data == {"http": {"port": 1000}, "topics": {"demo": {"parallelism": 2}}}  # the input is not changed


def test_a_topic_missing_without_a_file_says_no_file_was_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse({}, source=NO_FILE, base_dir=tmp_path, environ={}).topic("demo")
    message = str(info.value)
    assert "topic 'demo' is not configured" in message
    assert f"no configuration file found (looked for {tmp_path / 'config.toml'})" in message and "--config" in message
