//! The agent API: sessions, turns, trajectories and feedback. Every handler takes the
//! caller as `AuthUser` and every query filters by them, so another user's session is
//! indistinguishable from a missing one (404).

use std::panic::AssertUnwindSafe;

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::header::ACCEPT;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::FutureExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use agent::agent_loop::{AgentConfig, TurnOutcome};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::json::JsonBody;
use crate::http::AppState;
use crate::services::turns::{run_session_turn, SessionTurn, TurnParts};
use crate::storage::{Session, SessionChange, SessionStatus, Signal};

async fn own_session(state: &AppState, user: &AuthUser, id: &str) -> Result<Session, ApiError> {
    state.store.get_session(&user.0.id, id).await?.ok_or_else(|| ApiError::NotFound(format!("no session `{id}`"), "session_not_found"))
}

#[derive(Debug, Deserialize, Default)]
pub struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

pub async fn create_session(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<NewSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let title = body.title.unwrap_or_else(|| "New session".into());
    let session = state.store.create_session(&user.0.id, &title, &state.engine.info().id).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

#[derive(Debug, Deserialize, Default)]
pub struct SessionFilter {
    /// Words that must all appear in the title (any case).
    #[serde(default)]
    q: Option<String>,
    /// List the archived sessions instead of the others.
    #[serde(default)]
    archived: bool,
}

pub async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Query(filter): Query<SessionFilter>,
) -> Result<Json<Value>, ApiError> {
    let words: Vec<String> = filter.q.unwrap_or_default().split_whitespace().map(str::to_lowercase).collect();
    let mut summaries = state.store.session_summaries(&user.0.id).await?;
    let sessions: Vec<Value> = state
        .store
        .list_sessions(&user.0.id)
        .await?
        .into_iter()
        .filter(|s| s.archived == filter.archived)
        .filter(|s| {
            let title = s.title.to_lowercase();
            words.iter().all(|w| title.contains(w.as_str()))
        })
        .map(|session| {
            let summary = summaries.remove(&session.id).unwrap_or_default();
            let mut entry = json!(session);
            entry["summary"] = json!(summary);
            entry
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPatch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
}

/// Renames or (un)archives one of the caller's sessions.
pub async fn change_session(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SessionPatch>,
) -> Result<Json<Session>, ApiError> {
    if let Some(title) = &body.title {
        if title.trim().is_empty() || title.chars().count() > 200 {
            return Err(ApiError::bad_request("title must be 1 to 200 characters", "invalid_value", Some("title")));
        }
    }
    let change = SessionChange { title: body.title.map(|t| t.trim().to_string()), archived: body.archived };
    if !state.store.change_session(&user.0.id, &id, &change).await? {
        return Err(ApiError::NotFound(format!("no session `{id}`"), "session_not_found"));
    }
    Ok(Json(own_session(&state, &user, &id).await?))
}

/// Deletes one of the caller's sessions, its trajectory and ratings; not while a turn runs.
pub async fn delete_session(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let session = own_session(&state, &user, &id).await?;
    if session.status == SessionStatus::Running {
        return Err(ApiError::Conflict("a turn is running in this session; cancel it first".into()));
    }
    if !state.store.delete_session(&user.0.id, &session.id).await? {
        return Err(ApiError::NotFound(format!("no session `{id}`"), "session_not_found"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's ratings of a session, oldest first.
pub async fn list_feedback(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = own_session(&state, &user, &id).await?;
    Ok(Json(json!({ "feedback": state.store.feedback(&user.0.id, &session.id).await? })))
}

pub async fn get_session(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Session>, ApiError> {
    Ok(Json(own_session(&state, &user, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    content: String,
    /// Model steps this turn may take, at most the server's limit.
    #[serde(default)]
    max_steps: Option<usize>,
    /// Seconds this turn may run, at most the server's limit.
    #[serde(default)]
    max_seconds: Option<u64>,
    /// Seeds the turn's sampling, so that the same request on the same workspace and
    /// model makes the same choices.
    #[serde(default)]
    seed: Option<u64>,
    /// Sampling temperature, 0 to 2 (a seeded turn samples at 0.7 unless this says).
    #[serde(default)]
    temperature: Option<f64>,
}

impl NewMessage {
    /// The server's agent configuration with this request's limits and seed applied;
    /// a limit above the server's is refused rather than silently lowered.
    fn turn_config(&self, server: &AgentConfig) -> Result<AgentConfig, ApiError> {
        let mut config = server.clone();
        if let Some(steps) = self.max_steps {
            if steps == 0 || steps > server.max_steps {
                return Err(ApiError::bad_request(
                    format!("max_steps must be 1 to {} on this server", server.max_steps),
                    "invalid_value",
                    Some("max_steps"),
                ));
            }
            config.max_steps = steps;
        }
        if let Some(seconds) = self.max_seconds {
            let limit = server.max_wall_time.as_secs();
            if seconds == 0 || seconds > limit {
                return Err(ApiError::bad_request(
                    format!("max_seconds must be 1 to {limit} on this server"),
                    "invalid_value",
                    Some("max_seconds"),
                ));
            }
            config.max_wall_time = std::time::Duration::from_secs(seconds);
        }
        if self.seed.is_some() {
            config.seed = self.seed;
        }
        if let Some(temperature) = self.temperature {
            if !(0.0..=2.0).contains(&temperature) {
                return Err(ApiError::bad_request("temperature must be between 0 and 2", "invalid_value", Some("temperature")));
            }
            config.temperature = Some(temperature);
        }
        Ok(config)
    }
}

/// What a turn's reply says: how it ended, its answer, and what it cost.
fn turn_reply(session_id: &str, outcome: &TurnOutcome, elapsed: std::time::Duration) -> Value {
    json!({
        "session_id": session_id,
        "stop_reason": outcome.stop,
        "answer": outcome.answer,
        "steps": outcome.steps,
        "usage": {
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "total_tokens": outcome.usage.total_tokens(),
        },
        "elapsed_ms": elapsed.as_millis() as u64,
    })
}

/// Runs one agent turn. Plain requests are answered when the turn ends; with
/// `Accept: text/event-stream` each event is sent as it is recorded, then a `done` event.
/// The turn runs as its own task: a client that disconnects does not abandon it
/// half-recorded.
pub async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<NewMessage>,
) -> Result<Response, ApiError> {
    if body.content.trim().is_empty() {
        return Err(ApiError::bad_request("content must not be empty", "invalid_value", Some("content")));
    }
    let config = body.turn_config(&state.agent.config)?;
    let session = own_session(&state, &user, &id).await?;
    let streaming = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    let permit = state.quotas.begin_generation(&user.0.id)?;
    let (cancel, cancel_rx) = watch::channel(false);
    {
        let mut running = state.agent.running();
        if running.contains_key(&session.id) {
            return Err(ApiError::Conflict("a turn is already running in this session".into()));
        }
        running.insert(session.id.clone(), cancel);
    }
    // The database decides between nodes: a turn may already run there on another one.
    match state.store.claim_turn(&user.0.id, &session.id, &state.agent.node).await {
        Ok(true) => {}
        Ok(false) => {
            state.agent.running().remove(&session.id);
            return Err(ApiError::Conflict("a turn is already running in this session".into()));
        }
        Err(error) => {
            state.agent.running().remove(&session.id);
            return Err(error.into());
        }
    }
    let (forward, mut forwarded) = mpsc::unbounded_channel();
    let user_id = user.0.id.clone();
    let task_state = state.clone();
    let session_id = session.id.clone();
    let forward = streaming.then_some(forward);
    let started = std::time::Instant::now();
    let turn = tokio::spawn(async move {
        let state = task_state;
        // A turn that fails or panics must not leave its session registered as running
        // (every later message would be refused) nor marked running in the store.
        let parts =
            TurnParts { engine: &state.engine, store: &state.store, agent: &state.agent, skills: &state.skills, quotas: &state.quotas };
        let turn =
            SessionTurn { user_id: &user_id, session_id: &session_id, content: &body.content, config: &config, cancel: cancel_rx, forward };
        let result = match AssertUnwindSafe(run_session_turn(parts, turn)).catch_unwind().await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::Internal(anyhow::anyhow!("the turn in session {session_id} panicked"))),
        };
        state.agent.running().remove(&session_id);
        drop(permit);
        if result.is_err() {
            if let Err(error) = state.store.update_session(&user_id, &session_id, SessionStatus::Interrupted, None).await {
                tracing::error!(%session_id, error = ?error, "could not mark the session interrupted");
            }
        }
        result
    });
    if !streaming {
        let outcome = turn.await.map_err(|e| anyhow::anyhow!("the turn task failed: {e}"))??;
        return Ok(Json(turn_reply(&session.id, &outcome, started.elapsed())).into_response());
    }
    let session_id = session.id.clone();
    let events = async_stream::stream! {
        while let Some(event) = forwarded.recv().await {
            let name = if event["kind"] == "delta" { "delta" } else { "event" };
            yield Ok::<SseEvent, Infallible>(SseEvent::default().event(name).data(event.to_string()));
        }
        let done = match turn.await {
            Ok(Ok(outcome)) => turn_reply(&session_id, &outcome, started.elapsed()),
            // Internal details go to the log, as for every other error.
            Ok(Err(error)) => {
                error.log();
                json!({ "session_id": session_id, "error": error.to_string() })
            }
            Err(error) => {
                tracing::error!(%session_id, %error, "the turn task failed");
                json!({ "session_id": session_id, "error": "the turn failed" })
            }
        };
        yield Ok(SseEvent::default().event("done").data(done.to_string()));
    };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

pub async fn cancel_turn(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = own_session(&state, &user, &id).await?;
    if state.agent.cancel(&session.id) {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "cancelled": true }))));
    }
    // A turn running on another node is asked to stop through the database.
    if state.store.turn_node(&user.0.id, &session.id).await?.is_some() {
        state.store.send_signal(Signal::CancelTurn { session_id: session.id.clone() }).await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "cancelled": true }))));
    }
    Err(ApiError::Conflict("no turn is running in this session".into()))
}

