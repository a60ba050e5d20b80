//! What an agent run records: one event per step, in order. The server stores them per
//! user; the evolver reads them. Serialized with a `type` tag so that the stored JSON is
//! self-describing.

use serde::{Deserialize, Serialize};

use crate::engine::ToolCall;

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    FinalAnswer,
    MaxSteps,
    MaxWallTime,
    TokenBudget,
    Error,
    Cancelled,
    /// The model kept calling tools after it was told to answer: its repeated calls were
    /// not run, and a step that only admits an answer got tool calls anyway.
    RepeatedCalls,
    /// The model's replies were cut off by the per-step token limit twice in a row.
    CutOff,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::FinalAnswer => "final_answer",
            StopReason::MaxSteps => "max_steps",
            StopReason::MaxWallTime => "max_wall_time",
            StopReason::TokenBudget => "token_budget",
            StopReason::Error => "error",
            StopReason::Cancelled => "cancelled",
            StopReason::RepeatedCalls => "repeated_calls",
            StopReason::CutOff => "cut_off",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    UserMessage {
        text: String,
    },
    ModelCall {
        prompt_tokens: usize,
        latency_ms: u64,
    },
    ModelOutput {
        text: String,
        tool_calls: Vec<ToolCall>,
        completion_tokens: usize,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        name: String,
        ok: bool,
        exit_code: Option<i32>,
        excerpt: String,
    },
    SkillRead {
        slug: String,
        version: String,
    },
    Compaction {
        replaced_messages: usize,
        summary: String,
    },
    FinalAnswer {
        text: String,
    },
    Stop {
        reason: StopReason,
        detail: Option<String>,
    },
    /// A model step that was neither a tool call nor an answer (it was cut off at the
    /// token limit); the model was told and the turn went on.
    StepRejected {
        reason: String,
        text: String,
    },
    /// A workspace file as the turn first found it (read, listed, edited or named to a
    /// command), so that a replay can lay out the same workspace.
    InputFile {
        path: String,
        content: String,
    },
    /// A file the turn wrote or edited, as the turn left it.
    OutputFile {
        path: String,
        content: String,
    },
}

impl Event {
    /// The tag this event is stored under.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::UserMessage { .. } => "user_message",
            Event::ModelCall { .. } => "model_call",
            Event::ModelOutput { .. } => "model_output",
            Event::ToolCall { .. } => "tool_call",
            Event::ToolResult { .. } => "tool_result",
            Event::SkillRead { .. } => "skill_read",
            Event::Compaction { .. } => "compaction",
            Event::FinalAnswer { .. } => "final_answer",
            Event::Stop { .. } => "stop",
            Event::StepRejected { .. } => "step_rejected",
            Event::InputFile { .. } => "input_file",
            Event::OutputFile { .. } => "output_file",
        }
    }
}

/// Where events go as they happen. The server's sink writes each to the database before
/// returning, so an event the API reported is durable.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    async fn record(&self, event: Event) -> anyhow::Result<()>;

    /// Whether someone is watching text as it is generated; the loop then streams each
    /// model step and passes its text on through [`EventSink::delta`].
    fn wants_deltas(&self) -> bool {
        false
    }

    /// Generated text as it arrives. Deltas are not events: the model output that they
    /// add up to is recorded whole when the step ends.
    fn delta(&self, _text: &str) {}
}

/// A sink that keeps events in memory, for tests and for callers that store them later.
#[derive(Default)]
pub struct MemorySink {
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl MemorySink {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl EventSink for MemorySink {
    async fn record(&self, event: Event) -> anyhow::Result<()> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_type_tag() {
        let event = Event::ToolResult { call_id: "c".into(), name: "exec".into(), ok: false, exit_code: Some(2), excerpt: "no".into() };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.kind());
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        let stop = serde_json::to_value(Event::Stop { reason: StopReason::MaxSteps, detail: None }).unwrap();
        assert_eq!(stop["reason"], StopReason::MaxSteps.as_str());
    }
}
