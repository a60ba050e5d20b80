//! The inference engine: one trait that every caller (the HTTP server, the agent loop, the
//! evolver, RL training) uses, and the backends that implement it.
//!
//! Backends:
//! - [`mistral::MistralRsEngine`]: mistral.rs embedded in this process, on a local GGUF file.
//! - [`openai::OpenAiEngine`]: any OpenAI-compatible HTTP endpoint.
//!
//! The types here are deliberately independent of any wire format: the server translates
//! OpenAI JSON to them and back, so a backend never sees HTTP and the server never sees
//! mistral.rs.

pub mod mistral;
pub mod openai;
pub mod seeded;
pub mod tool_protocol;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A call of a tool by the model. `arguments` is JSON text, as in OpenAI's wire format,
/// because backends may return arguments that do not parse and callers must see them as-is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Option<Role>,
    pub content: String,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role: Some(role), content: content.into(), ..Default::default() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::User)
    }
}

/// A tool the model may call: a name, what it does, and a JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Whether and how the model may call tools.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolChoice {
    /// The model decides between answering and calling a tool.
    #[default]
    Auto,
    /// The model must answer in text.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Named(String),
}

/// What the model continues from.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered by the model's chat template.
    Messages(Vec<ChatMessage>),
    /// An exact token prefix, used as-is (no template). RL training continues from the
    /// exact tokens it sampled before, which a re-rendered template would not reproduce.
    Tokens(Vec<u32>),
}

/// A request for one generation.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    /// Tools the model may call; empty means none.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    /// Hard cap on new tokens. Always set: small models often never emit end-of-sequence.
    pub max_tokens: usize,
    /// `None` or `0.0` means greedy decoding.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Generation stops before any of these strings.
    pub stop: Vec<String>,
    /// Makes sampling reproducible: the same seed, prompt and parameters give the same text.
    pub seed: Option<u64>,
    /// Constrains the output to JSON matching this schema.
    pub json_schema: Option<serde_json::Value>,
    /// `Some(k)`: return the log-probability of each generated token and the `k` most likely
    /// alternatives at each position.
    pub logprobs: Option<usize>,
    /// Number of independent samples for the same prompt.
    pub n: usize,
    /// Tokens the generation must begin with, before anything is sampled, checked by the
    /// same constraint and counted in `max_tokens`: a reply resumed part-way (an RL branch
    /// that keeps a reply's first tokens and samples the rest under the tool grammar).
    /// Needs a token prompt and a seed; only the embedded backend offers it.
    pub forced: Vec<u32>,
}

impl GenerationRequest {
    pub fn new(prompt: Prompt, max_tokens: usize) -> Self {
        Self {
            prompt,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            max_tokens,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            seed: None,
            json_schema: None,
            logprobs: None,
            n: 1,
            forced: Vec::new(),
        }
    }

    pub fn chat(messages: Vec<ChatMessage>, max_tokens: usize) -> Self {
        Self::new(Prompt::Messages(messages), max_tokens)
    }

    /// True when sampling is greedy and therefore deterministic without a seed.
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t <= 0.0)
    }

    /// Tools are offered unless the caller forbade them.
    pub fn offers_tools(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != ToolChoice::None
    }
}

/// Why generation of one choice ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model called one or more tools.
    ToolCalls,
    /// Anything else a backend reports, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl FinishReason {
    pub fn parse(reason: &str) -> Self {
        match reason {
            "stop" | "eos" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            other => FinishReason::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other(other) => other,
        }
    }
}

