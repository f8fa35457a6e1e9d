"""The one hop onto the event-loop thread (:class:`jobrunner.loop.EventLoop`), and the
rule that every exception jobrunner defines lives in ``jobrunner.errors`` and is exported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading

import anyio
import anyio.to_thread
import pytest

import jobrunner
from jobrunner import errors
from jobrunner.loop import EventLoop

pytestmark = pytest.mark.anyio


async def test_a_call_on_the_loop_thread_runs_at_once() -> None:
    loop = EventLoop.current()
    seen: list[int] = []
    assert loop.is_current_thread()
    assert loop.call(seen.append, threading.get_ident())
    assert seen == [threading.get_ident()]


async def test_a_call_from_another_thread_runs_on_the_loop_thread_before_returning() -> None:
    loop = EventLoop.current()
    here = threading.get_ident()
    seen: list[int] = []

    def from_a_thread() -> tuple[bool, bool, list[int]]:
        ran = loop.call(lambda: seen.append(threading.get_ident()))
        return ran, loop.is_current_thread(), list(seen)

    ran, on_loop, seen_on_return = await anyio.to_thread.run_sync(from_a_thread)
    assert ran and not on_loop
    assert seen_on_return == [here]  # ran on the loop thread, before call() returned


async def test_an_error_of_the_function_reaches_the_caller() -> None:
    loop = EventLoop.current()

    def fail() -> None:
        raise RuntimeError("the function's own error")

    with pytest.raises(RuntimeError, match="own error"):
        await anyio.to_thread.run_sync(loop.call, fail)


def test_a_call_after_the_loop_finished_is_dropped(anyio_backend: str) -> None:
    async def capture() -> EventLoop:
        return EventLoop.current()

    loop = anyio.run(capture, backend=anyio_backend)
    seen: list[int] = []
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(loop.call(seen.append, 1)))
    thread.start()
    thread.join()
    assert outcome == [False] and seen == []


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(jobrunner.__path__, "jobrunner."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                found[f"{info.name}.{name}"] = value
    return found


def test_every_exception_is_defined_in_errors_and_exported() -> None:
    # Private to one module: an HTTP refusal turned into a response, and a storage retry signal.
    internal = {"jobrunner.http.responses.ApiError", "jobrunner.storage.jobs._StaleAcks"}
    elsewhere = sorted(set(_defined_exceptions()) - internal)
    assert all(name.startswith("jobrunner.errors.") for name in elsewhere), elsewhere
    public = {name for name, value in vars(errors).items()
              if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == "jobrunner.errors"}
    assert public <= set(jobrunner.__all__), public - set(jobrunner.__all__)
    assert all(getattr(jobrunner, name) is getattr(errors, name) for name in public)
