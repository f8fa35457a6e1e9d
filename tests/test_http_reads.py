"""Reads through the HTTP API do their heavy work off the event loop.

The loop also serves claims, acks and the heartbeat, so a page of up to 1000 jobs must
be read *and* encoded as JSON in a read thread (``bench/soak.py --read-flood`` showed a
flood of pages stalling claims while they were encoded on the loop). The app runs in
process here, served to httpx through ASGI, so the thread that encodes is observable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jobrunner import Runner, http as http_module
from jobrunner.external import ExternalTopics
from jobrunner.http import create_app


@pytest.mark.anyio
async def test_a_page_of_jobs_is_encoded_off_the_event_loop(
    make_runner: Callable[..., Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = make_runner(topics={"x": {"external": True}}, http={"enabled": True})
    stored = runner.enqueue_many([("any.worker", {"n": n}, {"topic": "x"}) for n in range(50)])
    encoded_on: list[int] = []
    render = http_module.JSONResponse.render

    def recording_render(self: Any, content: Any) -> bytes:
        if isinstance(content, dict) and "jobs" in content:
            encoded_on.append(threading.get_ident())
        return render(self, content)

    monkeypatch.setattr(http_module.JSONResponse, "render", recording_render)
    app = create_app(runner, ExternalTopics(runner.settings, runner.storage), runner.settings.http)
    loop_thread = threading.get_ident()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/jobs", params={"limit": 1000})

    assert response.status_code == 200
    assert [job["id"] for job in response.json()["jobs"]] == [job.id for job in reversed(stored)]
    assert encoded_on and loop_thread not in encoded_on
