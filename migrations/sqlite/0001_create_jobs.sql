-- jobrunner schema version 1: the jobs table and the indexes its hot queries use.
-- Timestamps are POSIX seconds (UTC) as REAL; JSON columns hold JSON text.
CREATE TABLE jobrunner_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    worker TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'available',
    priority INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 50,
    errors TEXT NOT NULL DEFAULT '[]',
    result TEXT,
    inserted_at REAL NOT NULL,
    scheduled_at REAL NOT NULL,
    attempted_at REAL,
    completed_at REAL,
    discarded_at REAL,
    cancelled_at REAL,
    attempted_by TEXT
);

-- The claim: WHERE topic = ? AND state = 'available' ORDER BY priority, scheduled_at, id.
CREATE INDEX ix_jobrunner_jobs_claim ON jobrunner_jobs (topic, state, priority, scheduled_at, id);

-- Staging scheduled/retryable jobs that came due: WHERE topic = ? AND state = ? AND scheduled_at <= now.
CREATE INDEX ix_jobrunner_jobs_due ON jobrunner_jobs (topic, state, scheduled_at);
