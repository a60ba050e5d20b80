-- Server nodes and the turns they run. A node records itself alive every few seconds; a
-- session's running turn names its node, so that a cancel can reach it and a dead node's
-- turns can be marked interrupted without touching those of live ones.
CREATE TABLE nodes (
    id      TEXT PRIMARY KEY,
    -- Unix seconds of the last heartbeat.
    seen_at INTEGER NOT NULL
);

ALTER TABLE sessions ADD COLUMN node_id TEXT;
