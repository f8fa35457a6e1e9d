"""Property-based fuzzing of the HTTP API from the OpenAPI document the daemon serves.

Schemathesis reads the OpenAPI document the daemon serves (``jobrunner/openapi.json``;
tests/test_http.py proves the served one is that file), generates valid and invalid
requests for every operation but the endless ``/events`` stream, sends them over real
HTTP to a live daemon (a subprocess, as in tests/test_http.py) and checks the answers:
never a 500, and everything the daemon says conforms to the document.

The schema is loaded when the module is collected, not from a fixture:
``schemathesis.pytest.from_fixture`` renames pytest's private ``Node._nodeid``, which
pytest 9.2 removed (``'Function' object has no attribute '_nodeid'`` with every
schemathesis release up to 4.32.5); a schema loaded eagerly gives one pytest item per
operation through schemathesis' public collection hook and works on pytest 8 and 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from jobrunner.http import openapi_document
from tests.test_http import CONSTANT_0, Daemon, W, topic

# On a failing example Hypothesis imports libcst (to suggest a patch), which warns through
# mypy_extensions; with filterwarnings=error that would hide the failure behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FUZZ_TOPICS = "\n".join([
    topic("py", parallelism=4, poll_interval=0.1, backoff=CONSTANT_0),
    topic("ext", external=True, parallelism=4, poll_interval=0.1, backoff=CONSTANT_0),
])


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with a token (the document declares bearer auth), short long-polls and leases."""
    daemon = Daemon(
        tmp_path_factory.mktemp("fuzz"), FUZZ_TOPICS, token=TOKEN,
        http=f'token = "{TOKEN}"\nmax_wait = 0.2\nlease = 2\nmax_body = 65536',
    )
    try:
        daemon.start()
        # Give generated ids something to find: jobs in every state an endpoint cares about.
        jobs = daemon.enqueue([{"worker": "w", "topic": "ext", "args": {"i": i}} for i in range(12)])
        daemon.enqueue([{"worker": f"{W}.Echo", "args": {"i": i}} for i in range(4)])
        for job in jobs[:3]:
            assert daemon.http.post(f"/jobs/{job['id']}/cancel").status_code == 200
        for _ in range(3):
            assert daemon.claim("ext").status_code == 200
        yield daemon
    finally:
        daemon.close()


schema = (schemathesis.openapi.from_dict(openapi_document()).exclude(path="/events")
          .exclude(path="/dashboard/api/stream"))


# Checks that do not apply to an operation, and why.
EXCLUDED_CHECKS = {
    # A schema-valid job can still name a worker that does not import, a topic that is not
    # configured, or both delay and scheduled_at: 400 by design (covered in test_http.py).
    ("POST", "/jobs"): [positive_data_acceptance],
    # Lenient by design: an empty ?state= or ?limit= means "not given", unknown query
    # parameters are ignored.
    ("GET", "/jobs"): [negative_data_rejection],
    ("GET", "/dashboard/api/jobs"): [negative_data_rejection],
    # ?wait= above the daemon's [http] max_wait (0.2 s here) is 400 by design: the document
    # cannot know the configured bound (covered in test_wait.py).
    ("GET", "/jobs/{id}"): [positive_data_acceptance],
}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@pytest.mark.timeout(180)
def test_api_fuzz(case: Any, fuzz_daemon: Daemon) -> None:
    response = case.call(base_url=fuzz_daemon.url, headers=AUTH, timeout=10)
    assert response.status_code < 500, (case.method, case.path, case.body, case.query, response.text)
    excluded = list(EXCLUDED_CHECKS.get((case.operation.method.upper(), case.path), []))
    declared = {p["name"] for p in case.operation.definition.raw.get("parameters", []) if p.get("in") == "query"}
    if set(case.query or {}) - declared:
        # Unknown query parameters are ignored by design, on every route: a request made
        # "invalid" only by one (``?=false``) is rightly answered as without it.
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)


# ---------------------------------------------------------------- jobs that are valid by construction
# Schemathesis rarely produces a job the daemon accepts (the worker must import, or the
# topic be external): here every generated job is valid, so POST /jobs must store it and
# GET /jobs/{id} must give back exactly what was sent.

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # (typed: st.characters wants its category names as literals)
JSON_TEXT = st.text(st.characters(exclude_categories=SURROGATES), max_size=20)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
    max_leaves=15,
)
# Run times stay inside what the engine can render (beyond: test_http.py xfails).
WHEN = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))]))
NEW_JOB = st.fixed_dictionaries(
    {"worker": st.text(min_size=1, max_size=30).filter(lambda w: "\x00" not in w) | st.just("w"),
     "topic": st.just("ext")},
    optional={
        "args": JSON_VALUES,
        "priority": st.integers(0, 9),
        "max_attempts": st.integers(1, 2**31 - 1),
        "delay": st.floats(0, 1e9),
        "scheduled_at": WHEN.map(lambda d: d.isoformat()),
    },
).filter(lambda job: not ("delay" in job and "scheduled_at" in job))


@given(jobs=st.lists(NEW_JOB, min_size=1, max_size=5), as_list=st.booleans())
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_valid_jobs_are_stored_exactly_as_sent(fuzz_daemon: Daemon, jobs: list[dict[str, Any]], as_list: bool) -> None:
    body: Any = jobs if as_list else jobs[0]
    sent = jobs if as_list else jobs[:1]
    response = fuzz_daemon.http.post("/jobs", json=body)
    assert response.status_code == 201, (body, response.text)
    stored = response.json() if as_list else [response.json()]
    assert len(stored) == len(sent)
    for job, item in zip(stored, sent, strict=True):
        assert fuzz_daemon.job(job["id"]) == job
        assert job["worker"] == item["worker"] and job["topic"] == "ext"
        assert job["args"] == (item["args"] if item.get("args") is not None else {})  # null means "not given"
        assert job["priority"] == item.get("priority", 2) and job["max_attempts"] == item.get("max_attempts", 50)
        if "scheduled_at" in item:  # stored as float seconds: exact to a few microseconds
            gap = datetime.fromisoformat(job["scheduled_at"]) - datetime.fromisoformat(item["scheduled_at"])
            assert abs(gap) <= timedelta(microseconds=10), (job["scheduled_at"], item["scheduled_at"])
        assert job["state"] in ("available", "scheduled")
    for job in stored:  # keep the topic's queue short for the claims of the other test
        fuzz_daemon.http.post(f"/jobs/{job['id']}/cancel")
