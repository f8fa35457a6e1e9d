"""Storage: every SQL statement jobrunner runs, behind verbs named by state transitions.

Built by composition: one :class:`~.database.Database` (engines, transactions, busy
retries, kept connections) shared by its verb groups — :class:`~.jobs.JobVerbs` (insert,
the claim/ack cycle, reads), :class:`~.operator.OperatorVerbs` (cancel, retry, pause,
prune, control), :class:`~.nodes.NodeVerbs` (heartbeats, rescue, the node list),
:class:`~.leases.LeaseVerbs` (external workers), :class:`~.cron.CronVerbs` (cron slots),
:class:`~.notices.NoticeVerbs` (telling every node that a change committed, where the
database can), :class:`~.scheduling.SchedulingVerbs` (unique jobs, dependencies,
progress) and :class:`~.insight.InsightVerbs` (the census, recent outcomes and job
summaries of the dashboard, ``/metrics`` and ``top``). The statements are in
:mod:`.statements` (the claim path) and :mod:`.operator_statements` (looking and operator
actions), a row as a Job in :mod:`.rows`, the differences between SQLite and PostgreSQL in
:mod:`.dialects`.
The engine, the HTTP layer and the testing kit use the typed async API,
:class:`~.client.AsyncStorage`; sync code uses :class:`Storage` directly.
"""

from __future__ import annotations

from ..config import DatabaseSettings
from ..errors import StorageError
from .client import AsyncStorage
from .cron import CronVerbs
from .database import Database
from .insight import InsightVerbs
from .jobs import JobVerbs
from .leases import LeaseVerbs
from .nodes import NodeVerbs
from .notices import CONTROL, INSERTED, NoticeVerbs
from .operator import OperatorVerbs
from .records import Ack, Census, ClaimRequest, CycleResult, Lease, NewJob, NodeInfo, NodeRow, TopicControl
from .scheduling import Link, SchedulingVerbs
from .sqlite import ChangeProbe


class Storage:
    """One database and its verb groups: ``jobs``, ``operator``, ``nodes``, ``leases``, ``cron``,
    ``notices``, ``scheduling`` (unique and linked inserts, dependencies, progress), ``insight``
    (reads for looking: census, recent outcomes, job summaries)."""

    def __init__(self, settings: DatabaseSettings, client_name: str = "jobrunner") -> None:
        self.db = Database(settings, client_name)
        self.notices = NoticeVerbs(self.db)
        self.scheduling = SchedulingVerbs(self.db, self.notices)
        self.jobs = JobVerbs(self.db, self.notices, self.scheduling)
        self.operator = OperatorVerbs(self.db, self.notices, self.scheduling)
        self.nodes = NodeVerbs(self.db, self.notices)
        self.leases = LeaseVerbs(self.db)
        self.cron = CronVerbs(self.db, self.notices)
        self.insight = InsightVerbs(self.db)

    def close(self) -> None:
        """Release every pooled connection."""
        self.db.close()


__all__ = [
    "CONTROL", "INSERTED", "Ack", "AsyncStorage", "Census", "ChangeProbe", "ClaimRequest", "CronVerbs", "CycleResult",
    "Database", "InsightVerbs", "Lease", "Link", "NewJob", "NodeInfo", "NodeRow", "NoticeVerbs", "SchedulingVerbs",
    "Storage", "StorageError", "TopicControl",
]
