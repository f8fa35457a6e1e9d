"""Soak test: many jobs, several daemon processes on one SQLite file, repeated kill -9.

Run from the repository root (not part of the test suite)::

    python bench/soak.py                                  # 100,000 jobs, 3 processes, 2 kills, 10% failures
    python bench/soak.py --jobs 20000 --kills 3
    python bench/soak.py --jobs 50000 --prune             # continuous feed + pruning: the file must stop growing
    python bench/soak.py --jobs 20000 --http-workers 8 --read-flood 4   # + external workers and readers over HTTP

What it does: makes a temporary directory with a config (short heartbeat and rescue
delay, pruning off unless ``--prune``), enqueues the jobs in bulk (``--prune``: in
batches, keeping a bounded backlog, so the run reaches a steady state), starts
``--processes`` daemons (``python -m jobrunner run``), and at evenly spread points of
progress kills one daemon with SIGKILL and starts a replacement, ``--kills`` times. It
waits until every job is final, stops the daemons with SIGTERM, then checks:

* every job is final (completed or discarded) and ``attempt <= max_attempts``;
* no job completed twice: a job's successful executions (from the execution log every
  job writes, see ``tests/resilience_workers.py``) number exactly one, plus at most one
  by a process that was killed before its outcome was written;
* no two executions of one job overlapped (a killed execution ends at its kill);
* exactly the jobs left executing by killed processes were rescued, and only
  executions of killed processes lack an end;
* the daemons exited 0 and logged no traceback and no "database is locked";
* with ``--prune``: every job missing from the table (pruned) has a final execution
  in the log, and the database file stops growing (size sampled every few seconds).

``--http-workers N`` adds an external topic ``ext`` (``--http-jobs`` jobs, a short
``--lease``) and turns on every daemon's HTTP API (a free port each): N worker threads
claim, complete, fail, extend, abandon and conclude stale leases through the API of any
live daemon, retrying on another one when theirs is killed (``bench/soak_http.py``
says what they do and check: every job final, none leased twice at once or concluded
twice, every 409 explained by an expiry or a lost answer, every abandoned lease expired
with its attempt counted, never more than the topic's parallelism leased at once).
``--read-flood N`` adds N threads reading ``GET /jobs?limit=1000``, ``GET /topics`` and
``GET /jobs/{id}`` without pause (``bench/soak_reads.py``); the rescue invariant above
then proves that the reads never starved a live daemon's heartbeat.

It prints wall time, jobs/s, rescued, discarded, the database size at the end and, with
``--prune``, the size samples; with the HTTP modes, their own figures (reads/s, read
latency p50/p99, leases expired, 409s, ...). Exit status 0 when every invariant holds, 1 otherwise.
Each job execution also appends two records to the execution log (a file per process),
which is part of the measured cost.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import soak_client  # noqa: E402
from soak_http import TOPIC as EXT, HttpWorkers  # noqa: E402
from soak_reads import ReadFlood  # noqa: E402

from jobrunner import Runner  # noqa: E402
from tests.forkserver import ENV_COLD  # noqa: E402

# The soak's daemons start as a user's do, not as forks of the tests' fork server.
os.environ[ENV_COLD] = "1"
from tests import resilience_workers as rw  # noqa: E402
from tests.daemon_harness import READY_EVENT, DaemonProcess, child_env, free_port, stop_all  # noqa: E402
from tests.resilience_workers import Task  # noqa: E402

NON_FINAL = ("scheduled", "available", "executing", "retryable")

CONFIG = """
[database]
url = "sqlite:///{db}"

[runner]
modules = ["tests.resilience_workers"]
shutdown_grace = 5
heartbeat_interval = {heartbeat}
rescue_after = {rescue}
prune_after = {prune_after}
prune_interval = {prune_interval}
prune_limit = 5000

