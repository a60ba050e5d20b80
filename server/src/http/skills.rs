//! The skill repository over HTTP: browsing, publishing, rollback and diffs under
//! `/api/skills`, and sync under `/api/sync` (a manifest with a strong ETag and `since`
//! deltas, and an SSE feed of publications), on the
//! [`SkillRepo`](crate::services::skills::SkillRepo) service.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use agent::skills::bundle::Files;

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::json::JsonBody;
use crate::http::AppState;
use crate::storage::skills::{Actor, Change, PublishRequest, RepoError, Scope, Viewer};

impl From<RepoError> for ApiError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::Invalid(errors) => {
                let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                ApiError::bad_request(format!("the skill bundle is not valid: {list}"), "invalid_skill", Some("files"))
            }
            RepoError::BadRequest(message) => ApiError::bad_request(message, "invalid_request", None),
            RepoError::Conflict(message) => ApiError::Conflict(message),
            RepoError::Forbidden(message) => ApiError::Forbidden(message),
            RepoError::NotFound => not_found(),
            RepoError::Other(e) => ApiError::Internal(e),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such skill or version".into(), "skill_not_found")
}

async fn viewer_of(state: &AppState, user: &AuthUser) -> Result<Viewer, ApiError> {
    Ok(state.skills.viewer(&user.0.id).await?)
}

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    scope: Option<String>,
}

pub async fn list_skills(State(state): State<AppState>, user: AuthUser, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let skills = state.skills.store.list_skills(&viewer, query.q.as_deref(), query.scope.as_deref()).await?;
    Ok(Json(json!({ "skills": skills })))
}

/// Provenance as `user` may see it. An evolver publication names the sessions it learnt
/// from and the engine's rationale; those are other users' data, so only admins see them,
/// and everyone else sees how many sessions there were.
pub fn shown_provenance(mut value: Value, user: &AuthUser) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(evolver)) = map.get_mut("provenance").and_then(|p| p.get_mut("evolver")) {
                    let count = evolver.remove("evidence_sessions").and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
                    evolver.insert("evidence_session_count".into(), json!(count));
                    evolver.remove("rationale");
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if !user.0.is_admin {
        walk(&mut value);
    }
    value
}

pub async fn get_skill(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let skill = state.skills.store.skill(&viewer, &slug).await?.ok_or_else(not_found)?;
    Ok(Json(shown_provenance(serde_json::to_value(skill).map_err(anyhow::Error::from)?, &user)))
}

