"""Storage: every SQL statement jobrunner runs, behind verbs named by state transitions.

Built by composition: one :class:`~.database.Database` (engines, transactions, busy
retries, kept connections) shared by four verb groups — :class:`~.jobs.JobVerbs` (insert,
the claim/ack cycle, reads), :class:`~.operator.OperatorVerbs` (cancel, retry, pause,
prune, control), :class:`~.nodes.NodeVerbs` (heartbeats, rescue) and
:class:`~.leases.LeaseVerbs` (external workers), and :class:`~.cron.CronVerbs` (cron slots). The statements are in
:mod:`.statements`, the differences between SQLite and PostgreSQL in :mod:`.dialects`.
The engine, the HTTP layer and the testing kit use the typed async API,
:class:`~.client.AsyncStorage`; sync code uses :class:`Storage` directly.
"""

from __future__ import annotations

from ..config import DatabaseSettings
from ..errors import StorageError
from .client import AsyncStorage
from .cron import CronVerbs
from .database import Database
from .jobs import JobVerbs
from .leases import LeaseVerbs
from .nodes import NodeVerbs
from .operator import OperatorVerbs
from .records import Ack, ClaimRequest, CycleResult, Lease, NewJob, TopicControl
from .sqlite import ChangeProbe


class Storage:
    """One database and its verb groups: ``jobs``, ``operator``, ``nodes``, ``leases``, ``cron``."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.db = Database(settings)
        self.jobs = JobVerbs(self.db)
        self.operator = OperatorVerbs(self.db)
        self.nodes = NodeVerbs(self.db)
        self.leases = LeaseVerbs(self.db)
        self.cron = CronVerbs(self.db)

    def close(self) -> None:
        """Release every pooled connection."""
        self.db.close()


__all__ = [
    "Ack", "AsyncStorage", "ChangeProbe", "ClaimRequest", "CronVerbs", "CycleResult", "Database", "Lease", "NewJob",
    "Storage", "StorageError", "TopicControl",
]
