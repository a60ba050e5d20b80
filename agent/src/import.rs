//! Importing transcripts recorded elsewhere into our event schema, so that the evolver
//! learns from them like from sessions run here.
//!
//! - OpenClaw session transcripts (JSONL, version 3): a `session` header line, then
//!   entries; `message` entries carry user text, assistant text and `toolCall` blocks, and
//!   tool results (`toolCallId`, `toolName`, `content`, `isError`).
//! - SkillClaw session records (one JSON object with `turns`).
//!
//! A file either imports whole or not at all: the first problem is reported with its line.

use serde_json::Value;

use crate::engine::ToolCall;
use crate::trajectory::Event;

/// One session read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSession {
    /// The session's id in the system it came from.
    pub external_id: String,
    pub title: String,
    /// `openclaw` or `skillclaw`.
    pub source: &'static str,
    pub events: Vec<Event>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ImportError {
    pub line: usize,
    pub message: String,
}

fn fail<T>(line: usize, message: impl Into<String>) -> Result<T, ImportError> {
    Err(ImportError { line, message: message.into() })
}

/// Reads either format, told apart by their first line.
pub fn parse(text: &str) -> Result<ImportedSession, ImportError> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    match serde_json::from_str::<Value>(first) {
        Ok(header) if header["type"] == "session" => parse_openclaw(text),
        _ => parse_skillclaw(text),
    }
}

/// Text of an OpenClaw content field: a string, or the `text` blocks of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(500).collect()
}

pub fn parse_openclaw(text: &str) -> Result<ImportedSession, ImportError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((index, header)) = lines.next() else { return fail(1, "the file is empty") };
    let header: Value = serde_json::from_str(header).or_else(|e| fail(index + 1, format!("not JSON: {e}")))?;
    if header["type"] != "session" {
        return fail(index + 1, "the first line must be the session header (\"type\": \"session\")");
    }
    if header["version"] != 3 {
        return fail(index + 1, format!("session version {} is not supported; version 3 is", header["version"]));
    }
    let Some(id) = header["id"].as_str() else { return fail(index + 1, "the session header has no `id`") };
    let mut events = Vec::new();
    let mut title = None;
    for (index, line) in lines {
        let line_number = index + 1;
        let entry: Value = serde_json::from_str(line).or_else(|e| fail(line_number, format!("not JSON: {e}")))?;
        let Some(kind) = entry["type"].as_str() else { return fail(line_number, "the entry has no `type`") };
        if entry["id"].as_str().is_none() {
            return fail(line_number, "the entry has no `id`");
        }
        if kind != "message" {
            continue; // model changes, settings and custom entries carry no trajectory
        }
        let message = &entry["message"];
        match message["role"].as_str() {
            Some("user") => {
                let text = text_of(&message["content"]);
                title.get_or_insert_with(|| text.chars().take(80).collect::<String>());
                events.push(Event::UserMessage { text });
            }
            Some("assistant") => {
                let blocks = message["content"].as_array().cloned().unwrap_or_default();
                let mut calls = Vec::new();
                for block in blocks.iter().filter(|b| b["type"] == "toolCall") {
                    let (Some(call_id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) else {
                        return fail(line_number, "a toolCall block needs `id` and `name`");
                    };
                    calls.push(ToolCall { id: call_id.into(), name: name.into(), arguments: block["arguments"].to_string() });
                }
                let text = text_of(&message["content"]);
                let usage = &message["usage"];
                if let Some(input) = usage["input"].as_u64() {
                    events.push(Event::ModelCall { prompt_tokens: input as usize, latency_ms: 0 });
                }
                let completion_tokens = usage["output"].as_u64().unwrap_or(0) as usize;
                events.push(Event::ModelOutput { text: text.clone(), tool_calls: calls.clone(), completion_tokens });
                for call in &calls {
                    events.push(Event::ToolCall { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() });
                }
                if calls.is_empty() {
                    events.push(Event::FinalAnswer { text });
                }
            }
            Some("toolResult") => {
                let Some(call_id) = message["toolCallId"].as_str() else {
                    return fail(line_number, "a tool result needs `toolCallId`");
                };
                events.push(Event::ToolResult {
                    call_id: call_id.into(),
                    name: message["toolName"].as_str().unwrap_or_default().into(),
                    ok: !message["isError"].as_bool().unwrap_or(false),
                    exit_code: None,
                    excerpt: excerpt(&text_of(&message["content"])),
                });
            }
            other => return fail(line_number, format!("unknown message role {other:?}")),
        }
    }
    Ok(ImportedSession {
        external_id: id.to_string(),
        title: title.unwrap_or_else(|| "imported session".into()),
        source: "openclaw",
        events,
    })
}

