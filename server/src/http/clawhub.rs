//! The part of ClawHub's registry API v1 that the `clawhub` CLI (0.23.x) uses for
//! `search`, `inspect`, `install`, `update` and `list`, answered from the skill
//! repository. Shapes follow the CLI's own response schemas; a caller sees exactly what
//! it sees through `/api/skills`, so private skills stay private here too.
//!
//! The CLI sends its token as `Authorization: Bearer`; set it in the CLI's config file
//! (`{"registry": "http://HOST:PORT", "token": "sh-..."}`, path in `CLAWHUB_CONFIG_PATH`).

use std::io::Write;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::skills::version_or_latest;
use crate::http::AppState;
use crate::storage::skills::{SkillInfo, VersionInfo, Viewer};

fn not_found() -> ApiError {
    ApiError::NotFound("skill not found".into(), "skill_not_found")
}

async fn viewer_of(state: &AppState, user: &AuthUser) -> Result<Viewer, ApiError> {
    Ok(state.skills.viewer(&user.0.id).await?)
}

/// Discovery: the API lives at this server's own origin (as a TLS-terminating proxy in
/// front of it reports it, when there is one).
pub async fn well_known(headers: HeaderMap) -> Json<Value> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).filter(|p| *p == "https").unwrap_or("http");
    let base = format!("{scheme}://{host}");
    Json(json!({ "apiBase": base, "registry": base }))
}

fn skill_json(info: &SkillInfo) -> Value {
    json!({
        "slug": info.slug,
        "displayName": info.slug,
        "summary": info.latest.description,
        "description": info.latest.description,
        "tags": { "latest": info.latest.version },
        "stats": { "versions": info.version_count },
        "createdAt": info.created_at,
        "updatedAt": info.updated_at,
    })
}

fn version_json(version: &VersionInfo) -> Value {
    json!({
        "version": version.version,
        "createdAt": version.created_at,
        "changelog": version.changelog,
        "changelogSource": "user",
        "license": null,
    })
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
    mode: Option<String>,
}

