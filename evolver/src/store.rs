//! What the evolver reads and writes, behind a trait: the server implements it on SQLite
//! and the skill repository; tests implement it in memory.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use agent::trajectory::Event;

/// A finished session, as the evolver receives it.
#[derive(Debug, Clone)]
pub struct SessionTrace {
    pub session_id: String,
    pub user_id: String,
    pub user_name: String,
    /// Unix seconds of the session's last activity.
    pub updated_at: i64,
    pub events: Vec<Event>,
    /// The user's ratings (`up`/`down`), oldest first.
    pub feedback: Vec<String>,
    /// Whether this server ran the session (its agent or its proxy) and so saw what
    /// happened; an imported session is only what its user claims.
    pub observed: bool,
}

/// What became of a session, as far as anything verifiable says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Success,
    Partial,
    Failure,
    /// Nothing verifiable says: no rating from the user, no failure signal. Not a success.
    #[default]
    Unknown,
}

impl Verdict {
    /// The score this verdict stands for; none for `Unknown`, which counts for nothing.
    pub fn score(self) -> Option<f64> {
        match self {
            Verdict::Success => Some(1.0),
            Verdict::Partial => Some(0.5),
            Verdict::Failure => Some(0.0),
            Verdict::Unknown => None,
        }
    }
}

/// What a replay needs to ask a session's request again and check the result: the files
/// the session found, and what it answered and wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayCase {
    /// Workspace files as the session first found them.
    pub inputs: BTreeMap<String, String>,
    pub answer: Option<String>,
    /// Files the session wrote, as it left them.
    pub outputs: BTreeMap<String, String>,
    /// The tool calls that worked, in order, as `(tool, arguments)`; skill reads left out.
    pub procedure: Vec<(String, String)>,
    /// The text of the last tool result that worked.
    pub last_result: String,
}

/// One held-out session asked again without and with a candidate skill: the A/B gate's
/// evidence per case. Kept on the candidate (admins see it; RL reads preference pairs
/// from it) and never in a published skill's provenance, since the answers may quote the
/// session's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayComparison {
    pub session_id: String,
    pub baseline: ReplayOutcome,
    pub candidate: ReplayOutcome,
}

/// What one replay did: whether it passed the session's check, and its final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayOutcome {
    pub passed: bool,
    pub answer: Option<String>,
}

/// One session, summarized and scored once, by the run that first saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub session_id: String,
    pub user_id: String,
    pub run_id: String,
    pub updated_at: i64,
    /// The user's first request, redacted: what a replay asks again.
    pub request: String,
    pub summary: SessionSummary,
    /// Skills read in the session, as `(slug, version)`, from the trajectory itself.
    pub skills_read: Vec<(String, String)>,
    /// 0.0 (failed) to 1.0 (succeeded); 0.5 where the verdict is unknown, which no
    /// average counts (see [`SummaryRecord::known_score`]).
    pub score: f64,
    /// `feedback`, `signals`, `judge`, `unverified` or `claimed`.
    pub score_source: String,
    #[serde(default)]
    pub verdict: Verdict,
    /// See [`SessionTrace::observed`].
    #[serde(default)]
    pub observed: bool,
    /// Why the engine's summary was thrown away (it was not about this session).
    #[serde(default)]
    pub summary_discarded: Option<String>,
    #[serde(default)]
    pub replay: ReplayCase,
}

impl SummaryRecord {
    /// The score when a verifiable signal gave one.
    pub fn known_score(&self) -> Option<f64> {
        self.verdict.score()
    }
}

/// The structured summary the engine writes of a redacted trajectory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub goal: String,
    /// `success`, `partial`, `failure` or `unknown`: the LLM judge's verdict.
    pub outcome: String,
    pub helped: String,
    pub went_wrong: String,
    pub turning_point: String,
}

/// The latest shared version of a skill.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillText {
    pub slug: String,
    pub version: String,
    pub skill_md: String,
}

