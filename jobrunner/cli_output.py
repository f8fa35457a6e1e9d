"""What the commands of ``python -m jobrunner`` print on stdout: the tables and one-line
forms of jobs, counts, nodes, cron schedules and events, or one JSON document (``--json``).

Printing only: the commands that read what is printed are in :mod:`jobrunner.commands`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .job import ALL_STATES, Job, iso
from .storage.records import NodeInfo


def print_stats(counts: dict[str, dict[str, int]], as_json: bool) -> None:
    """Job counts per topic and state, one row per topic."""
    if as_json:
        print(json.dumps({"topics": counts}))
        return
    width = max([len("topic"), *map(len, counts)])
    print("topic".ljust(width) + "".join(f"{s:>11}" for s in ALL_STATES))
    for topic, by_state in sorted(counts.items()):
        print(topic.ljust(width) + "".join(f"{by_state[s]:>11}" for s in ALL_STATES))


def job_line(job: Job) -> str:
    """One job in one line: id, topic, state, priority, attempts, when, worker."""
    when = iso(job.completed_at or job.discarded_at or job.cancelled_at or job.scheduled_at) or ""
    return (f"{job.id:>8}  {job.topic:<12} {job.state:<10} p{job.priority} "
            f"{job.attempt}/{job.max_attempts:<3} {when[:19]:<19}  {job.worker}")


def print_jobs(found: Sequence[Job], as_json: bool) -> None:
    """A list of jobs, one line each under a heading."""
    if as_json:
        print(json.dumps({"jobs": [j.to_dict() for j in found]}))
        return
    print(f"{'id':>8}  {'topic':<12} {'state':<10} pri att   {'when (UTC)':<19}  worker")
    for job in found:
        print(job_line(job))


def print_job(job: Job, data: dict[str, Any], as_json: bool) -> None:
    """One job in full: ``data`` is the job as JSON, with its ``depends_on`` and
    ``dependents`` links unless ``as_json``; then each failed attempt and its traceback."""
    if as_json:
        print(json.dumps(data))
        return
    for key, value in data.items():
        if key in ("errors", "depends_on", "dependents"):
            continue
        print(f"{key:>13}: {json.dumps(value) if key in ('args', 'result', 'tags', 'meta') else value}")
    for key, label in (("depends_on", "depends on"), ("dependents", "dependents")):
        print(f"{label:>13}: " + (", ".join(link_text(link) for link in data[key]) or "-"))
    for entry in job.errors:
        print(f"\n-- attempt {entry.get('attempt')} at {entry.get('at')}: {entry.get('error')}")
        if entry.get("note"):
            print(f"   note: {entry['note']}")
        if entry.get("traceback"):
            print(entry["traceback"].rstrip())


def link_text(link: dict[str, Any]) -> str:
    """A dependency or dependent: its id and state (and whether it runs on failure)."""
    text = f"{link['id']} ({link['state'] or 'pruned'})"
    return text + (" run on failure" if link.get("on_failure") == "run" else "")


def print_schedules(described: Sequence[dict[str, Any]], as_json: bool) -> None:
    """The cron schedules: worker, expression, next runs and the last job each inserted."""
    if as_json:
        print(json.dumps({"schedules": described}))
        return
    if not described:
        print("no cron schedules (add [[cron]] entries to the configuration, or `cron` to a Worker)")
    for entry in described:
        last = entry["last"]
        print(f"{entry['name']}")
        print(f"  worker:   {entry['worker']} {json.dumps(entry['args'])}")
        print(f"  schedule: {entry['schedule']} ({entry['timezone']}, missed = {entry['missed']})")
        print(f"  next:     {', '.join(entry['next']) or 'never'}")
        if last is None:
            print("  last:     none yet")
        else:
            job = f"job {last['job_id']} ({last['state']})" if last["job_id"] is not None else "job pruned"
            print(f"  last:     {last['slot']}: {job}")


def print_nodes(found: Sequence[NodeInfo], now: float, as_json: bool) -> None:
    """The live nodes: running jobs, seconds since the last heartbeat, topics."""
    if as_json:
        print(json.dumps({"nodes": [info.as_json() for info in found]}))
        return
    if not found:
        print("no live nodes")
        return
    width = max(len("node"), *(len(info.node) for info in found))
    print(f"{'node'.ljust(width)}  {'running':>7}  {'heartbeat':>9}  topics")
    for info in found:
        print(f"{info.node.ljust(width)}  {sum(info.running.values()):>7}  {now - info.heartbeat_at:>8.1f}s  "
              + ", ".join(f"{t}({info.running.get(t, 0)})" for t in info.topics))


def event_line(data: dict[str, Any]) -> str:
    """One event of the daemon's stream (``GET /events``) in one line of key=value pairs."""
    job = data.get("job")
    sender_kind = "node" if str(data.get("event")).startswith("runner_") else "topic"
    parts = [data.get("event", "?"), f"{sender_kind}={data.get('sender')}"]
    if isinstance(job, dict):
        parts += [f"id={job.get('id')}", f"state={job.get('state')}", f"worker={job.get('worker')}",
                  f"attempt={job.get('attempt')}/{job.get('max_attempts')}"]
    for key, value in data.items():
        if key not in ("event", "sender", "job") and value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


__all__ = [
    "event_line", "job_line", "link_text", "print_job", "print_jobs", "print_nodes", "print_schedules", "print_stats",
]