/// How often the session event feed looks for new events while a turn runs.
const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// `GET /api/sessions/{id}/events`: the session's events as server-sent events (`id` is the
/// event's `seq`), from after `Last-Event-ID` (or `?after=`), following a running turn
/// until it ends; then `event: end` with the session's status. A page reloaded during a
/// turn reattaches to it through this feed.
pub async fn session_feed(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let session = own_session(&state, &user, &id).await?;
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let mut after = header.or(query.after).unwrap_or(0);
    let user_id = user.0.id.clone();
    let stream = async_stream::stream! {
        loop {
            // The status is read before the events: a turn that ends in between has all its
            // events read on this pass, and the next pass ends the feed.
            let status = match state.store.get_session(&user_id, &session.id).await {
                Ok(Some(session)) => session.status,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(error = ?error, "session feed: cannot read the session");
                    break;
                }
            };
            match state.store.session_events(&user_id, &session.id).await {
                Ok(events) => {
                    let since = after;
                    for event in events.into_iter().filter(|e| e.seq > since) {
                        after = event.seq;
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        yield Ok::<SseEvent, Infallible>(SseEvent::default().event("event").id(event.seq.to_string()).data(data));
                    }
                }
                Err(error) => {
                    tracing::error!(error = ?error, "session feed: cannot read events");
                    break;
                }
            }
            if status != SessionStatus::Running {
                yield Ok(SseEvent::default().event("end").data(json!({ "status": status }).to_string()));
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(FEED_POLL) => {}
                () = state.shutdown.cancelled() => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    #[serde(default)]
    after: Option<i64>,
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
    JsonBody(body): JsonBody<NewFeedback>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

/// Imports an OpenClaw transcript (JSONL v3) or a SkillClaw session record, sent as the
/// request body, as one of the caller's sessions. A malformed file is refused with the
/// line of its first problem, and nothing of it is stored.
pub async fn import_trajectory(
    State(state): State<AppState>,
    user: AuthUser,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the file is not UTF-8 text", "invalid_body", None))?;
    let imported = agent::import::parse(text).map_err(|e| ApiError::bad_request(e.to_string(), "invalid_transcript", None))?;
    match state.store.import_session(&user.0.id, &imported).await? {
        Some(session) => Ok((StatusCode::CREATED, Json(json!({ "session": session, "events": imported.events.len() })))),
        None => Err(ApiError::Conflict(format!("the {} session `{}` was already imported", imported.source, imported.external_id))),
    }
}

/// Turns through the API on a scripted engine: sandbox refusals become recorded tool
/// errors and the server goes on serving.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use agent::engine::{Choice, ToolCall};
    use agent::exec::{ExecLimits, ExecPolicy};

    use super::*;
    use crate::http::{app, GenerationLimits, HttpLimits};
    use crate::testing::scripted::{Otherwise, ScriptedEngine, Step};
    use crate::testing::TestApp;

    fn scripted(script: Vec<Step>) -> Arc<ScriptedEngine> {
        Arc::new(ScriptedEngine::new(None, Otherwise::Done, script))
    }

    /// The harness's API on a scripted engine that answers with `script`, with users'
    /// workspaces under `workspaces` and the agent as `config` says.
    fn scripted_state(
        harness: &TestApp,
        script: impl IntoIterator<Item = impl Into<Step>>,
        workspaces: std::path::PathBuf,
        config: AgentConfig,
    ) -> AppState {
        let mut state = harness.state.clone();
        state.engine = scripted(script.into_iter().map(Into::into).collect());
        state.limits = GenerationLimits { max_tokens_cap: 16, default_max_tokens: 16 };
        state.agent = Arc::new(crate::services::turns::AgentRuntime::new(workspaces, config));
        state
    }

    fn tool(name: &str, arguments: Value) -> Choice {
        Choice {
            tool_calls: vec![ToolCall { id: format!("call-{name}-{}", arguments), name: name.into(), arguments: arguments.to_string() }],
            ..Default::default()
        }
    }

    use crate::test_support::request;

    #[tokio::test]
    async fn a_user_renames_archives_finds_rates_and_deletes_only_their_own_sessions() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (_, alice) = harness.user("alice", false).await.unwrap();
        let (bob_user, bob) = harness.user("bob", false).await.unwrap();
        let router = harness.router();
        let (_, me) = request(&router, &bob, "GET", "/api/me", None).await;
        assert_eq!(me, json!({"id": bob_user.id, "name": "bob", "is_admin": false, "groups": []}));

        let (_, first) = request(&router, &alice, "POST", "/api/sessions", Some(json!({"title": "Count CSV rows"}))).await;
        let (_, second) = request(&router, &alice, "POST", "/api/sessions", Some(json!({"title": "Tidy notes"}))).await;
        let (first, second) = (first["id"].as_str().unwrap().to_string(), second["id"].as_str().unwrap().to_string());
        let path = format!("/api/sessions/{first}");

        let (status, renamed) = request(&router, &alice, "PATCH", &path, Some(json!({"title": "Count rows in people.csv"}))).await;
        assert_eq!((status, renamed["title"].as_str()), (StatusCode::OK, Some("Count rows in people.csv")));
        let (status, _) = request(&router, &alice, "PATCH", &path, Some(json!({"title": " "}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, found) = request(&router, &alice, "GET", "/api/sessions?q=PEOPLE%20rows", None).await;
        assert_eq!(found["sessions"].as_array().unwrap().len(), 1, "{found}");
        request(&router, &alice, "PATCH", &path, Some(json!({"archived": true}))).await;
        let (_, listed) = request(&router, &alice, "GET", "/api/sessions", None).await;
        let ids: Vec<&str> = listed["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [second.as_str()], "an archived session leaves the listing");
        let (_, archived) = request(&router, &alice, "GET", "/api/sessions?archived=true", None).await;
        assert_eq!(archived["sessions"][0]["id"], first.as_str());

        let feedback = format!("{path}/feedback");
        let rating = json!({"rating": "up", "turn": 1, "comment": "right count"});
        assert_eq!(request(&router, &alice, "POST", &feedback, Some(rating)).await.0, StatusCode::CREATED);
        let (_, read_back) = request(&router, &alice, "GET", &feedback, None).await;
        assert_eq!(read_back["feedback"][0]["comment"], "right count");
        assert_eq!(read_back["feedback"][0]["turn"], 1);

        // Bob finds none of it, and changes nothing.
        for (method, body) in [("GET", None), ("PATCH", Some(json!({"title": "mine"}))), ("DELETE", None)] {
            assert_eq!(request(&router, &bob, method, &path, body).await.0, StatusCode::NOT_FOUND, "{method}");
        }
        assert_eq!(request(&router, &bob, "GET", &feedback, None).await.0, StatusCode::NOT_FOUND);

        assert_eq!(request(&router, &alice, "DELETE", &path, None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(request(&router, &alice, "GET", &path, None).await.0, StatusCode::NOT_FOUND);
        assert_eq!(request(&router, &alice, "GET", &feedback, None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_user_makes_lists_and_revokes_their_own_api_tokens() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (_, alice) = harness.user("alice", false).await.unwrap();
        let (_, bob) = harness.user("bob", false).await.unwrap();
        let router = harness.router();
        let (status, made) = request(&router, &alice, "POST", "/api/tokens", None).await;
        assert_eq!(status, StatusCode::CREATED);
        let (second, second_id) = (made["token"].as_str().unwrap().to_string(), made["id"].as_str().unwrap().to_string());
        assert_eq!(request(&router, &second, "GET", "/api/me", None).await.0, StatusCode::OK);
        let (_, listed) = request(&router, &alice, "GET", "/api/tokens", None).await;
        assert_eq!(listed["tokens"].as_array().unwrap().len(), 2);
        assert!(!listed.to_string().contains(&second), "a token is shown once, when made");
        let path = format!("/api/tokens/{second_id}");
        assert_eq!(request(&router, &bob, "DELETE", &path, None).await.0, StatusCode::NOT_FOUND, "not bob's");
        assert_eq!(request(&router, &alice, "DELETE", &path, None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(request(&router, &second, "GET", "/api/me", None).await.0, StatusCode::UNAUTHORIZED, "refused at once");
        assert_eq!(request(&router, &alice, "GET", "/api/me", None).await.0, StatusCode::OK, "the first token still works");
    }

    #[tokio::test]
    async fn a_user_uploads_lists_downloads_and_deletes_workspace_files_and_sees_only_their_own() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (dir, store) = (&harness.dir, harness.db.store.clone());
        let (_, alice) = crate::http::auth::create_user_with_token(store.as_ref(), "alice", false).await.unwrap();
        let (_, bob) = crate::http::auth::create_user_with_token(store.as_ref(), "bob", false).await.unwrap();
        let router =
            app(scripted_state(&harness, Vec::<Step>::new(), dir.path().join("ws"), AgentConfig::default()), HttpLimits::default());
        let send = |token: &str, method: &str, path: &str, body: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(body.to_string()))
                .unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        assert_eq!(send(&alice, "PUT", "/api/workspace/files/data/people.csv", "name\nann\n").await.0, StatusCode::OK);
        assert_eq!(send(&alice, "GET", "/api/workspace/files/data/people.csv", "").await, (StatusCode::OK, "name\nann\n".into()));
        let (_, listing) = send(&alice, "GET", "/api/workspace/files", "").await;
        assert_eq!(serde_json::from_str::<Value>(&listing).unwrap(), json!({"files": [{"path": "data/people.csv", "bytes": 9}]}));
        // Another user has their own workspace: alice's file is not there.
        assert_eq!(send(&bob, "GET", "/api/workspace/files/data/people.csv", "").await.0, StatusCode::NOT_FOUND);
        assert_eq!(send(&bob, "GET", "/api/workspace/files", "").await.1, r#"{"files":[]}"#);
        // Paths are checked as the tools check them.
        let (status, body) = send(&alice, "PUT", "/api/workspace/files/..%2F..%2Fescape.txt", "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("leaves the workspace"), "{body}");
        assert_eq!(send(&alice, "DELETE", "/api/workspace/files/data/people.csv", "").await.0, StatusCode::NO_CONTENT);
        assert_eq!(send(&alice, "DELETE", "/api/workspace/files/data/people.csv", "").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_request_sets_its_turn_limits_and_seed_and_the_reply_says_what_the_turn_cost() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (dir, store) = (&harness.dir, harness.db.store.clone());
        let (_, token) = crate::http::auth::create_user_with_token(store.as_ref(), "u", false).await.unwrap();
        // The model lists the workspace forever (a new path each time); the request's own
        // step limit ends the turn, whose last step may only answer.
        let script: Vec<Choice> = (0..10).map(|i| tool("ls", json!({ "path": format!("d{i}") }))).collect();
        let state = scripted_state(&harness, script, dir.path().join("ws"), AgentConfig::default());
        let router = app(state, HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let path = format!("/api/sessions/{}/messages", session["id"].as_str().unwrap());
        let (status, reply) = request(&router, &token, "POST", &path, Some(json!({"content": "go", "max_steps": 2, "seed": 9}))).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!((reply["stop_reason"].as_str(), reply["steps"].as_u64()), (Some("final_answer"), Some(2)), "{reply}");
        assert_eq!(reply["answer"], "what I found");
        assert!(reply["usage"]["total_tokens"].as_u64().unwrap() > 0, "{reply}");
        assert!(reply["elapsed_ms"].is_u64(), "{reply}");
        // Limits above the server's are refused with a clear message, not lowered silently.
        for (body, param) in [
            (json!({"content": "go", "max_steps": 99}), "max_steps"),
            (json!({"content": "go", "max_seconds": 0}), "max_seconds"),
            (json!({"content": "go", "temperature": 3.5}), "temperature"),
        ] {
            let (status, error) = request(&router, &token, "POST", &path, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
            assert_eq!(error["error"]["param"], param, "{error}");
        }
    }

    #[tokio::test]
    async fn streamed_turns_send_text_deltas_then_the_recorded_events() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (dir, store) = (&harness.dir, harness.db.store.clone());
        let (_, token) = crate::http::auth::create_user_with_token(store.as_ref(), "u", false).await.unwrap();
        let state = scripted_state(
            &harness,
            vec![tool("ls", json!({"path": "."})), Choice { text: "Nothing here.".into(), ..Default::default() }],
            dir.path().join("ws"),
            AgentConfig::default(),
        );
        let router = app(state, HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let id = session["id"].as_str().unwrap();
        let response = router
            .clone()
            .oneshot(
                Request::post(format!("/api/sessions/{id}/messages"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("accept", "text/event-stream")
                    .body(Body::from(json!({"content": "what is here?"}).to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let mut names = Vec::new();
        let mut deltas = String::new();
        let mut name = String::new();
        for line in body.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value: Value = serde_json::from_str(data).unwrap();
                if name == "delta" {
                    deltas.push_str(value["text"].as_str().unwrap());
                }
                names.push(if name == "event" { value["kind"].as_str().unwrap().to_string() } else { name.clone() });
            }
        }
        assert_eq!(deltas, "Nothing here.");
        assert_eq!(
            names,
            [
                "user_message",
                "model_call",
                "model_output",
                "tool_call",
                "tool_result",
                "delta",
                "delta",
                "model_call",
                "model_output",
                "final_answer",
                "stop",
                "done"
            ]
        );
    }

    #[tokio::test]
    async fn a_turn_that_panics_leaves_its_session_usable() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (dir, store) = (&harness.dir, harness.db.store.clone());
        let (_, token) = crate::http::auth::create_user_with_token(store.as_ref(), "u", false).await.unwrap();
        let script = vec![Step::Panic];
        let state = scripted_state(&harness, script, dir.path().join("ws"), AgentConfig::default());
        let router = app(state, HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let id = session["id"].as_str().unwrap().to_string();
        let messages = format!("/api/sessions/{id}/messages");

        let (status, reply) = request(&router, &token, "POST", &messages, Some(json!({"content": "go"}))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply["error"]["message"], "internal server error", "no internal detail is sent");
        let (_, listed) = request(&router, &token, "GET", &format!("/api/sessions/{id}"), None).await;
        assert_eq!(listed["status"], "interrupted");

        // Before, the session stayed registered as running and answered 409 for good.
        let (status, reply) = request(&router, &token, "POST", &messages, Some(json!({"content": "again"}))).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["stop_reason"], "final_answer");
        let (_, listed) = request(&router, &token, "GET", &format!("/api/sessions/{id}"), None).await;
        assert_eq!(listed["status"], "idle");
    }

    #[tokio::test]
    async fn a_running_turn_is_cancelled_through_the_api() {
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let (dir, store) = (&harness.dir, harness.db.store.clone());
        let (_, token) = crate::http::auth::create_user_with_token(store.as_ref(), "u", false).await.unwrap();
        let state = scripted_state(&harness, vec![Step::Hang], dir.path().join("ws"), AgentConfig::default());
        let router = app(state, HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let id = session["id"].as_str().unwrap().to_string();
        let turn = {
            let (router, token, id) = (router.clone(), token.clone(), id.clone());
            tokio::spawn(async move {
                request(&router, &token, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "go"}))).await
            })
        };
        // Wait until the turn is running, then cancel it.
        let mut cancelled = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (status, _) = request(&router, &token, "POST", &format!("/api/sessions/{id}/cancel"), None).await;
            if status == StatusCode::ACCEPTED {
                cancelled = Some(status);
                break;
            }
        }
        assert_eq!(cancelled, Some(StatusCode::ACCEPTED));
        let (status, reply) = tokio::time::timeout(Duration::from_secs(5), turn).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply["stop_reason"], "cancelled");
        let (_, second) =
            request(&router, &token, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "again"}))).await;
        assert_eq!(second["stop_reason"], "final_answer", "the session is usable after a cancel");
    }

    /// The exec-escape corpus through the API: each attack is a tool call a scripted model
    /// makes in a turn, in the attacker's real workspace beside a victim's; with bubblewrap
    /// each is contained, without it each is refused.
    #[tokio::test]
    async fn the_escape_corpus_is_contained_through_the_api() {
        use agent::exec::escapes::{Arena, ATTACKS};
        use agent::exec::Sandbox;
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let store = harness.db.store.clone();
        let (user, token) = crate::http::auth::create_user_with_token(store.as_ref(), "attacker", false).await.unwrap();
        for (sandbox, policy) in
            [(Sandbox::default(), ExecPolicy::default()), (Sandbox::default(), ExecPolicy::Full), (Sandbox::Missing, ExecPolicy::Full)]
        {
            let arena = Arena::for_attacker(&user.id).unwrap();
            let attacks: Vec<_> = ATTACKS.iter().filter(|a| a.needs_shell == (policy == ExecPolicy::Full)).collect();
            let mut script: Vec<Choice> = attacks.iter().map(|a| tool("exec", json!({"command": arena.fill(a.command)}))).collect();
            script.push(Choice { text: "done".into(), ..Default::default() });
            let config = AgentConfig {
                max_steps: attacks.len() + 1,
                exec_policy: policy.clone(),
                exec_limits: ExecLimits { timeout: Duration::from_secs(3), max_file_bytes: 16 * 1024 * 1024, ..Default::default() },
                exec_sandbox: sandbox.clone(),
                ..Default::default()
            };
            let state = scripted_state(&harness, script, arena.workspaces.clone(), config);
            let router = app(state, HttpLimits::default());
            let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
            let id = session["id"].as_str().unwrap().to_string();
            let (status, reply) =
                request(&router, &token, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "go"}))).await;
            assert_eq!(status, StatusCode::OK, "{sandbox:?} {policy:?}: {reply}");
            let events = store.session_events(&user.id, &id).await.unwrap();
            let results: Vec<&crate::storage::StoredEvent> = events.iter().filter(|e| e.kind == "tool_result").collect();
            assert_eq!(results.len(), attacks.len(), "{sandbox:?} {policy:?}");
            let outputs: String = results.iter().map(|e| e.payload["excerpt"].as_str().unwrap_or_default().to_string()).collect();
            assert_eq!(arena.escapes(&outputs), Vec::<String>::new(), "{sandbox:?} {policy:?}");
            if policy != ExecPolicy::Full || sandbox == Sandbox::Missing {
                // Refused before running: every result is an error that says why.
                assert!(results.iter().all(|e| e.payload["ok"] == false), "{sandbox:?} {policy:?}");
            }
            if sandbox == Sandbox::Missing {
                assert!(results.iter().all(|e| e.payload["excerpt"].as_str().unwrap().contains("bubblewrap")));
            }
        }
    }

    #[tokio::test]
    async fn sandbox_refusals_are_recorded_as_tool_errors_and_the_server_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "secret").unwrap();
        let script = vec![
            tool("read", json!({"path": "../outside.txt"})),
            tool("read", json!({"path": outside.to_string_lossy()})),
            tool("exec", json!({"command": "rm -rf notes"})),
            tool("exec", json!({"command": "cat /etc/passwd"})),
            Choice { text: "I could not.".into(), ..Default::default() },
        ];
        let full = vec![tool("exec", json!({"command": "sleep 20"})), tool("exec", json!({"command": "yes"}))];
        let harness = TestApp::new(scripted(vec![])).await.unwrap();
        let store = harness.db.store.clone();
        let (user, token) = crate::http::auth::create_user_with_token(store.as_ref(), "u", false).await.unwrap();
        let make = |script: Vec<Choice>, policy: ExecPolicy| {
            let config = AgentConfig {
                exec_policy: policy,
                exec_limits: ExecLimits { timeout: Duration::from_millis(300), max_output_bytes: 1024, ..Default::default() },
                ..Default::default()
            };
            scripted_state(&harness, script, dir.path().join("workspaces"), config)
        };
        let router = app(make(script, ExecPolicy::default()), HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let id = session["id"].as_str().unwrap().to_string();
        let (status, reply) =
            request(&router, &token, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "go"}))).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["stop_reason"], "final_answer");

        let results = |events: &[crate::storage::StoredEvent]| -> Vec<(bool, String)> {
            events
                .iter()
                .filter(|e| e.kind == "tool_result")
                .map(|e| (e.payload["ok"].as_bool().unwrap(), e.payload["excerpt"].as_str().unwrap().to_string()))
                .collect()
        };
        let events = store.session_events(&user.id, &id).await.unwrap();
        let results = results(&events);
        assert_eq!(results.len(), 4);
        assert!(results.iter().all(|(ok, _)| !ok), "{results:?}");
        assert!(results[0].1.contains("leaves the workspace"));
        assert!(results[1].1.contains("absolute"));
        assert!(results[2].1.contains("not an allowed command"));
        assert!(results[3].1.contains("outside the workspace"));
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");

        // With everything allowed, a command past its time and a flood are killed and cut.
        let router = app(make(full, ExecPolicy::Full), HttpLimits::default());
        let (_, session) = request(&router, &token, "POST", "/api/sessions", Some(json!({}))).await;
        let id = session["id"].as_str().unwrap().to_string();
        let (status, _) = request(&router, &token, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "go"}))).await;
        assert_eq!(status, StatusCode::OK);
        let events = store.session_events(&user.id, &id).await.unwrap();
        let killed: Vec<&crate::storage::StoredEvent> = events.iter().filter(|e| e.kind == "tool_result").collect();
        assert_eq!(killed.len(), 2);
        assert!(killed[0].payload["excerpt"].as_str().unwrap().contains("time limit"));
        assert!(killed[1].payload["excerpt"].as_str().unwrap().contains("size limit"));
        assert!(killed.iter().all(|e| e.payload["ok"] == false && e.payload["exit_code"].is_null()));

        // And the server still answers.
        let (status, _) = request(&router, &token, "GET", "/api/sessions", None).await;
        assert_eq!(status, StatusCode::OK);
    }
}