/// A candidate change and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub id: String,
    pub run_id: String,
    pub slug: String,
    /// `improve`, `rewrite_description` or `create`.
    pub action: String,
    /// The version it would replace (none for a new skill).
    pub base_version: Option<String>,
    pub skill_md: String,
    pub rationale: String,
    pub evidence_sessions: Vec<String>,
    pub distinct_users: usize,
    /// `accepted`, `rejected`, `pending_review`, `published`, `approved_and_published`,
    /// `rejected_by_admin` or `rolled_back`.
    pub status: String,
    /// Each gate's outcome and numbers.
    pub verdict: Value,
    pub published_version: Option<String>,
    /// Who wrote the text: `mined` (the steps of sessions that worked) or `model`.
    #[serde(default)]
    pub writer: String,
}

/// A run's progress and totals, stored as it goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub new_sessions: usize,
    pub redactions: std::collections::BTreeMap<String, usize>,
    pub groups: usize,
    pub patterns: usize,
    pub candidates: usize,
    pub accepted: usize,
    pub published: usize,
    pub rolled_back: usize,
    /// Summaries thrown away because they were not about their session.
    #[serde(default)]
    pub summaries_discarded: usize,
    /// Per pattern: what was decided and why.
    #[serde(default)]
    pub decisions: Vec<DecisionReport>,
    /// Per step: name, LLM calls, prompt and completion tokens, milliseconds.
    pub steps: Vec<StepReport>,
    pub error: Option<String>,
}

/// One pattern's decision, for the run report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionReport {
    pub pattern: String,
    /// `create`, `improve`, `rewrite_description` or `skip`.
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: String,
    pub items: usize,
    pub llm_calls: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Engine calls made by A/B replays (not in `llm_calls`).
    pub replay_calls: usize,
    pub millis: u64,
}

#[async_trait]
pub trait EvolverStore: Send + Sync {
    /// Takes the single evolver lease for `ttl` unless another holder has it unexpired.
    async fn try_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool>;
    async fn release_lease(&self, holder: &str) -> anyhow::Result<()>;
    /// Records a new run; returns its id.
    async fn start_run(&self, trigger: &str) -> anyhow::Result<String>;
    /// Stores the run's progress (`running`) or its end (`finished`, `failed`).
    async fn update_run(&self, run_id: &str, status: &str, report: &RunReport) -> anyhow::Result<()>;
    /// Finished sessions that no run has summarized yet, oldest first.
    async fn unsummarized_sessions(&self, limit: usize) -> anyhow::Result<Vec<SessionTrace>>;
    async fn save_summary(&self, record: &SummaryRecord) -> anyhow::Result<()>;
    /// Summaries of sessions updated at or after `since` (Unix seconds).
    async fn summaries_since(&self, since: i64) -> anyhow::Result<Vec<SummaryRecord>>;
    /// The latest shared version of a skill.
    async fn shared_skill(&self, slug: &str) -> anyhow::Result<Option<SkillText>>;
    /// The `SKILL.md` of one shared version.
    async fn shared_skill_version(&self, slug: &str, version: &str) -> anyhow::Result<Option<String>>;
    async fn save_candidate(&self, candidate: &CandidateRecord) -> anyhow::Result<()>;
    async fn candidate(&self, id: &str) -> anyhow::Result<Option<CandidateRecord>>;
    /// Candidates whose publication is still watched.
    async fn published_candidates(&self) -> anyhow::Result<Vec<CandidateRecord>>;
    /// Publishes `skill_md` as a new shared version of `slug` (its other files kept);
    /// returns the version.
    async fn publish(&self, run_id: &str, slug: &str, skill_md: &str, changelog: &str, provenance: Value) -> anyhow::Result<String>;
    /// Publishes a copy of `version` as the new latest; returns the new version.
    async fn rollback(&self, slug: &str, version: &str, reason: &str) -> anyhow::Result<String>;
}
