//! The few calls of skillhive's HTTP API that the experiment makes, as one user or admin.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::blocking::Client as Http;
use serde_json::{json, Value};

/// A user's (or admin's) view of one skillhive server.
#[derive(Clone)]
pub struct Client {
    http: Http,
    base: String,
    token: String,
}

/// What one agent turn returned.
#[derive(Debug, Clone)]
pub struct TurnReply {
    pub session_id: String,
    pub stop_reason: String,
    pub answer: String,
    pub steps: u64,
    pub tokens: u64,
    pub millis: u64,
}

impl Client {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        // Turns on a CPU take minutes at worst; the server's own limits end them first.
        let http = Http::builder().timeout(Duration::from_secs(900)).build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text()?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Empties the workspace, then writes `files` into it.
    pub fn reset_workspace<'a>(&self, files: impl IntoIterator<Item = (&'a String, &'a String)>) -> anyhow::Result<()> {
        let listing = self.send(reqwest::Method::GET, "/api/workspace/files", None)?;
        for file in listing["files"].as_array().cloned().unwrap_or_default() {
            let path = file["path"].as_str().unwrap_or_default();
            self.send(reqwest::Method::DELETE, &format!("/api/workspace/files/{path}"), None)?;
        }
        for (path, content) in files {
            let response =
                self.http.put(format!("{}/api/workspace/files/{path}", self.base)).bearer_auth(&self.token).body(content.clone()).send()?;
            if !response.status().is_success() {
                bail!("PUT {path}: {}: {}", response.status(), response.text().unwrap_or_default());
            }
        }
        Ok(())
    }

    /// A workspace file's content, or `None` when it does not exist.
    pub fn workspace_file(&self, path: &str) -> anyhow::Result<Option<String>> {
        let response = self.http.get(format!("{}/api/workspace/files/{path}", self.base)).bearer_auth(&self.token).send()?;
        match response.status().as_u16() {
            200 => Ok(Some(response.text()?)),
            404 => Ok(None),
            status => bail!("GET {path}: {status}"),
        }
    }

    /// Runs one agent turn in a new session.
    pub fn run_turn(&self, title: &str, request: &str, seed: u64, max_steps: usize, max_seconds: u64) -> anyhow::Result<TurnReply> {
        let session = self.send(reqwest::Method::POST, "/api/sessions", Some(json!({ "title": title })))?;
        let id = session["id"].as_str().context("a session id")?.to_string();
        let body = json!({ "content": request, "seed": seed, "max_steps": max_steps, "max_seconds": max_seconds });
        let reply = self.send(reqwest::Method::POST, &format!("/api/sessions/{id}/messages"), Some(body))?;
        Ok(TurnReply {
            session_id: id,
            stop_reason: reply["stop_reason"].as_str().unwrap_or_default().to_string(),
            answer: reply["answer"].as_str().unwrap_or_default().to_string(),
            steps: reply["steps"].as_u64().unwrap_or(0),
            tokens: reply["usage"]["total_tokens"].as_u64().unwrap_or(0),
            millis: reply["elapsed_ms"].as_u64().unwrap_or(0),
        })
    }

    /// Rates a session as its user would.
    pub fn rate(&self, session_id: &str, up: bool, comment: &str) -> anyhow::Result<()> {
        let body = json!({ "rating": if up { "up" } else { "down" }, "comment": comment });
        self.send(reqwest::Method::POST, &format!("/api/sessions/{session_id}/feedback"), Some(body))?;
        Ok(())
    }

    /// Starts an evolver run (admin) and waits for it to end; returns the run with its
    /// candidates.
    pub fn evolve(&self, timeout: Duration, progress: impl Fn(&Value)) -> anyhow::Result<Value> {
        let before = self.send(reqwest::Method::GET, "/api/evolver/runs", None)?;
        let known: Vec<Value> = before["runs"].as_array().cloned().unwrap_or_default().iter().map(|r| r["id"].clone()).collect();
        self.send(reqwest::Method::POST, "/api/evolver/runs", None)?;
        let started = std::time::Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let runs = self.send(reqwest::Method::GET, "/api/evolver/runs", None)?;
            let run = runs["runs"].as_array().and_then(|runs| runs.iter().find(|r| !known.contains(&r["id"])).cloned());
            if let Some(run) = run {
                progress(&run);
                if run["status"] != "running" {
                    let id = run["id"].as_str().context("a run id")?;
                    return self.send(reqwest::Method::GET, &format!("/api/evolver/runs/{id}"), None);
                }
            }
            if started.elapsed() > timeout {
                bail!("the evolver run did not end within {timeout:?}");
            }
        }
    }

    /// Every skill the caller sees, with its latest version.
    pub fn skills(&self) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, "/api/skills", None)
    }
}
