"""README.md is executed: every shell, Python and TOML example runs, taken from the README
at test time, in README order, in one scratch directory (a copy of config.toml and
topics/), with a real daemon where an example needs one. Directives in HTML comments
before a block say how (see tests/readme_blocks.py)."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import parse
from tests.readme_blocks import REPO, Block, ReadmeFormatError, parse_readme, readme_blocks, readme_test_command
from tests.readme_session import ReadmeSession
from tests.readme_toml import merge, toml_text

try:
    BLOCKS = readme_blocks()
    FORMAT_ERROR = ""
except ReadmeFormatError as exc:
    BLOCKS, FORMAT_ERROR = [], str(exc)
EXAMPLES = [block for block in BLOCKS if block.kind or "output" in block.directive]
ENQUEUE = re.compile(r"python -m jobrunner\b[^#\n]*?\benqueue\s+(?P<worker>[\w.]+)")
STREAM_TOPIC = re.compile(r"/events\?topic=(\w+)")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeSession]:
    """The scratch checkout every block of this module shares; its daemon stops at the end."""
    readme = ReadmeSession(tmp_path_factory.mktemp("readme"))
    try:
        yield readme
    finally:
        readme.stop_daemon()
    assert not readme.problems, "\n\n".join(readme.problems)


def test_readme_directives_are_well_formed() -> None:
    assert not FORMAT_ERROR, FORMAT_ERROR
    assert EXAMPLES, "README.md has no shell, Python or TOML example"
    for block in BLOCKS:
        if block.directive.words - {"output", "skip"} and not block.kind:
            pytest.fail(f"README.md line {block.line}: a readme-test directive on a block that is not an example")
        if "output" in block.directive and block.kind:
            pytest.fail(f"README.md line {block.line}: `output` belongs on a plain-text block")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_test_command()
    assert "pip install" in command and "pytest" in command, command
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert [line for line in ci.splitlines() if line.strip() == command], (command, ci)
    assert re.search(r"python3 -m venv ", ci), "the CI script must install into a new virtual environment"


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.test_id for block in EXAMPLES])
@pytest.mark.timeout(150)  # the block (45 s at most) and the jobs it enqueued, on a loaded machine
def test_readme_example(block: Block, session: ReadmeSession) -> None:
    directive = block.directive
    if "skip" in directive:
        pytest.skip(f"README.md line {block.line}: {directive.reason}")
    try:
        _run_example(block, session)
    except AssertionError as exc:
        if "pending" in directive:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
            summary = next((line for line in reversed(lines) if re.match(r"=* ?\d+ (failed|error)", line)), "")
            pytest.xfail(f"pending ({directive.reason}): {lines[0][:160]} {summary}")
        raise
    if "pending" in directive:
        pytest.fail(f"README.md line {block.line} passes now: remove its pending marker ({directive.reason})")


def _run_example(block: Block, session: ReadmeSession) -> None:
    where = f"README.md line {block.line}"
    if "output" in block.directive:
        _check_sample_output(block, session.last_output + session.daemon_output())
        return
    if block.kind == "toml":
        document = tomllib.loads(block.text)
        parse(merge(session.settings, document) if "config" in block.directive else document,
              source=where, base_dir=session.workdir)
        if "config" in block.directive:
            session.add_config(block)
        return
    if block.kind == "python" and "sketch" in block.directive:
        compile(block.text, where, "exec")
        return
    if "daemon" in block.directive or "stream" in block.directive:
        session.start_daemon()
    else:
        session.stop_daemon()  # the block runs its own runner, or none: ours would compete for its jobs
    before = session.last_id()
    if block.kind == "python":
        outcome = session.run_python(block)
    elif "stream" in block.directive:
        match = STREAM_TOPIC.search(block.text)
        outcome, probe = session.run_stream(block.text, match.group(1) if match else None)
        assert f'"id": {probe}' in outcome.output, outcome.tail()
    else:
        outcome = session.run_shell(block.text)
    (session.workdir / f"readme_l{block.line}.out").write_text(outcome.output, encoding="utf-8")  # for a look later
    session.last_output = outcome.output
    assert outcome.returncode == 0, f"{where} exited with {outcome.returncode}:\n{outcome.tail()}"
    if block.kind == "python" and re.search(r"^(async )?def test_", block.text, re.MULTILINE):
        summary = outcome.output.strip().splitlines()[-1]
        assert re.search(r"\b\d+ passed\b", summary) and not re.search(r"failed|skipped|error", summary), outcome.tail()
    created = {job["id"]: job for job in session.jobs(before)}
    if block.kind == "shell":
        _check_enqueue_lines(block, outcome.output, created)
    due = session.finish_due_jobs(before)
    unfinished = [(job["id"], job["worker"], job["state"], job["errors"]) for job in due if job["state"] != "completed"]
    assert not unfinished, (where, unfinished)


def _check_enqueue_lines(block: Block, output: str, created: dict[int, dict[str, Any]]) -> None:
    """Each ``python -m jobrunner enqueue WORKER`` printed the new job's id alone on a line."""
    workers = [m.group("worker") for line in block.text.splitlines() if (m := ENQUEUE.search(line))]
    ids = {int(line) for line in output.splitlines() if line.strip().isdigit()} & set(created)
    printed = Counter(created[i]["worker"] for i in ids)
    assert not Counter(workers) - printed, (workers, printed, output)


