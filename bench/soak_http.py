"""External workers for ``bench/soak.py --http-workers N``: an external topic worked
through the daemons' HTTP API while daemons are killed, and the checks of what they did.

Each worker thread claims a job of topic ``ext`` from a random live daemon (short
lease), then, by chance: completes it (most), fails it, extends its lease before
completing, abandons it (never concludes: the lease must expire and the job come back
with its attempt counted) or comes back *stale* (completes with its token after the
lease ran out: 409 expected). A request that fails at the connection level (its daemon
was killed) is retried on another daemon with the same token. Everything each worker
saw is kept (client clock, which is the daemons' clock: same machine) and checked
against the table at the end by :meth:`HttpWorkers.check` (with ``--prune``, a job
deleted before the end is checked only through what the workers saw).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak_client import Client, Endpoints, epoch, percentile

TOPIC = "ext"
TOKEN_HEADER = "X-Jobrunner-Lease-Token"
EXPIRED = "expired before the job was concluded"
FAILURE = "soak failure"
ACTIONS = ("abandon", "stale", "fail", "extend", "complete")


@dataclass
class Held:
    """One lease a worker got: the job's attempt, and the latest expiry it was told."""

    job_id: int
    attempt: int
    token: str
    worker: str
    received: float  # when the claim's answer came: the lease was taken before
    expires: float
    action: str


@dataclass(frozen=True)
class Call:
    """A complete, fail or extend request that got an answer."""

    job_id: int
    attempt: int
    kind: str
    status: int
    sent: float
    received: float
    expires: float  # the latest expiry the worker knew when it sent the request
    worker: str
    after_failure: bool  # an earlier try of this request failed at the connection level


