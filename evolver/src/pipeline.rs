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
use agent::exec::{ExecPolicy, Sandbox};
use agent::skills::catalog::CatalogEntry;
use agent::skills::format::parse_skill_md;
use agent::trajectory::{Event, MemorySink, StopReason};
use agent::workspace::Workspace;

use crate::group::{group, Group, GroupKey};
use crate::redact::Redactor;
use crate::safety;
use crate::store::{
    CandidateRecord, DecisionReport, EvolverStore, ReplayCase, ReplayComparison, ReplayOutcome, RunReport, SessionSummary, SessionTrace,
    StepReport, SummaryRecord, Verdict,
};

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
    /// A candidate passes the replay only when its mean score beats the current
    /// version's (or no skill's) by more than this; a tie is no evidence.
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
    /// What replayed commands may run and where: the server passes its own sandbox, so
    /// a replay is contained exactly as a user's turn is.
    pub replay_exec_policy: ExecPolicy,
    pub replay_sandbox: Sandbox,
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
            replay_exec_policy: ExecPolicy::default(),
            replay_sandbox: Sandbox::default(),
        }
    }
}

/// Why an admin's review of a held candidate did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no such candidate")]
    NotFound,
    /// Approved, rejected or refused already: a review decides once.
    #[error("the candidate is {0}, not pending review")]
    NotPending(String),
    /// The store or the repository failed; the detail is for the log, not the reviewer.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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

/// The summarizer's instructions. No example values: a small model copies an example
/// instead of reading the session (every summary of two runs was once the example).
pub const SUMMARY_PROMPT: &str = "You summarize an agent session for a skill library. Reply with JSON: goal is what the user wanted, \
     outcome is success, partial, failure or unknown, helped is what worked, went_wrong is what failed, turning_point is the step \
     that decided the outcome. Use only facts from the session.";
const IMPROVE_PROMPT: &str = "You maintain a library of agent skills. Given a skill and evidence from sessions that used it, \
     choose: improve (instructions to add), rewrite_description (when to use it), or skip when the evidence is weak. \
     Reply with JSON: action, name, description, instructions, rationale.";
const CREATE_PROMPT: &str = "You maintain a library of agent skills. Sessions by several users share this goal and read no skill. \
     Choose create (a new skill: name, description saying when to use it, step-by-step instructions) or skip. \
     Reply with JSON: action, name, description, instructions, rationale.";
/// Share of a model-written text's word sequences that may come from the evolver's own
/// prompts before the text counts as an echo of them.
pub const MAX_PROMPT_ECHO: f64 = 0.3;

/// The least a candidate's description and instructions must say, in words.
pub const MIN_DESCRIPTION_WORDS: usize = 5;
pub const MIN_BODY_WORDS: usize = 8;
/// Where a candidate's verdict keeps its per-case replay comparisons
/// ([`ReplayComparison`]), under `replay`.
pub const REPLAY_CASES_KEY: &str = "cases";

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

/// Judges a session. Only what can be verified makes a success: the rating of the user who
/// ran it here. A failure signal (no answer, a limit hit) or the engine's "failure" makes
/// a failure; the engine can never make a success. A session nobody rated is `Unknown`,
/// and so is every imported session: its events and ratings are only claimed.
pub fn judge(trace: &SessionTrace, judged_outcome: &str) -> (Verdict, &'static str) {
    if !trace.observed {
        return (Verdict::Unknown, "claimed");
    }
    if let Some(last) = trace.feedback.last() {
        return (if last == "up" { Verdict::Success } else { Verdict::Failure }, "feedback");
    }
    let stop = trace.events.iter().rev().find_map(|e| match e {
        Event::Stop { reason, .. } => Some(*reason),
        _ => None,
    });
    if !matches!(stop, Some(StopReason::FinalAnswer) | None) {
        return (Verdict::Failure, "signals");
    }
    match judged_outcome {
        "failure" => (Verdict::Failure, "judge"),
        "partial" => (Verdict::Partial, "judge"),
        _ => (Verdict::Unknown, "unverified"),
    }
}

