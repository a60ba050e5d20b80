//! The SQLite backend: one database file in the data directory (WAL mode), its own
//! migrations (`migrations/` at the repository root, compiled in), and the implementations
//! of the storage traits on it.

mod accounts;
pub mod evolver;
pub mod skills;

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::storage::{
    CompletionRecord, ConversationMatch, ConversationState, CreateUserError, Feedback, Session, SessionChange, SessionStatus, Signal,
    Store, StoredEvent, TokenCache, User,
};
use crate::storage::{EventRow, SessionRow, SessionSummary, SummaryRow, TokenInfo, TOKEN_ID_LEN};

/// Fingerprints asked about in one query; SQLite bounds the parameters of a statement.
const FINGERPRINTS_PER_QUERY: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    tokens: TokenCache,
    /// A SQLite file has one server node, so signals stay in this process.
    signals: tokio::sync::broadcast::Sender<Signal>,
}

/// How long a token lookup is trusted before the database is asked again: a token
/// revoked from the command line (another process, which cannot signal this one) stops
/// working within this time.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The migrations at the repository root, compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            // WAL lets readers proceed while a writer commits; NORMAL sync is durable
            // across process crashes in WAL mode, which is what acknowledged writes need.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A write that fails part-way (disk full, an I/O error) can leave its
            // connection inside a transaction that sqlx no longer knows about. Statements
            // on that connection would then join the dead transaction: answered as done,
            // never committed, while it holds the write lock and every other writer gets
            // "database is locked". So every connection is checked as it leaves the pool:
            // a ROLLBACK that succeeds means it was inside such a transaction, and the
            // connection is closed instead of used.
            .before_acquire(|connection, _| {
                Box::pin(async move {
                    match sqlx::query("ROLLBACK").execute(&mut *connection).await {
                        Ok(_) => {
                            tracing::warn!("a database connection was left inside a failed transaction; closed it");
                            Ok(false)
                        }
                        Err(_) => Ok(true),
                    }
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, tokens: TokenCache::new(TOKEN_CACHE_TTL), signals: tokio::sync::broadcast::channel(256).0 })
    }

    /// The connection pool, for the other stores that share this database file.
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn heartbeat(&self, node: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO nodes (id, seen_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at")
            .bind(node)
            .bind(crate::storage::evolver::now_secs())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_interrupted_sessions(&self, node: &str, stale_after: std::time::Duration) -> anyhow::Result<u64> {
        let seen_after = crate::storage::evolver::now_secs() - stale_after.as_secs() as i64;
        let done = sqlx::query(
            "UPDATE sessions SET status = ?, node_id = NULL, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE status = ? AND (node_id IS NULL OR node_id != ?)
             AND (? = 0 OR node_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = sessions.node_id AND nodes.seen_at >= ?))",
        )
        .bind(SessionStatus::Interrupted.as_str())
        .bind(SessionStatus::Running.as_str())
        .bind(node)
        .bind(stale_after.as_secs() as i64)
        .bind(seen_after)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn claim_turn(&self, user_id: &str, session_id: &str, node: &str) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET status = ?, node_id = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE user_id = ? AND id = ? AND status != ?",
        )
        .bind(SessionStatus::Running.as_str())
        .bind(node)
        .bind(user_id)
        .bind(session_id)
        .bind(SessionStatus::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn turn_node(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT node_id FROM sessions WHERE user_id = ? AND id = ? AND status = ?")
            .bind(user_id)
            .bind(session_id)
            .bind(SessionStatus::Running.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|(node,)| node))
    }

    async fn revoke_tokens(&self, user_id: &str) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = ?").bind(user_id).execute(&self.pool).await?;
        self.tokens.clear();
        self.send_signal(Signal::AuthChanged).await?;
        Ok(done.rows_affected())
    }

    async fn tokens(&self, user_id: &str) -> anyhow::Result<Vec<TokenInfo>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT substr(token_hash, 1, 16), created_at FROM api_tokens WHERE user_id = ? ORDER BY created_at, token_hash",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, created_at)| TokenInfo { id, created_at }).collect())
    }

    async fn revoke_token(&self, user_id: &str, token_id: &str) -> anyhow::Result<bool> {
        if token_id.len() != TOKEN_ID_LEN || !token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = ? AND substr(token_hash, 1, 16) = ?")
            .bind(user_id)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        self.tokens.clear();
        self.send_signal(Signal::AuthChanged).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn send_signal(&self, signal: Signal) -> anyhow::Result<()> {
        if signal == Signal::AuthChanged {
            self.tokens.clear();
        }
        // No receiver is not an error: nothing in this process is waiting for it.
        let _ = self.signals.send(signal);
        Ok(())
    }

    fn signals(&self) -> tokio::sync::broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    async fn record_completion(&self, r: &CompletionRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO completions (id, model, streamed, prompt_tokens, completion_tokens, latency_ms, outcome)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.model)
        .bind(r.streamed)
        .bind(r.prompt_tokens)
        .bind(r.completion_tokens)
        .bind(r.latency_ms)
        .bind(&r.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn completion_count(&self) -> anyhow::Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM completions").fetch_one(&self.pool).await?;
        Ok(count)
    }

    async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, CreateUserError> {
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = sqlx::query("INSERT INTO users (id, name, is_admin) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(is_admin)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(User { id, name: name.to_string(), is_admin }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(CreateUserError::NameTaken(name.to_string())),
            Err(e) => Err(CreateUserError::Other(e.into())),
        }
    }

    async fn add_token(&self, user_id: &str, token_hash: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO api_tokens (token_hash, user_id) VALUES (?, ?)")
            .bind(token_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_by_token(&self, token_hash: &str) -> anyhow::Result<Option<User>> {
        if let Some(user) = self.tokens.get(token_hash) {
            return Ok(Some(user));
        }
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT users.id, users.name, users.is_admin FROM api_tokens JOIN users ON users.id = api_tokens.user_id
             WHERE api_tokens.token_hash = ? AND users.disabled = 0",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.map(|(id, name, is_admin)| User { id, name, is_admin });
        if let Some(user) = &user {
            self.tokens.insert(token_hash, user);
        }
        Ok(user)
    }

    async fn create_session(&self, user_id: &str, title: &str, model: &str) -> anyhow::Result<Session> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO sessions (id, user_id, title, model) VALUES (?, ?, ?, ?)")
            .bind(&id)
            .bind(user_id)
            .bind(title)
            .bind(model)
            .execute(&self.pool)
            .await?;
        self.get_session(user_id, &id).await?.ok_or_else(|| anyhow::anyhow!("session vanished after insert"))
    }

    async fn proxy_session(&self, user_id: &str, external_id: Option<&str>, model: &str) -> anyhow::Result<Session> {
        if let Some(external) = external_id {
            let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM sessions WHERE user_id = ? AND external_id = ?")
                .bind(user_id)
                .bind(external)
                .fetch_optional(&self.pool)
                .await?;
            if let Some((id,)) = existing {
                return self.get_session(user_id, &id).await?.ok_or_else(|| anyhow::anyhow!("proxy session vanished"));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let title = external_id.map(|e| format!("proxy {e}")).unwrap_or_else(|| "proxy".into());
        // Two first requests with the same client id may race; the unique index lets one
        // insert win and the other find it.
        sqlx::query(
            "INSERT INTO sessions (id, user_id, title, model, source, external_id) VALUES (?, ?, ?, ?, 'proxy', ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&title)
        .bind(model)
        .bind(external_id)
        .execute(&self.pool)
        .await?;
        let id = match external_id {
            Some(external) => {
                let (id,): (String,) = sqlx::query_as("SELECT id FROM sessions WHERE user_id = ? AND external_id = ?")
                    .bind(user_id)
                    .bind(external)
                    .fetch_one(&self.pool)
                    .await?;
                id
            }
            None => id,
        };
        self.get_session(user_id, &id).await?.ok_or_else(|| anyhow::anyhow!("proxy session vanished"))
    }

    async fn find_conversation_states(
        &self,
        user_id: &str,
        session: Option<&str>,
        fingerprints: &[String],
    ) -> anyhow::Result<Vec<ConversationMatch>> {
        let mut found: Vec<(i64, ConversationMatch)> = Vec::new();
        for chunk in fingerprints.chunks(FINGERPRINTS_PER_QUERY) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = match session {
                Some(_) => format!(
                    "SELECT c.rowid, c.session_id, c.fingerprint, c.kind FROM proxy_conversations c
                     WHERE c.user_id = ? AND c.session_id = ? AND c.fingerprint IN ({placeholders})"
                ),
                None => format!(
                    "SELECT c.rowid, c.session_id, c.fingerprint, c.kind FROM proxy_conversations c
                     JOIN sessions s ON s.id = c.session_id
                     WHERE c.user_id = ? AND s.source = 'proxy' AND s.external_id IS NULL AND c.fingerprint IN ({placeholders})"
                ),
            };
            let mut query = sqlx::query_as::<_, (i64, String, String, String)>(&sql).bind(user_id);
            if let Some(session) = session {
                query = query.bind(session);
            }
            for fingerprint in chunk {
                query = query.bind(fingerprint);
            }
            for (rowid, session_id, fingerprint, kind) in query.fetch_all(&self.pool).await? {
                found.push((rowid, ConversationMatch { session_id, fingerprint, state: ConversationState::parse(&kind)? }));
            }
        }
        found.sort_by_key(|(rowid, _)| std::cmp::Reverse(*rowid));
        Ok(found.into_iter().map(|(_, m)| m).collect())
    }

    async fn add_conversation_state(
        &self,
        user_id: &str,
        session_id: &str,
        state: ConversationState,
        fingerprint: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO proxy_conversations (session_id, user_id, fingerprint, kind)
             SELECT id, user_id, ?, ? FROM sessions WHERE id = ? AND user_id = ?
             ON CONFLICT DO NOTHING",
        )
        .bind(fingerprint)
        .bind(state.as_str())
        .bind(session_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_reply(&self, user_id: &str, session_id: &str, fingerprint: &str) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE proxy_conversations SET answered = 1
             WHERE user_id = ? AND session_id = ? AND kind = ? AND fingerprint = ? AND answered = 0",
        )
        .bind(user_id)
        .bind(session_id)
        .bind(ConversationState::Request.as_str())
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn last_event(&self, user_id: &str, session_id: &str, kind: &str) -> anyhow::Result<Option<StoredEvent>> {
        let row: Option<EventRow> = sqlx::query_as(
            "SELECT id, session_id, seq, kind, payload, created_at FROM events
             WHERE user_id = ? AND session_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(session_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredEvent::try_from).transpose()
    }

    async fn list_sessions(&self, user_id: &str) -> anyhow::Result<Vec<Session>> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT id, title, model, status, created_at, updated_at, archived FROM sessions WHERE user_id = ? ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    async fn session_summaries(&self, user_id: &str) -> anyhow::Result<std::collections::HashMap<String, SessionSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT session_id,
                    COALESCE(SUM(kind = 'model_call'), 0),
                    COALESCE(SUM(CASE WHEN kind = 'model_call' THEN json_extract(payload, '$.prompt_tokens') END), 0),
                    COALESCE(SUM(CASE WHEN kind = 'model_output' THEN json_extract(payload, '$.completion_tokens') END), 0),
                    COALESCE(SUM(CASE WHEN kind = 'model_call' THEN json_extract(payload, '$.latency_ms') END), 0),
                    (SELECT json_extract(s.payload, '$.reason') FROM events s
                      WHERE s.session_id = e.session_id AND s.kind = 'stop' ORDER BY s.seq DESC LIMIT 1)
             FROM events e WHERE user_id = ? GROUP BY session_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(crate::storage::summary_entry).collect())
    }

    async fn get_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<Session>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT id, title, model, status, created_at, updated_at, archived FROM sessions WHERE user_id = ? AND id = ?")
                .bind(user_id)
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Session::from))
    }

    async fn session_history(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT history FROM sessions WHERE user_id = ? AND id = ?")
            .bind(user_id)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(h,)| h))
    }

    async fn update_session(&self, user_id: &str, session_id: &str, status: SessionStatus, history: Option<&str>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE sessions SET status = ?1, history = COALESCE(?2, history),
             node_id = CASE WHEN ?1 = 'running' THEN node_id END,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE user_id = ?3 AND id = ?4",
        )
        .bind(status.as_str())
        .bind(history)
        .bind(user_id)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn append_event(&self, user_id: &str, session_id: &str, kind: &str, payload: &serde_json::Value) -> anyhow::Result<i64> {
        let (seq,): (i64,) = sqlx::query_as(
            "INSERT INTO events (session_id, user_id, seq, kind, payload)
             SELECT ?1, ?2, COALESCE(MAX(seq), 0) + 1, ?3, ?4 FROM events WHERE session_id = ?1
             RETURNING seq",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(kind)
        .bind(payload.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(seq)
    }

    async fn session_events(&self, user_id: &str, session_id: &str) -> anyhow::Result<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, session_id, seq, kind, payload, created_at FROM events WHERE user_id = ? AND session_id = ? ORDER BY seq",
        )
        .bind(user_id)
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn events_since(&self, user_id: &str, since: i64, limit: i64) -> anyhow::Result<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, session_id, seq, kind, payload, created_at FROM events WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(user_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn user_by_name(&self, name: &str) -> anyhow::Result<Option<User>> {
        let row: Option<(String, String, bool)> =
            sqlx::query_as("SELECT id, name, is_admin FROM users WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|(id, name, is_admin)| User { id, name, is_admin }))
    }

    async fn import_session(&self, user_id: &str, imported: &agent::import::ImportedSession) -> anyhow::Result<Option<Session>> {
        let external_id = format!("{}:{}", imported.source, imported.external_id);
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, title, model, source, external_id) VALUES (?, ?, ?, 'imported', ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&imported.title)
        .bind(imported.source)
        .bind(&external_id)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        for (seq, event) in imported.events.iter().enumerate() {
            sqlx::query("INSERT INTO events (session_id, user_id, seq, kind, payload) VALUES (?, ?, ?, ?, ?)")
                .bind(&id)
                .bind(user_id)
                .bind(seq as i64 + 1)
                .bind(event.kind())
                .bind(serde_json::to_string(event)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_session(user_id, &id).await
    }

    async fn feedback(&self, user_id: &str, session_id: &str) -> anyhow::Result<Vec<Feedback>> {
        let rows: Vec<(Option<i64>, String, Option<String>, String)> =
            sqlx::query_as("SELECT turn, rating, comment, created_at FROM feedback WHERE user_id = ? AND session_id = ? ORDER BY id")
                .bind(user_id)
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(turn, rating, comment, created_at)| Feedback { turn, rating, comment, created_at }).collect())
    }

    async fn change_session(&self, user_id: &str, session_id: &str, change: &SessionChange) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET title = COALESCE(?, title), archived = COALESCE(?, archived), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE user_id = ? AND id = ?",
        )
        .bind(change.title.as_deref())
        .bind(change.archived)
        .bind(user_id)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<bool> {
        // Its events, ratings, conversation states and summary go with it (the schema
        // cascades).
        let done =
            sqlx::query("DELETE FROM sessions WHERE user_id = ? AND id = ?").bind(user_id).bind(session_id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_feedback(
        &self,
        user_id: &str,
        session_id: &str,
        turn: Option<i64>,
        rating: &str,
        comment: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO feedback (session_id, user_id, turn, rating, comment) VALUES (?, ?, ?, ?, ?)")
            .bind(session_id)
            .bind(user_id)
            .bind(turn)
            .bind(rating)
            .bind(comment)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_is_created_migrated_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skillhive.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .record_completion(&CompletionRecord {
                id: "c1".into(),
                model: "m".into(),
                streamed: false,
                prompt_tokens: 3,
                completion_tokens: 4,
                latency_ms: 5,
                outcome: "ok".into(),
            })
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening runs the migrations again, which must be a no-op that keeps the data.
        let reopened = SqliteStore::open(&path).await.unwrap();
        assert_eq!(reopened.completion_count().await.unwrap(), 1);
    }
}
