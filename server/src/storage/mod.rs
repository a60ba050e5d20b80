//! Storage: the traits the services use and the domain types they carry. Nothing here
//! knows a SQL driver or HTTP; each database backend (`crate::sqlite`, `crate::postgres`) implements
//! these traits with its own SQL and migrations.

pub mod accounts;
pub mod blobs;
pub mod evolver;
pub mod skills;

#[cfg(test)]
mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

/// One served chat completion, as the usage log keeps it.
#[derive(Debug, Clone)]
pub struct CompletionRecord {
    pub id: String,
    pub model: String,
    pub streamed: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    /// `ok`, or the error code the client received.
    pub outcome: String,
}

/// A user of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// No turn is running; a new message may start one.
    Idle,
    /// A turn is running.
    Running,
    /// A turn was running when the server stopped; it did not finish.
    Interrupted,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Idle => "idle",
            SessionStatus::Running => "running",
            SessionStatus::Interrupted => "interrupted",
        }
    }

    /// The status stored as `text`; anything unknown reads as idle, the state in which a
    /// session accepts a new turn.
    pub fn parse(text: &str) -> Self {
        match text {
            "running" => SessionStatus::Running,
            "interrupted" => SessionStatus::Interrupted,
            _ => SessionStatus::Idle,
        }
    }
}

/// An agent session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    pub id: String,
    pub title: String,
    pub model: String,
    pub status: SessionStatus,
    pub created_at: String,
    pub updated_at: String,
    /// Left out of the default listing.
    pub archived: bool,
}

/// A user's rating of a session (or of one turn of it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Feedback {
    pub turn: Option<i64>,
    /// `up` or `down`.
    pub rating: String,
    pub comment: Option<String>,
    pub created_at: String,
}

/// What a session's trajectory adds up to, for listings: model steps, tokens, time spent
/// in the model, and how its last turn ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionSummary {
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub model_ms: i64,
    pub stop_reason: Option<String>,
}

/// A session summary as every backend reads it: session id, steps, prompt tokens,
/// completion tokens, model milliseconds, last stop reason.
pub type SummaryRow = (String, i64, i64, i64, i64, Option<String>);

/// One of a user's API tokens, as its owner may see it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// The first 16 hex digits of the token's sha256: enough to name it, useless to use.
    pub id: String,
    pub created_at: String,
}

/// How many hex digits of a token's hash name it.
pub const TOKEN_ID_LEN: usize = 16;

/// What may change about a session besides its turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChange {
    pub title: Option<String>,
    pub archived: Option<bool>,
}

/// One stored trajectory event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    /// Global cursor, increasing.
    pub id: i64,
    pub session_id: String,
    /// Position within its session, from 1.
    pub seq: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at: String,
}

/// A session as every backend reads it: id, title, model, status, created, updated,
/// archived.
pub type SessionRow = (String, String, String, String, String, String, bool);
/// An event as every backend reads it: id, session, seq, kind, payload (JSON text), created.
pub type EventRow = (i64, String, i64, String, String, String);

/// A summary row as the map entry listings use.
pub fn summary_entry((session_id, steps, prompt_tokens, completion_tokens, model_ms, stop_reason): SummaryRow) -> (String, SessionSummary) {
    (session_id, SessionSummary { steps, prompt_tokens, completion_tokens, model_ms, stop_reason })
}

impl From<SessionRow> for Session {
    fn from((id, title, model, status, created_at, updated_at, archived): SessionRow) -> Self {
        Session { id, title, model, status: SessionStatus::parse(&status), created_at, updated_at, archived }
    }
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = anyhow::Error;
    fn try_from((id, session_id, seq, kind, payload, created_at): EventRow) -> anyhow::Result<Self> {
        Ok(StoredEvent { id, session_id, seq, kind, payload: serde_json::from_str(&payload)?, created_at })
    }
}

