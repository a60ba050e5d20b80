//! The agent loop: one user turn, run as model step → tool calls → results → next step,
//! until the model answers or a limit stops it. Every step is reported to an
//! [`EventSink`] as it happens.
//!
//! The loop knows no HTTP and no SQL: the engine, the skills and the event sink are
//! traits, so the same loop runs in the server, in tests on a scripted engine, and in
//! replays.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use futures::StreamExt;

use crate::engine::{
    ChatMessage, Choice, Engine, EngineError, FinishReason, Generation, GenerationRequest, Role, StreamEvent, ToolCall, ToolSpec, Usage,
};
use crate::exec::{self, ExecLimits, ExecPolicy, Sandbox};
use crate::skills::catalog::{self, CatalogEntry};
use crate::skills::format::parse_skill_md;
use crate::skills::{placeholders, relevance};
use crate::trajectory::{Event, EventSink, StopReason};
use crate::workspace::Workspace;

/// Where the skills the model may read come from (the shared repository, in the server).
pub trait SkillSource: Send + Sync {
    /// The skills eligible for this user, for the catalog.
    fn catalog(&self) -> Vec<CatalogEntry>;
    /// A skill's SKILL.md: its version and text.
    fn skill_md(&self, slug: &str) -> Option<(String, String)>;
}

/// Skills held in memory.
#[derive(Default)]
pub struct StaticSkills {
    pub skills: Vec<(CatalogEntry, String)>,
}

impl SkillSource for StaticSkills {
    fn catalog(&self) -> Vec<CatalogEntry> {
        self.skills.iter().map(|(entry, _)| entry.clone()).collect()
    }
    fn skill_md(&self, slug: &str) -> Option<(String, String)> {
        self.skills.iter().find(|(e, _)| e.slug == slug).map(|(e, text)| (e.version.clone(), text.clone()))
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub max_steps: usize,
    pub max_wall_time: Duration,
    /// Prompt plus completion tokens over the whole turn.
    pub token_budget: usize,
    pub max_tokens_per_step: usize,
    /// The model's context window in tokens; compaction starts at 3/4 of it.
    pub context_window: usize,
    /// Characters of `<available_skills>` at most.
    pub catalog_budget: usize,
    /// How many of the skills most relevant to a request have their instructions put
    /// into the prompt (see [`relevant_skills`]); 0 leaves only the catalog.
    pub inline_skills: usize,
    /// Characters of one skill's instructions put into the prompt at most.
    pub inline_skill_chars: usize,
    pub exec_policy: ExecPolicy,
    pub exec_limits: ExecLimits,
    /// Where commands run; without a sandbox (and without the operator's opt-in) none do.
    pub exec_sandbox: Sandbox,
    /// Bytes a user's workspace may hold.
    pub workspace_quota_bytes: u64,
    /// Seeds each step's sampling (the seed plus the step number), so a replay of the same
    /// goal with the same model makes the same choices. A seeded turn samples (at
    /// `temperature`, or [`SEEDED_TEMPERATURE`]); an unseeded one decodes greedily unless
    /// `temperature` says otherwise.
    pub seed: Option<u64>,
    /// Sampling temperature of every step; `None`: greedy, or [`SEEDED_TEMPERATURE`] when
    /// the turn is seeded (a seed would change nothing in greedy decoding).
    pub temperature: Option<f64>,
}

/// The temperature of a seeded turn that names none: different seeds then give different,
/// each reproducible, turns, as different people's sessions differ.
pub const SEEDED_TEMPERATURE: f64 = 0.7;

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_steps: 8,
            max_wall_time: Duration::from_secs(300),
            token_budget: 32_000,
            max_tokens_per_step: 256,
            context_window: 8192,
            catalog_budget: 2_000,
            inline_skills: 1,
            inline_skill_chars: 1_200,
            exec_policy: ExecPolicy::default(),
            exec_limits: ExecLimits::default(),
            exec_sandbox: Sandbox::default(),
            workspace_quota_bytes: crate::workspace::DEFAULT_QUOTA_BYTES,
            seed: None,
            temperature: None,
        }
    }
}

