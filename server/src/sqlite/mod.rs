//! The SQLite backend: one database file in the data directory (WAL mode), its own
//! migrations (`migrations/` at the repository root, compiled in), and the implementations
//! of the storage traits on it.

pub mod evolver;
pub mod skills;

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::storage::{
    CompletionRecord, ConversationMatch, ConversationState, CreateUserError, Session, SessionStatus, Store, StoredEvent, User,
};

/// Fingerprints asked about in one query; SQLite bounds the parameters of a statement.
const FINGERPRINTS_PER_QUERY: usize = 500;

type SessionRow = (String, String, String, String, String, String);
type EventRow = (i64, String, i64, String, String, String);

impl From<SessionRow> for Session {
    fn from((id, title, model, status, created_at, updated_at): SessionRow) -> Self {
        Session { id, title, model, status: SessionStatus::parse(&status), created_at, updated_at }
    }
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = anyhow::Error;
    fn try_from((id, session_id, seq, kind, payload, created_at): EventRow) -> anyhow::Result<Self> {
        Ok(StoredEvent { id, session_id, seq, kind, payload: serde_json::from_str(&payload)?, created_at })
    }
}

pub struct SqliteStore {
    pool: SqlitePool,
    /// Token hash → user, for [`TOKEN_CACHE_TTL`]. Every request authenticates, and a
    /// polling sync client must not cost a database round trip each time.
    tokens: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, User)>>,
}

/// How long a token lookup is trusted before the database is asked again (so a token
/// removed in the database stops working within this time).
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

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
        Ok(Self { pool, tokens: Default::default() })
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

    async fn mark_interrupted_sessions(&self) -> anyhow::Result<u64> {
        let done = sqlx::query("UPDATE sessions SET status = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE status = ?")
            .bind(SessionStatus::Interrupted.as_str())
            .bind(SessionStatus::Running.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
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
        if let Some((at, user)) = self.tokens.lock().expect("token cache").get(token_hash) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(Some(user.clone()));
            }
        }
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT users.id, users.name, users.is_admin FROM api_tokens JOIN users ON users.id = api_tokens.user_id
             WHERE api_tokens.token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.map(|(id, name, is_admin)| User { id, name, is_admin });
        // Only known tokens are cached: a token made a moment ago by `skillhive user add`
        // in another process must work at once.
        let mut cache = self.tokens.lock().expect("token cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        if let Some(user) = &user {
            cache.insert(token_hash.to_string(), (std::time::Instant::now(), user.clone()));
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
            "SELECT id, title, model, status, created_at, updated_at FROM sessions WHERE user_id = ? ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    async fn get_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<Session>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT id, title, model, status, created_at, updated_at FROM sessions WHERE user_id = ? AND id = ?")
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
            "UPDATE sessions SET status = ?, history = COALESCE(?, history),
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE user_id = ? AND id = ?",
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

    #[tokio::test]
    async fn conversation_states_stay_in_their_scope_and_are_answered_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let bob = store.create_user("bob", false).await.unwrap();
        let named = store.proxy_session(&alice.id, Some("ext"), "m").await.unwrap();
        let plain = store.proxy_session(&alice.id, None, "m").await.unwrap();
        assert_ne!(store.proxy_session(&alice.id, None, "m").await.unwrap().id, plain.id, "no id, a new session");
        assert_eq!(store.proxy_session(&alice.id, Some("ext"), "m").await.unwrap().id, named.id);
        for session in [&named, &plain] {
            store.add_conversation_state(&alice.id, &session.id, ConversationState::Request, "f1").await.unwrap();
        }
        store.add_conversation_state(&alice.id, &named.id, ConversationState::Reply, "f2").await.unwrap();
        // Another user's session id records nothing.
        store.add_conversation_state(&bob.id, &plain.id, ConversationState::Reply, "f2").await.unwrap();
        let wanted = ["f1".to_string(), "f2".to_string()];
        let without_id = store.find_conversation_states(&alice.id, None, &wanted).await.unwrap();
        assert_eq!(
            without_id,
            [ConversationMatch { session_id: plain.id.clone(), fingerprint: "f1".into(), state: ConversationState::Request }]
        );
        let in_named = store.find_conversation_states(&alice.id, Some(&named.id), &wanted).await.unwrap();
        assert_eq!(in_named.len(), 2);
        assert_eq!(in_named[0].state, ConversationState::Reply, "newest first");
        assert!(store.find_conversation_states(&bob.id, None, &wanted).await.unwrap().is_empty());
        assert!(store.claim_reply(&alice.id, &plain.id, "f1").await.unwrap());
        assert!(!store.claim_reply(&alice.id, &plain.id, "f1").await.unwrap(), "answered once");
        assert!(store.claim_reply(&alice.id, &named.id, "f1").await.unwrap(), "per session");
    }

    #[tokio::test]
    async fn users_have_unique_names_and_tokens_map_back_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        assert!(matches!(store.create_user("alice", true).await, Err(CreateUserError::NameTaken(_))));
        store.add_token(&alice.id, "hash-a").await.unwrap();
        assert_eq!(store.user_by_token("hash-a").await.unwrap(), Some(alice));
        assert_eq!(store.user_by_token("hash-b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn events_and_ratings_belong_to_the_sessions_owner_even_against_hand_written_sql() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let mallory = store.create_user("mallory", false).await.unwrap();
        let session = store.create_session(&alice.id, "t", "m").await.unwrap();
        let payload = serde_json::json!({"type": "user_message", "text": "hi"});
        store.append_event(&alice.id, &session.id, "user_message", &payload).await.unwrap();
        let refused = store.append_event(&mallory.id, &session.id, "user_message", &payload).await.unwrap_err();
        assert!(format!("{refused:#}").contains("owner of its session"), "{refused:#}");
        assert!(store.add_feedback(&mallory.id, &session.id, None, "down", None).await.is_err());
        let moved = sqlx::query("UPDATE events SET user_id = ? WHERE session_id = ?")
            .bind(&mallory.id)
            .bind(&session.id)
            .execute(&store.pool())
            .await;
        assert!(moved.is_err(), "an update cannot hand an event to another user");
        assert_eq!(store.session_events(&alice.id, &session.id).await.unwrap().len(), 1);
        assert!(store.events_since(&mallory.id, 0, 100).await.unwrap().is_empty());
        store.add_feedback(&alice.id, &session.id, None, "up", None).await.unwrap();
    }
}
