//! The RL admin API: published policies, training runs with their step metrics, and
//! rollback of the default policy. Training and promotion (which scores both sides on
//! held-out tasks for minutes) run from `skillhive rl`; a running server picks up their
//! result within seconds.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::AppState;
use rl::runs::RunDir;

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.0.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("RL administration is for admins".into()))
    }
}

fn rl_dir(state: &AppState) -> Result<std::path::PathBuf, ApiError> {
    state
        .models
        .rl_dir()
        .map(|d| d.to_path_buf())
        .ok_or_else(|| ApiError::NotFound("this server serves no RL policies".into(), "not_found"))
}

/// `GET /api/admin/rl/policies`
pub async fn policies(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let policies = match state.models.registry() {
        Some(registry) => registry.list()?,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "model": state.engine.info().id,
        "serving": state.models.default_policy(),
        "policies": policies,
    })))
}

/// `GET /api/admin/rl/runs`: every run with its latest step.
pub async fn runs(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let dir = rl_dir(&state)?;
    let mut runs = Vec::new();
    for name in RunDir::list(&dir)? {
        let reports = RunDir::open(&dir, &name)?.reports()?;
        runs.push(json!({ "name": name, "steps": reports.len(), "latest": reports.last() }));
    }
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /api/admin/rl/runs/{name}`: every step's metrics.
pub async fn run(State(state): State<AppState>, user: AuthUser, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let dir = rl_dir(&state)?;
    if !RunDir::list(&dir)?.contains(&name) {
        return Err(ApiError::NotFound(format!("no run `{name}`"), "run_not_found"));
    }
    let reports = RunDir::open(&dir, &name)?.reports()?;
    Ok(Json(json!({ "name": name, "steps": reports })))
}

/// `POST /api/admin/rl/rollback`: the previous default serves again, now.
pub async fn rollback(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let registry = state.models.registry().ok_or_else(|| ApiError::NotFound("this server serves no RL policies".into(), "not_found"))?;
    if registry.default_policy()?.is_none() {
        return Err(ApiError::bad_request("no policy is the default; there is nothing to roll back", "nothing_to_roll_back", None));
    }
    registry.rollback()?;
    state.models.refresh().await?;
    Ok(Json(json!({ "model": state.engine.info().id, "serving": state.models.default_policy() })))
}
