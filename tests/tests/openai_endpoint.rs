//! The OpenAI-compatible endpoint, end to end: the real binary, the real default model,
//! a real SQLite file in a temporary data directory, on an ephemeral port.

use std::time::Duration;

use e2e::{Server, MODEL};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

async fn post(server: &Server, body: Value) -> (u16, Value) {
    let response =
        client().post(format!("{}/v1/chat/completions", server.url)).bearer_auth(&server.token).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post_raw(server: &Server, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Reads an SSE response, to its end, into its `data:` payloads.
async fn sse_payloads(response: reqwest::Response) -> Vec<String> {
    let body = response.text().await.unwrap();
    body.lines().filter_map(|line| line.strip_prefix("data: ")).map(str::to_string).collect()
}

fn assert_openai_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
    assert!(error["type"].is_string(), "no type in {body}");
    assert_eq!(error["code"], code, "unexpected code in {body}");
}

#[tokio::test]
async fn chat_completion_returns_text_usage_and_is_logged() {
    let server = Server::start(&[]);
    let (status, body) = post(
        &server,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "empty completion: {body}");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{usage}");
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion_tokens), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), usage["prompt_tokens"].as_u64().unwrap() + completion_tokens);

    // The usage log row is in the SQLite file of this server's data directory.
    let health: Value = client().get(format!("{}/healthz", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let db = server.data_dir.path().join("skillhive.db");
    assert!(db.exists(), "no database at {}", db.display());
    let models: Value =
        client().get(format!("{}/v1/models", server.url)).bearer_auth(&server.token).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);

    // Proxy mode: the exchange is in this user's trajectory.
    let sessions: Value =
        client().get(format!("{}/api/sessions", server.url)).bearer_auth(&server.token).send().await.unwrap().json().await.unwrap();
    let session = sessions["sessions"][0]["id"].as_str().expect("a proxy session").to_string();
    let trajectory: Value = client()
        .get(format!("{}/api/sessions/{session}/trajectory", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = trajectory["events"].as_array().unwrap();
    assert_eq!(events[0]["payload"]["text"], "What is the capital of France?");
    let call = events.iter().find(|e| e["kind"] == "model_call").expect("a model call");
    assert_eq!(call["payload"]["prompt_tokens"], usage["prompt_tokens"]);
    let output = events.iter().find(|e| e["kind"] == "model_output").expect("a model output");
    assert_eq!(output["payload"]["text"], text);
    assert!(server.terminate(), "server did not shut down cleanly on SIGTERM");
}

#[tokio::test]
async fn streamed_completion_yields_chunks_usage_and_done() {
    let server = Server::start(&[]);
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&server.token)
        .json(&json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
            "max_completion_tokens": 20,
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let payloads = sse_payloads(response).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{payloads:?}");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|choice| choice["delta"]["content"].as_str())).collect();
    let content_chunks = chunks
        .iter()
        .filter(|c| c["choices"].get(0).is_some_and(|choice| choice["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())))
        .count();
    assert!(content_chunks >= 3, "expected several content chunks, got {content_chunks}: {payloads:?}");
    assert!(!text.trim().is_empty());
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().any(|c| c["choices"].get(0).is_some_and(|choice| choice["finish_reason"].is_string())));
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 3, "{usage}");
}

#[tokio::test]
async fn json_schema_response_format_is_enforced() {
    let server = Server::start(&[]);
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "size": {"enum": ["small", "medium", "large"]}
        },
        "required": ["city", "population", "size"],
        "additionalProperties": false
    });
    let (status, body) = post(
        &server,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Describe Paris as JSON."}],
            "max_tokens": 64,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&value), "{value} does not match the schema");
}

#[tokio::test]
async fn tools_come_back_as_openai_tool_calls() {
    let server = Server::start(&[]);
    let tools = json!([{
        "type": "function",
        "function": {
            "name": "set_unit",
            "description": "Set the unit of temperature readings.",
            "parameters": {
                "type": "object",
                "properties": {
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "precision": {"anyOf": [{"type": "integer"}, {"const": "auto"}]}
                },
                "required": ["unit", "precision"],
                "additionalProperties": false
            }
        }
    }]);
    let (status, body) = post(
        &server,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Use celsius."}],
            "tools": tools,
            "tool_choice": "required",
            "max_tokens": 48
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "set_unit");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(["celsius", "fahrenheit"].contains(&arguments["unit"].as_str().unwrap()), "{arguments}");
    assert!(arguments["precision"].is_i64() || arguments["precision"] == "auto", "{arguments}");
}

