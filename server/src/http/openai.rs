//! The OpenAI-compatible endpoints. Handlers only translate: OpenAI JSON in, a
//! [`GenerationRequest`] to the engine, the engine's result back out in OpenAI's shape.
//!
//! What real clients send is accepted: content-part arrays in messages, the `developer`
//! role, `max_completion_tokens` as well as `max_tokens`, `stream_options.include_usage`,
//! tool schemas with `anyOf`/`const`/`enum`, and fields this server ignores (`user`,
//! `metadata`, penalties, ...).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use agent::engine::{
    ChatMessage, Engine, FinishReason, Generation, GenerationRequest, Prompt, Role, StreamEvent, TokenLogprob, ToolCall, ToolChoice,
    ToolSpec,
};
use axum::http::HeaderMap;

use crate::http::auth::AuthUser;
use crate::http::error::ApiError;
use crate::http::proxy::{inject_catalog, CatalogMode, ProxyRecorder};
use crate::http::AppState;
use crate::storage::CompletionRecord;

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ok", "model": state.engine.info().id })))
}

fn model_object(state: &AppState) -> Value {
    let info = state.engine.info();
    json!({
        "id": info.id,
        "object": "model",
        "created": 0,
        "owned_by": "skillhive",
        "backend": info.backend,
        "context_window": info.context_window,
        // The RL policy behind the default id, when one was promoted.
        "policy": state.models.default_policy(),
    })
}

fn policy_object(policy: &crate::services::models::ServedModel) -> Value {
    json!({
        "id": policy.id,
        "object": "model",
        "created": 0,
        "owned_by": "skillhive-rl",
        "backend": policy.backend,
        "context_window": policy.context_window,
    })
}

pub async fn list_models(State(state): State<AppState>, _user: AuthUser) -> Json<Value> {
    let mut data = vec![model_object(&state)];
    data.extend(state.models.policies().iter().map(policy_object));
    Json(json!({ "object": "list", "data": data }))
}

pub async fn get_model(State(state): State<AppState>, _user: AuthUser, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == state.engine.info().id {
        return Ok(Json(model_object(&state)));
    }
    match state.models.policies().iter().find(|p| p.id == id) {
        Some(policy) => Ok(Json(policy_object(policy))),
        None => Err(unknown_model(&id, &state)),
    }
}

fn unknown_model(id: &str, state: &AppState) -> ApiError {
    ApiError::NotFound(
        format!("The model `{id}` does not exist; this server serves `{}` (see GET /v1/models)", state.engine.info().id),
        "model_not_found",
    )
}

/// The engine serving a request's model id: the default, or a published policy.
async fn engine_for(state: &AppState, id: &str) -> Result<Arc<dyn Engine>, ApiError> {
    if id == state.engine.info().id {
        return Ok(state.engine.clone());
    }
    state.models.engine_for(id).await?.ok_or_else(|| unknown_model(id, state))
}

// ---------------------------------------------------------------------------------------
// Request wire format
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ChatCompletionRequest {
    model: String,
    messages: Vec<WireMessage>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<usize>,
    stop: Option<StopField>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    response_format: Option<ResponseFormat>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<Value>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Deserialize)]
struct JsonSchemaFormat {
    schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireTool {
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireCalledFunction,
}

#[derive(Debug, Deserialize)]
struct WireCalledFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

fn bad(message: impl Into<String>, code: &'static str, param: &'static str) -> ApiError {
    ApiError::bad_request(message, code, Some(param))
}

fn convert_message(index: usize, message: WireMessage) -> Result<ChatMessage, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(bad(
                format!("messages[{index}].role `{other}` is not one of system, developer, user, assistant, tool"),
                "invalid_value",
                "messages",
            ))
        }
    };
    let content = match message.content {
        None => String::new(),
        Some(WireContent::Text(text)) => text,
        Some(WireContent::Parts(parts)) => {
            let mut text = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text" | "input_text", Some(t)) => text.push(t),
                    (kind, _) => {
                        return Err(bad(
                            format!("messages[{index}] has a content part of type `{kind}`; this model reads text parts only"),
                            "unsupported_content",
                            "messages",
                        ))
                    }
                }
            }
            text.join("\n")
        }
    };
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall { id: c.id, name: c.function.name, arguments: c.function.arguments })
        .collect();
    Ok(ChatMessage { role: Some(role), content, tool_calls, tool_call_id: message.tool_call_id })
}

fn convert_tool_choice(value: Option<Value>) -> Result<ToolChoice, ApiError> {
    match value {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!("tool_choice `{other}` is not one of auto, none, required"), "invalid_value", "tool_choice")),
        },
        Some(object) => object["function"]["name"].as_str().map(|name| ToolChoice::Named(name.to_string())).ok_or_else(|| {
            bad("tool_choice must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}", "invalid_value", "tool_choice")
        }),
    }
}

/// Parses and checks a request body, returning the engine request and the wire options
/// that only matter to the response.
struct ParsedRequest {
    /// The requested model id.
    model: String,
    generation: GenerationRequest,
    stream: bool,
    include_usage: bool,
}

