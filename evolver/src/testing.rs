//! Scripted parts for exercising the pipeline without a model or a database: an in-memory
//! [`EvolverStore`] and a rule-following engine that records every prompt it receives.
//! The tests and `bench/evolver` use them; the server uses the real ones.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use agent::engine::{
    ChatMessage, Choice, Engine, EngineError, EventStream, Generation, GenerationRequest, ModelInfo, Prompt, Role, ToolCall, Usage,
};
use agent::trajectory::{Event, StopReason};

use crate::store::{CandidateRecord, EvolverStore, RunReport, SessionTrace, SkillText, SummaryRecord};

/// Everything a [`MemoryStore`] holds.
#[derive(Default)]
pub struct MemoryState {
    pub sessions: Vec<SessionTrace>,
    pub summaries: BTreeMap<String, SummaryRecord>,
    /// slug → versions in order, each `(version, SKILL.md, provenance)`.
    pub skills: BTreeMap<String, Vec<(String, String, Value)>>,
    pub candidates: BTreeMap<String, CandidateRecord>,
    pub runs: Vec<(String, String, RunReport)>,
    pub lease: Option<String>,
    pub rollbacks: Vec<(String, String, String)>,
}

#[derive(Default)]
pub struct MemoryStore {
    pub state: Mutex<MemoryState>,
}

impl MemoryStore {
    pub fn add_skill(&self, slug: &str, skill_md: &str) {
        self.state.lock().unwrap().skills.entry(slug.into()).or_default().push(("1.0.0".into(), skill_md.into(), Value::Null));
    }
    pub fn add_session(&self, trace: SessionTrace) {
        self.state.lock().unwrap().sessions.push(trace);
    }
    pub fn latest(&self, slug: &str) -> Option<(String, String, Value)> {
        self.state.lock().unwrap().skills.get(slug).and_then(|v| v.last().cloned())
    }
}

fn bump(version: &str) -> String {
    let parts: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [major, minor, patch] => format!("{major}.{minor}.{}", patch + 1),
        _ => "1.0.0".into(),
    }
}

#[async_trait]
impl EvolverStore for MemoryStore {
    async fn try_lease(&self, holder: &str, _ttl: Duration) -> anyhow::Result<bool> {
        let mut state = self.state.lock().unwrap();
        if state.lease.is_some() {
            return Ok(false);
        }
        state.lease = Some(holder.into());
        Ok(true)
    }
    async fn release_lease(&self, holder: &str) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.lease.as_deref() == Some(holder) {
            state.lease = None;
        }
        Ok(())
    }
    async fn start_run(&self, trigger: &str) -> anyhow::Result<String> {
        let mut state = self.state.lock().unwrap();
        let id = format!("run-{}", state.runs.len() + 1);
        state.runs.push((id.clone(), trigger.into(), RunReport::default()));
        Ok(id)
    }
    async fn update_run(&self, run_id: &str, _status: &str, report: &RunReport) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        if let Some(run) = state.runs.iter_mut().find(|r| r.0 == run_id) {
            run.2 = report.clone();
        }
        Ok(())
    }
    async fn unsummarized_sessions(&self, limit: usize) -> anyhow::Result<Vec<SessionTrace>> {
        let state = self.state.lock().unwrap();
        Ok(state.sessions.iter().filter(|s| !state.summaries.contains_key(&s.session_id)).take(limit).cloned().collect())
    }
    async fn save_summary(&self, record: &SummaryRecord) -> anyhow::Result<()> {
        self.state.lock().unwrap().summaries.insert(record.session_id.clone(), record.clone());
        Ok(())
    }
    async fn summaries_since(&self, since: i64) -> anyhow::Result<Vec<SummaryRecord>> {
        Ok(self.state.lock().unwrap().summaries.values().filter(|s| s.updated_at >= since).cloned().collect())
    }
    async fn shared_skill(&self, slug: &str) -> anyhow::Result<Option<SkillText>> {
        Ok(self.latest(slug).map(|(version, skill_md, _)| SkillText { slug: slug.into(), version, skill_md }))
    }
    async fn shared_skill_version(&self, slug: &str, version: &str) -> anyhow::Result<Option<String>> {
        let state = self.state.lock().unwrap();
        Ok(state.skills.get(slug).and_then(|v| v.iter().find(|(ver, ..)| ver == version)).map(|(_, text, _)| text.clone()))
    }
    async fn save_candidate(&self, candidate: &CandidateRecord) -> anyhow::Result<()> {
        self.state.lock().unwrap().candidates.insert(candidate.id.clone(), candidate.clone());
        Ok(())
    }
    async fn candidate(&self, id: &str) -> anyhow::Result<Option<CandidateRecord>> {
        Ok(self.state.lock().unwrap().candidates.get(id).cloned())
    }
    async fn published_candidates(&self) -> anyhow::Result<Vec<CandidateRecord>> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .candidates
            .values()
            .filter(|c| c.status == "published" || c.status == "approved_and_published")
            .cloned()
            .collect())
    }
    async fn publish(&self, _run_id: &str, slug: &str, skill_md: &str, _changelog: &str, provenance: Value) -> anyhow::Result<String> {
        let mut state = self.state.lock().unwrap();
        let versions = state.skills.entry(slug.into()).or_default();
        let version = versions.last().map(|(v, ..)| bump(v)).unwrap_or_else(|| "1.0.0".into());
        versions.push((version.clone(), skill_md.into(), provenance));
        Ok(version)
    }
    async fn rollback(&self, slug: &str, version: &str, reason: &str) -> anyhow::Result<String> {
        let mut state = self.state.lock().unwrap();
        let versions = state.skills.get_mut(slug).ok_or_else(|| anyhow::anyhow!("no skill {slug}"))?;
        let text = versions.iter().find(|(v, ..)| v == version).map(|(_, t, _)| t.clone()).ok_or_else(|| anyhow::anyhow!("no version"))?;
        let new = bump(&versions.last().expect("a version").0);
        versions.push((new.clone(), text, json!({ "rollback": { "restored": version, "reason": reason } })));
        state.rollbacks.push((slug.into(), version.into(), reason.into()));
        Ok(new)
    }
}

