//! Storage throughput on both backends (`bench/storage`), each against a raw-driver anchor
//! on the same database in the same run:
//!
//! 1. trajectory ingest: events appended one at a time, each committed before the next
//!    (as a turn records them), by 8 sessions at once (of one user, then of 8 users),
//!    through `Store::append_event`, against the same rows inserted with plain sqlx
//!    statements;
//! 2. sync manifest: 64 concurrent clients asking `GET /api/sync/manifest` with their
//!    ETag (a 304 each) from real `skillhive serve` processes (one node on SQLite, one node
//!    on PostgreSQL, two nodes on one PostgreSQL), against the raw driver running the
//!    manifest's query 64 at a time.
//!
//! Usage: storage_bench [SECONDS] [EVENTS]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use server::database::Database;
use server::storage::Store;
use server::testing::postgres::PgCluster;

const SESSIONS: usize = 8;
const CLIENTS: usize = 64;

/// `SESSIONS` sessions, of one user or of as many users.
async fn sessions(store: &Arc<dyn Store>, users: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut owners = Vec::new();
    for _ in 0..users {
        owners.push(store.create_user(&format!("ingest-{}", uuid::Uuid::new_v4()), false).await?.id);
    }
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let owner = &owners[i % users];
        sessions.push((owner.clone(), store.create_session(owner, "bench", "m").await?.id));
    }
    Ok(sessions)
}

/// Events per second through the store.
async fn ingest_through_store(store: Arc<dyn Store>, users: usize, events: usize) -> anyhow::Result<f64> {
    let sessions = sessions(&store, users).await?;
    let started = Instant::now();
    let writers = sessions.into_iter().map(|(user, session)| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..events / SESSIONS {
                let payload = serde_json::json!({"type": "user_message", "text": format!("message {i}")});
                store.append_event(&user, &session, "user_message", &payload).await?;
            }
            anyhow::Ok(())
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer??;
    }
    Ok((events / SESSIONS * SESSIONS) as f64 / started.elapsed().as_secs_f64())
}