fn parse_request(state: &AppState, body: &[u8]) -> Result<ParsedRequest, ApiError> {
    let request: ChatCompletionRequest = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "invalid_json" } else { "invalid_request" };
        ApiError::bad_request(format!("could not parse the request body: {e}"), code, None)
    })?;
    let limits = state.limits;
    let asked = request.max_completion_tokens.or(request.max_tokens);
    let max_tokens = match asked {
        None => limits.default_max_tokens,
        Some(n) if n as usize > limits.max_tokens_cap => {
            return Err(bad(
                format!("max_tokens is {n}, above this server's cap of {}", limits.max_tokens_cap),
                "max_tokens_exceeded",
                "max_tokens",
            ))
        }
        Some(n) => n as usize,
    };
    let messages = request.messages.into_iter().enumerate().map(|(i, m)| convert_message(i, m)).collect::<Result<Vec<_>, _>>()?;
    let json_schema = match request.response_format {
        None => None,
        Some(format) => match format.kind.as_str() {
            "text" => None,
            "json_schema" => Some(
                format
                    .json_schema
                    .and_then(|s| s.schema)
                    .ok_or_else(|| bad("response_format json_schema needs json_schema.schema", "invalid_value", "response_format"))?,
            ),
            // Any JSON object: the grammar of plain JSON objects.
            "json_object" => Some(json!({ "type": "object" })),
            other => return Err(bad(format!("response_format type `{other}` is not supported"), "invalid_value", "response_format")),
        },
    };
    let mut tools = Vec::new();
    for tool in request.tools.unwrap_or_default() {
        if tool.kind != "function" {
            return Err(bad(format!("tool type `{}` is not supported; only function tools", tool.kind), "invalid_value", "tools"));
        }
        tools.push(ToolSpec {
            name: tool.function.name,
            description: tool.function.description.unwrap_or_default(),
            parameters: tool.function.parameters.unwrap_or_else(|| json!({ "type": "object" })),
        });
    }
    let n = request.n.unwrap_or(1);
    // A request costs about n × max_tokens decoding steps; the cap bounds that product,
    // so `n` cannot multiply one request into many.
    if n.saturating_mul(max_tokens) > limits.max_tokens_cap {
        return Err(bad(
            format!("n × max_tokens is {n} × {max_tokens}; this server serves at most {} tokens per request", limits.max_tokens_cap),
            "invalid_value",
            "n",
        ));
    }
    let mut generation = GenerationRequest::chat(messages, max_tokens);
    generation.tools = tools;
    generation.tool_choice = convert_tool_choice(request.tool_choice)?;
    generation.temperature = request.temperature;
    generation.top_p = request.top_p;
    generation.n = n;
    generation.seed = request.seed;
    generation.json_schema = json_schema;
    generation.logprobs = request.logprobs.then(|| request.top_logprobs.unwrap_or(0));
    generation.stop = match request.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    agent::engine::validate_request(&generation)?;
    Ok(ParsedRequest {
        model: request.model,
        generation,
        stream: request.stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
    })
}

// ---------------------------------------------------------------------------------------
// Response wire format
// ---------------------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({ "index": i, "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
            .collect(),
    )
}

fn logprob_json(token: &TokenLogprob) -> Value {
    json!({
        "token": token.token,
        "logprob": token.logprob,
        "bytes": token.token.as_bytes(),
        "top_logprobs": token.top.iter().map(|(t, l)| json!({ "token": t, "logprob": l, "bytes": t.as_bytes() })).collect::<Vec<_>>(),
    })
}

