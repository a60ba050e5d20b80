-- The evolver: its runs, the one summary of each session it has read, the candidates it
-- proposed with their verdicts, and the lease that keeps runs one at a time.

CREATE TABLE evolver_runs (
    id          TEXT PRIMARY KEY,
    trigger     TEXT NOT NULL,
    -- `running`, `finished` or `failed`.
    status      TEXT NOT NULL,
    -- JSON: counts, redactions, and per step its LLM calls, tokens and duration.
    report      TEXT NOT NULL DEFAULT '{}',
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);

CREATE TABLE session_summaries (
    session_id   TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- The whole record as JSON (redacted request, summary, skills read, score).
    record       TEXT NOT NULL,
    score        REAL NOT NULL,
    score_source TEXT NOT NULL
);
CREATE INDEX session_summaries_time ON session_summaries (updated_at);

CREATE TABLE evolver_candidates (
    id         TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES evolver_runs (id),
    slug       TEXT NOT NULL,
    status     TEXT NOT NULL,
    -- The whole candidate as JSON: action, SKILL.md, rationale, evidence, verdict.
    record     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX evolver_candidates_run ON evolver_candidates (run_id);
CREATE INDEX evolver_candidates_status ON evolver_candidates (status);

CREATE TABLE evolver_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
