//! The evolver's storage. Each backend keeps the evolver's own tables (runs, summaries,
//! candidates, the lease) behind [`EvolverRecords`]; [`RepoEvolverStore`] joins them to
//! the skill repository to give the evolver crate the one [`EvolverStore`] it works on.
//! Publishing goes through the [`SkillStore`], so the evolver's versions obey the same
//! rules (immutability, the change log) as everyone's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use evolver::{CandidateRecord, EvolverStore, RunReport, SessionTrace, SkillText, SummaryRecord};

use crate::storage::skills::{Actor, PublishRequest, Scope, SkillStore, Viewer};

/// An evolver run as the API lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub id: String,
    pub trigger: String,
    /// `running`, `finished` or `failed`.
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub report: Value,
}

/// An `evolver_runs` row as every backend reads it: id, trigger, status, report (JSON
/// text), started_at, finished_at.
pub type RunRow = (String, String, String, String, i64, Option<i64>);

pub fn run_record((id, trigger, status, report, started_at, finished_at): RunRow) -> RunRecord {
    RunRecord { id, trigger, status, started_at, finished_at, report: serde_json::from_str(&report).unwrap_or(Value::Null) }
}

/// The evolver's own tables on one database.
#[async_trait]
pub trait EvolverRecords: Send + Sync {
    /// Takes the single evolver lease for `ttl` unless another holder has it unexpired;
    /// one lease for every node on the database.
    async fn try_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool>;
    async fn release_lease(&self, holder: &str) -> anyhow::Result<()>;
    async fn start_run(&self, trigger: &str) -> anyhow::Result<String>;
    async fn update_run(&self, run_id: &str, status: &str, report: &RunReport) -> anyhow::Result<()>;
    async fn unsummarized_sessions(&self, limit: usize) -> anyhow::Result<Vec<SessionTrace>>;
    async fn save_summary(&self, record: &SummaryRecord) -> anyhow::Result<()>;
    async fn summaries_since(&self, since: i64) -> anyhow::Result<Vec<SummaryRecord>>;
    async fn save_candidate(&self, candidate: &CandidateRecord) -> anyhow::Result<()>;
    async fn candidate(&self, id: &str) -> anyhow::Result<Option<CandidateRecord>>;
    async fn published_candidates(&self) -> anyhow::Result<Vec<CandidateRecord>>;
    /// The newest candidates (all, or those with `status`), newest first: the review queue.
    async fn candidates(&self, status: Option<&str>, limit: i64) -> anyhow::Result<Vec<CandidateRecord>>;
    /// The (redacted) summaries of these sessions, where there are any.
    async fn summaries_of(&self, session_ids: &[String]) -> anyhow::Result<Vec<SummaryRecord>>;
    /// Finished sessions not yet summarized (for the "after K new sessions" trigger).
    async fn pending_sessions(&self) -> anyhow::Result<i64>;
    /// The newest runs, newest first.
    async fn runs(&self, limit: i64) -> anyhow::Result<Vec<RunRecord>>;
    /// One run and its candidates, by id.
    async fn run(&self, id: &str) -> anyhow::Result<Option<(RunRecord, Vec<CandidateRecord>)>>;
}

/// Unix seconds now, as the evolver's tables keep time.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The evolver reads and writes the shared scope only; a viewer that belongs to no user
/// and no group sees exactly that.
fn shared_viewer() -> Viewer {
    Viewer { user_id: String::new(), is_admin: true, groups: Vec::new() }
}

/// The evolver crate's store: a backend's evolver tables plus the skill repository.
pub struct RepoEvolverStore {
    pub records: Arc<dyn EvolverRecords>,
    pub skills: Arc<dyn SkillStore>,
}

#[async_trait]
impl EvolverStore for RepoEvolverStore {
    async fn try_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool> {
        self.records.try_lease(holder, ttl).await
    }

    async fn release_lease(&self, holder: &str) -> anyhow::Result<()> {
        self.records.release_lease(holder).await
    }

    async fn start_run(&self, trigger: &str) -> anyhow::Result<String> {
        self.records.start_run(trigger).await
    }

    async fn update_run(&self, run_id: &str, status: &str, report: &RunReport) -> anyhow::Result<()> {
        self.records.update_run(run_id, status, report).await
    }

    async fn unsummarized_sessions(&self, limit: usize) -> anyhow::Result<Vec<SessionTrace>> {
        self.records.unsummarized_sessions(limit).await
    }

    async fn save_summary(&self, record: &SummaryRecord) -> anyhow::Result<()> {
        self.records.save_summary(record).await
    }

    async fn summaries_since(&self, since: i64) -> anyhow::Result<Vec<SummaryRecord>> {
        self.records.summaries_since(since).await
    }

    async fn shared_skill(&self, slug: &str) -> anyhow::Result<Option<SkillText>> {
        let viewer = shared_viewer();
        let Some(info) = self.skills.skill(&viewer, slug).await? else { return Ok(None) };
        if info.scope != "shared" {
            return Ok(None);
        }
        let Some(skill_md) = self.shared_skill_version(slug, &info.latest.version).await? else { return Ok(None) };
        Ok(Some(SkillText { slug: slug.to_string(), version: info.latest.version, skill_md }))
    }

    async fn shared_skill_version(&self, slug: &str, version: &str) -> anyhow::Result<Option<String>> {
        let files = self.skills.bundle(&shared_viewer(), slug, version).await?;
        Ok(files.and_then(|f| f.get("SKILL.md").and_then(|b| String::from_utf8(b.clone()).ok())))
    }

    async fn save_candidate(&self, candidate: &CandidateRecord) -> anyhow::Result<()> {
        self.records.save_candidate(candidate).await
    }

    async fn candidate(&self, id: &str) -> anyhow::Result<Option<CandidateRecord>> {
        self.records.candidate(id).await
    }

    async fn published_candidates(&self) -> anyhow::Result<Vec<CandidateRecord>> {
        self.records.published_candidates().await
    }

    async fn publish(&self, run_id: &str, slug: &str, skill_md: &str, changelog: &str, provenance: Value) -> anyhow::Result<String> {
        // An improvement keeps the skill's other files; a new skill is its SKILL.md.
        let viewer = shared_viewer();
        let mut files = match self.skills.skill(&viewer, slug).await? {
            Some(info) if info.scope == "shared" => self.skills.bundle(&viewer, slug, &info.latest.version).await?.unwrap_or_default(),
            _ => Default::default(),
        };
        files.insert("SKILL.md".into(), skill_md.as_bytes().to_vec());
        let request = PublishRequest {
            slug: slug.to_string(),
            scope: Scope::Shared,
            version: None,
            changelog: changelog.to_string(),
            files,
            provenance,
        };
        let info = self.skills.publish(&Actor::Evolver(run_id.to_string()), request).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(info.version)
    }

    async fn rollback(&self, slug: &str, version: &str, reason: &str) -> anyhow::Result<String> {
        let viewer = shared_viewer();
        let files = self.skills.bundle(&viewer, slug, version).await?.ok_or_else(|| anyhow::anyhow!("no version {version} of {slug}"))?;
        let request = PublishRequest {
            slug: slug.to_string(),
            scope: Scope::Shared,
            version: None,
            changelog: format!("Automatic rollback to {version}: {reason}"),
            files,
            provenance: serde_json::json!({ "rollback": { "restored": version, "reason": reason, "by": "evolver watch" } }),
        };
        let info = self.skills.publish(&Actor::Evolver("watch".into()), request).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(info.version)
    }
}