/// File names in a text: a word, a dot and a short extension.
fn file_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\'' | '`' | ':'))
        .map(|w| w.trim_end_matches(['.', '!', '?']))
        .filter(|w| {
            w.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && (1..=5).contains(&ext.len())
                    && ext.chars().all(|c| c.is_ascii_alphanumeric())
                    && !ext.chars().all(|c| c.is_ascii_digit())
            })
        })
        .map(str::to_lowercase)
        .collect()
}

/// Runs of `n` words, lower-cased.
fn word_runs(text: &str, n: usize) -> Vec<String> {
    let words: Vec<String> =
        text.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).filter(|w| !w.is_empty()).collect();
    words.windows(n).map(|w| w.join(" ")).collect()
}

/// Share of `text`'s four-word runs that also occur in `source`.
pub fn echo_share(text: &str, source: &str) -> f64 {
    let runs = word_runs(text, 4);
    if runs.is_empty() {
        return 0.0;
    }
    let known: BTreeSet<String> = word_runs(source, 4).into_iter().collect();
    runs.iter().filter(|r| known.contains(*r)).count() as f64 / runs.len() as f64
}

/// Checks a summary against its session: a summary that names a file the session never
/// mentions, that repeats the summarizer's own instructions, or whose goal shares no word
/// with the user's request (a small summarizer otherwise takes a runtime notice such as
/// "you already called read with these arguments" for the goal) is about something else.
pub fn check_summary(summary: &SessionSummary, transcript: &str, request: &str) -> Result<(), String> {
    let text = format!("{} {} {} {}", summary.goal, summary.helped, summary.went_wrong, summary.turning_point);
    let seen = file_names(transcript);
    if let Some(name) = file_names(&text).into_iter().find(|name| !seen.contains(name)) {
        return Err(format!("it names {name}, which the session never mentions"));
    }
    if echo_share(&text, SUMMARY_PROMPT) > MAX_PROMPT_ECHO {
        return Err("it repeats the summarizer's instructions".into());
    }
    let asked = agent::skills::relevance::terms(request);
    let goal = agent::skills::relevance::terms(&summary.goal);
    if !asked.is_empty() && goal.is_disjoint(&asked) {
        return Err(format!("its goal \"{}\" shares no word with the request", summary.goal));
    }
    Ok(())
}

/// What a replay of a session needs, from its events: the files it found, its answer,
/// the files it wrote and the tool calls that worked.
pub fn replay_case(events: &[Event]) -> ReplayCase {
    let mut case = ReplayCase::default();
    let mut calls: BTreeMap<String, (String, String)> = BTreeMap::new();
    for event in events {
        match event {
            Event::InputFile { path, content } => {
                case.inputs.entry(path.clone()).or_insert_with(|| content.clone());
            }
            Event::OutputFile { path, content } => {
                case.outputs.insert(path.clone(), content.clone());
            }
            Event::FinalAnswer { text } => case.answer = Some(text.clone()),
            Event::ToolCall { call_id, name, arguments } => {
                calls.insert(call_id.clone(), (name.clone(), arguments.clone()));
            }
            Event::ToolResult { call_id, ok: true, excerpt, .. } => {
                if let Some((name, arguments)) = calls.get(call_id) {
                    let reads_skill = name == "read" && arguments.contains("SKILL.md");
                    let repeat = excerpt.starts_with(agent::agent_loop::REPEATED_RESULT);
                    if !reads_skill && !repeat {
                        case.procedure.push((name.clone(), arguments.clone()));
                        case.last_result = excerpt.clone();
                    }
                }
            }
            _ => {}
        }
    }
    case
}

/// Numbers in a text, as written.
fn numbers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '.' || c == '-'))
        .filter(|w| !w.is_empty() && w.chars().any(|c| c.is_ascii_digit()) && w.parse::<f64>().is_ok())
        .map(str::to_string)
        .collect()
}