pub async fn delete_skill(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<StatusCode, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    state.skills.store.delete_skill(&viewer, &slug).await?;
    state.skills.after_write().await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_versions(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let versions = state.skills.store.versions(&viewer, &slug).await?.ok_or_else(not_found)?;
    Ok(Json(shown_provenance(json!({ "slug": slug, "versions": versions }), &user)))
}

pub async fn get_version(
    State(state): State<AppState>,
    user: AuthUser,
    Path((slug, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let version = state.skills.store.version(&viewer, &slug, &version).await?.ok_or_else(not_found)?;
    Ok(Json(shown_provenance(serde_json::to_value(version).map_err(anyhow::Error::from)?, &user)))
}

#[derive(Deserialize)]
pub struct FileQuery {
    version: Option<String>,
}

/// The version a request names, else `latest`.
pub(crate) async fn version_or_latest(state: &AppState, viewer: &Viewer, slug: &str, version: Option<String>) -> Result<String, ApiError> {
    match version {
        Some(v) => Ok(v),
        None => Ok(state.skills.store.skill(viewer, slug).await?.ok_or_else(not_found)?.latest.version),
    }
}

pub async fn get_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path((slug, path)): Path<(String, String)>,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let version = version_or_latest(&state, &viewer, &slug, query.version).await?;
    let bytes = state
        .skills
        .store
        .file(&viewer, &slug, &version, &path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("version {version} of `{slug}` has no file `{path}`"), "file_not_found"))?;
    Ok(file_response(&path, bytes))
}

fn file_response(path: &str, bytes: Vec<u8>) -> Response {
    let content_type = match (std::str::from_utf8(&bytes).is_ok(), path.rsplit('.').next()) {
        (true, Some("md")) => "text/markdown; charset=utf-8",
        (true, Some("json")) => "application/json",
        (true, _) => "text/plain; charset=utf-8",
        (false, _) => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: String,
    to: String,
}

/// A unified diff between two versions, file by file.
pub async fn diff(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let from = state.skills.store.bundle(&viewer, &slug, &query.from).await?.ok_or_else(not_found)?;
    let to = state.skills.store.bundle(&viewer, &slug, &query.to).await?.ok_or_else(not_found)?;
    // Diffing is CPU work of its own: it runs on the blocking pool, a few at a time, so
    // that the async workers (and /healthz) never wait behind it.
    static DIFFS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = DIFFS_AT_ONCE.acquire().await.map_err(anyhow::Error::from)?;
    let (from_label, to_label) = (query.from.clone(), query.to.clone());
    let diff = tokio::task::spawn_blocking(move || unified_diff(&from, &to, &from_label, &to_label)).await.map_err(anyhow::Error::from)?;
    Ok(Json(json!({ "slug": slug, "from": query.from, "to": query.to, "diff": diff })))
}

/// Largest file (either side) that is diffed line by line; a larger one is named, with
/// its sizes, like a binary file.
pub const MAX_DIFF_FILE_BYTES: usize = 256 * 1024;
/// Time a whole diff may take; past it, the line matching falls back to coarser hunks
/// (still a correct diff, only less minimal).
pub const DIFF_DEADLINE: Duration = Duration::from_millis(500);

/// Every changed file as a unified diff (`--- a/<path>@<from>` / `+++ b/<path>@<to>`);
/// binary and oversized files are named, not shown. Its cost is bounded by
/// [`MAX_DIFF_FILE_BYTES`] and [`DIFF_DEADLINE`], whatever the input.
pub fn unified_diff(from: &Files, to: &Files, from_label: &str, to_label: &str) -> String {
    let deadline = Instant::now() + DIFF_DEADLINE;
    let mut paths: Vec<&String> = from.keys().chain(to.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = String::new();
    for path in paths {
        let (old, new) = (from.get(path), to.get(path));
        if old == new {
            continue;
        }
        let text = |bytes: Option<&Vec<u8>>| bytes.map(|b| std::str::from_utf8(b).map(str::to_string));
        match (text(old), text(new)) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => out.push_str(&format!("Binary file {path} differs\n")),
            (old, new) => {
                let old = old.and_then(Result::ok).unwrap_or_default();
                let new = new.and_then(Result::ok).unwrap_or_default();
                if old.len().max(new.len()) > MAX_DIFF_FILE_BYTES {
                    out.push_str(&format!("File {path} differs ({} -> {} bytes; too large to show line by line)\n", old.len(), new.len()));
                    continue;
                }
                let diff = similar::TextDiff::configure().deadline(deadline).diff_lines(&old, &new);
                out.push_str(
                    &diff
                        .unified_diff()
                        .context_radius(3)
                        .header(&format!("a/{path}@{from_label}"), &format!("b/{path}@{to_label}"))
                        .to_string(),
                );
            }
        }
    }
    out
}

/// One file of a published bundle: text as is, or bytes in base64.
#[derive(Deserialize)]
pub struct BundleFile {
    path: String,
    content: Option<String>,
    content_base64: Option<String>,
}

#[derive(Deserialize)]
pub struct PublishBody {
    slug: String,
    /// `shared`, `private` (the default) or `group:<name>`.
    scope: Option<String>,
    version: Option<String>,
    changelog: Option<String>,
    files: Vec<BundleFile>,
}

pub async fn publish(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let scope = Scope::parse_for(body.scope.as_deref().unwrap_or("private"), &viewer)
        .map_err(|m| ApiError::bad_request(m, "invalid_scope", Some("scope")))?;
    let files = bundle_files(body.files)?;
    let request = PublishRequest {
        slug: body.slug,
        scope,
        version: body.version,
        changelog: body.changelog.unwrap_or_default(),
        files,
        provenance: json!({ "source": "api" }),
    };
    let info = state.skills.store.publish(&Actor::User(viewer), request).await?;
    state.skills.after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(info).map_err(anyhow::Error::from)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipPublish {
    /// `shared`, `private` (the default) or `group:<name>`.
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    changelog: Option<String>,
}

/// `POST /api/skills/{slug}/zip?scope=&version=&changelog=`: publishes a new version from
/// a zip of the skill's folder (the body). A zip of the folder itself (`my-skill/SKILL.md`)
/// is read as its contents.
pub async fn publish_zip(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Query(query): Query<ZipPublish>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let scope = Scope::parse_for(query.scope.as_deref().unwrap_or("private"), &viewer)
        .map_err(|m| ApiError::bad_request(m, "invalid_scope", Some("scope")))?;
    let files = tokio::task::spawn_blocking(move || crate::sync_client::unzip(&body))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(|e| ApiError::bad_request(format!("the body is not a usable skill zip: {e:#}"), "invalid_zip", None))?;
    let request = PublishRequest {
        slug,
        scope,
        version: query.version,
        changelog: query.changelog.unwrap_or_default(),
        files: without_top_folder(files),
        provenance: json!({ "source": "zip" }),
    };
    let info = state.skills.store.publish(&Actor::User(viewer), request).await?;
    state.skills.after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(info).map_err(anyhow::Error::from)?)))
}