/// The log-probability of one token and, on request, its most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub top: Vec<(String, f32)>,
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Choice {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The generated token ids, where the backend knows them (the embedded backend does
    /// for seeded sampling). RL training continues from and scores these exact tokens.
    pub token_ids: Vec<u32>,
    /// The log-probability each of `token_ids` was sampled with (natural log), one per id.
    /// Unlike `logprobs`, which follows the streamed text, this also covers tokens that
    /// print nothing (an end-of-turn token, half of a multi-byte character).
    pub token_logprobs: Vec<f32>,
    /// The entropy of the distribution each of `token_ids` was drawn from, one per id
    /// (where the backend knows them, as `token_logprobs`).
    pub token_entropies: Vec<f32>,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn total_tokens(&self) -> usize {
        self.prompt_tokens + self.completion_tokens
    }
}

/// The result of a whole (non-streamed) generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

impl Generation {
    /// The text of the first choice, which is the only one unless `n > 1` was asked for.
    pub fn text(&self) -> &str {
        self.choices.first().map(|c| c.text.as_str()).unwrap_or("")
    }
}

/// One event of a streamed generation.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// New text of choice `index`.
    Delta { index: usize, text: String, logprobs: Vec<TokenLogprob> },
    /// Text to show a watcher while choice `index` is still being written, which is not
    /// (yet) part of its reply: the answer inside a tool-protocol reply, decoded as the
    /// JSON around it arrives. The reply itself comes later as a [`StreamEvent::Delta`];
    /// a consumer that builds replies ignores previews.
    Preview { index: usize, text: String },
    /// Complete tool calls of choice `index`.
    ToolCalls { index: usize, calls: Vec<ToolCall> },
    /// Choice `index` is finished.
    Finish { index: usize, reason: FinishReason },
    /// Token counts; sent once, after every choice finished.
    Usage(Usage),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, EngineError>> + Send>>;

/// What can go wrong in a generation, split by who has to act.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request cannot be served as asked; the caller must change it.
    #[error("{0}")]
    InvalidRequest(String),
    /// The backend failed while serving a valid request.
    #[error("inference backend failed: {0}")]
    Backend(String),
    /// The backend is not reachable or has shut down.
    #[error("inference backend unavailable: {0}")]
    Unavailable(String),
    /// The prompt and the tokens asked for do not fit the model's context window.
    #[error(
        "this model's context window is {window} tokens; the request has {prompt_tokens} prompt tokens and asks for \
         {max_tokens} more ({} in all): shorten the messages or lower max_tokens",
        prompt_tokens + max_tokens
    )]
    ContextLength { window: usize, prompt_tokens: usize, max_tokens: usize },
}

/// Most tools one request may offer (OpenAI's own limit).
pub const MAX_TOOLS: usize = 128;
/// Most bytes of JSON schema (tool parameters and response format together) one request
/// may carry: each schema becomes a grammar compiled for the request.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Most alternatives per token that `top_logprobs` may ask for (OpenAI's own limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most choices one request may ask for.
pub const MAX_CHOICES: usize = 8;

/// Facts about the model behind an engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The name clients use to address the model.
    pub id: String,
    /// Maximum sequence length in tokens, when the backend knows it.
    pub context_window: Option<usize>,
    /// Which backend serves it ("mistralrs" or "openai").
    pub backend: &'static str,
}

/// An inference engine. One instance is shared by every caller in the process; it must
/// accept concurrent calls (backends batch them; none serializes them behind a lock).
#[async_trait]
pub trait Engine: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Runs a generation to the end.
    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError>;

    /// Runs a generation and yields its events as they are produced. Dropping the stream
    /// cancels the generation.
    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError>;

    /// Teacher-forced scoring: the log-probability of each token of `continuation` given
    /// `prefix` and the continuation tokens before it (temperature 1, no sampling). This is
    /// what policy-gradient training needs to compare a new policy with the one that
    /// sampled. Backends that cannot see token-level probabilities of given text refuse
    /// with [`EngineError::InvalidRequest`].
    async fn score(&self, prefix: &[u32], continuation: &[u32]) -> Result<Vec<f32>, EngineError>;

    /// The exact tokens the model would read for `prompt`: a conversation rendered by the
    /// chat template with the generation prompt (as a request would be), a token prompt as
    /// it is. RL rollouts sample from, train on and branch from these tokens, token in and
    /// token out, instead of re-rendering text. Backends that cannot see tokens refuse.
    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        match prompt {
            Prompt::Tokens(tokens) => Ok(tokens.clone()),
            Prompt::Messages(_) => Err(EngineError::InvalidRequest("this backend does not expose its tokenizer".into())),
        }
    }

    /// The tokens of plain text, without the chat template or special tokens added.
    async fn tokenize_text(&self, _text: &str) -> Result<Vec<u32>, EngineError> {
        Err(EngineError::InvalidRequest("this backend does not expose its tokenizer".into()))
    }

    /// The text of tokens, special tokens left out: what RL reads where it branches inside
    /// a reply (the reply's text up to a token, a token's own text).
    async fn detokenize(&self, _tokens: &[u32]) -> Result<String, EngineError> {
        Err(EngineError::InvalidRequest("this backend does not expose its tokenizer".into()))
    }
}