/// Whether a session can be checked by a replay: it did some work and left something
/// checkable (numbers in its answer, or files it wrote).
pub fn verifiable(case: &ReplayCase) -> bool {
    !case.procedure.is_empty() && (case.answer.as_deref().is_some_and(|a| !numbers(a).is_empty()) || !case.outputs.is_empty())
}

/// Scores one replay against the session it repeats: 1.0 when it answered, gave every
/// number the session's answer gave, and left every file the session wrote with the same
/// content; 0.0 otherwise, and always 0.0 for an arm that did no work (no tool call that
/// worked), however right its answer looks.
pub fn replay_passes(reference: &ReplayCase, events: &[Event], workspace: &Workspace) -> bool {
    let replayed = replay_case(events);
    if replayed.procedure.is_empty() {
        return false;
    }
    let Some(answer) = &replayed.answer else { return false };
    let expected = reference.answer.as_deref().map(numbers).unwrap_or_default();
    let given = numbers(answer);
    if !expected.iter().all(|n| given.iter().any(|g| g.parse::<f64>().ok() == n.parse::<f64>().ok())) {
        return false;
    }
    let normalize = |text: &str| text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim_end().to_string();
    reference.outputs.iter().all(|(path, content)| workspace.read(path).is_ok_and(|found| normalize(&found) == normalize(content)))
}

/// One step of a mined procedure, with the session's own file names and words replaced
/// by placeholders so that it fits other requests of the kind.
fn generalize(name: &str, arguments: &str, case: &ReplayCase, request: &str) -> String {
    let value: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    let request_words: BTreeSet<String> =
        request.split(|c: char| !c.is_alphanumeric() && c != '.' && c != '_' && c != '-').map(str::to_lowercase).collect();
    let is_file = |word: &str| case.inputs.contains_key(word) || case.outputs.contains_key(word) || !file_names(word).is_empty();
    let placeholder = |word: &str| -> String {
        if is_file(word) {
            "FILE".into()
        } else if !word.starts_with('-') && request_words.contains(&word.to_lowercase()) && word.chars().any(char::is_alphabetic) {
            "WORD".into()
        } else {
            word.to_string()
        }
    };
    match name {
        "exec" => {
            let command = value.get("command").and_then(Value::as_str).unwrap_or_default();
            let words: Vec<String> = shell_words::split(command).unwrap_or_default().iter().map(|w| placeholder(w)).collect();
            format!("Run `{}` with exec.", words.join(" "))
        }
        "read" => "Read FILE with read.".into(),
        "ls" => "List the files with ls.".into(),
        "write" => "Write the result to FILE with write.".into(),
        "edit" => "Change the one line that needs changing in FILE with edit (old text, new text).".into(),
        other => format!("Use {other}."),
    }
}

/// How the answer relates to the last result, in words, when the numbers say.
fn answer_step(case: &ReplayCase) -> String {
    let answer = case.answer.as_deref().unwrap_or_default();
    // The runtime puts the exit code first; it is not what the command printed.
    let printed = match case.last_result.split_once('\n') {
        Some((first, rest)) if first.starts_with("exit code") => rest,
        _ => case.last_result.as_str(),
    };
    let parse = |n: &String| n.parse::<f64>().ok();
    let (Some(a), Some(r)) = (numbers(answer).first().and_then(parse), numbers(printed).first().and_then(parse)) else {
        return if case.outputs.is_empty() { "Answer with what the result shows.".into() } else { "Then say which file you wrote.".into() };
    };
    if a == r {
        "Answer with the number it prints.".into()
    } else if a == r - 1.0 {
        "Answer with the number it prints minus one.".into()
    } else if a == r + 1.0 {
        "Answer with the number it prints plus one.".into()
    } else {
        "Answer with the number the result shows.".into()
    }
}

