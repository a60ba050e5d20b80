//! The evolver's admin API: status, runs, a run's details, starting a run, and approving
//! or rejecting candidates held for review.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use evolver::ReviewError;

use crate::services::evolver::run_and_announce;

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::AppState;

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.0.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the evolver API is for admins".into()))
    }
}

pub async fn status(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let runs = state.evolver.records.runs(1).await?;
    let last = runs.into_iter().next();
    Ok(Json(json!({
        "running": last.as_ref().is_some_and(|r| r.status == "running"),
        "last_run": last,
        "pending_sessions": state.evolver.records.pending_sessions().await?,
        "every_minutes": state.evolver.every_minutes,
        "after_sessions": state.evolver.after_sessions,
        "review": state.evolver.config.review,
        "min_distinct_users": state.evolver.config.min_distinct_users,
    })))
}

pub async fn runs(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    Ok(Json(json!({ "runs": state.evolver.records.runs(100).await? })))
}

pub async fn run(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let (run, candidates) =
        state.evolver.records.run(&id).await?.ok_or_else(|| ApiError::NotFound("no such evolver run".into(), "run_not_found"))?;
    let mut body = serde_json::to_value(run).map_err(anyhow::Error::from)?;
    body["candidates"] = serde_json::to_value(candidates).map_err(anyhow::Error::from)?;
    Ok(Json(body))
}

/// Starts a run in the background; its progress is visible in `/api/evolver/runs`.
pub async fn start_run(State(state): State<AppState>, user: AuthUser) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&user)?;
    if state.evolver.records.runs(1).await?.first().is_some_and(|r| r.status == "running") {
        return Err(ApiError::Conflict("an evolver run is already going".into()));
    }
    // The run yields to users' generations: it waits between its calls while any runs.
    let engine = Arc::new(crate::services::quota::YieldingEngine::new(state.engine.clone(), state.quotas.clone()));
    let evolver = state.evolver.evolver(engine);
    let skills = state.skills.clone();
    tokio::spawn(async move { run_and_announce(evolver, &skills, "api").await });
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": true }))))
}

