-- Browser sign-in and account administration: argon2id password hashes, disabled users,
-- and browser sessions stored as the sha256 of the cookie's secret.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE web_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL DEFAULT iso_now(),
    expires_at   BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- Ending a browser session is a change of who may sign in: every node drops its caches.
CREATE TRIGGER web_sessions_notify AFTER DELETE ON web_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_nodes('auth');