/// Everything a turn runs against.
pub struct TurnContext<'a> {
    pub engine: &'a dyn Engine,
    pub workspace: &'a Workspace,
    pub skills: &'a dyn SkillSource,
    pub sink: &'a dyn EventSink,
    pub config: &'a AgentConfig,
    /// Becomes `true` when the turn is to be cancelled.
    pub cancel: watch::Receiver<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    pub stop: StopReason,
    pub answer: Option<String>,
    /// Model steps taken.
    pub steps: usize,
    /// Tokens of every model call of the turn, compaction included.
    pub usage: Usage,
}

/// Characters of tool output kept in a trajectory event.
const EXCERPT_CHARS: usize = 500;
/// Messages always kept verbatim by compaction.
const KEEP_RECENT_MESSAGES: usize = 4;
/// A workspace file larger than this is not copied into the trajectory.
const MAX_CAPTURED_FILE_BYTES: u64 = 16 * 1024;
/// Bytes of workspace files one turn copies into its trajectory at most.
const MAX_CAPTURED_BYTES_PER_TURN: u64 = 64 * 1024;
/// A skill must score at least this (see [`relevance::scores`]) to have its instructions
/// put into the prompt: with five skills, one word shared with at most three of them, or two
/// words shared with more.
pub const MIN_INLINE_RELEVANCE: f64 = 1.0;

/// The tools every agent has.
pub fn tool_specs() -> Vec<ToolSpec> {
    let path = json!({"type": "string", "description": "Path relative to the workspace"});
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    vec![
        ToolSpec {
            name: "read".into(),
            description: "Read a file, or a skill's SKILL.md at its location.".into(),
            parameters: object(json!({ "path": path }), &["path"]),
        },
        ToolSpec {
            name: "write".into(),
            description: "Write a file (replaces it).".into(),
            parameters: object(json!({ "path": path, "content": {"type": "string"} }), &["path", "content"]),
        },
        ToolSpec {
            name: "edit".into(),
            description: "Replace the one occurrence of old text with new text in a file.".into(),
            parameters: object(json!({ "path": path, "old": {"type": "string"}, "new": {"type": "string"} }), &["path", "old", "new"]),
        },
        ToolSpec { name: "ls".into(), description: "List a directory.".into(), parameters: object(json!({ "path": path }), &["path"]) },
        ToolSpec {
            name: "exec".into(),
            description: "Run one command (a program and its arguments, no pipes) in the workspace.".into(),
            parameters: object(json!({ "command": {"type": "string"} }), &["command"]),
        },
    ]
}

/// The skills whose instructions go into the prompt for `request`: the most relevant
/// ones scoring at least [`MIN_INLINE_RELEVANCE`], at most `limit`. Relevance is lexical
/// (see [`relevance`]): it costs no model call, and the cost in tokens is the skills'
/// text, at most `inline_skill_chars` characters (about a quarter as many tokens) each.
pub fn relevant_skills(skills: &dyn SkillSource, request: &str, limit: usize) -> Vec<(CatalogEntry, f64)> {
    if limit == 0 {
        return Vec::new();
    }
    relevance::rank(&skills.catalog(), request).into_iter().filter(|(_, score)| *score >= MIN_INLINE_RELEVANCE).take(limit).collect()
}

/// A skill's instructions as the prompt shows them: the body without its frontmatter,
/// cut to `max_chars`.
fn skill_instructions(slug: &str, skill_md: &str, max_chars: usize) -> String {
    let body = parse_skill_md("SKILL.md", None, skill_md).map(|skill| skill.body).unwrap_or_else(|_| skill_md.to_string());
    let mut text: String = body.trim().chars().take(max_chars).collect();
    if text.chars().count() < body.trim().chars().count() {
        text.push_str(" […]");
    }
    format!("Skill {slug} applies to this request. Follow its steps:\n{text}\n")
}

