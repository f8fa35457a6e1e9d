-- jobrunner schema version 8: job metadata, unique jobs and dependencies.
-- tags (JSON list of strings) and meta (JSON object) are given at enqueue; progress
-- (0..1) is written by perform while the job runs.
ALTER TABLE jobrunner_jobs ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobrunner_jobs ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobrunner_jobs ADD COLUMN progress DOUBLE PRECISION;

-- Unique jobs: a hash of topic, worker and the arguments that count. An enqueue looks
-- for a job with the same key inserted within the period, in the states that count.
ALTER TABLE jobrunner_jobs ADD COLUMN unique_key TEXT;
CREATE INDEX ix_jobrunner_jobs_unique ON jobrunner_jobs (unique_key, inserted_at) WHERE unique_key IS NOT NULL;

-- Dependencies: job_id runs once depends_on completed. on_failure says what happens to
-- job_id when depends_on ends discarded or cancelled: 'cancel' it, or 'run' it anyway.
-- A job waiting for its dependencies is in state 'blocked' (never claimed); the
-- transaction that finishes its last dependency releases it.
CREATE TABLE jobrunner_dependencies (
    job_id BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    on_failure TEXT NOT NULL DEFAULT 'cancel',
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX ix_jobrunner_dependencies_depends_on ON jobrunner_dependencies (depends_on);
