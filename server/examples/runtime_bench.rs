//! Measures the server's own cost, without model time (`bench/runtime`):
//! 1. overhead per agent step (prompt building, tool dispatch (a folder listed),
//!    trajectory events written to SQLite) with a scripted engine that answers at once, p50 and p99;
//! 2. trajectory ingest through the HTTP API (the import endpoint, over TCP) against a raw
//!    sqlx batch insert of the same rows into the same schema.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use agent::agent_loop::{run_turn, AgentConfig, StaticSkills, TurnContext};
use agent::engine::{Choice, Engine, EngineError, EventStream, Generation, GenerationRequest, ModelInfo, ToolCall, Usage};
use agent::trajectory::Event;
use agent::workspace::Workspace;
use server::http::{app, HttpLimits};
use server::services::turns::StoreSink;
use server::sqlite::SqliteStore;
use server::storage::Store;
use server::testing::TestApp;

/// Lists a new folder each step, instantly, and notes when each call arrived.
struct InstantEngine {
    info: ModelInfo,
    calls: Mutex<Vec<Instant>>,
}

impl InstantEngine {
    fn new() -> Self {
        Self { info: ModelInfo { id: "instant".into(), context_window: None, backend: "mistralrs" }, calls: Mutex::new(Vec::new()) }
    }
}

#[async_trait]
impl Engine for InstantEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    async fn generate(&self, _: GenerationRequest) -> Result<Generation, EngineError> {
        let step = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Instant::now());
            calls.len()
        };
        // A new folder each step: the loop stops a turn that repeats a call.
        let arguments = serde_json::json!({ "path": format!("d{step}") }).to_string();
        let call = ToolCall { id: format!("c{step}"), name: "ls".into(), arguments };
        Ok(Generation {
            choices: vec![Choice { tool_calls: vec![call], ..Default::default() }],
            usage: Usage { prompt_tokens: 10, completion_tokens: 5 },
        })
    }
    async fn generate_stream(&self, _: GenerationRequest) -> Result<EventStream, EngineError> {
        Err(EngineError::InvalidRequest("not used".into()))
    }
    async fn score(&self, _: &[u32], _: &[u32]) -> Result<Vec<f32>, EngineError> {
        Err(EngineError::InvalidRequest("not used".into()))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let steps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let ingest_events: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let dir = tempfile::tempdir()?;

    // 1. Overhead per step: the time between consecutive model calls is everything the
    // server does around one step.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("steps.db")).await?);
    let (user, _) = server::http::auth::create_user_with_token(store.as_ref(), "bench", false).await?;
    let session = store.create_session(&user.id, "bench", "instant").await?;
    let engine = InstantEngine::new();
    let workspace = Workspace::open(&dir.path().join("ws"))?;
    // A folder for every step: a listing that differs from the last each time.
    for step in 1..=steps + 1 {
        workspace.write(&format!("d{step}/a.txt"), "x").map_err(|e| anyhow::anyhow!(e))?;
    }
    let skills = StaticSkills::default();
    let sink = StoreSink::new(store.clone(), &user.id, &session.id);
    let config = AgentConfig {
        max_steps: steps + 1,
        token_budget: usize::MAX,
        context_window: usize::MAX / 8,
        max_wall_time: Duration::from_secs(3600),
        ..AgentConfig::default()
    };
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx = TurnContext { engine: &engine, workspace: &workspace, skills: &skills, sink: &sink, config: &config, cancel: cancel_rx };
    let mut history = Vec::new();
    let _ = run_turn(&mut ctx, &mut history, "list the files").await;
    let calls = engine.calls.lock().unwrap().clone();
    let mut per_step: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    per_step.sort();
    let events = store.session_events(&user.id, &session.id).await?.len();
    println!(
        "agent step overhead ({} steps, {events} events written): p50 {:.3} ms, p99 {:.3} ms (target p50 < 1 ms)",
        per_step.len(),
        percentile(&per_step, 0.50).as_secs_f64() * 1e3,
        percentile(&per_step, 0.99).as_secs_f64() * 1e3,
    );

    // 2. Ingest through the API over TCP.
    let mut transcript = String::from(r#"{"type":"session","version":3,"id":"bench"}"#);
    for i in 0..ingest_events {
        transcript.push('\n');
        transcript.push_str(
            &serde_json::json!({"type": "message", "id": format!("e{i}"), "message": {"role": "user", "content": format!("message {i}")}})
                .to_string(),
        );
    }
    let harness = TestApp::new(Arc::new(InstantEngine::new())).await?;
    let (_, token) = harness.user("bench", false).await?;
    let state = harness.state.clone();
    let http = HttpLimits { body_bytes: 256 * 1024 * 1024, ..HttpLimits::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app(state, http)).await });
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("http://{address}/api/trajectories/import"))
        .bearer_auth(&token)
        .body(transcript)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "import failed: {}", response.text().await?);
    let api_rate = ingest_events as f64 / started.elapsed().as_secs_f64();

    // The anchor: the same rows, one transaction, straight through sqlx.
    let raw_store = SqliteStore::open(&dir.path().join("raw.db")).await?;
    let (raw_user, _) = server::http::auth::create_user_with_token(&raw_store, "bench", false).await?;
    let raw_session = raw_store.create_session(&raw_user.id, "raw", "instant").await?;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("raw.db").display())).await?;
    let rows: Vec<Event> = (0..ingest_events).map(|i| Event::UserMessage { text: format!("message {i}") }).collect();
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    for (seq, event) in rows.iter().enumerate() {
        sqlx::query("INSERT INTO events (session_id, user_id, seq, kind, payload) VALUES (?, ?, ?, ?, ?)")
            .bind(&raw_session.id)
            .bind(&raw_user.id)
            .bind(seq as i64 + 1)
            .bind(event.kind())
            .bind(serde_json::to_string(event)?)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let raw_rate = ingest_events as f64 / started.elapsed().as_secs_f64();
    println!(
        "trajectory ingest ({ingest_events} events): API {api_rate:.0} events/s, raw sqlx {raw_rate:.0} events/s, ratio {:.2}x (target >= 0.5x)",
        api_rate / raw_rate
    );
    Ok(())
}
