//! Storage: the traits the services use and the domain types they carry. Nothing here
//! knows a SQL driver or HTTP; each database backend (see `crate::sqlite`) implements
//! these traits with its own SQL and migrations.

pub mod skills;

use async_trait::async_trait;

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

#[async_trait]
pub trait Store: Send + Sync {
    async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, CreateUserError>;
    /// Stores the hash of a new API token for a user.
    async fn add_token(&self, user_id: &str, token_hash: &str) -> anyhow::Result<()>;
    /// The user a token hash belongs to.
    async fn user_by_token(&self, token_hash: &str) -> anyhow::Result<Option<User>>;

    // Every session query below filters by the owner: another user's session is absent.
    async fn create_session(&self, user_id: &str, title: &str, model: &str) -> anyhow::Result<Session>;
    async fn list_sessions(&self, user_id: &str) -> anyhow::Result<Vec<Session>>;
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
    async fn user_by_name(&self, name: &str) -> anyhow::Result<Option<User>>;
    /// Stores an imported session and all its events in one transaction: all or nothing.
    /// `Ok(None)` when this user already imported a session with the same source id.
    async fn import_session(&self, user_id: &str, imported: &agent::import::ImportedSession) -> anyhow::Result<Option<Session>>;
    /// Checks that the database answers.
    async fn ping(&self) -> anyhow::Result<()>;
    /// Marks sessions left `running` by a process that died mid-turn as `interrupted`;
    /// returns how many. Called once at start, before any turn runs.
    async fn mark_interrupted_sessions(&self) -> anyhow::Result<u64>;
    async fn record_completion(&self, record: &CompletionRecord) -> anyhow::Result<()>;
    async fn completion_count(&self) -> anyhow::Result<i64>;
}
