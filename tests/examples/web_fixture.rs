//! A server for `bench/web`: an in-process skillhive on a real port with a user, sessions
//! of 100 and 2,000 recorded events, and a skill whose two versions differ by 1,000
//! lines. Writes the fixture (URL, credentials, ids) as JSON to the path it is given, then
//! serves until its standard input closes.
//!
//! Usage: web_fixture FIXTURE.json

use std::io::Read;
use std::sync::Arc;

use agent::trajectory::{Event, StopReason};
use serde_json::json;
use server::testing::scripted::{Otherwise, ScriptedEngine};
use server::testing::TestApp;

/// A recorded session of `events` events: turns of a model call, a tool call, its result
/// and the model's output, closed by an answer and a stop.
async fn session_of(app: &TestApp, user_id: &str, events: usize) -> String {
    let store = &app.db.store;
    let session = store.create_session(user_id, &format!("{events} events"), "m").await.unwrap();
    let mut written = 0;
    let mut step = 0;
    store
        .append_event(
            user_id,
            &session.id,
            "user_message",
            &serde_json::to_value(Event::UserMessage { text: "Count the rows.".into() }).unwrap(),
        )
        .await
        .unwrap();
    written += 1;
    while written + 2 < events {
        step += 1;
        let call_id = format!("c{step}");
        let turn = [
            Event::ModelCall { prompt_tokens: 400 + step, latency_ms: 80 },
            Event::ToolCall {
                call_id: call_id.clone(),
                name: "exec".into(),
                arguments: json!({ "command": format!("wc -l part{step}.csv") }).to_string(),
            },
            Event::ToolResult {
                call_id,
                name: "exec".into(),
                ok: true,
                exit_code: Some(0),
                excerpt: format!("exit code 0\n{step} part{step}.csv\n"),
            },
            Event::ModelOutput { text: format!("Part {step} counted."), tool_calls: vec![], completion_tokens: 12 },
        ];
        for event in turn.into_iter().take(events - 2 - written) {
            store.append_event(user_id, &session.id, event.kind(), &serde_json::to_value(&event).unwrap()).await.unwrap();
            written += 1;
        }
    }
    for event in [Event::FinalAnswer { text: "Done.".into() }, Event::Stop { reason: StopReason::FinalAnswer, detail: None }] {
        store.append_event(user_id, &session.id, event.kind(), &serde_json::to_value(&event).unwrap()).await.unwrap();
    }
    session.id
}

#[tokio::main]
async fn main() {
    let fixture_path = std::env::args().nth(1).expect("usage: web_fixture FIXTURE.json");
    let app = TestApp::new(Arc::new(ScriptedEngine::new(None, Otherwise::Done, Vec::<agent::engine::Choice>::new()))).await.unwrap();
    let (user, token) = app.user("bench", true).await.unwrap();
    let password = "bench's long password";
    app.db.store.set_password(&user.id, Some(&server::services::accounts::hash_password(password).unwrap())).await.unwrap();
    let small = session_of(&app, &user.id, 100).await;
    let large = session_of(&app, &user.id, 2000).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // Two versions of one skill, 1,000 lines apart: every line of a 1,000-line body changes.
    let client = reqwest::Client::new();
    for (version, word) in [("1.0.0", "read"), ("1.1.0", "count")] {
        let body: String = (0..1000).map(|i| format!("{i}. Then {word} line {i} of the file.\n")).collect();
        let skill_md = format!("---\nname: long-notes\ndescription: A long skill for the diff benchmark.\n---\n# Notes\n\n{body}");
        let published = client
            .post(format!("{url}/api/skills"))
            .bearer_auth(&token)
            .json(&json!({ "slug": "long-notes", "scope": "private", "version": version, "files": [{ "path": "SKILL.md", "content": skill_md }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(published.status().as_u16(), 201, "{}", published.text().await.unwrap());
    }
    let fixture = json!({
        "base": url,
        "user": { "name": "bench", "password": password, "token": token },
        "sessions": { "100": small, "2000": large },
        "diff": { "slug": "long-notes", "from": "1.0.0", "to": "1.1.0" },
    });
    std::fs::write(&fixture_path, fixture.to_string()).unwrap();
    eprintln!("serving {url}; fixture in {fixture_path}");
    // Serve until whoever started us closes our standard input.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .unwrap();
}
