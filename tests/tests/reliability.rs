//! Reliability end to end, on the real binary: writes under a full disk and across
//! SIGKILL, sessions a crash interrupted, idle connections, and (on the real model)
//! requests that abandon, overflow or overreach the engine without hurting anyone else.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{add_user, call, client, Server, MODEL};
use reqwest::Method;
use serde_json::{json, Value};

/// A server whose inference backend is an address where nothing answers: enough for
/// every endpoint that stores data, and it starts in a moment.
fn start_without_model(data_dir: tempfile::TempDir, token: String, extra: &[&str]) -> Server {
    let mut args = vec!["--backend", "openai", "--openai-base-url", "http://127.0.0.1:9/v1", "--openai-model", "none"];
    args.extend_from_slice(extra);
    Server::launch(data_dir, token, &args, &[])
}

const OPENCLAW: &str = include_str!("../fixtures/openclaw-session.jsonl");

async fn new_session(server: &Server, token: &str) -> String {
    let (status, session) = call(Method::POST, server, token, "/api/sessions", Some(json!({"title": "t"}))).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

/// Feedback comments stored for `session`, read from the database file itself.
async fn stored_comments(data_dir: &Path) -> (Vec<String>, String) {
    use sqlx::ConnectOptions;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(data_dir.join("skillhive.db")).read_only(true);
    let mut connection = options.connect().await.expect("open the database");
    let rows: Vec<(Option<String>,)> = sqlx::query_as("SELECT comment FROM feedback").fetch_all(&mut connection).await.unwrap();
    let (integrity,): (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(&mut connection).await.unwrap();
    (rows.into_iter().filter_map(|(c,)| c).collect(), integrity)
}

async fn post_feedback(server: &Server, token: &str, session: &str, comment: &str) -> u16 {
    call(Method::POST, server, token, &format!("/api/sessions/{session}/feedback"), Some(json!({"rating": "up", "comment": comment})))
        .await
        .0
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).status();
        assert!(status.is_ok_and(|s| s.success()), "mounting a tmpfs needs root (scripts/test runs as root in CI)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_write_and_the_server_recovers_without_restart() {
    let disk = Tmpfs::mount("8m");
    let data = tempfile::Builder::new().tempdir_in(disk.0.path()).unwrap();
    let token = add_user(data.path(), "tester");
    let server = start_without_model(data, token.clone(), &[]);
    let session = new_session(&server, &token).await;

    // Fill the disk to the last byte.
    let filler = server.data_dir.path().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
    }
    // Single-statement writes and multi-statement transactions (imports), at once, as
    // users would send them.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for round in 0..6 {
        let feedback = (0..5).map(|i| {
            let comment = format!("full-{round}-{i}-{}", "x".repeat(2000));
            async { (post_feedback(&server, &token, &session, &comment).await, comment) }
        });
        let imports = (0..3).map(|i| {
            let transcript = OPENCLAW.replace("oc-7f3a", &format!("full-{round}-{i}")).replace("Let me check.", &"padding ".repeat(500));
            let (url, token) = (server.url.clone(), token.clone());
            async move {
                client()
                    .post(format!("{url}/api/trajectories/import"))
                    .bearer_auth(token)
                    .body(transcript)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        let (feedback, imports) = futures::join!(futures::future::join_all(feedback), futures::future::join_all(imports));
        for (status, comment) in feedback {
            match status {
                201 => acknowledged.push(comment),
                _ => refused += 1,
            }
        }
        refused += imports.iter().filter(|status| !matches!(status, Ok(201))).count();
    }
    assert!(refused > 0, "the disk was full, yet every write was acknowledged");

    // Free the disk: the very next writes succeed, with no restart.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        let comment = format!("after-{i}");
        assert_eq!(post_feedback(&server, &token, &session, &comment).await, 201, "write {i} after freeing the disk");
        acknowledged.push(comment);
    }
    let (status, _) = call(Method::GET, &server, &token, "/healthz", None).await;
    assert_eq!(status, 200);
    let (stored, integrity) = stored_comments(server.data_dir.path()).await;
    assert!(server.terminate(), "the server shuts down cleanly");
    assert_eq!(integrity, "ok");
    let missing: Vec<&String> = acknowledged.iter().filter(|c| !stored.contains(c)).collect();
    println!(
        "fault: disk full then freed: {} writes refused while full, {} acknowledged, {} of them found, integrity {integrity}",
        refused,
        acknowledged.len(),
        acknowledged.len() - missing.len()
    );
    assert!(missing.is_empty(), "{} acknowledged writes are missing", missing.len());
}

#[tokio::test]
async fn sigkill_during_mixed_writes_loses_nothing_acknowledged_and_marks_interrupted_turns() {
    // A backend that accepts connections and never answers: a turn on it runs forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", silent.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let token = add_user(data.path(), "tester");
    let args = ["--backend", "openai", "--openai-base-url", base_url.as_str(), "--openai-model", "none"];
    let server = Server::launch(data, token.clone(), &args, &[]);
    let stuck = new_session(&server, &token).await;
    let turn = {
        let (url, token, stuck) = (server.url.clone(), token.clone(), stuck.clone());
        tokio::spawn(async move {
            client().post(format!("{url}/api/sessions/{stuck}/messages")).bearer_auth(token).json(&json!({"content": "go"})).send().await
        })
    };
    let mut running = false;
    for _ in 0..100 {
        let (_, session) = call(Method::GET, &server, &token, &format!("/api/sessions/{stuck}"), None).await;
        if session["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the turn never started");

    // Writers of three kinds, until the kill.
    let session = new_session(&server, &token).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, token, session) = (server.url.clone(), token.clone(), session.clone());
            tokio::spawn(async move {
                let http = client();
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let comment = format!("w{w}-{i}");
                    let sent = http
                        .post(format!("{url}/api/sessions/{session}/feedback"))
                        .bearer_auth(&token)
                        .json(&json!({"rating": "down", "comment": comment}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => acknowledged.push(comment),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    if i % 5 == 0 {
                        let _ = http.post(format!("{url}/api/sessions")).bearer_auth(&token).json(&json!({"title": "s"})).send().await;
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (data, token) = server.kill();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let _ = turn.await;
    assert!(acknowledged.len() > 20, "only {} writes were acknowledged before the kill", acknowledged.len());
    let (stored, integrity) = stored_comments(data.path()).await;
    assert_eq!(integrity, "ok");
    let missing = acknowledged.iter().filter(|c| !stored.contains(c)).count();
    println!(
        "fault: SIGKILL under 4 writers: {} writes acknowledged, {} found, integrity {integrity}",
        acknowledged.len(),
        acknowledged.len() - missing
    );
    assert_eq!(missing, 0, "{missing} of {} acknowledged writes lost", acknowledged.len());

    // The turn the kill cut short is marked so, not left `running` forever.
    let server = start_without_model(data, token.clone(), &[]);
    let (_, session) = call(Method::GET, &server, &token, &format!("/api/sessions/{stuck}"), None).await;
    assert_eq!(session["status"], "interrupted", "{session}");
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let data = tempfile::tempdir().unwrap();
    let token = add_user(data.path(), "tester");
    let server = start_without_model(data, token, &["--header-timeout", "1"]);
    let address = server.url.trim_start_matches("http://").to_string();
    let closed_within = |mut stream: std::net::TcpStream| -> Option<Duration> {
        let started = Instant::now();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(started.elapsed()),
                Err(_) => return None,
            }
        }
    };
    // A connection that never sends anything.
    let silent = std::net::TcpStream::connect(&address).unwrap();
    assert!(closed_within(silent).is_some(), "a silent connection was kept open");
    // One that sends half a request head, slowly.
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(closed_within(slow).is_some(), "a half-sent request head was kept open");
    // One that was served and then sits idle between requests.
    let mut kept = std::net::TcpStream::connect(&address).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_within(kept).is_some(), "an idle kept-alive connection was kept open");
    // The server still serves.
    assert_eq!(client().get(format!("{}/healthz", server.url)).send().await.unwrap().status(), 200);
}

fn chat(messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": messages, "max_tokens": 8});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn post_chat(server: &Server, token: &str, body: Value) -> (u16, Value) {
    call(Method::POST, server, token, "/v1/chat/completions", Some(body)).await
}

#[tokio::test]
async fn on_the_real_model_no_request_can_hurt_another() {
    let server = Server::start(&[]);
    let other = add_user_while_running(&server, "other");
    let hi = json!([{"role": "user", "content": "Say hi."}]);

    // Bounded cost: each of these is refused up front with a 400 that says why.
    let long_prompt = "lorem ipsum dolor sit amet ".repeat(3000);
    let recursive = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
    for (body, code) in [
        (chat(hi.clone(), json!({"logprobs": true, "top_logprobs": 100000})), "invalid_request"),
        (chat(hi.clone(), json!({"n": 8, "max_tokens": 1024})), "invalid_value"),
        (chat(json!([{"role": "user", "content": long_prompt}]), json!({})), "context_length_exceeded"),
        (chat(json!([{"role": "user", "content": long_prompt}]), json!({"stream": true})), "context_length_exceeded"),
        (
            chat(
                hi.clone(),
                json!({"stream": true, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": recursive}}}),
            ),
            "invalid_request",
        ),
        (chat(hi.clone(), json!({"tools": (0..200).map(tool).collect::<Vec<_>>()})), "invalid_request"),
    ] {
        let (status, reply) = post_chat(&server, &server.token, body).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
    }

    // A client abandons a tool-constrained request while another user's request runs:
    // the other request succeeds, and the abandoned work stops instead of holding the engine.
    let abandoned = {
        let (url, token) = (server.url.clone(), server.token.clone());
        let body = chat(
            json!([{"role": "user", "content": "Pick the right tool for listing files and call it."}]),
            json!({"tools": (0..40).map(tool).collect::<Vec<_>>(), "max_tokens": 512}),
        );
        tokio::spawn(async move {
            // Well inside the seconds the engine takes to read the forty tools' prompt, so
            // the client surely leaves while its request runs (at 3 s, a faster engine had
            // sometimes finished it).
            let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
            http.post(format!("{url}/v1/chat/completions")).bearer_auth(token).json(&body).send().await.map(|r| r.status())
        })
    };
    let (status, reply) = post_chat(&server, &other, chat(hi.clone(), json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    assert!(abandoned.await.unwrap().is_err(), "the abandoning client was meant to time out");
    for _ in 0..3 {
        let (status, reply) = post_chat(&server, &other, chat(hi.clone(), json!({}))).await;
        assert_eq!(status, 200, "{reply}");
    }
    // Lower-case `bearer` is the same scheme.
    let response =
        client().get(format!("{}/v1/models", server.url)).header("authorization", format!("bearer {other}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

fn tool(i: usize) -> Value {
    json!({"type": "function", "function": {"name": format!("tool_{i}"), "description": format!("Tool number {i}."),
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}})
}

fn add_user_while_running(server: &Server, name: &str) -> String {
    // `user add` writes to the same database file the server uses; WAL allows it.
    add_user(server.data_dir.path(), name)
}

#[tokio::test]
async fn a_user_past_the_rate_limit_gets_429_with_retry_after_and_others_are_served() {
    let data = tempfile::tempdir().unwrap();
    let token = add_user(data.path(), "tester");
    let other = add_user(data.path(), "other");
    let server = start_without_model(data, token.clone(), &["--user-requests-per-minute", "5"]);
    let models = |token: String| {
        let url = server.url.clone();
        async move { client().get(format!("{url}/v1/models")).bearer_auth(token).send().await.unwrap() }
    };
    for _ in 0..5 {
        assert_eq!(models(token.clone()).await.status(), 200);
    }
    let limited = models(token.clone()).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(models(other).await.status(), 200, "another user's allowance is their own");
}

#[tokio::test]
async fn an_open_change_feed_ends_when_its_token_is_deleted() {
    use futures::StreamExt;
    let data = tempfile::tempdir().unwrap();
    let token = add_user(data.path(), "tester");
    let admin = e2e::add_admin(data.path(), "admin");
    let server = start_without_model(data, token.clone(), &[]);
    let response = client().get(format!("{}/api/sync/events", server.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut feed = response.bytes_stream();

    // The token goes (as an operator would revoke it), and its cached lookup expires.
    use sqlx::ConnectOptions;
    let mut db = sqlx::sqlite::SqliteConnectOptions::new().filename(server.data_dir.path().join("skillhive.db")).connect().await.unwrap();
    let user_id: (String,) = sqlx::query_as("SELECT id FROM users WHERE name = 'tester'").fetch_one(&mut db).await.unwrap();
    sqlx::query("DELETE FROM api_tokens WHERE user_id = ?").bind(&user_id.0).execute(&mut db).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;

    let skill = "---\nname: after-revoke\ndescription: Published after a revocation. Use never.\n---\nNothing.\n";
    let published = client()
        .post(format!("{}/api/skills", server.url))
        .bearer_auth(&admin)
        .json(&json!({"slug": "after-revoke", "scope": "shared", "files": [{"path": "SKILL.md", "content": skill}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let mut seen = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(chunk)) = feed.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the feed of a deleted token stayed open");
    assert!(!seen.contains("after-revoke"), "a change reached a deleted token: {seen}");
}

#[tokio::test]
async fn an_open_change_feed_does_not_hold_up_shutdown() {
    use futures::StreamExt;
    let data = tempfile::tempdir().unwrap();
    let token = add_user(data.path(), "tester");
    let server = start_without_model(data, token.clone(), &[]);
    let response = client().get(format!("{}/api/sync/events", server.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut feed = response.bytes_stream();

    // The grace period for requests in flight is 10 s; a feed never finishes on its own,
    // so before the feeds listened for shutdown, every stop took the whole grace period.
    let started = Instant::now();
    assert!(tokio::task::spawn_blocking(move || server.terminate()).await.unwrap(), "the server did not exit cleanly");
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?} with a feed open", started.elapsed());
    let ended = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = feed.next().await {} }).await;
    assert!(ended.is_ok(), "the feed stayed open after the server stopped");
}