/// A session trace for tests: a request, optionally a skill read and a failing tool, and
/// how it stopped.
pub fn trace(
    id: &str,
    user: &str,
    updated_at: i64,
    request: &str,
    skill: Option<(&str, &str)>,
    failed_tool: bool,
    answered: bool,
) -> SessionTrace {
    let mut events = vec![Event::UserMessage { text: request.into() }];
    if let Some((slug, version)) = skill {
        events.push(Event::ToolCall {
            call_id: "c1".into(),
            name: "read".into(),
            arguments: format!("{{\"path\":\"skills/{slug}/SKILL.md\"}}"),
        });
        events.push(Event::SkillRead { slug: slug.into(), version: version.into() });
        events.push(Event::ToolResult {
            call_id: "c1".into(),
            name: "read".into(),
            ok: true,
            exit_code: None,
            excerpt: "skill text".into(),
        });
    }
    if failed_tool {
        events.push(Event::ToolCall { call_id: "c2".into(), name: "exec".into(), arguments: "{\"command\":\"wc -l data.csv\"}".into() });
        events.push(Event::ToolResult {
            call_id: "c2".into(),
            name: "exec".into(),
            ok: false,
            exit_code: Some(1),
            excerpt: "wc: data.csv: No such file".into(),
        });
    }
    if answered {
        events.push(Event::FinalAnswer { text: "Done.".into() });
        events.push(Event::Stop { reason: StopReason::FinalAnswer, detail: None });
    } else {
        events.push(Event::Stop { reason: StopReason::MaxSteps, detail: None });
    }
    observed_session(id, user, updated_at, events, Vec::new())
}

/// A session this server observed, of user `user` (whose id is `id-<user>`).
fn observed_session(id: &str, user: &str, updated_at: i64, events: Vec<Event>, feedback: Vec<String>) -> SessionTrace {
    SessionTrace {
        session_id: id.into(),
        user_id: format!("id-{user}"),
        user_name: user.into(),
        updated_at,
        events,
        feedback,
        observed: true,
    }
}

/// A session that worked on a task the way a user's agent does: it found `file`, ran
/// `command`, saw `result` and answered `answer`; the user rated it `up` or `down`.
#[allow(clippy::too_many_arguments)]
pub fn task_trace(
    id: &str,
    user: &str,
    updated_at: i64,
    request: &str,
    file: (&str, &str),
    command: &str,
    result: &str,
    answer: &str,
    rating: &str,
) -> SessionTrace {
    let events = vec![
        Event::UserMessage { text: request.into() },
        Event::ToolCall { call_id: "c1".into(), name: "exec".into(), arguments: json!({ "command": command }).to_string() },
        Event::InputFile { path: file.0.into(), content: file.1.into() },
        Event::ToolResult { call_id: "c1".into(), name: "exec".into(), ok: true, exit_code: Some(0), excerpt: result.into() },
        Event::FinalAnswer { text: answer.into() },
        Event::Stop { reason: StopReason::FinalAnswer, detail: None },
    ];
    observed_session(id, user, updated_at, events, vec![rating.into()])
}

/// An engine that follows rules instead of a model:
/// - a summary request gets a summary whose outcome follows the transcript's stop;
/// - a decision request gets the decision registered for the first registered key its
///   prompt contains (else `skip`);
/// - an agent step follows the skill in its prompt (see [`agent_step`]).
pub struct RuleEngine {
    info: ModelInfo,
    pub decisions: Mutex<Vec<(String, Value)>>,
    /// Every prompt received, as one text per request.
    pub prompts: Mutex<Vec<String>>,
}

impl Default for RuleEngine {
    fn default() -> Self {
        Self {
            info: ModelInfo { id: "rules".into(), context_window: Some(8192), backend: "mistralrs" },
            decisions: Mutex::new(Vec::new()),
            prompts: Mutex::new(Vec::new()),
        }
    }
}

