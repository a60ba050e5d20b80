//! Agent turns on the server: each user's workspace root and agent configuration, the
//! turns running now (so that any request can cancel one), and the sink that makes every
//! event of a turn durable before it is reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use agent::agent_loop::{run_turn, AgentConfig, TurnContext, TurnOutcome};
use agent::engine::{ChatMessage, Engine};
use agent::trajectory::{Event, EventSink};
use agent::workspace::Workspace;

use crate::services::quota::{MeteredEngine, Quotas};
use crate::services::skills::SkillRepo;
use crate::storage::{SessionStatus, Store};

/// What the agent API needs beyond the engine and the store.
pub struct AgentRuntime {
    /// Each user's workspace is a directory below this one, named by the user's id.
    pub workspaces: PathBuf,
    pub config: AgentConfig,
    /// This process's name among the server nodes on the database: a session's running
    /// turn is recorded under it.
    pub node: String,
    /// Cancel switches of the turns running now, by session id.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl AgentRuntime {
    pub fn new(workspaces: PathBuf, config: AgentConfig) -> Self {
        Self { workspaces, config, node: uuid::Uuid::new_v4().to_string(), running: Mutex::new(HashMap::new()) }
    }

    /// The runtime of node `node`.
    pub fn on_node(self, node: String) -> Self {
        Self { node, ..self }
    }

    /// Asks the turn running in `session_id` here to stop; false when none runs here.
    pub fn cancel(&self, session_id: &str) -> bool {
        match self.running().get(session_id) {
            Some(cancel) => {
                let _ = cancel.send(true);
                true
            }
            None => false,
        }
    }

    /// Asks every running turn to stop at its next step.
    pub fn cancel_all(&self) {
        for cancel in self.running().values() {
            let _ = cancel.send(true);
        }
    }

    /// The cancel switches of the running turns, by session id.
    pub fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes each event to the database as it happens, so an event the API reported is
/// durable.
/// When the client streams, each stored event is also forwarded to it, after the write.
pub struct StoreSink {
    store: Arc<dyn Store>,
    user_id: String,
    session_id: String,
    forward: Option<mpsc::UnboundedSender<Value>>,
}

impl StoreSink {
    pub fn new(store: Arc<dyn Store>, user_id: &str, session_id: &str) -> Self {
        Self { store, user_id: user_id.to_string(), session_id: session_id.to_string(), forward: None }
    }

    /// A sink that also forwards each stored event (and each text delta) to `forward`.
    pub fn forwarding(store: Arc<dyn Store>, user_id: &str, session_id: &str, forward: Option<mpsc::UnboundedSender<Value>>) -> Self {
        Self { forward, ..Self::new(store, user_id, session_id) }
    }
}

#[async_trait::async_trait]
impl EventSink for StoreSink {
    async fn record(&self, event: Event) -> anyhow::Result<()> {
        let payload = serde_json::to_value(&event)?;
        let seq = self.store.append_event(&self.user_id, &self.session_id, event.kind(), &payload).await?;
        if let Some(forward) = &self.forward {
            // A client that went away does not stop the turn; its events are stored anyway.
            let _ = forward.send(json!({ "seq": seq, "kind": event.kind(), "payload": payload }));
        }
        Ok(())
    }

    fn wants_deltas(&self) -> bool {
        self.forward.is_some()
    }

    fn delta(&self, text: &str) {
        if let Some(forward) = &self.forward {
            let _ = forward.send(json!({ "kind": "delta", "text": text }));
        }
    }
}

/// The parts of the server a turn runs on.
pub struct TurnParts<'a> {
    pub engine: &'a Arc<dyn Engine>,
    pub store: &'a Arc<dyn Store>,
    pub agent: &'a AgentRuntime,
    pub skills: &'a SkillRepo,
    pub quotas: &'a Arc<Quotas>,
}

/// One turn of one user's session.
pub struct SessionTurn<'a> {
    pub user_id: &'a str,
    pub session_id: &'a str,
    pub content: &'a str,
    pub config: &'a AgentConfig,
    pub cancel: watch::Receiver<bool>,
    /// Where each stored event (and each text delta) also goes, when the client streams.
    pub forward: Option<mpsc::UnboundedSender<Value>>,
}

/// Runs a turn in the user's workspace on the skills they see, metered against their
/// quota; the session's conversation is read before and written after, and every event
/// is stored as it happens. The caller has claimed the session ([`Store::claim_turn`]).
pub async fn run_session_turn(parts: TurnParts<'_>, turn: SessionTurn<'_>) -> anyhow::Result<TurnOutcome> {
    let SessionTurn { user_id, session_id, content, config, cancel, forward } = turn;
    let history_json = parts.store.session_history(user_id, session_id).await?.unwrap_or_else(|| "[]".into());
    let mut history: Vec<ChatMessage> = serde_json::from_str(&history_json)?;
    let workspace = Workspace::open(&parts.agent.workspaces.join(user_id))?.with_quota(config.workspace_quota_bytes);
    let sink = StoreSink::forwarding(parts.store.clone(), user_id, session_id, forward);
    // The skills are read once per turn, so a publication reaches the next turn.
    let viewer = parts.skills.viewer(user_id).await?;
    let skills = parts.skills.agent_skills(&viewer).await?;
    let engine = MeteredEngine::new(parts.engine.clone(), parts.quotas.clone(), user_id);
    let mut ctx = TurnContext { engine: &engine, workspace: &workspace, skills: skills.as_ref(), sink: &sink, config, cancel };
    let outcome = run_turn(&mut ctx, &mut history, content).await;
    let history_json = serde_json::to_string(&history)?;
    parts.store.update_session(user_id, session_id, SessionStatus::Idle, Some(&history_json)).await?;
    Ok(outcome)
}