@dataclass
class WorkerLog:
    """What one worker thread did."""

    held: list[Held] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    #: requests that failed at the connection level: (job id, attempt, kind, sent)
    lost: list[tuple[int, int, str, float]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    #: connections that failed after a request was sent: (port, exception type)
    failures: list[tuple[int, str]] = field(default_factory=list)
    refused: int = 0
    #: seconds from sending to the answer, per request kind
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


class HttpWorkers:
    """``count`` external worker threads plus a sampler of the topic's executing jobs."""

    def __init__(self, endpoints: Endpoints, count: int, db: Path, args: argparse.Namespace) -> None:
        self.endpoints = endpoints
        self.db = db
        self.lease = args.lease
        self.wait = 1.0
        self.rates = {"abandon": args.abandon_rate, "stale": args.stale_rate, "fail": args.http_fail_rate,
                      "extend": args.extend_rate}
        self.seed = args.seed
        #: with --prune a late conclusion may find its job deleted already (404)
        self.answers = (200, 409, 404) if args.prune else (200, 409)
        self.stopping = threading.Event()
        self.logs = [WorkerLog() for _ in range(count)]
        self.threads = [threading.Thread(target=self._work, args=(i,), name=f"soak-w{i}", daemon=True)
                        for i in range(count)]
        self.threads.append(threading.Thread(target=self._sample, name="soak-sampler", daemon=True))
        #: the most jobs of the topic seen executing at once, and leases held at once
        self.max_executing = self.max_leases = 0
        self.samples = 0

    def start(self) -> None:
        """Start the workers and the sampler."""
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop (every job is final by now) and wait for the threads."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)

    # ------------------------------------------------------------ the workers

    def _choose(self, rng: random.Random) -> str:
        roll = rng.random()
        for action in ACTIONS[:-1]:
            roll -= self.rates[action]
            if roll < 0:
                return action
        return "complete"

    def _work(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        client = Client(self.endpoints, rng)
        log = self.logs[index]
        name = f"soak-w{index}"
        path = f"/topics/{TOPIC}/claim?wait={self.wait}&lease={self.lease}"
        try:
            while not self.stopping.is_set():
                reply = client.call("POST", path, headers={"X-Jobrunner-Worker": name})
                if reply is None:
                    log.counts["claim_lost"] += 1
                    continue
                log.latency["claim"].append(reply.received - reply.sent)
                if reply.status == 204:
                    log.counts["claim_empty"] += 1
                    continue
                if reply.status != 200:
                    log.unexpected.append(f"claim: {reply.status} {reply.body[:200]!r}")
                    continue
                data = reply.json()
                expires = epoch(data["lease_expires_at"])
                held = Held(data["job"]["id"], data["job"]["attempt"], data["lease_token"], name,
                            reply.received, expires, self._choose(rng))
                log.held.append(held)
                log.counts[held.action] += 1
                self._handle(client, log, held, rng)
        finally:
            log.failures = client.failures
            log.refused = client.refused
            client.close()

    def _handle(self, client: Client, log: WorkerLog, held: Held, rng: random.Random) -> None:
        if held.action == "abandon":
            return
        # A stale worker comes back well past the expiry, after the lease sweep (every poll interval).
        if held.action == "stale" and self.stopping.wait(max(0.0, held.expires + 1.0 - time.time())):
            return
        if held.action == "extend":
            self.stopping.wait(rng.uniform(0.1, 0.4) * self.lease)
            reply = self._send(client, log, held, "extend", {"seconds": self.lease})
            if reply is not None and reply.status == 200:
                held.expires = epoch(reply.json()["lease_expires_at"])
            self.stopping.wait(rng.uniform(0.1, 0.4) * self.lease)
        if held.action == "fail":
            self._send(client, log, held, "fail", {"error": f"{FAILURE} of {held.worker} on attempt {held.attempt}"})
        else:
            self._send(client, log, held, "complete", {"result": {"worker": held.worker, "attempt": held.attempt}})

    def _send(self, client: Client, log: WorkerLog, held: Held, kind: str, body: dict[str, Any]) -> Any:
        """Send until a daemon answers (a killed one may have applied it: same token again)."""
        failed = False
        avoid = None
        give_up = time.time() + 120
        while True:
            sent = time.time()
            reply = client.call("POST", f"/jobs/{held.job_id}/{kind}", body, {TOKEN_HEADER: held.token}, avoid)
            if reply is not None:
                break
            failed = True
            avoid = client.last_port
            log.lost.append((held.job_id, held.attempt, kind, sent))
            if time.time() > give_up:
                log.unexpected.append(f"{kind} of job {held.job_id}: no daemon answered for 120 s")
                return None
        log.latency[kind].append(reply.received - reply.sent)
        log.calls.append(Call(held.job_id, held.attempt, kind, reply.status, reply.sent, reply.received,
                              held.expires, held.worker, failed))
        if reply.status not in self.answers:
            log.unexpected.append(f"{kind} of job {held.job_id}: {reply.status} {reply.body[:200]!r}")
        return reply

    def _sample(self) -> None:
        query = ("SELECT (SELECT count(*) FROM jobrunner_jobs WHERE topic = ? AND state = 'executing'), "
                 "(SELECT count(*) FROM jobrunner_leases)")
        with contextlib.closing(sqlite3.connect(self.db, timeout=60)) as conn:
            while not self.stopping.wait(0.05):
                executing, leases = conn.execute(query, (TOPIC,)).fetchone()
                self.max_executing = max(self.max_executing, executing)
                self.max_leases = max(self.max_leases, leases)
                self.samples += 1

    # ------------------------------------------------------------ the checks

    def check(self, rows: dict[int, dict[str, Any]], enqueued: list[int], parallelism: int,
              pruned_ok: bool) -> tuple[list[str], dict[str, Any]]:
        """Problems found and figures, given the table's rows of the topic (id → row)."""
        problems: list[str] = []
        held = [h for log in self.logs for h in log.held]
        calls = [c for log in self.logs for c in log.calls]
        lost = [x for log in self.logs for x in log.lost]
        counts = sum((log.counts for log in self.logs), Counter())
        for log in self.logs:
            problems.extend(f"unexpected answer: {u}" for u in log.unexpected[:5])

        leases: dict[tuple[int, int], list[Held]] = defaultdict(list)
        for h in held:
            leases[(h.job_id, h.attempt)].append(h)
        for key, twice in leases.items():
            if len(twice) > 1:
                problems.append(f"job {key[0]} attempt {key[1]} was leased {len(twice)} times")
        concluded: dict[tuple[int, int], list[Call]] = defaultdict(list)
        for c in calls:
            if c.kind != "extend" and c.status == 200:
                concluded[(c.job_id, c.attempt)].append(c)
        for key, conclusions in concluded.items():
            if len(conclusions) > 1:
                problems.append(f"job {key[0]} attempt {key[1]} concluded {len(conclusions)} times: {conclusions}")

        # No job leased again while an earlier lease of it was surely live. (The daemon's
        # own claim time is read before its write waits its turn, so it may be early: the
        # answer's arrival bounds the claim instead.)
        lost_at: dict[tuple[int, int], float] = {}
        lost_sends: dict[tuple[int, int], list[float]] = defaultdict(list)
        for job_id, attempt, kind, sent in lost:
            if kind != "extend":
                lost_sends[(job_id, attempt)].append(sent)
                lost_at[(job_id, attempt)] = min(sent, lost_at.get((job_id, attempt), sent))
        for (job_id, attempt), [h, *_] in leases.items():
            after = leases.get((job_id, attempt + 1))
            if not after:
                continue
            ended = min([h.expires, *(c.sent for c in concluded.get((job_id, attempt), [])),
                         lost_at.get((job_id, attempt), h.expires)])
            if after[0].received < ended:
                problems.append(f"job {job_id}: attempt {attempt + 1} leased by {after[0].received:.3f} while "
                                f"attempt {attempt}'s lease was live until at least {ended:.3f}")

        # Each 409 must follow an expiry the worker could know of, or a try that may have applied.
        late = after_kill = 0
        for c in calls:
            if c.status != 409:
                continue
            if c.received > c.expires:
                late += 1
            elif c.after_failure or any(s < c.sent for s in lost_sends.get((c.job_id, c.attempt), [])):
                after_kill += 1
            else:
                problems.append(f"409 on a live lease: {c}")

        accepted_completes: dict[int, list[Call]] = defaultdict(list)
        for (job_id, _), cs in concluded.items():
            accepted_completes[job_id].extend(c for c in cs if c.kind == "complete")
        expiries: set[tuple[int, int]] = set()
        failures: set[tuple[int, int]] = set()
        states: Counter[str] = Counter()
        lost_answers = 0
        for job_id in enqueued:
            row = rows.get(job_id)
            if row is None:
                states["pruned"] += 1
                if not pruned_ok:
                    problems.append(f"external job {job_id} is missing from the table")
                continue
            states[row["state"]] += 1
            if row["state"] not in ("completed", "discarded"):
                problems.append(f"external job {job_id} is {row['state']}")
            if row["attempt"] > row["max_attempts"]:
                problems.append(f"external job {job_id}: attempt {row['attempt']} > {row['max_attempts']}")
            for entry in json.loads(row["errors"]):
                if EXPIRED in entry["error"]:
                    expiries.add((job_id, entry["attempt"]))
                elif FAILURE in entry["error"]:
                    failures.add((job_id, entry["attempt"]))
            done = [c for c in concluded.get((job_id, row["attempt"]), []) if c.kind == "complete"]
            if row["state"] == "completed":
                result = json.loads(row["result"])
                if done and result != {"worker": done[0].worker, "attempt": done[0].attempt}:
                    problems.append(f"external job {job_id}: result {result} is not the one {done[0]} sent")
                elif not done:
                    lost_answers += 1
                    if (job_id, row["attempt"]) not in lost_at:
                        problems.append(f"external job {job_id} is completed but no complete of attempt "
                                        f"{row['attempt']} was sent")
            completes = accepted_completes.get(job_id)
            if row["state"] != "completed" and completes:
                problems.append(f"external job {job_id} is {row['state']} though a complete was accepted: {completes}")

        for key, cs in concluded.items():
            if key in expiries:
                problems.append(f"job {key[0]} attempt {key[1]} both concluded ({cs[0].kind}) and expired")
            if cs[0].kind == "fail" and key[0] in rows and key not in failures:
                problems.append(f"job {key[0]} attempt {key[1]}: the accepted fail is not in its errors")
        abandoned = {(h.job_id, h.attempt) for h in held if h.action in ("abandon", "stale")} - set(concluded)
        slow = {(c.job_id, c.attempt) for c in calls if c.status == 409 and c.received > c.expires}
        kept = {key for key in abandoned if key[0] in rows}
        if kept - expiries:
            problems.append(f"abandoned leases that never expired (job, attempt): {sorted(kept - expiries)[:10]}")
        unexplained = expiries - abandoned - slow
        if len(unexplained) > counts["claim_lost"]:
            problems.append(f"{len(unexplained)} lease expiries not explained by an abandon, a late conclusion or "
                            f"one of the {counts['claim_lost']} claims whose answer was lost: "
                            f"{sorted(unexplained)[:10]}")
        if self.max_executing > parallelism or self.max_leases > parallelism:
            problems.append(f"topic {TOPIC}: up to {self.max_executing} jobs executing and {self.max_leases} leases "
                            f"held at once, parallelism {parallelism}")

        stale = [c for c in calls if c.kind == "complete" and any(
            h.action == "stale" for h in leases.get((c.job_id, c.attempt), []))]
        failures_at = [f for log in self.logs for f in log.failures]
        figures = {
            "http_jobs": len(enqueued), "http_states": dict(states),
            "claims": len(held), "claims_empty": counts["claim_empty"], "claims_answer_lost": counts["claim_lost"],
            "actions": {a: counts[a] for a in ACTIONS},
            "accepted": dict(Counter(c.kind for c in calls if c.status == 200)),
            "lease_expiries": len(expiries), "expiries_of_abandoned": len(abandoned & expiries),
            "expiries_of_slow_workers": len(slow & expiries), "expiries_unexplained": len(unexplained),
            "conflicts_409": late + after_kill, "409_after_expiry": late, "409_after_lost_answer": after_kill,
            "stale_completes_refused": sum(c.status == 409 for c in stale),
            "stale_completes_accepted_before_sweep": sum(c.status == 200 for c in stale),
            "completed_answer_lost": lost_answers,
            "connection_failures": {
                "killed_daemon": sum(p in self.endpoints.killed for p, _ in failures_at),
                "live_daemon": dict(Counter(e for p, e in failures_at if p not in self.endpoints.killed)),
                "refused": sum(log.refused for log in self.logs)},
            "request_ms_p50_p99": {kind: [round(percentile(v, 0.5) * 1000, 1), round(percentile(v, 0.99) * 1000, 1)]
                                   for kind in ("claim", "extend", "complete", "fail")
                                   for v in [[x for log in self.logs for x in log.latency[kind]]]},
            "max_executing": self.max_executing, "max_leases": self.max_leases, "parallelism": parallelism,
            "samples": self.samples,
        }
        return problems, figures
