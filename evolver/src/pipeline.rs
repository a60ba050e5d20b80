//! One evolver run: summarize and score the new sessions, group all recent ones into
//! patterns, decide per pattern, gate each candidate, publish what passes, and watch
//! earlier publications for regressions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use agent::agent_loop::{run_turn, AgentConfig, StaticSkills, TurnContext};
use agent::engine::{ChatMessage, Engine, GenerationRequest};
use agent::exec::ExecPolicy;
use agent::skills::catalog::CatalogEntry;
use agent::skills::format::parse_skill_md;
use agent::trajectory::{Event, MemorySink, StopReason};
use agent::workspace::Workspace;

use crate::group::{group, Group, GroupKey};
use crate::redact::Redactor;
use crate::safety;
use crate::store::{CandidateRecord, EvolverStore, RunReport, SessionSummary, SessionTrace, StepReport, SummaryRecord};

#[derive(Debug, Clone)]
pub struct EvolverConfig {
    /// A group is a pattern only when this many distinct users are in it.
    pub min_distinct_users: usize,
    /// Evidence loses half its weight every this many days.
    pub half_life_days: f64,
    /// Summaries older than this are not read at all.
    pub window_days: f64,
    /// A skill whose sessions succeed at least this often (weighted) is left alone.
    pub good_enough: f64,
    /// A candidate passes the replay when its mean score is at least the current
    /// version's minus this.
    pub ab_threshold: f64,
    /// Held-out goals replayed per candidate, each with both versions.
    pub replay_goals: usize,
    pub replay_max_steps: usize,
    /// Accepted candidates wait for an admin instead of being published.
    pub review: bool,
    /// Sessions on a new version needed before the watch judges it.
    pub watch_min_sessions: usize,
    /// How much worse a new version may do before it is rolled back.
    pub watch_margin: f64,
    /// New sessions summarized per run at most; the rest wait for the next run.
    pub max_new_sessions: usize,
    /// Seed of every engine call, replays included.
    pub seed: u64,
    /// Characters of a redacted trajectory shown to the engine.
    pub transcript_chars: usize,
    pub lease_ttl: Duration,
}

impl Default for EvolverConfig {
    fn default() -> Self {
        Self {
            min_distinct_users: 2,
            half_life_days: 14.0,
            window_days: 90.0,
            good_enough: 0.8,
            ab_threshold: 0.0,
            replay_goals: 3,
            replay_max_steps: 4,
            review: false,
            watch_min_sessions: 5,
            watch_margin: 0.2,
            max_new_sessions: 500,
            seed: 7,
            transcript_chars: 1200,
            lease_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another evolver run holds the lease")]
    Busy,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Evolver {
    pub engine: Arc<dyn Engine>,
    pub store: Arc<dyn EvolverStore>,
    pub config: EvolverConfig,
}

/// Counts of one step, filled as it runs.
struct Step {
    report: StepReport,
    started: Instant,
}

impl Step {
    fn new(name: &str) -> Self {
        Self { report: StepReport { name: name.into(), ..Default::default() }, started: Instant::now() }
    }
    fn end(mut self) -> StepReport {
        self.report.millis = self.started.elapsed().as_millis() as u64;
        self.report
    }
}

const SUMMARY_SCHEMA_HINT: &str = "Reply with JSON, for example {\"goal\": \"count the lines of data.csv\", \"outcome\": \"success\", \"helped\": \"running wc -l\", \"went_wrong\": \"nothing\", \"turning_point\": \"the command printed the count\"}. outcome is success, partial, failure or unknown.";

/// The least a candidate's description and instructions must say, in words.
pub const MIN_DESCRIPTION_WORDS: usize = 5;
pub const MIN_BODY_WORDS: usize = 8;

fn summary_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "goal": { "type": "string" },
            "outcome": { "enum": ["success", "partial", "failure", "unknown"] },
            "helped": { "type": "string" },
            "went_wrong": { "type": "string" },
            "turning_point": { "type": "string" }
        },
        "required": ["goal", "outcome", "helped", "went_wrong", "turning_point"],
        "additionalProperties": false
    })
}

fn decision_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "action": { "enum": ["improve", "rewrite_description", "create", "skip"] },
            "name": { "type": "string" },
            "description": { "type": "string" },
            "instructions": { "type": "string" },
            "rationale": { "type": "string" }
        },
        "required": ["action", "name", "description", "instructions", "rationale"],
        "additionalProperties": false
    })
}

