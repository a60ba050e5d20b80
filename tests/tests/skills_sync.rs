//! The skill repository end to end: publishing and its errors, the sync manifest (ETag,
//! 304, `since`), the SSE feed, the real `clawhub` CLI against the registry API, the
//! `skillhive sync` client, and privacy across every endpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{add_admin, add_user, call, clawhub, client, repo_root, skillhive_binary, Server};
use futures::StreamExt;
use serde_json::{json, Value};

async fn get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    call(reqwest::Method::GET, server, token, path, None).await
}

fn skill_md(name: &str, body: &str) -> String {
    format!("---\nname: {name}\ndescription: Tidy a markdown file. Use when asked to clean up notes.\n---\n{body}\n")
}

/// A bundle with files in `references/` and `scripts/`, whose collated order differs
/// from byte order, so fingerprints computed by other clients are really compared.
fn bundle(name: &str, body: &str, scope: &str) -> Value {
    json!({
        "slug": name,
        "scope": scope,
        "changelog": body,
        "files": [
            { "path": "SKILL.md", "content": skill_md(name, body) },
            { "path": "references/style.md", "content": "Use short lines.\n" },
            { "path": "scripts/tidy.sh", "content_base64": "ZWNobyB0aWR5Cg==" },
        ],
    })
}

async fn publish(server: &Server, token: &str, body: Value) -> Value {
    let (status, reply) = call(reqwest::Method::POST, server, token, "/api/skills", Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    reply
}

#[tokio::test]
async fn publishing_syncing_and_the_change_feed() {
    let server = Server::start(&[]);
    let admin = add_admin(server.data_dir.path(), "admin");

    // The starter skills were loaded at first start, as shared skills.
    let (_, listed) = get(&server, &server.token, "/api/skills?scope=shared").await;
    let slugs: Vec<&str> = listed["skills"].as_array().unwrap().iter().map(|s| s["slug"].as_str().unwrap()).collect();
    assert!(slugs.contains(&"csv-inspect") && slugs.contains(&"workspace-files"), "{slugs:?}");
    let (_, found) = get(&server, &server.token, "/api/skills?q=csv").await;
    assert_eq!(found["skills"].as_array().unwrap().len(), 1, "{found}");

    // A bad bundle is refused with each broken rule named, and nothing is stored.
    let mut broken = bundle("tidy-notes", "x", "shared");
    broken["files"][0]["content"] = json!("---\nname: Tidy_Notes\n---\n");
    broken["files"][1]["path"] = json!("../escape.md");
    let (status, error) = call(reqwest::Method::POST, &server, &admin, "/api/skills", Some(broken)).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    for rule in ["[name-charset]", "[description-required]", "[path]", "tidy-notes/SKILL.md:2"] {
        assert!(message.contains(rule), "{rule} missing from {message}");
    }
    let (status, _) = call(reqwest::Method::POST, &server, &server.token, "/api/skills", Some(bundle("tidy-notes", "x", "shared"))).await;
    assert_eq!(status, 403, "only admins publish to the shared scope");
    let (status, _) = get(&server, &admin, "/api/skills/tidy-notes").await;
    assert_eq!(status, 404);

    // The manifest: a strong ETag, and 304 while nothing changes.
    let manifest_url = format!("{}/api/sync/manifest", server.url);
    let first = client().get(&manifest_url).bearer_auth(&server.token).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    let first: Value = first.json().await.unwrap();
    let cursor = first["cursor"].as_i64().unwrap();
    let again = client().get(&manifest_url).bearer_auth(&server.token).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);

    // A subscriber to the feed receives the next publication.
    let feed = client().get(format!("{}/api/sync/events", server.url)).bearer_auth(&server.token).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let mut feed = feed.bytes_stream();
    let published = publish(&server, &admin, bundle("tidy-notes", "Wrap at 80 columns.", "shared")).await;
    assert_eq!(published["version"], "1.0.0");
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !received.contains("tidy-notes") {
        let chunk = tokio::time::timeout_at(deadline, feed.next()).await.expect("the feed delivers the publication").unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("event: publish"), "{received}");
    assert!(received.contains("\"version\":\"1.0.0\""), "{received}");

    // The old ETag no longer matches; `since` returns only what changed.
    let changed = client().get(&manifest_url).bearer_auth(&server.token).header("If-None-Match", &etag).send().await.unwrap();
    assert_eq!(changed.status(), 200);
    let (_, delta) = get(&server, &server.token, &format!("/api/sync/manifest?since={cursor}")).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["skills"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["tidy-notes"], "{delta}");
    assert_eq!(delta["skills"]["tidy-notes"]["fingerprint"], published["fingerprint"]);
    let next = delta["cursor"].as_i64().unwrap();
    assert!(next > cursor);
    let (_, empty) = get(&server, &server.token, &format!("/api/sync/manifest?since={next}")).await;
    assert_eq!(empty["skills"], json!({}));

    // Versions, files, diffs and rollback.
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 72 columns.", "shared")).await;
    let (_, versions) = get(&server, &server.token, "/api/skills/tidy-notes/versions").await;
    let numbers: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
    assert_eq!(numbers, vec!["1.0.1", "1.0.0"]);
    let (_, one) = get(&server, &server.token, "/api/skills/tidy-notes/versions/1.0.0").await;
    assert_eq!(one["files"].as_array().unwrap().len(), 3, "{one}");
    let file = client()
        .get(format!("{}/api/skills/tidy-notes/files/SKILL.md?version=1.0.0", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.text().await.unwrap(), skill_md("tidy-notes", "Wrap at 80 columns."));
    let (_, diff) = get(&server, &server.token, "/api/skills/tidy-notes/diff?from=1.0.0&to=1.0.1").await;
    assert_eq!(
        diff["diff"],
        "--- a/SKILL.md@1.0.0\n+++ b/SKILL.md@1.0.1\n@@ -2,4 +2,4 @@\n name: tidy-notes\n description: Tidy a markdown file. Use when asked to clean up notes.\n ---\n-Wrap at 80 columns.\n+Wrap at 72 columns.\n"
    );
    let (status, _) = get(&server, &server.token, "/api/skills/tidy-notes/versions/9.9.9").await;
    assert_eq!(status, 404);
    let (status, rolled) =
        call(reqwest::Method::POST, &server, &admin, "/api/skills/tidy-notes/rollback", Some(json!({"version": "1.0.0"}))).await;
    assert_eq!(status, 201, "{rolled}");
    assert_eq!((rolled["version"].as_str(), rolled["fingerprint"].as_str()), (Some("1.0.2"), published["fingerprint"].as_str()));
    let (status, _) =
        call(reqwest::Method::POST, &server, &server.token, "/api/skills/tidy-notes/rollback", Some(json!({"version": "1.0.1"}))).await;
    assert_eq!(status, 403, "a user may not roll back a shared skill");
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn the_real_clawhub_cli_installs_and_updates_from_the_registry() {
    let server = Server::start(&[]);
    let admin = add_admin(server.data_dir.path(), "admin");
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 80 columns.", "shared")).await;

    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("clawhub.json");
    std::fs::write(&config, json!({ "registry": server.url, "token": server.token }).to_string()).unwrap();
    let workdir = home.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();

    let (_, discovery) = get(&server, &server.token, "/.well-known/clawhub.json").await;
    assert_eq!(discovery["apiBase"], server.url);

    let search = clawhub(&workdir, &config, &server.url, &["search", "tidy"]);
    assert!(search.status.success() && text(&search).contains("tidy-notes v1.0.0"), "{}", text(&search));
    let inspect = clawhub(&workdir, &config, &server.url, &["inspect", "tidy-notes", "--files"]);
    assert!(text(&inspect).contains("references/style.md"), "{}", text(&inspect));

    let install = clawhub(&workdir, &config, &server.url, &["install", "tidy-notes"]);
    assert!(install.status.success(), "{}", text(&install));
    let installed = workdir.join("skills/tidy-notes");
    assert_eq!(std::fs::read_to_string(installed.join("SKILL.md")).unwrap(), skill_md("tidy-notes", "Wrap at 80 columns."));
    assert_eq!(std::fs::read_to_string(installed.join("scripts/tidy.sh")).unwrap(), "echo tidy\n");
    let list = clawhub(&workdir, &config, &server.url, &["list"]);
    assert!(text(&list).contains("tidy-notes  1.0.0"), "{}", text(&list));

    // The CLI hashes the installed folder and asks the registry which version it is: the
    // fingerprints must agree, or this would report local changes.
    let current = clawhub(&workdir, &config, &server.url, &["update", "--all"]);
    assert!(text(&current).contains("up to date"), "{}", text(&current));

    publish(&server, &admin, bundle("tidy-notes", "Wrap at 72 columns.", "shared")).await;
    let update = clawhub(&workdir, &config, &server.url, &["update", "--all"]);
    assert!(update.status.success(), "{}", text(&update));
    assert!(text(&update).contains("1.0.1"), "{}", text(&update));
    assert_eq!(std::fs::read_to_string(installed.join("SKILL.md")).unwrap(), skill_md("tidy-notes", "Wrap at 72 columns."));
    let list = clawhub(&workdir, &config, &server.url, &["list"]);
    assert!(text(&list).contains("tidy-notes  1.0.1"), "{}", text(&list));
}

fn sync(server: &Server, token: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(skillhive_binary());
    command.args(["sync", "--server", &server.url, "--token", token, "--dir"]).arg(dir).args(extra);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run skillhive sync");
    eprintln!("sync {extra:?}: {}", text(&output));
    output
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn the_sync_client_keeps_local_work_and_survives_a_crash() {
    let server = Server::start(&[]);
    let admin = add_admin(server.data_dir.path(), "admin");
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 80 columns.", "shared")).await;
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path().join("skills");
    // A skill of the user's own, which sync did not install and must never touch.
    std::fs::create_dir_all(skills.join("my-own")).unwrap();
    std::fs::write(skills.join("my-own/SKILL.md"), "mine\n").unwrap();

    let first = sync(&server, &server.token, &skills, &[], &[]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("installed tidy-notes 1.0.0"), "{}", text(&first));
    assert!(text(&first).contains("installed csv-inspect 1.0.0"), "starter skills sync too: {}", text(&first));
    let lock: Value = serde_json::from_str(&read(skills.join(".skillhive/lock.json"))).unwrap();
    assert_eq!(lock["skills"]["tidy-notes"]["version"], "1.0.0");
    assert!(lock["skills"].get("my-own").is_none());
    let quiet = sync(&server, &server.token, &skills, &[], &[]);
    assert!(text(&quiet).contains("up to date"), "an unchanged manifest is a 304: {}", text(&quiet));

    // A local edit survives a new version; --force overwrites it.
    std::fs::write(skills.join("csv-inspect/SKILL.md"), "my edit\n").unwrap();
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 72 columns.", "shared")).await;
    let second = sync(&server, &server.token, &skills, &[], &[]);
    assert!(text(&second).contains("updated tidy-notes -> 1.0.1"), "{}", text(&second));
    assert!(text(&second).contains("kept csv-inspect: edited locally"), "{}", text(&second));
    assert_eq!(read(skills.join("csv-inspect/SKILL.md")), "my edit\n");
    assert_eq!(read(skills.join("my-own/SKILL.md")), "mine\n");
    assert_eq!(read(skills.join("tidy-notes/SKILL.md")), skill_md("tidy-notes", "Wrap at 72 columns."));

    // A crash halfway through writing a new version leaves the previous one whole; the
    // next pass cleans up and completes.
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 60 columns.", "shared")).await;
    let crashed = sync(&server, &server.token, &skills, &[], &[("SKILLHIVE_SYNC_CRASH_AFTER_FILES", "1")]);
    assert!(!crashed.status.success(), "the injected crash kills the client");
    assert_eq!(read(skills.join("tidy-notes/SKILL.md")), skill_md("tidy-notes", "Wrap at 72 columns."));
    assert_eq!(read(skills.join("tidy-notes/references/style.md")), "Use short lines.\n");
    let lock: Value = serde_json::from_str(&read(skills.join(".skillhive/lock.json"))).unwrap();
    assert_eq!(lock["skills"]["tidy-notes"]["version"], "1.0.1");
    let resumed = sync(&server, &server.token, &skills, &[], &[]);
    assert!(text(&resumed).contains("updated tidy-notes -> 1.0.2"), "{}", text(&resumed));
    let leftovers: Vec<_> = std::fs::read_dir(skills.join(".skillhive")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("lock.json")], "staging folders are cleaned up");

    let forced = sync(&server, &server.token, &skills, &["--force"], &[]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(read(skills.join("csv-inspect/SKILL.md")).starts_with("---\nname: csv-inspect"));
    assert_eq!(read(skills.join("my-own/SKILL.md")), "mine\n", "even --force leaves unmanaged folders alone unless their name is taken");

    // A deleted skill is removed locally, since sync installed it.
    let (status, _) = call(reqwest::Method::DELETE, &server, &admin, "/api/skills/tidy-notes", None).await;
    assert_eq!(status, 204);
    let removed = sync(&server, &server.token, &skills, &[], &[]);
    assert!(text(&removed).contains("removed tidy-notes"), "{}", text(&removed));
    assert!(!skills.join("tidy-notes").exists());

    // --push uploads OpenClaw transcripts once.
    let transcripts = dir.path().join("sessions");
    std::fs::create_dir_all(&transcripts).unwrap();
    std::fs::copy(repo_root().join("tests/fixtures/openclaw-session.jsonl"), transcripts.join("a.jsonl")).unwrap();
    let pushed = sync(&server, &server.token, &skills, &["--push", transcripts.to_str().unwrap()], &[]);
    assert!(text(&pushed).contains("pushed 1 transcript"), "{}", text(&pushed));
    let again = sync(&server, &server.token, &skills, &["--push", transcripts.to_str().unwrap()], &[]);
    assert!(!text(&again).contains("pushed"), "{}", text(&again));
    let (_, sessions) = get(&server, &server.token, "/api/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1, "{sessions}");
}

#[tokio::test]
async fn a_private_skill_is_invisible_to_other_users_everywhere() {
    let server = Server::start(&[]);
    let bob = add_user(server.data_dir.path(), "bob");
    let owner = &server.token;
    let secret = publish(&server, owner, bundle("secret-recipe", "Only mine.", "private")).await;
    assert_eq!(secret["scope"], "private");
    let version = secret["version"].as_str().unwrap();
    let fingerprint = secret["fingerprint"].as_str().unwrap();

    let paths = [
        "/api/skills/secret-recipe".to_string(),
        "/api/skills/secret-recipe/versions".into(),
        format!("/api/skills/secret-recipe/versions/{version}"),
        "/api/skills/secret-recipe/files/SKILL.md".into(),
        format!("/api/skills/secret-recipe/diff?from={version}&to={version}"),
        "/api/v1/skills/secret-recipe".into(),
        "/api/v1/skills/secret-recipe/versions".into(),
        format!("/api/v1/skills/secret-recipe/versions/{version}"),
        "/api/v1/skills/secret-recipe/file?path=SKILL.md".into(),
        format!("/api/v1/resolve?slug=secret-recipe&hash={fingerprint}"),
        format!("/api/v1/download?slug=secret-recipe&version={version}"),
    ];
    for path in &paths {
        let (status, _) = get(&server, owner, path).await;
        assert_eq!(status, 200, "the owner reads {path}");
        let (status, body) = get(&server, &bob, path).await;
        assert_eq!(status, 404, "{path} for another user: {body}");
    }
    for path in [
        "/api/skills",
        "/api/skills?q=secret",
        "/api/v1/search?q=secret",
        "/api/v1/skills?prefix=secret",
        "/api/sync/manifest",
        "/api/sync/manifest?since=0",
    ] {
        let (_, mine) = get(&server, owner, path).await;
        assert!(mine.to_string().contains("secret-recipe"), "{path}: {mine}");
        let (_, theirs) = get(&server, &bob, path).await;
        assert!(!theirs.to_string().contains("secret"), "{path} leaks: {theirs}");
    }
    let (status, _) =
        call(reqwest::Method::POST, &server, &bob, "/api/skills/secret-recipe/rollback", Some(json!({"version": version}))).await;
    assert_eq!(status, 404);
    let (status, _) = call(reqwest::Method::DELETE, &server, &bob, "/api/skills/secret-recipe", None).await;
    assert_eq!(status, 404);
    // Bob may publish his own skill of the same name; each sees only their own.
    publish(&server, &bob, bundle("secret-recipe", "Bob's.", "private")).await;
    let (_, theirs) = get(&server, &bob, "/api/skills/secret-recipe/files/SKILL.md").await;
    assert!(theirs.as_str().unwrap().contains("Bob's."));
    let (_, mine) = get(&server, owner, "/api/skills/secret-recipe/files/SKILL.md").await;
    assert!(mine.as_str().unwrap().contains("Only mine."));

    // Bob's feed carries his own publication, never the owner's.
    let feed = client().get(format!("{}/api/sync/events", server.url)).bearer_auth(&bob).header("Last-Event-ID", "0").send().await.unwrap();
    let mut feed = feed.bytes_stream();
    let mut received = String::new();
    while !received.contains("secret-recipe") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.expect("the backlog arrives").unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    publish(&server, owner, bundle("secret-recipe", "Mine, again.", "private")).await;
    publish(&server, &bob, bundle("bobs-marker", "Marker.", "private")).await;
    while !received.contains("bobs-marker") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.expect("the marker arrives").unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(received.matches("secret-recipe").count(), 1, "only bob's own publication: {received}");
}

#[tokio::test]
async fn sync_watch_installs_a_publication_as_it_happens() {
    let server = Server::start(&[]);
    let admin = add_admin(server.data_dir.path(), "admin");
    let dir = tempfile::tempdir().unwrap();
    let skills = dir.path().join("skills");
    let mut watcher = Command::new(skillhive_binary())
        .args(["sync", "--watch", "--server", &server.url, "--token", &server.token, "--dir"])
        .arg(&skills)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |path: PathBuf, content: String| async move {
        for _ in 0..100 {
            if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let starter = skills.join("csv-inspect/SKILL.md");
    assert!(
        wait_for(starter.clone(), std::fs::read_to_string(repo_root().join("skills/csv-inspect/SKILL.md")).unwrap()).await,
        "the first pass installs"
    );
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 80 columns.", "shared")).await;
    let arrived = wait_for(skills.join("tidy-notes/SKILL.md"), skill_md("tidy-notes", "Wrap at 80 columns.")).await;
    publish(&server, &admin, bundle("tidy-notes", "Wrap at 72 columns.", "shared")).await;
    let updated = wait_for(skills.join("tidy-notes/SKILL.md"), skill_md("tidy-notes", "Wrap at 72 columns.")).await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(arrived, "a publication reaches a watching client");
    assert!(updated, "and so does the next version");
}