/// The system prompt: a short runtime section, the instructions of the skills relevant
/// to the request, the skills catalog, and the workspace's top-level files. Short on
/// purpose: prompt processing dominates a step on a CPU.
pub fn system_prompt(workspace: &Workspace, skills: &dyn SkillSource, config: &AgentConfig, request: &str) -> String {
    system_prompt_with(workspace, skills, config, request, &[])
}

fn system_prompt_with(
    workspace: &Workspace,
    skills: &dyn SkillSource,
    config: &AgentConfig,
    request: &str,
    inlined: &[(String, String)],
) -> String {
    let mut prompt = String::from(
        "You are an agent working in the user's workspace. Act with the tools: exec runs one command, read shows a file. \
         When a tool result gives what the user asked for, answer with it at once. When a skill below fits the task, follow it.\n",
    );
    for (slug, text) in inlined {
        prompt.push_str(&skill_instructions(slug, text, config.inline_skill_chars));
    }
    let entries = skills.catalog();
    if !entries.is_empty() {
        prompt.push_str(&catalog::render_for(&entries, config.catalog_budget, request));
        prompt.push('\n');
    }
    let files = workspace.ls(".").unwrap_or_default();
    if files.is_empty() {
        prompt.push_str("The workspace is empty.");
    } else {
        let shown: Vec<&str> = files.iter().take(20).map(String::as_str).collect();
        prompt.push_str(&format!("Workspace files: {}", shown.join(", ")));
    }
    prompt
}

/// The first line of the result given for a call repeated after it worked: the earlier
/// result follows. Replays leave such results out of the procedure a session followed.
pub const REPEATED_RESULT: &str = "(the result of the same call before)";

/// What one turn has done so far, beyond the conversation itself.
#[derive(Default)]
struct TurnState {
    steps: usize,
    usage: Usage,
    /// Each distinct call, whether it worked and its result, until the workspace changes.
    results: HashMap<(String, String), (bool, String)>,
    /// Calls repeated after the model was told their result.
    repeats: usize,
    /// Tool calls made so far.
    calls: usize,
    /// Steps cut off at the token limit in a row.
    cut_offs: usize,
    /// The next step may only answer: the model already has what it needs.
    answer_only: bool,
    /// A tool the next step may not call: the model repeated a call of it that failed.
    avoid: Option<String>,
    captured: BTreeSet<String>,
    captured_bytes: u64,
    written: BTreeSet<String>,
}

/// Runs one user turn, appending to `history` (which holds no system message; the system
/// prompt is rebuilt each step so it shows the current files).
pub async fn run_turn(ctx: &mut TurnContext<'_>, history: &mut Vec<ChatMessage>, user_text: &str) -> TurnOutcome {
    let mut turn = TurnState::default();
    let (stop, answer) = turn_steps(ctx, history, user_text, &mut turn).await;
    // What the turn left in the files it wrote is recorded whatever ended it.
    for path in std::mem::take(&mut turn.written) {
        if let Some(content) = small_file(ctx.workspace, &path) {
            record(ctx, Event::OutputFile { path, content }).await;
        }
    }
    let detail = match stop {
        StopReason::TokenBudget => Some(format!("{} tokens used", turn.usage.total_tokens())),
        _ => None,
    };
    let (reason, detail) = match answer {
        Ok(answer) => {
            record(ctx, Event::FinalAnswer { text: answer.clone() }).await;
            record(ctx, Event::Stop { reason: StopReason::FinalAnswer, detail: None }).await;
            return TurnOutcome { stop: StopReason::FinalAnswer, answer: Some(answer), steps: turn.steps, usage: turn.usage };
        }
        Err(error) => (stop, error.or(detail)),
    };
    record(ctx, Event::Stop { reason, detail }).await;
    TurnOutcome { stop: reason, answer: None, steps: turn.steps, usage: turn.usage }
}