/// `GET /api/v1/search?q=&limit=[&mode=exact]`.
pub async fn search(State(state): State<AppState>, user: AuthUser, Query(query): Query<SearchQuery>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let q = query.q.unwrap_or_default();
    let skills = state.skills.store.list_skills(&viewer, Some(&q), None).await?;
    let needle = q.trim().to_lowercase();
    let mut results: Vec<Value> = skills
        .iter()
        .filter(|s| query.mode.as_deref() != Some("exact") || s.slug == needle)
        .map(|s| {
            // A match in the slug ranks above one in the description only.
            let score = if s.slug == needle {
                1.0
            } else if s.slug.contains(&needle) {
                0.8
            } else {
                0.5
            };
            json!({
                "source": "clawhub",
                "slug": s.slug,
                "displayName": s.slug,
                "summary": s.latest.description,
                "version": s.latest.version,
                "score": score,
                "updatedAt": s.updated_at,
                "ownerHandle": null,
            })
        })
        .collect();
    results.sort_by(|a, b| b["score"].as_f64().partial_cmp(&a["score"].as_f64()).unwrap_or(std::cmp::Ordering::Equal));
    results.truncate(query.limit.unwrap_or(25).clamp(1, 200));
    Ok(Json(json!({ "results": results })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/skills?prefix=&limit=`.
pub async fn list(State(state): State<AppState>, user: AuthUser, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let prefix = query.prefix.unwrap_or_default();
    let items: Vec<Value> = state
        .skills
        .store
        .list_skills(&viewer, None, None)
        .await?
        .iter()
        .filter(|s| s.slug.starts_with(&prefix))
        .take(query.limit.unwrap_or(25).clamp(1, 200))
        .map(|s| {
            let mut item = skill_json(s);
            item["latestVersion"] = version_json(&s.latest);
            item
        })
        .collect();
    Ok(Json(json!({ "items": items, "nextCursor": null })))
}

/// `GET /api/v1/skills/{slug}`.
pub async fn skill(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let info = state.skills.store.skill(&viewer, &slug).await?.ok_or_else(not_found)?;
    Ok(Json(json!({
        "skill": skill_json(&info),
        "latestVersion": version_json(&info.latest),
        "metadata": null,
        "owner": null,
        "moderation": null,
    })))
}

/// `GET /api/v1/skills/{slug}/versions`.
pub async fn versions(State(state): State<AppState>, user: AuthUser, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let versions = state.skills.store.versions(&viewer, &slug).await?.ok_or_else(not_found)?;
    Ok(Json(json!({ "items": versions.iter().map(version_json).collect::<Vec<_>>(), "nextCursor": null })))
}

/// `GET /api/v1/skills/{slug}/versions/{version}`, with its files.
pub async fn version(
    State(state): State<AppState>,
    user: AuthUser,
    Path((slug, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let info = state.skills.store.version(&viewer, &slug, &version).await?.ok_or_else(not_found)?;
    let mut body = version_json(&info);
    body["files"] = json!(info.files.iter().map(|f| json!({ "path": f.path, "size": f.size, "sha256": f.sha256 })).collect::<Vec<_>>());
    Ok(Json(json!({ "version": body, "skill": { "slug": info.slug, "displayName": info.slug } })))
}

#[derive(Deserialize)]
pub struct FileQuery {
    path: String,
    version: Option<String>,
    tag: Option<String>,
}

/// `GET /api/v1/skills/{slug}/file?path=&version=`: raw bytes.
pub async fn file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    if let Some(tag) = query.tag.as_deref().filter(|t| *t != "latest" && query.version.is_none()) {
        return Err(ApiError::NotFound(format!("unknown tag `{tag}`"), "tag_not_found"));
    }
    let version = version_or_latest(&state, &viewer, &slug, query.version).await?;
    let bytes = state.skills.store.file(&viewer, &slug, &version, &query.path).await?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
pub struct ResolveQuery {
    slug: String,
    hash: Option<String>,
}

/// `GET /api/v1/resolve?slug=&hash=`: which version a local folder's fingerprint is.
pub async fn resolve(State(state): State<AppState>, user: AuthUser, Query(query): Query<ResolveQuery>) -> Result<Json<Value>, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let info = state.skills.store.skill(&viewer, &query.slug).await?.ok_or_else(not_found)?;
    let matched = match &query.hash {
        Some(hash) => state.skills.store.version_by_fingerprint(&viewer, &query.slug, hash).await?,
        None => None,
    };
    Ok(Json(json!({
        "match": matched.map(|version| json!({ "version": version })),
        "latestVersion": { "version": info.latest.version },
    })))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    slug: String,
    version: Option<String>,
}

/// `GET /api/v1/download?slug=&version=`: the version's files as a zip, paths at its root.
pub async fn download(State(state): State<AppState>, user: AuthUser, Query(query): Query<DownloadQuery>) -> Result<Response, ApiError> {
    let viewer = viewer_of(&state, &user).await?;
    let version = version_or_latest(&state, &viewer, &query.slug, query.version).await?;
    let files = state.skills.store.bundle(&viewer, &query.slug, &version).await?.ok_or_else(not_found)?;
    let zip = zip_files(&files).map_err(ApiError::Internal)?;
    let disposition = format!("attachment; filename=\"{}-{}.zip\"", query.slug, version);
    Ok(([(header::CONTENT_TYPE, "application/zip".to_string()), (header::CONTENT_DISPOSITION, disposition)], zip).into_response())
}

pub fn zip_files(files: &agent::skills::bundle::Files) -> anyhow::Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (path, bytes) in files {
        writer.start_file(path.as_str(), options)?;
        writer.write_all(bytes)?;
    }
    Ok(writer.finish()?.into_inner())
}