def _check_sample_output(block: Block, output: str) -> None:
    """Every line of a sample-output block appears in ``output``, numbers aside."""
    for line in filter(None, (raw.strip() for raw in block.text.splitlines())):
        pattern = re.sub(r"\d+(?:\\\.\d+)*", r"[\\d.]+", re.escape(line))
        assert re.search(pattern, output), f"README.md line {block.line}: {line!r} not in the output:\n{output[-3000:]}"


def test_parse_readme_reads_directives_and_rejects_unknown_ones(tmp_path: Path) -> None:
    text = "# T\n\n<!-- readme-test: daemon http -->\n\n```sh\necho hi\n```\n\n```\nplain\n```\n"
    blocks = parse_readme(text)
    assert [(b.line, b.kind, sorted(b.directive.words)) for b in blocks] == [
        (5, "shell", ["daemon", "http"]), (9, None, [])]
    assert blocks[0].text == "echo hi\n" and blocks[0].test_id == "t-L5-sh"
    with pytest.raises(ReadmeFormatError, match="line 1: unknown readme-test word"):
        parse_readme("<!-- readme-test: dameon -->\n```sh\nx\n```\n")
    with pytest.raises(ReadmeFormatError, match=r"needs a reason"):
        parse_readme("<!-- readme-test: skip -->\n```sh\nx\n```\n")
    with pytest.raises(ReadmeFormatError, match="not followed by a code block"):
        parse_readme("<!-- readme-test: daemon -->\ntext\n```sh\nx\n```\n")


def test_sample_output_lines_match_with_any_numbers() -> None:
    block = Block(1, "", "INFO    x: job_completed id=1 duration=0.1ms result=3\n", "h")
    _check_sample_output(block, "2026-11-30 15:35:07,826 INFO    x: job_completed id=12 duration=10.25ms result=7\n")
    with pytest.raises(AssertionError, match="not in the output"):
        _check_sample_output(block, "INFO    x: job_failed id=12 duration=10.25ms result=7\n")


def test_toml_text_round_trips_the_shipped_config() -> None:
    data = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    data = merge(data, {"http": {"enabled": True, "port": 1}, "cron": [{"worker": "w", "args": {"a": [1, 2.5]}}],
                        "topics": {"demo": {"backoff": {"max": float("inf")}}, "x y": {}}})
    assert tomllib.loads(toml_text(data)) == data
