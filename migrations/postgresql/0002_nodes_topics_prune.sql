-- jobrunner schema version 2: node heartbeats (crash rescue), topic controls (pause),
-- and indexes that let pruning find old finished jobs without scanning the table.
CREATE TABLE jobrunner_nodes (
    node TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE jobrunner_topics (
    topic TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Rescue: executing jobs of nodes that stopped beating.
CREATE INDEX ix_jobrunner_jobs_attempted_by ON jobrunner_jobs (attempted_by) WHERE state = 'executing';

-- Pruning, one partial index per final state (only final rows are in each).
CREATE INDEX ix_jobrunner_jobs_completed ON jobrunner_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX ix_jobrunner_jobs_cancelled ON jobrunner_jobs (cancelled_at) WHERE state = 'cancelled';
CREATE INDEX ix_jobrunner_jobs_discarded ON jobrunner_jobs (discarded_at) WHERE state = 'discarded';
