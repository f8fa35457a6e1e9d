"""Throughput, latency, memory and idle-cost benchmark of jobrunner on SQLite.

Run from the repository root::

    python bench/bench.py              # standard counts (10,000 jobs per workload)
    python bench/bench.py --quick      # small counts: a smoke run of every workload
    python bench/bench.py --full       # standard counts plus the 100,000-job memory check
    python bench/bench.py --backend trio --json results.json
    python bench/bench.py --only daemon,drain,enqueue   # some workloads only

Workloads (each on a fresh SQLite file in its own temporary directory):

* baseline: raw ``sqlite3`` single-row INSERT transactions/s (WAL, synchronous=FULL), so
  the other figures can be read as ratios on a noisy machine;
* W1: enqueue jobs one per call (``runner.enqueue``) and in one bulk call
  (``runner.enqueue_many``);
* W2 daemon: drain 20,000 pre-enqueued no-op jobs the way users run it: ``python -m
  jobrunner run`` started as a process, with its default logging (INFO lines on stderr,
  written to a file), one topic at parallelism 10; the rate comes from the table (jobs
  / (last ``completed_at`` - first ``attempted_at``)), so start-up is not counted;
* W2 in-process: drain pre-enqueued no-op jobs in this process (no log handler), one
  topic at parallelism 10, timed from the start of ``runner.run`` until a
  ``job_completed`` subscriber has seen every job; peak RSS; with ``--memory`` also
  drain 100,000 jobs and sample RSS every 10,000 completions;
* W3: enqueue → perform-start latency of sequential jobs, (a) enqueued in-process with
  ``enqueue_async``, (b) enqueued by a child process (noticed via ``PRAGMA data_version``);
* idle: CPU used by a runner with one topic and no jobs.

Nothing here sleeps to synchronise: every wait is on an event, with a generous deadline
so that a broken engine fails the workload instead of hanging. The only sleep is the
idle-CPU measurement window itself. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _entry in (str(BENCH_DIR), str(REPO_ROOT)):
    if _entry not in sys.path:
        sys.path.insert(0, _entry)

import anyio  # noqa: E402
from anyio.streams.buffered import BufferedByteReceiveStream  # noqa: E402
from bench_workers import STARTS, TOPIC, Noop, Stamp, TypedNoop  # noqa: E402

import jobrunner  # noqa: E402
from jobrunner import events  # noqa: E402
from jobrunner.config import ENV_DATABASE_URL, parse  # noqa: E402
from jobrunner.settings import SQLITE_LIBRARIES  # noqa: E402
from jobrunner.storage.sqlite_library import sqlite_library  # noqa: E402

PARALLELISM = 10
LATENCY_WARMUP = 5
MEMORY_SAMPLES = 10


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Scale:
    """How many jobs each workload uses."""

    enqueue: int
    drain: int
    daemon: int
    latency: int
    memory: int
    idle_seconds: float

    @classmethod
    def choose(cls, quick: bool) -> Scale:
        """The small smoke-run counts, or the standard ones."""
        if quick:
            return cls(enqueue=1_000, drain=2_000, daemon=2_000, latency=50, memory=20_000, idle_seconds=2.0)
        return cls(enqueue=10_000, drain=10_000, daemon=20_000, latency=200, memory=100_000, idle_seconds=5.0)


@dataclass(frozen=True)
class Target:
    """A pass mark: ``value op bound`` (op is ``>=`` or ``<``), with an optional stretch goal."""

    op: str
    bound: float
    goal: float | None = None

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the pass mark."""
        return value >= self.bound if self.op == ">=" else value < self.bound

    def describe(self, unit: str) -> str:
        """The target as table text, e.g. ``>= 10,000 jobs/s (goal 20,000)``."""
        text = f"{self.op} {format_value(self.bound, unit)}"
        if self.goal is not None:
            text += f" (goal {format_value(self.goal, unit).split(' ')[0]})"
        return text


