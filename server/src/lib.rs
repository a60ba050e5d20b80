//! The skillhive server: configuration, the HTTP API, SQL storage and the command line.
//!
//! `app(state)` builds the router apart from `main`, so tests can drive it in-process and
//! the binary only binds a socket and serves it.

pub mod auth;
pub mod clawhub_api;
pub mod cli;
pub mod config;
pub mod error;
pub mod evolver_api;
pub mod evolver_store;
pub mod http_server;
pub mod openai_api;
pub mod proxy;
pub mod quota;
pub mod sessions_api;
pub mod skill_store;
pub mod skills_api;
pub mod store;
pub mod sync_client;
pub mod workspace_api;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use agent::engine::Engine;

/// Helpers for the in-process API tests.
#[cfg(test)]
pub(crate) mod test_support {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    /// Sends one request to the router as the holder of `token`; the reply's status and
    /// JSON body (`Null` when the body is not JSON).
    pub async fn request(router: &axum::Router, token: &str, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
        let request = match body {
            Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Limits on generation that the operator sets and every request obeys.
#[derive(Debug, Clone, Copy)]
pub struct GenerationLimits {
    /// Requests asking for more new tokens than this are refused.
    pub max_tokens_cap: usize,
    /// Used when a request names no limit; small models often never stop on their own.
    pub default_max_tokens: usize,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<dyn Engine>,
    pub store: Arc<dyn store::Store>,
    pub limits: GenerationLimits,
    pub agent: Arc<sessions_api::AgentRuntime>,
    pub skills: Arc<skills_api::SkillRepo>,
    pub evolver: Arc<evolver_api::EvolverService>,
    /// Per-user rate limits and quotas.
    pub quotas: Arc<quota::Quotas>,
    /// Cancelled when the server begins to shut down: open feeds end and background tasks
    /// stop, so that a graceful shutdown waits for no client.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Limits on HTTP requests themselves.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub body_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { body_bytes: 2 * 1024 * 1024, request_timeout: Duration::from_secs(600) }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState, http: HttpLimits) -> Router {
    Router::new()
        .route("/healthz", get(openai_api::healthz))
        .route("/v1/models", get(openai_api::list_models))
        .route("/v1/models/{id}", get(openai_api::get_model))
        .route("/v1/chat/completions", post(openai_api::chat_completions))
        .route("/api/sessions", post(sessions_api::create_session).get(sessions_api::list_sessions))
        .route("/api/sessions/{id}", get(sessions_api::get_session))
        .route("/api/sessions/{id}/messages", post(sessions_api::post_message))
        .route("/api/sessions/{id}/cancel", post(sessions_api::cancel_turn))
        .route("/api/sessions/{id}/trajectory", get(sessions_api::trajectory))
        .route("/api/sessions/{id}/feedback", post(sessions_api::feedback))
        .route("/api/trajectories", get(sessions_api::trajectories_since))
        .route("/api/workspace/files", get(workspace_api::list_files))
        .route("/api/workspace/files/{*path}", get(workspace_api::get_file).put(workspace_api::put_file).delete(workspace_api::delete_file))
        .route("/api/trajectories/import", post(sessions_api::import_trajectory))
        .route("/api/skills", get(skills_api::list_skills).post(skills_api::publish))
        .route("/api/skills/{slug}", get(skills_api::get_skill).delete(skills_api::delete_skill))
        .route("/api/skills/{slug}/versions", get(skills_api::list_versions))
        .route("/api/skills/{slug}/versions/{version}", get(skills_api::get_version))
        .route("/api/skills/{slug}/files/{*path}", get(skills_api::get_file))
        .route("/api/skills/{slug}/diff", get(skills_api::diff))
        .route("/api/skills/{slug}/rollback", post(skills_api::rollback))
        .route("/api/sync/manifest", get(skills_api::manifest))
        .route("/api/sync/events", get(skills_api::events))
        .route("/api/evolver/status", get(evolver_api::status))
        .route("/api/evolver/runs", get(evolver_api::runs).post(evolver_api::start_run))
        .route("/api/evolver/runs/{id}", get(evolver_api::run))
        .route("/api/evolver/candidates/{id}/approve", post(evolver_api::approve))
        .route("/api/evolver/candidates/{id}/reject", post(evolver_api::reject))
        .route("/.well-known/clawhub.json", get(clawhub_api::well_known))
        .route("/.well-known/clawdhub.json", get(clawhub_api::well_known))
        .route("/api/v1/search", get(clawhub_api::search))
        .route("/api/v1/resolve", get(clawhub_api::resolve))
        .route("/api/v1/download", get(clawhub_api::download))
        .route("/api/v1/skills", get(clawhub_api::list))
        .route("/api/v1/skills/{slug}", get(clawhub_api::skill))
        .route("/api/v1/skills/{slug}/versions", get(clawhub_api::versions))
        .route("/api/v1/skills/{slug}/versions/{version}", get(clawhub_api::version))
        .route("/api/v1/skills/{slug}/file", get(clawhub_api::file))
        .fallback(error::not_found)
        .with_state(state)
        // The body limit is tower-http's; axum's own default limit is lifted so that there
        // is exactly one, configurable, limit.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(http.body_bytes))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, http.request_timeout))
        // Errors produced by the layers above (oversized body, timeout) come back as bare
        // status codes and text; wrapping them all, this turns every non-JSON error into
        // the OpenAI error shape.
        .layer(axum::middleware::map_response(error::shape_bare_errors))
        .layer(TraceLayer::new_for_http())
}
