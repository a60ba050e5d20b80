//! One conformance suite for the storage traits, run against every backend: the SQLite
//! file of a single node and a real PostgreSQL server (the one the test script starts, or
//! a private one started here). Each check takes a fresh database and asserts what a user
//! would notice: isolation between users, immutability of published versions (even
//! against SQL written by hand), all-or-nothing writes, groups, cursors and deltas, the
//! evolver's lease, turns claimed across nodes, signals between nodes, and acknowledged
//! writes surviving a crash.

use std::time::Duration;

use agent::skills::bundle::{self, Files};
use serde_json::Value;

use crate::database::Database;
use crate::storage::skills::{Actor, PublishRequest, RepoError, Scope, Viewer};
use crate::storage::{ConversationMatch, ConversationState, CreateUserError, SessionChange, Signal};
use crate::testing::postgres::{fresh_database, PgCluster};

/// A fresh database of one backend, a second connection that writes SQL by hand, and
/// what must outlive the check.
struct Backend {
    db: Database,
    raw: Raw,
    /// Opens another node's view of the same database (a second store).
    reopen: Reopen,
    _dir: tempfile::TempDir,
    cluster: Option<PgCluster>,
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

enum Reopen {
    Sqlite(std::path::PathBuf, std::path::PathBuf),
    Postgres(String),
}

impl Raw {
    /// Runs hand-written SQL; the database's refusal as text.
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string()),
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string()),
        }
    }
}

impl Backend {
    async fn another_node(&self) -> Database {
        match &self.reopen {
            Reopen::Sqlite(path, blobs) => Database::sqlite(path, blobs).await.unwrap(),
            Reopen::Postgres(url) => Database::postgres(url).await.unwrap(),
        }
    }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (path, blobs) = (dir.path().join("skillhive.db"), dir.path().join("blobs"));
    let db = Database::sqlite(&path, &blobs).await.unwrap();
    let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap());
    Backend { db, raw, reopen: Reopen::Sqlite(path, blobs), _dir: dir, cluster: None }
}

async fn postgres() -> Backend {
    let (cluster, url) = fresh_database().await.unwrap();
    let db = Database::postgres(&url).await.unwrap();
    let raw = Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
    Backend { db, raw, reopen: Reopen::Postgres(url), _dir: tempfile::tempdir().unwrap(), cluster }
}

/// Runs each check once per backend, as `on_sqlite::<check>` and `on_postgres::<check>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                super::$check(super::sqlite().await).await
            })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                super::$check(super::postgres().await).await
            })*
        }
    };
}

conformance!(
    users_have_unique_names_and_revoked_tokens_stop_working_on_every_node,
    events_and_ratings_belong_to_the_sessions_owner_even_against_hand_written_sql,
    conversation_states_stay_in_their_scope_and_are_answered_once,
    event_cursors_page_through_a_users_events_only,
    a_follower_of_the_event_cursor_misses_no_event_of_concurrent_writers,
    an_import_is_all_or_nothing,
    sessions_are_renamed_archived_rated_and_deleted_by_their_owner_only,
    an_automatic_bump_never_moves_latest_backwards,
    a_published_version_never_changes_even_against_hand_written_sql,
    rollback_publishes_a_copy_as_a_higher_version,
    private_skills_are_invisible_and_shadow_shared_ones_for_their_owner,
    groups_see_their_skills_and_invalid_bundles_are_refused_whole,
    the_change_log_gives_each_viewer_its_deltas_in_cursor_order,
    one_evolver_lease_at_a_time_across_nodes,
    a_turn_is_claimed_by_one_node_and_a_dead_nodes_turns_are_interrupted,
    a_cancel_reaches_the_node_running_the_turn,
    acknowledged_writes_survive_a_crash,
    passwords_browser_sessions_and_disabled_users,
    session_summaries_add_up_each_sessions_own_events,
    group_members_leave_and_candidates_queue_by_status,
);

/// The crash check needs a server of its own to crash: a private cluster, whatever the
/// test script started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_crash_of_a_private_postgres_server() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap().unwrap();
    let url = cluster.url("postgres");
    let db = Database::postgres(&url).await.unwrap();
    let raw = Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
    acknowledged_writes_survive_a_crash(Backend {
        db,
        raw,
        reopen: Reopen::Postgres(url),
        _dir: tempfile::tempdir().unwrap(),
        cluster: Some(cluster),
    })
    .await
}

fn files(body: &str) -> Files {
    let mut files = Files::new();
    files.insert(
        "SKILL.md".into(),
        format!("---\nname: notes\ndescription: Keep notes. Use when asked to remember.\n---\n{body}\n").into_bytes(),
    );
    files.insert("references/style.md".into(), b"Short lines.\n".to_vec());
    files
}

