//! The skill repository on SQLite: skills, immutable versions and the change log in the
//! database, files as content-addressed blobs in a directory beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use agent::skills::bundle::{self, FileEntry, Files};
use agent::skills::format::SkillManifest;
use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::storage::skills::{
    valid_group_name, Actor, Change, ManifestEntry, PublishRequest, RepoError, Scope, SkillInfo, SkillStore, VersionInfo, Viewer,
};

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        RepoError::Other(e.into())
    }
}

/// The SQLite skill store and its blob directory.
#[derive(Clone)]
pub struct SqliteSkillStore {
    pool: SqlitePool,
    blobs: PathBuf,
}

/// A `skill_changes` row: cursor, slug, scope key, kind, version.
type ChangeRow = (i64, String, String, String, Option<String>);

fn change_of((cursor, slug, scope_key, kind, version): ChangeRow) -> Change {
    Change { cursor, slug, scope: Scope::from_key(&scope_key).label(), scope_key, kind, version }
}

type SkillRow = (i64, String, String, Option<String>, i64, i64);
type VersionRow = (String, String, String, String, Option<String>, String, Option<String>, String, i64);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl SqliteSkillStore {
    pub fn new(pool: SqlitePool, blobs: PathBuf) -> Self {
        Self { pool, blobs }
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(&sha256[..2]).join(sha256)
    }

    /// Writes a blob if absent: to a temporary file, synced, then renamed, so a crash
    /// never leaves a partial blob under its hash.
    fn write_blob(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.blob_path(sha256);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut temp, bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    fn read_blob(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(sha256);
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("blob {} is unreadable: {e}", path.display()))?;
        // A blob is checked on every read: a damaged file must never be served as the
        // version it claims to be.
        anyhow::ensure!(bundle::sha256_hex(&bytes) == sha256, "blob {} does not match its hash", path.display());
        Ok(bytes)
    }

    /// The visible, undeleted skill a viewer sees under `slug`.
    async fn resolve(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<SkillRow>> {
        let scopes = viewer.scopes();
        let sql = format!(
            "SELECT id, slug, scope, latest_version, created_at, updated_at FROM skills \
             WHERE slug = ? AND deleted_at IS NULL AND scope IN ({})",
            placeholders(scopes.len())
        );
        let mut query = sqlx::query_as::<_, SkillRow>(&sql).bind(slug);
        for scope in &scopes {
            query = query.bind(scope);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().min_by_key(|row| Scope::from_key(&row.2).rank()))
    }

    async fn version_rows(&self, skill_id: i64, version: Option<&str>) -> anyhow::Result<Vec<VersionRow>> {
        let base = "SELECT version, description, fingerprint, author_kind, author_id, changelog, parent_version, provenance, created_at \
                    FROM skill_versions WHERE skill_id = ?";
        let rows = match version {
            Some(v) => sqlx::query_as(&format!("{base} AND version = ?")).bind(skill_id).bind(v).fetch_all(&self.pool).await?,
            None => sqlx::query_as(&format!("{base} ORDER BY seq DESC")).bind(skill_id).fetch_all(&self.pool).await?,
        };
        Ok(rows)
    }

    fn version_info(viewer: Option<&Viewer>, slug: &str, scope_key: &str, row: VersionRow) -> VersionInfo {
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

    async fn files_of(&self, skill_id: i64, version: &str) -> anyhow::Result<Vec<FileEntry>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT path, sha256, size FROM skill_files WHERE skill_id = ? AND version = ? ORDER BY path")
                .bind(skill_id)
                .bind(version)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(path, sha256, size)| FileEntry { path, sha256, size: size as u64 }).collect())
    }

    async fn skill_info(&self, viewer: &Viewer, row: SkillRow) -> anyhow::Result<Option<SkillInfo>> {
        let (id, slug, scope, latest, created_at, updated_at) = row;
        let Some(latest) = latest else { return Ok(None) };
        let Some(version_row) = self.version_rows(id, Some(&latest)).await?.pop() else { return Ok(None) };
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM skill_versions WHERE skill_id = ?").bind(id).fetch_one(&self.pool).await?;
        Ok(Some(SkillInfo {
            latest: Self::version_info(Some(viewer), &slug, &scope, version_row),
            scope: Scope::from_key(&scope).label(),
            slug,
            version_count: count,
            created_at,
            updated_at,
        }))
    }

    /// Inserts a version inside `tx`; the skill row must exist.
    #[allow(clippy::too_many_arguments)]
    async fn insert_version(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        skill_id: i64,
        request: &PublishRequest,
        actor: &Actor,
        kind: &str,
        manifest: SkillManifest,
    ) -> Result<VersionInfo, RepoError> {
        let existing: Vec<(String, String)> =
            sqlx::query_as("SELECT version, fingerprint FROM skill_versions WHERE skill_id = ? ORDER BY seq DESC")
                .bind(skill_id)
                .fetch_all(&mut **tx)
                .await?;
        let (latest,): (Option<String>,) =
            sqlx::query_as("SELECT latest_version FROM skills WHERE id = ?").bind(skill_id).fetch_one(&mut **tx).await?;
        let highest = existing.iter().filter_map(|(v, _)| semver::Version::parse(v).ok()).max();
        let version = match &request.version {
            Some(text) => {
                let parsed =
                    semver::Version::parse(text).map_err(|e| RepoError::BadRequest(format!("version `{text}` is not semver: {e}")))?;
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
                        return Err(RepoError::Conflict(format!(
                            "the patch number of {h} cannot be raised; give the next version explicitly"
                        )))
                    }
                },
                None => "1.0.0".into(),
            },
        };
        let entries = bundle::file_entries(&request.files);
        let fingerprint = bundle::fingerprint(entries.iter().map(|e| (e.path.as_str(), e.sha256.as_str())));
        let latest_fingerprint = existing.iter().find(|(v, _)| Some(v) == latest.as_ref()).map(|(_, f)| f.clone());
        if latest_fingerprint.as_deref() == Some(fingerprint.as_str()) {
            return Err(RepoError::Conflict(format!(
                "the bundle is identical to the latest version {} of `{}`",
                latest.unwrap_or_default(),
                request.slug
            )));
        }
        let now = now_ms();
        let (author_kind, author_id) = actor.author();
        let provenance = serde_json::to_string(&request.provenance).map_err(anyhow::Error::from)?;
        sqlx::query(
            "INSERT INTO skill_versions (skill_id, version, seq, description, fingerprint, author_kind, author_id, changelog, parent_version, provenance, created_at) \
             VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM skill_versions WHERE skill_id = ?), ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(skill_id)
        .bind(&version)
        .bind(skill_id)
        .bind(&manifest.description)
        .bind(&fingerprint)
        .bind(author_kind)
        .bind(&author_id)
        .bind(&request.changelog)
        .bind(&latest)
        .bind(&provenance)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        for entry in &entries {
            sqlx::query("INSERT INTO skill_files (skill_id, version, path, sha256, size) VALUES (?, ?, ?, ?, ?)")
                .bind(skill_id)
                .bind(&version)
                .bind(&entry.path)
                .bind(&entry.sha256)
                .bind(entry.size as i64)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE skills SET latest_version = ?, updated_at = ?, deleted_at = NULL WHERE id = ?")
            .bind(&version)
            .bind(now)
            .bind(skill_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO skill_changes (skill_id, slug, scope, kind, version, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(skill_id)
            .bind(&request.slug)
            .bind(request.scope.key())
            .bind(kind)
            .bind(&version)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(VersionInfo {
            slug: request.slug.clone(),
            scope: request.scope.label(),
            version,
            description: manifest.description,
            fingerprint,
            author_kind: author_kind.to_string(),
            author_id,
            changelog: request.changelog.clone(),
            parent_version: latest,
            provenance: request.provenance.clone(),
            created_at: now,
            files: entries,
        })
    }

    /// Every skill `viewer` sees with its latest version and version count, in one query
    /// (a listing used to cost two more queries per skill).
    /// Checks a bundle and stores its files' blobs, before any transaction begins: the
    /// synced writes then never hold the database's write lock, and a blob whose version
    /// is refused later is harmless (blobs are content-addressed and shared).
    async fn prepare_bundle(&self, request: &PublishRequest) -> Result<SkillManifest, RepoError> {
        let manifest = bundle::validate_bundle(&request.slug, &request.files).map_err(RepoError::Invalid)?;
        let store = self.clone();
        let files = request.files.clone();
        tokio::task::spawn_blocking(move || files.values().try_for_each(|bytes| store.write_blob(&bundle::sha256_hex(bytes), bytes)))
            .await
            .map_err(anyhow::Error::from)??;
        Ok(manifest)
    }

    async fn visible_skills(&self, viewer: &Viewer) -> anyhow::Result<Vec<SkillInfo>> {
        type Row =
            (i64, String, String, i64, i64, String, String, String, String, Option<String>, String, Option<String>, String, i64, i64);
        let scopes = viewer.scopes();
        let sql = format!(
            "SELECT s.id, s.slug, s.scope, s.created_at, s.updated_at, \
                    v.version, v.description, v.fingerprint, v.author_kind, v.author_id, v.changelog, v.parent_version, v.provenance, \
                    v.created_at, (SELECT COUNT(*) FROM skill_versions c WHERE c.skill_id = s.id) \
             FROM skills s JOIN skill_versions v ON v.skill_id = s.id AND v.version = s.latest_version \
             WHERE s.deleted_at IS NULL AND s.scope IN ({}) ORDER BY s.slug",
            placeholders(scopes.len())
        );
        let mut query = sqlx::query_as::<_, Row>(&sql);
        for scope in &scopes {
            query = query.bind(scope);
        }
        let mut best: BTreeMap<String, (String, SkillInfo)> = BTreeMap::new();
        for row in query.fetch_all(&self.pool).await? {
            let (
                _,
                slug,
                scope,
                created_at,
                updated_at,
                version,
                description,
                fingerprint,
                author_kind,
                author_id,
                changelog,
                parent,
                provenance,
                at,
                count,
            ) = row;
            // One skill per slug: the most specific scope.
            if best.get(&slug).is_some_and(|(b, _)| Scope::from_key(b).rank() <= Scope::from_key(&scope).rank()) {
                continue;
            }
            let version_row = (version, description, fingerprint, author_kind, author_id, changelog, parent, provenance, at);
            let info = SkillInfo {
                latest: Self::version_info(Some(viewer), &slug, &scope, version_row),
                scope: Scope::from_key(&scope).label(),
                slug: slug.clone(),
                version_count: count,
                created_at,
                updated_at,
            };
            best.insert(slug, (scope, info));
        }
        Ok(best.into_values().map(|(_, info)| info).collect())
    }

    async fn visible_rows(&self, viewer: &Viewer) -> anyhow::Result<Vec<SkillRow>> {
        let scopes = viewer.scopes();
        let sql = format!(
            "SELECT id, slug, scope, latest_version, created_at, updated_at FROM skills \
             WHERE deleted_at IS NULL AND latest_version IS NOT NULL AND scope IN ({}) ORDER BY slug",
            placeholders(scopes.len())
        );
        let mut query = sqlx::query_as::<_, SkillRow>(&sql);
        for scope in &scopes {
            query = query.bind(scope);
        }
        let rows = query.fetch_all(&self.pool).await?;
        // One row per slug: the most specific scope.
        let mut best: BTreeMap<String, SkillRow> = BTreeMap::new();
        for row in rows {
            let better = best.get(&row.1).is_none_or(|b| Scope::from_key(&row.2).rank() < Scope::from_key(&b.2).rank());
            if better {
                best.insert(row.1.clone(), row);
            }
        }
        Ok(best.into_values().collect())
    }
}

#[async_trait]
impl SkillStore for SqliteSkillStore {
    async fn viewer(&self, user_id: &str) -> anyhow::Result<Viewer> {
        let (is_admin,): (bool,) =
            sqlx::query_as("SELECT is_admin FROM users WHERE id = ?").bind(user_id).fetch_optional(&self.pool).await?.unwrap_or((false,));
        let groups: Vec<(String,)> = sqlx::query_as("SELECT group_name FROM group_members WHERE user_id = ? ORDER BY group_name")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Viewer { user_id: user_id.to_string(), is_admin, groups: groups.into_iter().map(|(g,)| g).collect() })
    }

    async fn add_group_member(&self, group: &str, user_id: &str) -> anyhow::Result<()> {
        anyhow::ensure!(valid_group_name(group), "a group name is 1 to 64 letters, digits, `-` or `_`");
        sqlx::query("INSERT OR IGNORE INTO group_members (group_name, user_id) VALUES (?, ?)")
            .bind(group)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn publish(&self, actor: &Actor, request: PublishRequest) -> Result<VersionInfo, RepoError> {
        if !actor.may_write(&request.scope) {
            return Err(RepoError::Forbidden(format!("you may not publish to scope `{}`", request.scope.label())));
        }
        let manifest = self.prepare_bundle(&request).await?;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query("INSERT OR IGNORE INTO skills (slug, scope, created_at, updated_at) VALUES (?, ?, ?, ?)")
            .bind(&request.slug)
            .bind(request.scope.key())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (skill_id,): (i64,) = sqlx::query_as("SELECT id FROM skills WHERE slug = ? AND scope = ?")
            .bind(&request.slug)
            .bind(request.scope.key())
            .fetch_one(&mut *tx)
            .await?;
        let info = self.insert_version(&mut tx, skill_id, &request, actor, "publish", manifest).await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn rollback(&self, actor: &Actor, viewer: &Viewer, slug: &str, version: &str) -> Result<VersionInfo, RepoError> {
        let (skill_id, _, scope_key, latest, _, _) = self.resolve(viewer, slug).await?.ok_or(RepoError::NotFound)?;
        let scope = Scope::from_key(&scope_key);
        if !actor.may_write(&scope) {
            return Err(RepoError::Forbidden(format!("you may not change skills in scope `{}`", scope.label())));
        }
        let files = self.bundle(viewer, slug, version).await?.ok_or(RepoError::NotFound)?;
        let request = PublishRequest {
            slug: slug.to_string(),
            scope,
            version: None,
            changelog: format!("Rollback to {version}"),
            files,
            provenance: serde_json::json!({ "rollback": { "restored": version, "replaced": latest } }),
        };
        let manifest = self.prepare_bundle(&request).await?;
        let mut tx = self.pool.begin().await?;
        let info = self.insert_version(&mut tx, skill_id, &request, actor, "rollback", manifest).await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn delete_skill(&self, viewer: &Viewer, slug: &str) -> Result<(), RepoError> {
        let (skill_id, _, scope_key, _, _, _) = self.resolve(viewer, slug).await?.ok_or(RepoError::NotFound)?;
        let scope = Scope::from_key(&scope_key);
        if !viewer.may_write(&scope) {
            return Err(RepoError::Forbidden(format!("you may not delete skills in scope `{}`", scope.label())));
        }
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        sqlx::query("UPDATE skills SET deleted_at = ?, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(now)
            .bind(skill_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO skill_changes (skill_id, slug, scope, kind, version, created_at) VALUES (?, ?, ?, 'delete', NULL, ?)")
            .bind(skill_id)
            .bind(slug)
            .bind(&scope_key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_skills(&self, viewer: &Viewer, query: Option<&str>, scope: Option<&str>) -> anyhow::Result<Vec<SkillInfo>> {
        let needle = query.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
        let mut out = Vec::new();
        for info in self.visible_skills(viewer).await? {
            if scope.is_some_and(|s| info.scope != s) {
                continue;
            }
            if let Some(needle) = &needle {
                let haystack = format!("{} {}", info.slug, info.latest.description).to_lowercase();
                if !needle.split_whitespace().all(|word| haystack.contains(word)) {
                    continue;
                }
            }
            out.push(info);
        }
        Ok(out)
    }

    async fn skill(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<SkillInfo>> {
        match self.resolve(viewer, slug).await? {
            Some(row) => self.skill_info(viewer, row).await,
            None => Ok(None),
        }
    }

    async fn versions(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<Vec<VersionInfo>>> {
        let Some((id, slug, scope, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let rows = self.version_rows(id, None).await?;
        Ok(Some(rows.into_iter().map(|row| Self::version_info(Some(viewer), &slug, &scope, row)).collect()))
    }

    async fn version(&self, viewer: &Viewer, slug: &str, version: &str) -> anyhow::Result<Option<VersionInfo>> {
        let Some((id, slug, scope, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let Some(row) = self.version_rows(id, Some(version)).await?.pop() else { return Ok(None) };
        let mut info = Self::version_info(Some(viewer), &slug, &scope, row);
        info.files = self.files_of(id, version).await?;
        Ok(Some(info))
    }

    async fn bundle(&self, viewer: &Viewer, slug: &str, version: &str) -> anyhow::Result<Option<Files>> {
        let Some((id, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let entries = self.files_of(id, version).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let mut files = Files::new();
        for entry in entries {
            files.insert(entry.path, self.read_blob(&entry.sha256)?);
        }
        Ok(Some(files))
    }

    async fn file(&self, viewer: &Viewer, slug: &str, version: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some((id, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let row: Option<(String,)> = sqlx::query_as("SELECT sha256 FROM skill_files WHERE skill_id = ? AND version = ? AND path = ?")
            .bind(id)
            .bind(version)
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(sha256,)| self.read_blob(&sha256)).transpose()
    }

    async fn version_by_fingerprint(&self, viewer: &Viewer, slug: &str, fingerprint: &str) -> anyhow::Result<Option<String>> {
        let Some((id, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let row: Option<(String,)> =
            sqlx::query_as("SELECT version FROM skill_versions WHERE skill_id = ? AND fingerprint = ? ORDER BY seq DESC LIMIT 1")
                .bind(id)
                .bind(fingerprint)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v,)| v))
    }

    async fn manifest(&self, viewer: &Viewer) -> anyhow::Result<(i64, BTreeMap<String, ManifestEntry>)> {
        // The cursor is read first: a publication racing this read is then either in the
        // manifest or after the cursor, never lost between the two.
        let cursor = self.latest_cursor().await?;
        let rows = self.visible_rows(viewer).await?;
        let ids: HashMap<i64, (String, String, String)> =
            rows.into_iter().filter_map(|(id, slug, scope, latest, ..)| latest.map(|v| (id, (slug, scope, v)))).collect();
        let mut manifest = BTreeMap::new();
        if ids.is_empty() {
            return Ok((cursor, manifest));
        }
        let sql = format!(
            "SELECT v.skill_id, v.fingerprint FROM skill_versions v JOIN skills s ON s.id = v.skill_id AND s.latest_version = v.version \
             WHERE v.skill_id IN ({})",
            placeholders(ids.len())
        );
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
        for id in ids.keys() {
            query = query.bind(id);
        }
        for (id, fingerprint) in query.fetch_all(&self.pool).await? {
            let (slug, scope, version) = &ids[&id];
            manifest.insert(slug.clone(), ManifestEntry { version: version.clone(), fingerprint, scope: Scope::from_key(scope).label() });
        }
        Ok((cursor, manifest))
    }

    async fn changes_since(&self, viewer: &Viewer, cursor: i64) -> anyhow::Result<Vec<Change>> {
        let scopes = viewer.scopes();
        let sql = format!(
            "SELECT cursor, slug, scope, kind, version FROM skill_changes WHERE cursor > ? AND scope IN ({}) ORDER BY cursor LIMIT 1000",
            placeholders(scopes.len())
        );
        let mut query = sqlx::query_as::<_, ChangeRow>(&sql).bind(cursor);
        for scope in &scopes {
            query = query.bind(scope);
        }
        Ok(query.fetch_all(&self.pool).await?.into_iter().map(change_of).collect())
    }

    async fn all_changes_since(&self, cursor: i64) -> anyhow::Result<Vec<Change>> {
        let rows: Vec<ChangeRow> =
            sqlx::query_as("SELECT cursor, slug, scope, kind, version FROM skill_changes WHERE cursor > ? ORDER BY cursor LIMIT 1000")
                .bind(cursor)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(change_of).collect())
    }

    async fn latest_cursor(&self) -> anyhow::Result<i64> {
        let (cursor,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(cursor), 0) FROM skill_changes").fetch_one(&self.pool).await?;
        Ok(cursor)
    }

    async fn skill_count(&self) -> anyhow::Result<i64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM skills").fetch_one(&self.pool).await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::storage::Store;

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

    async fn fixture() -> (tempfile::TempDir, SqliteSkillStore, Viewer, Viewer) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
        let alice = store.create_user("alice", true).await.unwrap();
        let bob = store.create_user("bob", false).await.unwrap();
        let skills = SqliteSkillStore::new(store.pool(), dir.path().join("blobs"));
        let (alice, bob) = (skills.viewer(&alice.id).await.unwrap(), skills.viewer(&bob.id).await.unwrap());
        (dir, skills, alice, bob)
    }

    #[tokio::test]
    async fn an_automatic_bump_never_moves_latest_backwards() {
        let (_dir, skills, alice, _) = fixture().await;
        let actor = Actor::User(alice.clone());
        let top = format!("0.0.{}", u64::MAX);
        skills.publish(&actor, request(Scope::Shared, Some(&top), "one")).await.unwrap();
        let bumped = skills.publish(&actor, request(Scope::Shared, None, "two")).await.unwrap_err();
        assert!(matches!(&bumped, RepoError::Conflict(m) if m.contains("cannot be raised")), "{bumped:?}");
        let latest = skills.list_skills(&alice, None, None).await.unwrap();
        assert_eq!(latest[0].latest.version, top);
    }

    #[tokio::test]
    async fn a_publish_never_changes_an_existing_version() {
        let (_dir, skills, alice, _) = fixture().await;
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
        let kept = skills.bundle(&alice, "notes", "1.0.0").await.unwrap().unwrap();
        assert_eq!(kept, files("one"), "version 1.0.0 keeps its files");
        // Even SQL written by hand cannot change or remove a published version.
        let update = sqlx::query("UPDATE skill_versions SET changelog = 'x'").execute(&skills.pool).await.unwrap_err();
        assert!(update.to_string().contains("immutable"), "{update}");
        let delete = sqlx::query("DELETE FROM skill_files").execute(&skills.pool).await.unwrap_err();
        assert!(delete.to_string().contains("immutable"), "{delete}");
    }

    #[tokio::test]
    async fn rollback_publishes_a_copy_as_a_higher_version() {
        let (_dir, skills, alice, _) = fixture().await;
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

    #[tokio::test]
    async fn private_skills_are_invisible_and_shadow_shared_ones_for_their_owner() {
        let (_dir, skills, alice, bob) = fixture().await;
        skills.publish(&Actor::User(alice.clone()), request(Scope::Shared, None, "shared")).await.unwrap();
        skills.publish(&Actor::User(bob.clone()), request(Scope::User(bob.user_id.clone()), None, "bob's")).await.unwrap();
        // Bob (not an admin) may not publish to shared, nor into alice's private scope.
        let shared = skills.publish(&Actor::User(bob.clone()), request(Scope::Shared, None, "x")).await.unwrap_err();
        assert!(matches!(shared, RepoError::Forbidden(_)));
        let other = skills.publish(&Actor::User(bob.clone()), request(Scope::User(alice.user_id.clone()), None, "x")).await.unwrap_err();
        assert!(matches!(other, RepoError::Forbidden(_)));

        let bob_sees = skills.skill(&bob, "notes").await.unwrap().unwrap();
        assert_eq!((bob_sees.scope.as_str(), bob_sees.latest.changelog.as_str()), ("private", "bob's"));
        let alice_sees = skills.skill(&alice, "notes").await.unwrap().unwrap();
        assert_eq!(alice_sees.scope, "shared");
        assert_eq!(skills.manifest(&alice).await.unwrap().1["notes"].scope, "shared");
        assert!(skills.changes_since(&alice, 0).await.unwrap().iter().all(|c| c.scope == "shared"));
        // Deleting bob's copy uncovers the shared one for him.
        skills.delete_skill(&bob, "notes").await.unwrap();
        assert_eq!(skills.skill(&bob, "notes").await.unwrap().unwrap().scope, "shared");
        assert_eq!(skills.changes_since(&bob, 0).await.unwrap().last().unwrap().kind, "delete");
    }

    #[tokio::test]
    async fn groups_see_their_skills_and_invalid_bundles_are_refused_whole() {
        let (_dir, skills, alice, bob) = fixture().await;
        skills.add_group_member("team", &bob.user_id).await.unwrap();
        let bob = skills.viewer(&bob.user_id).await.unwrap();
        skills.publish(&Actor::User(bob.clone()), request(Scope::Group("team".into()), None, "team")).await.unwrap();
        assert_eq!(skills.list_skills(&bob, Some("remember"), Some("group:team")).await.unwrap().len(), 1);
        assert!(skills.skill(&alice, "notes").await.unwrap().is_none());

        let mut broken = request(Scope::Shared, None, "x");
        broken.files.insert("../escape".into(), b"x".to_vec());
        let error = skills.publish(&Actor::User(alice.clone()), broken).await.unwrap_err();
        assert!(matches!(&error, RepoError::Invalid(e) if e[0].rule == "path"), "{error:?}");
        assert!(skills.skill(&alice, "notes").await.unwrap().is_none(), "nothing of a refused bundle is stored");
    }
}
