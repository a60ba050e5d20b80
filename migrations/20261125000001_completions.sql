-- Usage log of the OpenAI-compatible endpoint: one row per chat completion served.
CREATE TABLE completions (
    id                TEXT PRIMARY KEY,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    model             TEXT NOT NULL,
    streamed          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    outcome           TEXT NOT NULL
);
CREATE INDEX completions_created_at ON completions (created_at);
