"""Which nodes are alive, what they serve and run: ``python -m jobrunner nodes``.

A node is one running ``Runner`` (one daemon process). It registers at start, writes a
heartbeat every ``heartbeat_interval`` and is alive while its last heartbeat is younger
than ``rescue_after``; a node that stopped cleanly removed its row, and the row of a
dead one is deleted by the next rescue pass of any node.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from .job import iso
from .schema import jobs, nodes
from .store import Store


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One live node: its id, when it started, its last heartbeat, its topics and how many
    jobs of each topic it is executing now."""

    node: str
    started_at: float
    heartbeat_at: float
    topics: list[str]
    running: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The node as a JSON object (timestamps ISO 8601, UTC)."""
        return {"node": self.node, "started_at": iso(self.started_at), "heartbeat_at": iso(self.heartbeat_at),
                "topics": self.topics, "running": self.running, "running_total": sum(self.running.values())}


def record_topics(store: Store, node: str, topics: Iterable[str]) -> None:
    """Record the topics ``node`` serves (after its first heartbeat registered it)."""
    names = json.dumps(sorted(topics))
    store._transaction(lambda conn: conn.execute(update(nodes).where(nodes.c.node == node).values(topics=names)))


def _topics(text: str) -> list[str]:
    try:
        found = json.loads(text)
    except ValueError:
        return []
    return [str(name) for name in found] if isinstance(found, list) else []


def live_nodes(store: Store, alive_since: float) -> list[NodeInfo]:
    """Nodes whose last heartbeat is at or after ``alive_since``, oldest first."""
    with store._read() as conn, conn.begin():
        rows = conn.execute(
            select(nodes.c.node, nodes.c.started_at, nodes.c.heartbeat_at, nodes.c.topics)
            .where(nodes.c.heartbeat_at >= alive_since).order_by(nodes.c.started_at, nodes.c.node)
        ).all()
        running: dict[str, dict[str, int]] = {}
        if rows:
            counts = conn.execute(
                select(jobs.c.attempted_by, jobs.c.topic, func.count())
                .where(jobs.c.state == "executing", jobs.c.attempted_by.in_([r.node for r in rows]))
                .group_by(jobs.c.attempted_by, jobs.c.topic)
            )
            for node, topic, count in counts:
                running.setdefault(node, {})[topic] = int(count)
    return [NodeInfo(r.node, r.started_at, r.heartbeat_at, _topics(r.topics), running.get(r.node, {})) for r in rows]


__all__ = ["NodeInfo", "live_nodes", "record_topics"]