pub fn parse_skillclaw(text: &str) -> Result<ImportedSession, ImportError> {
    let record: Value = serde_json::from_str(text).or_else(|e| fail(e.line().max(1), format!("not JSON: {e}")))?;
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or(1);
    let Some(id) = record["session_id"].as_str() else { return fail(1, "a SkillClaw session needs `session_id`") };
    let Some(turns) = record["turns"].as_array() else { return fail(line_of("\"turns\""), "`turns` must be an array") };
    let mut events = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let Some(prompt) = turn["prompt_text"].as_str() else {
            return fail(line_of("\"turn_num\"").max(1), format!("turn {} has no `prompt_text`", i + 1));
        };
        events.push(Event::UserMessage { text: prompt.into() });
        for skill in turn["read_skills"].as_array().into_iter().flatten() {
            if let Some(slug) = skill["skill_name"].as_str() {
                events.push(Event::SkillRead { slug: slug.into(), version: "unknown".into() });
            }
        }
        for (j, result) in turn["tool_results"].as_array().into_iter().flatten().enumerate() {
            let name = result["tool_name"].as_str().unwrap_or_default().to_string();
            let call_id = format!("{id}-t{}-{j}", i + 1);
            let arguments = match &result["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".into(),
                other => other.to_string(),
            };
            events.push(Event::ToolCall { call_id: call_id.clone(), name: name.clone(), arguments });
            events.push(Event::ToolResult {
                call_id,
                name,
                ok: !result["has_error"].as_bool().unwrap_or(false),
                exit_code: None,
                excerpt: excerpt(&text_of(&result["content"])),
            });
        }
        let response = turn["response_text"].as_str().unwrap_or_default().to_string();
        events.push(Event::ModelOutput { text: response.clone(), tool_calls: Vec::new(), completion_tokens: 0 });
        events.push(Event::FinalAnswer { text: response });
    }
    let title = turns.first().and_then(|t| t["prompt_text"].as_str()).unwrap_or("imported session").chars().take(80).collect();
    Ok(ImportedSession { external_id: id.to_string(), title, source: "skillclaw", events })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENCLAW: &str = include_str!("../../tests/fixtures/openclaw-session.jsonl");
    const SKILLCLAW: &str = include_str!("../../tests/fixtures/skillclaw-session.json");

    fn kinds(session: &ImportedSession) -> Vec<&'static str> {
        session.events.iter().map(Event::kind).collect()
    }

    #[test]
    fn an_openclaw_transcript_becomes_our_events() {
        let session = parse(OPENCLAW).unwrap();
        assert_eq!(session.source, "openclaw");
        assert_eq!(session.external_id, "oc-7f3a");
        assert_eq!(session.title, "Count the lines of data.csv");
        assert_eq!(
            kinds(&session),
            ["user_message", "model_call", "model_output", "tool_call", "tool_result", "model_call", "model_output", "final_answer"]
        );
        assert!(
            matches!(&session.events[3], Event::ToolCall { name, arguments, .. } if name == "exec" && arguments == r#"{"command":"wc -l data.csv"}"#)
        );
        assert!(matches!(&session.events[4], Event::ToolResult { ok: true, excerpt, .. } if excerpt == "42 data.csv"));
        assert!(matches!(&session.events[1], Event::ModelCall { prompt_tokens: 412, .. }));
    }

    #[test]
    fn a_skillclaw_record_becomes_our_events() {
        let session = parse(SKILLCLAW).unwrap();
        assert_eq!(session.source, "skillclaw");
        assert_eq!(session.external_id, "sc-1001");
        assert_eq!(
            kinds(&session),
            [
                "user_message",
                "skill_read",
                "tool_call",
                "tool_result",
                "model_output",
                "final_answer",
                "user_message",
                "tool_call",
                "tool_result",
                "model_output",
                "final_answer"
            ]
        );
        assert!(matches!(&session.events[1], Event::SkillRead { slug, .. } if slug == "summarize-file"));
        assert!(matches!(&session.events[8], Event::ToolResult { ok: false, .. }));
    }

    #[test]
    fn malformed_files_name_the_line_and_import_nothing() {
        // Cut in the middle of the fourth line.
        let cut: String = OPENCLAW.lines().take(4).collect::<Vec<_>>().join("\n");
        let cut = &cut[..cut.len() - 20];
        let error = parse(cut).unwrap_err();
        assert_eq!(error.line, 4, "{error}");
        assert!(error.to_string().starts_with("line 4: not JSON"));
        let wrong_version = OPENCLAW.replacen("\"version\":3", "\"version\":2", 1);
        assert_eq!(parse(&wrong_version).unwrap_err().line, 1);
        let truncated_json = &SKILLCLAW[..SKILLCLAW.len() / 2];
        assert!(parse(truncated_json).unwrap_err().message.starts_with("not JSON"));
        assert_eq!(parse("").unwrap_err().message, "not JSON: EOF while parsing a value at line 1 column 0");
    }
}