/// The step loop. Returns why it stopped and either the answer or the detail of the stop.
async fn turn_steps(
    ctx: &mut TurnContext<'_>,
    history: &mut Vec<ChatMessage>,
    user_text: &str,
    turn: &mut TurnState,
) -> (StopReason, Result<String, Option<String>>) {
    let started = Instant::now();
    history.push(ChatMessage::user(user_text));
    record(ctx, Event::UserMessage { text: user_text.to_string() }).await;
    // The relevant skills are chosen once per turn and count as read: the model saw them.
    // Their placeholders are filled once, from the files the turn starts with.
    let files: Vec<String> = ctx.workspace.files().into_iter().map(|(path, _)| path).collect();
    let mut inlined = Vec::new();
    for (entry, _) in relevant_skills(ctx.skills, user_text, ctx.config.inline_skills) {
        if let Some((version, text)) = ctx.skills.skill_md(&entry.slug) {
            record(ctx, Event::SkillRead { slug: entry.slug.clone(), version }).await;
            inlined.push((entry.slug, placeholders::fill(&text, user_text, &files)));
        }
    }

    while turn.steps < ctx.config.max_steps {
        if *ctx.cancel.borrow() {
            return (StopReason::Cancelled, Err(None));
        }
        let Some(remaining) = ctx.config.max_wall_time.checked_sub(started.elapsed()) else {
            return (StopReason::MaxWallTime, Err(None));
        };
        if turn.usage.total_tokens() >= ctx.config.token_budget {
            return (StopReason::TokenBudget, Err(None));
        }
        if let Err(error) = compact_if_needed(ctx, history, turn).await {
            return (StopReason::Error, Err(Some(error)));
        }

        let mut messages = vec![ChatMessage::system(system_prompt_with(ctx.workspace, ctx.skills, ctx.config, user_text, &inlined))];
        messages.extend(history.iter().cloned());
        // The last step a turn may take, after it has worked with tools, is an answer: a user
        // is better served by what the model found than by a turn that ends with nothing.
        // Nothing is added to the prompt to say so (the grammar does): a small model copies
        // such a notice into its answer.
        if turn.steps + 1 == ctx.config.max_steps && turn.calls > 0 {
            turn.answer_only = true;
        }
        let mut request = GenerationRequest::chat(messages, ctx.config.max_tokens_per_step);
        if turn.answer_only {
            // A grammar that admits only an answer: the model has the result it needs and
            // another call would repeat one it already made.
            request.json_schema = Some(answer_schema());
        } else {
            // After a failed call repeated, that tool is left out for one step: a small
            // model told to "do something else" otherwise repeats the call once more.
            let avoid = turn.avoid.take();
            request.tools = tool_specs().into_iter().filter(|tool| Some(&tool.name) != avoid.as_ref()).collect();
        }
        request.seed = ctx.config.seed.map(|seed| seed.wrapping_add(turn.steps as u64));
        request.temperature = ctx.config.temperature.or(ctx.config.seed.map(|_| SEEDED_TEMPERATURE));
        turn.steps += 1;
        let call_started = Instant::now();
        let generation = tokio::select! {
            result = tokio::time::timeout(remaining, generate(ctx, request)) => match result {
                Ok(Ok(generation)) => generation,
                Ok(Err(error)) => return (StopReason::Error, Err(Some(error.to_string()))),
                Err(_) => return (StopReason::MaxWallTime, Err(None)),
            },
            _ = cancelled(ctx.cancel.clone()) => return (StopReason::Cancelled, Err(None)),
        };
        turn.usage.prompt_tokens += generation.usage.prompt_tokens;
        turn.usage.completion_tokens += generation.usage.completion_tokens;
        record(
            ctx,
            Event::ModelCall { prompt_tokens: generation.usage.prompt_tokens, latency_ms: call_started.elapsed().as_millis() as u64 },
        )
        .await;
        let choice = generation.choices.into_iter().next().unwrap_or_default();
        record(
            ctx,
            Event::ModelOutput {
                text: choice.text.clone(),
                tool_calls: choice.tool_calls.clone(),
                completion_tokens: generation.usage.completion_tokens,
            },
        )
        .await;

        if turn.answer_only && !choice.tool_calls.is_empty() {
            // Only a backend that ignores the answer-only grammar can get here: the step
            // offered no tools. The model is still looping, so the turn stops.
            let reason = "tools were called again where only an answer was allowed".to_string();
            record(ctx, Event::StepRejected { reason: reason.clone(), text: choice.text.clone() }).await;
            return (StopReason::RepeatedCalls, Err(Some(reason)));
        }
        if choice.tool_calls.is_empty() {
            let answer = if turn.answer_only { forced_answer(&choice.text) } else { Some(choice.text.clone()) };
            let cut_off = choice.finish_reason == Some(FinishReason::Length);
            match answer {
                // An answer that the token limit cut off is still an answer when it parsed;
                // a cut-off tool call (which does not parse) never is.
                Some(answer) if !cut_off || turn.answer_only => {
                    history.push(ChatMessage::assistant(answer.clone()));
                    return (StopReason::FinalAnswer, Ok(answer));
                }
                _ => {
                    turn.cut_offs += 1;
                    let reason = format!("the reply was cut off at {} tokens", ctx.config.max_tokens_per_step);
                    record(ctx, Event::StepRejected { reason: reason.clone(), text: choice.text.clone() }).await;
                    if turn.cut_offs >= 2 {
                        return (StopReason::CutOff, Err(Some(reason)));
                    }
                    history.push(ChatMessage::user(
                        "[Your last reply was cut off before it was complete and was dropped. Reply with one short tool call or answer.]",
                    ));
                    continue;
                }
            }
        }
        turn.cut_offs = 0;

        history.push(ChatMessage { role: Some(Role::Assistant), tool_calls: choice.tool_calls.clone(), ..Default::default() });
        for call in &choice.tool_calls {
            record(ctx, Event::ToolCall { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }).await;
            turn.calls += 1;
            let key = (call.name.clone(), canonical_arguments(&call.arguments));
            let output = match turn.results.get(&key) {
                Some((earlier_ok, earlier)) => {
                    turn.repeats += 1;
                    if turn.repeats >= 2 {
                        // The model is looping: the call is not run, and the next step may
                        // only answer, with what the earlier results gave.
                        turn.answer_only = true;
                        ToolOutput::error(format!(
                            "not run: you already called {} with these arguments. Stop calling tools and answer the user with what you have.",
                            call.name
                        ))
                    } else if *earlier_ok {
                        // Running it again would give the same result: say so. After a
                        // result that worked, the next step may only answer; after an error,
                        // the model must try something else.
                        turn.answer_only = true;
                        ToolOutput::ok(format!("{REPEATED_RESULT}\n{earlier}"))
                    } else {
                        turn.avoid = Some(call.name.clone());
                        ToolOutput::error(format!(
                            "you already called {} with these arguments and it failed: {earlier}\nDo something else.",
                            call.name
                        ))
                    }
                }
                None => {
                    capture_inputs(ctx, call, turn).await;
                    let output = dispatch(ctx, call).await;
                    if output.ok && matches!(call.name.as_str(), "write" | "edit") {
                        // The workspace changed: earlier results may no longer hold.
                        turn.results.clear();
                        if let Some(path) = path_argument(&call.arguments) {
                            turn.written.insert(path);
                        }
                    }
                    turn.results.insert(key, (output.ok, output.text.chars().take(EXCERPT_CHARS).collect()));
                    output
                }
            };
            if let Some((slug, version)) = &output.skill_read {
                record(ctx, Event::SkillRead { slug: slug.clone(), version: version.clone() }).await;
            }
            record(
                ctx,
                Event::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    ok: output.ok,
                    exit_code: output.exit_code,
                    excerpt: output.text.chars().take(EXCERPT_CHARS).collect(),
                },
            )
            .await;
            history.push(ChatMessage {
                role: Some(Role::Tool),
                content: output.text,
                tool_call_id: Some(call.id.clone()),
                ..Default::default()
            });
        }
    }
    (StopReason::MaxSteps, Err(None))
}

