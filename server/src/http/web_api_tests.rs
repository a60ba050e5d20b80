//! API tests of what the browser UI relies on: sign-in by password or token into an
//! HttpOnly cookie, the CSRF defense on cookie-authenticated writes, sign-out ending the
//! session on the server, account administration, the session event feed, the validator's
//! per-rule verdict, and the UI files with their security headers.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::test_support::request;
use crate::testing::scripted::{Otherwise, ScriptedEngine};
use crate::testing::TestApp;

/// What a browser would send: a method, a path, the cookie it holds, extra headers, and a
/// JSON body. Returns the status, the headers and the JSON body (`Null` if not JSON).
async fn browser(
    router: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut builder = Request::builder().method(method).uri(path).header("host", "skillhive.test");
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = match body {
        Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `name=value` of the session cookie a response sets.
fn session_cookie(headers: &HeaderMap) -> String {
    let set = headers.get("set-cookie").expect("a session cookie").to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn harness() -> TestApp {
    TestApp::new(std::sync::Arc::new(ScriptedEngine::new(None, Otherwise::Done, Vec::<agent::engine::Choice>::new()))).await.unwrap()
}

async fn with_password(app: &TestApp, name: &str, admin: bool, password: &str) -> String {
    let (user, token) = app.user(name, admin).await.unwrap();
    let hash = crate::services::accounts::hash_password(password).unwrap();
    app.db.store.set_password(&user.id, Some(&hash)).await.unwrap();
    token
}

#[tokio::test]
async fn a_browser_signs_in_into_an_httponly_cookie_and_its_writes_need_the_csrf_token() {
    let app = harness().await;
    with_password(&app, "alice", false, "correct horse battery").await;
    let router = app.router();

    let (code, _, body) =
        browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "alice", "password": "wrong password"}))).await;
    assert_eq!((code, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_credentials")));
    let (code, _, unknown) =
        browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "nobody", "password": "wrong password"}))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown["error"]["message"], body["error"]["message"], "an unknown name is refused as a wrong password is");

    let (code, headers, me) =
        browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "alice", "password": "correct horse battery"})))
            .await;
    assert_eq!(code, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice");
    let set = headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain http gets no Secure flag: {set}");
    let cookie = session_cookie(&headers);
    let csrf = me["csrf"].as_str().unwrap().to_string();
    assert!(!set.contains(&csrf), "the CSRF token is not the cookie");

    // Reads work with the cookie alone; a reloaded page learns the CSRF token again.
    let (code, _, again) = browser(&router, "GET", "/api/me", Some(&cookie), &[], None).await;
    assert_eq!((code, again["csrf"].as_str()), (StatusCode::OK, Some(csrf.as_str())));

    // A write without the token, with a wrong one, or from another origin is refused, and
    // nothing is created.
    let create = Some(json!({"title": "from a form"}));
    for headers in [vec![], vec![("x-csrf-token", "0000")], vec![("x-csrf-token", csrf.as_str()), ("origin", "https://evil.example")]] {
        let (code, _, refused) = browser(&router, "POST", "/api/sessions", Some(&cookie), &headers, create.clone()).await;
        assert_eq!((code, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf_failed")), "{headers:?}");
    }
    let (_, _, listed) = browser(&router, "GET", "/api/sessions", Some(&cookie), &[], None).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 0);
    let same_origin = [("x-csrf-token", csrf.as_str()), ("origin", "http://skillhive.test")];
    let (code, _, created) = browser(&router, "POST", "/api/sessions", Some(&cookie), &same_origin, create.clone()).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");

    // Sign-out ends the session on the server: the old cookie signs in nobody.
    let (code, headers, _) = browser(&router, "POST", "/api/auth/logout", Some(&cookie), &[("x-csrf-token", &csrf)], None).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert!(headers.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    let (code, _, _) = browser(&router, "GET", "/api/me", Some(&cookie), &[], None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Behind a TLS proxy the cookie is Secure.
    let (_, headers, _) = browser(
        &router,
        "POST",
        "/api/auth/login",
        None,
        &[("x-forwarded-proto", "https")],
        Some(json!({"username": "alice", "password": "correct horse battery"})),
    )
    .await;
    assert!(headers.get("set-cookie").unwrap().to_str().unwrap().contains("Secure"));
}

#[tokio::test]
async fn a_token_signs_a_browser_in_and_bearer_clients_need_no_csrf_token() {
    let app = harness().await;
    let token = with_password(&app, "alice", false, "correct horse battery").await;
    let router = app.router();
    let (code, headers, me) = browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"token": token}))).await;
    assert_eq!((code, me["name"].as_str()), (StatusCode::OK, Some("alice")));
    assert!(!session_cookie(&headers).contains(&token), "the cookie is a session of its own, not the token");
    let (code, _, _) = browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"token": "sh-not-a-token"}))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, _) = browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "alice"}))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // API clients write with their token and no CSRF header, as before.
    let (code, _) = request(&router, &token, "POST", "/api/sessions", Some(json!({"title": "api"}))).await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_slowed_down_for_that_name() {
    let app = harness().await;
    with_password(&app, "alice", false, "correct horse battery").await;
    let router = app.router();
    let attempt = |password: &'static str| {
        let router = router.clone();
        async move { browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "alice", "password": password}))).await }
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong password").await.0, StatusCode::UNAUTHORIZED);
    }
    let (code, headers, _) = attempt("correct horse battery").await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "even the right password waits after five wrong ones");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn admins_manage_users_and_groups_and_others_cannot() {
    let app = harness().await;
    let (_, admin) = app.user("admin", true).await.unwrap();
    let (user, plain) = app.user("user", false).await.unwrap();
    let router = app.router();
    for (method, path) in [("GET", "/api/admin/users".to_string()), ("PATCH", format!("/api/admin/users/{}", user.id))] {
        let (code, body) = request(&router, &plain, method, &path, Some(json!({"is_admin": true}))).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert!(!body.to_string().contains("admin\""), "a refusal names no other user: {body}");
    }
    let (code, _) = request(&router, &plain, "POST", "/api/admin/users", Some(json!({"name": "mallory", "is_admin": true}))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    let (code, created) =
        request(&router, &admin, "POST", "/api/admin/users", Some(json!({"name": "carol", "password": "carol's password"}))).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["user"]["has_password"], true);
    let carol_token = created["token"].as_str().unwrap().to_string();
    let carol_id = created["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(request(&router, &carol_token, "GET", "/api/me", None).await.0, StatusCode::OK);
    let (code, _) = request(&router, &admin, "POST", "/api/admin/users", Some(json!({"name": "carol"}))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = request(&router, &admin, "POST", "/api/admin/users", Some(json!({"name": "dave", "password": "short"}))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (_, listed) = request(&router, &admin, "GET", "/api/admin/users", None).await;
    let names: Vec<&str> = listed["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "carol", "user"], "dave was refused whole");

    // Groups: join makes the group's scope visible to the user; leave takes it away.
    let (code, joined) = request(&router, &admin, "PUT", &format!("/api/admin/users/{carol_id}/groups/ops"), None).await;
    assert_eq!((code, joined["groups"].clone()), (StatusCode::OK, json!(["ops"])));
    let (_, me) = request(&router, &carol_token, "GET", "/api/me", None).await;
    assert_eq!(me["groups"], json!(["ops"]));
    let (code, left) = request(&router, &admin, "DELETE", &format!("/api/admin/users/{carol_id}/groups/ops"), None).await;
    assert_eq!((code, left["groups"].clone()), (StatusCode::OK, json!([])));
    assert_eq!(request(&router, &admin, "DELETE", &format!("/api/admin/users/{carol_id}/groups/ops"), None).await.0, StatusCode::NOT_FOUND);

    // Disabling takes effect at once, for the token and for the password.
    let (code, disabled) =
        request(&router, &admin, "PATCH", &format!("/api/admin/users/{carol_id}"), Some(json!({"disabled": true}))).await;
    assert_eq!((code, disabled["disabled"].clone()), (StatusCode::OK, json!(true)));
    assert_eq!(request(&router, &carol_token, "GET", "/api/me", None).await.0, StatusCode::UNAUTHORIZED);
    let (code, _, _) =
        browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "carol", "password": "carol's password"}))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    request(
        &router,
        &admin,
        "PATCH",
        &format!("/api/admin/users/{carol_id}"),
        Some(json!({"disabled": false, "password": "a new password"})),
    )
    .await;
    let (code, _, _) =
        browser(&router, "POST", "/api/auth/login", None, &[], Some(json!({"username": "carol", "password": "a new password"}))).await;
    assert_eq!(code, StatusCode::OK);

    // An admin cannot lock themselves out; an unknown user is a 404.
    let (_, me) = request(&router, &admin, "GET", "/api/me", None).await;
    let own = format!("/api/admin/users/{}", me["id"].as_str().unwrap());
    assert_eq!(request(&router, &admin, "PATCH", &own, Some(json!({"disabled": true}))).await.0, StatusCode::CONFLICT);
    assert_eq!(request(&router, &admin, "PATCH", &own, Some(json!({"is_admin": false}))).await.0, StatusCode::CONFLICT);
    assert_eq!(request(&router, &admin, "PATCH", "/api/admin/users/nope", Some(json!({"is_admin": true}))).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_session_feed_replays_after_last_event_id_and_ends_when_no_turn_runs() {
    let app = harness().await;
    let (_, alice) = app.user("alice", false).await.unwrap();
    let (_, bob) = app.user("bob", false).await.unwrap();
    let router = app.router();
    let (_, session) = request(&router, &alice, "POST", "/api/sessions", Some(json!({"title": "t"}))).await;
    let id = session["id"].as_str().unwrap();
    let (code, turn) = request(&router, &alice, "POST", &format!("/api/sessions/{id}/messages"), Some(json!({"content": "hi"}))).await;
    assert_eq!(code, StatusCode::OK, "{turn}");
    let (_, trajectory) = request(&router, &alice, "GET", &format!("/api/sessions/{id}/trajectory"), None).await;
    let total = trajectory["events"].as_array().unwrap().len();
    assert!(total >= 3, "{trajectory}");

    let feed = |last: Option<&str>| {
        let router = router.clone();
        let path = format!("/api/sessions/{id}/events");
        let alice = alice.clone();
        let last = last.map(str::to_string);
        async move {
            let mut builder = Request::builder().uri(path).header("authorization", format!("Bearer {alice}"));
            if let Some(last) = last {
                builder = builder.header("last-event-id", last);
            }
            let response = router.oneshot(builder.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    let whole = feed(None).await;
    assert_eq!(whole.matches("event: event").count(), total, "{whole}");
    assert!(whole.trim_end().ends_with("data: {\"status\":\"idle\"}"), "{whole}");
    let rest = feed(Some("2")).await;
    assert_eq!(rest.matches("event: event").count(), total - 2, "{rest}");
    assert!(rest.contains("id: 3\n") && !rest.contains("id: 2\n"), "{rest}");
    let (code, _) = request(&router, &bob, "GET", &format!("/api/sessions/{id}/events"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "another user's feed does not exist");

    // The listing carries each session's summary.
    let (_, listed) = request(&router, &alice, "GET", "/api/sessions", None).await;
    let summary = &listed["sessions"][0]["summary"];
    assert_eq!(summary["steps"], turn["steps"], "{listed}");
    assert_eq!(summary["stop_reason"], turn["stop_reason"]);
    assert_eq!(summary["prompt_tokens"], turn["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn the_validator_gives_its_verdict_rule_by_rule() {
    let app = harness().await;
    let (_, alice) = app.user("alice", false).await.unwrap();
    let router = app.router();
    let bundle = |md: &str| json!({"files": [{"path": "SKILL.md", "content": md}]});
    let (code, verdict) = request(
        &router,
        &alice,
        "POST",
        "/api/skills/csv-tools/validate",
        Some(bundle("---\nname: csv-tools\ndescription: Count rows.\nmetadata: {\"openclaw\": {}}\n---\nbody\n")),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert!(verdict["rules"].as_array().unwrap().iter().all(|r| r["ok"] == true));
    let mut strict = bundle("---\nname: csv-tools\ndescription: Count rows.\nmetadata: {\"openclaw\": {}}\n---\nbody\n");
    strict["mode"] = json!("strict");
    let (_, verdict) = request(&router, &alice, "POST", "/api/skills/csv-tools/validate", Some(strict)).await;
    assert_eq!(verdict["ok"], false);
    let broken: Vec<&str> =
        verdict["rules"].as_array().unwrap().iter().filter(|r| r["ok"] == false).map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(broken, ["yaml-flow-style"]);
    let (_, verdict) = request(&router, &alice, "POST", "/api/skills/csv-tools/validate", Some(bundle("---\nname: Other\n---\n"))).await;
    let broken: Vec<&str> =
        verdict["rules"].as_array().unwrap().iter().filter(|r| r["ok"] == false).map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(broken, ["name-charset", "name-folder", "description-required"], "{verdict}");
    assert_eq!(request(&router, &alice, "GET", "/api/skills/csv-tools", None).await.0, StatusCode::NOT_FOUND, "nothing was published");
}

#[tokio::test]
async fn the_ui_is_served_with_a_strict_content_security_policy() {
    let app = harness().await;
    let router = app.router();
    let (code, headers, _) = browser(&router, "GET", "/", None, &[], None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (code, _, _) = browser(&router, "GET", "/", None, &[("if-none-match", &etag)], None).await;
    assert_eq!(code, StatusCode::NOT_MODIFIED);
    let (code, headers, _) = browser(&router, "GET", "/app.js", None, &[], None).await;
    assert_eq!((code, headers["content-type"].to_str().unwrap()), (StatusCode::OK, "text/javascript; charset=utf-8"));
    // The page has no inline script for the policy to refuse: every script is a file.
    let page = std::str::from_utf8(crate::http::web::file("index.html").unwrap()).unwrap();
    assert!(!page.contains("<script>") && !regex_like_inline_handler(page), "inline script in index.html");
    // API paths stay JSON, and the API's errors carry the same headers.
    let (code, headers, body) = browser(&router, "GET", "/api/nope", None, &[], None).await;
    assert_eq!((code, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_endpoint")));
    assert!(headers.contains_key("content-security-policy"));
    assert_eq!(browser(&router, "GET", "/no-such-file.js", None, &[], None).await.0, StatusCode::NOT_FOUND);
}

/// Whether a page has an inline event handler attribute (`onclick=` and the like).
fn regex_like_inline_handler(page: &str) -> bool {
    page.split(['<', ' ', '\n', '\t'])
        .any(|word| word.starts_with("on") && word.split_once('=').is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase())))
}

/// A zip of `files` (path, text), as a user's archiver would make it.
fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, text) in files {
        zip.start_file(*path, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[tokio::test]
async fn a_zip_of_a_skill_folder_publishes_a_version_and_a_bad_one_publishes_nothing() {
    let app = harness().await;
    let (_, alice) = app.user("alice", false).await.unwrap();
    let router = app.router();
    let upload = |bytes: Vec<u8>, query: &'static str| {
        let router = router.clone();
        let alice = alice.clone();
        async move {
            let request = Request::builder()
                .method("POST")
                .uri(format!("/api/skills/csv-tools/zip{query}"))
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/zip")
                .body(Body::from(bytes))
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let skill_md = "---\nname: csv-tools\ndescription: Count rows of a CSV file.\n---\nRun `wc -l`.\n";
    let folder = zip_of(&[("csv-tools/SKILL.md", skill_md), ("csv-tools/scripts/count.sh", "wc -l \"$1\"\n")]);
    let (code, published) = upload(folder, "?changelog=first").await;
    assert_eq!(code, StatusCode::CREATED, "{published}");
    let (_, version) = request(&router, &alice, "GET", "/api/skills/csv-tools/versions/1.0.0", None).await;
    let paths: Vec<&str> = version["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["SKILL.md", "scripts/count.sh"], "{version}");

    for (bytes, why) in [
        (b"not a zip".to_vec(), "not a zip"),
        (zip_of(&[("SKILL.md", skill_md), ("../escape.sh", "x")]), "a path out of the folder"),
        (zip_of(&[("notes.md", "no SKILL.md")]), "no SKILL.md"),
    ] {
        let (code, refused) = upload(bytes, "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{why}: {refused}");
    }
    let (_, versions) = request(&router, &alice, "GET", "/api/skills/csv-tools/versions", None).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1, "nothing refused was published");
}

#[tokio::test]
async fn a_user_empties_their_own_workspace_and_no_one_elses() {
    let app = harness().await;
    let (_, alice) = app.user("alice", false).await.unwrap();
    let (_, bob) = app.user("bob", false).await.unwrap();
    let router = app.router();
    for (token, path) in [(&alice, "notes.txt"), (&alice, "data/rows.csv"), (&bob, "keep.txt")] {
        let request = Request::builder()
            .method("PUT")
            .uri(format!("/api/workspace/files/{path}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from("a,b\n"))
            .unwrap();
        assert_eq!(router.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
    }
    let (code, cleared) = request(&router, &alice, "DELETE", "/api/workspace/files", None).await;
    assert_eq!((code, cleared["removed"].as_u64()), (StatusCode::OK, Some(2)));
    let (_, left) = request(&router, &alice, "GET", "/api/workspace/files", None).await;
    assert_eq!(left["files"], json!([]));
    let (_, kept) = request(&router, &bob, "GET", "/api/workspace/files", None).await;
    assert_eq!(kept["files"].as_array().unwrap().len(), 1, "bob's workspace is untouched: {kept}");
}
