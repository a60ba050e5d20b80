//! Skill file contents in the PostgreSQL database: every node reads the same blobs, and a
//! backup of the database is a backup of the repository.

use async_trait::async_trait;
use sqlx::PgPool;

use crate::storage::blobs::{checked, BlobStore};

pub struct PgBlobStore {
    pool: PgPool,
}

impl PgBlobStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BlobStore for PgBlobStore {
    async fn put(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO skill_blobs (sha256, content) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING")
            .bind(sha256)
            .bind(bytes)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT content FROM skill_blobs WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await?;
        let (bytes,) = row.ok_or_else(|| anyhow::anyhow!("blob {sha256} is missing"))?;
        checked(sha256, bytes)
    }
}
