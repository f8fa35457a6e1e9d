-- jobrunner schema version 1: the jobs table and the indexes its hot queries use.
-- Timestamps are POSIX seconds (UTC); JSON columns hold JSON text.
CREATE TABLE jobrunner_jobs (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    worker TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'available',
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 50,
    errors TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    inserted_at DOUBLE PRECISION NOT NULL,
    scheduled_at DOUBLE PRECISION NOT NULL,
    attempted_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    discarded_at DOUBLE PRECISION,
    cancelled_at DOUBLE PRECISION,
    attempted_by TEXT
);

CREATE INDEX ix_jobrunner_jobs_claim ON jobrunner_jobs (topic, state, priority, scheduled_at, id);

CREATE INDEX ix_jobrunner_jobs_due ON jobrunner_jobs (topic, state, scheduled_at);
