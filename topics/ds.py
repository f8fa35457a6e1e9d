"""The ds topic: a data-science job that runs as its own Python process.

    python -m jobrunner enqueue topics.ds.DescribeCsv --args '{"rows": 5000, "seed": 7}'
    python -m jobrunner enqueue topics.ds.DescribeCsv --args '{"csv": "/data/sales.csv"}'

``perform`` starts ``python -m topics.ds_compute`` and hands the process back: the job
keeps its parallelism slot while the process computes, and ``after_async`` reports the
output file (``options.output_dir``, default ``ds-output``) as the job's result. A
non-zero exit fails the attempt with the exit code and the tail of stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from jobrunner import Cancel, Job, Worker
from jobrunner.process import ExternalProcess, ProcessOutcome


class DescribeCsv(Worker):
    """Statistics over a generated (``rows``, ``seed``) or given (``csv``) CSV file."""

    topic = "ds"
    max_attempts = 3
    timeout = 3600

    def output_path(self, job: Job) -> Path:
        """Where the job writes its statistics."""
        return Path(str(self.options.get("output_dir", "ds-output"))).resolve() / f"job-{job.id}.json"

    async def perform(self, job: Job) -> Any:
        argv = [sys.executable, "-m", "topics.ds_compute", "--output", str(self.output_path(job))]
        if "csv" in job.args:
            argv += ["--csv", str(job.args["csv"])]
        else:
            rows, seed = job.args.get("rows", 1000), job.args.get("seed", 0)
            if not isinstance(rows, int) or not isinstance(seed, int):
                return Cancel("args.rows and args.seed must be integers")
            argv += ["--rows", str(rows), "--seed", str(seed)]
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent),
        )
        return ExternalProcess(process)

    async def after_async(self, job: Job, outcome: ProcessOutcome) -> Any:
        return {"output": str(self.output_path(job)), "exit_code": outcome.exit_code}
