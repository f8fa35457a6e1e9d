"""``python -m jobrunner top``: a live per-topic table in the terminal, read from the database.

No HTTP needed: it reads the jobs table directly (the same census as the dashboard,
plus the jobs finished in the last minute, each from a partial index on its finish
time), once per refresh. Drawn with rich; ``q`` or Ctrl-C quits and gives the terminal
back as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .config import Settings
from .job import ALL_STATES
from .runner import Runner
from .storage.records import Census

#: Seconds of history behind "last minute" figures.
WINDOW = 60.0
#: Column headings of the states, short enough for an 80-column terminal.
HEADINGS = {"blocked": "block", "scheduled": "sched", "available": "avail", "executing": "run", "retryable": "retry",
            "completed": "done", "discarded": "disc", "cancelled": "canc"}


@dataclass(frozen=True)
class Sample:
    """One reading of the table: the census and the outcomes of the last minute."""

    census: Census
    recent: dict[str, dict[str, int]]
    taken: float  # monotonic


class TopView:
    """Reads samples and turns them into the table ``top`` shows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = Runner(settings)
        self.runner.ensure_schema()
        self._previous: Sample | None = None

    def sample(self) -> Sample:
        """Read the table now."""
        now = self.runner.clock()
        insight = self.runner.store.insight
        census = insight.census(list(self.settings.topics), now)
        return Sample(census, insight.recent_outcomes(now - WINDOW), time.monotonic())

    def render(self, sample: Sample, live: bool = True) -> Group:
        """The per-topic table of ``sample`` (rates against the previous sample)."""
        previous, self._previous = self._previous, sample
        census = sample.census
        table = Table(title="jobrunner top", title_justify="left", expand=False, header_style="bold",
                      box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        table.add_column("topic", no_wrap=True)
        for heading in [*(HEADINGS[state] for state in ALL_STATES), "/s now", "/s 1m", "err 1m"]:
            table.add_column(heading, justify="right", min_width=len(heading), no_wrap=True)
        for topic in sorted(census.counts):
            counts = census.counts[topic]
            recent = sample.recent.get(topic, {})
            rate_now = "–"
            if previous is not None and topic in previous.census.counts:
                done = counts["completed"] - previous.census.counts[topic]["completed"]
                seconds = sample.taken - previous.taken
                if done >= 0 and seconds > 0:  # pruning may shrink the count: no figure then
                    rate_now = f"{done / seconds:,.1f}"
            errors = recent.get("failed", 0) + recent.get("discarded", 0)
            paused = topic in census.paused
            table.add_row(
                Text.assemble(topic, (" paused", "bold yellow") if paused else ""),
                *[_count(counts[state], state) for state in ALL_STATES],
                rate_now,
                f"{recent.get('completed', 0) / WINDOW:,.1f}",
                Text(str(errors), style="red" if errors else ""),
            )
        since = census.taken_at - self.settings.runner.rescue_after
        alive = sum(1 for node in census.nodes if node.heartbeat_at >= since)
        footer = Text(("q or Ctrl-C quits · " if live else "") + f"{time.strftime('%H:%M:%S')} · {alive} node(s) "
                      f"alive · {self.settings.database.url}", style="dim", no_wrap=True, overflow="ellipsis")
        return Group(table, footer)

    def close(self) -> None:
        """Close the database connections."""
        self.runner.store.close()


def _count(value: int, state: str) -> Text:
    styles = {"executing": "bold cyan", "retryable": "yellow", "discarded": "red", "completed": "green"}
    return Text(f"{value:,}", style=styles.get(state, "") if value else "dim")


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (keys arrive one at a time, Ctrl-C still interrupts) while
    it is a terminal; yields its descriptor, or None when it is not a terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a key; True when it says quit."""
    if fd is None:
        time.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            key = os.read(fd, 32)
            if not key or key[:1] in (b"q", b"Q", b"\x03", b"\x04"):
                return True
    return False


def cmd_top(settings: Settings, ns: argparse.Namespace) -> int:
    """Show the live per-topic table until q or Ctrl-C (``--once``: print it once)."""
    view = TopView(settings)
    console = Console()
    try:
        if ns.once:
            console.print(view.render(view.sample(), live=False))
            return 0
        with _keys() as fd, Live(view.render(view.sample()), console=console, screen=True,
                                 auto_refresh=False) as live:
            while not _quit_pressed(fd, ns.interval):
                live.update(view.render(view.sample()), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
    return 0


__all__ = ["Sample", "TopView", "cmd_top"]
