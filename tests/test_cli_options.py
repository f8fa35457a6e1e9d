"""Command-line options and failures, through real ``python -m jobrunner`` subprocesses:
global options anywhere, ``run`` flags, priority names, external topics, bad ids, closed
stdout, start-up failures, log levels, and which libraries ``enqueue`` loads."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobrunner import Runner, cli
from jobrunner.config import load
from jobrunner.errors import ConfigError
from tests.daemon_harness import DaemonProcess, free_port, run_cli
from tests.workers import Noop

CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["tests.workers"]
shutdown_grace = 0.5

[topics.t]
parallelism = 2

[topics.ext]
external = true
priority = "low"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=tmp_path / "cli.db"))
    return path


def jr(env: dict[str, str], *args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m jobrunner ARGS`` (no implicit --config); ``kwargs`` for ``subprocess.run``
    start it cold, else it is a fork of the fork server (:func:`tests.daemon_harness.run_cli`)."""
    if not kwargs:
        return run_cli(None, *args, env=env, cwd=cwd)
    options = {"capture_output": True, **kwargs}
    return subprocess.run([sys.executable, "-m", "jobrunner", *args], env=env, cwd=cwd, text=True, timeout=60,
                          check=False, **options)


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2 with exactly one line on stderr holding ``fragments``, and no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} missing from {proc.stderr!r}"


# ---------------------------------------------------------------- global options, priorities, topics


def test_global_options_work_before_and_after_the_command(cfg: Path, subprocess_env: dict[str, str]) -> None:
    before = jr(subprocess_env, "--config", str(cfg), "--log-level", "warning", "stats", "--json")
    after = jr(subprocess_env, "stats", "--config", str(cfg), "--json", "--log-level", "DEBUG")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert set(json.loads(after.stdout)["topics"]) == {"t", "ext"}
    # After the command wins over before it.
    elsewhere = cfg.parent / "absent.toml"
    proc = jr(subprocess_env, "--config", str(elsewhere), "stats", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr


def test_priority_names_and_external_topics_on_the_command_line(cfg: Path, subprocess_env: dict[str, str]) -> None:
    def enqueue(*args: str) -> int:
        proc = jr(subprocess_env, "enqueue", *args, "--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    high = enqueue("tests.workers.Add", "--args", '{"a": 1, "b": 2}', "--priority", "high")
    critical = enqueue("tests.workers.Add", "--priority", "CRITICAL", "--topic", "t")
    external = enqueue("convert-pdf", "--topic", "ext", "--args", '{"file": "a.pdf"}')
    runner = Runner.from_config(cfg)
    try:
        jobs = [runner.get_job(i) for i in (high, critical, external)]
    finally:
        runner.store.close()
    assert [(j.topic, j.worker, j.priority) for j in jobs if j] == [
        ("t", "tests.workers.Add", 1), ("t", "tests.workers.Add", 0), ("ext", "convert-pdf", 3)]
    assert jobs[2] is not None and jobs[2].args == {"file": "a.pdf"}

    one_line_error(jr(subprocess_env, "--config", str(cfg), "enqueue", "tests.workers.Add", "--topic", "ext"),
                   "belongs to topic 't', not 'ext'")
    one_line_error(jr(subprocess_env, "--config", str(cfg), "enqueue", "convert", "--topic", "nope"),
                   "topic 'nope' is not configured")
    bad = jr(subprocess_env, "--config", str(cfg), "enqueue", "tests.workers.Add", "--priority", "urgent")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--priority" in bad.stderr and "critical (0), high (1), normal (2), low (3)" in bad.stderr


@pytest.mark.parametrize(("command", "job_id"), [
    ("show", str(2**63)), ("show", "0"), ("show", "-1"), ("cancel", str(2**63)), ("cancel", "x"), ("retry", str(2**64)),
])
def test_ids_out_of_range_are_usage_errors(
    cfg: Path, subprocess_env: dict[str, str], command: str, job_id: str
) -> None:
    proc = jr(subprocess_env, "--config", str(cfg), command, "--", job_id)
    assert proc.returncode == 2, proc.stderr
    assert "job id" in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args", [
    ["jobs", "--limit", "500"], ["jobs", "--json"], ["stats"], ["stats", "--json"], ["show", "1"],
    ["enqueue", "tests.workers.Noop"], ["migrate"],
])
def test_a_closed_stdout_ends_quietly(cfg: Path, subprocess_env: dict[str, str], args: list[str]) -> None:
    runner = Runner.from_config(cfg)
    runner.migrate()
    runner.enqueue(Noop, {})
    runner.store.close()
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, like `| head -0`
    try:
        proc = jr(subprocess_env, "--config", str(cfg), *args, stdout=write, stderr=subprocess.PIPE,
                  capture_output=False)
    finally:
        os.close(write)
    assert proc.stderr == "" and proc.returncode == cli.EXIT_BROKEN_PIPE