#[derive(Debug, Deserialize)]
struct Decision {
    action: String,
    name: String,
    description: String,
    instructions: String,
    rationale: String,
}

/// A redacted, shortened transcript of a session, and what redaction removed.
pub fn transcript(trace: &SessionTrace, max_chars: usize) -> (String, String, BTreeMap<String, usize>) {
    let redactor = Redactor::new(&[trace.user_name.as_str(), trace.user_id.as_str()]);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // Each event's own text is redacted before its label is added, so that a user named
    // like a label ("user", "call") does not blank out the structure of the transcript.
    let mut clean = |text: &str| {
        let redacted = redactor.redact(text);
        for (kind, n) in redacted.counts {
            *counts.entry(kind).or_insert(0) += n;
        }
        redacted.text
    };
    let mut lines = Vec::new();
    let mut request = String::new();
    for event in &trace.events {
        let line = match event {
            Event::UserMessage { text } => {
                let text = clean(text);
                if request.is_empty() {
                    request = text.clone();
                }
                format!("user: {text}")
            }
            Event::ToolCall { name, arguments, .. } => format!("call {name} {}", clean(arguments)),
            Event::ToolResult { ok, exit_code, excerpt, .. } => {
                let status =
                    if *ok { "ok".to_string() } else { format!("error{}", exit_code.map(|c| format!(" {c}")).unwrap_or_default()) };
                format!("result {status}: {}", clean(&excerpt.chars().take(160).collect::<String>()))
            }
            Event::SkillRead { slug, .. } => format!("read skill {slug}"),
            Event::FinalAnswer { text } => format!("answer: {}", clean(text)),
            Event::Stop { reason, .. } => format!("stop: {}", reason.as_str()),
            _ => continue,
        };
        lines.push(line);
    }
    let text: String = lines.join("\n").chars().take(max_chars).collect();
    (text, request, counts)
}

/// Scores a session: the user's feedback first, then verifiable signals (stop reason,
/// failed tools), then the engine's judgement for the rest.
pub fn score(trace: &SessionTrace, judged_outcome: &str) -> (f64, &'static str) {
    if let Some(last) = trace.feedback.last() {
        return (if last == "up" { 1.0 } else { 0.0 }, "feedback");
    }
    let stop = trace.events.iter().rev().find_map(|e| match e {
        Event::Stop { reason, .. } => Some(*reason),
        _ => None,
    });
    let failed_tools = trace.events.iter().filter(|e| matches!(e, Event::ToolResult { ok: false, .. })).count();
    if !matches!(stop, Some(StopReason::FinalAnswer) | None) {
        return (0.0, "signals");
    }
    if failed_tools > 0 {
        return (0.3, "signals");
    }
    let judged = match judged_outcome {
        "success" => 1.0,
        "partial" => 0.5,
        "failure" => 0.0,
        _ => 0.5,
    };
    (judged, "judge")
}

/// Scores a replayed turn with the verifiable signals only, the same way for both sides.
fn replay_score(events: &[Event]) -> f64 {
    let answered = events.iter().any(|e| matches!(e, Event::Stop { reason: StopReason::FinalAnswer, .. }));
    let failed = events.iter().filter(|e| matches!(e, Event::ToolResult { ok: false, .. })).count();
    match (answered, failed) {
        (true, 0) => 1.0,
        (true, _) => 0.5,
        (false, _) => 0.0,
    }
}

/// Builds a full `SKILL.md` from a decision, keeping what the action does not change.
fn candidate_skill_md(action: &str, slug: &str, decision: &Decision, current: Option<&str>) -> String {
    let current = current.and_then(|text| parse_skill_md("SKILL.md", None, text).ok());
    let body = match (action, &current) {
        ("rewrite_description", Some(skill)) => skill.body.clone(),
        _ => decision.instructions.clone(),
    };
    let description = &decision.description;
    let description = description.replace(['\n', '\r'], " ");
    let quoted = serde_json::to_string(description.trim()).unwrap_or_default();
    format!("---\nname: {slug}\ndescription: {quoted}\n---\n{}\n", body.trim())
}

fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_matches('-').chars().take(48).collect::<String>().trim_matches('-').to_string()
}

