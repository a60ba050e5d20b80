-- Browser sign-in and account administration. A password is stored as an argon2id hash
-- (NULL: the user signs in with an API token only). A disabled user is refused by every
-- way in. A browser session is a random secret in an HttpOnly cookie; like tokens, only its
-- sha256 is stored, so a leaked database does not sign anyone in.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;

CREATE TABLE web_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Unix seconds after which the cookie no longer signs in.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
