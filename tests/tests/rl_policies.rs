//! RL policies as an operator uses them, on the real model and the real binary: train a
//! policy with `skillhive rl train`, see it served beside the default model, promote it
//! through the held-out gate so that it serves the default id, and roll it back.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{add_admin, call, skillhive_binary, Server};
use reqwest::Method;
use serde_json::{json, Value};

fn rl(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    let output =
        Command::new(skillhive_binary()).arg("rl").args(args).arg("--data-dir").arg(data_dir).env("RUST_LOG", "warn").output().unwrap();
    eprintln!("skillhive rl {args:?}\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    output
}

/// Polls `GET /v1/models` until the default model reports `serving` (10 s at most).
async fn wait_for_default(server: &Server, token: &str, serving: Value) -> Value {
    let started = Instant::now();
    loop {
        let (_, models) = call(Method::GET, server, token, "/v1/models", None).await;
        if models["data"][0]["policy"] == serving || started.elapsed() > Duration::from_secs(10) {
            return models;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_trained_policy_is_served_promoted_through_the_gate_and_rolled_back() {
    let server = Server::start(&[]);
    let data = server.data_dir.path();
    let admin = add_admin(data, "ops");

    // One GRPO step: progress and the step's metrics line on stderr, a candidate published.
    let trained = rl(&["train", "--run", "e2e", "--task", "pick-a-number", "--steps", "1", "--group", "4", "--seed", "3"], data);
    assert!(trained.status.success());
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(stderr.contains("step   1") && stderr.contains("reward") && stderr.contains("kl"), "{stderr}");
    let listed = String::from_utf8_lossy(&rl(&["policies"], data).stdout).to_string();
    assert!(listed.contains("e2e-step1") && listed.contains("candidate"), "{listed}");

    // The running server lists it beside its default model and serves it by its id.
    let (status, models) = call(Method::GET, &server, &server.token, "/v1/models", None).await;
    assert_eq!(status, 200);
    let default_id = models["data"][0]["id"].as_str().unwrap().to_string();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "e2e-step1"), "{models}");
    let request =
        json!({ "model": "e2e-step1", "messages": [{ "role": "user", "content": "Pick a number from 1 to 10." }], "max_tokens": 4 });
    let (status, reply) = call(Method::POST, &server, &server.token, "/v1/chat/completions", Some(request)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["model"], "e2e-step1");
    let (status, _) = call(Method::GET, &server, &server.token, "/v1/models/e2e-step1", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(Method::GET, &server, &server.token, "/v1/models/no-such-policy", None).await;
    assert_eq!(status, 404);

    // The admin API shows the run's metrics and the policies; users get 403.
    let (status, runs) = call(Method::GET, &server, &admin, "/api/admin/rl/runs/e2e", None).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["steps"].as_array().unwrap().len(), 1);
    assert!(runs["steps"][0]["timings"]["train_seconds"].as_f64().unwrap() > 0.0);
    let (status, _) = call(Method::GET, &server, &server.token, "/api/admin/rl/policies", None).await;
    assert_eq!(status, 403);
    let (status, _) = call(Method::GET, &server, &admin, "/api/admin/rl/runs/..%2F..%2Fetc", None).await;
    assert_eq!(status, 404);

    // Promotion goes through the held-out gate. With a format reward, one step on four
    // samples may or may not beat the base model: both verdicts are checked for what they
    // must do.
    let promoted = rl(&["promote", "e2e-step1", "--task", "pick-a-number", "--samples", "8"], data);
    let (_, policies) = call(Method::GET, &server, &admin, "/api/admin/rl/policies", None).await;
    let record = policies["policies"].as_array().unwrap().iter().find(|p| p["id"] == "e2e-step1").unwrap().clone();
    if promoted.status.success() {
        assert_eq!(record["state"], "default");
        let gate = &record["gate"];
        assert!(gate["candidate_reward"].as_f64().unwrap() >= gate["incumbent_reward"].as_f64().unwrap(), "{record}");
        // The running server switches its default id to the policy within seconds.
        let models = wait_for_default(&server, &server.token, json!("e2e-step1")).await;
        assert_eq!(models["data"][0]["policy"], "e2e-step1", "{models}");
        assert_eq!(models["data"][0]["id"], default_id.as_str(), "the default id stays the same");

        let (status, after) = call(Method::POST, &server, &admin, "/api/admin/rl/rollback", None).await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(after["serving"], Value::Null, "the base model serves the default id again");
        let (status, _) = call(Method::POST, &server, &admin, "/api/admin/rl/rollback", None).await;
        assert_eq!(status, 400, "nothing left to roll back");
    } else {
        let stderr = String::from_utf8_lossy(&promoted.stderr);
        assert!(stderr.contains("stays a candidate"), "{stderr}");
        assert_eq!(record["state"], "candidate");
        let (_, models) = call(Method::GET, &server, &server.token, "/v1/models", None).await;
        assert_eq!(models["data"][0]["policy"], Value::Null);
    }
}
