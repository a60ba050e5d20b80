//! The agent API end to end: a real turn on the real model, what it recorded, isolation
//! between users, and durability across a SIGKILL.

use e2e::{add_user, call, client, Server};
use serde_json::{json, Value};

async fn new_session(server: &Server, token: &str) -> String {
    let (status, session) = call(reqwest::Method::POST, server, token, "/api/sessions", Some(json!({"title": "files"}))).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

fn kinds(events: &Value) -> Vec<String> {
    events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_turn_on_the_real_model_is_recorded_in_order_and_survives_sigkill() {
    let server = Server::start(&[]);
    let token = server.token.clone();
    let session = new_session(&server, &token).await;
    let (status, reply) = call(
        reqwest::Method::POST,
        &server,
        &token,
        &format!("/api/sessions/{session}/messages"),
        Some(json!({"content": "Create a file hello.txt containing the word hello, then read it back."})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let stop = reply["stop_reason"].as_str().unwrap().to_string();

    let (_, trajectory) = call(reqwest::Method::GET, &server, &token, &format!("/api/sessions/{session}/trajectory"), None).await;
    let events = &trajectory["events"];
    let kinds = kinds(events);
    assert_eq!(kinds[0], "user_message");
    // The skills whose instructions went into the prompt are recorded as read, then the
    // first model call.
    let first_call = kinds.iter().position(|k| *k == "model_call").expect("a model call");
    assert!(kinds[1..first_call].iter().all(|k| *k == "skill_read"), "{kinds:?}");
    assert_eq!(kinds.last().unwrap(), "stop");
    assert_eq!(events.as_array().unwrap().last().unwrap()["payload"]["reason"], stop);
    let seqs: Vec<i64> = events.as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "events are numbered in order");
    // Every tool call has its result, and a successful write left its file in this
    // user's workspace.
    let workspaces = server.data_dir.path().join("workspaces");
    let user_dirs: Vec<_> = std::fs::read_dir(&workspaces).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(user_dirs.len(), 1);
    for (i, event) in events.as_array().unwrap().iter().enumerate() {
        if event["kind"] == "tool_call" {
            let id = &event["payload"]["call_id"];
            let result = events.as_array().unwrap()[i + 1..]
                .iter()
                .find(|e| e["kind"] == "tool_result" && &e["payload"]["call_id"] == id)
                .unwrap_or_else(|| panic!("tool call {id} has no result"));
            if event["payload"]["name"] == "write" && result["payload"]["ok"] == true {
                let args: Value = serde_json::from_str(event["payload"]["arguments"].as_str().unwrap()).unwrap();
                let written = std::fs::read_to_string(user_dirs[0].join(args["path"].as_str().unwrap())).unwrap();
                assert_eq!(written, args["content"].as_str().unwrap());
            }
        }
    }

    // The acknowledged turn is in the database after a SIGKILL and a restart.
    let recorded = events.as_array().unwrap().len();
    let (data_dir, token) = server.kill();
    let restarted = Server::launch(data_dir, token.clone(), &[], &[]);
    let (status, again) = call(reqwest::Method::GET, &restarted, &token, &format!("/api/sessions/{session}/trajectory"), None).await;
    assert_eq!(status, 200);
    assert_eq!(again["events"].as_array().unwrap().len(), recorded);
    assert_eq!(again["session"]["status"], "idle");
}

#[tokio::test]
async fn a_streamed_turn_sends_each_event_as_recorded_then_done() {
    let server = Server::start(&[]);
    let session = new_session(&server, &server.token).await;
    let response = client()
        .post(format!("{}/api/sessions/{session}/messages", server.url))
        .bearer_auth(&server.token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "List the files in the workspace."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let raw = response.text().await.unwrap();
    let mut streamed = Vec::new();
    let mut done = None;
    let mut kind = "";
    for line in raw.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            kind = match name {
                "done" => "done",
                // Text as it is generated: not a recorded event.
                "delta" => "delta",
                _ => "event",
            };
        } else if let Some(data) = line.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(data).unwrap();
            match kind {
                "done" => done = Some(value),
                "event" => streamed.push(value),
                _ => {}
            }
        }
    }
    let done = done.expect("a done event ends the stream");
    assert!(done["stop_reason"].is_string(), "{done}");
    // What was streamed is exactly what was stored, in the same order.
    let (_, trajectory) = call(reqwest::Method::GET, &server, &server.token, &format!("/api/sessions/{session}/trajectory"), None).await;
    let stored: Vec<(i64, String)> = trajectory["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["kind"].as_str().unwrap().to_string()))
        .collect();
    let sent: Vec<(i64, String)> = streamed.iter().map(|e| (e["seq"].as_i64().unwrap(), e["kind"].as_str().unwrap().to_string())).collect();
    assert_eq!(sent, stored);
    assert_eq!(sent.first().map(|e| e.1.as_str()), Some("user_message"));
}

#[tokio::test]
async fn users_cannot_see_each_others_sessions_or_trajectories() {
    let server = Server::start(&[]);
    let alice = server.token.clone();
    let bob = add_user(server.data_dir.path(), "bob");
    let session = new_session(&server, &alice).await;
    let (status, _) =
        call(reqwest::Method::POST, &server, &alice, &format!("/api/sessions/{session}/feedback"), Some(json!({"rating": "up"}))).await;
    assert_eq!(status, 201);

    use reqwest::Method;
    let probes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/sessions/{session}"), None),
        (Method::GET, format!("/api/sessions/{session}/trajectory"), None),
        (Method::POST, format!("/api/sessions/{session}/messages"), Some(json!({"content": "hi"}))),
        (Method::POST, format!("/api/sessions/{session}/feedback"), Some(json!({"rating": "down"}))),
        (Method::POST, format!("/api/sessions/{session}/cancel"), None),
    ];
    for (method, path, body) in probes {
        let (status, reply) = call(method.clone(), &server, &bob, &path, body).await;
        assert_eq!(status, 404, "{method} {path} as bob: {reply}");
        assert_eq!(reply["error"]["code"], "session_not_found");
    }
    let (_, bobs) = call(Method::GET, &server, &bob, "/api/sessions", None).await;
    assert_eq!(bobs["sessions"], json!([]));
    let (_, alices) = call(Method::GET, &server, &alice, "/api/sessions", None).await;
    assert_eq!(alices["sessions"].as_array().unwrap().len(), 1);

    // Bob's own session works, and the cursor feed shows each only their own events.
    let bobs_session = new_session(&server, &bob).await;
    let (status, _) =
        call(Method::POST, &server, &bob, &format!("/api/sessions/{bobs_session}/messages"), Some(json!({"content": "Say hi."}))).await;
    assert_eq!(status, 200);
    let (_, feed) = call(Method::GET, &server, &bob, "/api/trajectories?since=0", None).await;
    let events = feed["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["session_id"] == bobs_session.as_str()));
    let (_, alice_feed) = call(Method::GET, &server, &alice, "/api/trajectories?since=0", None).await;
    assert_eq!(alice_feed["events"], json!([]));
    let next = feed["next_since"].as_i64().unwrap();
    let (_, rest) = call(Method::GET, &server, &bob, &format!("/api/trajectories?since={next}"), None).await;
    assert_eq!(rest["events"], json!([]));

    // Bad input is refused clearly.
    let (status, reply) =
        call(Method::POST, &server, &bob, &format!("/api/sessions/{bobs_session}/feedback"), Some(json!({"rating": "meh"}))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("invalid_value")));
    let (status, _) = call(Method::POST, &server, &bob, &format!("/api/sessions/{bobs_session}/cancel"), None).await;
    assert_eq!(status, 409, "nothing is running");
}

#[tokio::test]
async fn transcripts_import_whole_or_not_at_all() {
    let server = Server::start(&[]);
    let fixtures = e2e::repo_root().join("tests/fixtures");
    let openclaw = std::fs::read_to_string(fixtures.join("openclaw-session.jsonl")).unwrap();
    let post = |body: String| {
        client()
            .post(format!("{}/api/trajectories/import", server.url))
            .bearer_auth(&server.token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let response = post(openclaw.clone()).await.unwrap();
    assert_eq!(response.status(), 201);
    let imported: Value = response.json().await.unwrap();
    let session = imported["session"]["id"].as_str().unwrap().to_string();
    let (_, trajectory) = call(reqwest::Method::GET, &server, &server.token, &format!("/api/sessions/{session}/trajectory"), None).await;
    assert_eq!(
        kinds(&trajectory["events"]),
        ["user_message", "model_call", "model_output", "tool_call", "tool_result", "model_call", "model_output", "final_answer"]
    );
    assert_eq!(post(openclaw.clone()).await.unwrap().status(), 409, "the same transcript twice is refused");

    // A truncated file is refused with its line, and nothing of it is stored.
    let (_, before) = call(reqwest::Method::GET, &server, &server.token, "/api/sessions", None).await;
    let truncated = openclaw.replace("oc-7f3a", "oc-other");
    let truncated = &truncated[..truncated.len() - 40];
    let response = post(truncated.to_string()).await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().starts_with("line 6"), "{error}");
    let (_, after) = call(reqwest::Method::GET, &server, &server.token, "/api/sessions", None).await;
    assert_eq!(before["sessions"], after["sessions"]);

    // The command line imports into the same database, for a named user.
    let run = |file: std::path::PathBuf| {
        std::process::Command::new(e2e::skillhive_binary())
            .args(["import"])
            .arg(file)
            .args(["--user", "tester", "--data-dir"])
            .arg(server.data_dir.path())
            .output()
            .unwrap()
    };
    let output = run(fixtures.join("skillclaw-session.json"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("imported 11 events"));
    let bad = server.data_dir.path().join("bad.jsonl");
    std::fs::write(&bad, truncated).unwrap();
    let output = run(bad);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 6"), "{}", String::from_utf8_lossy(&output.stderr));
    let (_, last) = call(reqwest::Method::GET, &server, &server.token, "/api/sessions", None).await;
    assert_eq!(last["sessions"].as_array().unwrap().len(), 2);
}

/// The repository is the agent's skill source: on the real model, a turn that reads a
/// skill's location gets the published `SKILL.md` and records which version it read.
#[tokio::test]
async fn the_real_model_reads_a_published_skill_and_the_read_is_recorded() {
    use futures::StreamExt;
    let server = Server::start(&[]);
    // A new version of a starter skill, published by an admin, is what the agent reads.
    let admin = e2e::add_admin(server.data_dir.path(), "admin");
    let skill = "---\nname: csv-inspect\ndescription: Inspect a CSV file's columns, row count and sample rows. Use when the user asks about a .csv file or tabular data.\n---\nCount the rows with wc -l first.\n";
    let (status, published) = call(
        reqwest::Method::POST,
        &server,
        &admin,
        "/api/skills",
        Some(json!({"slug": "csv-inspect", "scope": "shared", "files": [{"path": "SKILL.md", "content": skill}]})),
    )
    .await;
    assert_eq!(status, 201, "{published}");
    let session = new_session(&server, &server.token).await;
    let response = client()
        .post(format!("{}/api/sessions/{session}/messages", server.url))
        .bearer_auth(&server.token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "Call the read tool with path skills/csv-inspect/SKILL.md"}))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    // The request names the skill, so its instructions go into the prompt (a read at the
    // turn's start); the model may then read it again and again: the first tool result
    // is enough.
    while !received.contains("\"kind\":\"tool_result\"") {
        let Some(chunk) = stream.next().await else { break };
        received.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    call(reqwest::Method::POST, &server, &server.token, &format!("/api/sessions/{session}/cancel"), None).await;
    drop(stream);
    let (_, trajectory) = call(reqwest::Method::GET, &server, &server.token, &format!("/api/sessions/{session}/trajectory"), None).await;
    let events = trajectory["events"].as_array().unwrap();
    let reads: Vec<&Value> = events.iter().filter(|e| e["kind"] == "skill_read").collect();
    assert!(!reads.is_empty(), "no skill read: {trajectory}");
    for read in reads {
        assert_eq!((read["payload"]["slug"].as_str(), read["payload"]["version"].as_str()), (Some("csv-inspect"), Some("1.0.1")));
    }
    // Where the model called `read` on the skill, it got the published text.
    for (i, event) in events.iter().enumerate() {
        let arguments = event["payload"]["arguments"].as_str().unwrap_or_default();
        if event["kind"] == "tool_call" && event["payload"]["name"] == "read" && arguments.contains("skills/csv-inspect/SKILL.md") {
            let id = &event["payload"]["call_id"];
            let result =
                events[i..].iter().find(|e| e["kind"] == "tool_result" && &e["payload"]["call_id"] == id).expect("the read's result");
            assert_eq!(result["payload"]["ok"], true);
            assert!(result["payload"]["excerpt"].as_str().unwrap().contains("Count the rows with wc -l first."), "{result}");
        }
    }
}
