-- jobrunner schema version 5: cron slots. One row per (schedule, slot) that a daemon
-- inserted a job for; the primary key makes a second insert of the same slot, by any
-- process on any machine, a no-op. Slots are POSIX seconds (whole numbers).
CREATE TABLE jobrunner_cron_slots (
    schedule TEXT NOT NULL,
    slot BIGINT NOT NULL,
    job_id BIGINT,
    PRIMARY KEY (schedule, slot)
);