fn request(scope: Scope, version: Option<&str>, body: &str) -> PublishRequest {
    PublishRequest {
        slug: "notes".into(),
        scope,
        version: version.map(str::to_string),
        changelog: body.into(),
        files: files(body),
        provenance: Value::Null,
    }
}

/// Alice (an admin) and Bob, as readers of the repository.
async fn two_viewers(db: &Database) -> (Viewer, Viewer) {
    let alice = db.store.create_user("alice", true).await.unwrap();
    let bob = db.store.create_user("bob", false).await.unwrap();
    (db.skills.viewer(&alice.id).await.unwrap(), db.skills.viewer(&bob.id).await.unwrap())
}

/// Waits up to a second for `check` to hold.
async fn within_a_second(mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
}

async fn users_have_unique_names_and_revoked_tokens_stop_working_on_every_node(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    assert!(matches!(store.create_user("alice", true).await, Err(CreateUserError::NameTaken(_))));
    store.add_token(&alice.id, "hash-a").await.unwrap();
    assert_eq!(store.user_by_token("hash-a").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_token("hash-b").await.unwrap(), None);
    // Another node has the token in its cache; a revocation on this one reaches it.
    let other = backend.another_node().await;
    assert_eq!(other.store.user_by_token("hash-a").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.revoke_tokens(&alice.id).await.unwrap(), 1);
    assert_eq!(store.user_by_token("hash-a").await.unwrap(), None, "refused at once where it was revoked");
    assert!(
        within_a_second(async || other.store.user_by_token("hash-a").await.unwrap().is_none()).await,
        "refused within a second elsewhere"
    );

    // One token at a time, by its id: the others keep working.
    let bob = store.create_user("bob", false).await.unwrap();
    let (first, second) = ("a".repeat(64), "b".repeat(64));
    store.add_token(&alice.id, &first).await.unwrap();
    store.add_token(&alice.id, &second).await.unwrap();
    assert_eq!(other.store.user_by_token(&first).await.unwrap(), Some(alice.clone()));
    let ids: Vec<String> = store.tokens(&alice.id).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["a".repeat(16), "b".repeat(16)]);
    assert!(store.tokens(&bob.id).await.unwrap().is_empty());
    assert!(!store.revoke_token(&bob.id, &"a".repeat(16)).await.unwrap(), "not bob's to revoke");
    assert!(!store.revoke_token(&alice.id, "a").await.unwrap(), "a prefix is no id");
    assert!(store.revoke_token(&alice.id, &"a".repeat(16)).await.unwrap());
    assert!(within_a_second(async || other.store.user_by_token(&first).await.unwrap().is_none()).await, "refused elsewhere");
    assert_eq!(store.user_by_token(&second).await.unwrap(), Some(alice));
}

async fn events_and_ratings_belong_to_the_sessions_owner_even_against_hand_written_sql(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let mallory = store.create_user("mallory", false).await.unwrap();
    let session = store.create_session(&alice.id, "t", "m").await.unwrap();
    let payload = serde_json::json!({"type": "user_message", "text": "hi"});
    store.append_event(&alice.id, &session.id, "user_message", &payload).await.unwrap();
    let refused = store.append_event(&mallory.id, &session.id, "user_message", &payload).await.unwrap_err();
    assert!(format!("{refused:#}").contains("owner of its session"), "{refused:#}");
    assert!(store.add_feedback(&mallory.id, &session.id, None, "down", None).await.is_err());
    let moved = backend.raw.execute(&format!("UPDATE events SET user_id = '{}' WHERE session_id = '{}'", mallory.id, session.id)).await;
    assert!(moved.is_err(), "an update cannot hand an event to another user");
    assert_eq!(store.session_events(&alice.id, &session.id).await.unwrap().len(), 1);
    assert!(store.events_since(&mallory.id, 0, 100).await.unwrap().is_empty());
    assert!(store.get_session(&mallory.id, &session.id).await.unwrap().is_none(), "another user's session is absent");
    assert!(store.list_sessions(&mallory.id).await.unwrap().is_empty());
    store.add_feedback(&alice.id, &session.id, None, "up", None).await.unwrap();
}

