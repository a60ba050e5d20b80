-- Proxy mode groups requests by conversation, not by time: each row is one state of a
-- proxied conversation, as a SHA-256 fingerprint of its normalized messages, and the session
-- that records it. A request whose messages begin with a recorded `reply` state (an earlier
-- request plus the reply to it) continues that session; a request equal to a recorded
-- `request` state is a retry of it.
CREATE TABLE proxy_conversations (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    -- `request`: a request's messages; `reply`: a request's messages and the reply to it.
    kind        TEXT NOT NULL CHECK (kind IN ('request', 'reply')),
    -- For a `request` state: 1 once a reply to it is recorded, so that a retry of an
    -- answered request records no second answer.
    answered    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (session_id, kind, fingerprint)
);
CREATE INDEX proxy_conversations_lookup ON proxy_conversations (user_id, fingerprint);
