-- The shared skill repository: skills, their immutable versions and files, and the log of
-- publications that sync clients follow. File contents live on disk as content-addressed
-- blobs (`blobs/<first two hex>/<sha256>`); the database holds their hashes.

-- A skill is a slug within a scope: `shared`, `group:<name>` or `user:<user id>` (private).
-- The same slug may exist in several scopes; a caller sees the most specific one.
CREATE TABLE skills (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    slug           TEXT NOT NULL,
    scope          TEXT NOT NULL,
    -- The `latest` tag.
    latest_version TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- Deletion is soft: the skill disappears from every listing, its versions stay.
    deleted_at     INTEGER,
    UNIQUE (slug, scope)
);
CREATE INDEX skills_scope ON skills (scope);

CREATE TABLE skill_versions (
    skill_id       INTEGER NOT NULL REFERENCES skills (id),
    version        TEXT NOT NULL,
    -- Publication order within the skill.
    seq            INTEGER NOT NULL,
    description    TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    -- `user`, `evolver` or `system`, and the user id or evolver run id.
    author_kind    TEXT NOT NULL CHECK (author_kind IN ('user', 'evolver', 'system')),
    author_id      TEXT,
    changelog      TEXT NOT NULL,
    parent_version TEXT,
    -- JSON: where the version came from (evolver run, evidence, A/B numbers, rollback source).
    provenance     TEXT NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (skill_id, version),
    UNIQUE (skill_id, seq)
);
CREATE INDEX skill_versions_fingerprint ON skill_versions (skill_id, fingerprint);

CREATE TABLE skill_files (
    skill_id INTEGER NOT NULL,
    version  TEXT NOT NULL,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    PRIMARY KEY (skill_id, version, path),
    FOREIGN KEY (skill_id, version) REFERENCES skill_versions (skill_id, version)
);

-- A published version never changes and is never removed; the database refuses it.
CREATE TRIGGER skill_versions_immutable BEFORE UPDATE ON skill_versions
BEGIN SELECT RAISE(ABORT, 'skill versions are immutable'); END;
CREATE TRIGGER skill_versions_permanent BEFORE DELETE ON skill_versions
BEGIN SELECT RAISE(ABORT, 'skill versions are immutable'); END;
CREATE TRIGGER skill_files_immutable BEFORE UPDATE ON skill_files
BEGIN SELECT RAISE(ABORT, 'skill files are immutable'); END;
CREATE TRIGGER skill_files_permanent BEFORE DELETE ON skill_files
BEGIN SELECT RAISE(ABORT, 'skill files are immutable'); END;

-- Every change a sync client must learn of, in order. `cursor` is what `?since=` takes.
CREATE TABLE skill_changes (
    cursor     INTEGER PRIMARY KEY AUTOINCREMENT,
    skill_id   INTEGER NOT NULL REFERENCES skills (id),
    slug       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    -- `publish`, `rollback` or `delete`.
    kind       TEXT NOT NULL,
    version    TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX skill_changes_scope ON skill_changes (scope, cursor);

-- Membership of the groups that `group:<name>` scopes name.
CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
