-- The whole schema on PostgreSQL, in one step: the same tables, rules and triggers as the
-- SQLite migrations one directory up (which stay as they landed), written for PostgreSQL.
-- Times that the API shows as text are kept as ISO-8601 text in UTC, as on SQLite.

CREATE FUNCTION iso_now() RETURNS TEXT LANGUAGE SQL STABLE
AS $$ SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- Usage log of the OpenAI-compatible endpoint: one row per chat completion served.
CREATE TABLE completions (
    id                TEXT PRIMARY KEY,
    created_at        TEXT NOT NULL DEFAULT iso_now(),
    model             TEXT NOT NULL,
    streamed          BOOLEAN NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    outcome           TEXT NOT NULL
);
CREATE INDEX completions_created_at ON completions (created_at);

-- Users and their API tokens, stored as sha256 hashes.
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_admin   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL DEFAULT iso_now()
);

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT iso_now()
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Server nodes: each records itself alive every few seconds.
CREATE TABLE nodes (
    id      TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);

-- Agent sessions, their ordered event logs (the trajectories) and user feedback.
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    model       TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'idle',
    history     TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL DEFAULT iso_now(),
    updated_at  TEXT NOT NULL DEFAULT iso_now(),
    source      TEXT NOT NULL DEFAULT 'agent',
    external_id TEXT,
    -- The node running the session's turn, while one runs.
    node_id     TEXT,
    -- Archived sessions leave the default listing and keep everything.
    archived    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE UNIQUE INDEX sessions_external ON sessions (user_id, external_id) WHERE external_id IS NOT NULL;

-- Events are numbered twice. `arrival` as they are written, concurrently, so that the
-- numbers of concurrent writers may commit out of order. `id`, the cursor of
-- `GET /api/trajectories?since=`, only once committed: a reader first numbers the user's
-- unnumbered events in arrival order, under a lock, so an event that commits late gets a
-- higher cursor than any a reader has seen and no follower ever steps over one.
CREATE SEQUENCE event_cursors;
CREATE TABLE events (
    arrival    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         BIGINT UNIQUE,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT iso_now(),
    UNIQUE (session_id, seq)
);
CREATE INDEX events_user ON events (user_id, id);
CREATE INDEX events_unnumbered ON events (user_id, arrival) WHERE id IS NULL;

CREATE TABLE feedback (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    turn       BIGINT,
    rating     TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment    TEXT,
    created_at TEXT NOT NULL DEFAULT iso_now()
);

-- An event and a rating belong to the user who owns their session, whatever SQL writes them.
CREATE FUNCTION belongs_to_session_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS DISTINCT FROM (SELECT user_id FROM sessions WHERE id = NEW.session_id) THEN
        RAISE EXCEPTION 'an event or rating must belong to the owner of its session';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_belong_to_the_session_owner BEFORE INSERT OR UPDATE OF user_id, session_id ON events
    FOR EACH ROW EXECUTE FUNCTION belongs_to_session_owner();
CREATE TRIGGER feedback_belongs_to_the_session_owner BEFORE INSERT OR UPDATE OF user_id, session_id ON feedback
    FOR EACH ROW EXECUTE FUNCTION belongs_to_session_owner();

-- Proxy mode's conversation states (see the SQLite migration of the same name).
CREATE TABLE proxy_conversations (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('request', 'reply')),
    answered    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TEXT NOT NULL DEFAULT iso_now(),
    PRIMARY KEY (session_id, kind, fingerprint)
);
CREATE INDEX proxy_conversations_lookup ON proxy_conversations (user_id, fingerprint);

-- The skill repository. File contents live in `skill_blobs`, under their SHA-256, so
-- that nodes on several machines share them without a shared filesystem.
CREATE TABLE skill_blobs (
    sha256  TEXT PRIMARY KEY,
    content BYTEA NOT NULL
);