/// The grammar of a step that may only answer.
fn answer_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "answer": { "type": "string" } },
        "required": ["answer"],
        "additionalProperties": false,
    })
}

/// The answer in a reply written under [`answer_schema`]; a backend that ignored the
/// schema and wrote plain text is taken at its word.
fn forced_answer(text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(value) => value.get("answer").and_then(Value::as_str).map(str::to_string),
        Err(_) if !text.trim_start().starts_with('{') && !text.trim().is_empty() => Some(text.trim().to_string()),
        Err(_) => None,
    }
}

/// Arguments in one spelling, so that `{"a":1, "b":2}` and `{"b":2,"a":1}` are the same call.
fn canonical_arguments(arguments: &str) -> String {
    serde_json::from_str::<Value>(arguments).map(|v| v.to_string()).unwrap_or_else(|_| arguments.trim().to_string())
}

fn path_argument(arguments: &str) -> Option<String> {
    let value: Value = serde_json::from_str(arguments).ok()?;
    value.get("path").and_then(Value::as_str).map(|p| p.trim_start_matches("./").to_string())
}

/// A small regular text file's content, for the trajectory.
fn small_file(workspace: &Workspace, path: &str) -> Option<String> {
    let real = workspace.resolve(path).ok()?;
    let metadata = std::fs::symlink_metadata(&real).ok()?;
    if !metadata.is_file() || metadata.len() > MAX_CAPTURED_FILE_BYTES {
        return None;
    }
    workspace.read(path).ok()
}

