//! The browser UI in a real browser (Debian's Chromium driven by Playwright, see
//! `tests/web/ui_test.py`) against a real HTTP server:
//! - on the real binary and the real model: sign-in by password and by token, a chat turn
//!   streamed into the page and stopped, its trajectory expanded, feedback that survives a
//!   reload, sign-out, and another user's session showing not-found;
//! - on an in-process server whose evolver runs on a scripted engine (so that a candidate
//!   is reliably held for review): the review desk approving it, two skill versions diffed
//!   and rolled back, a non-admin kept out of the admin pages, and skill, tool and model
//!   text carrying HTML payloads rendered as text that runs nothing; screenshots of every
//!   page at two sizes and keyboard reachability.

use std::sync::Arc;
use std::time::Duration;

use e2e::{add_user_with_password, browser_scenario, call, Server};
use reqwest::Method;
use serde_json::{json, Value};

use agent::trajectory::{Event, StopReason};
use evolver::testing::RuleEngine;
use evolver::EvolverConfig;
use server::testing::TestApp;

/// Markup that would run script if the page rendered it as HTML; each sets a flag the
/// browser test reads.
const PAYLOAD: &str = "<img src=x onerror=\"window.__pwned=1\"> <script>window.__pwned=1</script>";

#[tokio::test]
async fn a_user_chats_on_the_real_model_in_a_real_browser() {
    let server = Server::start(&["--turn-max-seconds", "120"]);
    let data = server.data_dir.path();
    let password = "alice's long password";
    let token = add_user_with_password(data, "alice", password, false);
    // Another user's session: its URL must show not-found to alice.
    let bob = add_user_with_password(data, "bob", "bob's long password", false);
    let (status, session) = call(Method::POST, &server, &bob, "/api/sessions", Some(json!({"title": "bob's private work"}))).await;
    assert_eq!(status, 201, "{session}");
    let fixture = json!({
        "user": { "name": "alice", "password": password, "token": token },
        "other_session_id": session["id"],
    });
    let base = server.url.clone();
    tokio::task::spawn_blocking(move || browser_scenario("chat", &base, &fixture)).await.unwrap();
}

/// An in-process server on a real port, on `engine`, with review of evolver candidates on.
async fn desk_server() -> (TestApp, String, tokio_util::sync::CancellationToken) {
    let harness =
        TestApp::new(Arc::new(RuleEngine::default())).await.unwrap().with_evolver(EvolverConfig { review: true, ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let router = harness.router();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { stopped.cancelled().await }).await.unwrap();
    });
    (harness, url, stop)
}

async fn api(url: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{url}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admins_review_skills_in_a_real_browser_and_payloads_stay_text() {
    let (harness, url, stop) = desk_server().await;
    let store = harness.db.store.clone();
    let mut users = serde_json::Map::new();
    let mut tokens = std::collections::HashMap::new();
    for (name, admin) in [("admin", true), ("user", false)] {
        let (user, token) = harness.user(name, admin).await.unwrap();
        let password = format!("{name}'s long password");
        let hash = server::services::accounts::hash_password(&password).unwrap();
        store.set_password(&user.id, Some(&hash)).await.unwrap();
        users.insert(name.to_string(), json!({ "name": name, "password": password, "token": token }));
        tokens.insert(name, token);
    }

    // A shared skill with two versions whose text carries the payload.
    let skill = |body: &str| {
        json!({
            "slug": "xss-notes", "scope": "shared",
            "files": [{ "path": "SKILL.md", "content": format!(
                "---\nname: xss-notes\ndescription: Notes that quote {PAYLOAD} as text.\n---\n# Notes\n\n{body}\n\n```\n{PAYLOAD}\n```\n"
            ) }]
        })
    };
    for body in ["First version: read the file first.", "Second version: read the header, then count rows."] {
        let (status, published) = api(&url, &tokens["admin"], Method::POST, "/api/skills", Some(skill(&format!("{body} {PAYLOAD}")))).await;
        assert_eq!(status, 201, "{published}");
    }

    // A session of the user whose model reply and tool output carry the payload.
    let user = store.user_by_name("user").await.unwrap().unwrap();
    let session = store.create_session(&user.id, &format!("payloads {PAYLOAD}"), "m").await.unwrap();
    for event in [
        Event::UserMessage { text: format!("Please echo {PAYLOAD}") },
        Event::ModelCall { prompt_tokens: 120, latency_ms: 35 },
        Event::ModelOutput { text: String::new(), tool_calls: vec![], completion_tokens: 9 },
        Event::ToolCall {
            call_id: "c1".into(),
            name: "exec".into(),
            arguments: json!({ "command": format!("echo '{PAYLOAD}'") }).to_string(),
        },
        Event::ToolResult {
            call_id: "c1".into(),
            name: "exec".into(),
            ok: true,
            exit_code: Some(0),
            excerpt: format!("exit code 0\n{PAYLOAD}\n"),
        },
        Event::SkillRead { slug: "xss-notes".into(), version: "1.0.0".into() },
        Event::FinalAnswer { text: format!("Here it is: {PAYLOAD}") },
        Event::Stop { reason: StopReason::FinalAnswer, detail: None },
    ] {
        store.append_event(&user.id, &session.id, event.kind(), &serde_json::to_value(&event).unwrap()).await.unwrap();
    }

    // Two users counted data rows the same verifiable way: the evolver proposes a skill,
    // and review holds it.
    harness.counted_rows_sessions(&[("admin", "orders.csv", 5), ("user", "people.csv", 8)]).await.unwrap();
    let (status, _) = api(&url, &tokens["admin"], Method::POST, "/api/evolver/runs", None).await;
    assert_eq!(status, 202);
    let mut queue = Value::Null;
    for _ in 0..200 {
        let (_, pending) = api(&url, &tokens["admin"], Method::GET, "/api/evolver/candidates?status=pending_review", None).await;
        if pending["candidates"].as_array().is_some_and(|c| !c.is_empty()) {
            queue = pending;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let candidate_id = queue["candidates"][0]["id"].as_str().expect("a candidate held for review").to_string();

    let fixture = json!({
        "admin": users["admin"],
        "user": users["user"],
        "skill_slug": "xss-notes",
        "xss_session_id": session.id,
        "candidate_id": candidate_id,
    });
    let base = url.clone();
    tokio::task::spawn_blocking(move || browser_scenario("desk", &base, &fixture)).await.unwrap();

    // What the browser did is what the server recorded.
    let (_, approved) = api(&url, &tokens["admin"], Method::GET, &format!("/api/evolver/candidates/{candidate_id}"), None).await;
    assert_eq!(approved["status"], "approved_and_published", "{approved}");
    let (_, versions) = api(&url, &tokens["user"], Method::GET, "/api/skills/xss-notes/versions", None).await;
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(3), "the rollback published a third version: {versions}");
    stop.cancel();
}
