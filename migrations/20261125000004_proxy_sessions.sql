-- Sessions recorded from the OpenAI-compatible endpoint ("proxy mode"): where a session
-- came from, and the client's own session id when it sent one (X-Session-Id).
ALTER TABLE sessions ADD COLUMN source TEXT NOT NULL DEFAULT 'agent';
ALTER TABLE sessions ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX sessions_external ON sessions (user_id, external_id) WHERE external_id IS NOT NULL;
