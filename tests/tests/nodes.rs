//! Two real `skillhive serve` processes on one real PostgreSQL server serve the same users:
//! a publication on one reaches the other's manifest, ETag, change feed and the `clawhub`
//! CLI within a second; a token revoked from the command line is refused by both within a
//! second, and so is a group joined; a turn running on one is cancelled from the other;
//! two `evolve --once` started together on the real model make exactly one run.

use std::io::Read;
use std::time::{Duration, Instant};

use e2e::{call, clawhub, client, skillhive_binary, skillhive_on, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use server::testing::postgres::fresh_database;

/// A node on `database_url` whose inference backend is `upstream`, acting as `token`.
fn node(database_url: &str, token: &str, upstream: &str) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    Server::launch(
        data_dir,
        token.to_string(),
        &["--database-url", database_url, "--backend", "openai", "--openai-base-url", upstream, "--openai-model", "none"],
        &[],
    )
}

/// An upstream that accepts connections and never answers: a turn on it runs until it
/// is cancelled.
fn silent_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

fn bundle(slug: &str, body: &str, scope: &str) -> Value {
    json!({
        "slug": slug,
        "scope": scope,
        "changelog": body,
        "files": [{ "path": "SKILL.md", "content": format!("---\nname: {slug}\ndescription: Tidy notes. Use when asked to clean up.\n---\n{body}\n") }],
    })
}

