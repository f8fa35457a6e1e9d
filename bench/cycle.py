"""The claim/ack transaction alone: the ceiling of a topic's drain rate on SQLite.

Run from the repository root::

    python bench/cycle.py                 # 20,000 jobs, batches of 10 (parallelism 10)
    python bench/cycle.py --jobs 50000 --batch 20

Pre-enqueues no-op jobs in a fresh SQLite file, then runs the storage's claim/ack cycle
in a loop on one thread, as a topic's claim loop would with jobs that take no time: each
transaction writes the outcomes of the previous batch and claims the next one. No event
loop, no thread hop, no job runs: what is left is the SQL and turning rows into jobs.
It prints the microseconds per transaction, the jobs/s that allows, and the time per
statement.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent)]

from bench_workers import TOPIC  # noqa: E402

import bench  # noqa: E402
import jobrunner  # noqa: E402
from bench import bench_config, enqueue_noops  # noqa: E402
from jobrunner.config import parse  # noqa: E402
from jobrunner.storage import ClaimRequest  # noqa: E402
from jobrunner.storage.records import Ack  # noqa: E402
from jobrunner.transitions import Transition  # noqa: E402


class TimedCursor:
    """A DBAPI cursor that adds the time of each statement to ``spent`` (by its first words)."""

    def __init__(self, cursor: Any, spent: collections.defaultdict[str, float]) -> None:
        self.cursor, self.spent = cursor, spent

    def execute(self, statement: str, *args: Any) -> TimedCursor:
        started = time.perf_counter()
        self.cursor.execute(statement, *args)
        self.spent[statement[:48]] += time.perf_counter() - started
        return self

    def executemany(self, statement: str, *args: Any) -> TimedCursor:
        started = time.perf_counter()
        self.cursor.executemany(statement, *args)
        self.spent["(many) " + statement[:41]] += time.perf_counter() - started
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10, help="jobs claimed per transaction (the parallelism)")
    parser.add_argument("--sqlite-library", choices=("sqlite3", "pysqlite3"), default="sqlite3")
    args = parser.parse_args()
    bench.SQLITE_LIBRARY = args.sqlite_library
    with tempfile.TemporaryDirectory(prefix="jobrunner-cycle-") as tmp:
        runner = jobrunner.Runner(parse(bench_config(Path(tmp) / "cycle.db"), source="<bench>"))
        runner.migrate()
        enqueue_noops(runner, args.jobs)
        storage = runner.store
        spent: collections.defaultdict[str, float] = collections.defaultdict(float)
        write = storage.db.write

        def timed_write(body: Callable[[Any], T], *, durable: bool = False) -> T:
            return write(lambda c: body(TimedCursor(c, spent)), durable=durable)

        storage.db.write = timed_write  # type: ignore[method-assign]  # instrumentation of this run only
        claimed: list[jobrunner.Job] = []
        cycles, started = 0, time.perf_counter()
        while True:
            acks = [Ack(Transition.COMPLETE, job, at=time.time(), result=None) for job in claimed]
            request = ClaimRequest(TOPIC, args.batch, "bench-node", time.time(), False, None, None, 0, None)
            claimed = storage.jobs.cycle(acks, request).claimed
            cycles += 1
            if not claimed:
                break
        elapsed = time.perf_counter() - started
        storage.close()
    print(runner.store.db.sqlite.describe() if runner.store.db.sqlite else "")
    print(f"{cycles:,} transactions of up to {args.batch} acks + {args.batch} claims: "
          f"{1e6 * elapsed / cycles:,.0f} µs each, {args.jobs / elapsed:,.0f} jobs/s at most")
    for statement, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {1e6 * seconds / cycles:7,.0f} µs  {statement!r}")
    print(f"  {1e6 * (elapsed - sum(spent.values())) / cycles:7,.0f} µs  the rest: BEGIN/COMMIT, rows → Job, Python")


if __name__ == "__main__":
    main()
