-- jobrunner schema version 4: lease tokens. Every claim by an external worker hands out
-- a random token; completing, failing or extending the job must present it, so a worker
-- whose lease expired (the job was claimed again) or a client that never claimed the
-- job cannot conclude it. Leases taken before this version have no token: they can only
-- expire.
ALTER TABLE jobrunner_leases ADD COLUMN token TEXT NOT NULL DEFAULT '';
