"""Workflows: a graph of jobs that depend on each other, stored in one transaction.

Example (fan-out from ``fetch`` to two steps, fan-in to ``report``)::

    flow = Workflow()
    flow.add("fetch", Fetch, {"url": "https://example.com"})
    flow.add("words", CountWords, depends_on=["fetch"])
    flow.add("links", CountLinks, depends_on=["fetch"])
    flow.add("report", Report, depends_on=["words", "links"])
    jobs = runner.enqueue_workflow(flow)        # {"fetch": Job, "words": Job, ...}

A step depends on other steps by name, and may also depend on jobs already stored
(a :class:`~jobrunner.Job` or its id). Steps may be added in any order; a cycle or a
name no step has is refused with EnqueueError before anything is stored.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .enqueue import build_row
from .errors import EnqueueError
from .job import Job
from .storage.records import NewJob
from .worker import Worker


@dataclass(frozen=True, slots=True)
class _Step:
    worker: type[Worker] | str
    args: Any
    after: tuple[str, ...]
    stored: tuple[Job | int, ...]
    options: dict[str, Any]


class Workflow:
    """A named set of jobs and the dependencies between them (see the module docstring)."""

    def __init__(self) -> None:
        self._steps: dict[str, _Step] = {}
        self._order: list[str] = []

    def add(
        self,
        name: str,
        worker: type[Worker] | str,
        args: Any = None,
        *,
        depends_on: Iterable[str | Job | int] = (),
        **options: Any,
    ) -> str:
        """Add step ``name``: a job of ``worker`` with ``args`` that runs after every step
        (named by a string) and stored job (a Job or an id) in ``depends_on``. ``options``
        are the keyword arguments of :meth:`Runner.enqueue` (``priority``, ``delay``,
        ``tags``, ``meta``, ``unique``, ``on_dependency_failure``, …). Returns ``name``."""
        if not isinstance(name, str) or not name:
            raise EnqueueError(f"a workflow step needs a non-empty name, got {name!r}")
        if name in self._steps:
            raise EnqueueError(f"the workflow already has a step named {name!r}")
        if isinstance(depends_on, (str, Job, int)):
            raise EnqueueError(f"depends_on of step {name!r} must be a list, got {depends_on!r}")
        if "depends_on" in options:  # pragma: no cover - a keyword given twice is a TypeError first
            raise EnqueueError("depends_on is given once")
        after = tuple(dict.fromkeys(d for d in depends_on if isinstance(d, str)))
        stored = tuple(d for d in depends_on if not isinstance(d, str))
        self._steps[name] = _Step(worker, args, after, stored, options)
        return name

    def order(self) -> list[str]:
        """The step names, each after every step it depends on; EnqueueError for an unknown
        step name or a cycle."""
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for name, step in self._steps.items():
            for before in step.after:
                if before not in self._steps:
                    raise EnqueueError(f"step {name!r} of the workflow depends on {before!r}, which is no step of it")
            sorter.add(name, *step.after)
        try:
            return list(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            raise EnqueueError(f"the workflow's dependencies form a cycle: {' -> '.join(reversed(cycle))}") from None

    def rows(self, settings: Settings, now: float) -> list[NewJob]:
        """The rows to store, in dependency order (see :func:`jobrunner.enqueue.build_row`)."""
        if not self._steps:
            raise EnqueueError("the workflow has no steps")
        self._order = self.order()
        index = {name: i for i, name in enumerate(self._order)}
        rows = []
        for name in self._order:
            step = self._steps[name]
            options = {**step.options, "depends_on": list(step.stored) or None}
            try:
                row = build_row(settings, step.worker, step.args, options, now)
            except EnqueueError as exc:
                raise EnqueueError(f"step {name!r}: {exc}") from None
            if step.after:
                row = row._replace(depends_on_rows=tuple(index[before] for before in step.after),
                                   on_failure=options.get("on_dependency_failure") or "cancel")
            rows.append(row)
        return rows

    def jobs(self, stored: Sequence[Job]) -> dict[str, Job]:
        """The stored jobs (in the order :meth:`rows` gave) by step name."""
        return dict(zip(self._order, stored, strict=True))


__all__ = ["Workflow"]