/// A zip made of a folder holds every path under that folder's name; the bundle is what
/// is inside it.
fn without_top_folder(files: Files) -> Files {
    if files.contains_key("SKILL.md") {
        return files;
    }
    let top: std::collections::BTreeSet<String> =
        files.keys().filter_map(|path| path.split_once('/').map(|(top, _)| top.to_string())).collect();
    let single = top.len() == 1 && files.keys().all(|path| path.contains('/'));
    match top.into_iter().next().map(|t| format!("{t}/")) {
        Some(prefix) if single => files.into_iter().map(|(path, bytes)| (path[prefix.len()..].to_string(), bytes)).collect(),
        _ => files,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    files: Vec<BundleFile>,
    /// `strict` for the AgentSkills reference validator's rules; this server's otherwise.
    #[serde(default)]
    mode: Option<String>,
}

/// `POST /api/skills/{slug}/validate`: the validator's verdict on a bundle before it is
/// published, rule by rule: each rule, whether it holds, and the problems that break it.
/// Nothing is stored; the skill need not exist.
pub async fn validate(_user: AuthUser, Path(slug): Path<String>, JsonBody(body): JsonBody<ValidateBody>) -> Result<Json<Value>, ApiError> {
    use agent::skills::format::Strictness;
    let strictness = match body.mode.as_deref() {
        None | Some("lenient") => Strictness::Lenient,
        Some("strict") => Strictness::Strict,
        Some(_) => return Err(ApiError::bad_request("mode is `lenient` or `strict`", "invalid_value", Some("mode"))),
    };
    let files = bundle_files(body.files)?;
    let problems = agent::skills::bundle::check_bundle(&slug, &files, strictness);
    let rules: Vec<Value> = agent::skills::bundle::RULES
        .iter()
        .map(|(rule, asks)| {
            let broken: Vec<String> = problems.iter().filter(|p| p.rule == *rule).map(ToString::to_string).collect();
            json!({ "rule": rule, "asks": asks, "ok": broken.is_empty(), "problems": broken })
        })
        .collect();
    let errors: Vec<Value> =
        problems.iter().map(|p| json!({ "file": p.file, "line": p.line, "rule": p.rule, "message": p.message })).collect();
    Ok(Json(json!({ "ok": problems.is_empty(), "rules": rules, "errors": errors })))
}

/// The files of a publish or validate request, decoded, each path once.
fn bundle_files(listed: Vec<BundleFile>) -> Result<Files, ApiError> {
    let mut files = Files::new();
    for file in listed {
        let bytes = match (file.content, file.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| {
                ApiError::bad_request(format!("`{}`: content_base64 is not base64: {e}", file.path), "invalid_file", Some("files"))
            })?,
            _ => {
                return Err(ApiError::bad_request(
                    format!("`{}` needs exactly one of content or content_base64", file.path),
                    "invalid_file",
                    Some("files"),
                ))
            }
        };
        if files.insert(file.path.clone(), bytes).is_some() {
            return Err(ApiError::bad_request(format!("`{}` is listed twice", file.path), "invalid_file", Some("files")));
        }
    }
    Ok(files)
}

#[derive(Deserialize)]
pub struct RollbackBody {
    version: String,
}

pub async fn rollback(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: RollbackBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("invalid JSON body (expected {{\"version\": \"x.y.z\"}}): {e}"), "invalid_json", None)
    })?;
    let viewer = viewer_of(&state, &user).await?;
    let info = state.skills.store.rollback(&Actor::User(viewer.clone()), &viewer, &slug, &body.version).await?;
    state.skills.after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(info).map_err(anyhow::Error::from)?)))
}

#[derive(Deserialize)]
pub struct ManifestQuery {
    since: Option<i64>,
}