impl Evolver {
    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    async fn ask(&self, step: &mut Step, system: &str, user: String, schema: Value, max_tokens: usize) -> anyhow::Result<Value> {
        let mut request = GenerationRequest::chat(vec![ChatMessage::system(system), ChatMessage::user(user)], max_tokens);
        request.json_schema = Some(schema);
        request.seed = Some(self.config.seed);
        let generation = self.engine.generate(request).await?;
        step.report.llm_calls += 1;
        step.report.prompt_tokens += generation.usage.prompt_tokens;
        step.report.completion_tokens += generation.usage.completion_tokens;
        let text = generation.choices.into_iter().next().map(|c| c.text).unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Runs once: takes the lease, records the run as it goes, releases the lease.
    pub async fn run_once(&self, trigger: &str) -> Result<(String, RunReport), RunError> {
        let holder = uuid::Uuid::new_v4().to_string();
        if !self.store.try_lease(&holder, self.config.lease_ttl).await? {
            return Err(RunError::Busy);
        }
        let result = async {
            let run_id = self.store.start_run(trigger).await?;
            let mut report = RunReport::default();
            let outcome = self.run_steps(&run_id, &mut report).await;
            let status = match &outcome {
                Ok(()) => "finished",
                Err(e) => {
                    report.error = Some(format!("{e:#}"));
                    "failed"
                }
            };
            self.store.update_run(&run_id, status, &report).await?;
            outcome.map(|()| (run_id, report))
        }
        .await;
        self.store.release_lease(&holder).await?;
        Ok(result?)
    }

    async fn run_steps(&self, run_id: &str, report: &mut RunReport) -> anyhow::Result<()> {
        // 1. Summarize and score each new session, once.
        let mut step = Step::new("summarize");
        let traces = self.store.unsummarized_sessions(self.config.max_new_sessions).await?;
        let mut new_sessions = BTreeSet::new();
        for trace in &traces {
            let (text, request, counts) = transcript(trace, self.config.transcript_chars);
            for (kind, n) in counts {
                *report.redactions.entry(kind).or_insert(0) += n;
            }
            let reply = self
                .ask(
                    &mut step,
                    &format!("You summarize an agent session for a skill library. {SUMMARY_SCHEMA_HINT}"),
                    text,
                    summary_schema(),
                    200,
                )
                .await?;
            let summary: SessionSummary = serde_json::from_value(reply).unwrap_or_default();
            let (score, source) = score(trace, &summary.outcome);
            let skills_read = trace
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::SkillRead { slug, version } => Some((slug.clone(), version.clone())),
                    _ => None,
                })
                .collect();
            // What the engine wrote came from redacted text, but it may still have
            // invented an identity-shaped string; the stored summary is redacted again.
            let redactor = Redactor::new(&[trace.user_name.as_str(), trace.user_id.as_str()]);
            let clean = |s: &str| redactor.redact(s).text;
            let summary = SessionSummary {
                goal: clean(&summary.goal),
                outcome: summary.outcome,
                helped: clean(&summary.helped),
                went_wrong: clean(&summary.went_wrong),
                turning_point: clean(&summary.turning_point),
            };
            self.store
                .save_summary(&SummaryRecord {
                    session_id: trace.session_id.clone(),
                    user_id: trace.user_id.clone(),
                    run_id: run_id.to_string(),
                    updated_at: trace.updated_at,
                    request,
                    summary,
                    skills_read,
                    score,
                    score_source: source.to_string(),
                })
                .await?;
            new_sessions.insert(trace.session_id.clone());
            step.report.items += 1;
        }
        report.new_sessions = traces.len();
        report.steps.push(step.end());
        self.store.update_run(run_id, "running", report).await?;

        // 2. Group every recent summary; only patterns with new evidence are decided.
        let mut step = Step::new("group");
        let now = Self::now();
        let summaries = self.store.summaries_since(now - (self.config.window_days * 86_400.0) as i64).await?;
        let groups = group(&summaries);
        report.groups = groups.len();
        let patterns: Vec<&Group<'_>> = groups
            .iter()
            .filter(|g| g.distinct_users() >= self.config.min_distinct_users)
            .filter(|g| g.members.iter().any(|m| new_sessions.contains(&m.session_id)))
            .collect();
        report.patterns = patterns.len();
        step.report.items = patterns.len();
        report.steps.push(step.end());
        self.store.update_run(run_id, "running", report).await?;

