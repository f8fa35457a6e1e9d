"""Single enqueues, jobrunner against huey's SQLite storage, at the same durability.

Run from the repository root (huey is not a dependency: ``pip install huey`` first)::

    python bench/bench_huey.py            # 2,000 enqueues per run, 3 alternating rounds
    python bench/bench_huey.py --jobs 5000 --rounds 5

Each run enqueues no-op jobs one call at a time into a fresh SQLite file. Both stores use
WAL. jobrunner commits inserts with ``[database] synchronous`` (FULL by default: an fsync
per transaction, so a job acknowledged is on disk); huey's ``SqliteHuey`` does not fsync
unless ``fsync=True``. So two comparisons are fair: jobrunner FULL against huey
``fsync=True``, and jobrunner OFF against huey's default. Prints the median of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from bench_workers import Noop  # noqa: E402

import jobrunner  # noqa: E402
from bench import bench_config  # noqa: E402
from jobrunner.config import parse  # noqa: E402


def jobrunner_run(synchronous: str, jobs: int) -> float:
    """Enqueues per second, one ``runner.enqueue`` each, at ``synchronous``."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-huey-") as tmp:
        config = bench_config(Path(tmp) / "jobs.db")
        config["database"]["synchronous"] = synchronous
        runner = jobrunner.Runner(parse(config, source="<bench>"))
        runner.migrate()
        runner.enqueue(Noop, {})  # connections and statements warm
        started = time.perf_counter()
        for i in range(jobs):
            runner.enqueue(Noop, {"i": i})
        elapsed = time.perf_counter() - started
        runner.store.close()
    return jobs / elapsed


def huey_run(fsync: bool, jobs: int) -> float:
    """Enqueues per second, one task call each, on ``SqliteHuey(fsync=fsync)``."""
    from huey import SqliteHuey

    with tempfile.TemporaryDirectory(prefix="huey-bench-") as tmp:
        huey = SqliteHuey(filename=os.path.join(tmp, "huey.db"), fsync=fsync)

        @huey.task()  # type: ignore[untyped-decorator]  # huey has no type hints
        def noop(i: int) -> None:
            return None

        noop(0)
        started = time.perf_counter()
        for i in range(jobs):
            noop(i)
        return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import huey
    except ImportError:
        sys.exit("bench_huey.py compares with huey: pip install huey")
    runs: dict[str, Callable[[], float]] = {
        "jobrunner, synchronous = FULL (default)": lambda: jobrunner_run("FULL", args.jobs),
        "huey SqliteHuey, fsync=True": lambda: huey_run(True, args.jobs),
        "jobrunner, synchronous = OFF": lambda: jobrunner_run("OFF", args.jobs),
        "huey SqliteHuey (default: no fsync)": lambda: huey_run(False, args.jobs),
    }
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            results[name].append(run())
    print(f"single enqueues, {args.jobs:,} per run, {args.rounds} alternating rounds, medians "
          f"(jobrunner from {BENCH_DIR.parent}, huey {huey.__version__}, "
          f"CPython {sys.version.split()[0]}):")
    for name, rates in results.items():
        spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
        print(f"  {name:42} {statistics.median(rates):8,.0f} jobs/s  ({spread})")


if __name__ == "__main__":
    main()