# ---------------------------------------------------------------- run: start-up failures


def test_run_without_any_configuration_says_so(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    one_line_error(jr(subprocess_env, "run", cwd=tmp_path), "no configuration file found",
                   str(tmp_path / "config.toml"), "--config", "JOBRUNNER_CONFIG")
    one_line_error(jr(subprocess_env, cwd=tmp_path), "no configuration file found")  # the default command
    assert not (tmp_path / "jobrunner.db").exists()


@pytest.fixture
def listener() -> Iterator[int]:
    """A port somebody already listens on (as a first daemon would)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("case", ["module", "database", "port in config", "port flag", "backend"])
def test_start_up_failures_are_one_line_and_exit_2(
    tmp_path: Path, subprocess_env: dict[str, str], listener: int, case: str
) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    text, args, expected = f'[database]\nurl = "{db}"\n[topics.t]\n', [], ""
    if case == "module":
        text += '[runner]\nmodules = ["no_such_module_xyz"]\n'
        expected = "importing 'no_such_module_xyz' failed"
    elif case == "database":
        text = text.replace(db, "sqlite:////nonexistent-dir-xyz/x.db")
        expected = "'/nonexistent-dir-xyz' does not exist"
    elif case == "port in config":
        text += f"[http]\nenabled = true\nport = {listener}\n"
        expected = f"[http] port {listener} on 127.0.0.1 is already in use (is another daemon running?)"
    elif case == "port flag":
        args, expected = ["--http-port", str(listener)], f"port {listener} on 127.0.0.1 is already in use"
    else:
        subprocess_env = {**subprocess_env, "JOBRUNNER_BACKEND": "curio"}
        expected = "environment JOBRUNNER_BACKEND must be one of asyncio, trio, got 'curio'"
    path = tmp_path / "c.toml"
    path.write_text(text)
    one_line_error(jr(subprocess_env, "run", "--config", str(path), *args), expected)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--http-port", "70000"], "option --http-port: [http]: key 'port' must be between 0 and 65535"),
    (["--http-port", "eighty"], "argument --http-port"),
    (["--http-host", ""], "argument --http-host"),
    (["--parallelism", "t=0"], "option --parallelism t=0: [topics.t]: key 'parallelism' must be at least 1"),
    (["--parallelism", "t"], "argument --parallelism: expected TOPIC=N"),
    (["--parallelism", "t=x"], "argument --parallelism: expected TOPIC=N"),
    (["--parallelism", "nope=2"], "option --parallelism nope=2: topic 'nope' is not declared"),
    (["--http-host", "0.0.0.0"], "option --http-host: [http]: key 'token' is required"),
    (["--log-level", "loud"], "--log-level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
])
def test_bad_run_flags_are_usage_errors_naming_the_flag(
    cfg: Path, subprocess_env: dict[str, str], args: list[str], fragment: str
) -> None:
    proc = jr(subprocess_env, "run", "--config", str(cfg), *args)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_log_level_in_the_environment_names_the_variable(cfg: Path, subprocess_env: dict[str, str]) -> None:
    proc = jr({**subprocess_env, "JOBRUNNER_LOG_LEVEL": "chatty"}, "--config", str(cfg), "stats")
    one_line_error(proc, "environment JOBRUNNER_LOG_LEVEL must be one of")
    assert jr({**subprocess_env, "JOBRUNNER_LOG_LEVEL": "warn"}, "--config", str(cfg), "stats").returncode == 0


def test_errors_in_configuration_variables_name_them(cfg: Path, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "JOBRUNNER_TOPICS__T__PARALLELISM": "x"}
    one_line_error(jr(env, "--config", str(cfg), "stats"),
                   "environment JOBRUNNER_TOPICS__T__PARALLELISM: [topics.t]: key 'parallelism' must be an integer")
    one_line_error(jr({**subprocess_env, "JOBRUNNER_HTTP__PROT": "1"}, "--config", str(cfg), "stats"),
                   "environment JOBRUNNER_HTTP__PROT: [http]: unknown key 'prot'")


# ---------------------------------------------------------------- run: flags that work


def test_run_flags_win_over_environment_and_file(cfg: Path) -> None:
    ns = cli.build_parser().parse_args(
        ["run", "--http-port", "9001", "--parallelism", "t=1", "--parallelism", "T=3", "--http-host", "localhost"])
    environ = {"JOBRUNNER_HTTP__PORT": "9000", "JOBRUNNER_TOPICS__T__PARALLELISM": "5"}
    settings = load(cfg, environ=environ, overrides=cli.run_overrides(ns))
    assert (settings.http.enabled, settings.http.host, settings.http.port) == (True, "localhost", 9001)
    assert settings.topics["t"].parallelism == 3  # the last --parallelism for a topic wins
    assert load(cfg, environ=environ).topics["t"].parallelism == 5
    with pytest.raises(ConfigError, match="option --parallelism"):
        args = cli.build_parser().parse_args(["run", "--parallelism", "t=0"])
        load(cfg, environ={}, overrides=cli.run_overrides(args))


def test_http_port_flag_serves_the_api_there(cfg: Path, subprocess_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**subprocess_env, "JOBRUNNER_HTTP__PORT": str(free_port())}  # the flag wins over this
    # Ready means: serving exactly our topics on the --http-port.
    daemon = DaemonProcess(cfg, log_path=tmp_path / "daemon.log", env=env, http_port=port, topics={"t", "ext"})
    try:
        daemon.start()
        created = httpx.post(f"http://127.0.0.1:{port}/jobs",
                             json={"worker": "w", "topic": "ext", "priority": "critical"}, timeout=5)
        assert created.status_code == 201 and created.json()["priority"] == 0
        daemon.terminate()
        assert daemon.wait(timeout=20) == 0
    finally:
        daemon.close()
    output = daemon.output()
    # Libraries' INFO lines (Hypercorn's "Running on …", httpx requests) stay out of the log.
    assert "jobrunner.http.server" not in output and "hypercorn" not in output.lower()
    assert "Traceback" not in output


def test_library_loggers_are_quiet_unless_debug() -> None:
    saved = {name: logging.getLogger(name).level for name in cli.CHATTY_LOGGERS}
    try:
        cli.configure_logging(logging.INFO)
        assert not any(logging.getLogger(name).isEnabledFor(logging.INFO) for name in cli.CHATTY_LOGGERS)
        assert logging.getLogger("hypercorn.error").getEffectiveLevel() == logging.WARNING
        cli.configure_logging(logging.DEBUG)
        assert all(logging.getLogger(name).level == logging.NOTSET for name in cli.CHATTY_LOGGERS)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------- what enqueue loads


def test_enqueue_does_not_load_the_http_stack(cfg: Path, subprocess_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobrunner", "--config", str(cfg),
         "enqueue", "tests.workers.Add", "--args", '{"a": 1, "b": 2}'],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0 and int(proc.stdout) > 0, proc.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"jobrunner.runner", "sqlalchemy"} <= loaded  # the probe sees imports at all
    http_stack = {name for name in loaded if name.split(".")[0] in {"starlette", "hypercorn", "httpx", "httpcore"}}
    assert http_stack == set()