impl RuleEngine {
    pub fn decide(&self, key: &str, action: &str, name: &str, description: &str, instructions: &str) {
        self.decisions.lock().unwrap().push((
            key.into(),
            json!({ "action": action, "name": name, "description": description, "instructions": instructions, "rationale": format!("{action} because the evidence shows it") }),
        ));
    }

    pub fn calls(&self) -> usize {
        self.prompts.lock().unwrap().len()
    }

    fn reply(&self, request: &GenerationRequest) -> Choice {
        let Prompt::Messages(messages) = &request.prompt else { return Choice::default() };
        let system = messages.first().map(|m| m.content.as_str()).unwrap_or_default();
        let user = messages.iter().filter(|m| m.role == Some(Role::User)).map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        let answer_only = request.json_schema.as_ref().is_some_and(|schema| schema["required"][0] == "answer");
        if !request.tools.is_empty() || answer_only {
            let choice = agent_step(system, messages);
            if answer_only {
                return Choice { text: json!({ "answer": choice.text }).to_string(), ..Default::default() };
            }
            return choice;
        }
        if system.contains("You summarize") {
            let goal = user.lines().find_map(|l| l.strip_prefix("user: ")).unwrap_or("unknown").to_string();
            // Like a small model, it calls every session a success that ended in an answer.
            let outcome = if user.contains("stop: final_answer") { "success" } else { "failure" };
            let summary = json!({ "goal": goal, "outcome": outcome, "helped": "reading the skill", "went_wrong": "", "turning_point": "" });
            return Choice { text: summary.to_string(), ..Default::default() };
        }
        let decisions = self.decisions.lock().unwrap();
        let decision = decisions.iter().find(|(key, _)| user.contains(key.as_str())).map(|(_, d)| d.clone()).unwrap_or_else(
            || json!({ "action": "skip", "name": "", "description": "", "instructions": "", "rationale": "weak evidence" }),
        );
        Choice { text: decision.to_string(), ..Default::default() }
    }
}

fn call(name: &str, arguments: Value) -> Choice {
    Choice {
        tool_calls: vec![ToolCall { id: format!("call-{name}"), name: name.into(), arguments: arguments.to_string() }],
        ..Default::default()
    }
}

/// An agent step that does what the prompt's skill says, and nothing without one:
/// - a step `Run \`COMMAND\` with exec.` is run, with `FILE` replaced by the first
///   workspace file; its printed number is then the answer (minus one when the skill
///   says "minus one");
/// - a skill that says `Answer NUMBER at once` is answered at once, with no work;
/// - a skill that contains `WORSE` makes it fail a tool first;
/// - without a skill it answers that it cannot tell.
fn agent_step(system: &str, messages: &[ChatMessage]) -> Choice {
    let results: Vec<&str> = messages.iter().filter(|m| m.role == Some(Role::Tool)).map(|m| m.content.as_str()).collect();
    let command = system.lines().find_map(|line| line.split("Run `").nth(1)?.split("` with exec").next().map(str::to_string));
    let first_file = system.split("Workspace files: ").nth(1).and_then(|rest| rest.split([',', '\n']).next()).map(str::trim);
    let at_once = system.split("Answer ").skip(1).find_map(|rest| {
        let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!number.is_empty() && rest[number.len()..].starts_with(" at once")).then_some(number)
    });
    if let Some(number) = at_once {
        return Choice { text: format!("The answer is {number}."), ..Default::default() };
    }
    if system.contains("WORSE") && results.is_empty() {
        return call("read", json!({ "path": "missing.txt" }));
    }
    let Some(command) = command else { return Choice { text: "I could not tell.".into(), ..Default::default() } };
    match results.last() {
        Some(result) if !result.starts_with("error") => {
            let printed: Option<i64> = result.lines().nth(1).and_then(|line| line.split_whitespace().next()).and_then(|n| n.parse().ok());
            let answer = match printed {
                Some(n) if system.contains("minus one") => (n - 1).to_string(),
                Some(n) => n.to_string(),
                None => "I could not tell.".into(),
            };
            Choice { text: answer, ..Default::default() }
        }
        _ => call("exec", json!({ "command": command.replace("FILE", first_file.unwrap_or("missing.txt")) })),
    }
}

#[async_trait]
impl Engine for RuleEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        let mut prompt_chars = 0;
        if let Prompt::Messages(messages) = &request.prompt {
            let text = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
            prompt_chars = text.len();
            self.prompts.lock().unwrap().push(text);
        }
        let choice = self.reply(&request);
        // Token counts estimated at four characters a token, so that benchmarks see the
        // real size of the prompts the pipeline builds.
        let completion_chars = choice.text.len() + choice.tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>();
        Ok(Generation {
            choices: vec![choice],
            usage: Usage { prompt_tokens: prompt_chars.div_ceil(4), completion_tokens: completion_chars.div_ceil(4) },
        })
    }
    async fn generate_stream(&self, _: GenerationRequest) -> Result<EventStream, EngineError> {
        Err(EngineError::InvalidRequest("the rule engine does not stream".into()))
    }
    async fn score(&self, _: &[u32], _: &[u32]) -> Result<Vec<f32>, EngineError> {
        Err(EngineError::InvalidRequest("the rule engine does not score".into()))
    }
}