fn usage_json(usage: agent::engine::Usage) -> Value {
    json!({ "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens() })
}

fn completion_json(id: &str, model: &str, generation: &Generation) -> Value {
    let choices: Vec<Value> = generation
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let mut message = json!({ "role": "assistant", "content": choice.text });
            if !choice.tool_calls.is_empty() {
                message["tool_calls"] = tool_calls_json(&choice.tool_calls);
                if choice.text.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            json!({
                "index": index,
                "message": message,
                "logprobs": choice.logprobs.as_ref().map(|l| json!({ "content": l.iter().map(logprob_json).collect::<Vec<_>>() })),
                "finish_reason": choice.finish_reason.as_ref().map(FinishReason::as_str).unwrap_or("stop"),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "system_fingerprint": "skillhive",
        "choices": choices,
        "usage": usage_json(generation.usage),
    })
}

// ---------------------------------------------------------------------------------------
// Handler
// ---------------------------------------------------------------------------------------

pub async fn chat_completions(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let catalog = CatalogMode::from_headers(&headers)?;
    let mut parsed = parse_request(&state, &body)?;
    let engine = engine_for(&state, &parsed.model).await?;
    let permit = state.quotas.begin_generation(&user.0.id)?;
    // Proxy mode: the exchange joins the caller's trajectory, and a model that may call
    // tools sees the skills the caller may use (see `proxy` for the rules).
    let offers_tools = parsed.generation.offers_tools();
    let Prompt::Messages(messages) = &mut parsed.generation.prompt else {
        return Err(ApiError::Internal(anyhow::anyhow!("a chat request without messages")));
    };
    let recorder = ProxyRecorder::open(&state, &user.0.id, &headers, messages).await?;
    if catalog == CatalogMode::Auto && offers_tools {
        let viewer = state.skills.viewer(&user.0.id).await?;
        let entries = agent::agent_loop::SkillSource::catalog(state.skills.agent_skills(&viewer).await?.as_ref());
        inject_catalog(messages, &entries, state.agent.config.catalog_budget);
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let model = parsed.model.clone();
    let started = Instant::now();
    if parsed.stream {
        return stream_completion(state, engine, parsed, id, model, started, recorder, permit).await;
    }
    let result = engine.generate(parsed.generation).await;
    if let Ok(generation) = &result {
        permit.add_tokens(generation.usage.total_tokens() as u64);
    }
    drop(permit);
    let (usage, outcome) = match &result {
        Ok(generation) => (generation.usage, "ok".to_string()),
        Err(e) => (Default::default(), format!("error: {e}")),
    };
    record(&state, &id, &model, false, usage, started, outcome).await;
    let generation = result?;
    let first = generation.choices.first().cloned().unwrap_or_default();
    recorder
        .record_response(
            generation.usage.prompt_tokens,
            started.elapsed().as_millis() as u64,
            &first.text,
            &first.tool_calls,
            generation.usage.completion_tokens,
        )
        .await?;
    let mut response = Json(completion_json(&id, &model, &generation)).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&recorder.session_id) {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

/// Logs a served completion. The log is for operators; a failure to write it must not fail
/// the client's request, so it is reported and swallowed here.
async fn record(state: &AppState, id: &str, model: &str, streamed: bool, usage: agent::engine::Usage, started: Instant, outcome: String) {
    let record = CompletionRecord {
        id: id.to_string(),
        model: model.to_string(),
        streamed,
        prompt_tokens: usage.prompt_tokens as i64,
        completion_tokens: usage.completion_tokens as i64,
        latency_ms: started.elapsed().as_millis() as i64,
        outcome,
    };
    if let Err(error) = state.store.record_completion(&record).await {
        tracing::warn!(?error, "could not record a completion in the usage log");
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_completion(
    state: AppState,
    engine: Arc<dyn Engine>,
    parsed: ParsedRequest,
    id: String,
    model: String,
    started: Instant,
    recorder: ProxyRecorder,
    permit: crate::services::quota::GenerationPermit,
) -> Result<Response, ApiError> {
    let include_usage = parsed.include_usage;
    let n = parsed.generation.n;
    let session_id = recorder.session_id.clone();
    // Errors before the first token (a bad schema, an unreachable backend) still get a
    // proper status code; only later errors have to travel inside the stream.
    let mut events = engine.generate_stream(parsed.generation).await?;
    // The first event decides the status: a request the engine refuses at once (a schema
    // it cannot compile, a prompt past the window) is a 4xx, not a 200 with an error in it.
    let first = events.next().await;
    if let Some(Err(error)) = first {
        return Err(error.into());
    }
    let mut events = futures::stream::iter(first).chain(events);
    let created = unix_now();
    // The usage log row carries the id the client saw.
    let record_id = id.clone();
    let record_model = model.clone();
    let chunk = move |choices: Value, usage: Option<Value>| -> Value {
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "skillhive", "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        chunk
    };
    let sse = async_stream::stream! {
        // OpenAI's first chunk of each choice carries the role.
        for index in 0..n {
            yield Ok::<Event, Infallible>(Event::default().data(chunk(json!([{ "index": index, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }]), None).to_string()));
        }
        let mut usage = agent::engine::Usage::default();
        let mut outcome = "ok".to_string();
        // A stream that failed part-way delivered no complete reply: none is recorded.
        let mut failed = false;
        // The first choice as it was streamed, for the trajectory.
        let mut streamed_text = String::new();
        let mut streamed_calls: Vec<ToolCall> = Vec::new();
        while let Some(event) = events.next().await {
            match &event {
                Ok(StreamEvent::Delta { index: 0, text, .. }) => streamed_text.push_str(text),
                Ok(StreamEvent::ToolCalls { index: 0, calls }) => streamed_calls.extend(calls.iter().cloned()),
                _ => {}
            }
            let data = match event {
                Ok(StreamEvent::Delta { index, text, logprobs }) => {
                    let logprobs = (!logprobs.is_empty()).then(|| json!({ "content": logprobs.iter().map(logprob_json).collect::<Vec<_>>() }));
                    chunk(json!([{ "index": index, "delta": { "content": text }, "logprobs": logprobs, "finish_reason": null }]), None)
                }
                Ok(StreamEvent::ToolCalls { index, calls }) => {
                    chunk(json!([{ "index": index, "delta": { "tool_calls": tool_calls_json(&calls) }, "logprobs": null, "finish_reason": null }]), None)
                }
                Ok(StreamEvent::Finish { index, reason }) => {
                    chunk(json!([{ "index": index, "delta": {}, "logprobs": null, "finish_reason": reason.as_str() }]), None)
                }
                // The OpenAI shape has no place for text that is not yet the reply.
                Ok(StreamEvent::Preview { .. }) => continue,
                Ok(StreamEvent::Usage(u)) => {
                    usage = u;
                    if !include_usage {
                        continue;
                    }
                    chunk(json!([]), Some(usage_json(u)))
                }
                Err(error) => {
                    tracing::error!(%error, "stream failed");
                    outcome = format!("error: {error}");
                    failed = true;
                    crate::http::error::error_body("the stream failed on the server", "server_error", "internal_error", None)
                }
            };
            yield Ok(Event::default().data(data.to_string()));
        }
        permit.add_tokens(usage.total_tokens() as u64);
        drop(permit);
        record(&state, &record_id, &record_model, true, usage, started, outcome).await;
        let latency = started.elapsed().as_millis() as u64;
        // A client that leaves mid-stream drops this stream, so nothing below its last
        // yield runs: an interrupted reply is never recorded either.
        if !failed {
            if let Err(error) = recorder
                .record_response(usage.prompt_tokens, latency, &streamed_text, &streamed_calls, usage.completion_tokens)
                .await
            {
                tracing::error!(?error, "could not record a streamed exchange");
            }
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    let mut response = Sse::new(sse).keep_alive(KeepAlive::default()).into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&session_id) {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_parts_and_developer_role_are_accepted() {
        let message: WireMessage = serde_json::from_value(json!({
            "role": "developer",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        let converted = convert_message(0, message).unwrap();
        assert_eq!(converted.role(), Role::System);
        assert_eq!(converted.content, "a\nb");
    }

    #[test]
    fn image_parts_are_refused_by_name() {
        let message: WireMessage = serde_json::from_value(json!({
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:"}}]
        }))
        .unwrap();
        let error = convert_message(2, message).unwrap_err().to_string();
        assert!(error.contains("messages[2]") && error.contains("image_url"), "{error}");
    }
}

/// The endpoint in-process, on a scripted engine: the wire format without a model.
#[cfg(test)]
mod app_tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::http::GenerationLimits;
    use crate::storage::Store;
    use crate::testing::scripted::{Otherwise, ScriptedEngine, Step};
    use crate::testing::TestApp;

    const TOKEN_USER: &str = "tester";

    async fn fixture() -> (axum::Router, Arc<ScriptedEngine>, Arc<dyn Store>, TestApp, String) {
        fixture_with(Default::default()).await
    }

    /// The fixture with the agent configured as `config` says (the catalog budget).
    async fn fixture_with(config: agent::agent_loop::AgentConfig) -> (axum::Router, Arc<ScriptedEngine>, Arc<dyn Store>, TestApp, String) {
        let (harness, engine) = scripted_state().await;
        let harness = harness.with_agent(config);
        let (_, token) = harness.user(TOKEN_USER, false).await.unwrap();
        (harness.router(), engine, harness.db.store.clone(), harness, token)
    }

    async fn scripted_state() -> (TestApp, Arc<ScriptedEngine>) {
        let engine = Arc::new(ScriptedEngine::new(Some(2048), Otherwise::Chat, Vec::<Step>::new()));
        let harness =
            TestApp::new(engine.clone()).await.unwrap().with_limits(GenerationLimits { max_tokens_cap: 100, default_max_tokens: 10 });
        (harness, engine)
    }

    /// Any JSON value, nested a few levels.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_$#/]{1,10}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The request parser answers every body, however malformed, with a request or a 4xx
    /// error: never a panic, never a 5xx. `PROPTEST_CASES` sets how many bodies it tries.
    #[test]
    fn any_request_body_is_parsed_or_refused_cleanly() {
        use proptest::prelude::*;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (harness, _engine) = runtime.block_on(scripted_state());
        let state = harness.state.clone();
        let keys = vec![
            "model",
            "messages",
            "tools",
            "tool_choice",
            "n",
            "max_tokens",
            "max_completion_tokens",
            "logprobs",
            "top_logprobs",
            "response_format",
            "stop",
            "temperature",
            "top_p",
            "stream",
            "stream_options",
            "seed",
        ];
        let bodies = (prop::collection::vec((prop::sample::select(keys), json_value()), 0..6), prop::option::of("\\PC{0,40}"));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::default());
        runner
            .run(&bodies, |(fields, raw)| {
                let mut body = json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]});
                for (key, value) in fields {
                    body[key] = value;
                }
                let bytes = raw.map(String::into_bytes).unwrap_or_else(|| body.to_string().into_bytes());
                if let Err(error) = super::parse_request(&state, &bytes) {
                    let status = axum::response::IntoResponse::into_response(error).status();
                    prop_assert!(status.is_client_error(), "{status} for {body}");
                }
                Ok(())
            })
            .unwrap();
    }

    async fn post(router: &axum::Router, token: &str, body: Value) -> (StatusCode, String) {
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn sse_data(body: &str) -> Vec<String> {
        body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }

    #[tokio::test]
    async fn request_options_reach_the_engine_and_the_reply_is_logged() {
        let (router, engine, store, _dir, token) = fixture().await;
        let (status, body) = post(
            &router,
            &token,
            json!({
                "model": "scripted",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_completion_tokens": 42, "temperature": 0.5, "top_p": 0.9, "stop": "END", "seed": 3,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                "user": "ignored", "presence_penalty": 0
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(reply["usage"]["total_tokens"], 9);
        let seen = engine.seen.lock().unwrap()[0].clone();
        assert_eq!(seen.max_tokens, 42);
        assert_eq!(seen.temperature, Some(0.5));
        assert_eq!(seen.top_p, Some(0.9));
        assert_eq!(seen.stop, vec!["END".to_string()]);
        assert_eq!(seen.seed, Some(3));
        assert_eq!(seen.json_schema, Some(json!({"type": "object"})));
        assert_eq!(store.completion_count().await.unwrap(), 1);

        // Without a limit the server's default applies.
        post(&router, &token, json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(engine.seen.lock().unwrap()[1].max_tokens, 10);
    }

    async fn send(router: &axum::Router, token: &str, session: Option<&str>, body: Value) -> (StatusCode, Option<String>) {
        let mut request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"));
        if let Some(session) = session {
            request = request.header("x-session-id", session);
        }
        let response = router.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let session = response.headers().get("x-session-id").map(|v| v.to_str().unwrap().to_string());
        (response.status(), session)
    }

    async fn get_json(router: &axum::Router, token: &str, path: &str) -> Value {
        let request = Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn proxied_exchanges_are_recorded_as_the_callers_trajectory() {
        let (router, _engine, store, _dir, token) = fixture().await;
        let tools = json!([{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]);
        // An external agent's loop: the model calls a tool, the client runs it and sends
        // the result back in the next request, under its own session id.
        let (status, first) = send(
            &router,
            &token,
            Some("ext-1"),
            json!({"model": "scripted", "tools": tools,
            "messages": [{"role": "user", "content": "read a"}]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, second) = send(&router, &token, Some("ext-1"), json!({"model": "scripted", "messages": [
            {"role": "user", "content": "read a"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "file body"}
        ]})).await;
        assert_eq!(first, second, "one client session id, one session");
        let session = first.unwrap();
        let trajectory = get_json(&router, &token, &format!("/api/sessions/{session}/trajectory")).await;
        let kinds: Vec<&str> = trajectory["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["user_message", "model_call", "model_output", "tool_call", "tool_result", "model_call", "model_output", "final_answer"]
        );
        assert_eq!(trajectory["events"][4]["payload"]["name"], "read");
        assert_eq!(trajectory["events"][4]["payload"]["excerpt"], "file body");

        // Without an id, a repeated request is a retry and joins the session of the first,
        // apart from ext-1.
        let plain = json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]});
        let (_, a) = send(&router, &token, None, plain.clone()).await;
        let (_, b) = send(&router, &token, None, plain.clone()).await;
        assert_eq!(a, b);
        assert_ne!(a.as_deref(), Some(session.as_str()));

        // Another user's exchanges never land in these sessions.
        let (_, other) = crate::http::auth::create_user_with_token(store.as_ref(), "other", false).await.unwrap();
        let (_, theirs) = send(&router, &other, Some("ext-1"), plain).await;
        assert_ne!(theirs.as_deref(), Some(session.as_str()));
        assert_eq!(get_json(&router, &token, "/api/sessions").await["sessions"].as_array().unwrap().len(), 2);
        let (status, _) =
            send(&router, &token, Some(&"x".repeat(200)), json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}))
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn every_endpoint_but_healthz_needs_a_valid_token() {
        let (router, engine, _store, _dir, token) = fixture().await;
        let body = json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]});
        for bad in ["", "not-a-token", "sh-0000"] {
            let (status, reply) = post(&router, bad, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(reply["error"]["code"], "invalid_api_key");
        }
        assert!(engine.seen.lock().unwrap().is_empty(), "no anonymous request reached the engine");
        let get = |path: &str, auth: Option<&str>| {
            let mut request = Request::get(path);
            if let Some(token) = auth {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            router.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        assert_eq!(get("/v1/models", None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(get("/v1/models", Some(&token)).await.unwrap().status(), StatusCode::OK);
        assert_eq!(get("/healthz", None).await.unwrap().status(), StatusCode::OK);
        assert_eq!(post(&router, &token, body).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn streams_follow_openai_chunk_order_with_usage_and_done() {
        let (router, _engine, store, _dir, token) = fixture().await;
        let (status, body) = post(
            &router,
            &token,
            json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let data = sse_data(&body);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello there");
        assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 2);
        // Every chunk carries a usage key, null until the last, as OpenAI sends it.
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()));
        assert_eq!(store.completion_count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn tool_calls_come_back_in_openai_shape_plain_and_streamed() {
        let (router, engine, _store, _dir, token) = fixture().await;
        let tools = json!([{"type": "function", "function": {"name": "read", "parameters": {"type": "object",
            "properties": {"path": {"anyOf": [{"type": "string"}, {"const": "-"}]}, "mode": {"enum": ["a", "b"]}}}}}]);
        let (_, body) =
            post(&router, &token, json!({"model": "scripted", "messages": [{"role": "user", "content": "read a"}], "tools": tools})).await;
        let reply: Value = serde_json::from_str(&body).unwrap();
        let message = &reply["choices"][0]["message"];
        assert!(message["content"].is_null());
        assert_eq!(message["tool_calls"][0]["function"]["name"], "read");
        assert_eq!(message["tool_calls"][0]["type"], "function");
        assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(engine.seen.lock().unwrap()[0].tools[0].parameters["properties"]["mode"]["enum"], json!(["a", "b"]));

        // A prior tool call and its result are passed on to the engine.
        let (status, body) = post(
            &router,
            &token,
            json!({"model": "scripted", "stream": true, "tools": tools, "messages": [
                {"role": "user", "content": "read a"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "file body"}
            ]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let chunks: Vec<Value> = sse_data(&body).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
        let streamed_call = chunks.iter().find(|c| !c["choices"][0]["delta"]["tool_calls"].is_null()).unwrap();
        assert_eq!(streamed_call["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(streamed_call["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], r#"{"path":"a.txt"}"#);
        let seen = engine.seen.lock().unwrap()[1].clone();
        let agent::engine::Prompt::Messages(messages) = seen.prompt else { panic!("chat prompt expected") };
        assert_eq!(messages[1].tool_calls[0].id, "call_1");
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
    }

    /// Sends a completion request with extra headers; the status, the session the reply
    /// names and the body (JSON, or the raw text of a stream as a JSON string).
    async fn send_with(router: &axum::Router, token: &str, headers: &[(&str, &str)], body: Value) -> (StatusCode, Option<String>, Value) {
        let mut request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = response.status();
        let session = response.headers().get("x-session-id").map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (status, session, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The recorded events of a session.
    async fn events(router: &axum::Router, token: &str, session: &str) -> Vec<Value> {
        get_json(router, token, &format!("/api/sessions/{session}/trajectory")).await["events"].as_array().unwrap().clone()
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
    }

    fn user_texts(events: &[Value]) -> Vec<&str> {
        events.iter().filter(|e| e["kind"] == "user_message").map(|e| e["payload"]["text"].as_str().unwrap()).collect()
    }

    async fn session_count(router: &axum::Router, token: &str) -> usize {
        get_json(router, token, "/api/sessions").await["sessions"].as_array().unwrap().len()
    }

    fn read_tool() -> Value {
        json!([{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}])
    }

    /// The assistant message that the scripted engine's tool call comes back as, with the
    /// call id as the client rewrote it.
    fn called(id: &str) -> Value {
        json!({"role": "assistant", "content": null,
               "tool_calls": [{"id": id, "type": "function", "function": {"name": "read", "arguments": "{\"path\": \"a.txt\"}"}}]})
    }

    #[tokio::test]
    async fn concurrent_conversations_land_in_their_own_sessions_in_order() {
        let (router, _engine, _store, _dir, token) = fixture().await;
        // Conversation A is an agent reading a file; conversation B is a plain chat. Their
        // requests arrive at the same time, without session ids.
        let a1 = json!({"model": "scripted", "tools": read_tool(), "messages": [{"role": "user", "content": "read a"}]});
        let b1 = json!({"model": "scripted", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
        let ((_, a_first, _), (_, b_first, _)) = tokio::join!(send_with(&router, &token, &[], a1), send_with(&router, &token, &[], b1));
        let a2 = json!({"model": "scripted", "tools": read_tool(), "messages": [
            {"role": "user", "content": [{"type": "text", "text": "read a "}]}, called("call_1"),
            {"role": "tool", "tool_call_id": "call_1", "content": "file body"}
        ]});
        // The client sends the reply back with other whitespace: still the same reply.
        let b2 = json!({"model": "scripted", "stream": true, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there\n"}, {"role": "user", "content": "and now?"}
        ]});
        let ((a_status, a_second, _), (b_status, b_second, _)) =
            tokio::join!(send_with(&router, &token, &[], a2), send_with(&router, &token, &[], b2));
        assert_eq!((a_status, b_status), (StatusCode::OK, StatusCode::OK));
        assert_eq!(a_first, a_second, "a follow-up extends its conversation's session");
        assert_eq!(b_first, b_second, "a follow-up extends its conversation's session");
        assert_ne!(a_first, b_first, "two conversations, two sessions");
        assert_eq!(session_count(&router, &token).await, 2);

        let a = events(&router, &token, &a_first.unwrap()).await;
        assert_eq!(
            kinds(&a),
            ["user_message", "model_call", "model_output", "tool_call", "tool_result", "model_call", "model_output", "tool_call"]
        );
        assert_eq!(a[4]["payload"]["excerpt"], "file body");
        let b = events(&router, &token, &b_first.unwrap()).await;
        assert_eq!(
            kinds(&b),
            ["user_message", "model_call", "model_output", "final_answer", "user_message", "model_call", "model_output", "final_answer"]
        );
        assert_eq!(user_texts(&b), ["hi", "and now?"]);
    }

    #[tokio::test]
    async fn unrelated_calls_each_start_a_session() {
        let (router, _engine, _store, _dir, token) = fixture().await;
        let mut sessions = std::collections::BTreeSet::new();
        for i in 0..14 {
            let body = json!({"model": "scripted", "messages": [
                {"role": "system", "content": "You are a helpful model."}, {"role": "user", "content": format!("question {i}")}
            ]});
            let (status, session, _) = send_with(&router, &token, &[], body).await;
            assert_eq!(status, StatusCode::OK);
            sessions.insert(session.unwrap());
        }
        assert_eq!(sessions.len(), 14);
        assert_eq!(session_count(&router, &token).await, 14);
        for session in &sessions {
            let events = events(&router, &token, session).await;
            assert_eq!(kinds(&events), ["user_message", "model_call", "model_output", "final_answer"]);
        }
    }

    #[tokio::test]
    async fn a_retry_records_nothing_new() {
        let (router, engine, _store, _dir, token) = fixture().await;
        let body = json!({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]});
        let (_, first, _) = send_with(&router, &token, &[], body.clone()).await;
        let session = first.clone().unwrap();
        let before = events(&router, &token, &session).await;
        for stream in [false, true, false] {
            let mut retry = body.clone();
            retry["stream"] = json!(stream);
            let (status, again, _) = send_with(&router, &token, &[], retry).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(again, first, "a retry belongs to the session of the first try");
        }
        assert_eq!(events(&router, &token, &session).await, before, "the retries recorded nothing");
        assert_eq!(session_count(&router, &token).await, 1);

        // A request that failed and is tried again records its message once and the reply
        // of the try that succeeded.
        engine.fail_next(1);
        let tools_body = json!({"model": "scripted", "tools": read_tool(), "messages": [{"role": "user", "content": "read b"}]});
        let (status, failed, _) = send_with(&router, &token, &[], tools_body.clone()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, retried, _) = send_with(&router, &token, &[], tools_body).await;
        assert_eq!(status, StatusCode::OK);
        // The failed reply carries no session header; the session is the one of the retry.
        assert!(failed.is_none());
        let events = events(&router, &token, &retried.unwrap()).await;
        assert_eq!(kinds(&events), ["user_message", "model_call", "model_output", "tool_call"]);
    }

    #[tokio::test]
    async fn a_failed_request_records_no_answer() {
        let (router, engine, _store, _dir, token) = fixture().await;
        // A stream that fails after its first piece of text.
        engine.fail_next(1);
        let body = json!({"model": "scripted", "stream": true, "messages": [{"role": "user", "content": "tell me"}]});
        let (status, session, stream) = send_with(&router, &token, &[], body).await;
        assert_eq!(status, StatusCode::OK);
        assert!(stream.as_str().unwrap().contains("server_error"), "{stream}");
        let recorded = events(&router, &token, &session.unwrap()).await;
        assert_eq!(kinds(&recorded), ["user_message"], "no empty answer, no final answer");

        // A plain request the engine fails.
        engine.fail_next(1);
        let body = json!({"model": "scripted", "messages": [{"role": "user", "content": "tell me more"}]});
        let (status, _, error) = send_with(&router, &token, &[], body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error["error"]["code"], "internal_error");

        // A client that leaves before the stream is read to its end.
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(json!({"model": "scripted", "stream": true, "messages": [{"role": "user", "content": "bye"}]}).to_string()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let left = response.headers().get("x-session-id").map(|v| v.to_str().unwrap().to_string());
        drop(response);

        let sessions = get_json(&router, &token, "/api/sessions").await;
        for session in sessions["sessions"].as_array().unwrap() {
            let recorded = events(&router, &token, session["id"].as_str().unwrap()).await;
            assert!(
                recorded.iter().all(|e| e["kind"] != "final_answer" && e["kind"] != "model_output"),
                "a failed request recorded an answer: {recorded:?}"
            );
        }
        assert!(left.is_some());
    }

    #[tokio::test]
    async fn rewritten_call_ids_link_to_the_recorded_call() {
        let (router, _engine, _store, _dir, token) = fixture().await;
        let first = json!({"model": "scripted", "tools": read_tool(), "messages": [{"role": "user", "content": "read a"}]});
        let (_, session, _) = send_with(&router, &token, &[], first).await;
        // OpenClaw sends `call_1` back as `call1`.
        let second = json!({"model": "scripted", "tools": read_tool(), "messages": [
            {"role": "user", "content": "read a"}, called("call1"),
            {"role": "tool", "tool_call_id": "call1", "content": "file body"}
        ]});
        let (_, again, _) = send_with(&router, &token, &[], second).await;
        assert_eq!(again, session);
        let recorded = events(&router, &token, session.as_deref().unwrap()).await;
        let result = recorded.iter().find(|e| e["kind"] == "tool_result").unwrap();
        let call = recorded.iter().find(|e| e["kind"] == "tool_call").unwrap();
        assert_eq!(result["payload"]["call_id"], "call_1");
        assert_eq!(result["payload"]["call_id"], call["payload"]["call_id"]);
        assert_eq!(result["payload"]["name"], "read");

        // An id that matches nothing links by position: the first result answers the
        // first call of the reply it follows.
        let third = json!({"model": "scripted", "tools": read_tool(), "messages": [
            {"role": "user", "content": "read a"}, called("call1"),
            {"role": "tool", "tool_call_id": "call1", "content": "file body"},
            called("tool-use-7"), {"role": "tool", "tool_call_id": "unknown", "content": "second body"}
        ]});
        let (_, third_session, _) = send_with(&router, &token, &[], third).await;
        assert_eq!(third_session, session);
        let recorded = events(&router, &token, session.as_deref().unwrap()).await;
        let results: Vec<&Value> = recorded.iter().filter(|e| e["kind"] == "tool_result").collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1]["payload"]["call_id"], "call_1");
        assert_eq!(results[1]["payload"]["name"], "read");
        assert_eq!(results[1]["payload"]["excerpt"], "second body");
    }

    /// The system prompt the engine saw for request `index`.
    fn system_prompt(engine: &ScriptedEngine, index: usize) -> String {
        let seen = engine.seen.lock().unwrap()[index].clone();
        let agent::engine::Prompt::Messages(messages) = seen.prompt else { panic!("chat prompt expected") };
        messages.iter().filter(|m| m.role() == agent::engine::Role::System).map(|m| m.content.clone()).collect()
    }

    /// Publishes the starter skills and `extra` more as shared skills.
    async fn publish_skills(harness: &TestApp, extra: Vec<(String, String)>) {
        let repo = &harness.state.skills;
        let mut skills = crate::storage::skills::starter_skills();
        for (slug, description) in extra {
            let mut files = agent::skills::bundle::Files::new();
            files.insert("SKILL.md".into(), format!("---\nname: {slug}\ndescription: {description}\n---\nSteps.\n").into_bytes());
            skills.push((slug, files));
        }
        crate::storage::skills::load_starter_skills(repo.store.as_ref(), skills).await.unwrap();
    }

    #[tokio::test]
    async fn the_catalog_goes_only_to_requests_with_tools() {
        let (router, engine, _store, harness, token) = fixture().await;
        publish_skills(&harness, vec![]).await;
        let plain = json!({"model": "scripted", "messages": [{"role": "user", "content": "List the files in data/."}]});
        let (status, _, _) = send_with(&router, &token, &[], plain).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!system_prompt(&engine, 0).contains("<available_skills>"), "a plain chat request gets no catalog");

        let with_tools =
            json!({"model": "scripted", "tools": read_tool(), "messages": [{"role": "user", "content": "List the files in data/."}]});
        send_with(&router, &token, &[], with_tools.clone()).await;
        let prompt = system_prompt(&engine, 1);
        assert!(prompt.contains("<available_skills>") && prompt.contains("<name>workspace-files</name>"), "{prompt}");

        for off in ["off", "false", "0", "OFF"] {
            let (status, _, _) = send_with(&router, &token, &[("x-skillhive-catalog", off)], with_tools.clone()).await;
            assert_eq!(status, StatusCode::OK);
            let seen = engine.seen.lock().unwrap().len();
            assert!(!system_prompt(&engine, seen - 1).contains("<available_skills>"), "turned off by {off}");
        }
        let (status, _, _) = send_with(&router, &token, &[("x-skillhive-catalog", "on")], with_tools.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let seen = engine.seen.lock().unwrap().len();
        assert!(system_prompt(&engine, seen - 1).contains("<available_skills>"));

        let (status, _, error) = send_with(&router, &token, &[("x-skillhive-catalog", "sometimes")], with_tools).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error["error"]["code"], "invalid_value");
        assert!(error["error"]["message"].as_str().unwrap().contains("X-Skillhive-Catalog"), "{error}");
        assert_eq!(engine.seen.lock().unwrap().len(), seen, "a refused request reaches no engine");
    }

    #[tokio::test]
    async fn a_tight_catalog_keeps_the_skills_relevant_to_the_request() {
        let config = agent::agent_loop::AgentConfig { catalog_budget: 1_000, ..Default::default() };
        let (router, engine, _store, harness, token) = fixture_with(config).await;
        // 61 skills whose names sort before the starter skills and that share no word with
        // the request, and the 5 starter skills: 66.
        let unrelated =
            (0..61).map(|i| (format!("a-calendar-{i:02}"), "Formats calendar dates for quarterly reports and invoices.".to_string()));
        publish_skills(&harness, unrelated.collect()).await;
        let request = "Inspect the csv columns, find where a phrase appears, write a shell script, summarize the long log \
                       and organize the workspace.";
        let body = json!({"model": "scripted", "tools": read_tool(), "messages": [
            {"role": "system", "content": "You are an agent."}, {"role": "user", "content": request}
        ]});
        let (status, _, _) = send_with(&router, &token, &[], body).await;
        assert_eq!(status, StatusCode::OK);
        let prompt = system_prompt(&engine, 0);
        let catalog = &prompt[prompt.find("<available_skills>").expect("a catalog")..];
        assert!(catalog.len() <= 1_000, "{catalog}");
        for slug in ["csv-inspect", "search-text", "shell-script-safely", "summarize-long-file", "workspace-files"] {
            assert!(catalog.contains(&format!("<name>{slug}</name>")), "{slug} missing from {catalog}");
        }
        assert!(catalog.matches("<skill>").count() < 10, "the budget dropped most skills: {catalog}");
    }
}
