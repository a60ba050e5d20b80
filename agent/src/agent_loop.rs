//! The agent loop: one user turn, run as model step → tool calls → results → next step,
//! until the model answers or a limit stops it. Every step is reported to an
//! [`EventSink`] as it happens.
//!
//! The loop knows no HTTP and no SQL: the engine, the skills and the event sink are
//! traits, so the same loop runs in the server, in tests on a scripted engine, and in
//! replays.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use futures::StreamExt;

use crate::engine::{
    ChatMessage, Choice, Engine, EngineError, Generation, GenerationRequest, Role, StreamEvent, ToolCall, ToolSpec, Usage,
};
use crate::exec::{self, ExecLimits, ExecPolicy, Sandbox};
use crate::skills::catalog::{self, CatalogEntry};
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
    pub exec_policy: ExecPolicy,
    pub exec_limits: ExecLimits,
    /// Where commands run; without a sandbox (and without the operator's opt-in) none do.
    pub exec_sandbox: Sandbox,
    /// Bytes a user's workspace may hold.
    pub workspace_quota_bytes: u64,
    /// Seeds each step's sampling (the seed plus the step number), so a replay of the same
    /// goal with the same model makes the same choices; `None` leaves sampling unseeded.
    pub seed: Option<u64>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_steps: 8,
            max_wall_time: Duration::from_secs(300),
            token_budget: 32_000,
            max_tokens_per_step: 256,
            context_window: 8192,
            catalog_budget: 2_000,
            exec_policy: ExecPolicy::default(),
            exec_limits: ExecLimits::default(),
            exec_sandbox: Sandbox::default(),
            workspace_quota_bytes: crate::workspace::DEFAULT_QUOTA_BYTES,
            seed: None,
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
}

/// Characters of tool output kept in a trajectory event.
const EXCERPT_CHARS: usize = 500;
/// Messages always kept verbatim by compaction.
const KEEP_RECENT_MESSAGES: usize = 4;

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
            description: "Run a command in the workspace.".into(),
            parameters: object(json!({ "command": {"type": "string"} }), &["command"]),
        },
    ]
}

