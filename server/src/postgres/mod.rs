//! The PostgreSQL backend: any number of server nodes on one database. Its migrations are
//! `migrations/postgres/` (compiled in); its blobs live in the database; a listener on
//! channel `skillhive` turns notifications from any node into [`Signal`]s.

mod accounts;
pub mod blobs;
pub mod evolver;
pub mod skills;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::storage::{
    CompletionRecord, ConversationMatch, ConversationState, CreateUserError, EventRow, Feedback, Session, SessionChange, SessionRow,
    SessionStatus, Signal, Store, StoredEvent, TokenCache, User,
};
use crate::storage::{SessionSummary, SummaryRow, TokenInfo, TOKEN_ID_LEN};

/// The channel every node listens on.
pub const CHANNEL: &str = "skillhive";
/// The advisory lock, one per user (the user's id hashed into the second key), under which
/// a reader numbers the user's committed events (see [`PgStore::number_events`]).
const EVENT_LOG_LOCK: i32 = 0x736b_6801;
/// The same for the skill change log.
pub(crate) const CHANGE_LOG_LOCK: i64 = 0x736b_696c_6c02;
/// How long a token lookup is trusted; a revocation is also announced to every node,
/// which forgets its cache at once.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub struct PgStore {
    pool: PgPool,
    tokens: std::sync::Arc<TokenCache>,
    signals: broadcast::Sender<Signal>,
    /// Ends the listener task when the store is dropped.
    listening: CancellationToken,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listening.cancel();
    }
}

impl PgStore {
    /// Connects, brings the schema up to date (one node at a time: the migrator holds a
    /// lock) and starts listening for other nodes' signals.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
        MIGRATOR.run(&pool).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let store = Self {
            pool,
            tokens: std::sync::Arc::new(TokenCache::new(TOKEN_CACHE_TTL)),
            signals: broadcast::channel(1024).0,
            listening: CancellationToken::new(),
        };
        tokio::spawn(listen(listener, store.signals.clone(), store.tokens.clone(), store.listening.clone()));
        Ok(store)
    }

    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Gives the user's committed, unnumbered events their cursors, in the order they
    /// arrived. Writers insert without waiting for each other, so their events may commit
    /// out of arrival order; numbering only what has committed, one reader at a time,
    /// means an event that commits late is numbered after everything a reader has seen.
    /// The lock is taken before the numbering statement begins, so that statement sees
    /// the numbers the previous holder gave.
    async fn number_events(&self, user_id: &str) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))").bind(EVENT_LOG_LOCK).bind(user_id).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE events e SET id = numbered.cursor
             FROM (SELECT arrival, nextval('event_cursors') AS cursor
                   FROM (SELECT arrival FROM events WHERE user_id = $1 AND id IS NULL ORDER BY arrival) pending) numbered
             WHERE e.arrival = numbered.arrival AND e.id IS NULL",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Relays notifications to this process's subscribers. A lost connection may have lost
