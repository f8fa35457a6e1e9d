"""How the suite spreads over pytest-xdist workers: like ``--dist load``, except that the
tests of a few files run on one worker, in order, because they share one session.

``--dist loadfile`` would do that for every file, but it keys the work by node id, and
schemathesis gives the fuzz test's items one node id for all (they would collapse into
one); ``xdist_group`` marks no longer reach the scheduler on pytest 9.2. So this
scheduler keeps ``load``'s index-based hand-out and, whenever it hands out a test of one
of :data:`SEQUENTIAL_FILES`, hands out every pending test of that file with it.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScheduling  # type: ignore[import-untyped]  # pytest-xdist ships no type hints
from xdist.workermanage import WorkerController  # type: ignore[import-untyped]

#: Files whose tests must run in order in one process (a shared session or browser).
SEQUENTIAL_FILES = ("tests/test_readme.py", "tests/test_dashboard_browser.py")


class SequentialFilesScheduling(LoadScheduling):  # type: ignore[misc]  # an Any base: xdist is untyped
    """``--dist load``, with the tests of each of :data:`SEQUENTIAL_FILES` kept together."""

    def _send_tests(self, node: WorkerController, num: int) -> None:
        chosen = self.pending[:num]
        collection = self.collection
        assert collection is not None  # tests are only sent once collected
        for path in SEQUENTIAL_FILES:
            prefix = path + "::"
            if any(collection[i].startswith(prefix) for i in chosen):
                kept = [i for i in chosen if not collection[i].startswith(prefix)]
                chosen = kept + [i for i in self.pending if collection[i].startswith(prefix)]
        if not chosen:
            return
        taken = set(chosen)
        self.pending[:] = [i for i in self.pending if i not in taken]
        self.node2pending[node].extend(chosen)
        node.send_runtest_some(chosen)


def make_scheduler(config: Any, log: Any) -> SequentialFilesScheduling | None:
    """The scheduler for ``--dist load`` (None: xdist's own for the other modes)."""
    if config.getvalue("dist") != "load":
        return None
    return SequentialFilesScheduling(config, log)
