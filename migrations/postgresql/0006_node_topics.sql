-- jobrunner schema version 5: the topics each node runs (a JSON list), recorded when the
-- node starts, so `python -m jobrunner nodes` can say which node serves what.
ALTER TABLE jobrunner_nodes ADD COLUMN topics TEXT NOT NULL DEFAULT '[]';