/// Polls `check` every 20 ms for up to a second; how long it took, if it held.
async fn within_a_second(mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn status_of(server: &Server, token: &str, path: &str) -> u16 {
    call(reqwest::Method::GET, server, token, path, None).await.0
}

#[tokio::test]
async fn two_nodes_on_one_postgres_serve_the_same_users() {
    let (_cluster, url) = fresh_database().await.unwrap();
    let admin = skillhive_on(&url, &["user", "add", "admin", "--admin"]);
    let bob = skillhive_on(&url, &["user", "add", "bob"]);
    let upstream = silent_upstream();
    let a = node(&url, &admin, &upstream);
    let b = node(&url, &admin, &upstream);

    // Bob follows node B: its manifest (with its ETag) and its change feed.
    let manifest_url = format!("{}/api/sync/manifest", b.url);
    let first = client().get(&manifest_url).bearer_auth(&bob).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let feed = client().get(format!("{}/api/sync/events", b.url)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let mut feed = feed.bytes_stream();

    // The admin publishes on node A.
    let (status, published) = call(reqwest::Method::POST, &a, &admin, "/api/skills", Some(bundle("tidy-notes", "Wrap.", "shared"))).await;
    assert_eq!(status, 201, "{published}");
    let published_at = Instant::now();
    let mut received = String::new();
    while !received.contains("tidy-notes") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(1), feed.next()).await.expect("node B's feed within a second").unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(published_at.elapsed() < Duration::from_secs(1), "feed took {:?}", published_at.elapsed());
    let changed = within_a_second(async || {
        let reply = client().get(&manifest_url).bearer_auth(&bob).header("If-None-Match", &etag).send().await.unwrap();
        reply.status() == 200 && reply.json::<Value>().await.unwrap()["skills"]["tidy-notes"]["version"] == "1.0.0"
    })
    .await;
    assert!(changed.is_some(), "node B's manifest and ETag change within a second");

    // The clawhub CLI installs it from node B.
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("clawhub.json");
    std::fs::write(&config, json!({ "registry": b.url, "token": bob }).to_string()).unwrap();
    let workdir = home.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    let install = clawhub(&workdir, &config, &b.url, &["install", "tidy-notes"]);
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));
    assert!(workdir.join("skills/tidy-notes/SKILL.md").exists());

    // A group joined from the command line: bob sees its skills on both nodes at once.
    let (status, reply) = call(reqwest::Method::POST, &a, &admin, "/api/skills", Some(bundle("team-notes", "Ours.", "group:team"))).await;
    assert_eq!(status, 403, "the admin is not in the group: {reply}");
    skillhive_on(&url, &["user", "join", "admin", "team"]);
    let joined = within_a_second(async || {
        call(reqwest::Method::POST, &a, &admin, "/api/skills", Some(bundle("team-notes", "Ours.", "group:team"))).await.0 == 201
    })
    .await;
    assert!(joined.is_some(), "node A sees the membership within a second");
    skillhive_on(&url, &["user", "join", "bob", "team"]);
    assert!(within_a_second(async || status_of(&b, &bob, "/api/skills/team-notes").await == 200).await.is_some());

    // A turn running on node A is cancelled through node B.
    let (_, session) = call(reqwest::Method::POST, &a, &bob, "/api/sessions", Some(json!({ "title": "t" }))).await;
    let id = session["id"].as_str().unwrap().to_string();
    let turn = {
        let (url, bob, id) = (a.url.clone(), bob.clone(), id.clone());
        tokio::spawn(async move {
            let reply = client().post(format!("{url}/api/sessions/{id}/messages")).bearer_auth(&bob).json(&json!({ "content": "hi" }));
            reply.send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    let mut running = false;
    for _ in 0..100 {
        let (_, state) = call(reqwest::Method::GET, &b, &bob, &format!("/api/sessions/{id}"), None).await;
        if state["status"] == "running" {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the turn runs on node A");
    let (status, _) =
        call(reqwest::Method::POST, &b, &bob, &format!("/api/sessions/{id}/messages"), Some(json!({ "content": "again" }))).await;
    assert_eq!(status, 409, "one turn per session, across nodes");
    let (status, cancelled) = call(reqwest::Method::POST, &b, &bob, &format!("/api/sessions/{id}/cancel"), None).await;
    assert_eq!(status, 202, "{cancelled}");
    let reply = tokio::time::timeout(Duration::from_secs(5), turn).await.expect("the turn stops").unwrap();
    assert_eq!(reply["stop_reason"], "cancelled", "{reply}");

    // Bob's token, revoked from the command line, is refused by both nodes within a second.
    assert_eq!(status_of(&a, &bob, "/api/sessions").await, 200);
    assert_eq!(status_of(&b, &bob, "/api/sessions").await, 200);
    skillhive_on(&url, &["user", "revoke", "bob"]);
    for server in [&a, &b] {
        let refused = within_a_second(async || status_of(server, &bob, "/api/sessions").await == 401).await;
        assert!(refused.is_some(), "a revoked token still works on {}", server.url);
    }
}

#[tokio::test]
async fn concurrent_evolver_runs_on_two_nodes_make_exactly_one_run() {
    let (_cluster, url) = fresh_database().await.unwrap();
    let fixtures = e2e::repo_root().join("tests/fixtures");
    for user in ["ann", "ben"] {
        skillhive_on(&url, &["user", "add", user]);
        for fixture in ["openclaw-session.jsonl", "skillclaw-session.json"] {
            let file = fixtures.join(fixture);
            skillhive_on(&url, &["import", file.to_str().unwrap(), "--user", user]);
        }
    }
    // Both start together on the real model; the lease in the database lets one run.
    let evolve = || {
        std::process::Command::new(skillhive_binary())
            .args(["evolve", "--once", "--database-url", &url])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs = [evolve(), evolve()];
    let mut outcomes = Vec::new();
    for run in &mut runs {
        let status = run.wait().unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        outcomes.push((status.success(), out, err));
    }
    let ran: Vec<_> = outcomes.iter().filter(|(ok, ..)| *ok).collect();
    assert_eq!(ran.len(), 1, "{outcomes:?}");
    let run: Value = serde_json::from_str(&ran[0].1).unwrap();
    assert_eq!(run["report"]["new_sessions"], 4, "{run}");
    let refused = outcomes.iter().find(|(ok, ..)| !*ok).unwrap();
    assert!(refused.2.contains("another evolver run holds the lease"), "{}", refused.2);
}
