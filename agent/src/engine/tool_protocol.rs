//! Tool calling for models whose chat template knows no tools.
//!
//! Small local models (SmolLM2-135M among them) were never trained on a tool-call format.
//! Instead of hoping they emit one, the embedded backend constrains each reply to a JSON
//! schema that admits exactly one tool call or one final answer; the grammar makes even a
//! 135M model emit well-formed, schema-valid actions. This module builds that schema and
//! the short prompt that explains it, renders earlier tool calls and results in the same
//! shape, and parses the constrained reply back into text or a [`ToolCall`].

use serde_json::{json, Value};

use super::{ChatMessage, Role, ToolCall, ToolChoice, ToolSpec};

/// The key of the final-answer object.
const ANSWER_KEY: &str = "answer";
/// The keys of a tool-call object.
const TOOL_KEY: &str = "tool";
const ARGUMENTS_KEY: &str = "arguments";

/// The JSON schema a reply must match: one branch per allowed tool, plus the final answer
/// unless the caller requires a tool call.
pub fn reply_schema(tools: &[ToolSpec], choice: &ToolChoice) -> Value {
    let mut branches: Vec<Value> = tools
        .iter()
        .filter(|tool| match choice {
            ToolChoice::Named(name) => &tool.name == name,
            _ => true,
        })
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    TOOL_KEY: { "const": tool.name },
                    ARGUMENTS_KEY: normalized_parameters(&tool.parameters),
                },
                "required": [TOOL_KEY, ARGUMENTS_KEY],
                "additionalProperties": false,
            })
        })
        .collect();
    if matches!(choice, ToolChoice::Auto) {
        branches.push(json!({
            "type": "object",
            "properties": { ANSWER_KEY: { "type": "string" } },
            "required": [ANSWER_KEY],
            "additionalProperties": false,
        }));
    }
    if branches.len() == 1 {
        branches.pop().unwrap_or(Value::Null)
    } else {
        json!({ "anyOf": branches })
    }
}

/// OpenAI clients send `{}` or `{"type":"object"}` for tools without arguments; the grammar
/// needs an object either way. Objects that list their properties but leave
/// `additionalProperties` open are closed: a small model otherwise invents extra arguments
/// until it runs out of tokens, and no tool reads arguments it did not declare.
fn normalized_parameters(parameters: &Value) -> Value {
    match parameters {
        Value::Object(map) if !map.is_empty() => {
            let mut parameters = parameters.clone();
            close_objects(&mut parameters);
            parameters
        }
        _ => json!({ "type": "object", "additionalProperties": false }),
    }
}

fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for value in map.values_mut() {
                close_objects(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The system-prompt section that tells the model which tools exist and how to reply.
/// Kept short: prefill is the slowest part of a turn on a CPU.
pub fn tools_prompt(tools: &[ToolSpec], choice: &ToolChoice) -> String {
    let mut prompt = String::from("Tools:\n");
    for tool in tools {
        let parameters = tool
            .parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        prompt.push_str(&format!("- {}({}): {}\n", tool.name, parameters, tool.description.trim()));
    }
    prompt.push_str("To call a tool reply {\"tool\": NAME, \"arguments\": {...}}.");
    if matches!(choice, ToolChoice::Auto) {
        prompt.push_str(" To answer reply {\"answer\": TEXT}.");
    }
    prompt
}

/// Rewrites a conversation so that a template without tool support can render it: the
/// tools section joins the system prompt, assistant tool calls become the JSON the model
/// would have written, and tool results become user messages that name the tool.
pub fn render_conversation(messages: &[ChatMessage], tools: &[ToolSpec], choice: &ToolChoice) -> Vec<ChatMessage> {
    let section = tools_prompt(tools, choice);
    let mut rendered = Vec::with_capacity(messages.len() + 1);
    let mut system_seen = false;
    for message in messages {
        match message.role() {
            Role::System if !system_seen => {
                system_seen = true;
                rendered.push(ChatMessage::system(format!("{}\n\n{section}", message.content)));
            }
            Role::Assistant if !message.tool_calls.is_empty() => {
                let calls: Vec<String> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
                        json!({ TOOL_KEY: call.name, ARGUMENTS_KEY: arguments }).to_string()
                    })
                    .collect();
                rendered.push(ChatMessage::assistant(calls.join("\n")));
            }
            Role::Tool => {
                let name = message.tool_call_id.as_deref().and_then(|id| find_call_name(messages, id)).unwrap_or("tool");
                rendered.push(ChatMessage::user(format!("Result of {name}:\n{}", message.content)));
            }
            _ => rendered.push(message.clone()),
        }
    }
    if !system_seen {
        rendered.insert(0, ChatMessage::system(section));
    }
    rendered
}

fn find_call_name<'a>(messages: &'a [ChatMessage], call_id: &str) -> Option<&'a str> {
    messages.iter().flat_map(|m| m.tool_calls.iter()).find(|call| call.id == call_id).map(|call| call.name.as_str())
}

/// What a constrained reply meant.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedReply {
    Answer(String),
    Call(ToolCall),
    /// The reply did not parse (it was cut by `max_tokens`); the raw text is kept.
    Unparsed(String),
}

