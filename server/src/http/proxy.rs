//! Proxy mode: with a user's token, `/v1/chat/completions` is an agent's model provider.
//! The skill catalog is injected into the system prompt, and each exchange is recorded as
//! that user's trajectory, so that external agents (OpenClaw, any OpenAI client) feed the
//! evolver like agents run here.
//!
//! Sessions follow conversations. A request belongs to the session named by its
//! `X-Session-Id` header when it has one (explicit grouping wins). Without one, it extends
//! an earlier proxy session of the same user only when it continues that session's
//! conversation: when the messages of an earlier request plus the reply recorded for it are
//! a prefix of the new request's messages. Otherwise a new session starts, so unrelated
//! calls never share a session and concurrent conversations never interleave. Messages are
//! compared normalized (role, trimmed text, tool calls by name and arguments, without call
//! ids, which clients rewrite), through SHA-256 fingerprints of each conversation state.
//!
//! Each state is recorded once. A request equal to an earlier one is a retry: its user
//! message and tool results are not recorded again, and of a request and its retries only
//! the first reply that completes is recorded. A request that fails (the engine fails, the
//! request is refused, the client leaves before the reply is complete) records no answer.
//!
//! Tool results link to the tool calls recorded for the reply they answer: by exact call
//! id, else by the id with everything but letters and digits removed and lower-cased
//! (OpenClaw sends `call_x` back as `callx`), else by position (the n-th tool message after
//! an assistant message with calls answers its n-th call).
//!
//! The catalog goes only where it serves the request: `<available_skills>` is injected
//! only when the request declares tools that the model may call (an agent that can act on
//! a skill; a plain chat request gets none), and the client did not turn it off with the
//! header `X-Skillhive-Catalog: off` (`false` and `0` also turn it off; `on`, `true` and
//! `1` ask for the default; any other value is refused with 400). When the catalog does
//! not fit its budget, the skills least relevant to the last user message are dropped.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use agent::engine::{ChatMessage, Role, ToolCall};
use agent::skills::catalog;
use agent::trajectory::Event;

use crate::http::error::ApiError;
use crate::http::AppState;
use crate::storage::{ConversationState, Store};

/// Longest client session id accepted.
const MAX_SESSION_ID_CHARS: usize = 128;
/// Characters of a tool result kept in its event.
const EXCERPT_CHARS: usize = 500;

/// Whether the client lets the catalog be injected (header `X-Skillhive-Catalog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogMode {
    /// The catalog is injected when the request declares tools the model may call.
    Auto,
    /// The client turned the catalog off.
    Off,
}

impl CatalogMode {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get("x-skillhive-catalog") else { return Ok(CatalogMode::Auto) };
        let value = value.to_str().map(|v| v.trim().to_ascii_lowercase()).unwrap_or_default();
        match value.as_str() {
            "off" | "false" | "0" => Ok(CatalogMode::Off),
            "on" | "true" | "1" => Ok(CatalogMode::Auto),
            _ => Err(ApiError::bad_request(
                "X-Skillhive-Catalog must be `off` (or `false`, `0`) to leave the skill catalog out, or `on` (`true`, `1`)",
                "invalid_value",
                None,
            )),
        }
    }
}

/// The client's own session id, when it sent one.
fn client_session_id(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("x-session-id") else { return Ok(None) };
    let id = value.to_str().ok().map(str::trim).filter(|v| !v.is_empty() && v.len() <= MAX_SESSION_ID_CHARS);
    id.map(Some).ok_or_else(|| {
        ApiError::bad_request(format!("X-Session-Id must be 1 to {MAX_SESSION_ID_CHARS} visible characters"), "invalid_value", None)
    })
}

// ---------------------------------------------------------------------------------------
// Conversation fingerprints
// ---------------------------------------------------------------------------------------

/// One message as conversations are compared: what survives a client sending the
/// conversation back. Call ids are left out because clients rewrite them, and whitespace
/// around text because clients trim it.
#[derive(Serialize)]
struct Normalized<'a> {
    role: &'static str,
    content: &'a str,
    tool_calls: Vec<(&'a str, String)>,
}

fn normalize(message: &ChatMessage) -> Normalized<'_> {
    Normalized {
        role: message.role().as_str(),
        content: message.content.trim(),
        tool_calls: message.tool_calls.iter().map(|c| (c.name.trim(), canonical_arguments(&c.arguments))).collect(),
    }
}

/// Arguments that parse as JSON in one canonical form (keys sorted, no spaces), since a
/// client may send back the same arguments serialized differently; others trimmed as-is.
fn canonical_arguments(arguments: &str) -> String {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(value) => sorted(value).to_string(),
        Err(_) => arguments.trim().to_string(),
    }
}