#[tokio::test]
async fn concurrent_requests_both_complete() {
    let server = Server::start(&[]);
    let request = |question: &str| json!({"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 16});
    let (a, b) = tokio::join!(post(&server, request("Name a fruit.")), post(&server, request("Name a color.")));
    for (status, body) in [a, b] {
        assert_eq!(status, 200, "{body}");
        assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }
}

#[tokio::test]
async fn a_seed_makes_sampling_reproducible() {
    let server = Server::start(&[]);
    let request = |seed: u64| {
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
            "max_tokens": 24, "temperature": 1.0, "seed": seed, "logprobs": true
        })
    };
    let (_, first) = post(&server, request(11)).await;
    let (_, again) = post(&server, request(11)).await;
    let (_, other) = post(&server, request(12)).await;
    let text = |body: &Value| body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(text(&first), text(&again), "the same seed gave different text");
    assert_ne!(text(&first), text(&other), "different seeds gave the same text");
    // Log-probabilities are real (negative for a sampled token, not the forced 0).
    let logprobs = first["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!logprobs.is_empty());
    assert!(logprobs.iter().all(|t| t["logprob"].as_f64().unwrap() <= 0.0));
    assert!(logprobs.iter().any(|t| t["logprob"].as_f64().unwrap() < -1e-3));
}

#[tokio::test]
async fn logprobs_are_natural_log_probabilities_greedy_or_sampled_streamed_or_not() {
    let server = Server::start(&[]);
    let request = |extra: Value| {
        let mut body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "logprobs": true, "top_logprobs": 3
        });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let check = |content: &[Value], what: &str| {
        assert!(!content.is_empty(), "{what}: no logprobs");
        for token in content {
            let logprob = token["logprob"].as_f64().unwrap();
            assert!(logprob <= 0.0, "{what}: logprob {logprob} above 0: {token}");
            let top = token["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3, "{what}: {token}");
            let mass: f64 = top.iter().map(|t| t["logprob"].as_f64().unwrap().exp()).sum();
            assert!(mass <= 1.0 + 1e-4, "{what}: the top 3 hold {mass}: {token}");
            assert!(top.iter().all(|t| t["logprob"].as_f64().unwrap() <= 0.0 && t["token"].is_string()), "{what}: {token}");
        }
    };
    for (extra, what) in
        [(json!({}), "greedy"), (json!({"temperature": 0.8, "seed": 3}), "seeded"), (json!({"temperature": 0.8}), "sampled")]
    {
        let (status, body) = post(&server, request(extra)).await;
        assert_eq!(status, 200, "{body}");
        check(body["choices"][0]["logprobs"]["content"].as_array().unwrap(), what);
    }
    // Greedy: the chosen token is the most likely alternative.
    let (_, greedy) = post(&server, request(json!({}))).await;
    for token in greedy["choices"][0]["logprobs"]["content"].as_array().unwrap() {
        assert!((token["logprob"].as_f64().unwrap() - token["top_logprobs"][0]["logprob"].as_f64().unwrap()).abs() < 1e-6, "{token}");
    }
    // Streamed, each chunk carries its token's values.
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth(&server.token)
        .json(&request(json!({"stream": true})))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let streamed: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    check(&streamed, "streamed");
    // n > 1 with logprobs is refused with a clear error rather than answered wrongly.
    let (status, refused) = post(&server, request(json!({"n": 2, "temperature": 0.8}))).await;
    assert_eq!(status, 400, "{refused}");
}

#[tokio::test]
async fn bad_input_gets_openai_errors_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-tokens", "64", "--body-limit", "4096"]);

    // Without a token, or with a wrong one, nothing is served.
    for token in [None, Some("sh-wrong")] {
        let mut request = client().post(format!("{}/v1/chat/completions", server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_openai_error(&response.json().await.unwrap(), "invalid_api_key");
    }

    let (status, body) = post_raw(&server, "{\"model\": ").await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_json");

    let (status, body) = post(&server, json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "model_not_found");

    let (status, body) = post(&server, json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 65})).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "max_tokens_exceeded");
    assert_eq!(body["error"]["param"], "max_tokens");

    let (status, body) =
        post(&server, json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(8192)}], "max_tokens": 4})).await;
    assert_eq!(status, 413);
    assert_openai_error(&body, "request_too_large");

    let (status, body) = post(&server, json!({"model": MODEL, "messages": []})).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request");

    let (status, body) = post(&server, json!({"model": MODEL})).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request");

    let (status, body) = post(
        &server,
        json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "unsupported_content");

    let response = client().get(format!("{}/v1/nowhere", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_openai_error(&response.json().await.unwrap(), "unknown_endpoint");

    // After all of that, a valid request is still served.
    let (status, body) =
        post(&server, json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8})).await;
    assert_eq!(status, 200, "{body}");
}