[topics.r]
parallelism = {parallelism}
poll_interval = {poll}
backoff = {{ strategy = "constant", base = 0.0, max = 1.0, jitter = 0.0 }}
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Soak:
    args: argparse.Namespace
    tmp: Path
    daemons: list[DaemonProcess] = field(default_factory=list)
    retired: list[DaemonProcess] = field(default_factory=list)
    #: pid → wall-clock time of its SIGKILL
    killed: dict[int, float] = field(default_factory=dict)
    #: job ids left executing by each killed process
    left_executing: dict[int, set[int]] = field(default_factory=dict)
    size_samples: list[tuple[float, int, int]] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    #: ids of the external topic's jobs (``--http-workers``)
    ext_ids: list[int] = field(default_factory=list)
    endpoints: soak_client.Endpoints = field(default_factory=soak_client.Endpoints)

    def __post_init__(self) -> None:
        self.db = self.tmp / "jobs.db"
        self.exec_log = self.tmp / "executions"
        self.cfg = self.tmp / "config.toml"
        prune = self.args.prune
        self.cfg.write_text(CONFIG.format(
            db=self.db, heartbeat=self.args.heartbeat, rescue=self.args.rescue_after,
            prune_after=2.0 if prune else 10 * 365 * 86400.0, prune_interval=1.0 if prune else 60.0,
            parallelism=self.args.parallelism, poll=self.args.poll,
        ) + (soak_client.http_config(self.args) if self.http else ""))
        rw.create_log(self.exec_log)
        self.env = child_env()
        self.runner = Runner.from_config(self.cfg)
        self.runner.migrate()
        self.rng = random.Random(self.args.seed)
        self.started_count = 0
        #: seconds from the start until every job of a topic was final
        self.done_after: dict[str, float] = {}
        self.workers: HttpWorkers | None = None
        self.reads: ReadFlood | None = None

    @property
    def http(self) -> bool:
        """Whether the daemons serve the HTTP API (either HTTP mode is on)."""
        return bool(self.args.http_workers or self.args.read_flood)

    # ------------------------------------------------------------ processes

    def start_daemon(self) -> DaemonProcess:
        """Start one more daemon (without waiting: the run goes on while it starts)."""
        self.started_count += 1
        port = free_port() if self.http else None
        # The ready event is logged at INFO: with a quieter log level, readiness is the API alone.
        quiet = logging.getLevelName(self.args.log_level.upper()) > logging.INFO
        daemon = DaemonProcess(
            self.cfg, log_path=self.tmp / f"daemon-{self.started_count}.log", env=self.env, cwd=self.tmp,
            options=["--log-level", self.args.log_level], http_port=port,
            topics={Task.topic, EXT} if port else None, ready_event=None if quiet else READY_EVENT,
        )
        daemon.start(wait=False)
        self.daemons.append(daemon)
        if port:
            self.endpoints.add(port)
        return daemon

    def kill_one(self, index: int) -> None:
        victim = self.daemons[index % len(self.daemons)]
        victim.kill()
        if victim.port:
            self.endpoints.remove(victim.port, killed=True)
        pid = victim.pid
        self.killed[pid] = time.time()
        # The process is gone, so its rows are frozen until another node rescues them
        # (rescue_after seconds from now): this is exactly what it left executing.
        left = {r[0] for r in self.query(
            "SELECT id FROM jobrunner_jobs WHERE state = 'executing' AND attempted_by LIKE ?", (f"%:{pid}:%",)
        )}
        self.left_executing[pid] = left
        self.daemons.remove(victim)
        self.retired.append(victim)
        replacement = self.start_daemon()
        log(f"kill -9 {pid}: it left {len(left)} job(s) executing; started {replacement.pid}")

    def stop_all(self) -> list[int | None]:
        for daemon in self.daemons:
            if daemon.port:
                self.endpoints.remove(daemon.port)
        return stop_all(self.daemons, timeout=120)

    def cleanup(self) -> None:
        self.stop_http_load()
        for daemon in self.daemons:
            daemon.kill()
        self.runner.store.close()

    # ------------------------------------------------------------ the tables

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as conn:
            return conn.execute(sql, params).fetchall()

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Jobs per state, and jobs not final yet per topic."""
        states: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        counted = self.query("SELECT topic, state, count(*) FROM jobrunner_jobs GROUP BY topic, state")
        for topic, state, count in counted:
            states[state] += count
            pending[topic] += count if state in NON_FINAL else 0
        return states, pending

    def file_sizes(self) -> tuple[int, int]:
        def size(path: Path) -> int:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return 0
        return size(self.db), size(Path(str(self.db) + "-wal"))

    # ------------------------------------------------------------ jobs

    def job_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"log": str(self.exec_log)}
        if self.args.fail_rate:
            args["fail_p"] = self.args.fail_rate
        if self.rng.random() < self.args.slow_rate:
            args["sleep"] = round(self.rng.uniform(0.01, 0.2), 3)
        return args

    def enqueue(self, count: int) -> None:
        batch = [(Task, self.job_args()) for _ in range(count)]
        self.enqueued.extend(job.id for job in self.runner.enqueue_many(batch))

    def enqueue_external(self, count: int) -> None:
        options = {"topic": EXT, "max_attempts": Task.max_attempts}
        for start in range(0, count, 10_000):
            batch = [("soak.external", {"n": n}, options) for n in range(start, min(count, start + 10_000))]
            self.ext_ids.extend(job.id for job in self.runner.enqueue_many(batch))

    def start_http_load(self) -> None:
        args = self.args
        if self.http:
            for daemon in self.daemons:
                daemon.wait_ready(timeout=60)
            self.endpoints.promote()
        if args.http_workers:
            self.workers = HttpWorkers(self.endpoints, args.http_workers, self.db, args)
            self.workers.start()
        if args.read_flood:
            self.reads = ReadFlood(self.endpoints, args.read_flood, self.enqueued + self.ext_ids, seed=args.seed,
                                   missing_ok=args.prune)
            self.reads.start()

    def stop_http_load(self) -> None:
        for helper in (self.workers, self.reads):
            if helper is not None:
                helper.stop()

    # ------------------------------------------------------------ the run

    def run(self) -> int:
        args = self.args
        t0 = time.monotonic()
        if not args.prune:
            for start in range(0, args.jobs, 10_000):
                self.enqueue(min(10_000, args.jobs - start))
            log(f"enqueued {args.jobs} jobs in {time.monotonic() - t0:.1f}s")
        else:
            self.enqueue(min(args.batch, args.jobs))
        if args.http_workers:
            self.enqueue_external(args.http_jobs)
            log(f"enqueued {args.http_jobs} jobs for the external topic")

        started = time.monotonic()
        for _ in range(args.processes):
            self.start_daemon()
        self.start_http_load()
        total = args.jobs + len(self.ext_ids)
        kill_points = [total * (k + 1) / (args.kills + 1) for k in range(args.kills)]
        kills_done = 0
        finished = 0
        next_report = next_sample = time.monotonic()
        deadline = started + args.timeout
        while True:
            counts, pending_per_topic = self.counts()
            final = counts["completed"] + counts["discarded"] + counts["cancelled"]
            pending = sum(counts[s] for s in NON_FINAL)
            if args.prune:
                finished = len(self.enqueued) + len(self.ext_ids) - pending
                if len(self.enqueued) < args.jobs and pending < args.batch:
                    self.enqueue(min(args.batch, args.jobs - len(self.enqueued)))
                    continue
            else:
                finished = final
            self.endpoints.promote()
            now = time.monotonic()
            for topic, left in pending_per_topic.items():
                if not left and (topic != Task.topic or len(self.enqueued) == args.jobs):
                    self.done_after.setdefault(topic, now - started)
            if now >= next_sample:
                db_size, wal_size = self.file_sizes()
                self.size_samples.append((now - started, db_size, wal_size))
                next_sample = now + args.sample_every
            if kills_done < args.kills and finished >= kill_points[kills_done]:
                self.kill_one(kills_done)
                kills_done += 1
            if len(self.enqueued) == args.jobs and pending == 0:
                break
            for daemon in self.daemons:
                if daemon.returncode is not None:
                    log(f"daemon {daemon.pid} exited with {daemon.returncode}:\n{daemon.output_tail(3000)}")
                    return 1
            if now > deadline:
                log(f"timed out after {args.timeout}s: {dict(counts)}")
                return 1
            if now >= next_report:
                elapsed = now - started
                log(f"{finished}/{total} final after {elapsed:.0f}s ({finished / max(elapsed, 1e-9):.0f}/s); "
                    f"states {dict(counts)}; db+wal {sum(self.file_sizes()) / 1e6:.1f} MB")
                next_report = now + 5
            time.sleep(0.2)
        wall = time.monotonic() - started
        db_size, wal_size = self.file_sizes()
        self.size_samples.append((wall, db_size, wal_size))
        self.stop_http_load()
        codes = self.stop_all()
        log(f"all final after {wall:.1f}s; daemons stopped with {codes}")
        return self.check(wall, codes, kills_done)

    # ------------------------------------------------------------ invariants

    def check(self, wall: float, codes: list[int | None], kills_done: int) -> int:
        problems: list[str] = []
        args = self.args
        if codes != [0] * len(codes):
            problems.append(f"daemons exited with {codes}")
        for daemon in [*self.retired, *self.daemons]:
            text = daemon.output()
            for needle in ("Traceback", "database is locked"):
                if needle in text:
                    problems.append(f"{daemon.log_path.name} (pid {daemon.pid}): {text.count(needle)}x {needle!r}")

        rows: dict[int, dict[str, Any]] = {}
        ext_rows: dict[int, dict[str, Any]] = {}
        with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as conn:
            conn.row_factory = sqlite3.Row
            columns = "id, topic, state, attempt, max_attempts, errors, result"
            for row in conn.execute(f"SELECT {columns} FROM jobrunner_jobs"):
                (ext_rows if row["topic"] == EXT else rows)[row["id"]] = dict(row)
        executions: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for e in rw.read_log(self.exec_log):
            executions[e["job_id"]].append(e)

        states = Counter(r["state"] for r in rows.values())
        if not args.prune and len(rows) != args.jobs:
            problems.append(f"{len(rows)} jobs in the table, {args.jobs} enqueued")
        if set(rows) - set(self.enqueued):
            problems.append(f"unexpected job ids in the table: {sorted(set(rows) - set(self.enqueued))[:10]}")
        for state in NON_FINAL:
            if states[state]:
                problems.append(f"{states[state]} job(s) still {state}")
        rescued: set[int] = set()
        for job_id, row in rows.items():
            if row["attempt"] > row["max_attempts"]:
                problems.append(f"job {job_id}: attempt {row['attempt']} > max_attempts {row['max_attempts']}")
            if any("died" in (e.get("error") or "") for e in json.loads(row["errors"])):
                rescued.add(job_id)
        left = set().union(*self.left_executing.values()) if self.left_executing else set()
        kept_left = {j for j in left if j in rows}
        if rescued != kept_left:
            problems.append(
                f"rescued jobs differ from those left executing by killed processes: "
                f"rescued but not left {sorted(rescued - kept_left)[:10]}, "
                f"left but not rescued {sorted(kept_left - rescued)[:10]}"
            )

        double = overlaps = unfinished = missing = 0
        killed_ok = 0
        for job_id in self.enqueued:
            runs = sorted(executions.get(job_id, []), key=lambda e: e["started"])
            row = rows.get(job_id)
            job_state = row["state"] if row else None
            ok = [e for e in runs if e["outcome"] == "ok"]
            # A successful execution whose outcome was never written: its process was
            # killed after perform returned, the job was left executing and rescued.
            lost = [e for e in ok if job_id in self.left_executing.get(e["pid"], ())]
            killed_ok += len(lost)
            acked = [e for e in ok if e not in lost]
            if job_state == "completed" or (row is None and acked):
                if len(acked) != 1:
                    double += 1
                    if double <= 5:
                        problems.append(f"job {job_id}: {len(acked)} acknowledged successful executions: {ok}")
            elif acked:
                problems.append(f"job {job_id} is {job_state} but has a successful execution: {acked}")
            if row is None:
                # Pruned: its executions must show a final outcome.
                last = runs[-1] if runs else None
                done = last is not None and (
                    last["outcome"] == "ok"
                    or (last["outcome"] == "failed" and last["attempt"] >= Task.max_attempts)
                    or (last["outcome"] is None and last["pid"] in self.killed and last["attempt"] >= Task.max_attempts)
                )
                if not done:
                    missing += 1
                    if missing <= 5:
                        problems.append(f"job {job_id} is gone from the table without a final execution: {runs[-2:]}")
            for e in runs:
                # Only an execution cut short by a kill may lack its end, and then its job
                # was left executing by the killed process.
                if e["outcome"] is None and job_id not in self.left_executing.get(e["pid"], ()):
                    unfinished += 1
                    if unfinished <= 5:
                        problems.append(f"job {job_id}: execution {e} never recorded its end, and its process "
                                        f"{'was killed later' if e['pid'] in self.killed else 'was not killed'}")
            for a, b in itertools.pairwise(runs):
                end = a["ended"] if a["ended"] is not None else self.killed.get(a["pid"], float("inf"))
                if end > b["started"] + 1e-3:
                    overlaps += 1
                    if overlaps <= 5:
                        problems.append(f"job {job_id}: executions overlap: {a} and {b}")
        if double > 5:
            problems.append(f"... {double} jobs completed more than once in all")
        if unfinished > 5:
            problems.append(f"... {unfinished} executions without an end in all")
        if overlaps > 5:
            problems.append(f"... {overlaps} overlapping execution pairs in all")

        all_runs = [e for runs in executions.values() for e in runs]
        outcomes = Counter(e["outcome"] for e in all_runs)
        per_pid = Counter(e["pid"] for e in all_runs)
        db_size, wal_size = self.file_sizes()
        figures = {
            "jobs": args.jobs, "processes": args.processes, "kills": kills_done, "fail_rate": args.fail_rate,
            "wall_s": round(wall, 1), "jobs_per_s": round(args.jobs / self.done_after.get(Task.topic, wall), 1),
            "completed": states["completed"], "discarded": states["discarded"],
            "pruned": len(self.enqueued) - len(rows),
            "rescued": len(rescued), "left_executing_by_kills": len(left),
            "executions": len(all_runs), "failed_executions": outcomes["failed"],
            "killed_executions": outcomes[None], "completed_by_killed_process_before_ack": killed_ok,
            "db_bytes": db_size, "wal_bytes": wal_size,
            "exec_log_bytes": sum(f.stat().st_size for f in self.exec_log.iterdir()),
            "executions_per_process": dict(per_pid),
        }
        if self.workers is not None:
            found, http_figures = self.workers.check(ext_rows, self.ext_ids, args.http_parallelism, args.prune)
            problems.extend(found)
            figures.update(http_figures, http_jobs_per_s=round(len(self.ext_ids) / self.done_after.get(EXT, wall), 1),
                           all_jobs_per_s=round((args.jobs + len(self.ext_ids)) / wall, 1),
                           final_after_s={t: round(v, 1) for t, v in self.done_after.items()})
        if self.reads is not None:
            problems.extend(self.reads.problems())
            figures.update(self.reads.figures())
        if args.prune:
            samples = self.size_samples
            half = samples[len(samples) // 2:]
            first = samples[: max(1, len(samples) // 2)]
            peak_first = max(s[1] for s in first)
            peak_second = max(s[1] for s in half)
            figures["size_samples"] = " ".join(f"{t:.0f}s:{d / 1e6:.2f}+{w / 1e6:.2f}MB" for t, d, w in samples)
            figures["db_peak_first_half_mb"] = round(peak_first / 1e6, 2)
            figures["db_peak_second_half_mb"] = round(peak_second / 1e6, 2)
            if peak_second > 1.25 * peak_first:
                problems.append(f"database file kept growing with pruning on: peak {peak_first / 1e6:.1f} MB in the "
                                f"first half, {peak_second / 1e6:.1f} MB in the second")
        print(json.dumps(figures, indent=2))
        if problems:
            print("INVARIANTS VIOLATED:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print("all invariants hold", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2, help="kill -9 one daemon (and restart it) this many times")
    parser.add_argument("--fail-rate", type=float, default=0.1,
                        help="probability that an attempt fails (max_attempts 3)")
    parser.add_argument("--slow-rate", type=float, default=0.02, help="fraction of jobs sleeping 10-200 ms")
    parser.add_argument("--parallelism", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--rescue-after", type=float, default=5.0)
    parser.add_argument("--prune", action="store_true", help="prune finished jobs after 2 s; feed jobs in batches")
    parser.add_argument("--batch", type=int, default=2000, help="with --prune: jobs per enqueue batch")
    parser.add_argument("--sample-every", type=float, default=3.0, help="seconds between file size samples")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="INFO", help="the daemons' log level")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    soak_client.add_http_arguments(parser)
    args = parser.parse_args(argv)
    if args.processes < 1 or args.jobs < 1 or args.kills < 0:
        parser.error("--jobs and --processes must be >= 1, --kills >= 0")
    soak_client.check_http_arguments(parser, args)

    tmp = Path(tempfile.mkdtemp(prefix="jobrunner-soak-"))
    log(f"working in {tmp}")
    soak = Soak(args, tmp)
    status = 1
    try:
        status = soak.run()
    finally:
        soak.cleanup()
        if args.keep or status != 0:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
