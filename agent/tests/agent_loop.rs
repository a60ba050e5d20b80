//! The agent loop on a scripted engine: the order of events, the limits that stop a turn,
//! cancellation, skill reads, tool errors and compaction.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;

use agent::agent_loop::{compaction_split, run_turn, AgentConfig, StaticSkills, TurnContext};
use agent::engine::{
    ChatMessage, Choice, Engine, EngineError, EventStream, Generation, GenerationRequest, ModelInfo, Prompt, Role, ToolCall, Usage,
};
use agent::skills::catalog::CatalogEntry;
use agent::trajectory::{Event, MemorySink, StopReason};
use agent::workspace::Workspace;

/// Replies from a script; an empty script waits forever (to test cancellation).
struct ScriptedEngine {
    info: ModelInfo,
    script: Mutex<VecDeque<Choice>>,
    requests: Mutex<Vec<GenerationRequest>>,
}

impl ScriptedEngine {
    fn new(script: Vec<Choice>) -> Self {
        Self {
            info: ModelInfo { id: "scripted".into(), context_window: None, backend: "mistralrs" },
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Engine for ScriptedEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        self.requests.lock().unwrap().push(request);
        let next = self.script.lock().unwrap().pop_front();
        match next {
            Some(choice) => Ok(Generation { choices: vec![choice], usage: Usage { prompt_tokens: 100, completion_tokens: 10 } }),
            None => std::future::pending().await,
        }
    }
    async fn generate_stream(&self, _: GenerationRequest) -> Result<EventStream, EngineError> {
        Err(EngineError::InvalidRequest("not scripted".into()))
    }
    async fn score(&self, _: &[u32], _: &[u32]) -> Result<Vec<f32>, EngineError> {
        Err(EngineError::InvalidRequest("not scripted".into()))
    }
}

fn call(name: &str, arguments: serde_json::Value) -> Choice {
    Choice {
        tool_calls: vec![ToolCall { id: format!("call_{name}"), name: name.into(), arguments: arguments.to_string() }],
        ..Default::default()
    }
}

fn answer(text: &str) -> Choice {
    Choice { text: text.into(), ..Default::default() }
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::kind).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    workspace: Workspace,
    skills: StaticSkills,
    sink: MemorySink,
    config: AgentConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let workspace = Workspace::open(&dir.path().join("ws")).unwrap();
    let skills = StaticSkills {
        skills: vec![(
            CatalogEntry { slug: "notes".into(), version: "1.2.0".into(), description: "Keep notes in notes.txt.".into() },
            "---\nname: notes\ndescription: Keep notes.\n---\nAppend to notes.txt.".into(),
        )],
    };
    Fixture { _dir: dir, workspace, skills, sink: MemorySink::default(), config: AgentConfig::default() }
}

#[tokio::test]
async fn tool_call_result_and_final_answer_are_recorded_in_order() {
    let f = fixture();
    let engine = ScriptedEngine::new(vec![
        call("read", json!({"path": "skills/notes/SKILL.md"})),
        call("write", json!({"path": "notes.txt", "content": "milk"})),
        call("read", json!({"path": "../escape.txt"})),
        answer("Saved your note."),
    ]);
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx =
        TurnContext { engine: &engine, workspace: &f.workspace, skills: &f.skills, sink: &f.sink, config: &f.config, cancel: cancel_rx };
    let mut history = Vec::new();
    let outcome = run_turn(&mut ctx, &mut history, "Note: buy milk").await;
    assert_eq!(outcome.stop, StopReason::FinalAnswer);
    assert_eq!(outcome.answer.as_deref(), Some("Saved your note."));
    assert_eq!(f.workspace.read("notes.txt").unwrap(), "milk");

    let events = f.sink.events();
    assert_eq!(
        kinds(&events),
        vec![
            "user_message",
            // The request is about notes: the notes skill's instructions are in the prompt.
            "skill_read",
            "model_call",
            "model_output",
            "tool_call",
            "skill_read",
            "tool_result",
            "model_call",
            "model_output",
            "tool_call",
            "tool_result",
            "model_call",
            "model_output",
            "tool_call",
            "tool_result",
            "model_call",
            "model_output",
            "output_file",
            "final_answer",
            "stop",
        ]
    );
    assert!(matches!(&events[1], Event::SkillRead { slug, .. } if slug == "notes"));
    assert!(matches!(&events[17], Event::OutputFile { path, content } if path == "notes.txt" && content == "milk"));
    assert_eq!(outcome.steps, 4);
    assert_eq!(outcome.usage, Usage { prompt_tokens: 400, completion_tokens: 40 });
    assert!(matches!(&events[5], Event::SkillRead { slug, version } if slug == "notes" && version == "1.2.0"));
    // The refused escape is a tool error the model saw, not a failed turn.
    let Event::ToolResult { ok, excerpt, .. } = &events[14] else { panic!("tool result expected") };
    assert!(!ok && excerpt.contains("leaves the workspace"), "{excerpt}");

    // The model saw the catalog, the tools and each result.
    let requests = engine.requests.lock().unwrap();
    let Prompt::Messages(first) = &requests[0].prompt else { panic!() };
    assert!(first[0].content.contains("<location>skills/notes/SKILL.md</location>"));
    assert!(first[0].content.contains("Skill notes applies to this request. Follow its steps:\nAppend to notes.txt."));
    assert_eq!(requests[0].tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["read", "write", "edit", "ls", "exec"]);
    let Prompt::Messages(last) = &requests[3].prompt else { panic!() };
    assert!(last[0].content.contains("notes.txt"), "the workspace listing is refreshed each step");
    assert!(last.iter().any(|m| m.role() == Role::Tool && m.content.contains("Append to notes.txt")));
}