/// notifications too, so after one every cache is treated as stale.
async fn listen(mut listener: PgListener, signals: broadcast::Sender<Signal>, tokens: std::sync::Arc<TokenCache>, stop: CancellationToken) {
    loop {
        let received = tokio::select! {
            received = listener.try_recv() => received,
            () = stop.cancelled() => return,
        };
        match received {
            Ok(Some(notification)) => {
                if let Some(signal) = Signal::decode(notification.payload()) {
                    if signal == Signal::AuthChanged {
                        tokens.clear();
                    }
                    let _ = signals.send(signal);
                }
            }
            Ok(None) => {
                tracing::warn!("the database connection for notifications was lost; reconnecting");
                tokens.clear();
                let _ = signals.send(Signal::AuthChanged);
                let _ = signals.send(Signal::SkillsChanged);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot receive database notifications; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

const SESSION_COLUMNS: &str = "id, title, model, status, created_at, updated_at, archived";
const EVENT_COLUMNS: &str = "id, session_id, seq, kind, payload, created_at";

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn heartbeat(&self, node: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO nodes (id, seen_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at")
            .bind(node)
            .bind(crate::storage::evolver::now_secs())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_interrupted_sessions(&self, node: &str, stale_after: Duration) -> anyhow::Result<u64> {
        let seen_after = crate::storage::evolver::now_secs() - stale_after.as_secs() as i64;
        let done = sqlx::query(
            "UPDATE sessions SET status = $1, node_id = NULL, updated_at = iso_now()
             WHERE status = $2 AND node_id IS DISTINCT FROM $3
             AND ($4 = 0 OR node_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.id = sessions.node_id AND nodes.seen_at >= $5))",
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
            "UPDATE sessions SET status = $1, node_id = $2, updated_at = iso_now() WHERE user_id = $3 AND id = $4 AND status != $1",
        )
        .bind(SessionStatus::Running.as_str())
        .bind(node)
        .bind(user_id)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn turn_node(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT node_id FROM sessions WHERE user_id = $1 AND id = $2 AND status = $3")
            .bind(user_id)
            .bind(session_id)
            .bind(SessionStatus::Running.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|(node,)| node))
    }

    async fn revoke_tokens(&self, user_id: &str) -> anyhow::Result<u64> {
        // The table's trigger announces the change to every node.
        let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
        self.tokens.clear();
        Ok(done.rows_affected())
    }

    async fn tokens(&self, user_id: &str) -> anyhow::Result<Vec<TokenInfo>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT substr(token_hash, 1, 16), created_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at, token_hash",
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
        let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND substr(token_hash, 1, 16) = $2")
            .bind(user_id)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        // The table's trigger announces the change to every node.
        self.tokens.clear();
        Ok(done.rows_affected() > 0)
    }

    async fn send_signal(&self, signal: Signal) -> anyhow::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(signal.encode()).execute(&self.pool).await?;
        Ok(())
    }

    fn signals(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    async fn record_completion(&self, r: &CompletionRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO completions (id, model, streamed, prompt_tokens, completion_tokens, latency_ms, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let inserted = sqlx::query("INSERT INTO users (id, name, is_admin) VALUES ($1, $2, $3)")
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
        sqlx::query("INSERT INTO api_tokens (token_hash, user_id) VALUES ($1, $2)")
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
             WHERE api_tokens.token_hash = $1 AND NOT users.disabled",
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
        let row: SessionRow = sqlx::query_as(&format!(
            "INSERT INTO sessions (id, user_id, title, model) VALUES ($1, $2, $3, $4) RETURNING {SESSION_COLUMNS}"
        ))
        .bind(&id)
        .bind(user_id)
        .bind(title)
        .bind(model)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    async fn proxy_session(&self, user_id: &str, external_id: Option<&str>, model: &str) -> anyhow::Result<Session> {
        let id = uuid::Uuid::new_v4().to_string();
        let title = external_id.map(|e| format!("proxy {e}")).unwrap_or_else(|| "proxy".into());
        // Two first requests with the same client id may race; the unique index lets one
        // insert win and the other find it.
        sqlx::query(
            "INSERT INTO sessions (id, user_id, title, model, source, external_id) VALUES ($1, $2, $3, $4, 'proxy', $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&title)
        .bind(model)
        .bind(external_id)
        .execute(&self.pool)
        .await?;
        let row: SessionRow = match external_id {
            Some(external) => {
                sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND external_id = $2"))
                    .bind(user_id)
                    .bind(external)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")).bind(&id).fetch_one(&self.pool).await?
            }
        };
        Ok(row.into())
    }

    async fn find_conversation_states(
        &self,
        user_id: &str,
        session: Option<&str>,
        fingerprints: &[String],
    ) -> anyhow::Result<Vec<ConversationMatch>> {
        // One array parameter, however many fingerprints: PostgreSQL needs no chunking.
        let rows: Vec<(String, String, String)> = match session {
            Some(session) => {
                sqlx::query_as(
                    "SELECT c.session_id, c.fingerprint, c.kind FROM proxy_conversations c
                     WHERE c.user_id = $1 AND c.session_id = $2 AND c.fingerprint = ANY($3) ORDER BY c.id DESC",
                )
                .bind(user_id)
                .bind(session)
                .bind(fingerprints)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT c.session_id, c.fingerprint, c.kind FROM proxy_conversations c JOIN sessions s ON s.id = c.session_id
                     WHERE c.user_id = $1 AND s.source = 'proxy' AND s.external_id IS NULL AND c.fingerprint = ANY($2) ORDER BY c.id DESC",
                )
                .bind(user_id)
                .bind(fingerprints)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.into_iter()
            .map(|(session_id, fingerprint, kind)| {
                Ok(ConversationMatch { session_id, fingerprint, state: ConversationState::parse(&kind)? })
            })
            .collect()
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
             SELECT id, user_id, $1, $2 FROM sessions WHERE id = $3 AND user_id = $4
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
            "UPDATE proxy_conversations SET answered = TRUE
             WHERE user_id = $1 AND session_id = $2 AND kind = $3 AND fingerprint = $4 AND NOT answered",
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
        self.number_events(user_id).await?;
        let row: Option<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE user_id = $1 AND session_id = $2 AND kind = $3 ORDER BY seq DESC LIMIT 1"
        ))
        .bind(user_id)
        .bind(session_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredEvent::try_from).transpose()
    }

    async fn list_sessions(&self, user_id: &str) -> anyhow::Result<Vec<Session>> {
        let rows: Vec<SessionRow> =
            sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id"))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    async fn session_summaries(&self, user_id: &str) -> anyhow::Result<std::collections::HashMap<String, SessionSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT session_id,
                    COUNT(*) FILTER (WHERE kind = 'model_call'),
                    COALESCE(SUM((payload::jsonb ->> 'prompt_tokens')::bigint) FILTER (WHERE kind = 'model_call'), 0)::bigint,
                    COALESCE(SUM((payload::jsonb ->> 'completion_tokens')::bigint) FILTER (WHERE kind = 'model_output'), 0)::bigint,
                    COALESCE(SUM((payload::jsonb ->> 'latency_ms')::bigint) FILTER (WHERE kind = 'model_call'), 0)::bigint,
                    (SELECT s.payload::jsonb ->> 'reason' FROM events s
                      WHERE s.session_id = e.session_id AND s.kind = 'stop' ORDER BY s.seq DESC LIMIT 1)
             FROM events e WHERE user_id = $1 GROUP BY session_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(crate::storage::summary_entry).collect())
    }

    async fn get_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND id = $2"))
            .bind(user_id)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Session::from))
    }

    async fn session_history(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT history FROM sessions WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(h,)| h))
    }

    async fn update_session(&self, user_id: &str, session_id: &str, status: SessionStatus, history: Option<&str>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE sessions SET status = $1, history = COALESCE($2, history),
             node_id = CASE WHEN $1 = 'running' THEN node_id END, updated_at = iso_now() WHERE user_id = $3 AND id = $4",
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
        // No lock: the event gets its cursor when a reader first asks (`number_events`).
        let (seq,): (i64,) = sqlx::query_as(
            "INSERT INTO events (session_id, user_id, seq, kind, payload)
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4 FROM events WHERE session_id = $1
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
        self.number_events(user_id).await?;
        let rows: Vec<EventRow> =
            sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE user_id = $1 AND session_id = $2 ORDER BY seq"))
                .bind(user_id)
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn events_since(&self, user_id: &str, since: i64, limit: i64) -> anyhow::Result<Vec<StoredEvent>> {
        self.number_events(user_id).await?;
        let rows: Vec<EventRow> =
            sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"))
                .bind(user_id)
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn user_by_name(&self, name: &str) -> anyhow::Result<Option<User>> {
        let row: Option<(String, String, bool)> =
            sqlx::query_as("SELECT id, name, is_admin FROM users WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|(id, name, is_admin)| User { id, name, is_admin }))
    }

    async fn import_session(&self, user_id: &str, imported: &agent::import::ImportedSession) -> anyhow::Result<Option<Session>> {
        let external_id = format!("{}:{}", imported.source, imported.external_id);
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, title, model, source, external_id) VALUES ($1, $2, $3, 'imported', $4, $5)
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
            sqlx::query("INSERT INTO events (session_id, user_id, seq, kind, payload) VALUES ($1, $2, $3, $4, $5)")
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
            sqlx::query_as("SELECT turn, rating, comment, created_at FROM feedback WHERE user_id = $1 AND session_id = $2 ORDER BY id")
                .bind(user_id)
                .bind(session_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(turn, rating, comment, created_at)| Feedback { turn, rating, comment, created_at }).collect())
    }

    async fn change_session(&self, user_id: &str, session_id: &str, change: &SessionChange) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET title = COALESCE($1, title), archived = COALESCE($2, archived), updated_at = iso_now()
             WHERE user_id = $3 AND id = $4",
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
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2").bind(user_id).bind(session_id).execute(&self.pool).await?;
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
        sqlx::query("INSERT INTO feedback (session_id, user_id, turn, rating, comment) VALUES ($1, $2, $3, $4, $5)")
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