CREATE TABLE skills (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug           TEXT NOT NULL,
    scope          TEXT NOT NULL,
    latest_version TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    deleted_at     BIGINT,
    UNIQUE (slug, scope)
);
CREATE INDEX skills_scope ON skills (scope);

CREATE TABLE skill_versions (
    skill_id       BIGINT NOT NULL REFERENCES skills (id),
    version        TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    description    TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    author_kind    TEXT NOT NULL CHECK (author_kind IN ('user', 'evolver', 'system')),
    author_id      TEXT,
    changelog      TEXT NOT NULL,
    parent_version TEXT,
    provenance     TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (skill_id, version),
    UNIQUE (skill_id, seq)
);
CREATE INDEX skill_versions_fingerprint ON skill_versions (skill_id, fingerprint);

CREATE TABLE skill_files (
    skill_id BIGINT NOT NULL,
    version  TEXT NOT NULL,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL REFERENCES skill_blobs (sha256),
    size     BIGINT NOT NULL,
    PRIMARY KEY (skill_id, version, path),
    FOREIGN KEY (skill_id, version) REFERENCES skill_versions (skill_id, version)
);

-- A published version never changes and is never removed; the database refuses it, and
-- so are the blobs its files point at.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are immutable', TG_ARGV[0];
END $$;
CREATE TRIGGER skill_versions_immutable BEFORE UPDATE OR DELETE ON skill_versions
    FOR EACH ROW EXECUTE FUNCTION refuse_change('skill versions');
CREATE TRIGGER skill_files_immutable BEFORE UPDATE OR DELETE ON skill_files
    FOR EACH ROW EXECUTE FUNCTION refuse_change('skill files');
CREATE TRIGGER skill_blobs_immutable BEFORE UPDATE OR DELETE ON skill_blobs
    FOR EACH ROW EXECUTE FUNCTION refuse_change('skill blobs');
CREATE TRIGGER skill_versions_not_truncated BEFORE TRUNCATE ON skill_versions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('skill versions');
CREATE TRIGGER skill_files_not_truncated BEFORE TRUNCATE ON skill_files
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('skill files');

-- Every change a sync client must learn of, in order. Writers take a lock first, so
-- cursors become visible in order.
CREATE TABLE skill_changes (
    cursor     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    skill_id   BIGINT NOT NULL REFERENCES skills (id),
    slug       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    version    TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX skill_changes_scope ON skill_changes (scope, cursor);

CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

-- Every node listens on channel `skillhive`: a new change, or a change to who may see what,
-- reaches all of them at once, whichever process (a node, the CLI, hand-written SQL)
-- made it.
CREATE FUNCTION notify_nodes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skillhive', TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE TRIGGER skill_changes_notify AFTER INSERT ON skill_changes
    FOR EACH STATEMENT EXECUTE FUNCTION notify_nodes('skills');
CREATE TRIGGER api_tokens_notify AFTER DELETE OR UPDATE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION notify_nodes('auth');
CREATE TRIGGER group_members_notify AFTER INSERT OR DELETE OR UPDATE ON group_members
    FOR EACH STATEMENT EXECUTE FUNCTION notify_nodes('auth');
CREATE TRIGGER users_notify AFTER DELETE OR UPDATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_nodes('auth');

-- The evolver: runs, session summaries, candidates, and the lease that keeps runs one at
-- a time across every node.
CREATE TABLE evolver_runs (
    id          TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    report      TEXT NOT NULL DEFAULT '{}',
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE session_summaries (
    session_id   TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    record       TEXT NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    score_source TEXT NOT NULL
);
CREATE INDEX session_summaries_time ON session_summaries (updated_at);

CREATE TABLE evolver_candidates (
    id         TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES evolver_runs (id),
    slug       TEXT NOT NULL,
    status     TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX evolver_candidates_run ON evolver_candidates (run_id);
CREATE INDEX evolver_candidates_status ON evolver_candidates (status);

CREATE TABLE evolver_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