/// `GET /api/sync/manifest`: every visible skill's latest version and fingerprint, with a
/// strong ETag (304 on `If-None-Match`), or with `?since=<cursor>` only what changed.
pub async fn manifest(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Query(query): Query<ManifestQuery>,
) -> Result<Response, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    if let Some(since) = query.since {
        return Ok(Json(changes_manifest(&state, &viewer, since).await?).into_response());
    }
    let (etag, body) = state.skills.manifest(&viewer).await?;
    let etag_header = HeaderValue::from_str(&etag).map_err(anyhow::Error::from)?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|candidate| candidate.trim() == etag || candidate.trim() == "*"));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response());
    }
    Ok(([(header::ETAG, etag_header), (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// The delta after `since`: each changed slug with its current entry, or in `removed`
/// when the viewer no longer sees it.
async fn changes_manifest(state: &AppState, viewer: &Viewer, since: i64) -> Result<Value, ApiError> {
    let changes = state.skills.store.changes_since(viewer, since).await?;
    let cursor = changes.last().map(|c| c.cursor).unwrap_or(since).max(since);
    let (_, current) = state.skills.store.manifest(viewer).await?;
    let mut skills = BTreeMap::new();
    let mut removed = Vec::new();
    for change in &changes {
        match current.get(&change.slug) {
            Some(entry) => {
                skills.insert(change.slug.clone(), entry.clone());
            }
            None if !removed.contains(&change.slug) => removed.push(change.slug.clone()),
            None => {}
        }
    }
    Ok(json!({ "cursor": cursor, "full": false, "skills": skills, "removed": removed }))
}

/// `GET /api/sync/events`: an SSE stream of visible changes (`event: publish`, `rollback`
/// or `delete`; `id` is the cursor). With `Last-Event-ID` the missed changes come first.
pub async fn events(State(state): State<AppState>, user: AuthUser, headers: HeaderMap) -> Result<Response, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    // Subscribe before reading the backlog, so nothing falls between the two.
    let mut live = state.skills.subscribe();
    let last_seen = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let backlog = match last_seen {
        Some(cursor) => state.skills.store.changes_since(&viewer, cursor).await?,
        None => Vec::new(),
    };
    let token_hash = crate::http::auth::token_hash(&headers)?;
    let user_id = user.0.id.clone();
    let stream = async_stream::stream! {
        let mut sent = last_seen.unwrap_or(0);
        for change in backlog {
            sent = change.cursor;
            yield Ok::<SseEvent, Infallible>(sse_event(&change));
        }
        // The feed outlives the request that opened it, so what the request proved is
        // proved again: the token must still be valid and the user's groups are read
        // anew, on every change and at least every FEED_RECHECK.
        let mut scopes;
        let mut recheck = tokio::time::interval(FEED_RECHECK);
        recheck.tick().await;
        loop {
            let received = tokio::select! {
                received = live.recv() => Some(received),
                _ = recheck.tick() => None,
                // The feed ends with the server: a subscriber reconnects to the next one
                // with Last-Event-ID and misses nothing.
                () = state.shutdown.cancelled() => break,
            };
            match state.store.user_by_token(&token_hash).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot recheck a feed subscriber's token; ending the feed");
                    break;
                }
            }
            match state.skills.viewer(&user_id).await {
                Ok(viewer) => scopes = viewer.scopes(),
                Err(_) => break,
            }
            let Some(received) = received else { continue };
            match received {
                Ok(change) => {
                    if change.cursor <= sent || !scopes.contains(&change.scope_key) {
                        continue;
                    }
                    sent = change.cursor;
                    yield Ok(sse_event(&change));
                }
                // A slow subscriber that missed changes is told to resynchronize.
                Err(broadcast::error::RecvError::Lagged(_)) => yield Ok(SseEvent::default().event("resync").data("{}")),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// How often an open change feed rechecks its subscriber's token and groups.
const FEED_RECHECK: Duration = Duration::from_secs(15);

fn sse_event(change: &Change) -> SseEvent {
    SseEvent::default().event(change.kind.clone()).id(change.cursor.to_string()).data(serde_json::to_string(change).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::Database;
    use crate::services::skills::SkillRepo;
    use agent::agent_loop::SkillSource;

    fn bundle(name: &str, metadata: &str) -> Files {
        let text = format!("---\nname: {name}\ndescription: Does {name}. Use when asked.\n{metadata}---\nSteps.\n");
        Files::from([("SKILL.md".to_string(), text.into_bytes())])
    }

    #[tokio::test]
    async fn agents_see_only_skills_whose_requirements_this_host_meets() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::sqlite(&dir.path().join("db"), &dir.path().join("blobs")).await.unwrap();
        let user = db.store.create_user("u", false).await.unwrap();
        let skills = db.skills.clone();
        let publish = |name: &'static str, metadata: &'static str| {
            let request = PublishRequest {
                slug: name.into(),
                scope: Scope::Shared,
                version: None,
                changelog: String::new(),
                files: bundle(name, metadata),
                provenance: Value::Null,
            };
            let skills = skills.clone();
            async move { skills.publish(&Actor::System, request).await.unwrap() }
        };
        publish("plain", "").await;
        publish("needs-sh", "metadata:\n  openclaw:\n    requires:\n      bins: [sh]\n").await;
        publish("needs-missing", "metadata:\n  openclaw:\n    requires:\n      bins: [no-such-tool-here]\n").await;
        publish("needs-env", "metadata:\n  openclaw:\n    requires:\n      env: [SKILLHIVE_NO_SUCH_VARIABLE]\n").await;
        let repo = SkillRepo::new(skills);
        let viewer = repo.viewer(&user.id).await.unwrap();
        let catalog: Vec<String> = repo.agent_skills(&viewer).await.unwrap().catalog().into_iter().map(|e| e.slug).collect();
        assert_eq!(catalog, vec!["needs-sh", "plain"]);
    }

    #[tokio::test]
    async fn a_damaged_skill_is_left_out_of_catalogs_and_the_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::sqlite(&dir.path().join("db"), &dir.path().join("blobs")).await.unwrap();
        let user = db.store.create_user("u", false).await.unwrap();
        let skills = db.skills.clone();
        for name in ["sound", "damaged"] {
            let request = PublishRequest {
                slug: name.into(),
                scope: Scope::Shared,
                version: None,
                changelog: String::new(),
                files: bundle(name, ""),
                provenance: Value::Null,
            };
            skills.publish(&Actor::System, request).await.unwrap();
        }
        // Damage the blob of the second skill's SKILL.md on disk.
        let damaged = bundle("damaged", "");
        let sha = agent::skills::bundle::sha256_hex(&damaged["SKILL.md"]);
        let blob = walk(&dir.path().join("blobs")).into_iter().find(|p| p.to_string_lossy().contains(&sha)).expect("blob on disk");
        std::fs::write(&blob, b"garbage").unwrap();
        let repo = SkillRepo::new(skills);
        let viewer = repo.viewer(&user.id).await.unwrap();
        let catalog: Vec<String> = repo.agent_skills(&viewer).await.unwrap().catalog().into_iter().map(|e| e.slug).collect();
        assert_eq!(catalog, vec!["sound"]);
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                found.extend(walk(&entry.path()));
            } else {
                found.push(entry.path());
            }
        }
        found
    }

    #[test]
    fn diffs_of_huge_or_adversarial_files_stay_bounded() {
        // 250k lines, as in the reported denial of service: named, not diffed.
        let huge = |seed: u64| -> Vec<u8> { (0..250_000u64).map(|i| format!("{}\n", (i * seed) % 1000)).collect::<String>().into_bytes() };
        let from = Files::from([("data.txt".to_string(), huge(7))]);
        let to = Files::from([("data.txt".to_string(), huge(13))]);
        let diff = unified_diff(&from, &to, "1.0.0", "1.0.1");
        assert!(diff.contains("File data.txt differs") && diff.contains("too large"), "{}", &diff[..diff.len().min(300)]);
        // Just under the size cap, every line different: the deadline ends the matching,
        // and the result is still a diff that names the file.
        let lines =
            |seed: u64| -> Vec<u8> { (0..30_000u64).map(|i| format!("{}\n", (i * seed + 3) % 99_991)).collect::<String>().into_bytes() };
        let (a, b) = (lines(7), lines(11));
        assert!(a.len() < MAX_DIFF_FILE_BYTES && b.len() < MAX_DIFF_FILE_BYTES);
        let diff = unified_diff(&Files::from([("x.txt".to_string(), a)]), &Files::from([("x.txt".to_string(), b)]), "1", "2");
        assert!(diff.starts_with("--- a/x.txt@1"));
    }

    #[test]
    fn diffs_cover_added_removed_and_binary_files() {
        let from = Files::from([("SKILL.md".to_string(), b"a\nb\n".to_vec()), ("old.txt".to_string(), b"gone\n".to_vec())]);
        let to = Files::from([
            ("SKILL.md".to_string(), b"a\nc\n".to_vec()),
            ("new.txt".to_string(), b"here\n".to_vec()),
            ("logo.png".to_string(), vec![0xff, 0x00, 0xfe]),
        ]);
        let diff = unified_diff(&from, &to, "1.0.0", "1.1.0");
        assert!(diff.contains("--- a/SKILL.md@1.0.0\n+++ b/SKILL.md@1.1.0\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"), "{diff}");
        assert!(diff.contains("+++ b/new.txt@1.1.0\n@@ -0,0 +1 @@\n+here\n"), "{diff}");
        assert!(diff.contains("--- a/old.txt@1.0.0\n+++ b/old.txt@1.1.0\n@@ -1 +0,0 @@\n-gone\n"), "{diff}");
        assert!(diff.contains("Binary file logo.png differs"), "{diff}");
    }
}