/// Checks what every backend requires of a request, so that they all reject the same things
/// with the same words.
pub fn validate_request(request: &GenerationRequest) -> Result<(), EngineError> {
    if request.max_tokens == 0 {
        return Err(EngineError::InvalidRequest("max_tokens must be at least 1".into()));
    }
    if request.n == 0 {
        return Err(EngineError::InvalidRequest("n must be at least 1".into()));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(EngineError::InvalidRequest("temperature must be between 0 and 2".into()));
        }
    }
    if let Some(p) = request.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(EngineError::InvalidRequest("top_p must be in (0, 1]".into()));
        }
    }
    if !request.forced.is_empty() {
        if !matches!(request.prompt, Prompt::Tokens(_)) || request.n != 1 || request.seed.is_none() {
            return Err(EngineError::InvalidRequest("a forced beginning needs a token prompt, one choice and a seed".into()));
        }
        if request.forced.len() >= request.max_tokens {
            return Err(EngineError::InvalidRequest("the forced beginning leaves no token to sample within max_tokens".into()));
        }
    }
    match &request.prompt {
        Prompt::Messages(messages) if messages.is_empty() => Err(EngineError::InvalidRequest("messages must not be empty".into())),
        Prompt::Tokens(tokens) if tokens.is_empty() => Err(EngineError::InvalidRequest("the token prompt must not be empty".into())),
        _ => Ok(()),
    }?;
    if let ToolChoice::Named(name) = &request.tool_choice {
        if !request.tools.iter().any(|t| &t.name == name) {
            return Err(EngineError::InvalidRequest(format!("tool_choice names the tool `{name}`, which is not among the tools")));
        }
    }
    if request.tool_choice == ToolChoice::Required && request.tools.is_empty() {
        return Err(EngineError::InvalidRequest("tool_choice is required but no tools were given".into()));
    }
    if request.n > MAX_CHOICES {
        return Err(EngineError::InvalidRequest(format!("n is at most {MAX_CHOICES}")));
    }
    if request.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
        return Err(EngineError::InvalidRequest(format!("top_logprobs is at most {MAX_TOP_LOGPROBS}")));
    }
    if request.tools.len() > MAX_TOOLS {
        return Err(EngineError::InvalidRequest(format!("{} tools were given; at most {MAX_TOOLS} are allowed", request.tools.len())));
    }
    let schemas: Vec<&serde_json::Value> = request.tools.iter().map(|t| &t.parameters).chain(&request.json_schema).collect();
    let schema_bytes: usize = schemas.iter().map(|s| s.to_string().len()).sum();
    if schema_bytes > MAX_SCHEMA_BYTES {
        return Err(EngineError::InvalidRequest(format!(
            "the tool and response schemas take {schema_bytes} bytes; at most {MAX_SCHEMA_BYTES} are allowed"
        )));
    }
    for schema in schemas {
        if let Some(reference) = recursive_reference(schema) {
            return Err(EngineError::InvalidRequest(format!(
                "the schema refers to itself through `{reference}`; recursive schemas are not supported"
            )));
        }
    }
    Ok(())
}

/// A local `$ref` of `schema` that leads back to itself, if any. Such a schema has no
/// finite grammar, so it is refused up front instead of failing inside the backend.
pub fn recursive_reference(schema: &serde_json::Value) -> Option<String> {
    fn references(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", serde_json::Value::String(target)) if target.starts_with('#') => found.push(target.clone()),
                        _ => references(value, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| references(item, found)),
            _ => {}
        }
    }
    fn refs_at(schema: &serde_json::Value, pointer: &str) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(target) = schema.pointer(pointer) {
            references(target, &mut found);
        }
        found
    }
    // Depth-first over the reference graph, with the pointers on the current path.
    fn visit(schema: &serde_json::Value, reference: &str, path: &mut Vec<String>, done: &mut Vec<String>) -> Option<String> {
        if path.iter().any(|p| p == reference) {
            return Some(reference.to_string());
        }
        if done.iter().any(|d| d == reference) {
            return None;
        }
        path.push(reference.to_string());
        let pointer = reference.trim_start_matches('#');
        for next in refs_at(schema, pointer) {
            if let Some(cycle) = visit(schema, &next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(reference.to_string());
        None
    }
    let mut roots = Vec::new();
    references(schema, &mut roots);
    let mut done = Vec::new();
    roots.into_iter().find_map(|root| visit(schema, &root, &mut Vec::new(), &mut done))
}