@dataclass
class Metric:
    """One line of the report."""

    key: str
    label: str
    value: float | None
    unit: str
    target: Target | None = None
    vs_baseline: bool = False
    error: str | None = None

    def status(self) -> str:
        """``ok``, ``MISS``, ``ERROR`` or empty when there is no target."""
        if self.error is not None:
            return "ERROR"
        if self.target is None or self.value is None:
            return ""
        return "ok" if self.target.met(self.value) else "MISS"


@dataclass
class Report:
    """Everything measured, plus the machine it ran on."""

    machine: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: Metric) -> None:
        """Record one metric and echo it on stderr."""
        self.metrics.append(metric)
        shown = metric.error if metric.error else format_value(metric.value, metric.unit)
        progress(f"  {metric.label}: {shown}")

    def baseline(self) -> float | None:
        """The raw sqlite3 transactions/s, when it was measured."""
        for metric in self.metrics:
            if metric.key == "sqlite_baseline_tps" and metric.value:
                return metric.value
        return None


# ------------------------------------------------------------------ helpers


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(message, file=sys.stderr, flush=True)


def format_value(value: float | None, unit: str) -> str:
    """A number with its unit, rounded for reading."""
    if value is None:
        return "—"
    if unit in ("jobs/s", "tx/s"):
        return f"{value:,.0f} {unit}"
    if unit == "µs":
        return f"{value:.0f} µs"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "MiB":
        return f"{value:+.1f} MiB" if value < 0 else f"{value:.1f} MiB"
    return f"{value:g} {unit}"


def rss_mib() -> float:
    """Current resident set size of this process (VmRSS on Linux; else the peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(samples: list[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method) of ``samples``."""
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


#: ``[database] sqlite_library`` of every workload (``--sqlite-library``).
SQLITE_LIBRARY = "sqlite3"


def bench_config(db_path: Path) -> dict[str, Any]:
    """The configuration every workload uses: one topic, otherwise defaults."""
    return {
        "database": {"url": f"sqlite:///{db_path}", "sqlite_library": SQLITE_LIBRARY},
        "topics": {TOPIC: {"parallelism": PARALLELISM}},
    }


@contextmanager
def fresh_runner() -> Iterator[tuple[jobrunner.Runner, dict[str, Any]]]:
    """A migrated runner on a new SQLite file in a temporary directory, and its config."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        config = bench_config(Path(tmp) / "bench.db")
        runner = jobrunner.Runner(parse(config, source="<bench>"))
        runner.migrate()
        try:
            yield runner, config
        finally:
            runner.store.close()


@asynccontextmanager
async def running(runner: jobrunner.Runner) -> AsyncIterator[None]:
    """Run ``runner`` in a task group for the duration of the block, then stop it."""
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await runner.stop()


class CompletionGate:
    """A ``job_completed`` receiver for sequential workloads: one job in flight at a time.

    :meth:`arm` before enqueueing; :meth:`wait` returns once a job has completed since.
    Any completion opens the gate, so it cannot miss one that lands before the waiter
    knows the job's id.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()

    def arm(self) -> None:
        """Close the gate for the next job."""
        self._event = anyio.Event()

    def __call__(self, sender: Any, **payload: Any) -> None:
        self._event.set()

    async def wait(self, deadline: float) -> None:
        """Wait for the completion; TimeoutError after ``deadline`` seconds."""
        with anyio.fail_after(deadline):
            await self._event.wait()


def measure(report: Report, key: str, label: str, unit: str, fn: Callable[[], float], **kw: Any) -> None:
    """Run one measurement and add it to ``report``; an exception becomes an ERROR line."""
    try:
        value: float | None = fn()
        error = None
    except Exception as exc:  # noqa: BLE001 - report and carry on with the other workloads
        traceback.print_exc(file=sys.stderr)
        value, error = None, f"{type(exc).__name__}: {exc}"
    report.add(Metric(key, label, value, unit, error=error, **kw))


