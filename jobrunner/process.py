"""Jobs that hand back a running OS process.

``perform`` may start a process and return ``ExternalProcess(process)``, or the process
object itself (``anyio.abc.Process``, ``subprocess.Popen``): the job keeps
its parallelism slot until the process exits; exit code 0 completes it, any other
code fails it with the code and the tail of stderr. Timeouts, cancellation and
shutdown terminate the whole process group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from .errors import ProcessFailed

STDERR_TAIL = 4000


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """How an external process ended: its exit code and the tail of its stderr."""

    exit_code: int | None
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        """True when the process exited with code 0 (or its code is unknowable)."""
        return self.exit_code in (0, None)


@dataclass(slots=True)
class ExternalProcess:
    """Returned by ``perform``: the job lasts until this process exits.

    ``process`` is an ``anyio.abc.Process`` (from ``anyio.open_process``), a
    ``subprocess.Popen``, or a pid (an ``int``) of a child of this process or of any
    process (then its exit code is unknown and exiting counts as success). Start it
    with ``start_new_session=True`` so that terminating it reaches its children too.
    ``kill_grace`` is how long SIGTERM may take before SIGKILL.
    """

    process: Any
    kill_grace: float = 5.0
    _stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=64))
    _group: int | None = None

    def __post_init__(self) -> None:
        # Remember the process group now: once the leader is reaped it cannot be looked up,
        # but its children may still be running in the group.
        try:
            group = os.getpgid(self.pid)
        except ProcessLookupError:
            group = None
        self._group = group if group != os.getpgid(0) else None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process if isinstance(self.process, int) else self.process.pid

    async def wait(self) -> ProcessOutcome:
        """Wait for the exit (reading stderr meanwhile, so the pipe never fills)."""
        if isinstance(self.process, anyio.abc.Process):
            async with anyio.create_task_group() as tg:
                if self.process.stderr is not None:
                    tg.start_soon(self._collect_stderr, self.process.stderr)
                code = await self.process.wait()
            return ProcessOutcome(code, self._tail())
        if isinstance(self.process, subprocess.Popen):
            async with anyio.create_task_group() as tg:
                if self.process.stderr is not None:
                    tg.start_soon(functools.partial(
                        anyio.to_thread.run_sync, self._read_popen_stderr, abandon_on_cancel=True
                    ))
                code = await anyio.to_thread.run_sync(self.process.wait, abandon_on_cancel=True)
            return ProcessOutcome(code, self._tail())
        return ProcessOutcome(await _wait_pid(self.process), "")

    async def _collect_stderr(self, stream: anyio.abc.ByteReceiveStream) -> None:
        try:
            async for chunk in stream:
                self._stderr.append(chunk.decode(errors="replace"))
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def _read_popen_stderr(self) -> None:
        """In a thread: keep the tail of a Popen's stderr until EOF, then close it."""
        stream = self.process.stderr
        with stream:
            read = getattr(stream, "read1", stream.read)
            while chunk := read(65536):
                self._stderr.append(chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk)

    def _tail(self) -> str:
        return "".join(self._stderr)[-STDERR_TAIL:]

    async def terminate(self) -> None:
        """SIGTERM the process group, then SIGKILL it after ``kill_grace`` seconds."""
        self._signal(signal.SIGTERM)
        with anyio.move_on_after(self.kill_grace):
            await self._exited()
            while self._group is not None and _group_alive(self._group):
                await anyio.sleep(0.02)
            return
        self._signal(signal.SIGKILL)
        with anyio.move_on_after(5):
            await self._exited()

    def _signal(self, signum: int) -> None:
        """Signal the process's own group (all its children), or just the process."""
        try:
            if self._group is not None:
                os.killpg(self._group, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    async def _exited(self) -> None:
        if isinstance(self.process, anyio.abc.Process):
            await self.process.wait()
        elif isinstance(self.process, subprocess.Popen):
            await anyio.to_thread.run_sync(self.process.wait, abandon_on_cancel=True)
        else:
            await _wait_pid(self.process)


_PLAIN = frozenset({dict, list, str, int, float, bool, tuple})


def as_external_process(value: Any) -> ExternalProcess | None:
    """The process a ``perform`` return value stands for, or None for an ordinary result.

    ``ExternalProcess`` as it is; a bare ``anyio.abc.Process`` or ``subprocess.Popen``
    wrapped with the defaults. A bare ``int`` stays a plain result (wrap a pid to mean one).
    """
    if value is None or type(value) in _PLAIN:
        return None  # the common case, without the abstract-class check below
    if isinstance(value, ExternalProcess):
        return value
    if isinstance(value, (anyio.abc.Process, subprocess.Popen)):
        return ExternalProcess(value)
    return None


def _alive(pid: int) -> bool:
    """True while a process that is not our child exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(group: int) -> bool:
    """True while some process of ``group`` is running (zombies do not count)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                return True
    return not os.path.isdir("/proc")


async def _wait_pid(pid: int) -> int | None:
    """Wait for ``pid`` to exit: its exit code when it is our child, else None."""
    try:
        _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0, abandon_on_cancel=True)
    except ChildProcessError:
        while _alive(pid):
            await anyio.sleep(0.05)
        return None
    return os.waitstatus_to_exitcode(status)


__all__ = ["ExternalProcess", "ProcessFailed", "ProcessOutcome", "as_external_process"]
