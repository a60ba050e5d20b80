//! The learning experiment's harness, end to end on a real server whose engine is a
//! scripted OpenAI-compatible backend: an engine that follows skill instructions gets
//! better after evolution, and one that ignores them does not (and nothing is published
//! for it). This tests the harness and the loop, not the model.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use e2e::{add_admin, add_user, Server};
use learning::client::Client;
use learning::experiment::{self, Settings};

/// The backend's rule: how it treats the skill in its prompt.
#[derive(Clone, Copy, PartialEq)]
enum Attitude {
    Follows,
    Ignores,
}

fn reply(content: Option<String>, call: Option<(&str, String)>) -> Value {
    let message = match call {
        Some((name, arguments)) => json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": name, "arguments": arguments } }
        ] }),
        None => json!({ "role": "assistant", "content": content.unwrap_or_default() }),
    };
    json!({
        "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
        "choices": [{ "index": 0, "message": message, "finish_reason": if message["tool_calls"].is_null() { "stop" } else { "tool_calls" } }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110 }
    })
}

/// One agent step. Without a skill to follow it tries `wc -l` on the file the request
/// names and then answers the printed count or one less, by a coin the seed throws: a
/// user who tries things. Following a skill, it runs the skill's command and answers as
/// the skill says.
fn agent_step(attitude: Attitude, body: &Value) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let system = messages.first().and_then(|m| m["content"].as_str()).unwrap_or_default().to_string();
    let request = messages.iter().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or_default().to_string();
    let results: Vec<String> =
        messages.iter().filter(|m| m["role"] == "tool").filter_map(|m| m["content"].as_str().map(str::to_string)).collect();
    let files: Vec<String> =
        system.split("Workspace files: ").nth(1).map(|l| l.split(", ").map(|f| f.trim().to_string()).collect()).unwrap_or_default();
    let file = files.iter().find(|f| request.contains(f.as_str())).or(files.first()).cloned().unwrap_or_default();
    let skill_command = system
        .lines()
        .find_map(|line| line.split("Run `").nth(1)?.split("` with exec").next().map(str::to_string))
        .filter(|_| attitude == Attitude::Follows);
    let answer_only = body["tools"].is_null() && !body["response_format"].is_null();
    let printed: Option<i64> =
        results.iter().rev().find(|r| r.starts_with("exit code 0")).and_then(|r| r.lines().nth(1)?.split_whitespace().next()?.parse().ok());
    let answer =
        |text: String| if answer_only { reply(Some(json!({ "answer": text }).to_string()), None) } else { reply(Some(text), None) };
    match (printed, &skill_command) {
        (None, Some(command)) if !answer_only => {
            reply(None, Some(("exec", json!({ "command": command.replace("FILE", &file) }).to_string())))
        }
        (None, None) if !answer_only => reply(None, Some(("exec", json!({ "command": format!("wc -l {file}") }).to_string()))),
        (Some(n), Some(_)) if system.contains("minus one") => answer((n - 1).to_string()),
        (Some(n), Some(_)) => answer(n.to_string()),
        (Some(n), None) => answer(if coin(body["seed"].as_u64().unwrap_or(0)) { n - 1 } else { n }.to_string()),
        (None, _) => answer("I could not tell.".into()),
    }
}

/// A fair coin thrown by a seed: the same seed always lands the same way, neighbouring
/// seeds independently.
fn coin(seed: u64) -> bool {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).is_multiple_of(2)
}

async fn backend(attitude: Attitude) -> SocketAddr {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| async move {
            let system = body["messages"][0]["content"].as_str().unwrap_or_default().to_string();
            if system.starts_with("You summarize") {
                let user = body["messages"][1]["content"].as_str().unwrap_or_default();
                let goal = user.lines().find_map(|l| l.strip_prefix("user: ")).unwrap_or_default();
                let summary = json!({ "goal": goal, "outcome": "unknown", "helped": "", "went_wrong": "", "turning_point": "" });
                return Json(reply(Some(summary.to_string()), None));
            }
            if system.starts_with("You maintain") {
                let skip = json!({ "action": "skip", "name": "", "description": "", "instructions": "", "rationale": "" });
                return Json(reply(Some(skip.to_string()), None));
            }
            Json(agent_step(attitude, &body))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// The experiment on the csv-count family with three users; returns its report.
async fn experiment_with(attitude: Attitude) -> experiment::Report {
    let address = backend(attitude).await;
    let base = format!("http://{address}/v1");
    let server = Server::start(&[
        "--backend",
        "openai",
        "--openai-base-url",
        &base,
        "--openai-model",
        "scripted",
        "--evolve-every-minutes",
        "0",
        "--evolve-after-sessions",
        "0",
    ]);
    let data = server.data_dir.path();
    let admin = add_admin(data, "admin");
    let users: Vec<String> = ["ada", "bo", "cy"].iter().map(|name| add_user(data, name)).collect();
    let url = server.url.clone();
    let report = tokio::task::spawn_blocking(move || {
        let tasks = learning::load_suite(&learning::suite_dir()).unwrap();
        let settings = Settings {
            seeds: vec![0, 2, 4, 6],
            train_per_family: 5,
            heldout_per_family: 3,
            families: vec!["csv-count".into()],
            max_steps: 6,
            max_seconds: 60,
            evolve_timeout: Duration::from_secs(300),
        };
        let admin = Client::new(&url, &admin).unwrap();
        let users: Vec<Client> = users.iter().map(|t| Client::new(&url, t).unwrap()).collect();
        experiment::run("scripted", &admin, &users, &tasks, &settings, &|line| eprintln!("{line}")).unwrap()
    })
    .await
    .unwrap();
    drop(server);
    report
}

#[tokio::test]
async fn an_engine_that_follows_skills_improves_after_evolution_and_one_that_ignores_them_does_not() {
    let follows = experiment_with(Attitude::Follows).await;
    eprintln!("{}", experiment::markdown(&follows));
    assert_eq!(follows.overall.pairs, 12);
    assert!(follows.training_success > 0.0 && follows.training_success < 1.0, "users succeed sometimes: {}", follows.training_success);
    assert!(follows.overall.before < 1.0, "{:?}", follows.overall);
    assert_eq!(follows.overall.after, 1.0, "the evolved skill is followed on every held-out task: {:?}", follows.overall);
    assert_eq!(follows.overall.worsened, 0);
    assert!(!follows.publications.is_empty(), "something was published");
    // Every publication carries a replay in which it verifiably beat what it replaced.
    for publication in &follows.publications {
        let replay = &publication["provenance"]["evolver"]["verdict"]["replay"];
        assert!(replay["candidate_mean"].as_f64().unwrap() > replay["baseline_mean"].as_f64().unwrap(), "{publication}");
    }
    let markdown = experiment::markdown(&follows);
    assert!(markdown.contains("| **all** | 12 |"), "{markdown}");

    let ignores = experiment_with(Attitude::Ignores).await;
    assert_eq!(ignores.overall.before, ignores.overall.after, "{:?}", ignores.overall);
    assert!(ignores.publications.is_empty(), "a skill that changes nothing is not published: {:?}", ignores.publications);
    let candidates = ignores.evolver_run["candidates"].as_array().cloned().unwrap_or_default();
    assert!(candidates.iter().all(|c| c["verdict"]["failed"] == "replay"), "{candidates:?}");
}
