"""Scale-out benchmark: W1–W3 on SQLite beside PostgreSQL, drain with 1/2/4 daemon
processes on one database, and claim latency on a 1,000,000-row jobs table.

Run from the repository root (needs a PostgreSQL server; default the test server)::

    python bench/scale.py                       # standard counts
    python bench/scale.py --quick               # a smoke run
    python bench/scale.py --server postgresql+psycopg://postgres@127.0.0.1:5432/test

Each workload gets a fresh database: an SQLite file in a temporary directory, or a
PostgreSQL database created next to ``--server``'s (and dropped afterwards). The W1–W3
workloads are those of ``bench/bench.py`` (same code), W3 cross-process with
``poll_interval = 5`` so that only the wake-up mechanism (SQLite: the commit watcher;
PostgreSQL: LISTEN/NOTIFY) can make it fast. Progress goes to stderr, a Markdown table
to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]  # bench/bench.py before the bench/ folder

from bench_workers import TOPIC, Noop  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import bench  # noqa: E402 - bench/bench.py, after the path set-up above
import jobrunner  # noqa: E402
from jobrunner.config import parse  # noqa: E402
from jobrunner.storage import ClaimRequest  # noqa: E402

SERVER = os.environ.get("JOBRUNNER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def progress(message: str) -> None:
    """One line on stderr."""
    print(f"[scale] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def fresh_url(engine: str, server: str) -> Iterator[str]:
    """A URL of a new, empty database on ``engine`` (dropped or deleted afterwards)."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="jobrunner-scale-") as tmp:
            yield f"sqlite:///{tmp}/jobs.db"
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"jr_scale_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def config_for(url: str, poll: float = 1.0) -> dict[str, Any]:
    """One topic at parallelism 10 (as bench.py), the given poll interval."""
    return {"database": {"url": url}, "topics": {TOPIC: {"parallelism": bench.PARALLELISM, "poll_interval": poll}}}


@contextlib.contextmanager
def fresh_runner(engine: str, server: str, poll: float = 1.0) -> Iterator[tuple[jobrunner.Runner, dict[str, Any]]]:
    """A migrated runner on a fresh database of ``engine``, and its config."""
    with fresh_url(engine, server) as url:
        config = config_for(url, poll)
        runner = jobrunner.Runner(parse(config, source="<scale bench>"))
        runner.migrate()
        try:
            yield runner, config
        finally:
            runner.store.close()


# ------------------------------------------------------------------ W1–W3


def w1_single(engine: str, server: str, count: int) -> float:
    """Jobs/s, one ``enqueue`` (one transaction) each."""
    with fresh_runner(engine, server) as (runner, _):
        started = time.perf_counter()
        for i in range(count):
            runner.enqueue(Noop, {"i": i})
        return count / (time.perf_counter() - started)


def w1_bulk(engine: str, server: str, count: int) -> float:
    """Jobs/s, one ``enqueue_many`` of ``count`` jobs."""
    items = [(Noop, {"i": i}) for i in range(count)]
    with fresh_runner(engine, server) as (runner, _):
        started = time.perf_counter()
        runner.enqueue_many(items)
        return count / (time.perf_counter() - started)


def w2_drain(engine: str, server: str, count: int) -> float:
    """Jobs/s draining ``count`` pre-enqueued no-op jobs in this process."""
    with fresh_runner(engine, server) as (runner, _):
        bench.enqueue_noops(runner, count)
        return bench.run_async("asyncio", bench.drain, runner, count).jobs_per_second


def w3_latency(engine: str, server: str, count: int, cross_process: bool) -> list[float]:
    """Enqueue → start latencies (ms); cross-process ones with ``poll_interval = 5``."""
    with fresh_runner(engine, server, poll=5.0 if cross_process else 1.0) as (runner, config):
        if cross_process:
            return list(bench.run_async("asyncio", bench.latency_cross_process, runner, config, count))
        return list(bench.run_async("asyncio", bench.latency_in_process, runner, count))


# ------------------------------------------------------------------ drain with N daemons


def _drain_cell(engine: str, *, server: str, count: int, processes: int) -> str:
    return f"{drain_with_daemons(engine, server, count, processes):,.0f}/s"


