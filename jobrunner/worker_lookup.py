"""Finding Worker classes by import path: the registry of every Worker class defined,
:func:`resolve_worker` (imports the module when needed) and :func:`runnable_worker` (what a
node may run: only code it already loaded or was configured with)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from .context import current_settings
from .errors import UnknownWorkerError

if TYPE_CHECKING:
    from .worker import Worker


def worker_path(worker: type[Worker]) -> str:
    """The import path that names ``worker`` in the jobs table."""
    return f"{worker.__module__}.{worker.__qualname__}"


_resolved: dict[str, type[Worker]] = {}
_registered: dict[str, type[Worker]] = {}


def register(worker: type[Worker]) -> None:
    """Record a Worker class as it is defined (called by ``Worker.__init_subclass__``)."""
    _registered[worker_path(worker)] = worker


def registered_workers() -> list[type[Worker]]:
    """Every Worker class defined so far (in modules already imported)."""
    return list(_registered.values())


def registered_worker(path: str) -> type[Worker] | None:
    """The Worker class of that import path if its module is already loaded; never imports."""
    return _registered.get(path)


def resolve_worker(path: str) -> type[Worker]:
    """Import the Worker class named by ``path`` (``package.module.ClassName``).

    Raises :class:`UnknownWorkerError` with the reason when the module does not
    import, the name is missing, or it is not a Worker subclass.
    """
    cached = _resolved.get(path)
    if cached is not None:
        return cached
    module_name, _, attr_path = path.rpartition(".")
    if not module_name or not attr_path:
        raise UnknownWorkerError(f"worker {path!r} is not an import path like 'package.module.Class'")
    module = None
    missing: str | None = None
    # Nested classes (Outer.Inner) have dots after the module part: try longest module first.
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:split])
        try:
            module = importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name is not None and candidate.startswith(exc.name):
                missing = missing or exc.name
                continue
            raise UnknownWorkerError(f"worker {path!r}: importing {candidate!r} failed: {exc}") from exc
        except (Exception, SystemExit) as exc:  # the module itself is broken (or exits, e.g. argparse)
            raise UnknownWorkerError(
                f"worker {path!r}: importing {candidate!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        attr_path = ".".join(parts[split:])
        break
    if module is None:
        raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}")
    obj: Any = module
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            if missing is not None and missing != module.__name__:
                raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}") from None
            raise UnknownWorkerError(
                f"worker {path!r}: module {module.__name__!r} has no attribute {attr_path!r}"
            ) from None
    from .worker import Worker  # at call time: worker.py imports this module for its registry

    if not (isinstance(obj, type) and issubclass(obj, Worker)):
        raise UnknownWorkerError(f"worker {path!r} is not a jobrunner.Worker subclass")
    _resolved[path] = obj
    return obj


def runnable_worker(path: str) -> type[Worker]:
    """The Worker class a node runs for a job naming ``path``.

    Only code the node already loaded or was configured with runs: a Worker of a module
    already imported in this process (by ``[runner] modules``, or by the code that
    enqueued it), else one whose module lies inside a package of ``[runner] modules``.
    Any other path is refused with :class:`UnknownWorkerError` without importing
    anything, so a worker name stored by someone else (an HTTP client of an external
    topic) never runs import-time code.
    """
    cls = _registered.get(path) or _resolved.get(path)
    if cls is not None:
        return cls
    settings = current_settings.get(None)
    modules = settings.runner.modules if settings is not None else ()
    if path.rpartition(".")[0] in sys.modules or any(path.startswith(f"{module}.") for module in modules):
        return resolve_worker(path)  # imports nothing new, or only the operator's own modules
    missing = _missing_module(path.rpartition(".")[0])
    if missing is not None:
        raise UnknownWorkerError(f"worker {path!r}: no module named {missing!r}")
    raise UnknownWorkerError(
        f"worker {path!r} is not a Worker of the modules this node loaded ([runner] modules: "
        f"{', '.join(modules) or 'none'}); other code is never imported to run a job"
    )


def _missing_module(name: str) -> str | None:
    """The first part of dotted module ``name`` that does not exist, found without running
    any module's code (only below packages already loaded); None when it may exist."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(prefix)  # its parent is loaded: nothing is imported
        except (ImportError, ValueError):
            return prefix
        return prefix if spec is None else None
    return None


__all__ = ["register", "registered_worker", "registered_workers", "resolve_worker", "runnable_worker", "worker_path"]
