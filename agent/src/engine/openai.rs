//! The remote backend: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's
//! server, mistralrs-server, another skillhive, hosted APIs), addressed by base URL and key.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{
    validate_request, ChatMessage, Choice, Engine, EngineError, EventStream, FinishReason, Generation, GenerationRequest, ModelInfo,
    Prompt, Role, StreamEvent, TokenLogprob, ToolCall, ToolChoice, Usage,
};

#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    /// Base URL including the version prefix, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// The model name to send upstream.
    pub model: String,
    /// The name clients of ours use for it.
    pub served_id: String,
    pub context_window: Option<usize>,
    pub timeout: Duration,
}

pub struct OpenAiEngine {
    client: reqwest::Client,
    options: OpenAiOptions,
    info: ModelInfo,
}

impl OpenAiEngine {
    pub fn new(options: OpenAiOptions) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(options.timeout).build()?;
        let info = ModelInfo { id: options.served_id.clone(), context_window: options.context_window, backend: "openai" };
        Ok(Self { client, options, info })
    }

    fn body(&self, request: &GenerationRequest, stream: bool) -> Result<Value, EngineError> {
        validate_request(request)?;
        let Prompt::Messages(messages) = &request.prompt else {
            return Err(EngineError::InvalidRequest("token prompts need the embedded backend; the OpenAI chat API takes messages".into()));
        };
        let mut body = json!({
            "model": self.options.model,
            "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            "max_tokens": request.max_tokens,
            "n": request.n,
            "stream": stream,
        });
        let object = body.as_object_mut().expect("body is an object");
        if stream {
            object.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        if let Some(t) = request.temperature {
            object.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            object.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            object.insert("stop".into(), json!(request.stop));
        }
        if let Some(seed) = request.seed {
            object.insert("seed".into(), json!(seed));
        }
        if let Some(k) = request.logprobs {
            object.insert("logprobs".into(), json!(true));
            object.insert("top_logprobs".into(), json!(k));
        }
        if let Some(schema) = &request.json_schema {
            object.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": { "name": "response", "schema": schema, "strict": true } }),
            );
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
                .collect();
            object.insert("tools".into(), json!(tools));
            let choice = match &request.tool_choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(name) => json!({ "type": "function", "function": { "name": name } }),
            };
            object.insert("tool_choice".into(), choice);
        }
        Ok(body)
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, EngineError> {
        let url = format!("{}/chat/completions", self.options.base_url.trim_end_matches('/'));
        let mut call = self.client.post(&url).json(body);
        if let Some(key) = &self.options.api_key {
            call = call.bearer_auth(key);
        }
        let response = call.send().await.map_err(|e| EngineError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let message =
            serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["message"].as_str().map(str::to_string)).unwrap_or(text);
        if status.is_client_error() {
            Err(EngineError::InvalidRequest(format!("upstream rejected the request ({status}): {message}")))
        } else {
            Err(EngineError::Backend(format!("upstream failed ({status}): {message}")))
        }
    }
}

fn message_json(message: &ChatMessage) -> Value {
    let mut value = json!({ "role": message.role().as_str(), "content": message.content });
    if message.role() == Role::Assistant && !message.tool_calls.is_empty() {
        value["tool_calls"] = json!(message
            .tool_calls
            .iter()
            .map(|c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
            .collect::<Vec<_>>());
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    value
}

fn parse_usage(value: &Value) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: value.get("prompt_tokens")?.as_u64()? as usize,
        completion_tokens: value.get("completion_tokens")?.as_u64()? as usize,
    })
}