async fn conversation_states_stay_in_their_scope_and_are_answered_once(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let named = store.proxy_session(&alice.id, Some("ext"), "m").await.unwrap();
    let plain = store.proxy_session(&alice.id, None, "m").await.unwrap();
    assert_ne!(store.proxy_session(&alice.id, None, "m").await.unwrap().id, plain.id, "no id, a new session");
    assert_eq!(store.proxy_session(&alice.id, Some("ext"), "m").await.unwrap().id, named.id);
    for session in [&named, &plain] {
        store.add_conversation_state(&alice.id, &session.id, ConversationState::Request, "f1").await.unwrap();
    }
    store.add_conversation_state(&alice.id, &named.id, ConversationState::Reply, "f2").await.unwrap();
    // Another user's session id records nothing.
    store.add_conversation_state(&bob.id, &plain.id, ConversationState::Reply, "f2").await.unwrap();
    let wanted = ["f1".to_string(), "f2".to_string()];
    let without_id = store.find_conversation_states(&alice.id, None, &wanted).await.unwrap();
    assert_eq!(
        without_id,
        [ConversationMatch { session_id: plain.id.clone(), fingerprint: "f1".into(), state: ConversationState::Request }]
    );
    let in_named = store.find_conversation_states(&alice.id, Some(&named.id), &wanted).await.unwrap();
    assert_eq!(in_named.len(), 2);
    assert_eq!(in_named[0].state, ConversationState::Reply, "newest first");
    assert!(store.find_conversation_states(&bob.id, None, &wanted).await.unwrap().is_empty());
    assert!(store.claim_reply(&alice.id, &plain.id, "f1").await.unwrap());
    assert!(!store.claim_reply(&alice.id, &plain.id, "f1").await.unwrap(), "answered once");
    assert!(store.claim_reply(&alice.id, &named.id, "f1").await.unwrap(), "per session");
}