/// Records the workspace files a call is about to touch as they are before it runs, each
/// once per turn: the file it reads or edits, the files it lists, the files named to a
/// command. A replay of the turn lays these out again.
async fn capture_inputs(ctx: &TurnContext<'_>, call: &ToolCall, turn: &mut TurnState) {
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
    let text = |key: &str| arguments.get(key).and_then(Value::as_str).map(str::to_string);
    let paths: Vec<String> = match call.name.as_str() {
        "read" | "edit" | "write" => text("path").into_iter().collect(),
        "ls" => {
            let dir = text("path").unwrap_or_else(|| ".".into());
            let dir = dir.trim_end_matches('/').to_string();
            ctx.workspace
                .ls(&dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|name| !name.ends_with('/'))
                .map(|name| if dir == "." || dir.is_empty() { name } else { format!("{dir}/{name}") })
                .collect()
        }
        "exec" => text("command")
            .map(|command| shell_words::split(&command).unwrap_or_default().into_iter().skip(1).filter(|w| !w.starts_with('-')).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for path in paths {
        let path = path.trim_start_matches("./").to_string();
        if catalog::slug_of_location(&path).is_some() || turn.captured.contains(&path) {
            continue;
        }
        let Some(content) = small_file(ctx.workspace, &path) else { continue };
        if turn.captured_bytes + content.len() as u64 > MAX_CAPTURED_BYTES_PER_TURN {
            continue;
        }
        turn.captured_bytes += content.len() as u64;
        turn.captured.insert(path.clone());
        record(ctx, Event::InputFile { path, content }).await;
    }
}

/// One model step; streamed when the sink wants the text as it comes.
async fn generate(ctx: &TurnContext<'_>, request: GenerationRequest) -> Result<Generation, EngineError> {
    if !ctx.sink.wants_deltas() {
        return ctx.engine.generate(request).await;
    }
    // A step under a JSON schema (the answer-only step) writes JSON around its answer; a
    // watcher is shown the answer inside it, decoded as it arrives, never the JSON.
    let answer_only = request.json_schema.is_some();
    let mut events = ctx.engine.generate_stream(request).await?;
    let mut choice = Choice::default();
    let mut usage = Usage::default();
    // Text a watcher was already shown as a preview of this step's answer.
    let mut shown = String::new();
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::Preview { index: 0, text } => {
                ctx.sink.delta(&text);
                shown.push_str(&text);
            }
            StreamEvent::Delta { index: 0, text, .. } if answer_only => {
                choice.text.push_str(&text);
                if let Some(answer) = crate::engine::tool_protocol::partial_answer(&choice.text) {
                    if answer.len() > shown.len() {
                        ctx.sink.delta(&answer[shown.len()..]);
                        shown = answer;
                    }
                }
            }
            StreamEvent::Delta { index: 0, text, .. } => {
                // What was previewed is not shown twice; a reply that turns out not to be
                // the previewed answer (cut off mid-string) adds nothing to what was shown.
                let rest = if shown.is_empty() { text.as_str() } else { text.strip_prefix(shown.as_str()).unwrap_or("") };
                if !rest.is_empty() {
                    ctx.sink.delta(rest);
                }
                shown.clear();
                choice.text.push_str(&text);
            }
            StreamEvent::ToolCalls { index: 0, calls } => choice.tool_calls.extend(calls),
            StreamEvent::Finish { index: 0, reason } => choice.finish_reason = Some(reason),
            StreamEvent::Usage(u) => usage = u,
            _ => {}
        }
    }
    Ok(Generation { choices: vec![choice], usage })
}