/// A state of a proxied conversation, as proxy mode records it to group requests by
/// conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationState {
    /// The messages of a request.
    Request,
    /// The messages of a request followed by the reply to it: what a request that
    /// continues the conversation begins with.
    Reply,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Request => "request",
            ConversationState::Reply => "reply",
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "request" => Ok(ConversationState::Request),
            "reply" => Ok(ConversationState::Reply),
            other => anyhow::bail!("unknown conversation state `{other}`"),
        }
    }
}

/// A recorded conversation state whose fingerprint a request asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationMatch {
    pub session_id: String,
    pub fingerprint: String,
    pub state: ConversationState,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("a user named `{0}` already exists")]
    NameTaken(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What one server node tells every node on the same database, itself included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The skill change log grew.
    SkillsChanged,
    /// Tokens, admin rights or group memberships changed: cached identities are stale.
    AuthChanged,
    /// A user asked to cancel the turn running in a session, wherever it runs.
    CancelTurn { session_id: String },
}

impl Signal {
    /// How the signal travels as text (a PostgreSQL notification's payload).
    pub fn encode(&self) -> String {
        match self {
            Signal::SkillsChanged => "skills".into(),
            Signal::AuthChanged => "auth".into(),
            Signal::CancelTurn { session_id } => format!("cancel:{session_id}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        match text {
            "skills" => Some(Signal::SkillsChanged),
            "auth" => Some(Signal::AuthChanged),
            other => other.strip_prefix("cancel:").map(|id| Signal::CancelTurn { session_id: id.to_string() }),
        }
    }
}

/// Token hash → user, for a while. Every request authenticates, and a polling sync client
/// must not cost a database round trip each time.
pub struct TokenCache {
    ttl: Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, User)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Default::default() }
    }

    pub fn get(&self, token_hash: &str) -> Option<User> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(token_hash).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, user)| user.clone())
    }

    /// Only known tokens are cached: a token made a moment ago by `skillhive user add` in
    /// another process must work at once.
    pub fn insert(&self, token_hash: &str, user: &User) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(token_hash.to_string(), (std::time::Instant::now(), user.clone()));
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[async_trait]
pub trait Store: accounts::AccountStore + Send + Sync {
    async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, CreateUserError>;
    /// Stores the hash of a new API token for a user.
    async fn add_token(&self, user_id: &str, token_hash: &str) -> anyhow::Result<()>;
    /// The user a token hash belongs to.
    async fn user_by_token(&self, token_hash: &str) -> anyhow::Result<Option<User>>;

