"""The demo topic: the classic example jobs.

    python -m jobrunner enqueue topics.demo.PrintMessage --args '{"message": "hello"}'
    python -m jobrunner enqueue topics.demo.PrintSum --args '{"a": 1, "b": 2}'
    python -m jobrunner enqueue topics.demo.FlakyJob --args '{"fail_times": 2}'
"""

from __future__ import annotations

from jobrunner import Job, Worker


class PrintMessage(Worker):
    """Prints ``args["message"]`` and returns it."""

    topic = "demo"

    async def perform(self, job: Job) -> str:
        message = str(job.args.get("message", ""))
        print(f"[job {job.id}] {message}", flush=True)
        return message


class PrintSum(Worker):
    """Prints and returns ``args["a"] + args["b"]``."""

    topic = "demo"

    async def perform(self, job: Job) -> float:
        total = job.args["a"] + job.args["b"]
        print(f"[job {job.id}] {job.args['a']} + {job.args['b']} = {total}", flush=True)
        return total


class FlakyJob(Worker):
    """Fails its first ``args["fail_times"]`` attempts (default 2), then succeeds.

    Shows retries: each failure is recorded in the job's ``errors`` and the job runs
    again after the topic's backoff.
    """

    topic = "demo"
    max_attempts = 5

    async def perform(self, job: Job) -> dict[str, int]:
        fail_times = int(job.args.get("fail_times", 2))
        if job.attempt <= fail_times:
            raise RuntimeError(f"simulated failure on attempt {job.attempt} of {fail_times} planned")
        print(f"[job {job.id}] succeeded on attempt {job.attempt}", flush=True)
        return {"attempts": job.attempt}
