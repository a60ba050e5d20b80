//! The evolver's tables on the server's SQLite database.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqlitePool;

use agent::trajectory::Event;
use evolver::{CandidateRecord, RunReport, SessionTrace, SummaryRecord};

use crate::storage::evolver::{now_secs as now, run_record, EvolverRecords, RunRecord, RunRow};

pub struct SqliteEvolverRecords {
    pool: SqlitePool,
}

impl SqliteEvolverRecords {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl EvolverRecords for SqliteEvolverRecords {
    async fn try_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool> {
        let now = now();
        let result = sqlx::query(
            "INSERT INTO evolver_lease (name, holder, expires_at) VALUES ('evolver', ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE evolver_lease.expires_at < ?",
        )
        .bind(holder)
        .bind(now + ttl.as_secs() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_lease(&self, holder: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM evolver_lease WHERE name = 'evolver' AND holder = ?").bind(holder).execute(&self.pool).await?;
        Ok(())
    }

    async fn start_run(&self, trigger: &str) -> anyhow::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO evolver_runs (id, trigger, status, started_at) VALUES (?, ?, 'running', ?)")
            .bind(&id)
            .bind(trigger)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    async fn update_run(&self, run_id: &str, status: &str, report: &RunReport) -> anyhow::Result<()> {
        let finished = (status != "running").then(now);
        sqlx::query("UPDATE evolver_runs SET status = ?, report = ?, finished_at = ? WHERE id = ?")
            .bind(status)
            .bind(serde_json::to_string(report)?)
            .bind(finished)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unsummarized_sessions(&self, limit: usize) -> anyhow::Result<Vec<SessionTrace>> {
        let sessions: Vec<(String, String, String, i64, String)> = sqlx::query_as(
            "SELECT s.id, s.user_id, u.name, CAST(strftime('%s', s.updated_at) AS INTEGER), s.source FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.status != 'running' \
             AND NOT EXISTS (SELECT 1 FROM session_summaries m WHERE m.session_id = s.id) \
             AND EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.id) \
             ORDER BY s.updated_at, s.id LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut traces = Vec::new();
        for (session_id, user_id, user_name, updated_at, source) in sessions {
            let payloads: Vec<(String,)> = sqlx::query_as("SELECT payload FROM events WHERE session_id = ? ORDER BY seq")
                .bind(&session_id)
                .fetch_all(&self.pool)
                .await?;
            let events = payloads.into_iter().filter_map(|(p,)| serde_json::from_str::<Event>(&p).ok()).collect();
            let feedback: Vec<(String,)> = sqlx::query_as("SELECT rating FROM feedback WHERE session_id = ? ORDER BY id")
                .bind(&session_id)
                .fetch_all(&self.pool)
                .await?;
            traces.push(SessionTrace {
                session_id,
                user_id,
                user_name,
                updated_at,
                events,
                feedback: feedback.into_iter().map(|(r,)| r).collect(),
                // Sessions run here by the agent or through the proxy were observed; any
                // other source is an import, whose events only claim what happened.
                observed: matches!(source.as_str(), "agent" | "proxy"),
            });
        }
        Ok(traces)
    }

    async fn save_summary(&self, record: &SummaryRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO session_summaries (session_id, user_id, run_id, updated_at, record, score, score_source) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&record.session_id)
        .bind(&record.user_id)
        .bind(&record.run_id)
        .bind(record.updated_at)
        .bind(serde_json::to_string(record)?)
        .bind(record.score)
        .bind(&record.score_source)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn summaries_since(&self, since: i64) -> anyhow::Result<Vec<SummaryRecord>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT record FROM session_summaries WHERE updated_at >= ? ORDER BY updated_at, session_id")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().filter_map(|(r,)| serde_json::from_str(&r).ok()).collect())
    }

    async fn save_candidate(&self, candidate: &CandidateRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO evolver_candidates (id, run_id, slug, status, record, created_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
        )
        .bind(&candidate.id)
        .bind(&candidate.run_id)
        .bind(&candidate.slug)
        .bind(&candidate.status)
        .bind(serde_json::to_string(candidate)?)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn candidate(&self, id: &str) -> anyhow::Result<Option<CandidateRecord>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT record FROM evolver_candidates WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|(r,)| serde_json::from_str(&r).ok()))
    }

    async fn published_candidates(&self) -> anyhow::Result<Vec<CandidateRecord>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT record FROM evolver_candidates WHERE status IN ('published', 'approved_and_published')")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().filter_map(|(r,)| serde_json::from_str(&r).ok()).collect())
    }

    async fn candidates(&self, status: Option<&str>, limit: i64) -> anyhow::Result<Vec<CandidateRecord>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT record FROM evolver_candidates WHERE (? IS NULL OR status = ?) ORDER BY created_at DESC, id LIMIT ?")
                .bind(status)
                .bind(status)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().filter_map(|(r,)| serde_json::from_str(&r).ok()).collect())
    }

    async fn summaries_of(&self, session_ids: &[String]) -> anyhow::Result<Vec<SummaryRecord>> {
        let mut found = Vec::new();
        // One query per session: evidence lists are short (a few dozen sessions at most).
        for id in session_ids {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT record FROM session_summaries WHERE session_id = ?").bind(id).fetch_optional(&self.pool).await?;
            found.extend(row.and_then(|(r,)| serde_json::from_str(&r).ok()));
        }
        Ok(found)
    }

    async fn pending_sessions(&self) -> anyhow::Result<i64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions s WHERE s.status != 'running' \
             AND NOT EXISTS (SELECT 1 FROM session_summaries m WHERE m.session_id = s.id) \
             AND EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.id)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn runs(&self, limit: i64) -> anyhow::Result<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(
            "SELECT id, trigger, status, report, started_at, finished_at FROM evolver_runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(run_record).collect())
    }

    async fn run(&self, id: &str) -> anyhow::Result<Option<(RunRecord, Vec<CandidateRecord>)>> {
        let row: Option<RunRow> =
            sqlx::query_as("SELECT id, trigger, status, report, started_at, finished_at FROM evolver_runs WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(run) = row.map(run_record) else { return Ok(None) };
        let candidates: Vec<(String,)> = sqlx::query_as("SELECT record FROM evolver_candidates WHERE run_id = ? ORDER BY created_at, id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some((run, candidates.into_iter().filter_map(|(r,)| serde_json::from_str(&r).ok()).collect())))
    }
}
