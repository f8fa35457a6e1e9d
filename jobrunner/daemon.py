"""``python -m jobrunner run``: start-up checks, then the runner until SIGINT/SIGTERM.

Everything that can fail at start-up is tried before any task group exists —
importing ``[runner] modules``, opening and migrating the database, binding the
HTTP port — so a failure is one line on stderr (exit 2), never a traceback of
nested exception groups.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import signal
import socket

import anyio

from .config import HttpSettings, Settings
from .cron import schedules as cron_schedules
from .errors import ConfigError, JobrunnerError, StartupError
from .runner import Runner, import_modules

logger = logging.getLogger("jobrunner.cli")

BACKENDS = ("asyncio", "trio")


def check_port(http: HttpSettings) -> None:
    """Fail with a clear message when the HTTP API could not listen on ``[http] host:port``.

    Binds (and closes) a socket the way Hypercorn will, so a second daemon on the same
    port is refused before anything starts.
    """
    family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((http.host, http.port))
        except socket.gaierror as exc:
            raise StartupError(f"[http] host {http.host!r} cannot be resolved: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"[http] port {http.port} on {http.host} is already in use (is another daemon running?)"
                ) from None
            raise StartupError(f"[http] cannot listen on {http.host}:{http.port}: {exc.strerror or exc}") from None


def check_backend(backend: str) -> None:
    """Fail when the event loop ``backend`` is unknown or not installed."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "trio" and importlib.util.find_spec("trio") is None:
        raise StartupError("the trio backend needs trio: pip install 'jobrunner[trio]'")


def prepare(settings: Settings, backend: str) -> Runner:
    """Everything that can fail before the runner starts: the backend, ``[runner]
    modules``, the database (opened and migrated) and the HTTP port."""
    check_backend(backend)
    import_modules(settings)
    cron_schedules(settings)  # a bad [[cron]] entry (or Worker.cron) stops the start, naming it
    try:
        runner = Runner(settings)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to open the database stops the start
        raise _startup_error("cannot open the database", exc) from None
    try:
        runner.ensure_schema()  # migrates unless [database] auto_migrate = false
        if settings.http.enabled:
            check_port(settings.http)
    except StartupError:
        runner.store.close()
        raise
    except Exception as exc:  # noqa: BLE001 - likewise for migrating it
        runner.store.close()
        raise _startup_error("cannot migrate the database", exc) from None
    return runner


def _startup_error(doing: str, exc: Exception) -> StartupError:
    """One line for ``exc``; its traceback is logged at DEBUG (``--log-level debug``)."""
    logger.debug("%s", doing, exc_info=exc)
    if isinstance(exc, JobrunnerError):
        return StartupError(str(exc))
    return StartupError(f"{doing}: {type(exc).__name__}: {exc}")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


class _Serving:
    """Runs the runner under signal handling; remembers whether it got ready."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.ready = False

    async def serve(self) -> None:
        runner = self.runner
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            self.ready = True
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if runner.running and not tg.cancel_scope.cancel_called:
                        if runner.stopping:
                            logger.warning("%s again: cancelling running jobs now (they go back to the table)", name)
                            tg.cancel_scope.cancel()
                            return
                        logger.info("%s received: stopping (running jobs get %gs)", name,
                                    runner.settings.runner.shutdown_grace)
                        tg.start_soon(_stop_then_cancel, runner, tg.cancel_scope)


async def _stop_then_cancel(runner: Runner, scope: anyio.CancelScope) -> None:
    await runner.stop()
    scope.cancel()


def serve(runner: Runner, backend: str) -> None:
    """Run ``runner`` until SIGINT/SIGTERM on ``backend``.

    A failure that escapes the runner's task groups is reduced to its cause: a
    :class:`JobrunnerError` is raised alone (a :class:`StartupError` when the runner
    never got ready); anything else is logged with its traceback and re-raised alone.
    """
    serving = _Serving(runner)
    try:
        anyio.run(serving.serve, backend=backend)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            raise KeyboardInterrupt from None
        known = [leaf for leaf in leaves if isinstance(leaf, JobrunnerError)]
        if known:
            for other in leaves[1:]:
                logger.debug("also failed: %r", other, exc_info=other)
            if not serving.ready:
                raise StartupError(str(known[0])) from None
            raise known[0] from None
        for leaf in leaves[1:]:
            logger.error("the daemon failed: %r", leaf, exc_info=leaf)
        raise leaves[0] from None
    except JobrunnerError as exc:
        if not serving.ready and not isinstance(exc, StartupError):
            raise StartupError(str(exc)) from None
        raise


def http_line(http: HttpSettings) -> str:
    """Where the HTTP API listens, for the start-up log line."""
    if not http.enabled:
        return "off"
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"http://{host}:{http.port}"


__all__ = ["BACKENDS", "StartupError", "check_backend", "check_port", "http_line", "prepare", "serve"]
