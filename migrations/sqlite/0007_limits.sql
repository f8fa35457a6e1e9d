-- jobrunner schema version 7: runtime scaling and limits across nodes.
-- A topic's parallelism set at run time (scale), overriding the configured one on
-- every node until reset (NULL: the configured value).
ALTER TABLE jobrunner_topics ADD COLUMN parallelism INTEGER;

-- Starts of jobs of rate-limited topics, one row per claim, kept for one rate period:
-- a claim counts the rows of its topic (and partition) in the window. A log of its own
-- rather than the jobs' attempted_at, which a retry overwrites (two starts of one job
-- in a window would count once).
CREATE TABLE jobrunner_starts (
    topic TEXT NOT NULL,
    partition_key TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL
);

CREATE INDEX ix_jobrunner_starts_window ON jobrunner_starts (topic, started_at);
