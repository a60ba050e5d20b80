//! Skill files are stored once per content, under their SHA-256: a [`BlobStore`]. The
//! SQLite backend keeps them as files in a directory beside the database
//! ([`DirBlobStore`]); the PostgreSQL backend keeps them in the database itself, so that
//! server nodes on several machines need no shared filesystem.

use std::path::PathBuf;

use agent::skills::bundle;
use async_trait::async_trait;

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under their hash unless present; durable before returning.
    async fn put(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()>;
    /// The bytes stored under `sha256`, checked against it.
    async fn get(&self, sha256: &str) -> anyhow::Result<Vec<u8>>;
}

/// Refuses bytes that do not hash to the name they are read under: a damaged blob must
/// never be served as the version it claims to be.
pub fn checked(sha256: &str, bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(bundle::sha256_hex(&bytes) == sha256, "blob {sha256} does not match its hash");
    Ok(bytes)
}

/// Blobs as files: `<dir>/<first two hex digits>/<sha256>`.
#[derive(Clone)]
pub struct DirBlobStore {
    dir: PathBuf,
}

impl DirBlobStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2]).join(sha256)
    }
}

#[async_trait]
impl BlobStore for DirBlobStore {
    /// Writes to a temporary file, synced, then renamed, so a crash never leaves a partial
    /// blob under its hash. The synced write runs on the blocking pool.
    async fn put(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(sha256);
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if path.exists() {
                return Ok(());
            }
            let dir = path.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            let mut temp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut temp, &bytes)?;
            temp.as_file().sync_all()?;
            temp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })
        .await?
    }

    async fn get(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.path(sha256);
        let bytes = tokio::fs::read(&path).await.map_err(|e| anyhow::anyhow!("blob {} is unreadable: {e}", path.display()))?;
        checked(sha256, bytes)
    }
}