#[tokio::test]
async fn a_turn_stops_at_max_steps_and_at_the_token_budget() {
    let mut f = fixture();
    f.config.max_steps = 3;
    let engine = ScriptedEngine::new((0..10).map(|i| call("ls", json!({"path": format!("d{i}")}))).collect());
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx =
        TurnContext { engine: &engine, workspace: &f.workspace, skills: &f.skills, sink: &f.sink, config: &f.config, cancel: cancel_rx };
    // The third step may only answer; a backend that calls tools anyway is stopped there.
    let outcome = run_turn(&mut ctx, &mut Vec::new(), "loop").await;
    assert_eq!(outcome.stop, StopReason::RepeatedCalls);
    assert_eq!(engine.requests.lock().unwrap().len(), 3);
    assert!(engine.requests.lock().unwrap()[2].tools.is_empty());

    // One step, cut off: no answer and no step left.
    let (outcome, _, _) = check_turn_with(1, "Write a note", vec![cut_off(r#"{"tool": "write""#)]).await;
    assert_eq!(outcome.stop, StopReason::MaxSteps);

    // After tool work, the last step allowed is an answer: the user gets what was found.
    let (outcome, _, requests) = check_turn_with(
        3,
        "List d0 and d1",
        vec![call("ls", json!({"path": "d0"})), call("ls", json!({"path": "d1"})), answer(r#"{"answer": "Neither exists."}"#)],
    )
    .await;
    assert_eq!(outcome.stop, StopReason::FinalAnswer);
    assert_eq!(outcome.answer.as_deref(), Some("Neither exists."));
    assert!(requests[1].json_schema.is_none() && !requests[1].tools.is_empty());
    assert!(requests[2].tools.is_empty() && requests[2].json_schema.is_some(), "the last step only answers");

    let mut budget = fixture();
    budget.config.token_budget = 200; // each scripted step costs 110 tokens
    let engine = ScriptedEngine::new((0..10).map(|i| call("ls", json!({"path": format!("d{i}")}))).collect());
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx = TurnContext {
        engine: &engine,
        workspace: &budget.workspace,
        skills: &budget.skills,
        sink: &budget.sink,
        config: &budget.config,
        cancel: cancel_rx,
    };
    assert_eq!(run_turn(&mut ctx, &mut Vec::new(), "loop").await.stop, StopReason::TokenBudget);
    assert_eq!(engine.requests.lock().unwrap().len(), 2);
}

/// Runs one turn of `script` on a fresh fixture with `files` in the workspace; returns
/// the outcome, the events and the requests the engine saw.
async fn check_turn(
    files: &[(&str, &str)],
    request: &str,
    script: Vec<Choice>,
) -> (agent::agent_loop::TurnOutcome, Vec<Event>, Vec<GenerationRequest>) {
    check_turn_in(fixture(), files, request, script).await
}

/// [`check_turn`] in an empty workspace with at most `max_steps` steps.
async fn check_turn_with(
    max_steps: usize,
    request: &str,
    script: Vec<Choice>,
) -> (agent::agent_loop::TurnOutcome, Vec<Event>, Vec<GenerationRequest>) {
    let mut f = fixture();
    f.config.max_steps = max_steps;
    check_turn_in(f, &[], request, script).await
}

async fn check_turn_in(
    f: Fixture,
    files: &[(&str, &str)],
    request: &str,
    script: Vec<Choice>,
) -> (agent::agent_loop::TurnOutcome, Vec<Event>, Vec<GenerationRequest>) {
    for (path, content) in files {
        f.workspace.write(path, content).unwrap();
    }
    let engine = ScriptedEngine::new(script);
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx =
        TurnContext { engine: &engine, workspace: &f.workspace, skills: &f.skills, sink: &f.sink, config: &f.config, cancel: cancel_rx };
    let outcome = tokio::time::timeout(Duration::from_secs(10), run_turn(&mut ctx, &mut Vec::new(), request)).await.expect("the turn ends");
    let requests = engine.requests.lock().unwrap().clone();
    (outcome, f.sink.events(), requests)
}

fn cut_off(text: &str) -> Choice {
    Choice { text: text.into(), finish_reason: Some(agent::engine::FinishReason::Length), ..Default::default() }
}

#[tokio::test]
async fn a_tool_call_cut_off_at_the_token_limit_is_not_a_final_answer() {
    let truncated = format!(r#"{{"tool": "write", "arguments": {{"path": "note.txt", "content": "{}"#, "This is a note. ".repeat(40));
    let (outcome, events, requests) = check_turn(&[], "Write a note", vec![cut_off(&truncated), answer("Done.")]).await;
    assert_eq!(outcome.stop, StopReason::FinalAnswer);
    assert_eq!(outcome.answer.as_deref(), Some("Done."));
    assert!(events.iter().any(|e| matches!(e, Event::StepRejected { text, .. } if text == &truncated)));
    assert!(!events.iter().any(|e| matches!(e, Event::FinalAnswer { text } if text == &truncated)));
    // The model was told, and the broken reply is not in its history.
    let Prompt::Messages(second) = &requests[1].prompt else { panic!() };
    assert!(second.last().unwrap().content.contains("cut off"));
    assert!(!second.iter().any(|m| m.content.contains("This is a note.")));

    // Cut off twice in a row, the turn stops and says why.
    let (outcome, events, _) = check_turn(&[], "Write a note", vec![cut_off(&truncated), cut_off(&truncated), answer("late")]).await;
    assert_eq!(outcome.stop, StopReason::CutOff);
    assert_eq!(outcome.answer, None);
    assert!(!events.iter().any(|e| e.kind() == "final_answer"));
}

#[tokio::test]
async fn a_repeated_call_is_answered_from_memory_and_a_loop_ends_in_an_answer() {
    let wc = || call("exec", json!({"command": "wc -l people.csv"}));
    let read = || call("read", json!({"path": "people.csv"}));
    // The second identical read is not run again: the model is given the earlier result
    // and a grammar that only admits an answer.
    let (outcome, events, requests) =
        check_turn(&[("people.csv", "name\nann\nbob\n")], "How many people?", vec![read(), read(), answer(r#"{"answer": "2"}"#)]).await;
    assert_eq!(outcome.stop, StopReason::FinalAnswer);
    assert_eq!(outcome.answer.as_deref(), Some("2"));
    assert!(requests[2].tools.is_empty(), "the step after a repeat may only answer");
    assert!(requests[2].json_schema.as_ref().is_some_and(|s| s["required"][0] == "answer"));
    let results: Vec<&Event> = events.iter().filter(|e| e.kind() == "tool_result").collect();
    assert!(
        matches!(results[1], Event::ToolResult { ok: true, excerpt, .. } if excerpt.starts_with(agent::agent_loop::REPEATED_RESULT) && excerpt.contains("bob"))
    );

    // A failed call repeated: the next step may not call that tool at all.
    let missing = || call("ls", json!({"path": "nowhere"}));
    let (_, _, requests) = check_turn(&[], "List nowhere", vec![missing(), missing(), answer("It does not exist.")]).await;
    let offered: Vec<&str> = requests[2].tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["read", "write", "edit", "exec"]);
    let offered: Vec<&str> = requests[1].tools.iter().map(|t| t.name.as_str()).collect();
    assert!(offered.contains(&"ls"), "only after the repeat");

    // A second repeat is not run either, and the next step may only answer.
    let (outcome, events, requests) =
        check_turn(&[("people.csv", "name\nann\n")], "Count", vec![missing(), missing(), wc(), wc(), answer(r#"{"answer": "1"}"#)]).await;
    assert_eq!(outcome.answer.as_deref(), Some("1"));
    assert!(requests[4].tools.is_empty() && requests[4].json_schema.is_some());
    let results: Vec<&Event> = events.iter().filter(|e| e.kind() == "tool_result").collect();
    assert!(matches!(results[3], Event::ToolResult { ok: false, excerpt, .. } if excerpt.starts_with("error: not run")));

    // Eight identical commands in a row no longer run until `max_steps`: a backend that
    // keeps calling where only an answer is allowed is stopped.
    let (outcome, events, requests) = check_turn(&[("people.csv", "a\n")], "Count", (0..8).map(|_| wc()).collect()).await;
    assert_eq!(outcome.stop, StopReason::RepeatedCalls);
    assert!(requests.len() <= 3, "{} steps", requests.len());
    assert!(matches!(events.last(), Some(Event::Stop { reason: StopReason::RepeatedCalls, .. })));
    let calls = events.iter().filter(|e| e.kind() == "tool_call").count();
    assert_eq!(calls, events.iter().filter(|e| e.kind() == "tool_result").count(), "every call has its result");
}

#[tokio::test]
async fn a_seeded_turn_samples_reproducibly_and_an_unseeded_one_greedily() {
    let (_, _, requests) = check_turn(&[], "Hi", vec![answer("hello")]).await;
    assert_eq!((requests[0].seed, requests[0].temperature), (None, None), "greedy");
    let mut f = fixture();
    f.config.seed = Some(40);
    let (_, _, requests) = check_turn_in(f, &[], "List d", vec![call("ls", json!({"path": "."})), answer("nothing")]).await;
    assert_eq!((requests[0].seed, requests[0].temperature), (Some(40), Some(agent::agent_loop::SEEDED_TEMPERATURE)));
    assert_eq!(requests[1].seed, Some(41), "each step its own seed");
}

#[tokio::test]
async fn files_a_turn_touches_are_recorded_for_replays() {
    let (_, events, _) = check_turn(
        &[("data/a.csv", "x,y\n1,2\n"), ("data/b.txt", "hello\n"), ("big.txt", &"z".repeat(20_000))],
        "Look around",
        vec![
            call("ls", json!({"path": "data"})),
            call("read", json!({"path": "big.txt"})),
            call("write", json!({"path": "out.md", "content": "# done"})),
            answer("ok"),
        ],
    )
    .await;
    let inputs: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::InputFile { path, content } => Some((path.as_str(), content.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(inputs, vec![("data/a.csv", "x,y\n1,2\n"), ("data/b.txt", "hello\n")], "listed files, not the large one");
    assert!(events.iter().any(|e| matches!(e, Event::OutputFile { path, content } if path == "out.md" && content == "# done")));
}

#[tokio::test]
async fn only_relevant_skills_have_their_instructions_inlined() {
    let (_, events, requests) = check_turn(&[], "What is the weather?", vec![answer("I cannot tell.")]).await;
    assert!(!events.iter().any(|e| e.kind() == "skill_read"));
    let Prompt::Messages(messages) = &requests[0].prompt else { panic!() };
    assert!(!messages[0].content.contains("Follow its steps"));
    assert!(messages[0].content.contains("<name>notes</name>"), "the catalog is still shown");
}

#[tokio::test]
async fn an_inlined_skill_names_the_requests_file_and_word() {
    let mut f = fixture();
    f.skills.skills.push((
        CatalogEntry { slug: "log-levels".into(), version: "1.0.0".into(), description: "Count log lines by level.".into() },
        "---\nname: log-levels\ndescription: Count log lines by level.\n---\n1. Run `grep -c WORD FILE` with exec.\n".into(),
    ));
    let request = "Count the ERROR lines in logs/app.log.";
    let (_, events, requests) = check_turn_in(f, &[("logs/app.log", "ERROR x\n")], request, vec![answer("1")]).await;
    assert!(events.iter().any(|e| matches!(e, Event::SkillRead { slug, .. } if slug == "log-levels")));
    let Prompt::Messages(messages) = &requests[0].prompt else { panic!() };
    assert!(messages[0].content.contains("Run `grep -c ERROR logs/app.log` with exec."), "{}", messages[0].content);
}

#[tokio::test]
async fn a_running_turn_can_be_cancelled() {
    let f = fixture();
    let engine = ScriptedEngine::new(vec![]); // the model never answers
    let (cancel, cancel_rx) = watch::channel(false);
    let mut ctx =
        TurnContext { engine: &engine, workspace: &f.workspace, skills: &f.skills, sink: &f.sink, config: &f.config, cancel: cancel_rx };
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.send(true).unwrap();
    });
    let outcome = tokio::time::timeout(Duration::from_secs(5), run_turn(&mut ctx, &mut Vec::new(), "hi")).await.unwrap();
    canceller.await.unwrap();
    assert_eq!(outcome.stop, StopReason::Cancelled);
    assert_eq!(kinds(&f.sink.events()), vec!["user_message", "stop"]);
}

#[tokio::test]
async fn compaction_summarizes_old_turns_and_keeps_calls_with_their_results() {
    let mut f = fixture();
    f.config.context_window = 600;
    // A long history of tool calls and results.
    let mut history = Vec::new();
    for i in 0..6 {
        history.push(ChatMessage::user(format!("step {i}: {}", "x".repeat(200))));
        history.push(ChatMessage {
            role: Some(Role::Assistant),
            tool_calls: vec![ToolCall { id: format!("c{i}"), name: "ls".into(), arguments: "{}".into() }],
            ..Default::default()
        });
        history.push(ChatMessage {
            role: Some(Role::Tool),
            content: "a.txt".into(),
            tool_call_id: Some(format!("c{i}")),
            ..Default::default()
        });
    }
    let engine = ScriptedEngine::new(vec![answer("Listed the workspace six times."), answer("Done.")]);
    let (_cancel, cancel_rx) = watch::channel(false);
    let mut ctx =
        TurnContext { engine: &engine, workspace: &f.workspace, skills: &f.skills, sink: &f.sink, config: &f.config, cancel: cancel_rx };
    let outcome = run_turn(&mut ctx, &mut history, "and now?").await;
    assert_eq!(outcome.stop, StopReason::FinalAnswer);

    let events = f.sink.events();
    let Some(Event::Compaction { replaced_messages, summary }) = events.iter().find(|e| e.kind() == "compaction") else {
        panic!("no compaction in {:?}", kinds(&events))
    };
    assert_eq!(summary, "Listed the workspace six times.");
    assert!(*replaced_messages > 10);
    assert!(history[0].content.starts_with(agent::agent_loop::SUMMARY_PHRASE));
    // Every kept tool result still has its call, and every kept call its result.
    for (i, message) in history.iter().enumerate() {
        if message.role() == Role::Tool {
            let id = message.tool_call_id.as_deref().unwrap();
            assert!(history[..i].iter().any(|m| m.tool_calls.iter().any(|c| c.id == id)), "result {id} lost its call");
        }
        for c in &message.tool_calls {
            assert!(history[i..].iter().any(|m| m.tool_call_id.as_deref() == Some(c.id.as_str())), "call {} lost its result", c.id);
        }
    }
}

#[test]
fn the_compaction_split_never_starts_on_a_tool_result() {
    let tool = |id: &str| ChatMessage { role: Some(Role::Tool), tool_call_id: Some(id.into()), ..Default::default() };
    let call = |id: &str| ChatMessage {
        role: Some(Role::Assistant),
        tool_calls: vec![ToolCall { id: id.into(), name: "ls".into(), arguments: "{}".into() }],
        ..Default::default()
    };
    // A call with two results straddles the default split point.
    let history = vec![
        ChatMessage::user("a"),
        ChatMessage::user("b"),
        call("x"),
        tool("x"),
        tool("x"),
        ChatMessage::user("c"),
        ChatMessage::user("d"),
    ];
    let split = compaction_split(&history);
    assert_eq!(split, 2);
    assert_eq!(history[split].role(), Role::Assistant);
}
