"""Nodes and rescue: heartbeats, the list of live nodes, and putting back the jobs of nodes that died.

Rescue is by heartbeat, never by job age: a job runs as long as its node keeps beating.
Heartbeats are upserts, so the first ones of a node never race.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete

from ..job import Job, JobState, iso
from . import operator_statements as ops, statements as sql
from .database import Database
from .dependencies import settle_on
from .notices import INSERTED, NoticeVerbs
from .records import NodeInfo
from .rows import row_to_job
from .schema import nodes


def put_back(conn: Connection, job: Job, now: float, reason: str) -> Job | None:
    """Return an ``executing`` job whose executor vanished to the queue, in ``conn``'s
    transaction: the attempt stays counted, ``reason`` joins its ``errors``, and it
    becomes ``available`` (``discarded`` after its last attempt). Returns the job as it
    is now, or None when it had already left ``executing`` at that attempt."""
    errors = [*job.errors, {"attempt": job.attempt, "at": iso(now), "error": reason, "traceback": None}]
    values: dict[str, Any] = {"errors": json.dumps(errors)}
    if job.attempt >= job.max_attempts:
        values.update(state=JobState.DISCARDED, discarded_at=now)
    else:
        values.update(state=JobState.AVAILABLE, scheduled_at=now)
    moved = conn.execute(sql.put_back(job, values))
    if moved.rowcount and values["state"] == JobState.DISCARDED:
        settle_on(conn, [job.id], now, row_to_job)
    return job.evolve(**{**values, "errors": errors}) if moved.rowcount else None


def _topics(text: str) -> list[str]:
    """The topic names stored as a JSON list (an unreadable value names none)."""
    try:
        found = json.loads(text)
    except ValueError:
        return []
    return [str(name) for name in found] if isinstance(found, list) else []


class NodeVerbs:
    """Register nodes, keep them alive, and rescue the jobs of dead ones."""

    def __init__(self, db: Database, notices: NoticeVerbs) -> None:
        self.db = db
        self.notices = notices

    def register(self, node: str, now: float, topics: Iterable[str]) -> None:
        """Record that ``node`` is alive at ``now`` and serves ``topics`` (its first heartbeat)."""
        values = {"node": node, "started_at": now, "heartbeat_at": now, "topics": json.dumps(sorted(topics))}
        self.db.transaction(lambda conn: self.db.upsert(conn, nodes, values, ["node"], ["heartbeat_at", "topics"]))

    def heartbeat(self, node: str, now: float) -> None:
        """Record that ``node`` is alive at ``now`` (registering it the first time)."""
        self.db.transaction(lambda conn: self.db.upsert(
            conn, nodes, {"node": node, "started_at": now, "heartbeat_at": now}, ["node"], ["heartbeat_at"]
        ))

    def remove(self, node: str) -> None:
        """Forget ``node`` (it stopped cleanly)."""
        self.db.transaction(lambda conn: conn.execute(delete(nodes).where(nodes.c.node == node)))

    def live(self, alive_since: float) -> list[str]:
        """Nodes whose last heartbeat is at or after ``alive_since``."""
        with self.db.read() as conn, conn.begin():
            return list(conn.scalars(sql.live_nodes(alive_since)))

    def listing(self, alive_since: float) -> list[NodeInfo]:
        """Nodes whose last heartbeat is at or after ``alive_since``, oldest first, with their
        topics and how many jobs of each they are executing."""
        with self.db.read() as conn, conn.begin():
            rows = conn.execute(ops.node_listing(alive_since)).all()
            running: dict[str, dict[str, int]] = {}
            if rows:
                for node, topic, count in conn.execute(ops.running_per_node([r.node for r in rows])):
                    running.setdefault(node, {})[topic] = int(count)
        return [NodeInfo(r.node, r.started_at, r.heartbeat_at, _topics(r.topics), running.get(r.node, {}))
                for r in rows]

    def rescue_orphans(self, now: float, alive_since: float) -> list[Job]:
        """Put back the jobs left ``executing`` by nodes silent since before ``alive_since``.

        Each rescued job keeps its counted attempt and gains an ``errors`` entry saying
        its node died; it becomes ``available`` again, or ``discarded`` when that was its
        last attempt. Dead nodes' rows are deleted. Jobs held under a lease are left to
        lease expiry. Returns the rescued jobs as they are now.
        """
        def body(conn: Connection) -> list[Job]:
            rescued = []
            for row in conn.execute(sql.orphans(alive_since)).all():
                job = row_to_job(row)
                reason = f"node {job.attempted_by} died while the job was executing (no heartbeat)"
                moved = put_back(conn, job, now, reason)
                if moved is not None:
                    rescued.append(moved)
            conn.execute(sql.forget_nodes(alive_since))
            # Other nodes may start them at once too (delivered at commit).
            self.notices.send(conn, INSERTED, {job.topic for job in rescued if job.state == JobState.AVAILABLE})
            return rescued
        return self.db.transaction(body)


__all__ = ["NodeVerbs", "put_back"]