async fn cancelled(mut cancel: watch::Receiver<bool>) {
    while !*cancel.borrow() {
        if cancel.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

async fn record(ctx: &TurnContext<'_>, event: Event) {
    if let Err(error) = ctx.sink.record(event).await {
        tracing::error!(?error, "could not record a trajectory event");
    }
}

/// The result of one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub text: String,
    pub skill_read: Option<(String, String)>,
}

impl ToolOutput {
    fn ok(text: String) -> Self {
        Self { ok: true, exit_code: None, text, skill_read: None }
    }
    fn error(text: String) -> Self {
        Self { ok: false, exit_code: None, text: format!("error: {text}"), skill_read: None }
    }
}

/// Runs one tool call of a turn. Every failure becomes an error result the model can read,
/// never an error of the turn.
pub async fn dispatch(ctx: &TurnContext<'_>, call: &ToolCall) -> ToolOutput {
    run_tool(ctx.workspace, ctx.skills, ctx.config, call).await
}

/// Runs one tool call against a workspace, outside any turn: what [`dispatch`] does for a
/// turn, and what RL rollouts do for theirs, so that a policy trains on the very tools it is
/// served with.
pub async fn run_tool(workspace: &Workspace, skills: &dyn SkillSource, config: &AgentConfig, call: &ToolCall) -> ToolOutput {
    let arguments: Value = match serde_json::from_str(&call.arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => return ToolOutput::error(format!("the arguments of `{}` must be a JSON object", call.name)),
    };
    let text_arg = |key: &str| arguments.get(key).and_then(Value::as_str);
    let need = |key: &str| text_arg(key).ok_or_else(|| format!("`{}` needs the argument `{key}`", call.name));
    let result: Result<ToolOutput, String> = match call.name.as_str() {
        "read" => need("path").map(|path| {
            match catalog::slug_of_location(path).and_then(|slug| skills.skill_md(slug).map(|found| (slug.to_string(), found))) {
                Some((slug, (version, text))) => ToolOutput { skill_read: Some((slug, version)), ..ToolOutput::ok(text) },
                None => match workspace.read(path) {
                    Ok(text) => ToolOutput::ok(text),
                    Err(e) => ToolOutput::error(e.to_string()),
                },
            }
        }),
        "write" => need("path").and_then(|path| {
            let content = need("content")?;
            Ok(match workspace.write(path, content) {
                Ok(bytes) => ToolOutput::ok(format!("wrote {bytes} bytes to {path}")),
                Err(e) => ToolOutput::error(e.to_string()),
            })
        }),
        "edit" => need("path").and_then(|path| {
            let (old, new) = (need("old")?, need("new")?);
            Ok(match workspace.edit(path, old, new) {
                Ok(()) => ToolOutput::ok(format!("edited {path}")),
                Err(e) => ToolOutput::error(e.to_string()),
            })
        }),
        "ls" => Ok(match workspace.ls(text_arg("path").unwrap_or(".")) {
            Ok(entries) if entries.is_empty() => ToolOutput::ok("(empty)".into()),
            Ok(entries) => ToolOutput::ok(entries.join("\n")),
            Err(e) => ToolOutput::error(e.to_string()),
        }),
        "exec" => match need("command") {
            Err(e) => Err(e),
            // A command could add to a workspace that is already full; none runs until
            // files are removed.
            Ok(command) => match workspace.check_quota() {
                Err(e) => Err(e.to_string()),
                Ok(()) => Ok(run_command(workspace, config, command).await),
            },
        },
        other => Err(format!("there is no tool `{other}`")),
    };
    result.unwrap_or_else(ToolOutput::error)
}

/// Runs one `exec` call and renders what it did for the model.
async fn run_command(workspace: &Workspace, config: &AgentConfig, command: &str) -> ToolOutput {
    match exec::run(workspace.root(), command, &config.exec_policy, config.exec_limits, &config.exec_sandbox).await {
        Err(e) => ToolOutput::error(e.to_string()),
        Ok(outcome) => {
            // Notes go first, so that they survive any cut of the output.
            let mut text = String::new();
            if outcome.timed_out {
                text.push_str("[killed: the command ran past its time limit]\n");
            }
            if outcome.output_truncated {
                text.push_str("[killed: the output passed its size limit]\n");
            }
            // The exit code first and plainly: a small model reads "exit code 0" as success
            // more reliably than it infers it from the output.
            match outcome.exit_code {
                Some(code) => text.push_str(&format!("exit code {code}\n")),
                None => text.push_str("killed by a signal\n"),
            }
            text.push_str(&outcome.stdout);
            text.push_str(&outcome.stderr);
            if outcome.stdout.is_empty() && outcome.stderr.is_empty() {
                text.push_str("(no output)");
            }
            ToolOutput { ok: outcome.succeeded(), exit_code: outcome.exit_code, text, skill_read: None }
        }
    }
}

/// A rough token count: about four characters per token for English text and code.
fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    messages.iter().map(|m| m.content.len() + m.tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>()).sum::<usize>()
        / 4
}