        // 3. Decide per pattern.
        let mut step = Step::new("decide");
        let mut candidates = Vec::new();
        for pattern in patterns {
            if let Some(candidate) = self.decide(&mut step, run_id, pattern, now).await? {
                candidates.push(candidate);
            }
            step.report.items += 1;
        }
        report.candidates = candidates.len();
        report.steps.push(step.end());
        self.store.update_run(run_id, "running", report).await?;

        // 4. Gate, then 5. publish (or hold for review).
        let mut step = Step::new("gate");
        for (mut candidate, held_out, identities) in candidates {
            let verdict = self.gate(&mut step, &candidate, &held_out, &identities).await?;
            let accepted = verdict["accepted"] == true;
            candidate.verdict = verdict;
            if !accepted {
                candidate.status = "rejected".into();
            } else if self.config.review {
                report.accepted += 1;
                candidate.status = "pending_review".into();
            } else {
                report.accepted += 1;
                let version = self.publish(&candidate).await?;
                candidate.published_version = Some(version);
                candidate.status = "published".into();
                report.published += 1;
            }
            self.store.save_candidate(&candidate).await?;
            step.report.items += 1;
        }
        report.steps.push(step.end());
        self.store.update_run(run_id, "running", report).await?;

        // 6. Watch earlier publications.
        let mut step = Step::new("watch");
        report.rolled_back = self.watch(&summaries).await?;
        step.report.items = report.rolled_back;
        report.steps.push(step.end());
        Ok(())
    }

    /// Asks the engine what to do about one pattern. Returns the candidate with the
    /// held-out goals for its replay and the identities it must not contain.
    async fn decide(
        &self,
        step: &mut Step,
        run_id: &str,
        pattern: &Group<'_>,
        now: i64,
    ) -> anyhow::Result<Option<(CandidateRecord, Vec<String>, Vec<String>)>> {
        let success = pattern.weighted_success(now, self.config.half_life_days);
        let current = match &pattern.key {
            GroupKey::Skill(slug) => self.store.shared_skill(slug).await?,
            GroupKey::Topic(_) => None,
        };
        // A private or group skill is not the evolver's to change.
        if matches!(pattern.key, GroupKey::Skill(_)) && current.is_none() {
            return Ok(None);
        }
        // Evidence that the skill works is a reason to leave it alone, without asking.
        if current.is_some() && success >= self.config.good_enough {
            return Ok(None);
        }
        // The older half of the evidence writes the candidate; the newer half is held out
        // for the replay, so a candidate is never judged on the sessions it was fitted to.
        let mut members = pattern.members.clone();
        members.sort_by_key(|m| (m.updated_at, m.session_id.clone()));
        let split = members.len().div_ceil(2);
        let (writing, held_out) = members.split_at(split);
        let mut evidence = String::new();
        for m in writing {
            evidence.push_str(&format!(
                "- goal: {}; outcome: {} (score {:.1}); helped: {}; went wrong: {}\n",
                m.summary.goal, m.summary.outcome, m.score, m.summary.helped, m.summary.went_wrong
            ));
        }
        let (system, prompt) = match &current {
            Some(skill) => (
                "You maintain a library of agent skills. Given a skill and evidence from sessions that used it, \
                 choose: improve (new instructions), rewrite_description (when to use it), or skip when the evidence is weak. \
                 Reply with JSON: action, name, description, instructions, rationale.",
                format!("Skill {} (success {:.2}):\n{}\nEvidence:\n{evidence}", skill.slug, success, skill.skill_md),
            ),
            None => (
                "You maintain a library of agent skills. Sessions by several users share this goal and read no skill. \
                 Choose create (a new skill: name, description saying when to use it, step-by-step instructions) or skip. \
                 Reply with JSON: action, name, description, instructions, rationale.",
                format!("Success so far {success:.2}. Evidence:\n{evidence}"),
            ),
        };
        let reply = self.ask(step, system, prompt, decision_schema(), 320).await?;
        let Ok(decision) = serde_json::from_value::<Decision>(reply) else { return Ok(None) };
        let action = decision.action.as_str();
        let allowed = match &current {
            Some(_) => matches!(action, "improve" | "rewrite_description"),
            None => action == "create",
        };
        if !allowed {
            return Ok(None);
        }
        let slug = match &current {
            Some(skill) => skill.slug.clone(),
            None => slugify(&decision.name),
        };
        // A new skill may not take the name of an existing one.
        if current.is_none() && (slug.is_empty() || self.store.shared_skill(&slug).await?.is_some()) {
            return Ok(None);
        }
        let skill_md = candidate_skill_md(action, &slug, &decision, current.as_ref().map(|s| s.skill_md.as_str()));
        let identities: Vec<String> = pattern.members.iter().map(|m| m.user_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let candidate = CandidateRecord {
            id: uuid::Uuid::new_v4().to_string(),
            run_id: run_id.to_string(),
            slug,
            action: action.to_string(),
            base_version: current.as_ref().map(|s| s.version.clone()),
            skill_md,
            rationale: decision.rationale,
            evidence_sessions: pattern.members.iter().map(|m| m.session_id.clone()).collect(),
            distinct_users: pattern.distinct_users(),
            status: "candidate".into(),
            verdict: Value::Null,
            published_version: None,
        };
        let goals = held_out.iter().map(|m| m.request.clone()).filter(|g| !g.trim().is_empty()).take(self.config.replay_goals).collect();
        Ok(Some((candidate, goals, identities)))
    }

    /// The gate: format, safety, then the A/B replay. Returns the verdict with numbers.
    async fn gate(
        &self,
        step: &mut Step,
        candidate: &CandidateRecord,
        held_out: &[String],
        identities: &[String],
    ) -> anyhow::Result<Value> {
        let manifest = match parse_skill_md(&format!("{}/SKILL.md", candidate.slug), Some(&candidate.slug), &candidate.skill_md) {
            Ok(manifest) => manifest,
            Err(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Ok(json!({ "accepted": false, "failed": "format", "format": list }));
            }
        };
        // Valid YAML is not yet a skill: it must say when to use it and what to do.
        let (description_words, body_words) = (manifest.description.split_whitespace().count(), manifest.body.split_whitespace().count());
        if description_words < MIN_DESCRIPTION_WORDS || body_words < MIN_BODY_WORDS {
            return Ok(json!({
                "accepted": false,
                "failed": "format",
                "format": format!(
                    "too thin: {description_words} words of description (at least {MIN_DESCRIPTION_WORDS}) and {body_words} of instructions (at least {MIN_BODY_WORDS})"
                ),
            }));
        }
        let identity_refs: Vec<&str> = identities.iter().map(String::as_str).collect();
        let findings = safety::scan(&candidate.skill_md, &identity_refs);
        if !findings.is_empty() {
            return Ok(json!({ "accepted": false, "failed": "safety", "format": "ok", "safety": findings }));
        }
        if held_out.is_empty() {
            return Ok(
                json!({ "accepted": false, "failed": "replay", "format": "ok", "safety": [], "replay": "no held-out goal to replay" }),
            );
        }
        let baseline = match &candidate.base_version {
            Some(version) => self.store.shared_skill_version(&candidate.slug, version).await?,
            None => None,
        };
        let mut scores = (Vec::new(), Vec::new());
        for (i, goal) in held_out.iter().enumerate() {
            let seed = self.config.seed.wrapping_add(i as u64 * 1000);
            scores.0.push(self.replay(step, &candidate.slug, baseline.as_deref(), goal, seed).await?);
            scores.1.push(self.replay(step, &candidate.slug, Some(&candidate.skill_md), goal, seed).await?);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (base, cand) = (mean(&scores.0), mean(&scores.1));
        // An improvement must not do worse than the version it replaces. A new skill has
        // nothing to replace, so it must do better than no skill: a tie says nothing.
        let accepted = match candidate.base_version {
            Some(_) => cand >= base - self.config.ab_threshold,
            None => cand > base,
        };
        Ok(json!({
            "accepted": accepted,
            "failed": if accepted { Value::Null } else { json!("replay") },
            "format": "ok",
            "safety": [],
            "replay": {
                "goals": held_out.len(),
                "baseline_scores": scores.0,
                "candidate_scores": scores.1,
                "baseline_mean": base,
                "candidate_mean": cand,
                "threshold": self.config.ab_threshold,
                "seed": self.config.seed,
            }
        }))
    }

    /// Replays one goal in a scratch workspace with `skill_md` as the only skill (none
    /// for the baseline of a new skill), commands denied, and scores the result.
    async fn replay(&self, step: &mut Step, slug: &str, skill_md: Option<&str>, goal: &str, seed: u64) -> anyhow::Result<f64> {
        let scratch = tempfile::tempdir()?;
        let workspace = Workspace::open(scratch.path())?;
        let skills = match skill_md {
            Some(text) => {
                let description = parse_skill_md("SKILL.md", None, text).map(|s| s.description).unwrap_or_default();
                StaticSkills { skills: vec![(CatalogEntry { slug: slug.into(), version: "replay".into(), description }, text.to_string())] }
            }
            None => StaticSkills::default(),
        };
        let config = AgentConfig {
            max_steps: self.config.replay_max_steps,
            // Replayed goals come from users; nothing they ask may run on this host.
            exec_policy: ExecPolicy::Deny,
            seed: Some(seed),
            ..AgentConfig::default()
        };
        let sink = MemorySink::default();
        let (_cancel, cancel) = watch::channel(false);
        let mut ctx =
            TurnContext { engine: self.engine.as_ref(), workspace: &workspace, skills: &skills, sink: &sink, config: &config, cancel };
        let mut history = Vec::new();
        run_turn(&mut ctx, &mut history, goal).await;
        let events = sink.events();
        // Replay calls are counted apart from the others: the per-session budget of
        // engine calls excludes them.
        step.report.replay_calls += events.iter().filter(|e| matches!(e, Event::ModelCall { .. })).count();
        Ok(replay_score(&events))
    }

    async fn publish(&self, candidate: &CandidateRecord) -> anyhow::Result<String> {
        let provenance = json!({
            "evolver": {
                "run_id": candidate.run_id,
                "candidate_id": candidate.id,
                "action": candidate.action,
                "evidence_sessions": candidate.evidence_sessions,
                "distinct_users": candidate.distinct_users,
                "rationale": candidate.rationale,
                "verdict": candidate.verdict,
            }
        });
        let changelog = format!("Evolver {}: {}", candidate.action, candidate.rationale.chars().take(200).collect::<String>());
        self.store.publish(&candidate.run_id, &candidate.slug, &candidate.skill_md, &changelog, provenance).await
    }

    /// Publishes a candidate an admin approved.
    pub async fn approve(&self, candidate_id: &str) -> anyhow::Result<CandidateRecord> {
        let mut candidate = self.store.candidate(candidate_id).await?.ok_or_else(|| anyhow::anyhow!("no such candidate"))?;
        anyhow::ensure!(candidate.status == "pending_review", "the candidate is {}, not pending review", candidate.status);
        let version = self.publish(&candidate).await?;
        candidate.published_version = Some(version);
        candidate.status = "approved_and_published".into();
        self.store.save_candidate(&candidate).await?;
        Ok(candidate)
    }

    pub async fn reject(&self, candidate_id: &str) -> anyhow::Result<CandidateRecord> {
        let mut candidate = self.store.candidate(candidate_id).await?.ok_or_else(|| anyhow::anyhow!("no such candidate"))?;
        anyhow::ensure!(candidate.status == "pending_review", "the candidate is {}, not pending review", candidate.status);
        candidate.status = "rejected_by_admin".into();
        self.store.save_candidate(&candidate).await?;
        Ok(candidate)
    }

    /// Rolls back publications whose sessions do worse than those on the version before.
    async fn watch(&self, summaries: &[SummaryRecord]) -> anyhow::Result<usize> {
        let mut rolled_back = 0;
        for mut candidate in self.store.published_candidates().await? {
            let (Some(new), Some(old)) = (candidate.published_version.clone(), candidate.base_version.clone()) else { continue };
            let scores_on = |version: &str| -> Vec<f64> {
                summaries
                    .iter()
                    .filter(|s| s.skills_read.iter().any(|(slug, v)| *slug == candidate.slug && v == version))
                    .map(|s| s.score)
                    .collect()
            };
            let (on_new, on_old) = (scores_on(&new), scores_on(&old));
            if on_new.len() < self.config.watch_min_sessions || on_old.is_empty() {
                continue;
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let (new_mean, old_mean) = (mean(&on_new), mean(&on_old));
            if new_mean < old_mean - self.config.watch_margin {
                let reason = format!(
                    "sessions on {new} succeeded {new_mean:.2} over {} sessions, against {old_mean:.2} over {} on {old}",
                    on_new.len(),
                    on_old.len()
                );
                let version = self.store.rollback(&candidate.slug, &old, &reason).await?;
                candidate.status = "rolled_back".into();
                candidate.verdict["rollback"] = json!({ "reason": reason, "version": version, "new_mean": new_mean, "old_mean": old_mean });
                self.store.save_candidate(&candidate).await?;
                rolled_back += 1;
            }
        }
        Ok(rolled_back)
    }
}
