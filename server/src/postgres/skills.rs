//! The skill repository on PostgreSQL: skills, immutable versions, the change log and the
//! files' blobs, all in the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use agent::skills::bundle::{self, FileEntry, Files};
use agent::skills::format::SkillManifest;
use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};

use crate::storage::blobs::BlobStore;
use crate::storage::skills::{
    change_of, filter_listing, most_specific, now_ms, plan_version, valid_group_name, version_info, Actor, Change, ChangeRow,
    ManifestEntry, PublishRequest, RepoError, Scope, SkillInfo, SkillRow, SkillStore, VersionInfo, VersionPlan, VersionRow, Viewer,
};

/// The PostgreSQL skill store and its blob store.
#[derive(Clone)]
pub struct PgSkillStore {
    pool: PgPool,
    blobs: Arc<dyn BlobStore>,
}

impl PgSkillStore {
    pub fn new(pool: PgPool, blobs: Arc<dyn BlobStore>) -> Self {
        Self { pool, blobs }
    }

    /// A transaction that may append to the change log: it holds the change log's lock,
    /// so cursors commit in order and a follower never steps over one.
    async fn begin_change(&self) -> anyhow::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(super::CHANGE_LOG_LOCK).execute(&mut *tx).await?;
        Ok(tx)
    }

    /// The visible, undeleted skill a viewer sees under `slug`.
    async fn resolve(&self, viewer: &Viewer, slug: &str) -> anyhow::Result<Option<SkillRow>> {
        let scopes = viewer.scopes();
        let rows: Vec<SkillRow> = sqlx::query_as(
            "SELECT id, slug, scope, latest_version, created_at, updated_at FROM skills \
             WHERE slug = $1 AND deleted_at IS NULL AND scope = ANY($2)",
        )
        .bind(slug)
        .bind(&scopes)
        .fetch_all(&self.pool)
        .await?;
        Ok(most_specific(rows.into_iter().map(|row| (row.1.clone(), row.2.clone(), row))).pop())
    }

    async fn version_rows(&self, skill_id: i64, version: Option<&str>) -> anyhow::Result<Vec<VersionRow>> {
        let base = "SELECT version, description, fingerprint, author_kind, author_id, changelog, parent_version, provenance, created_at \
                    FROM skill_versions WHERE skill_id = $1";
        let rows = match version {
            Some(v) => sqlx::query_as(&format!("{base} AND version = $2")).bind(skill_id).bind(v).fetch_all(&self.pool).await?,
            None => sqlx::query_as(&format!("{base} ORDER BY seq DESC")).bind(skill_id).fetch_all(&self.pool).await?,
        };
        Ok(rows)
    }

    async fn files_of(&self, skill_id: i64, version: &str) -> anyhow::Result<Vec<FileEntry>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT path, sha256, size FROM skill_files WHERE skill_id = $1 AND version = $2 ORDER BY path")
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
            sqlx::query_as("SELECT COUNT(*) FROM skill_versions WHERE skill_id = $1").bind(id).fetch_one(&self.pool).await?;
        Ok(Some(SkillInfo {
            latest: version_info(Some(viewer), &slug, &scope, version_row),
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
        tx: &mut Transaction<'_, Postgres>,
        skill_id: i64,
        request: &PublishRequest,
        actor: &Actor,
        kind: &str,
        manifest: SkillManifest,
    ) -> Result<VersionInfo, RepoError> {
        let existing: Vec<(String, String)> =
            sqlx::query_as("SELECT version, fingerprint FROM skill_versions WHERE skill_id = $1 ORDER BY seq DESC")
                .bind(skill_id)
                .fetch_all(&mut **tx)
                .await?;
        let (latest,): (Option<String>,) =
            sqlx::query_as("SELECT latest_version FROM skills WHERE id = $1").bind(skill_id).fetch_one(&mut **tx).await?;
        let VersionPlan { version, entries, fingerprint } = plan_version(&existing, latest.as_deref(), request)?;
        let now = now_ms();
        let (author_kind, author_id) = actor.author();
        let provenance = serde_json::to_string(&request.provenance).map_err(anyhow::Error::from)?;
        sqlx::query(
            "INSERT INTO skill_versions (skill_id, version, seq, description, fingerprint, author_kind, author_id, changelog, parent_version, provenance, created_at) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM skill_versions WHERE skill_id = $3), $4, $5, $6, $7, $8, $9, $10, $11)",
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
            sqlx::query("INSERT INTO skill_files (skill_id, version, path, sha256, size) VALUES ($1, $2, $3, $4, $5)")
                .bind(skill_id)
                .bind(&version)
                .bind(&entry.path)
                .bind(&entry.sha256)
                .bind(entry.size as i64)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE skills SET latest_version = $1, updated_at = $2, deleted_at = NULL WHERE id = $3")
            .bind(&version)
            .bind(now)
            .bind(skill_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO skill_changes (skill_id, slug, scope, kind, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
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
        for bytes in request.files.values() {
            self.blobs.put(&bundle::sha256_hex(bytes), bytes).await?;
        }
        Ok(manifest)
    }

    async fn visible_skills(&self, viewer: &Viewer) -> anyhow::Result<Vec<SkillInfo>> {
        type Row =
            (i64, String, String, i64, i64, String, String, String, String, Option<String>, String, Option<String>, String, i64, i64);
        let scopes = viewer.scopes();
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.id, s.slug, s.scope, s.created_at, s.updated_at, \
                    v.version, v.description, v.fingerprint, v.author_kind, v.author_id, v.changelog, v.parent_version, v.provenance, \
                    v.created_at, (SELECT COUNT(*) FROM skill_versions c WHERE c.skill_id = s.id) \
             FROM skills s JOIN skill_versions v ON v.skill_id = s.id AND v.version = s.latest_version \
             WHERE s.deleted_at IS NULL AND s.scope = ANY($1) ORDER BY s.slug",
        )
        .bind(&scopes)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.into_iter().map(|row| {
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
            let version_row = (version, description, fingerprint, author_kind, author_id, changelog, parent, provenance, at);
            let info = SkillInfo {
                latest: version_info(Some(viewer), &slug, &scope, version_row),
                scope: Scope::from_key(&scope).label(),
                slug: slug.clone(),
                version_count: count,
                created_at,
                updated_at,
            };
            (slug, scope, info)
        });
        Ok(most_specific(rows))
    }
}

#[async_trait]
impl SkillStore for PgSkillStore {
    async fn viewer(&self, user_id: &str) -> anyhow::Result<Viewer> {
        let (is_admin,): (bool,) =
            sqlx::query_as("SELECT is_admin FROM users WHERE id = $1").bind(user_id).fetch_optional(&self.pool).await?.unwrap_or((false,));
        let groups: Vec<(String,)> = sqlx::query_as("SELECT group_name FROM group_members WHERE user_id = $1 ORDER BY group_name")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Viewer { user_id: user_id.to_string(), is_admin, groups: groups.into_iter().map(|(g,)| g).collect() })
    }

    async fn add_group_member(&self, group: &str, user_id: &str) -> anyhow::Result<()> {
        anyhow::ensure!(valid_group_name(group), "a group name is 1 to 64 letters, digits, `-` or `_`");
        sqlx::query("INSERT INTO group_members (group_name, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(group)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn remove_group_member(&self, group: &str, user_id: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_id = $2")
            .bind(group)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn publish(&self, actor: &Actor, request: PublishRequest) -> Result<VersionInfo, RepoError> {
        if !actor.may_write(&request.scope) {
            return Err(RepoError::Forbidden(format!("you may not publish to scope `{}`", request.scope.label())));
        }
        let manifest = self.prepare_bundle(&request).await?;
        let mut tx = self.begin_change().await?;
        let now = now_ms();
        sqlx::query("INSERT INTO skills (slug, scope, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(&request.slug)
            .bind(request.scope.key())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (skill_id,): (i64,) = sqlx::query_as("SELECT id FROM skills WHERE slug = $1 AND scope = $2")
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
        let mut tx = self.begin_change().await?;
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
        let mut tx = self.begin_change().await?;
        let now = now_ms();
        sqlx::query("UPDATE skills SET deleted_at = $1, updated_at = $2 WHERE id = $3")
            .bind(now)
            .bind(now)
            .bind(skill_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO skill_changes (skill_id, slug, scope, kind, version, created_at) VALUES ($1, $2, $3, 'delete', NULL, $4)")
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
        Ok(filter_listing(self.visible_skills(viewer).await?, query, scope))
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
        Ok(Some(rows.into_iter().map(|row| version_info(Some(viewer), &slug, &scope, row)).collect()))
    }

    async fn version(&self, viewer: &Viewer, slug: &str, version: &str) -> anyhow::Result<Option<VersionInfo>> {
        let Some((id, slug, scope, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let Some(row) = self.version_rows(id, Some(version)).await?.pop() else { return Ok(None) };
        let mut info = version_info(Some(viewer), &slug, &scope, row);
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
            files.insert(entry.path, self.blobs.get(&entry.sha256).await?);
        }
        Ok(Some(files))
    }

    async fn file(&self, viewer: &Viewer, slug: &str, version: &str, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some((id, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let row: Option<(String,)> = sqlx::query_as("SELECT sha256 FROM skill_files WHERE skill_id = $1 AND version = $2 AND path = $3")
            .bind(id)
            .bind(version)
            .bind(path)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some((sha256,)) => Ok(Some(self.blobs.get(&sha256).await?)),
            None => Ok(None),
        }
    }

    async fn version_by_fingerprint(&self, viewer: &Viewer, slug: &str, fingerprint: &str) -> anyhow::Result<Option<String>> {
        let Some((id, ..)) = self.resolve(viewer, slug).await? else { return Ok(None) };
        let row: Option<(String,)> =
            sqlx::query_as("SELECT version FROM skill_versions WHERE skill_id = $1 AND fingerprint = $2 ORDER BY seq DESC LIMIT 1")
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
        // One query: every visible skill's latest version and fingerprint.
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT s.slug, s.scope, v.version, v.fingerprint FROM skills s \
             JOIN skill_versions v ON v.skill_id = s.id AND v.version = s.latest_version \
             WHERE s.deleted_at IS NULL AND s.scope = ANY($1)",
        )
        .bind(viewer.scopes())
        .fetch_all(&self.pool)
        .await?;
        let entries = rows.into_iter().map(|(slug, scope, version, fingerprint)| {
            let entry = ManifestEntry { version, fingerprint, scope: Scope::from_key(&scope).label() };
            (slug.clone(), scope, (slug, entry))
        });
        let manifest = most_specific(entries).into_iter().collect();
        Ok((cursor, manifest))
    }

    async fn changes_since(&self, viewer: &Viewer, cursor: i64) -> anyhow::Result<Vec<Change>> {
        let scopes = viewer.scopes();
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT cursor, slug, scope, kind, version FROM skill_changes WHERE cursor > $1 AND scope = ANY($2) ORDER BY cursor LIMIT 1000",
        )
        .bind(cursor)
        .bind(&scopes)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(change_of).collect())
    }

    async fn all_changes_since(&self, cursor: i64) -> anyhow::Result<Vec<Change>> {
        let rows: Vec<ChangeRow> =
            sqlx::query_as("SELECT cursor, slug, scope, kind, version FROM skill_changes WHERE cursor > $1 ORDER BY cursor LIMIT 1000")
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