fn parse_logprobs(value: &Value) -> Vec<TokenLogprob> {
    value["content"]
        .as_array()
        .map(|tokens| {
            tokens
                .iter()
                .map(|t| TokenLogprob {
                    token: t["token"].as_str().unwrap_or_default().to_string(),
                    logprob: t["logprob"].as_f64().unwrap_or(0.0) as f32,
                    top: t["top_logprobs"]
                        .as_array()
                        .map(|alts| {
                            alts.iter()
                                .map(|a| (a["token"].as_str().unwrap_or_default().to_string(), a["logprob"].as_f64().unwrap_or(0.0) as f32))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_tool_calls(value: &Value) -> Vec<ToolCall> {
    value
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    name: c["function"]["name"].as_str().unwrap_or_default().to_string(),
                    arguments: c["function"]["arguments"].as_str().unwrap_or("{}").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Tool calls arrive in fragments while streaming; this puts them back together per index.
#[derive(Default)]
struct ToolCallAssembler {
    calls: BTreeMap<u64, ToolCall>,
}

impl ToolCallAssembler {
    fn add(&mut self, fragments: &Value) {
        for fragment in fragments.as_array().into_iter().flatten() {
            let index = fragment["index"].as_u64().unwrap_or(0);
            let call =
                self.calls.entry(index).or_insert_with(|| ToolCall { id: String::new(), name: String::new(), arguments: String::new() });
            if let Some(id) = fragment["id"].as_str() {
                call.id = id.to_string();
            }
            if let Some(name) = fragment["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
    }
    fn take(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls).into_values().collect()
    }
}

#[async_trait]
impl Engine for OpenAiEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
        let body = self.body(&request, false)?;
        let response: Value =
            self.post(&body).await?.json().await.map_err(|e| EngineError::Backend(format!("upstream sent an unreadable body: {e}")))?;
        let choices = response["choices"]
            .as_array()
            .ok_or_else(|| EngineError::Backend("upstream response has no choices".into()))?
            .iter()
            .map(|c| Choice {
                text: c["message"]["content"].as_str().unwrap_or_default().to_string(),
                tool_calls: parse_tool_calls(&c["message"]["tool_calls"]),
                finish_reason: c["finish_reason"].as_str().map(FinishReason::parse),
                logprobs: c.get("logprobs").filter(|l| !l.is_null()).map(parse_logprobs),
                token_ids: Vec::new(),
                token_logprobs: Vec::new(),
                token_entropies: Vec::new(),
            })
            .collect();
        Ok(Generation { choices, usage: parse_usage(&response["usage"]).unwrap_or_default() })
    }

    async fn score(&self, _prefix: &[u32], _continuation: &[u32]) -> Result<Vec<f32>, EngineError> {
        Err(EngineError::InvalidRequest("the OpenAI chat API cannot score given tokens; scoring needs the embedded backend".into()))
    }

    async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
        let body = self.body(&request, true)?;
        let response = self.post(&body).await?;
        let mut bytes = response.bytes_stream();
        let stream = async_stream::stream! {
            let mut pending = String::new();
            let mut assemblers: BTreeMap<u64, ToolCallAssembler> = BTreeMap::new();
            let mut usage = None;
            'read: while let Some(chunk) = bytes.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => { yield Err(EngineError::Backend(format!("upstream stream broke: {e}"))); return; }
                };
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    let Some(data) = line.trim().strip_prefix("data:") else { continue };
                    let data = data.trim();
                    if data == "[DONE]" {
                        break 'read;
                    }
                    let Ok(event) = serde_json::from_str::<Value>(data) else { continue };
                    if let Some(u) = parse_usage(&event["usage"]) {
                        usage = Some(u);
                    }
                    for choice in event["choices"].as_array().into_iter().flatten() {
                        let index = choice["index"].as_u64().unwrap_or(0);
                        let delta = &choice["delta"];
                        let text = delta["content"].as_str().unwrap_or_default();
                        let logprobs = choice.get("logprobs").map(parse_logprobs).unwrap_or_default();
                        if !text.is_empty() || !logprobs.is_empty() {
                            yield Ok(StreamEvent::Delta { index: index as usize, text: text.to_string(), logprobs });
                        }
                        if !delta["tool_calls"].is_null() {
                            assemblers.entry(index).or_default().add(&delta["tool_calls"]);
                        }
                        if let Some(reason) = choice["finish_reason"].as_str() {
                            if let Some(calls) = assemblers.get_mut(&index).map(ToolCallAssembler::take) {
                                if !calls.is_empty() {
                                    yield Ok(StreamEvent::ToolCalls { index: index as usize, calls });
                                }
                            }
                            yield Ok(StreamEvent::Finish { index: index as usize, reason: FinishReason::parse(reason) });
                        }
                    }
                }
            }
            yield Ok(StreamEvent::Usage(usage.unwrap_or_default()));
        };
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_tool_call_fragments_are_reassembled() {
        let mut assembler = ToolCallAssembler::default();
        assembler.add(&json!([{ "index": 0, "id": "call_1", "function": { "name": "read", "arguments": "{\"pa" } }]));
        assembler.add(&json!([{ "index": 0, "function": { "arguments": "th\":\"a\"}" } }]));
        let calls = assembler.take();
        assert_eq!(calls, vec![ToolCall { id: "call_1".into(), name: "read".into(), arguments: r#"{"path":"a"}"#.into() }]);
    }

    #[test]
    fn request_body_carries_sampling_tools_and_schema() {
        let engine = OpenAiEngine::new(OpenAiOptions {
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            model: "m".into(),
            served_id: "m".into(),
            context_window: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let mut request = GenerationRequest::chat(vec![ChatMessage::user("hi")], 5);
        request.seed = Some(3);
        request.stop = vec!["\n".into()];
        request.json_schema = Some(json!({"type":"object"}));
        let body = engine.body(&request, true).unwrap();
        assert_eq!(body["max_tokens"], 5);
        assert_eq!(body["seed"], 3);
        assert_eq!(body["stop"][0], "\n");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["response_format"]["json_schema"]["schema"]["type"], "object");
        request.prompt = Prompt::Tokens(vec![1, 2]);
        assert!(matches!(engine.body(&request, false), Err(EngineError::InvalidRequest(_))));
    }
}