async fn event_cursors_page_through_a_users_events_only(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let (a, b) = (store.create_session(&alice.id, "a", "m").await.unwrap(), store.create_session(&bob.id, "b", "m").await.unwrap());
    for i in 0..5 {
        let payload = serde_json::json!({"type": "user_message", "text": format!("a{i}")});
        assert_eq!(store.append_event(&alice.id, &a.id, "user_message", &payload).await.unwrap(), i + 1, "positions count from 1");
        store.append_event(&bob.id, &b.id, "user_message", &serde_json::json!({"type": "user_message", "text": "b"})).await.unwrap();
    }
    let first = store.events_since(&alice.id, 0, 3).await.unwrap();
    let rest = store.events_since(&alice.id, first.last().unwrap().id, 3).await.unwrap();
    let texts: Vec<String> = first.iter().chain(&rest).map(|e| e.payload["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["a0", "a1", "a2", "a3", "a4"]);
    assert!(store.events_since(&alice.id, rest.last().unwrap().id, 3).await.unwrap().is_empty());
    assert_eq!(store.last_event(&alice.id, &a.id, "user_message").await.unwrap().unwrap().payload["text"], "a4");
}

async fn a_follower_of_the_event_cursor_misses_no_event_of_concurrent_writers(backend: Backend) {
    let store = backend.db.store.clone();
    let alice = store.create_user("alice", false).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (store, user) = (store.clone(), alice.id.clone());
        let session = store.create_session(&user, &format!("s{w}"), "m").await.unwrap();
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                store
                    .append_event(&user, &session.id, "user_message", &serde_json::json!({"type": "user_message", "text": i}))
                    .await
                    .unwrap();
            }
        }));
    }
    // The follower reads while the writers write, as a client of `?since=` does.
    let (mut cursor, mut seen) = (0, Vec::new());
    while !writers.iter().all(|w| w.is_finished()) {
        for event in store.events_since(&alice.id, cursor, 7).await.unwrap() {
            cursor = event.id;
            seen.push(event.id);
        }
    }
    loop {
        let page = store.events_since(&alice.id, cursor, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.id;
        seen.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(seen.len(), 320, "every event once, none stepped over");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

async fn sessions_are_renamed_archived_rated_and_deleted_by_their_owner_only(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let session = store.create_session(&alice.id, "draft", "m").await.unwrap();
    assert!(!session.archived);
    let rename = SessionChange { title: Some("csv counts".into()), archived: None };
    assert!(!store.change_session(&bob.id, &session.id, &rename).await.unwrap(), "not bob's");
    assert!(store.change_session(&alice.id, &session.id, &rename).await.unwrap());
    let archive = SessionChange { title: None, archived: Some(true) };
    assert!(store.change_session(&alice.id, &session.id, &archive).await.unwrap());
    let changed = store.get_session(&alice.id, &session.id).await.unwrap().unwrap();
    assert_eq!((changed.title.as_str(), changed.archived), ("csv counts", true));

    store.add_feedback(&alice.id, &session.id, Some(1), "up", Some("right count")).await.unwrap();
    store.add_feedback(&alice.id, &session.id, None, "down", None).await.unwrap();
    let ratings = store.feedback(&alice.id, &session.id).await.unwrap();
    let read: Vec<(Option<i64>, &str, Option<&str>)> = ratings.iter().map(|f| (f.turn, f.rating.as_str(), f.comment.as_deref())).collect();
    assert_eq!(read, [(Some(1), "up", Some("right count")), (None, "down", None)]);
    assert!(store.feedback(&bob.id, &session.id).await.unwrap().is_empty());

    let kept = store.create_session(&alice.id, "kept", "m").await.unwrap();
    for id in [&session.id, &kept.id] {
        store.append_event(&alice.id, id, "user_message", &serde_json::json!({"type": "user_message", "text": "hi"})).await.unwrap();
    }
    assert!(!store.delete_session(&bob.id, &session.id).await.unwrap(), "not bob's");
    assert!(store.delete_session(&alice.id, &session.id).await.unwrap());
    assert!(store.get_session(&alice.id, &session.id).await.unwrap().is_none());
    assert!(store.session_events(&alice.id, &session.id).await.unwrap().is_empty(), "its events went with it");
    assert_eq!(store.session_events(&alice.id, &kept.id).await.unwrap().len(), 1, "the other session keeps its own");
    assert!(!store.delete_session(&alice.id, &session.id).await.unwrap(), "deleting twice deletes nothing");
}

async fn passwords_browser_sessions_and_disabled_users(backend: Backend) {
    use crate::storage::accounts::AccountChange;
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", true).await.unwrap();
    store.add_token(&alice.id, "alice-token").await.unwrap();
    assert_eq!(store.credentials("alice").await.unwrap(), Some((alice.clone(), None)), "no password yet");
    assert!(store.set_password(&alice.id, Some("$argon2id$hash")).await.unwrap());
    assert!(!store.set_password("nobody", Some("x")).await.unwrap());
    assert_eq!(store.credentials("alice").await.unwrap().unwrap().1.as_deref(), Some("$argon2id$hash"));
    assert!(store.credentials("carol").await.unwrap().is_none());

    store.add_web_session(&alice.id, "s-live", 2_000).await.unwrap();
    store.add_web_session(&alice.id, "s-old", 1_000).await.unwrap();
    assert_eq!(store.user_by_web_session("s-live", 1_500).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_web_session("s-old", 1_500).await.unwrap(), None, "expired");
    assert!(store.end_web_session("s-live").await.unwrap());
    assert_eq!(store.user_by_web_session("s-live", 1_500).await.unwrap(), None, "signed out");
    assert!(!store.end_web_session("s-live").await.unwrap());

    // A new password ends every browser session of its user.
    store.add_web_session(&alice.id, "s-2", 2_000).await.unwrap();
    store.set_password(&alice.id, Some("$argon2id$other")).await.unwrap();
    assert_eq!(store.user_by_web_session("s-2", 1_500).await.unwrap(), None);

    // Disabled: refused by token, password lookup and browser session, on another node too.
    store.add_web_session(&alice.id, "s-3", 2_000).await.unwrap();
    let other = backend.another_node().await;
    assert_eq!(other.store.user_by_token("alice-token").await.unwrap(), Some(alice.clone()), "cached on the other node");
    let disable = AccountChange { disabled: Some(true), is_admin: None };
    assert!(store.change_account(&alice.id, &disable).await.unwrap());
    assert!(store.user_by_token("alice-token").await.unwrap().is_none());
    assert!(store.credentials("alice").await.unwrap().is_none());
    assert!(store.user_by_web_session("s-3", 1_500).await.unwrap().is_none());
    let mut refused = false;
    for _ in 0..40 {
        if other.store.user_by_token("alice-token").await.unwrap().is_none() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the other node still signs in a disabled user");
    let accounts = store.accounts().await.unwrap();
    let summary: Vec<(&str, bool, bool, bool)> =
        accounts.iter().map(|a| (a.name.as_str(), a.is_admin, a.disabled, a.has_password)).collect();
    assert_eq!(summary, [("alice", false, true, true), ("bob", true, false, false)]);
    let enable_admin = AccountChange { disabled: Some(false), is_admin: Some(true) };
    assert!(store.change_account(&alice.id, &enable_admin).await.unwrap());
    assert!(store.user_by_token("alice-token").await.unwrap().unwrap().is_admin);
    assert!(!store.change_account("nobody", &enable_admin).await.unwrap());
    assert_eq!(store.account(&bob.id).await.unwrap().unwrap().name, "bob");
    assert!(store.account("nobody").await.unwrap().is_none());
}

async fn session_summaries_add_up_each_sessions_own_events(backend: Backend) {
    use serde_json::json;
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let first = store.create_session(&alice.id, "one", "m").await.unwrap();
    let second = store.create_session(&alice.id, "two", "m").await.unwrap();
    let bobs = store.create_session(&bob.id, "bob's", "m").await.unwrap();
    for (user, session, steps, stop) in
        [(&alice, &first, 2, "final_answer"), (&alice, &second, 1, "cancelled"), (&bob, &bobs, 3, "max_steps")]
    {
        for step in 0..steps {
            store
                .append_event(
                    &user.id,
                    &session.id,
                    "model_call",
                    &json!({"type": "model_call", "prompt_tokens": 100 + step, "latency_ms": 10}),
                )
                .await
                .unwrap();
            store
                .append_event(
                    &user.id,
                    &session.id,
                    "model_output",
                    &json!({"type": "model_output", "text": "x", "tool_calls": [], "completion_tokens": 5}),
                )
                .await
                .unwrap();
        }
        store.append_event(&user.id, &session.id, "stop", &json!({"type": "stop", "reason": "max_steps", "detail": null})).await.unwrap();
        store.append_event(&user.id, &session.id, "stop", &json!({"type": "stop", "reason": stop, "detail": null})).await.unwrap();
    }
    let empty = store.create_session(&alice.id, "empty", "m").await.unwrap();
    let summaries = store.session_summaries(&alice.id).await.unwrap();
    assert_eq!(summaries.len(), 2, "bob's session and the empty one are not alice's summaries: {summaries:?}");
    let one = &summaries[&first.id];
    assert_eq!((one.steps, one.prompt_tokens, one.completion_tokens, one.model_ms), (2, 201, 10, 20));
    assert_eq!(one.stop_reason.as_deref(), Some("final_answer"), "the last stop counts");
    assert_eq!(summaries[&second.id].stop_reason.as_deref(), Some("cancelled"));
    assert!(!summaries.contains_key(&empty.id));
}

async fn group_members_leave_and_candidates_queue_by_status(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let skills = &backend.db.skills;
    skills.add_group_member("ops", &alice.id).await.unwrap();
    assert_eq!(skills.viewer(&alice.id).await.unwrap().groups, ["ops"]);
    assert!(!skills.remove_group_member("dev", &alice.id).await.unwrap());
    assert!(skills.remove_group_member("ops", &alice.id).await.unwrap());
    assert!(skills.viewer(&alice.id).await.unwrap().groups.is_empty());

    let records = &backend.db.evolver;
    let run = records.start_run("test").await.unwrap();
    for (id, status) in [("c1", "pending_review"), ("c2", "rejected"), ("c3", "pending_review")] {
        let candidate = evolver::CandidateRecord {
            id: id.into(),
            run_id: run.clone(),
            slug: format!("skill-{id}"),
            action: "create".into(),
            base_version: None,
            skill_md: "---\nname: x\ndescription: d\n---\n".into(),
            rationale: "why".into(),
            evidence_sessions: vec![],
            distinct_users: 2,
            status: status.into(),
            verdict: serde_json::json!({}),
            published_version: None,
            writer: "mined".into(),
        };
        records.save_candidate(&candidate).await.unwrap();
    }
    let pending: Vec<String> = records.candidates(Some("pending_review"), 10).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.contains(&"c1".to_string()) && pending.contains(&"c3".to_string()));
    assert_eq!(records.candidates(None, 10).await.unwrap().len(), 3);
    assert_eq!(records.candidates(None, 1).await.unwrap().len(), 1);
    assert!(records.summaries_of(&["nope".to_string()]).await.unwrap().is_empty());
}

async fn an_import_is_all_or_nothing(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let text = "{\"type\":\"session\",\"version\":3,\"id\":\"s1\"}\n\
                {\"type\":\"message\",\"id\":\"m1\",\"message\":{\"role\":\"user\",\"content\":\"hello\"}}\n";
    let imported = agent::import::parse(text).unwrap();
    let session = store.import_session(&alice.id, &imported).await.unwrap().expect("imported");
    assert_eq!(store.session_events(&alice.id, &session.id).await.unwrap().len(), imported.events.len());
    assert!(store.import_session(&alice.id, &imported).await.unwrap().is_none(), "the same source session twice is refused");
    assert_eq!(store.list_sessions(&alice.id).await.unwrap().len(), 1, "and leaves nothing behind");
}

async fn an_automatic_bump_never_moves_latest_backwards(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, _) = two_viewers(&backend.db).await;
    let actor = Actor::User(alice.clone());
    let top = format!("0.0.{}", u64::MAX);
    skills.publish(&actor, request(Scope::Shared, Some(&top), "one")).await.unwrap();
    let bumped = skills.publish(&actor, request(Scope::Shared, None, "two")).await.unwrap_err();
    assert!(matches!(&bumped, RepoError::Conflict(m) if m.contains("cannot be raised")), "{bumped:?}");
    assert_eq!(skills.list_skills(&alice, None, None).await.unwrap()[0].latest.version, top);
}

async fn a_published_version_never_changes_even_against_hand_written_sql(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, _) = two_viewers(&backend.db).await;
    let actor = Actor::User(alice.clone());
    let first = skills.publish(&actor, request(Scope::Shared, None, "one")).await.unwrap();
    assert_eq!(first.version, "1.0.0");
    // The fingerprint is ClawHub's, computed by hand: collated paths, `path:sha256` lines.
    let lines = format!(
        "references/style.md:{}\nSKILL.md:{}",
        bundle::sha256_hex(b"Short lines.\n"),
        bundle::sha256_hex(&files("one")["SKILL.md"])
    );
    assert_eq!(first.fingerprint, bundle::sha256_hex(lines.as_bytes()));

    let taken = skills.publish(&actor, request(Scope::Shared, Some("1.0.0"), "changed")).await.unwrap_err();
    assert!(matches!(&taken, RepoError::Conflict(m) if m.contains("exists and cannot change")), "{taken:?}");
    let lower = skills.publish(&actor, request(Scope::Shared, Some("0.9.0"), "changed")).await.unwrap_err();
    assert!(matches!(&lower, RepoError::Conflict(m) if m.contains("must be higher")), "{lower:?}");
    let same = skills.publish(&actor, request(Scope::Shared, None, "one")).await.unwrap_err();
    assert!(matches!(&same, RepoError::Conflict(m) if m.contains("identical")), "{same:?}");
    let bad = skills.publish(&actor, request(Scope::Shared, Some("two"), "x")).await.unwrap_err();
    assert!(matches!(&bad, RepoError::BadRequest(m) if m.contains("not semver")), "{bad:?}");

    let second = skills.publish(&actor, request(Scope::Shared, None, "two")).await.unwrap();
    assert_eq!((second.version.as_str(), second.parent_version.as_deref()), ("1.0.1", Some("1.0.0")));
    assert_eq!(skills.bundle(&alice, "notes", "1.0.0").await.unwrap().unwrap(), files("one"), "version 1.0.0 keeps its files");
    // Even SQL written by hand cannot change or remove a published version.
    for sql in ["UPDATE skill_versions SET changelog = 'x'", "DELETE FROM skill_files", "DELETE FROM skill_versions"] {
        let refused = backend.raw.execute(sql).await.unwrap_err();
        assert!(refused.contains("immutable"), "{sql}: {refused}");
    }
    assert_eq!(skills.versions(&alice, "notes").await.unwrap().unwrap().len(), 2);
}