def run_async(backend: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run one async workload on a fresh event loop of ``backend``."""
    return anyio.run(functools.partial(fn, *args), backend=backend)


# ------------------------------------------------------------------ baseline


def sqlite_baseline(count: int) -> float:
    """Single-row INSERT transactions/s with raw sqlite3, WAL and synchronous=FULL."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "baseline.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            started = time.perf_counter()
            for i in range(count):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
                conn.execute("COMMIT")
            return count / (time.perf_counter() - started)
        finally:
            conn.close()


# ------------------------------------------------------------------ W1: enqueue


def enqueue_single(count: int) -> float:
    """Jobs/s enqueued one per ``runner.enqueue`` call (one transaction each)."""
    with fresh_runner() as (runner, _):
        started = time.perf_counter()
        for i in range(count):
            runner.enqueue(Noop, {"i": i})
        return count / (time.perf_counter() - started)


def enqueue_bulk(count: int, worker: type[jobrunner.Worker] = Noop) -> float:
    """Jobs/s enqueued in one ``runner.enqueue_many`` call (one transaction)."""
    items = [(worker, {"i": i}) for i in range(count)]
    with fresh_runner() as (runner, _):
        started = time.perf_counter()
        stored = runner.enqueue_many(items)
        elapsed = time.perf_counter() - started
    if len(stored) != count:
        raise RuntimeError(f"enqueue_many returned {len(stored)} jobs, expected {count}")
    return count / elapsed


# ------------------------------------------------------------------ W2: drain


@dataclass
class DrainResult:
    """What one drain measured: throughput and RSS samples ``(completed, MiB)``."""

    jobs_per_second: float
    rss_samples: list[tuple[int, float]]


def enqueue_noops(runner: jobrunner.Runner, count: int, chunk: int = 10_000) -> None:
    """Store ``count`` no-op jobs in bulk transactions of ``chunk``, keeping nothing."""
    for first in range(0, count, chunk):
        runner.enqueue_many([(Noop, {"i": i}) for i in range(first, min(count, first + chunk))])


async def drain(runner: jobrunner.Runner, count: int, sample_every: int = 0) -> DrainResult:
    """Run ``runner`` until a ``job_completed`` subscriber has seen ``count`` jobs.

    Timed from the start of ``runner.run`` to the last completion event. With
    ``sample_every``, the subscriber records the current RSS every that many completions.
    """
    done = anyio.Event()
    seen = 0
    finished_at = 0.0
    samples: list[tuple[int, float]] = []

    def on_completed(sender: Any, **payload: Any) -> None:
        nonlocal seen, finished_at
        seen += 1
        if sample_every and seen % sample_every == 0:
            samples.append((seen, rss_mib()))
        if seen == count:
            finished_at = time.perf_counter()
            done.set()

    with events.job_completed.connected_to(on_completed, sender=TOPIC):
        started = time.perf_counter()
        async with running(runner):
            with anyio.fail_after(max(60.0, count / 200)):
                await done.wait()
    completed = runner.stats()[TOPIC]["completed"]
    if completed != count:
        raise RuntimeError(f"{completed} jobs completed in the table, expected {count}")
    return DrainResult(count / (finished_at - started), samples)


def drain_workload(backend: str, count: int, sample_every: int = 0) -> DrainResult:
    """Pre-enqueue ``count`` no-op jobs on a fresh database, then drain them."""
    with fresh_runner() as (runner, _):
        enqueue_noops(runner, count)
        gc.collect()
        return run_async(backend, drain, runner, count, sample_every)


def record_memory(report: Report, backend: str, count: int) -> None:
    """Drain ``count`` jobs sampling RSS; report RSS at 10 %, 50 % and 100 % and the growth."""
    step = count // MEMORY_SAMPLES
    try:
        result = drain_workload(backend, count, sample_every=step)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        report.add(Metric("memory", f"memory check ({count:,} jobs)", None, "MiB",
                          error=f"{type(exc).__name__}: {exc}"))
        return
    report.extra["memory_rss_samples_mib"] = result.rss_samples
    by_count = dict(result.rss_samples)
    report.add(Metric("memory_drain_jps", f"W2 drain {count:,} no-op jobs", result.jobs_per_second, "jobs/s",
                      vs_baseline=True))
    for point in (step, count // 2, count):
        report.add(Metric(f"memory_rss_{point}", f"RSS after {point:,} completions", by_count.get(point), "MiB"))
    if step in by_count and count in by_count:
        growth = by_count[count] - by_count[step]
        report.add(Metric("memory_growth", f"RSS growth {step:,} → {count:,} (bench heuristic)", growth, "MiB",
                          target=Target("<", 16.0)))


# ------------------------------------------------------------------ W2: the daemon


def daemon_config_text(db_path: Path) -> str:
    """config.toml of the daemon workload: the bench topic, otherwise defaults."""
    return (f'[database]\nurl = "sqlite:///{db_path}"\nsqlite_library = "{SQLITE_LIBRARY}"\n\n'
            f'[runner]\nmodules = ["bench_workers"]\n\n[topics.{TOPIC}]\nparallelism = {PARALLELISM}\n')


def table_progress(db_path: Path) -> tuple[int, float | None, float | None]:
    """Completed jobs, the first ``attempted_at`` and the last ``completed_at`` in the table."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        count, last = conn.execute(
            "SELECT count(*), max(completed_at) FROM jobrunner_jobs WHERE state = 'completed'").fetchone()
        first = conn.execute("SELECT min(attempted_at) FROM jobrunner_jobs").fetchone()[0]
        return int(count), first, last
    finally:
        conn.close()


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class DaemonResult:
    """The daemon's drain rate, and its CPU time per job (less sensitive to a busy machine)."""

    jobs_per_second: float
    cpu_us_per_job: float | None


def daemon_drain(count: int, backend: str) -> DaemonResult:
    """Jobs/s of ``python -m jobrunner run`` (a child process, default logging to a file)
    draining ``count`` pre-enqueued no-op jobs, measured from the table; and the CPU the
    daemon used per job between the first and the last poll that saw progress."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        db_path = Path(tmp) / "bench.db"
        config_path = Path(tmp) / "config.toml"
        config_path.write_text(daemon_config_text(db_path), encoding="utf-8")
        runner = jobrunner.Runner(parse(bench_config(db_path), source="<bench>"))
        runner.migrate()
        enqueue_noops(runner, count)
        runner.store.close()
        command = [sys.executable, "-m", "jobrunner", "--config", str(config_path), "run", "--backend", backend]
        log_path = Path(tmp) / "daemon.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=tmp, env=child_environment(), stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + max(60.0, count / 200)
                start_mark: tuple[int, float] | None = None
                end_mark: tuple[int, float] | None = None
                while True:
                    try:
                        cpu = process_cpu_seconds(process.pid)
                    except (OSError, IndexError, ValueError):
                        cpu = None
                    done, first, last = table_progress(db_path)
                    if cpu is not None and 0 < done < count and start_mark is None:
                        start_mark = (done, cpu)
                    if cpu is not None and done > 0:
                        end_mark = (done, cpu)
                    if done >= count:
                        break
                    if process.poll() is not None:
                        raise RuntimeError(f"the daemon exited with {process.returncode}: "
                                           f"{log_path.read_text(errors='replace')[-2000:]}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{done} of {count} jobs completed before the deadline")
                    time.sleep(0.1)  # polling the table: the measurement itself reads the timestamps
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        lines = log_path.read_text(errors="replace").count("\n")
        progress(f"  (daemon log: {lines:,} lines)")
    if first is None or last is None or last <= first:
        raise RuntimeError("the table holds no usable timestamps")
    cpu_per_job = None
    if start_mark and end_mark and end_mark[0] > start_mark[0]:
        cpu_per_job = 1e6 * (end_mark[1] - start_mark[1]) / (end_mark[0] - start_mark[0])
    return DaemonResult(count / (last - first), cpu_per_job)


# ------------------------------------------------------------------ W3: latency


async def latency_in_process(runner: jobrunner.Runner, count: int) -> list[float]:
    """Milliseconds from ``enqueue_async`` to perform start, ``count`` sequential jobs."""
    gate = CompletionGate()
    latencies: list[float] = []
    with events.job_completed.connected_to(gate, sender=TOPIC):
        async with running(runner):
            for i in range(LATENCY_WARMUP + count):
                gate.arm()
                enqueued = time.perf_counter()
                job = await runner.enqueue_async(Stamp, {"i": i})
                await gate.wait(10.0)
                began = STARTS.pop(job.id)[0]
                if i >= LATENCY_WARMUP:
                    latencies.append((began - enqueued) * 1000)
    return latencies


#: Run by the child process of the cross-process latency workload: one enqueue per
#: line read on stdin, answering ``<job id> <time.time() taken just before enqueue>``.
CHILD_ENQUEUER = """
import json, sys, time
import jobrunner
from jobrunner.config import parse
from bench_workers import Stamp

runner = jobrunner.Runner(parse(json.loads(sys.argv[1]), source="<bench child>"))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "go":
        break
    enqueued = time.time()
    job = runner.enqueue(Stamp, {})
    print(f"{job.id} {enqueued!r}", flush=True)
runner.store.close()
"""


def child_environment() -> dict[str, str]:
    """This process's environment with the repo root and ``bench/`` on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(BENCH_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


async def latency_cross_process(runner: jobrunner.Runner, config: dict[str, Any], count: int) -> list[float]:
    """Milliseconds from a child process's enqueue to perform start in this process.

    The child enqueues one job per ``go`` line and reports its wall-clock timestamp; the
    next ``go`` is sent only once the previous job has completed here.

    This lock-step protocol keeps each enqueue at the same phase of the runner's
    ``[database] watch_interval`` timer (just after the tick that noticed the previous
    job), so the figures sit near the full interval rather than half of it on average:
    read them as close to the worst case for one interval.
    """
    gate = CompletionGate()
    latencies: list[float] = []
    command = [sys.executable, "-c", CHILD_ENQUEUER, json.dumps(config)]
    with events.job_completed.connected_to(gate, sender=TOPIC):
        async with running(runner):
            process = await anyio.open_process(command, env=child_environment(), stderr=None)
            try:
                assert process.stdin is not None and process.stdout is not None
                lines = BufferedByteReceiveStream(process.stdout)
                with anyio.fail_after(30.0):
                    ready = await lines.receive_until(b"\n", 4096)
                if ready != b"ready":
                    raise RuntimeError(f"child process said {ready!r} instead of 'ready'")
                for i in range(LATENCY_WARMUP + count):
                    gate.arm()
                    await process.stdin.send(b"go\n")
                    with anyio.fail_after(10.0):
                        job_id, enqueued = (await lines.receive_until(b"\n", 4096)).split()
                    await gate.wait(10.0)
                    began = STARTS.pop(int(job_id))[1]
                    if i >= LATENCY_WARMUP:
                        latencies.append((began - float(enqueued)) * 1000)
                await process.stdin.send(b"quit\n")
                with anyio.fail_after(10.0):
                    await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.aclose()
    return latencies


def latency_workload(backend: str, count: int, cross_process: bool) -> list[float]:
    """Sequential enqueue → start latencies (ms) on a fresh database."""
    with fresh_runner() as (runner, config):
        if cross_process:
            return run_async(backend, latency_cross_process, runner, config, count)
        return run_async(backend, latency_in_process, runner, count)


def record_latency(report: Report, backend: str, count: int, cross_process: bool) -> None:
    """Report p50/p90/p99 of one latency workload, with the targets that apply."""
    name = "cross-process" if cross_process else "in-process"
    key = "w3_cross" if cross_process else "w3_local"
    targets = {50: Target("<", 20.0)} if cross_process else {50: Target("<", 2.0), 99: Target("<", 10.0)}
    try:
        samples = latency_workload(backend, count, cross_process)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        report.add(Metric(key, f"W3 {name} latency", None, "ms", error=f"{type(exc).__name__}: {exc}"))
        return
    report.extra[f"{key}_ms"] = {"min": min(samples), "mean": statistics.fmean(samples), "max": max(samples)}
    for pct in (50, 90, 99):
        report.add(Metric(f"{key}_p{pct}", f"W3 {name} enqueue→start p{pct} ({count} jobs)",
                          percentile(samples, pct), "ms", target=targets.get(pct)))


# ------------------------------------------------------------------ idle CPU


async def idle_cpu(runner: jobrunner.Runner, seconds: float) -> float:
    """Process CPU % (of one core) while ``runner`` runs one topic with no jobs."""
    async with running(runner):
        cpu, wall = time.process_time(), time.perf_counter()
        await anyio.sleep(seconds)  # the measurement window, not synchronisation
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 100 * cpu / wall


def idle_workload(backend: str, seconds: float) -> float:
    """Idle CPU % of a runner on a fresh, empty database."""
    with fresh_runner() as (runner, _):
        return run_async(backend, idle_cpu, runner, seconds)


# ------------------------------------------------------------------ report


def machine_info(backend: str) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite_library(SQLITE_LIBRARY).describe(),
        "sqlalchemy": _version("sqlalchemy"),
        "anyio": _version("anyio"),
        "backend": backend + (f" (trio {_version('trio')})" if backend == "trio" else ""),
        "tempdir": f"{tempfile.gettempdir()} ({_filesystem(tempfile.gettempdir())})",
        "git": _git_revision(),
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _filesystem(path: str) -> str:
    """The type of the filesystem holding ``path`` (Linux ``/proc/mounts``), else ``?``."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                device, mount, fstype = line.split()[:3]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, f"{fstype} on {device}"
    except OSError:
        pass
    return kind


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def render_markdown(report: Report) -> str:
    """The machine description and a markdown table of every metric."""
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report.machine.items()]
    baseline = report.baseline()
    lines += ["", "## Results", "", "| Metric | Result | Target | ÷ raw sqlite tx/s | Status |",
              "|---|---:|---|---:|---|"]
    for m in report.metrics:
        result = m.error if m.error else format_value(m.value, m.unit)
        target = m.target.describe(m.unit) if m.target else ""
        ratio = f"{m.value / baseline:.2f}×" if m.vs_baseline and baseline and m.value else ""
        lines.append(f"| {m.label} | {result} | {target} | {ratio} | {m.status()} |")
    return "\n".join(lines)


def write_json(report: Report, destination: str) -> None:
    """Dump the report as one JSON document to a file, or to stdout for ``-``."""
    document = {
        "machine": report.machine,
        "metrics": [{**asdict(m), "status": m.status()} for m in report.metrics],
        "extra": report.extra,
    }
    text = json.dumps(document, indent=2, default=str)
    if destination == "-":
        print(text)
    else:
        Path(destination).write_text(text + "\n", encoding="utf-8")
        progress(f"results written to {destination}")


# ------------------------------------------------------------------ main


WORKLOADS = ("baseline", "enqueue", "daemon", "drain", "latency", "idle")


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown workload {unknown[0]!r} (known: {', '.join(WORKLOADS)})")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    size.add_argument("--full", action="store_true", help="standard counts plus the memory check")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="drain 100,000 jobs sampling RSS (default: on with --full)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--sqlite-library", choices=SQLITE_LIBRARIES, default="sqlite3",
                        help="[database] sqlite_library of every workload (default: sqlite3)")
    parser.add_argument("--only", type=_workloads, default=WORKLOADS, metavar="W[,W...]",
                        help=f"run only these workloads (of {', '.join(WORKLOADS)})")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="dump results as JSON to PATH (or stdout, instead of the table)")
    args = parser.parse_args(argv)
    if args.memory is None:
        args.memory = args.full
    return args


def _keep(box: list[DaemonResult], result: DaemonResult) -> DaemonResult:
    box.append(result)
    return result


def run_benchmarks(args: argparse.Namespace) -> Report:
    """Every workload, in order, each on its own database."""
    global SQLITE_LIBRARY
    SQLITE_LIBRARY = args.sqlite_library
    scale = Scale.choose(args.quick)
    backend = args.backend
    report = Report(machine_info(backend))

    only = set(args.only)
    if "baseline" in only:
        progress(f"baseline: raw sqlite3, {scale.enqueue:,} single-row transactions")
        measure(report, "sqlite_baseline_tps", "raw sqlite3 INSERT tx/s (WAL, synchronous=FULL)", "tx/s",
                lambda: sqlite_baseline(scale.enqueue))

    if "enqueue" in only:
        progress(f"W1: enqueue {scale.enqueue:,} jobs")
        measure(report, "w1_single_jps", f"W1 enqueue {scale.enqueue:,}, one per call", "jobs/s",
                lambda: enqueue_single(scale.enqueue), target=Target(">=", 4_000), vs_baseline=True)
        measure(report, "w1_bulk_jps", f"W1 enqueue {scale.enqueue:,}, one bulk call", "jobs/s",
                lambda: enqueue_bulk(scale.enqueue), target=Target(">=", 150_000), vs_baseline=True)
        measure(report, "w1_bulk_typed_jps", f"W1 enqueue {scale.enqueue:,}, one bulk call, typed args", "jobs/s",
                lambda: enqueue_bulk(scale.enqueue, TypedNoop), vs_baseline=True)

    if "daemon" in only:
        progress(f"W2 daemon: `python -m jobrunner run` drains {scale.daemon:,} no-op jobs at parallelism "
                 f"{PARALLELISM}")
        daemon_runs: list[DaemonResult] = []
        measure(report, "w2_daemon_jps", f"W2 daemon drain {scale.daemon:,} no-op jobs", "jobs/s",
                lambda: _keep(daemon_runs, daemon_drain(scale.daemon, backend)).jobs_per_second,
                target=Target(">=", 10_000, goal=20_000), vs_baseline=True)
        if daemon_runs:
            report.add(Metric("w2_daemon_cpu_us", "W2 daemon CPU per job (every thread)",
                              daemon_runs[0].cpu_us_per_job, "µs"))
    if "drain" in only:
        progress(f"W2: drain {scale.drain:,} no-op jobs at parallelism {PARALLELISM} in this process")
        measure(report, "w2_drain_jps", f"W2 in-process drain {scale.drain:,} no-op jobs", "jobs/s",
                lambda: drain_workload(backend, scale.drain).jobs_per_second,
                target=Target(">=", 10_000, goal=20_000), vs_baseline=True)
        measure(report, "w2_peak_rss", "peak RSS of the bench process after W2", "MiB", peak_rss_mib)

    if args.memory and "drain" in only:
        progress(f"W2 memory: drain {scale.memory:,} jobs, RSS every {scale.memory // MEMORY_SAMPLES:,}")
        record_memory(report, backend, scale.memory)

    if "latency" in only:
        progress(f"W3: enqueue → start latency, {scale.latency} sequential jobs")
        record_latency(report, backend, scale.latency, cross_process=False)
        record_latency(report, backend, scale.latency, cross_process=True)

    if "idle" in only:
        progress(f"idle: one topic, no jobs, {scale.idle_seconds:g} s")
        measure(report, "idle_cpu", f"idle runner CPU ({scale.idle_seconds:g} s window)", "%",
                lambda: idle_workload(backend, scale.idle_seconds), target=Target("<", 2.0))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a workload failed (a missed target is not a failure)."""
    args = parse_args(argv)
    if os.environ.pop(ENV_DATABASE_URL, None):
        progress(f"note: ignoring {ENV_DATABASE_URL}: every workload uses its own temporary database")
    report = run_benchmarks(args)
    if args.json != "-":
        print(render_markdown(report))
    if args.json:
        write_json(report, args.json)
    return 1 if any(m.error for m in report.metrics) else 0


if __name__ == "__main__":
    sys.exit(main())