/// The answer so far of a reply being written under [`reply_schema`], decoded from its
/// JSON string: `Some` once the reply is recognizably an answer (`{"answer": "`), up to
/// the last complete character (an escape still arriving is left for the next call).
/// `None` for a tool call or anything else. The complete reply is still parsed by
/// [`parse_reply`]; this only lets a watcher see the answer as it is generated.
pub fn partial_answer(raw: &str) -> Option<String> {
    let rest = raw.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix(&format!("\"{ANSWER_KEY}\""))?.trim_start();
    let body = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let mut answer = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let decoded = match chars.next() {
                    None => break,
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let Ok(unit) = u16::from_str_radix(&hex, 16) else { break };
                        if hex.len() < 4 {
                            break;
                        }
                        if (0xD800..0xDC00).contains(&unit) {
                            // A surrogate pair: the low half must follow as `\uXXXX`.
                            let low: String = chars.by_ref().take(6).collect();
                            let Some(low) =
                                low.strip_prefix("\\u").and_then(|h| u16::from_str_radix(h, 16).ok()).filter(|_| low.len() == 6)
                            else {
                                break;
                            };
                            match char::decode_utf16([unit, low]).next() {
                                Some(Ok(c)) => c,
                                _ => break,
                            }
                        } else {
                            match char::from_u32(unit as u32) {
                                Some(c) => c,
                                None => break,
                            }
                        }
                    }
                    Some(other) => other,
                };
                answer.push(decoded);
            }
            c => answer.push(c),
        }
    }
    Some(answer)
}

/// Parses a reply written under [`reply_schema`].
pub fn parse_reply(text: &str) -> ParsedReply {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text.trim()) else {
        return ParsedReply::Unparsed(text.to_string());
    };
    if let Some(name) = object.get(TOOL_KEY).and_then(Value::as_str) {
        let arguments = object.get(ARGUMENTS_KEY).cloned().unwrap_or_else(|| json!({}));
        return ParsedReply::Call(ToolCall {
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            name: name.to_string(),
            arguments: arguments.to_string(),
        });
    }
    match object.get(ANSWER_KEY).and_then(Value::as_str) {
        Some(answer) => ParsedReply::Answer(answer.to_string()),
        None => ParsedReply::Unparsed(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_tool() -> ToolSpec {
        ToolSpec {
            name: "read".into(),
            description: "Read a file.".into(),
            parameters: json!({"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}),
        }
    }

    #[test]
    fn an_answer_is_decoded_as_it_arrives_and_a_tool_call_is_not() {
        let reply = r#"{ "answer": "Line one\nsays \"hi\" \u00e9\ud83d\ude00 done" }"#;
        let mut shown = String::new();
        for end in (0..=reply.len()).filter(|&i| reply.is_char_boundary(i)) {
            if let Some(partial) = partial_answer(&reply[..end]) {
                assert!(partial.starts_with(&shown), "{partial:?} does not extend {shown:?}");
                shown = partial;
            }
        }
        let ParsedReply::Answer(answer) = parse_reply(reply) else { panic!("an answer") };
        assert_eq!(shown, answer);
        assert_eq!(partial_answer(r#"{"answer": "half \u00"#).as_deref(), Some("half "));
        assert_eq!(partial_answer(r#"{"answer": "cut \"#).as_deref(), Some("cut "));
        assert_eq!(partial_answer(r#"{"tool": "read", "arguments": {"path": "a"}}"#), None);
        assert_eq!(partial_answer(r#"{"ans"#), None);
    }

    #[test]
    fn auto_schema_offers_each_tool_and_an_answer() {
        let schema = reply_schema(&[read_tool()], &ToolChoice::Auto);
        let branches = schema["anyOf"].as_array().expect("anyOf");
        assert_eq!(branches.len(), 2);
        assert_eq!(branches[0]["properties"]["tool"]["const"], "read");
        assert_eq!(branches[1]["required"][0], "answer");
    }

    #[test]
    fn open_argument_objects_are_closed() {
        let schema = reply_schema(&[read_tool()], &ToolChoice::Required);
        assert_eq!(schema["properties"]["arguments"]["additionalProperties"], false);
    }

    #[test]
    fn required_schema_has_no_answer_branch() {
        let schema = reply_schema(&[read_tool()], &ToolChoice::Required);
        assert_eq!(schema["properties"]["tool"]["const"], "read");
        assert!(schema.get("anyOf").is_none());
    }

    #[test]
    fn replies_parse_into_calls_and_answers() {
        match parse_reply(r#"{"tool":"read","arguments":{"path":"a.txt"}}"#) {
            ParsedReply::Call(call) => {
                assert_eq!(call.name, "read");
                assert_eq!(serde_json::from_str::<Value>(&call.arguments).unwrap(), json!({"path":"a.txt"}));
                assert!(call.id.starts_with("call_"));
            }
            other => panic!("expected a call, got {other:?}"),
        }
        assert_eq!(parse_reply(r#"{"answer":"hi"}"#), ParsedReply::Answer("hi".into()));
        assert_eq!(parse_reply(r#"{"answer":"h"#), ParsedReply::Unparsed(r#"{"answer":"h"#.into()));
    }

    #[test]
    fn conversation_renders_calls_and_results_for_plain_templates() {
        let call = ToolCall { id: "c1".into(), name: "read".into(), arguments: r#"{"path":"a"}"#.into() };
        let messages = vec![
            ChatMessage::user("show a"),
            ChatMessage { role: Some(Role::Assistant), tool_calls: vec![call], ..Default::default() },
            ChatMessage { role: Some(Role::Tool), content: "hello".into(), tool_call_id: Some("c1".into()), ..Default::default() },
        ];
        let rendered = render_conversation(&messages, &[read_tool()], &ToolChoice::Auto);
        assert_eq!(rendered[0].role(), Role::System);
        assert!(rendered[0].content.contains("- read(path): Read a file."));
        let call_json: Value = serde_json::from_str(&rendered[2].content).unwrap();
        assert_eq!(call_json, json!({"tool": "read", "arguments": {"path": "a"}}));
        assert_eq!(rendered[3].role(), Role::User);
        assert_eq!(rendered[3].content, "Result of read:\nhello");
    }
}
