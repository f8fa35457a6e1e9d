"""What looking costs: the drain benchmark (W2 of bench.py) and idle CPU, with and without
the dashboard, ``/metrics`` and ``top`` watching.

    python bench/bench_observe.py                 # 20,000 jobs, 3 rounds of each mode
    python bench/bench_observe.py --jobs 5000 --rounds 1

Modes, run alternately so that the machine's drift hits both alike:

* ``off``: the runner without HTTP (nothing subscribed: the events are not even built);
* ``http``: HTTP on (the metrics and dashboard subscriptions live), nobody looking;
* ``watched``: HTTP on and, from a
  separate process, ``/metrics`` scraped every second, two dashboards open on the live
  stream, and ``python -m jobrunner top`` refreshing every second on the same database.

Idle: process CPU of a runner with one topic and no jobs, HTTP off, HTTP on with nobody
looking, and HTTP on with one dashboard open and ``/metrics`` scraped every second.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

import anyio  # noqa: E402
from bench_workers import TOPIC  # noqa: E402

import jobrunner  # noqa: E402
from bench import enqueue_noops, running  # noqa: E402
from jobrunner import events  # noqa: E402
from jobrunner.config import parse  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_runner(folder: Path, http: bool) -> tuple[jobrunner.Runner, dict[str, Any]]:
    config: dict[str, Any] = {"database": {"url": f"sqlite:///{folder / 'bench.db'}"},
                              "topics": {TOPIC: {"parallelism": 10}},
                              "http": {"enabled": http, "port": free_port()}}
    runner = jobrunner.Runner(parse(config, source="<bench>"))
    runner.migrate()
    return runner, config


def start_watchers(
    folder: Path, config: dict[str, Any], dashboards: int, scrape: bool, top: bool
) -> subprocess.Popen[bytes]:
    """A separate process that looks at the runner (see :func:`watch`); returns once every
    watcher in it is looking, so that their start-up is not counted as looking."""
    (folder / "config.toml").write_text(
        f'[database]\nurl = "{config["database"]["url"]}"\n\n[topics.{TOPIC}]\nparallelism = 10\n')
    args = [sys.executable, __file__, "--watch", str(config["http"]["port"]), "--dashboards", str(dashboards),
            "--config", str(folder / "config.toml")]
    args += ["--scrape"] if scrape else []
    args += ["--top"] if top else []
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline() != b"ready\n":
        stop(proc)
        raise RuntimeError("the watchers did not start")
    return proc


def watch(ns: argparse.Namespace) -> None:
    """The watchers' process: dashboards on the stream, a scraper, ``top``; prints ``ready``
    once each has seen its first answer (or screen), then runs until killed."""
    import httpx

    url = f"http://127.0.0.1:{ns.watch}"
    started: list[threading.Event] = []

    def looking() -> threading.Event:
        event = threading.Event()
        started.append(event)
        return event

    def dashboard(ready: threading.Event) -> None:
        while True:
            try:
                with httpx.Client(timeout=None) as client, client.stream("GET", url + "/dashboard/api/stream") as r:
                    for line in r.iter_lines():
                        if line.startswith("event: snapshot"):
                            ready.set()
            except httpx.HTTPError:
                time.sleep(0.05)

    def scraper(ready: threading.Event) -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    client.get(url + "/metrics").raise_for_status()
                    ready.set()
                except httpx.HTTPError:
                    pass
                time.sleep(1.0)

    def screens(terminal: int, ready: threading.Event) -> None:
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # `top` ended
                return
            if b"jobrunner top" in chunk:
                ready.set()

    for _ in range(ns.dashboards):
        threading.Thread(target=dashboard, args=(looking(),), daemon=True).start()
    if ns.scrape:
        threading.Thread(target=scraper, args=(looking(),), daemon=True).start()
    if ns.top:
        # A terminal of its own, as a user's `top` has: rich draws its screens only there.
        terminal, screen = pty.openpty()
        subprocess.Popen([sys.executable, "-m", "jobrunner", "--config", ns.config, "top"],
                         stdin=subprocess.DEVNULL, stdout=screen)
        os.close(screen)
        threading.Thread(target=screens, args=(terminal, looking()), daemon=True).start()
    for event in started:
        if not event.wait(60):
            sys.exit("a watcher did not start within 60 s")
    print("ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # the benchmark went away (killed?): take `top` along
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    # The watcher's own process group (it started `top` too).
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def _drain_watched(runner: jobrunner.Runner, jobs: int, watch: Callable[[], Any]) -> tuple[float, float]:
    """Run ``runner`` with its topic paused, start the watchers (``watch``), then resume
    the topic and drain it: (jobs/s, process CPU microseconds per job) from the resume to
    the last completion, so that nobody's start-up is counted."""
    done = anyio.Event()
    seen = 0

    def on_completed(sender: Any, **payload: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == jobs:
            done.set()

    runner.pause(TOPIC)
    with events.job_completed.connected_to(on_completed, sender=TOPIC):
        async with running(runner):
            watchers = await anyio.to_thread.run_sync(watch)
            try:
                cpu, started = time.process_time(), time.perf_counter()
                runner.resume(TOPIC)
                with anyio.fail_after(max(60.0, jobs / 200)):
                    await done.wait()
                cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
            finally:
                if watchers is not None:
                    stop(watchers)
    if runner.stats()[TOPIC]["completed"] != jobs:
        raise RuntimeError("not every job completed")
    return jobs / elapsed, 1e6 * cpu / jobs


def drain_once(jobs: int, mode: str) -> tuple[float, float]:
    """Jobs per second, and the runner process's CPU microseconds per job (every thread)."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-observe-") as tmp:
        folder = Path(tmp)
        runner, config = make_runner(folder, http=mode != "off")
        enqueue_noops(runner, jobs)
        watch = (lambda: start_watchers(folder, config, 2, True, True)) if mode == "watched" else (lambda: None)
        try:
            return anyio.run(_drain_watched, runner, jobs, watch)
        finally:
            runner.store.close()


async def _idle(runner: jobrunner.Runner, seconds: float, watch: Callable[[], Any]) -> float:
    async with running(runner):
        watchers = await anyio.to_thread.run_sync(watch)
        try:
            await anyio.sleep(1.0)  # the measurement window starts a second after the start-up
            cpu, wall = time.process_time(), time.perf_counter()
            await anyio.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            if watchers is not None:
                stop(watchers)
    return 100 * cpu / wall


def idle_once(seconds: float, http: bool, looked_at: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="jobrunner-observe-") as tmp:
        folder = Path(tmp)
        runner, config = make_runner(folder, http=http)
        watch = (lambda: start_watchers(folder, config, 1, True, False)) if looked_at else (lambda: None)
        try:
            return anyio.run(_idle, runner, seconds, watch)
        finally:
            runner.store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of each idle measurement")
    parser.add_argument("--watch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dashboards", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--scrape", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--top", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    if ns.watch:
        watch(ns)
        return 0
    modes = ("off", "http", "watched")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    for n in range(ns.rounds):
        for mode in modes:
            rate, cpu = drain_once(ns.jobs, mode)
            rates[mode].append(rate)
            cpus[mode].append(cpu)
            print(f"round {n + 1} {mode:8s} {rate:8,.0f} jobs/s {cpu:6.0f} us CPU per job",
                  file=sys.stderr, flush=True)
    idle = {name: idle_once(ns.idle, http, looked) for name, http, looked in
            (("off", False, False), ("http, nobody looking", True, False), ("http, 1 dashboard + scrapes", True, True))}
    off, watched = statistics.median(rates["off"]), statistics.median(rates["watched"])
    cpu_off, cpu_watched = statistics.median(cpus["off"]), statistics.median(cpus["watched"])
    cpu_http = statistics.median(cpus["http"])
    report = {"jobs": ns.jobs, "rounds": ns.rounds, "cpus": os.cpu_count(), "load": os.getloadavg(),
              "drain_jobs_per_s": rates, "cpu_us_per_job": cpus,
              "median_off": off, "median_watched": watched, "cost_percent": 100 * (off - watched) / off,
              "cpu_cost_percent": 100 * (cpu_watched - cpu_off) / cpu_off, "idle_cpu_percent": idle}
    if ns.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"drain {ns.jobs:,} jobs, median of {ns.rounds}: off {off:,.0f}/s, watched {watched:,.0f}/s "
              f"({report['cost_percent']:+.1f} % cost); runner CPU per job: off {cpu_off:.0f} us, watched "
              f"{cpu_watched:.0f} us ({report['cpu_cost_percent']:+.1f} %), "
              f"HTTP on but nobody looking {cpu_http:.0f} us; "
              f"load average {os.getloadavg()[0]:.1f}")
        for name, cpu in idle.items():
            print(f"idle CPU ({name}): {cpu:.2f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
