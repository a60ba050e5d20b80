//! The caller's workspace over HTTP: list, download, upload and delete files. The same
//! directory the agent's tools act on, so a user can hand the agent input files and take
//! its results; paths are checked by [`Workspace::resolve`] exactly as the tools' are.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use agent::workspace::{Workspace, WorkspaceError};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::AppState;

fn workspace(state: &AppState, user: &AuthUser) -> Result<Workspace, ApiError> {
    Ok(Workspace::open(&state.agent.workspaces.join(&user.0.id))
        .map_err(anyhow::Error::from)?
        .with_quota(state.agent.config.workspace_quota_bytes))
}

/// Workspace errors in the API's terms: a missing file is a 404, a refused path or content
/// a 400, a full workspace a 409; I/O failures are internal.
fn api_error(error: WorkspaceError) -> ApiError {
    match error {
        WorkspaceError::NotFound(_) => ApiError::NotFound(error.to_string(), "file_not_found"),
        WorkspaceError::OverQuota(..) => ApiError::Conflict(error.to_string()),
        WorkspaceError::Io(..) => ApiError::Internal(anyhow::anyhow!(error.to_string())),
        other => ApiError::bad_request(other.to_string(), "invalid_value", Some("path")),
    }
}

pub async fn list_files(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let workspace = workspace(&state, &user)?;
    let files: Vec<Value> = workspace.files().into_iter().map(|(path, bytes)| json!({ "path": path, "bytes": bytes })).collect();
    Ok(Json(json!({ "files": files })))
}

pub async fn get_file(State(state): State<AppState>, user: AuthUser, Path(path): Path<String>) -> Result<Response, ApiError> {
    let workspace = workspace(&state, &user)?;
    let text = workspace.read(&path).map_err(api_error)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

pub async fn put_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the file must be UTF-8 text", "invalid_value", None))?;
    let workspace = workspace(&state, &user)?;
    let bytes = workspace.write(&path, text).map_err(api_error)?;
    Ok((StatusCode::OK, Json(json!({ "path": path, "bytes": bytes }))))
}

/// `DELETE /api/workspace/files`: empties the caller's workspace, so that a new session
/// starts from a clean one. Refused while a turn of theirs runs: it works in these files.
pub async fn clear_files(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let sessions = state.store.list_sessions(&user.0.id).await?;
    if sessions.iter().any(|s| s.status == crate::storage::SessionStatus::Running) {
        return Err(ApiError::Conflict("a turn is running in your workspace; stop it first".into()));
    }
    let workspace = workspace(&state, &user)?;
    let mut removed = 0;
    for (path, _) in workspace.files() {
        workspace.remove(&path).map_err(api_error)?;
        removed += 1;
    }
    Ok(Json(json!({ "removed": removed })))
}

pub async fn delete_file(State(state): State<AppState>, user: AuthUser, Path(path): Path<String>) -> Result<StatusCode, ApiError> {
    let workspace = workspace(&state, &user)?;
    workspace.remove(&path).map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT)
}