/// The fingerprint of a conversation state extended by one message. Chained, so that the
/// fingerprints of all prefixes of a conversation cost one pass.
fn extend_fingerprint(previous: &str, message: &ChatMessage) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(b"\n");
    // Serializing plain strings and tuples cannot fail.
    hasher.update(serde_json::to_vec(&normalize(message)).unwrap_or_default());
    hex::encode(hasher.finalize())
}

/// The fingerprints of every prefix of `messages`: element `k` covers the first `k`.
fn prefix_fingerprints(messages: &[ChatMessage]) -> Vec<String> {
    let mut prints = Vec::with_capacity(messages.len() + 1);
    prints.push(String::new());
    for message in messages {
        let next = extend_fingerprint(prints.last().map(String::as_str).unwrap_or_default(), message);
        prints.push(next);
    }
    prints
}

/// Where the messages after the model's last reply begin: what a request that continues
/// no recorded conversation adds to it.
fn since_last_reply(messages: &[ChatMessage]) -> usize {
    messages.iter().rposition(|m| m.role() == Role::Assistant).map(|i| i + 1).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Tool-result linking
// ---------------------------------------------------------------------------------------

/// A call id with everything but letters and digits removed, lower-cased: `call_x` and
/// `callx` are the same call.
fn loose_id(id: &str) -> String {
    id.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The call id and tool name that the tool message `messages[index]` answers, linked to
/// `recorded`, the calls recorded for the reply it answers: by exact id, else by loose id,
/// else by position. Without a recorded call to link to, the request's own call names it.
fn link_tool_result(recorded: &[ToolCall], messages: &[ChatMessage], index: usize) -> (String, String) {
    let given = messages[index].tool_call_id.as_deref().unwrap_or_default();
    // The assistant message this result answers, and how many results come before it.
    let asked = messages[..index].iter().rposition(|m| m.role() == Role::Assistant && !m.tool_calls.is_empty());
    let own_calls: &[ToolCall] = asked.map(|a| messages[a].tool_calls.as_slice()).unwrap_or_default();
    let run_start = asked.map(|a| a + 1).unwrap_or_else(|| since_last_reply(&messages[..index]));
    let position = messages[run_start..index].iter().filter(|m| m.role() == Role::Tool).count();
    let loose = loose_id(given);
    let linked = recorded
        .iter()
        .find(|c| c.id == given)
        .or_else(|| recorded.iter().find(|c| !loose.is_empty() && loose_id(&c.id) == loose))
        .or_else(|| recorded.get(own_calls.iter().position(|c| c.id == given).unwrap_or(position)));
    match linked {
        Some(call) => (call.id.clone(), call.name.clone()),
        None => {
            let own = own_calls.iter().find(|c| c.id == given).or_else(|| own_calls.get(position));
            (given.to_string(), own.map(|c| c.name.clone()).unwrap_or_default())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------

/// Records one exchange into the session it belongs to.
pub struct ProxyRecorder {
    store: Arc<dyn Store>,
    user_id: String,
    pub session_id: String,
    /// The fingerprint of the request's messages, which its reply extends.
    request_fingerprint: String,
}

impl ProxyRecorder {
    /// Finds the session the request belongs to and records what is new in it: the
    /// results of the tools the client ran since the model's last reply, and the latest
    /// user message; nothing when the request is a retry.
    pub async fn open(state: &AppState, user_id: &str, headers: &HeaderMap, messages: &[ChatMessage]) -> Result<Self, ApiError> {
        let store = state.store.clone();
        let model = &state.engine.info().id;
        let named = match client_session_id(headers)? {
            Some(external) => Some(store.proxy_session(user_id, Some(external), model).await?),
            None => None,
        };
        let prefixes = prefix_fingerprints(messages);
        let whole = prefixes[messages.len()].clone();
        // Candidates: the whole request (a retry), and every prefix that ends with an
        // assistant message (an earlier request plus its reply).
        let mut asked = vec![whole.clone()];
        asked.extend((1..=messages.len()).filter(|&k| messages[k - 1].role() == Role::Assistant).map(|k| prefixes[k].clone()));
        let found = store.find_conversation_states(user_id, named.as_ref().map(|s| s.id.as_str()), &asked).await?;
        // A retry wins over a continuation, a longer continuation over a shorter one, and
        // among equals the newest (found lists newest first).
        let mut best: Option<(bool, usize, String)> = None;
        for state in found {
            let candidate = match state.state {
                ConversationState::Request if state.fingerprint == whole => (true, messages.len(), state.session_id),
                ConversationState::Request => continue,
                ConversationState::Reply => match prefixes.iter().rposition(|p| *p == state.fingerprint) {
                    Some(k) => (false, k, state.session_id),
                    None => continue,
                },
            };
            if best.as_ref().is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
                best = Some(candidate);
            }
        }
        let (session_id, start, retry, fresh) = match (best, named) {
            (Some((retry, k, session_id)), _) => (session_id, k.max(since_last_reply(messages)), retry, false),
            (None, Some(session)) => (session.id, since_last_reply(messages), false, false),
            (None, None) => (store.proxy_session(user_id, None, model).await?.id, since_last_reply(messages), false, true),
        };
        store.add_conversation_state(user_id, &session_id, ConversationState::Request, &whole).await?;
        let recorder = Self { store, user_id: user_id.to_string(), session_id, request_fingerprint: whole };
        if !retry {
            recorder.record_request(messages, start, fresh).await?;
        }
        Ok(recorder)
    }

    async fn record(&self, event: Event) -> Result<(), ApiError> {
        let payload = serde_json::to_value(&event).map_err(anyhow::Error::from)?;
        self.store.append_event(&self.user_id, &self.session_id, event.kind(), &payload).await?;
        Ok(())
    }

    /// The tool calls of the newest reply recorded in this session.
    async fn recorded_calls(&self) -> Result<Vec<ToolCall>, ApiError> {
        let Some(event) = self.store.last_event(&self.user_id, &self.session_id, "model_output").await? else { return Ok(Vec::new()) };
        match serde_json::from_value::<Event>(event.payload) {
            Ok(Event::ModelOutput { tool_calls, .. }) => Ok(tool_calls),
            _ => Ok(Vec::new()),
        }
    }

    /// Records the user and tool messages of `messages[start..]`.
    async fn record_request(&self, messages: &[ChatMessage], start: usize, fresh: bool) -> Result<(), ApiError> {
        let has_results = messages[start..].iter().any(|m| m.role() == Role::Tool);
        // A new session has no recorded calls to link to.
        let recorded = if has_results && !fresh { self.recorded_calls().await? } else { Vec::new() };
        for (index, message) in messages.iter().enumerate().skip(start) {
            match message.role() {
                Role::Tool => {
                    let (call_id, name) = link_tool_result(&recorded, messages, index);
                    // The client ran the tool; whether it succeeded is only in its text.
                    self.record(Event::ToolResult {
                        call_id,
                        name,
                        ok: true,
                        exit_code: None,
                        excerpt: message.content.chars().take(EXCERPT_CHARS).collect(),
                    })
                    .await?;
                }
                Role::User => self.record(Event::UserMessage { text: message.content.clone() }).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the model's reply to a request that succeeded. The conversation it ends
    /// becomes one that later requests can continue; its events are recorded unless a reply
    /// to the same request (an earlier try of a retry) was recorded before.
    pub async fn record_response(
        &self,
        prompt_tokens: usize,
        latency_ms: u64,
        text: &str,
        tool_calls: &[ToolCall],
        completion_tokens: usize,
    ) -> Result<(), ApiError> {
        let reply =
            ChatMessage { role: Some(Role::Assistant), content: text.to_string(), tool_calls: tool_calls.to_vec(), ..Default::default() };
        let continued = extend_fingerprint(&self.request_fingerprint, &reply);
        self.store.add_conversation_state(&self.user_id, &self.session_id, ConversationState::Reply, &continued).await?;
        if !self.store.claim_reply(&self.user_id, &self.session_id, &self.request_fingerprint).await? {
            return Ok(());
        }
        self.record(Event::ModelCall { prompt_tokens, latency_ms }).await?;
        self.record(Event::ModelOutput { text: text.to_string(), tool_calls: tool_calls.to_vec(), completion_tokens }).await?;
        for call in tool_calls {
            self.record(Event::ToolCall { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }).await?;
        }
        if tool_calls.is_empty() {
            self.record(Event::FinalAnswer { text: text.to_string() }).await?;
        }
        self.store.update_session(&self.user_id, &self.session_id, crate::storage::SessionStatus::Idle, None).await?;
        Ok(())
    }
}

/// Adds the `<available_skills>` catalog to the system prompt (a new system message when
/// the client sent none), the skills most relevant to the last user message first so that
/// a tight budget drops the least relevant. Nothing changes when no skill is eligible.
pub fn inject_catalog(messages: &mut Vec<ChatMessage>, entries: &[catalog::CatalogEntry], budget: usize) {
    if entries.is_empty() {
        return;
    }
    let request = messages.iter().rev().find(|m| m.role() == Role::User).map(|m| m.content.as_str()).unwrap_or_default();
    let block = catalog::render_for(entries, budget, request);
    match messages.iter_mut().find(|m| m.role() == Role::System) {
        Some(system) => {
            system.content.push_str("\n\n");
            system.content.push_str(&block);
        }
        None => messages.insert(0, ChatMessage::system(block)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_joins_the_system_prompt_or_becomes_one() {
        let entries = vec![catalog::CatalogEntry { slug: "csv".into(), version: "1.0.0".into(), description: "Inspect CSV.".into() }];
        let mut with_system = vec![ChatMessage::system("Be brief."), ChatMessage::user("hi")];
        inject_catalog(&mut with_system, &entries, 1000);
        assert!(with_system[0].content.starts_with("Be brief.") && with_system[0].content.contains("<name>csv</name>"));
        let mut without = vec![ChatMessage::user("hi")];
        inject_catalog(&mut without, &entries, 1000);
        assert_eq!(without[0].role(), Role::System);
        let mut untouched = vec![ChatMessage::user("hi")];
        inject_catalog(&mut untouched, &[], 1000);
        assert_eq!(untouched.len(), 1);
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    fn calling(calls: Vec<ToolCall>) -> ChatMessage {
        ChatMessage { role: Some(Role::Assistant), tool_calls: calls, ..Default::default() }
    }

    fn result(id: &str, text: &str) -> ChatMessage {
        ChatMessage { role: Some(Role::Tool), content: text.into(), tool_call_id: Some(id.into()), ..Default::default() }
    }

    #[test]
    fn fingerprints_ignore_call_ids_whitespace_and_argument_spelling() {
        let sent =
            vec![ChatMessage::user("read a"), calling(vec![call("call_1", "read", r#"{"path":"a","n":1}"#)]), result("call_1", "body")];
        let echoed = vec![
            ChatMessage::user(" read a\n"),
            calling(vec![call("call1", "read", "{\"n\": 1, \"path\": \"a\"}")]),
            result("call1", "body "),
        ];
        assert_eq!(prefix_fingerprints(&sent), prefix_fingerprints(&echoed));
        let other = vec![ChatMessage::user("read a"), calling(vec![call("call_1", "read", r#"{"path":"b"}"#)]), result("call_1", "body")];
        let (sent, other) = (prefix_fingerprints(&sent), prefix_fingerprints(&other));
        assert_eq!(sent[1], other[1]);
        assert_ne!(sent[2], other[2], "other arguments, another conversation");
        assert_ne!(sent[3], other[3], "and so is everything after");
        // A role is part of the message: the same text from the user and from the model
        // are different states.
        assert_ne!(prefix_fingerprints(&[ChatMessage::user("x")])[1], prefix_fingerprints(&[ChatMessage::assistant("x")])[1]);
    }

    #[test]
    fn tool_results_link_by_id_then_loose_id_then_position() {
        let recorded = vec![call("call_a", "read", "{}"), call("call_b", "ls", "{}")];
        let messages = vec![
            ChatMessage::user("go"),
            calling(vec![call("calla", "read", "{}"), call("callb", "ls", "{}")]),
            result("call_b", "exact"),
            result("CALLA", "loose"),
            result("x-1", "by position: the third result has no third call"),
        ];
        assert_eq!(link_tool_result(&recorded, &messages, 2), ("call_b".into(), "ls".into()));
        assert_eq!(link_tool_result(&recorded, &messages, 3), ("call_a".into(), "read".into()));
        assert_eq!(link_tool_result(&recorded, &messages, 4), ("x-1".into(), String::new()));
        let by_position = vec![
            ChatMessage::user("go"),
            calling(vec![call("u1", "read", "{}"), call("u2", "ls", "{}")]),
            result("r1", "a"),
            result("r2", "b"),
        ];
        assert_eq!(link_tool_result(&recorded, &by_position, 2), ("call_a".into(), "read".into()));
        assert_eq!(link_tool_result(&recorded, &by_position, 3), ("call_b".into(), "ls".into()));
        // The id the request's own assistant message gives places the result.
        let reordered = vec![ChatMessage::user("go"), calling(vec![call("u1", "read", "{}"), call("u2", "ls", "{}")]), result("u2", "b")];
        assert_eq!(link_tool_result(&recorded, &reordered, 2), ("call_b".into(), "ls".into()));
        // Nothing recorded to link to: the request's own call names the tool.
        assert_eq!(link_tool_result(&[], &reordered, 2), ("u2".into(), "ls".into()));
    }

    #[test]
    fn the_catalog_header_turns_it_off_or_is_refused() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-skillhive-catalog", value.parse().unwrap());
            CatalogMode::from_headers(&headers)
        };
        assert_eq!(CatalogMode::from_headers(&HeaderMap::new()).unwrap(), CatalogMode::Auto);
        for off in ["off", "false", "0", " Off "] {
            assert_eq!(with(off).unwrap(), CatalogMode::Off, "{off}");
        }
        for on in ["on", "true", "1"] {
            assert_eq!(with(on).unwrap(), CatalogMode::Auto, "{on}");
        }
        assert!(matches!(with("no"), Err(ApiError::BadRequest { .. })));
    }
}
