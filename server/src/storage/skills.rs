//! The skill repository's storage: skills by slug and scope, immutable versions, files as
//! content-addressed blobs on disk, and the change log that sync clients follow.
//!
//! Visibility is decided here, once: every read takes a [`Viewer`] and sees only the
//! scopes it may see (`shared`, its groups, its own private skills). When the same slug
//! exists in several visible scopes, the most specific one wins (private, then group, then
//! shared), so a user can shadow a shared skill with their own edit.
//!
//! Rollback publishes a copy of the old version as a new, higher version instead of moving
//! `latest` back. Clients (the `clawhub` CLI among them) treat a lower version than the
//! one installed as "up to date", so moving the tag back would never reach them; a new
//! version reaches every client, and the history stays append-only.

use std::collections::BTreeMap;
use std::path::Path;

use agent::skills::bundle::{FileEntry, Files};
use agent::skills::format::FormatError;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

/// Where a skill lives and who may see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Shared,
    Group(String),
    /// Private to one user (by id).
    User(String),
}

impl Scope {
    /// How the scope is stored.
    pub fn key(&self) -> String {
        match self {
            Scope::Shared => "shared".into(),
            Scope::Group(name) => format!("group:{name}"),
            Scope::User(id) => format!("user:{id}"),
        }
    }

    pub fn from_key(key: &str) -> Self {
        if let Some(name) = key.strip_prefix("group:") {
            Scope::Group(name.to_string())
        } else if let Some(id) = key.strip_prefix("user:") {
            Scope::User(id.to_string())
        } else {
            Scope::Shared
        }
    }

    /// How the API names the scope: user ids are never shown, a private skill is `private`.
    pub fn label(&self) -> String {
        match self {
            Scope::User(_) => "private".into(),
            other => other.key(),
        }
    }

    /// Parses what a client sends (`shared`, `group:<name>`, `private`) for `viewer`.
    pub fn parse_for(text: &str, viewer: &Viewer) -> Result<Self, String> {
        match text {
            "shared" => Ok(Scope::Shared),
            "private" => Ok(Scope::User(viewer.user_id.clone())),
            other => match other.strip_prefix("group:") {
                Some(name) if valid_group_name(name) => Ok(Scope::Group(name.to_string())),
                _ => Err(format!("scope must be `shared`, `private` or `group:<name>`, not `{other}`")),
            },
        }
    }

    /// Lower is more specific; the most specific visible copy of a slug wins.
    pub fn rank(&self) -> u8 {
        match self {
            Scope::User(_) => 0,
            Scope::Group(_) => 1,
            Scope::Shared => 2,
        }
    }
}

pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Who is reading: a user and the groups they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: String,
    pub is_admin: bool,
    pub groups: Vec<String>,
}

impl Viewer {
    /// Every scope this viewer may see.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes = vec![Scope::User(self.user_id.clone()).key(), Scope::Shared.key()];
        scopes.extend(self.groups.iter().map(|g| Scope::Group(g.clone()).key()));
        scopes
    }

    pub fn may_write(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Shared => self.is_admin,
            Scope::Group(name) => self.groups.contains(name),
            Scope::User(id) => *id == self.user_id,
        }
    }
}

/// Who publishes.
#[derive(Debug, Clone)]
pub enum Actor {
    User(Viewer),
    /// The evolver, with its run id.
    Evolver(String),
    /// The server itself (starter skills).
    System,
}

impl Actor {
    pub fn author(&self) -> (&'static str, Option<String>) {
        match self {
            Actor::User(viewer) => ("user", Some(viewer.user_id.clone())),
            Actor::Evolver(run) => ("evolver", Some(run.clone())),
            Actor::System => ("system", None),
        }
    }

    pub fn may_write(&self, scope: &Scope) -> bool {
        match self {
            Actor::User(viewer) => viewer.may_write(scope),
            // The evolver and the server write the shared repository only.
            Actor::Evolver(_) | Actor::System => *scope == Scope::Shared,
        }
    }
}