/// The system prompt: a short runtime section, the skills catalog, and the workspace's
/// top-level files. Short on purpose: prompt processing dominates a step on a CPU.
pub fn system_prompt(workspace: &Workspace, skills: &dyn SkillSource, config: &AgentConfig) -> String {
    let mut prompt = String::from(
        "You are an agent working in the user's workspace. Use the tools to act. When a skill \
         below fits the task, read its SKILL.md first. Answer when the task is done.\n",
    );
    let entries = skills.catalog();
    if !entries.is_empty() {
        prompt.push_str(&catalog::render(&entries, config.catalog_budget));
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

/// Runs one user turn, appending to `history` (which holds no system message; the system
/// prompt is rebuilt each step so it shows the current files).
pub async fn run_turn(ctx: &mut TurnContext<'_>, history: &mut Vec<ChatMessage>, user_text: &str) -> TurnOutcome {
    let started = Instant::now();
    let mut tokens_used = 0usize;
    history.push(ChatMessage::user(user_text));
    record(ctx, Event::UserMessage { text: user_text.to_string() }).await;

    for step in 0..ctx.config.max_steps {
        if *ctx.cancel.borrow() {
            return stop(ctx, StopReason::Cancelled, None).await;
        }
        let Some(remaining) = ctx.config.max_wall_time.checked_sub(started.elapsed()) else {
            return stop(ctx, StopReason::MaxWallTime, None).await;
        };
        if tokens_used >= ctx.config.token_budget {
            return stop(ctx, StopReason::TokenBudget, Some(format!("{tokens_used} tokens used"))).await;
        }
        if let Err(error) = compact_if_needed(ctx, history).await {
            return stop(ctx, StopReason::Error, Some(error)).await;
        }

        let mut messages = vec![ChatMessage::system(system_prompt(ctx.workspace, ctx.skills, ctx.config))];
        messages.extend(history.iter().cloned());
        let mut request = GenerationRequest::chat(messages, ctx.config.max_tokens_per_step);
        request.tools = tool_specs();
        request.seed = ctx.config.seed.map(|seed| seed.wrapping_add(step as u64));
        let call_started = Instant::now();
        let generation = tokio::select! {
            result = tokio::time::timeout(remaining, generate(ctx, request)) => match result {
                Ok(Ok(generation)) => generation,
                Ok(Err(error)) => return stop(ctx, StopReason::Error, Some(error.to_string())).await,
                Err(_) => return stop(ctx, StopReason::MaxWallTime, None).await,
            },
            _ = cancelled(ctx.cancel.clone()) => return stop(ctx, StopReason::Cancelled, None).await,
        };
        tokens_used += generation.usage.total_tokens();
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

        if choice.tool_calls.is_empty() {
            history.push(ChatMessage::assistant(choice.text.clone()));
            record(ctx, Event::FinalAnswer { text: choice.text.clone() }).await;
            let outcome = stop(ctx, StopReason::FinalAnswer, None).await;
            return TurnOutcome { answer: Some(choice.text), ..outcome };
        }

        history.push(ChatMessage { role: Some(Role::Assistant), tool_calls: choice.tool_calls.clone(), ..Default::default() });
        for call in &choice.tool_calls {
            record(ctx, Event::ToolCall { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }).await;
            let output = dispatch(ctx, call).await;
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
    stop(ctx, StopReason::MaxSteps, None).await
}

/// One model step; streamed when the sink wants the text as it comes.
async fn generate(ctx: &TurnContext<'_>, request: GenerationRequest) -> Result<Generation, EngineError> {
    if !ctx.sink.wants_deltas() {
        return ctx.engine.generate(request).await;
    }
    let mut events = ctx.engine.generate_stream(request).await?;
    let mut choice = Choice::default();
    let mut usage = Usage::default();
    while let Some(event) = events.next().await {
        match event? {
            StreamEvent::Delta { index: 0, text, .. } => {
                ctx.sink.delta(&text);
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

async fn stop(ctx: &TurnContext<'_>, reason: StopReason, detail: Option<String>) -> TurnOutcome {
    record(ctx, Event::Stop { reason, detail }).await;
    TurnOutcome { stop: reason, answer: None }
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

/// Runs one tool call. Every failure becomes an error result the model can read, never
/// an error of the turn.
pub async fn dispatch(ctx: &TurnContext<'_>, call: &ToolCall) -> ToolOutput {
    let arguments: Value = match serde_json::from_str(&call.arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => return ToolOutput::error(format!("the arguments of `{}` must be a JSON object", call.name)),
    };
    let text_arg = |key: &str| arguments.get(key).and_then(Value::as_str);
    let need = |key: &str| text_arg(key).ok_or_else(|| format!("`{}` needs the argument `{key}`", call.name));
    let result: Result<ToolOutput, String> = match call.name.as_str() {
        "read" => need("path").map(|path| {
            match catalog::slug_of_location(path).and_then(|slug| ctx.skills.skill_md(slug).map(|found| (slug.to_string(), found))) {
                Some((slug, (version, text))) => ToolOutput { skill_read: Some((slug, version)), ..ToolOutput::ok(text) },
                None => match ctx.workspace.read(path) {
                    Ok(text) => ToolOutput::ok(text),
                    Err(e) => ToolOutput::error(e.to_string()),
                },
            }
        }),
        "write" => need("path").and_then(|path| {
            let content = need("content")?;
            Ok(match ctx.workspace.write(path, content) {
                Ok(bytes) => ToolOutput::ok(format!("wrote {bytes} bytes to {path}")),
                Err(e) => ToolOutput::error(e.to_string()),
            })
        }),
        "edit" => need("path").and_then(|path| {
            let (old, new) = (need("old")?, need("new")?);
            Ok(match ctx.workspace.edit(path, old, new) {
                Ok(()) => ToolOutput::ok(format!("edited {path}")),
                Err(e) => ToolOutput::error(e.to_string()),
            })
        }),
        "ls" => Ok(match ctx.workspace.ls(text_arg("path").unwrap_or(".")) {
            Ok(entries) if entries.is_empty() => ToolOutput::ok("(empty)".into()),
            Ok(entries) => ToolOutput::ok(entries.join("\n")),
            Err(e) => ToolOutput::error(e.to_string()),
        }),
        "exec" => match need("command") {
            Err(e) => Err(e),
            // A command could add to a workspace that is already full; none runs until
            // files are removed.
            Ok(command) => match ctx.workspace.check_quota() {
                Err(e) => Err(e.to_string()),
                Ok(()) => Ok(run_command(ctx, command).await),
            },
        },
        other => Err(format!("there is no tool `{other}`")),
    };
    result.unwrap_or_else(ToolOutput::error)
}

/// Runs one `exec` call and renders what it did for the model.
async fn run_command(ctx: &TurnContext<'_>, command: &str) -> ToolOutput {
    let config = ctx.config;
    match exec::run(ctx.workspace.root(), command, &config.exec_policy, config.exec_limits, &config.exec_sandbox).await {
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
            text.push_str(&outcome.stdout);
            text.push_str(&outcome.stderr);
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

/// Replaces the older part of `history` with a model-written summary when the context
/// nears the window.
async fn compact_if_needed(ctx: &TurnContext<'_>, history: &mut Vec<ChatMessage>) -> Result<(), String> {
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
    let summary = ctx.engine.generate(request).await.map_err(|e| format!("compaction failed: {e}"))?.text().to_string();
    history.splice(..split, [ChatMessage::user(format!("[Summary of earlier steps] {summary}"))]);
    record(ctx, Event::Compaction { replaced_messages: split, summary }).await;
    Ok(())
}
