//! The agent API: sessions, turns, trajectories and feedback. Every handler takes the
//! caller as `AuthUser` and every query filters by them, so another user's session is
//! indistinguishable from a missing one (404).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use agent::agent_loop::{run_turn, AgentConfig, SkillSource, TurnContext};
use agent::engine::ChatMessage;
use agent::trajectory::{Event, EventSink};
use agent::workspace::Workspace;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::store::{Session, Store};
use crate::AppState;

/// What the agent API needs beyond the engine and the store.
pub struct AgentRuntime {
    /// Each user's workspace is a directory below this one, named by the user's id.
    pub workspaces: PathBuf,
    pub config: AgentConfig,
    pub skills: Arc<dyn SkillSource>,
    /// Cancel switches of the turns running now, by session id.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl AgentRuntime {
    pub fn new(workspaces: PathBuf, config: AgentConfig, skills: Arc<dyn SkillSource>) -> Self {
        Self { workspaces, config, skills, running: Mutex::new(HashMap::new()) }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes each event to the database as it happens, so an event the API reported is
/// durable.
struct StoreSink {
    store: Arc<dyn Store>,
    user_id: String,
    session_id: String,
}

#[async_trait::async_trait]
impl EventSink for StoreSink {
    async fn record(&self, event: Event) -> anyhow::Result<()> {
        let payload = serde_json::to_value(&event)?;
        self.store.append_event(&self.user_id, &self.session_id, event.kind(), &payload).await?;
        Ok(())
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|rejection| ApiError::bad_request(rejection.body_text(), "invalid_request", None))
}

async fn own_session(state: &AppState, user: &AuthUser, id: &str) -> Result<Session, ApiError> {
    state
        .store
        .get_session(&user.0.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no session `{id}`"), "session_not_found"))
}

#[derive(Debug, Deserialize, Default)]
pub struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

pub async fn create_session(
    State(state): State<AppState>,
    user: AuthUser,
    body: Result<Json<NewSession>, JsonRejection>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let body = json_body(body)?;
    let title = body.title.unwrap_or_else(|| "New session".into());
    let session = state.store.create_session(&user.0.id, &title, &state.engine.info().id).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

pub async fn list_sessions(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "sessions": state.store.list_sessions(&user.0.id).await? })))
}

pub async fn get_session(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Session>, ApiError> {
    Ok(Json(own_session(&state, &user, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    content: String,
}

/// Runs one agent turn and answers when it ends. The turn runs as its own task: a client
/// that disconnects does not abandon it half-recorded.
pub async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Result<Json<NewMessage>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    if body.content.trim().is_empty() {
        return Err(ApiError::bad_request("content must not be empty", "invalid_value", Some("content")));
    }
    let session = own_session(&state, &user, &id).await?;
    let (cancel, cancel_rx) = watch::channel(false);
    {
        let mut running = state.agent.running();
        if running.contains_key(&session.id) {
            return Err(ApiError::Conflict("a turn is already running in this session".into()));
        }
        running.insert(session.id.clone(), cancel);
    }
    let user_id = user.0.id.clone();
    let task_state = state.clone();
    let session_id = session.id.clone();
    let turn = tokio::spawn(async move {
        let state = task_state;
        let result = run_session_turn(&state, &user_id, &session_id, &body.content, cancel_rx).await;
        state.agent.running().remove(&session_id);
        result
    });
    let (stop, answer) = turn.await.map_err(|e| anyhow::anyhow!("the turn task failed: {e}"))??;
    Ok(Json(json!({ "session_id": session.id, "stop_reason": stop, "answer": answer })))
}

async fn run_session_turn(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    content: &str,
    cancel: watch::Receiver<bool>,
) -> Result<(agent::trajectory::StopReason, Option<String>), ApiError> {
    let history_json = state.store.session_history(user_id, session_id).await?.unwrap_or_else(|| "[]".into());
    let mut history: Vec<ChatMessage> = serde_json::from_str(&history_json).map_err(anyhow::Error::from)?;
    let workspace = Workspace::open(&state.agent.workspaces.join(user_id)).map_err(anyhow::Error::from)?;
    let sink = StoreSink { store: state.store.clone(), user_id: user_id.to_string(), session_id: session_id.to_string() };
    state.store.update_session(user_id, session_id, "running", None).await?;
    let mut ctx = TurnContext {
        engine: state.engine.as_ref(),
        workspace: &workspace,
        skills: state.agent.skills.as_ref(),
        sink: &sink,
        config: &state.agent.config,
        cancel,
    };
    let outcome = run_turn(&mut ctx, &mut history, content).await;
    let history_json = serde_json::to_string(&history).map_err(anyhow::Error::from)?;
    state.store.update_session(user_id, session_id, "idle", Some(&history_json)).await?;
    Ok((outcome.stop, outcome.answer))
}

pub async fn cancel_turn(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = own_session(&state, &user, &id).await?;
    match state.agent.running().get(&session.id) {
        Some(cancel) => {
            let _ = cancel.send(true);
            Ok((StatusCode::ACCEPTED, Json(json!({ "cancelled": true }))))
        }
        None => Err(ApiError::Conflict("no turn is running in this session".into())),
    }
}

pub async fn trajectory(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = own_session(&state, &user, &id).await?;
    let events = state.store.session_events(&user.0.id, &session.id).await?;
    Ok(Json(json!({ "session": session, "events": events })))
}

#[derive(Debug, Deserialize)]
pub struct NewFeedback {
    rating: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    turn: Option<i64>,
}

pub async fn feedback(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Result<Json<NewFeedback>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = json_body(body)?;
    if body.rating != "up" && body.rating != "down" {
        return Err(ApiError::bad_request("rating must be `up` or `down`", "invalid_value", Some("rating")));
    }
    let session = own_session(&state, &user, &id).await?;
    state.store.add_feedback(&user.0.id, &session.id, body.turn, &body.rating, body.comment.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "recorded": true }))))
}

#[derive(Debug, Deserialize)]
pub struct SinceQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    limit: Option<i64>,
}

/// The caller's events after a cursor, for clients that follow their own trajectories.
pub async fn trajectories_since(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<SinceQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    let events = state.store.events_since(&user.0.id, query.since, limit).await?;
    let next = events.last().map(|e| e.id).unwrap_or(query.since);
    Ok(Json(json!({ "events": events, "next_since": next })))
}
