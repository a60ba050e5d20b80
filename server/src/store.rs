//! Storage behind a trait: SQLite now, another database later without touching handlers.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// One served chat completion, as the usage log keeps it.
#[derive(Debug, Clone)]
pub struct CompletionRecord {
    pub id: String,
    pub model: String,
    pub streamed: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub latency_ms: i64,
    /// `ok`, or the error code the client received.
    pub outcome: String,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Checks that the database answers.
    async fn ping(&self) -> anyhow::Result<()>;
    async fn record_completion(&self, record: &CompletionRecord) -> anyhow::Result<()>;
    async fn completion_count(&self) -> anyhow::Result<i64>;
}

pub struct SqliteStore {
    pool: SqlitePool,
}

/// The migrations at the repository root, compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            // WAL lets readers proceed while a writer commits; NORMAL sync is durable
            // across process crashes in WAL mode, which is what acknowledged writes need.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_completion(&self, r: &CompletionRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO completions (id, model, streamed, prompt_tokens, completion_tokens, latency_ms, outcome)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.model)
        .bind(r.streamed)
        .bind(r.prompt_tokens)
        .bind(r.completion_tokens)
        .bind(r.latency_ms)
        .bind(&r.outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn completion_count(&self) -> anyhow::Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM completions").fetch_one(&self.pool).await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn database_is_created_migrated_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skillhive.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .record_completion(&CompletionRecord {
                id: "c1".into(),
                model: "m".into(),
                streamed: false,
                prompt_tokens: 3,
                completion_tokens: 4,
                latency_ms: 5,
                outcome: "ok".into(),
            })
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&store.pool).await.unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening runs the migrations again, which must be a no-op that keeps the data.
        let reopened = SqliteStore::open(&path).await.unwrap();
        assert_eq!(reopened.completion_count().await.unwrap(), 1);
    }
}
