"""The dashboard's server side, ``/metrics`` and the Grafana dashboard, over real HTTP
against a real daemon subprocess (the browser itself: tests/test_dashboard_browser.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobrunner import Runner
from jobrunner.census import CensusCache
from jobrunner.config import parse
from jobrunner.metrics import Histogram, RunnerMetrics
from jobrunner.web.live import MAX_CHANGED
from tests.daemon_harness import REPO
from tests.test_http import Daemon, assert_error, topic

W = "tests.dashboard_workers"
MODULES = {"JOBRUNNER_RUNNER__MODULES": f'["{W}"]'}
TOPICS = topic("web", parallelism=2, poll_interval=0.1) + topic("held", parallelism=1, poll_interval=0.1)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("dashboard"), TOPICS, env=MODULES).start()
    yield d
    d.close()


def wait_for(check: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something true (deadline ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def final(daemon: Daemon, job_id: int) -> dict[str, Any]:
    return daemon.wait_job(job_id, lambda j: j["state"] in ("completed", "discarded", "cancelled"))


def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    response = daemon.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


# ---------------------------------------------------------------- the page


def test_the_dashboard_is_served_at_root_with_its_own_files_only(daemon: Daemon) -> None:
    for path in ("/", "/dashboard", "/dashboard/"):
        response = daemon.http.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page = response.text
    # Everything it loads is its own (no CDN: it works on an air-gapped server).
    loaded = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert loaded and all(url.startswith("/dashboard/static/") for url in loaded), loaded
    for url in loaded:
        response = daemon.http.get(url)
        assert response.status_code == 200, url
        again = daemon.http.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    assert_error(daemon.http.get("/dashboard/static/nope.js"), 404)


def test_a_token_guards_data_but_not_the_page(tmp_path: Path) -> None:
    d = Daemon(tmp_path, TOPICS, env=MODULES, http='token = "s3cret"', token="s3cret").start()
    try:
        with httpx.Client(base_url=d.url, timeout=10) as bare:
            assert bare.get("/").status_code == 200
            assert bare.get("/dashboard/static/app.js").status_code == 200
            for path in ("/metrics", "/dashboard/api/jobs", "/dashboard/api/stream"):
                assert_error(bare.get(path), 401, "token")
            script = bare.get("/dashboard/static/app.js").text
        assert d.http.get("/metrics").status_code == 200
        # The page keeps the token in sessionStorage and sends it as a header, never in a URL.
        assert "sessionStorage" in script and "Authorization" in script and "localStorage.setItem(TOKEN" not in script
    finally:
        d.close()


# ---------------------------------------------------------------- the jobs table


def test_jobs_table_filters_sorts_and_pages(daemon: Daemon) -> None:
    ids = [daemon.enqueue({"worker": f"{W}.Quick", "args": {"i": i}})["id"] for i in range(5)]
    for job_id in ids:
        final(daemon, job_id)

    def page(**params: Any) -> dict[str, Any]:
        response = daemon.http.get("/dashboard/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    newest = page(worker=f"{W}.Quick", limit=2)
    assert [j["id"] for j in newest["jobs"]] == ids[::-1][:2] and newest["next"] == ids[3]
    second = page(worker=f"{W}.Quick", limit=2, after=newest["next"])
    assert [j["id"] for j in second["jobs"]] == [ids[2], ids[1]]
    oldest = page(worker=f"{W}.Quick", state="completed", topic="web", order="oldest", limit=200)
    found = [j["id"] for j in oldest["jobs"]]
    assert found == sorted(found) and set(ids) <= set(found)
    assert "args" not in oldest["jobs"][0]  # summaries: the job page fetches the rest
    assert page(worker="no.such.Worker")["jobs"] == []
    assert_error(daemon.http.get("/dashboard/api/jobs", params={"state": "done"}), 400, "state", "done")
    assert_error(daemon.http.get("/dashboard/api/jobs", params={"limit": "0"}), 400, "limit")
    assert_error(daemon.http.get("/dashboard/api/jobs", params={"order": "up"}), 400, "order")
    assert_error(daemon.http.get("/dashboard/api/jobs", params={"after": "x"}), 400, "after")


# ---------------------------------------------------------------- the live stream


def read_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse server-sent events from a streaming response."""
    name, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def test_the_stream_sends_a_snapshot_then_deltas(daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with httpx.Client(base_url=daemon.url, timeout=httpx.Timeout(20)) as client, \
            client.stream("GET", "/dashboard/api/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
        name, snapshot = next(events)
        assert name == "snapshot"
        assert set(snapshot["topics"]) == {"web", "held"}
        web = snapshot["topics"]["web"]
        assert web["parallelism"] == 2 and web["paused"] is False and set(web["counts"]) >= {"completed"}
        assert [n["this"] for n in snapshot["nodes"]] == [True]
        job = daemon.enqueue({"worker": f"{W}.Gated", "args": {"gate": str(gate)}})
        seen: list[str] = []
        for name, delta in events:
            assert name == "delta"
            seen += [j["state"] for j in delta.get("jobs", []) if j["id"] == job["id"]]
            if seen and seen[-1] == "executing":
                topics = delta.get("topics") or {}
                gate.touch()
            if "completed" in seen:
                break
        assert seen[0] in ("available", "executing") and seen[-1] == "completed"
        assert "rates" in delta and delta["rates"]["web"][-1][1] >= 1
        assert topics == {} or topics["web"]["running_here"] in (0, 1)


def test_a_delta_that_overflows_carries_no_rows(tmp_path: Path) -> None:
    """More changes in a tick than a delta carries: it says ``overflow`` (the page
    reloads its table) and sends none of the rows, whose cost would be wasted."""
    d = Daemon(tmp_path, topic("web", parallelism=2, poll_interval=0.1), env=MODULES).start()
    try:
        with httpx.Client(base_url=d.url, timeout=httpx.Timeout(20)) as client, \
                client.stream("GET", "/dashboard/api/stream") as response:
            events = read_events(response)
            assert next(events)[0] == "snapshot"
            count = MAX_CHANGED + 100
            response_many = d.http.post("/jobs", json=[{"worker": f"{W}.Quick", "args": {"n": i}}
                                                       for i in range(count)])
            assert response_many.status_code == 201, response_many.text
            for name, delta in events:
                assert name == "delta"
                if delta.get("overflow"):
                    break
                assert len(delta.get("jobs", [])) <= MAX_CHANGED
            assert "jobs" not in delta
        last = response_many.json()[-1]["id"]
        final(d, last)
    finally:
        d.close()


# ---------------------------------------------------------------- metrics


def test_metrics_count_outcomes_and_read_the_table(daemon: Daemon, tmp_path: Path) -> None:
    quick = [daemon.enqueue({"worker": f"{W}.Quick"})["id"] for _ in range(3)]
    fragile = daemon.enqueue({"worker": f"{W}.Fragile", "args": {"fix": str(tmp_path / "fix")}})["id"]
    for job_id in quick:
        final(daemon, job_id)
    assert final(daemon, fragile)["state"] == "discarded"
    expected_completed = sum(1 for j in daemon.http.get("/jobs", params={"topic": "web", "limit": 1000}).json()["jobs"]
                             if j["state"] == "completed")

    def settled() -> dict[Any, float] | None:
        samples = scrape(daemon)
        gauge = samples.get(("jobrunner_jobs", (("state", "completed"), ("topic", "web"))))
        return samples if gauge == expected_completed else None

    samples = wait_for(settled, "the jobs gauge to count every completed job")
    quick_labels = (("topic", "web"), ("worker", f"{W}.Quick"))
    fragile_labels = (("topic", "web"), ("worker", f"{W}.Fragile"))
    assert samples[("jobrunner_jobs_completed_total", quick_labels)] >= 3
    assert samples[("jobrunner_jobs_failed_total", fragile_labels)] >= 1
    assert samples[("jobrunner_jobs_discarded_total", fragile_labels)] >= 1
    assert samples[("jobrunner_jobs_inserted_total", quick_labels)] >= 3
    assert samples[("jobrunner_job_run_seconds_count", quick_labels)] >= 3
    assert samples[("jobrunner_job_queue_wait_seconds_count", quick_labels)] >= 3
    assert samples[("jobrunner_claim_seconds_count", (("topic", "web"),))] >= 4
    assert samples[("jobrunner_nodes_alive", ())] == 1
    assert samples[("jobrunner_topic_parallelism", (("topic", "web"),))] == 2
    assert samples[("jobrunner_topic_paused", (("topic", "held"),))] == 0
    assert ("jobrunner_jobs", (("state", "scheduled"), ("topic", "held"))) in samples  # every state, every topic


@pytest.mark.parametrize("fold_at", [3, Histogram.FOLD_AT])
def test_histogram_buckets_count_each_value_at_or_below_its_bound(fold_at: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Observations are folded into the buckets in bulk (when read, or every ``FOLD_AT``);
    the counts and the sum are those of bucketing each as it came."""
    monkeypatch.setattr(Histogram, "FOLD_AT", fold_at)
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (-0.5, 0.0, 0.1, 0.1000001, 1.0, 5.0, 10.0, 11.0, 1e9):
        histogram.observe(value)
    buckets, total = histogram.read()
    assert buckets == [("0.1", 3.0), ("1.0", 5.0), ("10.0", 7.0), ("+Inf", 9.0)]
    assert total == pytest.approx(0.1 + 0.1000001 + 1.0 + 5.0 + 10.0 + 11.0 + 1e9)  # a negative counts as 0
    histogram.observe(0.5)
    assert histogram.read()[0][1] == ("1.0", 6.0)


def test_each_runner_has_a_registry_of_its_own(tmp_path: Path) -> None:
    def runner(name: str) -> Runner:
        settings = parse({"database": {"url": f"sqlite:///{tmp_path / name}.db"}, "topics": {name: {}}}, source="test")
        made = Runner(settings)
        made.migrate()
        return made

    first, second = runner("one"), runner("two")
    metrics = [RunnerMetrics(r, CensusCache(r)) for r in (first, second)]  # no "duplicated timeseries"
    assert metrics[0].registry is not metrics[1].registry
    from prometheus_client import REGISTRY, generate_latest

    assert b"jobrunner_" not in generate_latest(REGISTRY)  # the process-wide registry stays untouched


def test_the_grafana_dashboard_uses_metrics_that_exist(daemon: Daemon) -> None:
    document = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    assert document["title"] and document["panels"]
    exprs = [t["expr"] for p in document["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bjobrunner_[a-z_]+", expr)}
    assert len(exprs) >= 6 and used
    daemon.enqueue({"worker": f"{W}.Quick"})
    exposed = {name for name, _ in wait_for(lambda: scrape(daemon), "a scrape")}
    families = {f.name for f in text_string_to_metric_families(daemon.http.get("/metrics").text)}
    known = exposed | families | {f"{f}_bucket" for f in families} | {f"{f}_total" for f in families}
    assert used <= known, f"unknown metrics in the Grafana dashboard: {sorted(used - known)}"