/// Where compaction may cut `history` so that the kept part starts with no tool result
/// separated from its call: a kept tool message always has its assistant call kept too.
pub fn compaction_split(history: &[ChatMessage]) -> usize {
    let mut split = history.len().saturating_sub(KEEP_RECENT_MESSAGES);
    while split > 0 && history[split].role() == Role::Tool {
        split -= 1;
    }
    split
}

/// What a compacted history's summary starts with. ReSum training branches on the same
/// phrase, so a policy trained to summarize at it meets it again where the runtime
/// summarizes.
pub const SUMMARY_PHRASE: &str = "Summary of progress so far:";

/// Replaces the older part of `history` with a model-written summary when the context
/// nears the window.
async fn compact_if_needed(ctx: &TurnContext<'_>, history: &mut Vec<ChatMessage>, turn: &mut TurnState) -> Result<(), String> {
    let system_estimate = ctx.config.catalog_budget / 4 + 100;
    if system_estimate + estimate_tokens(history) < ctx.config.context_window * 3 / 4 {
        return Ok(());
    }
    let split = compaction_split(history);
    if split < 2 {
        return Ok(());
    }
    let transcript: String = history[..split]
        .iter()
        .map(|m| {
            let calls: Vec<String> = m.tool_calls.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect();
            format!("{}: {}{}\n", m.role().as_str(), m.content, calls.join(" "))
        })
        .collect();
    let request = GenerationRequest::chat(
        vec![
            ChatMessage::system("Summarize this agent conversation in a few sentences. Keep file names, commands and results."),
            ChatMessage::user(transcript),
        ],
        128,
    );
    let generation = ctx.engine.generate(request).await.map_err(|e| format!("compaction failed: {e}"))?;
    turn.usage.prompt_tokens += generation.usage.prompt_tokens;
    turn.usage.completion_tokens += generation.usage.completion_tokens;
    let summary = generation.text().to_string();
    history.splice(..split, [ChatMessage::user(format!("{SUMMARY_PHRASE} {summary}"))]);
    record(ctx, Event::Compaction { replaced_messages: split, summary }).await;
    Ok(())
}