/// The procedure most of the sessions that worked followed, as numbered steps, with how
/// many sessions followed it; `None` when none worked.
pub fn mine_procedure(successes: &[&SummaryRecord]) -> Option<(Vec<String>, usize)> {
    let mut counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for record in successes {
        let case = &record.replay;
        if case.procedure.is_empty() {
            continue;
        }
        let mut steps: Vec<String> = Vec::new();
        for (name, arguments) in &case.procedure {
            let step = generalize(name, arguments, case, &record.request);
            if steps.last() != Some(&step) {
                steps.push(step);
            }
        }
        steps.push(answer_step(case));
        *counts.entry(steps).or_insert(0) += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.len().cmp(&a.0.len())))
}

fn numbered(steps: &[String]) -> String {
    steps.iter().enumerate().map(|(i, step)| format!("{}. {step}", i + 1)).collect::<Vec<_>>().join("\n")
}

/// The words most of a group's requests share, most common first.
fn common_words(members: &[&SummaryRecord]) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for member in members {
        for word in agent::skills::relevance::terms(&member.request) {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().filter(|(w, n)| *n * 2 >= members.len() && !w.contains('.')).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.into_iter().map(|(w, _)| w).take(5).collect()
}

/// A new skill from the procedure that worked: named and described by the words its
/// requests share, never by any one user's request.
fn mined_skill(slug: &str, words: &[String], steps: &[String], sessions: usize) -> String {
    let about = match words {
        [] => "this kind of task".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    let description = format!("Steps that worked for requests about {about}. Use when a request asks about {about}.");
    format!(
        "---\nname: {slug}\ndescription: {}\n---\n# {about}\n\nSteps that finished this kind of request in {sessions} sessions:\n\n{}\n",
        serde_json::to_string(&description).unwrap_or_default(),
        numbered(steps)
    )
}

/// Heading of the section an improvement adds to a skill.
const LEARNED_HEADING: &str = "## What worked for other users";

/// An improvement: the current `SKILL.md` kept whole, with the new instructions added as
/// a section at its end. Nothing is removed or rewritten, frontmatter included.
fn appended(current: &str, instructions: &str) -> String {
    format!("{}\n\n{LEARNED_HEADING}\n\n{}\n", current.trim_end(), instructions.trim())
}

/// The current `SKILL.md` with only its description replaced, every other frontmatter
/// field and the body kept.
fn with_description(current: &str, description: &str) -> Option<String> {
    let rest = current.strip_prefix("---\n")?;
    let (frontmatter, body) = rest.split_once("\n---")?;
    let mut fields: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(frontmatter).ok()?;
    fields.insert("description".into(), description.replace(['\n', '\r'], " ").trim().into());
    let frontmatter = serde_yaml_ng::to_string(&fields).ok()?;
    Some(format!("---\n{}---{body}", frontmatter))
}

/// What an improvement of `old` into `new` dropped: frontmatter fields that changed or
/// vanished (the description may change when that is the action) and body lines that
/// are gone. Empty when nothing was lost.
pub fn dropped_content(old: &str, new: &str, description_may_change: bool) -> Vec<String> {
    let (Ok(old), Ok(new)) = (parse_skill_md("SKILL.md", None, old), parse_skill_md("SKILL.md", None, new)) else {
        return vec!["the skill no longer parses".into()];
    };
    let mut lost = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            lost.push(format!("frontmatter field `{field}`"));
        }
    };
    check("name", old.name == new.name);
    check("description", description_may_change || old.description == new.description);
    check("license", old.license == new.license);
    check("compatibility", old.compatibility == new.compatibility);
    check("metadata", old.metadata == new.metadata);
    check("allowed-tools", old.allowed_tools == new.allowed_tools);
    check("other fields", old.extra == new.extra);
    let kept: BTreeSet<&str> = new.body.lines().map(str::trim).collect();
    for line in old.body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !kept.contains(line) {
            lost.push(format!("the line \"{}\"", line.chars().take(60).collect::<String>()));
        }
    }
    lost
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
        // 1. Summarize and judge each new session, once.
        let mut step = Step::new("summarize");
        let traces = self.store.unsummarized_sessions(self.config.max_new_sessions).await?;
        let mut new_sessions = BTreeSet::new();
        for trace in &traces {
            let (text, request, counts) = transcript(trace, self.config.transcript_chars);
            for (kind, n) in counts {
                *report.redactions.entry(kind).or_insert(0) += n;
            }
            let reply = self.ask(&mut step, SUMMARY_PROMPT, text.clone(), summary_schema(), 200).await?;
            let mut summary: SessionSummary = serde_json::from_value(reply).unwrap_or_default();
            // A summary about something else is dropped; the request itself stays the goal.
            let summary_discarded = check_summary(&summary, &text, &request).err();
            if summary_discarded.is_some() {
                report.summaries_discarded += 1;
                summary = SessionSummary { goal: request.clone(), outcome: "unknown".into(), ..Default::default() };
            }
            let (verdict, source) = judge(trace, &summary.outcome);
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
                    score: verdict.score().unwrap_or(0.5),
                    score_source: source.to_string(),
                    verdict,
                    observed: trace.observed,
                    summary_discarded,
                    replay: replay_case(&trace.events),
                })
                .await?;
            new_sessions.insert(trace.session_id.clone());
            step.report.items += 1;
        }
        report.new_sessions = traces.len();
        report.steps.push(step.end());
        self.store.update_run(run_id, "running", report).await?;

        // 2. Group every recent summary; only patterns with new evidence are decided, and
        // only sessions this server observed make a pattern.
        let mut step = Step::new("group");
        let now = Self::now();
        let summaries = self.store.summaries_since(now - (self.config.window_days * 86_400.0) as i64).await?;
        let groups = group(&summaries);
        report.groups = groups.len();
        let patterns: Vec<&Group<'_>> = groups
            .iter()
            .filter(|g| g.distinct_observed_users() >= self.config.min_distinct_users)
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
            let name = match &pattern.key {
                GroupKey::Skill(slug) => format!("skill {slug}"),
                GroupKey::Topic(topic) => format!("topic {topic}"),
            };
            match self.decide(&mut step, run_id, pattern, now).await? {
                Ok(candidate) => {
                    report.decisions.push(DecisionReport {
                        pattern: name,
                        action: candidate.0.action.clone(),
                        reason: format!("written by {}", candidate.0.writer),
                    });
                    candidates.push(candidate);
                }
                Err(reason) => report.decisions.push(DecisionReport { pattern: name, action: "skip".into(), reason }),
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

    /// Decides what to do about one pattern: the candidate with the sessions its replay
    /// repeats and the identities it must not contain, or why there is none.
    #[allow(clippy::type_complexity)]
    async fn decide(
        &self,
        step: &mut Step,
        run_id: &str,
        pattern: &Group<'_>,
        now: i64,
    ) -> anyhow::Result<Result<(CandidateRecord, Vec<SummaryRecord>, Vec<String>), String>> {
        let success = pattern.weighted_success(now, self.config.half_life_days);
        let current = match &pattern.key {
            GroupKey::Skill(slug) => self.store.shared_skill(slug).await?,
            GroupKey::Topic(_) => None,
        };
        // A private or group skill is not the evolver's to change.
        if matches!(pattern.key, GroupKey::Skill(_)) && current.is_none() {
            return Ok(Err("not a shared skill".into()));
        }
        let Some(success) = success else {
            return Ok(Err("no observed session has a verified outcome".into()));
        };
        // Evidence that the skill works is a reason to leave it alone, without asking.
        if current.is_some() && success >= self.config.good_enough {
            return Ok(Err(format!("it works: {success:.2} of verified sessions succeeded")));
        }
        // The older half of the observed evidence writes the candidate; the newer half is
        // held out for the replay, so a candidate is never judged on the sessions it was
        // fitted to. Only verified successes that did checkable work can be replayed.
        let mut members: Vec<&SummaryRecord> = pattern.members.iter().copied().filter(|m| m.observed).collect();
        members.sort_by_key(|m| (m.updated_at, m.session_id.clone()));
        let split = members.len().div_ceil(2);
        let (writing, held_out) = members.split_at(split);
        let replayable: Vec<SummaryRecord> = held_out
            .iter()
            .filter(|m| m.verdict == Verdict::Success && verifiable(&m.replay))
            .take(self.config.replay_goals)
            .map(|m| (*m).clone())
            .collect();
        if replayable.is_empty() {
            return Ok(Err("no held-out session succeeded verifiably, so no replay could show an advantage".into()));
        }
        let successes: Vec<&SummaryRecord> = writing.iter().copied().filter(|m| m.verdict == Verdict::Success).collect();
        let identities: Vec<String> = pattern.members.iter().map(|m| m.user_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let evidence_sessions: Vec<String> = members.iter().map(|m| m.session_id.clone()).collect();
        let distinct_users = pattern.distinct_observed_users();
        let candidate = |slug: String, action: &str, skill_md: String, rationale: String, writer: &str| CandidateRecord {
            id: uuid::Uuid::new_v4().to_string(),
            run_id: run_id.to_string(),
            slug,
            action: action.to_string(),
            base_version: current.as_ref().map(|s| s.version.clone()),
            skill_md,
            rationale,
            evidence_sessions: evidence_sessions.clone(),
            distinct_users,
            status: "candidate".into(),
            verdict: Value::Null,
            published_version: None,
            writer: writer.to_string(),
        };

        // First choice: the steps that worked, taken from the sessions themselves.
        if let Some((steps, sessions)) = mine_procedure(&successes) {
            let rationale = format!("{sessions} of {} verified successes followed these steps", successes.len());
            return Ok(Ok(match &current {
                Some(skill) => {
                    let text = numbered(&steps);
                    if skill.skill_md.contains(&text) {
                        return Ok(Err("the skill already says what worked".into()));
                    }
                    (candidate(skill.slug.clone(), "improve", appended(&skill.skill_md, &text), rationale, "mined"), replayable, identities)
                }
                None => {
                    let words = common_words(&members);
                    let slug = slugify(&words.iter().take(3).cloned().collect::<Vec<_>>().join(" "));
                    if slug.is_empty() || self.store.shared_skill(&slug).await?.is_some() {
                        return Ok(Err(format!("the name `{slug}` is empty or taken")));
                    }
                    (
                        candidate(slug.clone(), "create", mined_skill(&slug, &words, &steps, sessions), rationale, "mined"),
                        replayable,
                        identities,
                    )
                }
            }));
        }

        // Else the engine writes one from the summaries of the writing half.
        let mut evidence = String::new();
        for m in writing {
            evidence.push_str(&format!(
                "- goal: {}; verdict: {:?}; helped: {}; went wrong: {}\n",
                m.summary.goal, m.verdict, m.summary.helped, m.summary.went_wrong
            ));
        }
        let (system, prompt) = match &current {
            Some(skill) => {
                (IMPROVE_PROMPT, format!("Skill {} (success {:.2}):\n{}\nEvidence:\n{evidence}", skill.slug, success, skill.skill_md))
            }
            None => (CREATE_PROMPT, format!("Success so far {success:.2}. Evidence:\n{evidence}")),
        };
        let reply = self.ask(step, system, prompt.clone(), decision_schema(), 320).await?;
        let Ok(decision) = serde_json::from_value::<Decision>(reply) else { return Ok(Err("the engine's reply did not parse".into())) };
        let action = decision.action.as_str();
        let allowed = match &current {
            Some(_) => matches!(action, "improve" | "rewrite_description"),
            None => action == "create",
        };
        if !allowed {
            return Ok(Err(format!("the engine chose `{action}`")));
        }
        // Text that is mostly the evolver's own instructions or evidence is no skill.
        let written = format!("{} {}", decision.description, decision.instructions);
        let echo = echo_share(&written, &format!("{system}\n{prompt}"));
        if echo > MAX_PROMPT_ECHO {
            return Ok(Err(format!("the engine's text repeats its prompt ({:.0} % of it)", echo * 100.0)));
        }
        let (slug, skill_md) = match (&current, action) {
            (Some(skill), "rewrite_description") => match with_description(&skill.skill_md, &decision.description) {
                Some(text) => (skill.slug.clone(), text),
                None => return Ok(Err("the skill's frontmatter could not be rewritten".into())),
            },
            (Some(skill), _) => (skill.slug.clone(), appended(&skill.skill_md, &decision.instructions)),
            (None, _) => {
                let slug = slugify(&decision.name);
                if slug.is_empty() || self.store.shared_skill(&slug).await?.is_some() {
                    return Ok(Err(format!("the name `{slug}` is empty or taken")));
                }
                let description = serde_json::to_string(decision.description.replace(['\n', '\r'], " ").trim()).unwrap_or_default();
                (slug.clone(), format!("---\nname: {slug}\ndescription: {description}\n---\n{}\n", decision.instructions.trim()))
            }
        };
        Ok(Ok((candidate(slug, action, skill_md, decision.rationale, "model"), replayable, identities)))
    }

    /// The gate: format, nothing dropped, safety, then the A/B replay. Returns the
    /// verdict with numbers.
    async fn gate(
        &self,
        step: &mut Step,
        candidate: &CandidateRecord,
        held_out: &[SummaryRecord],
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
        let baseline = match &candidate.base_version {
            Some(version) => self.store.shared_skill_version(&candidate.slug, version).await?,
            None => None,
        };
        if let Some(old) = &baseline {
            let lost = dropped_content(old, &candidate.skill_md, candidate.action == "rewrite_description");
            if !lost.is_empty() {
                return Ok(json!({ "accepted": false, "failed": "drops_content", "format": "ok", "dropped": lost }));
            }
        }
        let identity_refs: Vec<&str> = identities.iter().map(String::as_str).collect();
        let findings = safety::scan(&candidate.skill_md, &identity_refs);
        if !findings.is_empty() {
            return Ok(json!({ "accepted": false, "failed": "safety", "format": "ok", "safety": findings }));
        }
        if held_out.is_empty() {
            return Ok(
                json!({ "accepted": false, "failed": "replay", "format": "ok", "safety": [], "replay": "no held-out session to replay" }),
            );
        }
        let mut scores = (Vec::new(), Vec::new());
        let mut cases = Vec::new();
        for (i, case) in held_out.iter().enumerate() {
            let seed = self.config.seed.wrapping_add(i as u64 * 1000);
            let before = self.replay(step, &candidate.slug, baseline.as_deref(), case, seed).await?;
            let after = self.replay(step, &candidate.slug, Some(&candidate.skill_md), case, seed).await?;
            scores.0.push(if before.passed { 1.0 } else { 0.0 });
            scores.1.push(if after.passed { 1.0 } else { 0.0 });
            cases.push(ReplayComparison { session_id: case.session_id.clone(), baseline: before, candidate: after });
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (base, cand) = (mean(&scores.0), mean(&scores.1));
        // A candidate must do verifiably better than what it replaces (or than no skill):
        // a tie says nothing, and publishing without evidence is how junk spreads.
        let accepted = cand > base + self.config.ab_threshold;
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
                REPLAY_CASES_KEY: cases,
            }
        }))
    }

    /// Replays one held-out session's request in a scratch workspace laid out with the
    /// files that session found, with `skill_md` as the only skill (none for the baseline
    /// of a new skill), and checks the result against what the session verifiably did.
    async fn replay(
        &self,
        step: &mut Step,
        slug: &str,
        skill_md: Option<&str>,
        case: &SummaryRecord,
        seed: u64,
    ) -> anyhow::Result<ReplayOutcome> {
        let scratch = tempfile::tempdir()?;
        let workspace = Workspace::open(scratch.path())?;
        for (path, content) in &case.replay.inputs {
            // A path the workspace refuses was never a workspace file; it is skipped.
            let _ = workspace.write(path, content);
        }
        let skills = match skill_md {
            Some(text) => {
                let description = parse_skill_md("SKILL.md", None, text).map(|s| s.description).unwrap_or_default();
                StaticSkills { skills: vec![(CatalogEntry { slug: slug.into(), version: "replay".into(), description }, text.to_string())] }
            }
            None => StaticSkills::default(),
        };
        let config = AgentConfig {
            max_steps: self.config.replay_max_steps,
            exec_policy: self.config.replay_exec_policy.clone(),
            exec_sandbox: self.config.replay_sandbox.clone(),
            seed: Some(seed),
            ..AgentConfig::default()
        };
        let sink = MemorySink::default();
        let (_cancel, cancel) = watch::channel(false);
        let mut ctx =
            TurnContext { engine: self.engine.as_ref(), workspace: &workspace, skills: &skills, sink: &sink, config: &config, cancel };
        let mut history = Vec::new();
        let outcome = run_turn(&mut ctx, &mut history, &case.request).await;
        let events = sink.events();
        // Replay calls are counted apart from the others: the per-session budget of
        // engine calls excludes them.
        step.report.replay_calls += events.iter().filter(|e| matches!(e, Event::ModelCall { .. })).count();
        Ok(ReplayOutcome { passed: replay_passes(&case.replay, &events, &workspace), answer: outcome.answer })
    }

    async fn publish(&self, candidate: &CandidateRecord) -> anyhow::Result<String> {
        // Provenance is public; the replays' answers may quote a user's files.
        let mut verdict = candidate.verdict.clone();
        if let Some(replay) = verdict.get_mut("replay").and_then(Value::as_object_mut) {
            replay.remove(REPLAY_CASES_KEY);
        }
        let provenance = json!({
            "evolver": {
                "run_id": candidate.run_id,
                "candidate_id": candidate.id,
                "action": candidate.action,
                "writer": candidate.writer,
                "evidence_sessions": candidate.evidence_sessions,
                "distinct_users": candidate.distinct_users,
                "rationale": candidate.rationale,
                "verdict": verdict,
            }
        });
        let changelog = format!("Evolver {}: {}", candidate.action, candidate.rationale.chars().take(200).collect::<String>());
        self.store.publish(&candidate.run_id, &candidate.slug, &candidate.skill_md, &changelog, provenance).await
    }

    /// Publishes a candidate an admin approved.
    pub async fn approve(&self, candidate_id: &str) -> Result<CandidateRecord, ReviewError> {
        let mut candidate = self.pending_candidate(candidate_id).await?;
        let version = self.publish(&candidate).await?;
        candidate.published_version = Some(version);
        candidate.status = "approved_and_published".into();
        self.store.save_candidate(&candidate).await?;
        Ok(candidate)
    }

    pub async fn reject(&self, candidate_id: &str) -> Result<CandidateRecord, ReviewError> {
        let mut candidate = self.pending_candidate(candidate_id).await?;
        candidate.status = "rejected_by_admin".into();
        self.store.save_candidate(&candidate).await?;
        Ok(candidate)
    }

    async fn pending_candidate(&self, candidate_id: &str) -> Result<CandidateRecord, ReviewError> {
        let candidate = self.store.candidate(candidate_id).await?.ok_or(ReviewError::NotFound)?;
        if candidate.status != "pending_review" {
            return Err(ReviewError::NotPending(candidate.status));
        }
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
                    .filter(|s| s.observed && s.skills_read.iter().any(|(slug, v)| *slug == candidate.slug && v == version))
                    .filter_map(|s| s.known_score())
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
