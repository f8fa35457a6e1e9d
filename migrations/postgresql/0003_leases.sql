-- jobrunner schema version 3: leases of jobs claimed by external workers over HTTP.
-- A job claimed this way is 'executing' with a lease; when the lease expires without
-- a complete, fail or extend, the job goes back to the queue.
CREATE TABLE jobrunner_leases (
    job_id BIGINT PRIMARY KEY,
    attempt INTEGER NOT NULL,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX ix_jobrunner_leases_expires_at ON jobrunner_leases (expires_at);