#[derive(Debug, serde::Deserialize)]
pub struct CandidateFilter {
    /// `pending_review` for the review queue; all candidates when absent.
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/evolver/candidates?status=`: the newest candidates, newest first.
pub async fn candidates(
    State(state): State<AppState>,
    user: AuthUser,
    axum::extract::Query(filter): axum::extract::Query<CandidateFilter>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let candidates = state.evolver.records.candidates(filter.status.as_deref(), 200).await?;
    Ok(Json(json!({ "candidates": candidates })))
}

/// `GET /api/evolver/candidates/{id}`: one candidate with what an admin decides on: its
/// verdict (each gate, the replay numbers per goal), the diff against the version it would
/// replace, and the redacted summaries of the sessions behind it.
pub async fn candidate(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let candidate =
        state.evolver.records.candidate(&id).await?.ok_or_else(|| ApiError::NotFound("no such candidate".into(), "candidate_not_found"))?;
    let viewer = state.skills.viewer(&user.0.id).await?;
    let current = match &candidate.base_version {
        Some(version) => state.skills.store.bundle(&viewer, &candidate.slug, version).await?.unwrap_or_default(),
        None => Default::default(),
    };
    let mut proposed = current.clone();
    proposed.insert("SKILL.md".to_string(), candidate.skill_md.clone().into_bytes());
    let from = candidate.base_version.clone().unwrap_or_else(|| "none".into());
    let diff = tokio::task::spawn_blocking(move || crate::http::skills::unified_diff(&current, &proposed, &from, "candidate"))
        .await
        .map_err(anyhow::Error::from)?;
    let evidence: Vec<Value> = state
        .evolver
        .records
        .summaries_of(&candidate.evidence_sessions)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "request": s.request,
                "goal": s.summary.goal,
                "outcome": s.summary.outcome,
                "helped": s.summary.helped,
                "went_wrong": s.summary.went_wrong,
                "score": s.score,
                "score_source": s.score_source,
            })
        })
        .collect();
    let mut body = serde_json::to_value(&candidate).map_err(anyhow::Error::from)?;
    body["diff"] = json!(diff);
    body["evidence"] = json!(evidence);
    Ok(Json(body))
}

async fn review(state: &AppState, user: &AuthUser, id: &str, approve: bool) -> Result<Json<Value>, ApiError> {
    require_admin(user)?;
    let evolver = state.evolver.evolver(state.engine.clone());
    let result = if approve { evolver.approve(id).await } else { evolver.reject(id).await };
    let candidate = result.map_err(|error| match error {
        ReviewError::NotFound => ApiError::NotFound("no such candidate".into(), "candidate_not_found"),
        error @ ReviewError::NotPending(_) => ApiError::Conflict(error.to_string()),
        // Logged by `ApiError`, never sent.
        ReviewError::Internal(error) => ApiError::Internal(error),
    })?;
    state.skills.refresh().await.map_err(ApiError::Internal)?;
    Ok(Json(serde_json::to_value(candidate).map_err(anyhow::Error::from)?))
}

pub async fn approve(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    review(&state, &user, &id, true).await
}

pub async fn reject(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    review(&state, &user, &id, false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestApp;
    use evolver::testing::RuleEngine;
    use evolver::EvolverConfig;
    use std::time::Duration;

    async fn request(router: &axum::Router, token: &str, method: &str, path: &str) -> (StatusCode, Value) {
        crate::test_support::request(router, token, method, path, None).await
    }

    #[tokio::test]
    async fn admins_start_runs_and_approve_held_candidates() {
        let engine = Arc::new(RuleEngine::default());
        let harness = TestApp::new(engine.clone()).await.unwrap().with_evolver(EvolverConfig { review: true, ..Default::default() });
        let (_, admin) = harness.user("admin", true).await.unwrap();
        let (_, user) = harness.user("user", false).await.unwrap();
        // Two users counted data rows without a skill, verifiably (each rated the answer
        // up): a pattern for a new skill, mined from what they did.
        harness.counted_rows_sessions(&[("admin", "orders.csv", 5), ("user", "people.csv", 8)]).await.unwrap();
        let router = harness.router();

        for path in ["/api/evolver/status", "/api/evolver/runs"] {
            assert_eq!(request(&router, &user, "GET", path).await.0, StatusCode::FORBIDDEN);
        }
        assert_eq!(request(&router, &user, "POST", "/api/evolver/runs").await.0, StatusCode::FORBIDDEN);
        let (_, status) = request(&router, &admin, "GET", "/api/evolver/status").await;
        assert_eq!(status["pending_sessions"], 2);

        let (code, _) = request(&router, &admin, "POST", "/api/evolver/runs").await;
        assert_eq!(code, StatusCode::ACCEPTED);
        let mut run = Value::Null;
        for _ in 0..100 {
            let (_, runs) = request(&router, &admin, "GET", "/api/evolver/runs").await;
            run = runs["runs"][0].clone();
            if run["status"] == "finished" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(run["status"], "finished", "{run}");
        let (_, detail) = request(&router, &admin, "GET", &format!("/api/evolver/runs/{}", run["id"].as_str().unwrap())).await;
        let candidate = &detail["candidates"][0];
        assert_eq!(candidate["status"], "pending_review", "{detail}");
        assert_eq!(candidate["verdict"]["replay"]["candidate_mean"], 1.0);
        let id = candidate["id"].as_str().unwrap();
        let slug = candidate["slug"].as_str().unwrap().to_string();
        assert_eq!(request(&router, &admin, "GET", &format!("/api/skills/{slug}")).await.0, StatusCode::NOT_FOUND, "held, not published");

        assert_eq!(request(&router, &user, "POST", &format!("/api/evolver/candidates/{id}/approve")).await.0, StatusCode::FORBIDDEN);
        let (code, approved) = request(&router, &admin, "POST", &format!("/api/evolver/candidates/{id}/approve")).await;
        assert_eq!(code, StatusCode::OK, "{approved}");
        assert_eq!(approved["status"], "approved_and_published");
        let (_, skill) = request(&router, &user, "GET", &format!("/api/skills/{slug}")).await;
        assert_eq!(skill["latest"]["author_kind"], "evolver");
        let provenance = &skill["latest"]["provenance"]["evolver"];
        assert_eq!(provenance["distinct_users"], 2);
        // Another user sees how many sessions there were, not which, nor the rationale.
        assert_eq!(provenance["evidence_session_count"], 2, "{provenance}");
        assert!(provenance.get("evidence_sessions").is_none() && provenance.get("rationale").is_none(), "{provenance}");
        let (_, versions) = request(&router, &user, "GET", &format!("/api/skills/{slug}/versions")).await;
        assert!(!versions.to_string().contains("evidence_sessions"), "{versions}");
        let (_, seen_by_admin) = request(&router, &admin, "GET", &format!("/api/skills/{slug}")).await;
        assert_eq!(seen_by_admin["latest"]["provenance"]["evolver"]["evidence_sessions"].as_array().map(Vec::len), Some(2));
        let (code, conflict) = request(&router, &admin, "POST", &format!("/api/evolver/candidates/{id}/reject")).await;
        assert_eq!(code, StatusCode::CONFLICT);
        assert_eq!(conflict["error"]["message"], "the candidate is approved_and_published, not pending review");
        assert_eq!(request(&router, &admin, "POST", "/api/evolver/candidates/nope/approve").await.0, StatusCode::NOT_FOUND);
        assert_eq!(request(&router, &admin, "GET", "/api/evolver/runs/nope").await.0, StatusCode::NOT_FOUND);

        // A store failure is a 500 whose cause is logged, not a 409 that tells the database's error.
        let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", harness.dir.path().join("skillhive.db").display())).await.unwrap();
        sqlx::query("ALTER TABLE evolver_candidates RENAME TO gone").execute(&raw).await.unwrap();
        let (code, failure) = request(&router, &admin, "POST", &format!("/api/evolver/candidates/{id}/approve")).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failure["error"]["message"], "internal server error");
    }
}