async fn rollback_publishes_a_copy_as_a_higher_version(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, _) = two_viewers(&backend.db).await;
    let actor = Actor::User(alice.clone());
    let first = skills.publish(&actor, request(Scope::Shared, None, "one")).await.unwrap();
    skills.publish(&actor, request(Scope::Shared, None, "two")).await.unwrap();
    let restored = skills.rollback(&actor, &alice, "notes", "1.0.0").await.unwrap();
    assert_eq!(restored.version, "1.0.2");
    assert_eq!(restored.fingerprint, first.fingerprint);
    assert_eq!(restored.provenance["rollback"]["restored"], "1.0.0");
    assert_eq!(skills.skill(&alice, "notes").await.unwrap().unwrap().latest.version, "1.0.2");
    assert_eq!(skills.versions(&alice, "notes").await.unwrap().unwrap().len(), 3);
    let kinds: Vec<String> = skills.changes_since(&alice, 0).await.unwrap().into_iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec!["publish", "publish", "rollback"]);
}

async fn private_skills_are_invisible_and_shadow_shared_ones_for_their_owner(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, bob) = two_viewers(&backend.db).await;
    skills.publish(&Actor::User(alice.clone()), request(Scope::Shared, None, "shared")).await.unwrap();
    skills.publish(&Actor::User(bob.clone()), request(Scope::User(bob.user_id.clone()), None, "bob's")).await.unwrap();
    // Bob (not an admin) may not publish to shared, nor into alice's private scope.
    let shared = skills.publish(&Actor::User(bob.clone()), request(Scope::Shared, None, "x")).await.unwrap_err();
    assert!(matches!(shared, RepoError::Forbidden(_)));
    let other = skills.publish(&Actor::User(bob.clone()), request(Scope::User(alice.user_id.clone()), None, "x")).await.unwrap_err();
    assert!(matches!(other, RepoError::Forbidden(_)));

    let bob_sees = skills.skill(&bob, "notes").await.unwrap().unwrap();
    assert_eq!((bob_sees.scope.as_str(), bob_sees.latest.changelog.as_str()), ("private", "bob's"));
    assert_eq!(skills.skill(&alice, "notes").await.unwrap().unwrap().scope, "shared");
    assert_eq!(skills.manifest(&alice).await.unwrap().1["notes"].scope, "shared");
    assert_eq!(skills.manifest(&bob).await.unwrap().1["notes"].scope, "private");
    assert!(skills.changes_since(&alice, 0).await.unwrap().iter().all(|c| c.scope == "shared"));
    // Deleting bob's copy uncovers the shared one for him.
    skills.delete_skill(&bob, "notes").await.unwrap();
    assert_eq!(skills.skill(&bob, "notes").await.unwrap().unwrap().scope, "shared");
    assert_eq!(skills.changes_since(&bob, 0).await.unwrap().last().unwrap().kind, "delete");
}