/// A new version to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub slug: String,
    pub scope: Scope,
    /// Semver; `None` bumps the patch number of the highest version (or starts at 1.0.0).
    pub version: Option<String>,
    pub changelog: String,
    pub files: Files,
    pub provenance: Value,
}

/// One version, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionInfo {
    pub slug: String,
    pub scope: String,
    pub version: String,
    pub description: String,
    pub fingerprint: String,
    pub author_kind: String,
    /// The user or evolver run that published it; omitted for other users' private data.
    pub author_id: Option<String>,
    pub changelog: String,
    pub parent_version: Option<String>,
    pub provenance: Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
}

/// One skill with its `latest` version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkillInfo {
    pub slug: String,
    pub scope: String,
    pub latest: VersionInfo,
    pub version_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A skill as the sync manifest lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub version: String,
    pub fingerprint: String,
    pub scope: String,
}

/// One change in the log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub cursor: i64,
    pub slug: String,
    #[serde(skip)]
    pub scope_key: String,
    pub scope: String,
    pub kind: String,
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the skill bundle is not valid")]
    Invalid(Vec<FormatError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no such skill or version")]
    NotFound,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A `skill_changes` row as every backend reads it: cursor, slug, scope key, kind, version.
pub type ChangeRow = (i64, String, String, String, Option<String>);
/// A `skills` row: id, slug, scope key, latest version, created, updated.
pub type SkillRow = (i64, String, String, Option<String>, i64, i64);
/// A `skill_versions` row: version, description, fingerprint, author kind, author id,
/// changelog, parent version, provenance (JSON text), created.
pub type VersionRow = (String, String, String, String, Option<String>, String, Option<String>, String, i64);

pub fn change_of((cursor, slug, scope_key, kind, version): ChangeRow) -> Change {
    Change { cursor, slug, scope: Scope::from_key(&scope_key).label(), scope_key, kind, version }
}

/// Milliseconds since the Unix epoch, as the repository keeps time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A version row as `viewer` may see it.
pub fn version_info(viewer: Option<&Viewer>, slug: &str, scope_key: &str, row: VersionRow) -> VersionInfo {
    let (version, description, fingerprint, author_kind, author_id, changelog, parent_version, provenance, created_at) = row;
    // Another user's id is theirs to show; only the author sees their own id.
    let author_id = match (author_kind.as_str(), viewer) {
        ("user", Some(v)) if author_id.as_deref() != Some(v.user_id.as_str()) => None,
        _ => author_id,
    };
    VersionInfo {
        slug: slug.to_string(),
        scope: Scope::from_key(scope_key).label(),
        version,
        description,
        fingerprint,
        author_kind,
        author_id,
        changelog,
        parent_version,
        provenance: serde_json::from_str(&provenance).unwrap_or(Value::Null),
        created_at,
        files: Vec::new(),
    }
}

/// What a publication will store: its version, file entries and fingerprint.
pub struct VersionPlan {
    pub version: String,
    pub entries: Vec<FileEntry>,
    pub fingerprint: String,
}

/// Decides a publication's version against the skill's `existing` versions (version,
/// fingerprint) and its `latest`: an explicit version must be new, valid semver and
/// higher than every other; no version bumps the patch number; a bundle identical to
/// the latest is refused.
pub fn plan_version(existing: &[(String, String)], latest: Option<&str>, request: &PublishRequest) -> Result<VersionPlan, RepoError> {
    let highest = existing.iter().filter_map(|(v, _)| semver::Version::parse(v).ok()).max();
    let version = match &request.version {
        Some(text) => {
            let parsed = semver::Version::parse(text).map_err(|e| RepoError::BadRequest(format!("version `{text}` is not semver: {e}")))?;
            if existing.iter().any(|(v, _)| v == text) {
                return Err(RepoError::Conflict(format!("version {text} of `{}` exists and cannot change", request.slug)));
            }
            if let Some(highest) = &highest {
                if parsed <= *highest {
                    return Err(RepoError::Conflict(format!("version {text} must be higher than {highest}")));
                }
            }
            parsed.to_string()
        }
        None => match &highest {
            // A bump must move `latest` forwards; at the largest patch number it cannot.
            Some(h) => match h.patch.checked_add(1) {
                Some(patch) => semver::Version::new(h.major, h.minor, patch).to_string(),
                None => {
                    return Err(RepoError::Conflict(format!("the patch number of {h} cannot be raised; give the next version explicitly")))
                }
            },
            None => "1.0.0".into(),
        },
    };
    let entries = agent::skills::bundle::file_entries(&request.files);
    let fingerprint = agent::skills::bundle::fingerprint(entries.iter().map(|e| (e.path.as_str(), e.sha256.as_str())));
    let latest_fingerprint = existing.iter().find(|(v, _)| Some(v.as_str()) == latest).map(|(_, f)| f.as_str());
    if latest_fingerprint == Some(fingerprint.as_str()) {
        return Err(RepoError::Conflict(format!(
            "the bundle is identical to the latest version {} of `{}`",
            latest.unwrap_or_default(),
            request.slug
        )));
    }
    Ok(VersionPlan { version, entries, fingerprint })
}

/// Keeps the skills of a listing that match `query` (every word, in slug or description)
/// and `scope` (a label).
pub fn filter_listing(skills: Vec<SkillInfo>, query: Option<&str>, scope: Option<&str>) -> Vec<SkillInfo> {
    let needle = query.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
    skills
        .into_iter()
        .filter(|info| scope.is_none_or(|s| info.scope == s))
        .filter(|info| {
            let Some(needle) = &needle else { return true };
            let haystack = format!("{} {}", info.slug, info.latest.description).to_lowercase();
            needle.split_whitespace().all(|word| haystack.contains(word))
        })
        .collect()
}

/// Of several rows for one slug, the one in the most specific scope, per slug, by slug.
pub fn most_specific<T>(rows: impl IntoIterator<Item = (String, String, T)>) -> Vec<T> {
    let mut best: BTreeMap<String, (u8, T)> = BTreeMap::new();
    for (slug, scope_key, item) in rows {
        let rank = Scope::from_key(&scope_key).rank();
        if best.get(&slug).is_none_or(|(b, _)| rank < *b) {
            best.insert(slug, (rank, item));
        }
    }
    best.into_values().map(|(_, item)| item).collect()
}

#[async_trait]
pub trait SkillStore: Send + Sync {
    /// A user as a reader of the repository: admin or not, and their groups.
    async fn viewer(&self, user_id: &str) -> anyhow::Result<Viewer>;
    async fn add_group_member(&self, group: &str, user_id: &str) -> anyhow::Result<()>;
    /// Takes a user out of a group; false when they were not in it.
    async fn remove_group_member(&self, group: &str, user_id: &str) -> anyhow::Result<bool>;
    /// Publishes a new immutable version; the new version's info.
    async fn publish(&self, actor: &Actor, request: PublishRequest) -> Result<VersionInfo, RepoError>;
    /// Publishes a copy of `version` as the new latest.
    async fn rollback(&self, actor: &Actor, viewer: &Viewer, slug: &str, version: &str) -> Result<VersionInfo, RepoError>;
    /// Soft-deletes the skill the viewer sees under `slug`.
    async fn delete_skill(&self, viewer: &Viewer, slug: &str) -> Result<(), RepoError>;
    /// The visible skills matching `query` (in slug or description) and `scope` (a label).
    async fn list_skills(&self, viewer: &Viewer, query: Option<&str>, scope: Option<&str>) -> anyhow::Result<Vec<SkillInfo>>;
    async fn skill(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<SkillInfo>>;
    /// Every version, newest first.
    async fn versions(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<Vec<VersionInfo>>>;
    /// One version with its file list.
    async fn version(&self, viewer: &Viewer, slug: &str, version: &str) -> anyhow::Result<Option<VersionInfo>>;
    /// One file of one version.
    async fn file(&self, viewer: &Viewer, slug: &str, version: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// The files of one version.
    async fn bundle(&self, viewer: &Viewer, slug: &str, version: &str) -> anyhow::Result<Option<Files>>;
    /// The newest version of a visible skill whose fingerprint is `fingerprint`.
    async fn version_by_fingerprint(&self, viewer: &Viewer, slug: &str, fingerprint: &str) -> anyhow::Result<Option<String>>;
    /// slug → latest version for everything visible, and the cursor it is current to.
    async fn manifest(&self, viewer: &Viewer) -> anyhow::Result<(i64, BTreeMap<String, ManifestEntry>)>;
    /// Visible changes after `cursor`, oldest first.
    async fn changes_since(&self, viewer: &Viewer, cursor: i64) -> anyhow::Result<Vec<Change>>;
    /// Every change after `cursor` in every scope, oldest first (for the in-process feed,
    /// which filters per subscriber).
    async fn all_changes_since(&self, cursor: i64) -> anyhow::Result<Vec<Change>>;
    /// The newest cursor.
    async fn latest_cursor(&self) -> anyhow::Result<i64>;
    async fn skill_count(&self) -> anyhow::Result<i64>;
}

/// Reads a skill folder from disk into a bundle, skipping hidden entries (`.clawhub/`,
/// `.git/`), as ClawHub does when it hashes a folder.
pub fn read_skill_dir(dir: &Path) -> anyhow::Result<Files> {
    fn walk(root: &Path, dir: &Path, files: &mut Files) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &path, files)?;
            } else if kind.is_file() {
                let relative = path.strip_prefix(root)?.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                files.insert(relative, std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut files = Files::new();
    walk(dir, dir, &mut files)?;
    Ok(files)
}

/// Publishes the starter skills (slug and files) as the server's own shared skills when
/// the repository is empty, that is on its first start. Later starts leave the repository
/// alone, so a starter skill an admin deleted or the evolver improved stays as it is.
/// Nodes starting together may both find it empty; each skill is then loaded by one of
/// them. Returns how many this call loaded.
pub async fn load_starter_skills(store: &dyn SkillStore, skills: Vec<(String, Files)>) -> anyhow::Result<usize> {
    if store.skill_count().await? > 0 {
        return Ok(0);
    }
    let mut loaded = 0;
    for (slug, files) in skills {
        let request = PublishRequest {
            slug: slug.clone(),
            scope: Scope::Shared,
            version: Some("1.0.0".into()),
            changelog: "Starter skill".into(),
            files,
            provenance: serde_json::json!({ "source": "starter" }),
        };
        match store.publish(&Actor::System, request).await {
            Ok(_) => loaded += 1,
            // Another node starting at the same moment on the same database loaded it.
            Err(RepoError::Conflict(_)) => {}
            Err(RepoError::Invalid(errors)) => {
                let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                anyhow::bail!("starter skill {slug} is not valid: {list}");
            }
            Err(e) => return Err(anyhow::anyhow!("cannot load starter skill {slug}: {e}")),
        }
    }
    Ok(loaded)
}

/// The starter skills in `skills/` at the repository root, compiled into the binary so
/// that it needs no checkout to run.
pub fn starter_skills() -> Vec<(String, Files)> {
    static STARTER: include_dir::Dir<'_> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../skills");
    fn collect(dir: &include_dir::Dir<'_>, root: &Path, files: &mut Files) {
        for file in dir.files() {
            let relative = file.path().strip_prefix(root).unwrap_or(file.path());
            let path = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            files.insert(path, file.contents().to_vec());
        }
        for sub in dir.dirs() {
            collect(sub, root, files);
        }
    }
    let mut skills = Vec::new();
    for dir in STARTER.dirs() {
        let slug = dir.path().file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let mut files = Files::new();
        collect(dir, dir.path(), &mut files);
        skills.push((slug, files));
    }
    skills.sort_by(|a, b| a.0.cmp(&b.0));
    skills
}
