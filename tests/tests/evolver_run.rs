//! The evolver on the real model: `skillhive evolve --once` over imported sessions of two
//! users completes, records its run (in which imported sessions, being only claims, make
//! no pattern), and every candidate carries the gate's verdict with its numbers; the run is
//! visible through the admin API.

use std::process::Command;

use e2e::{add_admin, add_user, repo_root, skillhive_binary, Server};
use serde_json::Value;

async fn get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(format!("{}{path}", server.url)).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn import(data_dir: &std::path::Path, fixture: &str, user: &str) {
    let output = Command::new(skillhive_binary())
        .args(["import"])
        .arg(repo_root().join("tests/fixtures").join(fixture))
        .args(["--user", user, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn evolve_once_on_the_real_model_records_its_run_and_verdicts() {
    let server = Server::start(&["--evolve-every-minutes", "0", "--evolve-after-sessions", "0"]);
    let data = server.data_dir.path();
    let admin = add_admin(data, "admin");
    add_user(data, "bob");
    for user in ["tester", "bob"] {
        import(data, "openclaw-session.jsonl", user);
        import(data, "skillclaw-session.json", user);
    }
    let (status, _) = get(&server, &server.token, "/api/evolver/status").await;
    assert_eq!(status, 403, "the evolver API is for admins");
    let (_, before) = get(&server, &admin, "/api/evolver/status").await;
    assert_eq!(before["pending_sessions"], 4, "{before}");

    let output =
        Command::new(skillhive_binary()).args(["evolve", "--once", "--data-dir"]).arg(data).env("RUST_LOG", "warn").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let run_id = printed["run_id"].as_str().unwrap();
    let report = &printed["report"];
    assert_eq!(report["new_sessions"], 4, "{report}");
    assert_eq!(report["error"], Value::Null);
    // Imported sessions are what their users claim: they make no pattern, so nothing is
    // decided or published from them, whatever the model says about them.
    assert_eq!((report["patterns"].as_u64(), report["published"].as_u64()), (Some(0), Some(0)), "{report}");
    // One summary per session, at most one decision per pattern.
    let calls: u64 = report["steps"].as_array().unwrap().iter().map(|s| s["llm_calls"].as_u64().unwrap()).sum();
    assert!((4..=6).contains(&calls), "{report}");

    let (status, run) = get(&server, &admin, &format!("/api/evolver/runs/{run_id}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "finished");
    let steps: Vec<&str> = run["report"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, vec!["summarize", "group", "decide", "gate", "watch"]);
    for candidate in run["candidates"].as_array().unwrap() {
        let verdict = &candidate["verdict"];
        assert!(verdict["accepted"].is_boolean(), "every candidate has a verdict: {candidate}");
        match verdict["failed"].as_str() {
            Some("format") => assert!(verdict["format"].is_string() || verdict["format"].is_array(), "{verdict}"),
            Some("safety") => assert!(!verdict["safety"].as_array().unwrap().is_empty(), "{verdict}"),
            _ => assert!(verdict["replay"]["baseline_mean"].is_number() && verdict["replay"]["candidate_mean"].is_number(), "{verdict}"),
        }
        let status = candidate["status"].as_str().unwrap();
        assert!(["rejected", "published"].contains(&status), "{status}");
    }
    let (_, after) = get(&server, &admin, "/api/evolver/status").await;
    assert_eq!(after["pending_sessions"], 0, "each session is summarized once: {after}");
    assert_eq!(after["last_run"]["id"], run_id);

    // A second run finds nothing new and asks the model nothing.
    let output =
        Command::new(skillhive_binary()).args(["evolve", "--once", "--data-dir"]).arg(data).env("RUST_LOG", "warn").output().unwrap();
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let calls: u64 = printed["report"]["steps"].as_array().unwrap().iter().map(|s| s["llm_calls"].as_u64().unwrap()).sum();
    assert_eq!((printed["report"]["new_sessions"].as_u64(), calls), (Some(0), 0));
}
