//! Proxy mode: with a user's token, `/v1/chat/completions` is an agent's model provider.
//! The skill catalog is injected into the system prompt, and each exchange is recorded as
//! that user's trajectory, so that external agents (OpenClaw, any OpenAI client) feed the
//! evolver like agents run here.

use std::sync::Arc;

use axum::http::HeaderMap;

use agent::engine::{ChatMessage, Role, ToolCall};
use agent::skills::catalog;
use agent::trajectory::Event;

use crate::error::ApiError;
use crate::store::Store;
use crate::AppState;

/// Requests without `X-Session-Id` join the user's last proxy session when it was active
/// within this long; after a longer pause a new session starts.
pub const PROXY_IDLE_SECS: i64 = 30 * 60;
/// Longest client session id accepted.
const MAX_SESSION_ID_CHARS: usize = 128;

/// Records one exchange into the session it belongs to.
pub struct ProxyRecorder {
    store: Arc<dyn Store>,
    user_id: String,
    pub session_id: String,
}

impl ProxyRecorder {
    pub async fn open(state: &AppState, user_id: &str, headers: &HeaderMap) -> Result<Self, ApiError> {
        let external = match headers.get("x-session-id") {
            None => None,
            Some(value) => {
                let id = value.to_str().ok().map(str::trim).filter(|v| !v.is_empty() && v.len() <= MAX_SESSION_ID_CHARS);
                Some(id.ok_or_else(|| {
                    ApiError::bad_request(
                        format!("X-Session-Id must be 1 to {MAX_SESSION_ID_CHARS} visible characters"),
                        "invalid_value",
                        None,
                    )
                })?)
            }
        };
        let session = state.store.proxy_session(user_id, external, &state.engine.info().id, PROXY_IDLE_SECS).await?;
        Ok(Self { store: state.store.clone(), user_id: user_id.to_string(), session_id: session.id })
    }

    async fn record(&self, event: Event) -> Result<(), ApiError> {
        let payload = serde_json::to_value(&event).map_err(anyhow::Error::from)?;
        self.store.append_event(&self.user_id, &self.session_id, event.kind(), &payload).await?;
        Ok(())
    }

    /// Records what is new in a request: the results of the tools the client ran since
    /// the model's last reply, and the latest user message.
    pub async fn record_request(&self, messages: &[ChatMessage]) -> Result<(), ApiError> {
        let since_last_reply = messages.iter().rposition(|m| m.role() == Role::Assistant).map(|i| i + 1).unwrap_or(0);
        for message in &messages[since_last_reply..] {
            match message.role() {
                Role::Tool => {
                    let call_id = message.tool_call_id.clone().unwrap_or_default();
                    let name = messages
                        .iter()
                        .flat_map(|m| m.tool_calls.iter())
                        .find(|c| c.id == call_id)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    // The client ran the tool; whether it succeeded is only in its text.
                    self.record(Event::ToolResult {
                        call_id,
                        name,
                        ok: true,
                        exit_code: None,
                        excerpt: message.content.chars().take(500).collect(),
                    })
                    .await?;
                }
                Role::User => self.record(Event::UserMessage { text: message.content.clone() }).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the model's reply.
    pub async fn record_response(
        &self,
        prompt_tokens: usize,
        latency_ms: u64,
        text: &str,
        tool_calls: &[ToolCall],
        completion_tokens: usize,
    ) -> Result<(), ApiError> {
        self.record(Event::ModelCall { prompt_tokens, latency_ms }).await?;
        self.record(Event::ModelOutput { text: text.to_string(), tool_calls: tool_calls.to_vec(), completion_tokens }).await?;
        for call in tool_calls {
            self.record(Event::ToolCall { call_id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }).await?;
        }
        if tool_calls.is_empty() {
            self.record(Event::FinalAnswer { text: text.to_string() }).await?;
        }
        self.store.update_session(&self.user_id, &self.session_id, crate::store::SessionStatus::Idle, None).await?;
        Ok(())
    }
}

/// Adds the `<available_skills>` catalog to the system prompt (a new system message when
/// the client sent none). Nothing changes when no skill is eligible.
pub fn inject_catalog(messages: &mut Vec<ChatMessage>, entries: &[catalog::CatalogEntry], budget: usize) {
    if entries.is_empty() {
        return;
    }
    let block = catalog::render(entries, budget);
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
}
