//! The skill repository as the server uses it: the store paired with what sync needs in
//! memory — the newest change cursor, one cached manifest per set of visible scopes, the
//! agents' catalogs, and a broadcast channel for the feed. A manifest request that matches
//! the client's ETag is answered from memory, without the database, which is what lets
//! many clients poll often.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;

use agent::agent_loop::StaticSkills;
use agent::skills::bundle::Requirements;
use agent::skills::catalog::CatalogEntry;
use agent::skills::format::parse_skill_md;

use crate::storage::skills::{Change, SkillStore, Viewer};

/// How long a user's group membership is trusted before it is read again (a join from
/// the command line on a SQLite file reaches the server within this time). A change on
/// PostgreSQL is also announced to every node, which forgets it at once.
const VIEWER_TTL: Duration = Duration::from_secs(1);
/// How often the change log is read for writes no signal announced (the command line on
/// a SQLite file); on PostgreSQL every write is announced, and this is a safety net.
pub const CHANGE_POLL: Duration = Duration::from_secs(1);

struct CachedManifest {
    cursor: i64,
    etag: String,
    body: Bytes,
}

/// The agents' skills of one set of scopes, and the change-log cursor they are current to.
type CachedCatalog = (i64, Arc<StaticSkills>);

/// The skill store plus the in-memory side of sync.
pub struct SkillRepo {
    pub store: Arc<dyn SkillStore>,
    /// Newest change this process has seen.
    cursor: AtomicI64,
    /// Serializes refreshes so that each change is broadcast once.
    refresh_lock: Mutex<()>,
    changes: broadcast::Sender<Change>,
    manifests: std::sync::Mutex<HashMap<Vec<String>, CachedManifest>>,
    /// The agents' skills per set of visible scopes, with the cursor they are current to:
    /// every turn and every proxied completion needs them, and reading every skill's
    /// blobs each time would put the repository on the hot path.
    catalogs: std::sync::Mutex<HashMap<Vec<String>, CachedCatalog>>,
    viewers: std::sync::Mutex<HashMap<String, (Instant, Viewer)>>,
}

impl SkillRepo {
    pub fn new(store: Arc<dyn SkillStore>) -> Self {
        Self {
            store,
            cursor: AtomicI64::new(0),
            refresh_lock: Mutex::new(()),
            changes: broadcast::channel(1024).0,
            manifests: std::sync::Mutex::new(HashMap::new()),
            catalogs: std::sync::Mutex::new(HashMap::new()),
            viewers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every cached viewer: group memberships or admin rights changed.
    pub fn forget_viewers(&self) {
        self.viewers.lock().expect("viewer cache").clear();
    }

    /// The viewer for a user (by id), cached for [`VIEWER_TTL`]. Whether the user is an
    /// admin is looked up with their groups.
    pub async fn viewer(&self, user_id: &str) -> anyhow::Result<Viewer> {
        if let Some((at, viewer)) = self.viewers.lock().expect("viewer cache").get(user_id) {
            if at.elapsed() < VIEWER_TTL {
                return Ok(viewer.clone());
            }
        }
        let viewer = self.store.viewer(user_id).await?;
        self.viewers.lock().expect("viewer cache").insert(user_id.to_string(), (Instant::now(), viewer.clone()));
        Ok(viewer)
    }

    /// Picks up changes newer than the last seen cursor and broadcasts them. Called after
    /// every write in this process and every [`CHANGE_POLL`] for writes from others.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let _guard = self.refresh_lock.lock().await;
        let known = self.cursor.load(Ordering::Acquire);
        let changes = self.store.all_changes_since(known).await?;
        if let Some(last) = changes.last() {
            for change in &changes {
                // No subscriber is not an error: the change is in the log for later readers.
                let _ = self.changes.send(change.clone());
            }
            self.cursor.store(last.cursor, Ordering::Release);
        }
        Ok(())
    }

    /// A receiver of every change from now on (the feed filters them per subscriber).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Follows the change log forever (for `serve`).
    pub async fn follow_changes(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot read the skill change log");
            }
            tokio::select! {
                () = tokio::time::sleep(CHANGE_POLL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// The full manifest for a viewer: its ETag and body, from the cache when current.
    pub async fn manifest(&self, viewer: &Viewer) -> anyhow::Result<(String, Bytes)> {
        let mut key = viewer.scopes();
        key.sort();
        let cursor = self.cursor.load(Ordering::Acquire);
        if let Some(cached) = self.manifests.lock().expect("manifest cache").get(&key) {
            if cached.cursor == cursor {
                return Ok((cached.etag.clone(), cached.body.clone()));
            }
        }
        let (_, skills) = self.store.manifest(viewer).await?;
        let body = serde_json::to_vec(&json!({ "cursor": cursor, "full": true, "skills": skills, "removed": [] }))?;
        let etag = format!("\"{}\"", &agent::skills::bundle::sha256_hex(&body)[..32]);
        let body = Bytes::from(body);
        self.manifests.lock().expect("manifest cache").insert(key, CachedManifest { cursor, etag: etag.clone(), body: body.clone() });
        Ok((etag, body))
    }

    /// The skills an agent of this viewer may read: the latest `SKILL.md` of every
    /// visible skill whose requirements (`metadata.openclaw`) this host meets.
    pub async fn agent_skills(&self, viewer: &Viewer) -> anyhow::Result<Arc<StaticSkills>> {
        let mut key = viewer.scopes();
        key.sort();
        let cursor = self.cursor.load(Ordering::Acquire);
        if let Some((at, skills)) = self.catalogs.lock().expect("catalog cache").get(&key) {
            if *at == cursor {
                return Ok(skills.clone());
            }
        }
        let mut skills = Vec::new();
        for info in self.store.list_skills(viewer, None, None).await? {
            // One damaged skill (a blob whose bytes no longer match its hash, a missing
            // blob) leaves the catalog without that skill; it must not fail every turn.
            let bytes = match self.store.file(viewer, &info.slug, &info.latest.version, "SKILL.md").await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(slug = %info.slug, version = %info.latest.version, %error, "skill left out of agents' catalogs: cannot read its SKILL.md");
                    continue;
                }
            };
            let Ok(text) = String::from_utf8(bytes) else { continue };
            let Ok(manifest) = parse_skill_md("SKILL.md", None, &text) else { continue };
            if let Some(reason) = Requirements::of(&manifest).unmet_on_this_host() {
                tracing::debug!(slug = %info.slug, %reason, "skill not eligible on this host");
                continue;
            }
            let entry = CatalogEntry { slug: info.slug.clone(), version: info.latest.version.clone(), description: manifest.description };
            skills.push((entry, text));
        }
        let skills = Arc::new(StaticSkills { skills });
        self.catalogs.lock().expect("catalog cache").insert(key, (cursor, skills.clone()));
        Ok(skills)
    }

    /// Records that this process wrote a change, so readers see it at once.
    pub async fn after_write(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "cannot read the skill change log");
        }
    }
}