async fn groups_see_their_skills_and_invalid_bundles_are_refused_whole(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, bob) = two_viewers(&backend.db).await;
    skills.add_group_member("team", &bob.user_id).await.unwrap();
    skills.add_group_member("team", &bob.user_id).await.unwrap();
    let bob = skills.viewer(&bob.user_id).await.unwrap();
    assert_eq!(bob.groups, ["team"], "joining twice is joining once");
    skills.publish(&Actor::User(bob.clone()), request(Scope::Group("team".into()), None, "team")).await.unwrap();
    assert_eq!(skills.list_skills(&bob, Some("remember"), Some("group:team")).await.unwrap().len(), 1);
    assert!(skills.skill(&alice, "notes").await.unwrap().is_none());

    let mut broken = request(Scope::Shared, None, "x");
    broken.files.insert("../escape".into(), b"x".to_vec());
    let error = skills.publish(&Actor::User(alice.clone()), broken).await.unwrap_err();
    assert!(matches!(&error, RepoError::Invalid(e) if e[0].rule == "path"), "{error:?}");
    assert!(skills.skill(&alice, "notes").await.unwrap().is_none(), "nothing of a refused bundle is stored");
}

async fn the_change_log_gives_each_viewer_its_deltas_in_cursor_order(backend: Backend) {
    let skills = &backend.db.skills;
    let (alice, bob) = two_viewers(&backend.db).await;
    assert_eq!(skills.latest_cursor().await.unwrap(), 0);
    skills.publish(&Actor::User(alice.clone()), request(Scope::Shared, None, "one")).await.unwrap();
    let (cursor, manifest) = skills.manifest(&bob).await.unwrap();
    assert_eq!(manifest["notes"].version, "1.0.0");
    skills.publish(&Actor::User(bob.clone()), request(Scope::User(bob.user_id.clone()), None, "mine")).await.unwrap();
    skills.publish(&Actor::User(alice.clone()), request(Scope::Shared, None, "two")).await.unwrap();
    // Bob's delta since his manifest: his own publication and the shared one, in order.
    let delta: Vec<(String, Option<String>)> =
        skills.changes_since(&bob, cursor).await.unwrap().into_iter().map(|c| (c.scope, c.version)).collect();
    assert_eq!(delta, [("private".to_string(), Some("1.0.0".to_string())), ("shared".to_string(), Some("1.0.1".to_string()))]);
    // Alice sees only the shared change; the log as a whole has all three, in order.
    assert_eq!(skills.changes_since(&alice, cursor).await.unwrap().len(), 1);
    let all = skills.all_changes_since(0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(skills.latest_cursor().await.unwrap(), all[2].cursor);
    assert_eq!(skills.skill_count().await.unwrap(), 2);
}

async fn one_evolver_lease_at_a_time_across_nodes(backend: Backend) {
    let other = backend.another_node().await;
    let ttl = Duration::from_secs(60);
    assert!(backend.db.evolver.try_lease("node-a", ttl).await.unwrap());
    assert!(!other.evolver.try_lease("node-b", ttl).await.unwrap(), "held by node-a");
    backend.db.evolver.release_lease("node-a").await.unwrap();
    assert!(other.evolver.try_lease("node-b", Duration::ZERO).await.unwrap());
    // An expired lease (its holder died) is taken over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(backend.db.evolver.try_lease("node-a", ttl).await.unwrap());
    // Many asking at once: exactly one wins.
    backend.db.evolver.release_lease("node-a").await.unwrap();
    let asks = (0..8).map(|i| {
        let records = if i % 2 == 0 { backend.db.evolver.clone() } else { other.evolver.clone() };
        tokio::spawn(async move { records.try_lease(&format!("node-{i}"), Duration::from_secs(60)).await.unwrap() })
    });
    let won = futures::future::join_all(asks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1);
}

async fn a_turn_is_claimed_by_one_node_and_a_dead_nodes_turns_are_interrupted(backend: Backend) {
    let store = &backend.db.store;
    let alice = store.create_user("alice", false).await.unwrap();
    let bob = store.create_user("bob", false).await.unwrap();
    let (live, dead) =
        (store.create_session(&alice.id, "live", "m").await.unwrap(), store.create_session(&alice.id, "dead", "m").await.unwrap());
    store.heartbeat("node-a").await.unwrap();
    assert!(!store.claim_turn(&bob.id, &live.id, "node-a").await.unwrap(), "not bob's session");
    assert!(store.claim_turn(&alice.id, &live.id, "node-a").await.unwrap());
    assert!(!store.claim_turn(&alice.id, &live.id, "node-b").await.unwrap(), "one turn at a time, across nodes");
    assert_eq!(store.turn_node(&alice.id, &live.id).await.unwrap().as_deref(), Some("node-a"));
    assert!(store.claim_turn(&alice.id, &dead.id, "node-gone").await.unwrap());
    // node-a is alive, node-gone never beat: only the latter's turn is interrupted.
    assert_eq!(store.mark_interrupted_sessions("node-b", Duration::from_secs(15)).await.unwrap(), 1);
    assert_eq!(store.get_session(&alice.id, &dead.id).await.unwrap().unwrap().status, crate::storage::SessionStatus::Interrupted);
    assert_eq!(store.get_session(&alice.id, &live.id).await.unwrap().unwrap().status, crate::storage::SessionStatus::Running);
    // A finished turn frees the session for any node.
    store.update_session(&alice.id, &live.id, crate::storage::SessionStatus::Idle, Some("[]")).await.unwrap();
    assert_eq!(store.turn_node(&alice.id, &live.id).await.unwrap(), None);
    assert!(store.claim_turn(&alice.id, &live.id, "node-b").await.unwrap());
}

async fn a_cancel_reaches_the_node_running_the_turn(backend: Backend) {
    let other = backend.another_node().await;
    // A SQLite file has one node: its signals stay in the process that sent them.
    let receiver = if backend.db.shared { &other } else { &backend.db };
    let mut signals = receiver.store.signals();
    backend.db.store.send_signal(Signal::CancelTurn { session_id: "s1".into() }).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(1), signals.recv()).await.expect("within a second").unwrap();
    assert_eq!(received, Signal::CancelTurn { session_id: "s1".into() });
    if backend.db.shared {
        // A publication on one node is announced to the others by the database itself.
        let mut signals = other.store.signals();
        let (alice, _) = two_viewers(&backend.db).await;
        backend.db.skills.publish(&Actor::User(alice), request(Scope::Shared, None, "one")).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(1), signals.recv()).await.expect("within a second").unwrap();
        assert_eq!(received, Signal::SkillsChanged);
    }
}

async fn acknowledged_writes_survive_a_crash(backend: Backend) {
    let store = &backend.db.store;
    let (viewer, _) = two_viewers(&backend.db).await;
    let session = store.create_session(&viewer.user_id, "t", "m").await.unwrap();
    for i in 0..20 {
        let event = serde_json::json!({"type": "user_message", "text": i});
        store.append_event(&viewer.user_id, &session.id, "user_message", &event).await.unwrap();
    }
    backend.db.skills.publish(&Actor::User(viewer.clone()), request(Scope::Shared, None, "one")).await.unwrap();
    // A private PostgreSQL server stops as in a crash, without a checkpoint, and starts
    // again. A SQLite file is reopened while the first connections stay open, which reads
    // what a crash would leave (the WAL replayed); the end-to-end tests SIGKILL a server.
    if let Some(cluster) = &backend.cluster {
        cluster.crash_and_restart().unwrap();
    }
    let reopened = backend.another_node().await;
    assert_eq!(reopened.store.session_events(&viewer.user_id, &session.id).await.unwrap().len(), 20);
    assert_eq!(reopened.skills.bundle(&viewer, "notes", "1.0.0").await.unwrap().unwrap(), files("one"));
}