    // Every session query below filters by the owner: another user's session is absent.
    async fn create_session(&self, user_id: &str, title: &str, model: &str) -> anyhow::Result<Session>;
    async fn list_sessions(&self, user_id: &str) -> anyhow::Result<Vec<Session>>;
    /// The summary of each of the user's sessions that has events, by session id.
    async fn session_summaries(&self, user_id: &str) -> anyhow::Result<std::collections::HashMap<String, SessionSummary>>;
    /// A proxy session: the one named by the client's id (created on its first use), or,
    /// without an id, a new one.
    async fn proxy_session(&self, user_id: &str, external_id: Option<&str>, model: &str) -> anyhow::Result<Session>;
    /// The recorded states of proxied conversations whose fingerprint is among
    /// `fingerprints`, newest first: in `session` when given, else in the user's proxy
    /// sessions that have no client id.
    async fn find_conversation_states(
        &self,
        user_id: &str,
        session: Option<&str>,
        fingerprints: &[String],
    ) -> anyhow::Result<Vec<ConversationMatch>>;
    /// Records a state of a proxied conversation in a session; recording it again changes
    /// nothing.
    async fn add_conversation_state(
        &self,
        user_id: &str,
        session_id: &str,
        state: ConversationState,
        fingerprint: &str,
    ) -> anyhow::Result<()>;
    /// Marks the request state `fingerprint` of a session as answered. True when this call
    /// did; false when it was answered before (or is not recorded), so that of a request and
    /// its retries exactly one records its reply.
    async fn claim_reply(&self, user_id: &str, session_id: &str, fingerprint: &str) -> anyhow::Result<bool>;
    /// The newest event of `kind` in a session.
    async fn last_event(&self, user_id: &str, session_id: &str, kind: &str) -> anyhow::Result<Option<StoredEvent>>;
    async fn get_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<Session>>;
    async fn session_history(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>>;
    async fn update_session(&self, user_id: &str, session_id: &str, status: SessionStatus, history: Option<&str>) -> anyhow::Result<()>;
    /// Appends an event at the next position of its session; committed before returning.
    async fn append_event(&self, user_id: &str, session_id: &str, kind: &str, payload: &serde_json::Value) -> anyhow::Result<i64>;
    async fn session_events(&self, user_id: &str, session_id: &str) -> anyhow::Result<Vec<StoredEvent>>;
    /// The user's events after cursor `since`, oldest first, at most `limit`.
    async fn events_since(&self, user_id: &str, since: i64, limit: i64) -> anyhow::Result<Vec<StoredEvent>>;
    async fn add_feedback(
        &self,
        user_id: &str,
        session_id: &str,
        turn: Option<i64>,
        rating: &str,
        comment: Option<&str>,
    ) -> anyhow::Result<()>;
    /// The ratings of a session, oldest first.
    async fn feedback(&self, user_id: &str, session_id: &str) -> anyhow::Result<Vec<Feedback>>;
    /// Renames or (un)archives a session; false when the user has no such session.
    async fn change_session(&self, user_id: &str, session_id: &str, change: &SessionChange) -> anyhow::Result<bool>;
    /// Deletes a session with its events and ratings; false when the user has no such
    /// session.
    async fn delete_session(&self, user_id: &str, session_id: &str) -> anyhow::Result<bool>;
    async fn user_by_name(&self, name: &str) -> anyhow::Result<Option<User>>;
    /// Stores an imported session and all its events in one transaction: all or nothing.
    /// `Ok(None)` when this user already imported a session with the same source id.
    async fn import_session(&self, user_id: &str, imported: &agent::import::ImportedSession) -> anyhow::Result<Option<Session>>;
    /// Checks that the database answers.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Records that server node `node` is alive now.
    async fn heartbeat(&self, node: &str) -> anyhow::Result<()>;
    /// Marks `interrupted` the sessions left `running` by nodes not seen for `stale_after`
    /// (a process that died mid-turn); returns how many. Zero means every node but the
    /// caller's: right at start on a database only one node uses.
    async fn mark_interrupted_sessions(&self, node: &str, stale_after: Duration) -> anyhow::Result<u64>;
    /// Marks a session `running` on `node` unless a turn already runs in it (on any node);
    /// true when this call did.
    async fn claim_turn(&self, user_id: &str, session_id: &str, node: &str) -> anyhow::Result<bool>;
    /// The node a session's turn runs on, when one runs.
    async fn turn_node(&self, user_id: &str, session_id: &str) -> anyhow::Result<Option<String>>;
    /// Removes every API token of a user; returns how many. Every node refuses them
    /// within a second.
    async fn revoke_tokens(&self, user_id: &str) -> anyhow::Result<u64>;
    /// The user's tokens, oldest first.
    async fn tokens(&self, user_id: &str) -> anyhow::Result<Vec<TokenInfo>>;
    /// Removes one of the user's tokens by its id; false when the user has none such.
    /// Every node refuses it within a second.
    async fn revoke_token(&self, user_id: &str, token_id: &str) -> anyhow::Result<bool>;
    /// Sends a signal to every node on this database, this one included.
    async fn send_signal(&self, signal: Signal) -> anyhow::Result<()>;
    /// The signals from now on.
    fn signals(&self) -> broadcast::Receiver<Signal>;
    async fn record_completion(&self, record: &CompletionRecord) -> anyhow::Result<()>;
    async fn completion_count(&self) -> anyhow::Result<i64>;
}
