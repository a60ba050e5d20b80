//! HTTP: the routes (all in [`app`]), the state every handler reaches, and one module
//! per resource. Handlers translate requests into service and storage calls; they hold
//! no SQL.

pub mod admin;
pub mod auth;
pub mod clawhub;
pub mod error;
pub mod evolver;
pub mod json;
pub mod openai;
pub mod proxy;
pub mod rl;
pub mod server;
pub mod sessions;
pub mod skills;
pub mod web;
#[cfg(test)]
mod web_api_tests;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use agent::engine::Engine;

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
    /// The engine behind the server's default model id (in a running server, the model
    /// router: the base model or the promoted RL policy).
    pub engine: Arc<dyn Engine>,
    /// The published RL policies, served by their own ids.
    pub models: Arc<crate::services::models::ModelRouter>,
    pub store: Arc<dyn crate::storage::Store>,
    pub limits: GenerationLimits,
    pub agent: Arc<crate::services::turns::AgentRuntime>,
    pub skills: Arc<crate::services::skills::SkillRepo>,
    pub evolver: Arc<crate::services::evolver::EvolverService>,
    /// Per-user rate limits and quotas.
    pub quotas: Arc<crate::services::quota::Quotas>,
    /// Browser sign-in: passwords and browser sessions.
    pub accounts: Arc<crate::services::accounts::Accounts>,
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
        .route("/healthz", get(openai::healthz))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/api/sessions", post(sessions::create_session).get(sessions::list_sessions))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/me", get(auth::me))
        .route("/api/admin/users", get(admin::list_users).post(admin::create_user))
        .route("/api/admin/users/{id}", axum::routing::patch(admin::change_user))
        .route("/api/admin/users/{id}/groups/{group}", axum::routing::put(admin::join_group).delete(admin::leave_group))
        .route("/api/admin/rl/policies", get(rl::policies))
        .route("/api/admin/rl/runs", get(rl::runs))
        .route("/api/admin/rl/runs/{name}", get(rl::run))
        .route("/api/admin/rl/rollback", post(rl::rollback))
        .route("/api/tokens", get(auth::list_tokens).post(auth::create_token))
        .route("/api/tokens/{id}", axum::routing::delete(auth::revoke_token))
        .route("/api/sessions/{id}", get(sessions::get_session).patch(sessions::change_session).delete(sessions::delete_session))
        .route("/api/sessions/{id}/messages", post(sessions::post_message))
        .route("/api/sessions/{id}/cancel", post(sessions::cancel_turn))
        .route("/api/sessions/{id}/trajectory", get(sessions::trajectory))
        .route("/api/sessions/{id}/events", get(sessions::session_feed))
        .route("/api/sessions/{id}/feedback", post(sessions::feedback).get(sessions::list_feedback))
        .route("/api/trajectories", get(sessions::trajectories_since))
        .route("/api/workspace/files", get(workspace::list_files).delete(workspace::clear_files))
        .route("/api/workspace/files/{*path}", get(workspace::get_file).put(workspace::put_file).delete(workspace::delete_file))
        .route("/api/trajectories/import", post(sessions::import_trajectory))
        .route("/api/skills", get(skills::list_skills).post(skills::publish))
        .route("/api/skills/{slug}", get(skills::get_skill).delete(skills::delete_skill))
        .route("/api/skills/{slug}/versions", get(skills::list_versions))
        .route("/api/skills/{slug}/versions/{version}", get(skills::get_version))
        .route("/api/skills/{slug}/files/{*path}", get(skills::get_file))
        .route("/api/skills/{slug}/diff", get(skills::diff))
        .route("/api/skills/{slug}/rollback", post(skills::rollback))
        .route("/api/skills/{slug}/validate", post(skills::validate))
        .route("/api/skills/{slug}/zip", post(skills::publish_zip))
        .route("/api/sync/manifest", get(skills::manifest))
        .route("/api/sync/events", get(skills::events))
        .route("/api/evolver/status", get(evolver::status))
        .route("/api/evolver/runs", get(evolver::runs).post(evolver::start_run))
        .route("/api/evolver/runs/{id}", get(evolver::run))
        .route("/api/evolver/candidates", get(evolver::candidates))
        .route("/api/evolver/candidates/{id}", get(evolver::candidate))
        .route("/api/evolver/candidates/{id}/approve", post(evolver::approve))
        .route("/api/evolver/candidates/{id}/reject", post(evolver::reject))
        .route("/.well-known/clawhub.json", get(clawhub::well_known))
        .route("/.well-known/clawdhub.json", get(clawhub::well_known))
        .route("/api/v1/search", get(clawhub::search))
        .route("/api/v1/resolve", get(clawhub::resolve))
        .route("/api/v1/download", get(clawhub::download))
        .route("/api/v1/skills", get(clawhub::list))
        .route("/api/v1/skills/{slug}", get(clawhub::skill))
        .route("/api/v1/skills/{slug}/versions", get(clawhub::versions))
        .route("/api/v1/skills/{slug}/versions/{version}", get(clawhub::version))
        .route("/api/v1/skills/{slug}/file", get(clawhub::file))
        .fallback(web::file_or_not_found)
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
        .layer(axum::middleware::map_response(web::security_headers))
        .layer(TraceLayer::new_for_http())
}