/// The same rows through the raw driver: one autocommitted INSERT each.
enum RawPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl RawPool {
    async fn insert_event(&self, session: &str, user: &str, seq: i64, payload: &str) -> anyhow::Result<()> {
        match self {
            RawPool::Sqlite(pool) => {
                sqlx::query("INSERT INTO events (session_id, user_id, seq, kind, payload) VALUES (?, ?, ?, 'user_message', ?)")
                    .bind(session)
                    .bind(user)
                    .bind(seq)
                    .bind(payload)
                    .execute(pool)
                    .await?;
            }
            RawPool::Postgres(pool) => {
                sqlx::query("INSERT INTO events (session_id, user_id, seq, kind, payload) VALUES ($1, $2, $3, 'user_message', $4)")
                    .bind(session)
                    .bind(user)
                    .bind(seq)
                    .bind(payload)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The manifest's query for a user who sees the shared scope and their own.
    async fn manifest_query(&self, user: &str) -> anyhow::Result<usize> {
        let sql_shared = "SELECT s.slug, s.scope, v.version, v.fingerprint FROM skills s \
                          JOIN skill_versions v ON v.skill_id = s.id AND v.version = s.latest_version \
                          WHERE s.deleted_at IS NULL AND s.scope IN ";
        Ok(match self {
            RawPool::Sqlite(pool) => sqlx::query(&format!("{sql_shared}('shared', ?)")).bind(user).fetch_all(pool).await?.len(),
            RawPool::Postgres(pool) => sqlx::query(&format!("{sql_shared}('shared', $1)")).bind(user).fetch_all(pool).await?.len(),
        })
    }
}

async fn ingest_raw(raw: &Arc<RawPool>, store: &Arc<dyn Store>, users: usize, events: usize) -> anyhow::Result<f64> {
    let sessions = sessions(store, users).await?;
    let started = Instant::now();
    let writers = sessions.into_iter().map(|(user, session)| {
        let raw = raw.clone();
        tokio::spawn(async move {
            for i in 0..events / SESSIONS {
                let payload = serde_json::json!({"type": "user_message", "text": format!("message {i}")}).to_string();
                raw.insert_event(&session, &user, i as i64 + 1, &payload).await?;
            }
            anyhow::Ok(())
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer??;
    }
    Ok((events / SESSIONS * SESSIONS) as f64 / started.elapsed().as_secs_f64())
}

/// Manifest queries per second through the raw driver, 64 at a time.
async fn manifest_raw(raw: &Arc<RawPool>, user: &str, seconds: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..CLIENTS).map(|_| {
        let (raw, done, user) = (raw.clone(), done.clone(), user.to_string());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                raw.manifest_query(&user).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// A `skillhive serve` process, killed on drop.
struct Node {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(database: &[&str]) -> anyhow::Result<Node> {
    let binary = std::env::current_exe()?.parent().and_then(|p| p.parent()).map(|p| p.join("skillhive")).expect("target dir");
    let data = tempfile::tempdir()?;
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(database)
        // The manifest needs no model: an unreachable backend keeps it out of memory.
        .args(["--backend", "openai", "--openai-base-url", "http://127.0.0.1:9/v1", "--openai-model", "none"])
        // Every client is the same user here; the per-user rate limit would measure itself.
        .args(["--max-connections", "1024", "--user-requests-per-minute", "0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().ok_or_else(|| anyhow::anyhow!("the server did not start"))??;
        if let Some(url) = line.strip_prefix("skillhive listening on ") {
            break url.trim().to_string();
        }
    };
    Ok(Node { child, url, _data: data })
}

/// 304s per second from `nodes` (clients spread over them), and the errors seen.
async fn manifest_through_nodes(nodes: &[&Node], token: &str, seconds: u64) -> anyhow::Result<(f64, usize)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let mut etags = Vec::new();
    for node in nodes {
        let reply = client.get(format!("{}/api/sync/manifest", node.url)).bearer_auth(token).send().await?;
        anyhow::ensure!(reply.status() == 200, "manifest answered {}", reply.status());
        etags.push(reply.headers()["etag"].to_str()?.to_string());
    }
    let (done, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..CLIENTS).map(|i| {
        let url = format!("{}/api/sync/manifest", nodes[i % nodes.len()].url);
        let etag = etags[i % nodes.len()].clone();
        let (client, done, errors, token) = (client.clone(), done.clone(), errors.clone(), token.to_string());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let reply = client.get(&url).bearer_auth(&token).header("If-None-Match", &etag).send().await;
                match reply {
                    Ok(reply) if reply.status() == 304 => done.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    });
    futures::future::join_all(workers).await;
    Ok((done.load(Ordering::Relaxed) as f64 / seconds as f64, errors.load(Ordering::Relaxed)))
}

fn ratio(label: &str, ours: f64, raw: f64, unit: &str) {
    println!("{label:<44} {ours:>10.0} {unit}   raw driver {raw:>10.0} {unit}   ratio {:.2}x (target >= 0.5x)", ours / raw);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let events: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(4000);
    eprintln!("starting a private PostgreSQL server");
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await??;
    let pg_url = cluster.url("postgres");
    let dir = tempfile::tempdir()?;
    let sqlite_path = dir.path().join("skillhive.db");

    let sqlite = Database::sqlite(&sqlite_path, &dir.path().join("blobs")).await?;
    let postgres = Database::postgres(&pg_url).await?;
    // The anchor's connections are set up as the store's are (WAL, synchronous NORMAL),
    // so that the ratio is the layer's cost, not a different durability setting.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&sqlite_path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let sqlite_raw = Arc::new(RawPool::Sqlite(sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect_with(options).await?));
    let postgres_raw = Arc::new(RawPool::Postgres(sqlx::PgPool::connect(&pg_url).await?));

    println!("trajectory ingest: {events} events, {SESSIONS} sessions at once, each event committed");
    for (name, db, raw) in [("SQLite", &sqlite, &sqlite_raw), ("PostgreSQL", &postgres, &postgres_raw)] {
        for users in [1, SESSIONS] {
            eprintln!("ingest on {name}, {users} user(s)");
            let ours = ingest_through_store(db.store.clone(), users, events).await?;
            let anchor = ingest_raw(raw, &db.store, users, events).await?;
            ratio(&format!("  {name}, {users} user(s), Store::append_event"), ours, anchor, "events/s");
        }
    }

    // The starter skills are in both databases once a node has started on it.
    let (_, sqlite_token) = server::http::auth::create_user_with_token(sqlite.store.as_ref(), "sync", false).await?;
    let (pg_user, pg_token) = server::http::auth::create_user_with_token(postgres.store.as_ref(), "sync", false).await?;
    let sqlite_user = sqlite.store.user_by_name("sync").await?.expect("user").id;
    drop(sqlite);
    println!("sync manifest, 304 on the ETag: {CLIENTS} clients, {seconds} s");
    {
        let node = serve(&["--database-url", &format!("sqlite://{}", sqlite_path.display())])?;
        let (ours, errors) = manifest_through_nodes(&[&node], &sqlite_token, seconds).await?;
        let anchor = manifest_raw(&sqlite_raw, &sqlite_user, seconds).await?;
        ratio(&format!("  SQLite, one node ({errors} errors)"), ours, anchor, "req/s");
    }
    let anchor = manifest_raw(&postgres_raw, &pg_user.id, seconds).await?;
    {
        let node = serve(&["--database-url", &pg_url])?;
        let (ours, errors) = manifest_through_nodes(&[&node], &pg_token, seconds).await?;
        ratio(&format!("  PostgreSQL, one node ({errors} errors)"), ours, anchor, "req/s");
    }
    let (a, b) = (serve(&["--database-url", &pg_url])?, serve(&["--database-url", &pg_url])?);
    let (ours, errors) = manifest_through_nodes(&[&a, &b], &pg_token, seconds).await?;
    ratio(&format!("  PostgreSQL, two nodes ({errors} errors)"), ours, anchor, "req/s");
    println!("two nodes behind one PostgreSQL, {CLIENTS} concurrent sync clients: {errors} errors (target 0)");
    Ok(())
}
