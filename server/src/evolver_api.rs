//! The evolver inside the server: its scheduler (a timer and a count of waiting
//! sessions) and its admin API: status, runs, a run's details, starting a run, and
//! approving or rejecting candidates held for review.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use agent::engine::Engine;
use evolver::{Evolver, EvolverConfig, RunError};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::evolver_store::SqliteEvolverStore;
use crate::AppState;

/// The evolver's store and configuration, shared by the scheduler and the API.
pub struct EvolverService {
    pub store: Arc<SqliteEvolverStore>,
    pub config: EvolverConfig,
    /// Minutes between timed runs (0: none) and waiting sessions that start a run (0: none).
    pub every_minutes: u64,
    pub after_sessions: i64,
}

impl EvolverService {
    pub fn new(store: &crate::store::SqliteStore, skills: &crate::skills_api::SkillRepo, config: EvolverConfig) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::new(SqliteEvolverStore::new(store.pool(), skills.store.clone())),
            config,
            every_minutes: 0,
            after_sessions: 0,
        })
    }

    pub fn evolver(&self, engine: Arc<dyn Engine>) -> Evolver {
        Evolver { engine, store: self.store.clone(), config: self.config.clone() }
    }

    /// Runs the evolver whenever the timer expires or enough sessions wait, forever.
    pub async fn schedule(self: Arc<Self>, engine: Arc<dyn Engine>, skills: Arc<crate::skills_api::SkillRepo>) {
        if self.every_minutes == 0 && self.after_sessions <= 0 {
            return;
        }
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let timer = self.every_minutes > 0 && last.elapsed() >= Duration::from_secs(self.every_minutes * 60);
            let pending = self.store.pending_sessions().await.unwrap_or(0);
            let count = self.after_sessions > 0 && pending >= self.after_sessions;
            if !(timer || count) {
                continue;
            }
            let trigger = if count { "sessions" } else { "timer" };
            match self.evolver(engine.clone()).run_once(trigger).await {
                Ok((run_id, report)) => tracing::info!(%run_id, published = report.published, "evolver run finished"),
                Err(RunError::Busy) => tracing::debug!("an evolver run is already going"),
                Err(e) => tracing::warn!(error = %e, "evolver run failed"),
            }
            last = Instant::now();
            // Publications reach the manifest and the feed at once.
            let _ = skills.refresh().await;
        }
    }
}

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.0.is_admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the evolver API is for admins".into()))
    }
}

pub async fn status(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let runs = state.evolver.store.runs(1).await?;
    let last = runs.into_iter().next();
    Ok(Json(json!({
        "running": last.as_ref().is_some_and(|r| r["status"] == "running"),
        "last_run": last,
        "pending_sessions": state.evolver.store.pending_sessions().await?,
        "every_minutes": state.evolver.every_minutes,
        "after_sessions": state.evolver.after_sessions,
        "review": state.evolver.config.review,
        "min_distinct_users": state.evolver.config.min_distinct_users,
    })))
}

pub async fn runs(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    Ok(Json(json!({ "runs": state.evolver.store.runs(100).await? })))
}

pub async fn run(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let run = state.evolver.store.run(&id).await?.ok_or_else(|| ApiError::NotFound("no such evolver run".into(), "run_not_found"))?;
    Ok(Json(run))
}

/// Starts a run in the background; its progress is visible in `/api/evolver/runs`.
pub async fn start_run(State(state): State<AppState>, user: AuthUser) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&user)?;
    if state.evolver.store.runs(1).await?.first().is_some_and(|r| r["status"] == "running") {
        return Err(ApiError::Conflict("an evolver run is already going".into()));
    }
    let evolver = state.evolver.evolver(state.engine.clone());
    let skills = state.skills.clone();
    tokio::spawn(async move {
        match evolver.run_once("api").await {
            Ok((run_id, report)) => tracing::info!(%run_id, published = report.published, "evolver run finished"),
            Err(e) => tracing::warn!(error = %e, "evolver run did not complete"),
        }
        let _ = skills.refresh().await;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": true }))))
}

async fn review(state: &AppState, user: &AuthUser, id: &str, approve: bool) -> Result<Json<Value>, ApiError> {
    require_admin(user)?;
    if state.evolver.store_candidate(id).await?.is_none() {
        return Err(ApiError::NotFound("no such candidate".into(), "candidate_not_found"));
    }
    let evolver = state.evolver.evolver(state.engine.clone());
    let result = if approve { evolver.approve(id).await } else { evolver.reject(id).await };
    let candidate = result.map_err(|e| ApiError::Conflict(e.to_string()))?;
    state.skills.refresh().await.map_err(ApiError::Internal)?;
    Ok(Json(serde_json::to_value(candidate).map_err(anyhow::Error::from)?))
}

impl EvolverService {
    async fn store_candidate(&self, id: &str) -> anyhow::Result<Option<evolver::CandidateRecord>> {
        evolver::EvolverStore::candidate(self.store.as_ref(), id).await
    }
}

pub async fn approve(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    review(&state, &user, &id, true).await
}

pub async fn reject(State(state): State<AppState>, user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    review(&state, &user, &id, false).await
}
