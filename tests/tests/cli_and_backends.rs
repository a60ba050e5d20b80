//! The command line (model fetching, bad model files) and the remote backend, end to end.

use std::process::Command;
use std::time::Duration;

use e2e::{repo_root, skillhive_binary, Server, MODEL};
use serde_json::{json, Value};

#[test]
fn model_pull_fetches_verifies_and_is_idempotent() {
    let cache = tempfile::tempdir().unwrap();
    let pull = || Command::new(skillhive_binary()).args(["model", "pull"]).env("SKILLHIVE_CACHE", cache.path()).output().unwrap();
    let first = pull();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("fetched"), "{}", String::from_utf8_lossy(&first.stdout));
    let model = cache.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(model.metadata().unwrap().len() > 90_000_000);
    // No staging directory is left behind.
    assert_eq!(std::fs::read_dir(cache.path().join("models")).unwrap().count(), 1);

    let second = pull();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("already present"));

    // A damaged copy is replaced by the next pull.
    std::fs::write(&model, b"GGUF damaged").unwrap();
    let third = pull();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert!(String::from_utf8_lossy(&third.stdout).starts_with("fetched"));
}

fn serve_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(skillhive_binary());
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data.path()).args(args).env("RUST_LOG", "off");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "serve should have failed");
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

#[test]
fn missing_or_corrupt_models_are_one_line_errors_that_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();

    let missing = serve_error(&["--model", dir.path().join("absent.gguf").to_str().unwrap()], &[]);
    assert_eq!(missing.lines().count(), 1, "{missing}");
    assert!(missing.contains("does not exist") && missing.contains("--model"), "{missing}");

    let html = dir.path().join("page.gguf");
    std::fs::write(&html, "<html>rate limited</html>").unwrap();
    let not_gguf = serve_error(&["--model", html.to_str().unwrap()], &[]);
    assert_eq!(not_gguf.lines().count(), 1, "{not_gguf}");
    assert!(not_gguf.contains("not a GGUF file"), "{not_gguf}");

    // A GGUF cut short (an interrupted copy) names the fix too.
    let real = std::fs::read(
        Command::new(skillhive_binary()).args(["model", "path"]).output().map(|o| String::from_utf8(o.stdout).unwrap()).unwrap().trim(),
    )
    .unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let cut = serve_error(&["--model", truncated.to_str().unwrap()], &[]);
    assert_eq!(cut.lines().count(), 1, "{cut}");
    assert!(cut.contains("damaged or truncated") && cut.contains("--model"), "{cut}");

    // A default model whose bytes were damaged is caught by its pinned hash.
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("models")).unwrap();
    std::fs::write(cache.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"), b"GGUF\x03\x00\x00\x00cut").unwrap();
    let corrupt = serve_error(&[], &[("SKILLHIVE_CACHE", cache.path().to_str().unwrap())]);
    assert_eq!(corrupt.lines().count(), 1, "{corrupt}");
    assert!(corrupt.contains("corrupt") && corrupt.contains("skillhive model pull"), "{corrupt}");
}

#[tokio::test]
async fn the_openai_backend_serves_through_another_endpoint() {
    // The upstream is a second skillhive on the embedded model: a real OpenAI-compatible
    // server, reached over HTTP exactly as vLLM or a hosted API would be.
    let upstream = Server::start(&[]);
    let base = format!("{}/v1", upstream.url);
    let proxy = Server::start(&[
        "--backend",
        "openai",
        "--openai-base-url",
        &base,
        "--openai-model",
        MODEL,
        "--model-id",
        "relayed",
        "--max-tokens",
        "200000",
        "--openai-api-key",
        &upstream.token,
    ]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let body: Value = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(&proxy.token)
        .json(&json!({"model": "relayed", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 12}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["model"], "relayed", "{body}");
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() >= 1);

    let response = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(&proxy.token)
        .json(&json!({"model": "relayed", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 12, "stream": true}))
        .send()
        .await
        .unwrap();
    let raw = response.text().await.unwrap();
    let deltas =
        raw.lines().filter(|l| l.starts_with("data: {") && l.contains("\"content\":\"") && !l.contains("\"content\":\"\"")).count();
    assert!(deltas >= 2, "{raw}");
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");

    // The upstream's errors reach the client as client errors, not as a 500.
    let status = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(&proxy.token)
        .json(&json!({"model": "relayed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);
}

#[test]
fn the_official_openai_python_client_works() {
    let python =
        std::env::var("SKILLHIVE_TEST_PYTHON").unwrap_or_else(|_| repo_root().join(".venv/bin/python").to_string_lossy().into_owned());
    let server = Server::start(&[]);
    let output = Command::new(&python)
        .arg(repo_root().join("tests/openai_client.py"))
        .arg(&server.url)
        .arg(MODEL)
        .arg(&server.token)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); scripts/test creates .venv with the openai package"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openai client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("openai client: 6 checks passed"), "{stdout}");
}
