-- jobrunner schema version 9: the due index holds only the jobs that wait for a time.
-- Staging reads scheduled and retryable jobs by due time; the claim, acks and the counts
-- per state use ix_jobrunner_jobs_claim. Jobs that become available, run and finish no
-- longer touch this index, which makes each claim/ack transaction cheaper.
DROP INDEX ix_jobrunner_jobs_due;
CREATE INDEX ix_jobrunner_jobs_due ON jobrunner_jobs (topic, state, scheduled_at) WHERE state IN ('scheduled', 'retryable');
