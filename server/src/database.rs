//! Which database the server runs on, chosen once at start: the SQLite file in the data
//! directory (the default, one node), or a PostgreSQL server named by a URL (any number
//! of nodes). Everything above this module sees only the storage traits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::storage::blobs::{BlobStore, DirBlobStore};
use crate::storage::evolver::EvolverRecords;
use crate::storage::skills::SkillStore;
use crate::storage::Store;

/// The storage of one server process.
#[derive(Clone)]
pub struct Database {
    pub store: Arc<dyn Store>,
    pub skills: Arc<dyn SkillStore>,
    pub evolver: Arc<dyn EvolverRecords>,
    /// Whether other server nodes may share this database (PostgreSQL). A SQLite file has
    /// one node, so at its start every running session belonged to a dead process.
    pub shared: bool,
}

impl Database {
    /// Opens `url` when given (`postgres://…`; `sqlite://PATH` also works), else
    /// `skillhive.db` in `data_dir`, creating and migrating the schema as needed.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        match url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::postgres(url).await.with_context(|| format!("cannot open the PostgreSQL database {}", redact(url)))
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) => Self::sqlite(Path::new(path), &data_dir.join("blobs")).await,
                None => anyhow::bail!("the database URL must start with postgres:// or sqlite://, not `{}`", redact(url)),
            },
            None => {
                std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
                Self::sqlite(&data_dir.join("skillhive.db"), &data_dir.join("blobs")).await
            }
        }
    }

    pub async fn sqlite(path: &Path, blobs: &Path) -> anyhow::Result<Self> {
        let store = crate::sqlite::SqliteStore::open(path).await.with_context(|| format!("cannot open database {}", path.display()))?;
        let blobs: Arc<dyn BlobStore> = Arc::new(DirBlobStore::new(blobs.to_path_buf()));
        Ok(Self {
            skills: Arc::new(crate::sqlite::skills::SqliteSkillStore::new(store.pool(), blobs)),
            evolver: Arc::new(crate::sqlite::evolver::SqliteEvolverRecords::new(store.pool())),
            store: Arc::new(store),
            shared: false,
        })
    }

    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        let store = crate::postgres::PgStore::open(url).await?;
        let blobs: Arc<dyn BlobStore> = Arc::new(crate::postgres::blobs::PgBlobStore::new(store.pool()));
        Ok(Self {
            skills: Arc::new(crate::postgres::skills::PgSkillStore::new(store.pool(), blobs)),
            evolver: Arc::new(crate::postgres::evolver::PgEvolverRecords::new(store.pool())),
            store: Arc::new(store),
            shared: true,
        })
    }

    /// How long a node may stay silent before its running turns count as interrupted.
    pub fn node_timeout(&self) -> Duration {
        if self.shared {
            NODE_TIMEOUT
        } else {
            Duration::ZERO
        }
    }
}

/// How often a node records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Three missed heartbeats: the node is gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