def drain_with_daemons(engine: str, server: str, count: int, processes: int) -> float:
    """Jobs/s with ``processes`` daemons (``python -m jobrunner run``) on one database.

    The topic is paused while the daemons start; the clock starts at the resume (which
    every node hears at once) and stops when the table shows every job completed.
    """
    with fresh_url(engine, server) as url, tempfile.TemporaryDirectory(prefix="jobrunner-scale-") as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(
            f'[database]\nurl = "{url}"\n[runner]\nmodules = ["bench_workers"]\nsummary_interval = 0\n'
            f"[topics.{TOPIC}]\nparallelism = {bench.PARALLELISM}\npoll_interval = 1.0\n"
        )
        runner = jobrunner.Runner.from_config(cfg)
        runner.migrate()
        runner.pause(TOPIC)
        bench.enqueue_noops(runner, count)
        env = bench.child_environment()
        daemons = [subprocess.Popen([sys.executable, "-m", "jobrunner", "--config", str(cfg), "--log-level", "WARNING",
                                     "run"], env=env, cwd=tmp) for _ in range(processes)]
        engine_ = create_engine(url)
        try:
            wait_for(lambda: _scalar(engine_, "SELECT count(*) FROM jobrunner_nodes") == processes, 120)
            started = time.perf_counter()
            runner.resume(TOPIC)
            wait_for(lambda: _scalar(engine_, "SELECT count(*) FROM jobrunner_jobs WHERE state = 'completed'")
                     == count, 600, step=0.01)
            return count / (time.perf_counter() - started)
        finally:
            for daemon in daemons:
                daemon.terminate()
            for daemon in daemons:
                daemon.wait(60)
            engine_.dispose()
            runner.store.close()


def _scalar(engine: Any, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar() or 0)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> None:
    """Poll ``predicate`` until true (a benchmark of outside processes: nothing to subscribe to)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(step)


# ------------------------------------------------------------------ claim latency


def claim_latency(engine: str, server: str, rows: int, available: int, rounds: int) -> list[float]:
    """Milliseconds per claim of 10 jobs from a table of ``rows`` jobs, all but ``available`` completed."""
    with fresh_runner(engine, server) as (runner, _):
        store = runner.store
        done = rows - available
        progress(f"  filling {rows:,} rows on {engine}")
        for first in range(0, done, 50_000):
            runner.enqueue_many([(Noop, {"i": i}) for i in range(first, min(done, first + 50_000))])
        with store.db.engine.begin() as conn:
            conn.execute(text("UPDATE jobrunner_jobs SET state = 'completed', completed_at = inserted_at, "
                              "attempt = 1"))
        bench.enqueue_noops(runner, available)
        with store.db.engine.connect() as conn:
            if engine == "sqlite":
                conn.exec_driver_sql("ANALYZE")
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE jobrunner_jobs")
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            claimed = store.jobs.cycle((), ClaimRequest(TOPIC, 10, "bench-node", time.time())).claimed
            samples.append((time.perf_counter() - started) * 1000)
            if len(claimed) != 10:
                raise RuntimeError(f"claimed {len(claimed)} jobs, expected 10")
        return samples


# ------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> int:
    """Run every workload on both engines; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server (a database on it, CREATE DATABASE right)")
    parser.add_argument("--big", type=int, default=None, help="rows of the claim-latency table (default 1,000,000)")
    args = parser.parse_args(argv)
    q = args.quick
    single, bulk, drain_n, lat_n = (200, 2_000, 2_000, 20) if q else (2_000, 20_000, 10_000, 200)
    nodes_n = 2_000 if q else 10_000
    big = args.big or (20_000 if q else 1_000_000)
    lines = ["| Workload | SQLite | PostgreSQL |", "|---|---|---|"]

    def row(label: str, fn: Callable[[str], str]) -> None:
        progress(label)
        cells = []
        for engine in ("sqlite", "postgresql"):
            try:
                cells.append(fn(engine))
            except Exception as exc:  # noqa: BLE001 - report and go on
                cells.append(f"error: {type(exc).__name__}: {exc}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")

    def pcts(samples: list[float]) -> str:
        return " / ".join(f"{bench.percentile(samples, p):.1f}" for p in (50, 90, 99)) + " ms"

    row(f"W1 enqueue, one call each ({single:,})", lambda e: f"{w1_single(e, args.server, single):,.0f}/s")
    row(f"W1 enqueue_many ({bulk:,})", lambda e: f"{w1_bulk(e, args.server, bulk):,.0f}/s")
    row(f"W2 drain in-process ({drain_n:,}, parallelism 10)", lambda e: f"{w2_drain(e, args.server, drain_n):,.0f}/s")
    row(f"W3 in-process enqueue→start p50/p90/p99 ({lat_n})", lambda e: pcts(w3_latency(e, args.server, lat_n, False)))
    row(f"W3 cross-process enqueue→start p50/p90/p99, poll_interval 5 ({lat_n})",
        lambda e: pcts(w3_latency(e, args.server, lat_n, True)))
    for processes in (1, 2, 4):
        row(f"drain {nodes_n:,} with {processes} daemon process(es)",
            functools.partial(_drain_cell, server=args.server, count=nodes_n, processes=processes))
    row("claim 10 jobs, p50/p90/p99, 10,000-row table",
        lambda e: pcts(claim_latency(e, args.server, 10_000, 5_000, 200)))
    row(f"claim 10 jobs, p50/p90/p99, {big:,}-row table ({big - 5_000:,} completed)",
        lambda e: pcts(claim_latency(e, args.server, big, 5_000, 200)))
    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average at the end {load[0]:.1f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
