//! `skillhive sync`: keeps a local skills folder in step with a server.
//!
//! One pass pulls the manifest, installs what changed and records what it installed in
//! `DIR/.skillhive/lock.json` (version and fingerprint). The rules that keep a user's work
//! safe:
//! - A skill whose files no longer match the fingerprint it was installed with was edited
//!   here; it is reported and left alone unless `--force`.
//! - A folder the client did not install is never written or deleted.
//! - A skill is written to a temporary folder beside the target and swapped in with one
//!   atomic rename (`renameat2(RENAME_EXCHANGE)`), after its fingerprint is checked, so an
//!   interrupted sync leaves the previous version whole.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use agent::skills::bundle::{self, Files};

use crate::storage::skills::read_skill_dir;

/// The client's state folder inside the synced folder; hidden, so fingerprints skip it.
const STATE_DIR: &str = ".skillhive";

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub server: String,
    pub token: String,
    pub dir: PathBuf,
    pub force: bool,
    /// Upload the OpenClaw transcripts (`*.jsonl`) found here.
    pub push: Option<PathBuf>,
    pub watch: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lockfile {
    /// The server the skills came from.
    pub server: String,
    /// The manifest's ETag, so an unchanged manifest costs a 304.
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub skills: BTreeMap<String, LockedSkill>,
    /// Transcripts already uploaded, by file name → sha256, so none is sent twice.
    #[serde(default)]
    pub pushed: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockedSkill {
    pub version: String,
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    skills: BTreeMap<String, crate::storage::skills::ManifestEntry>,
}

/// What one pass did, for the report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub installed: Vec<(String, String)>,
    pub updated: Vec<(String, String)>,
    pub removed: Vec<String>,
    pub kept_local_edits: Vec<String>,
    pub skipped_unmanaged: Vec<String>,
    pub pushed: usize,
    pub unchanged: bool,
}

impl SyncReport {
    pub fn print(&self) {
        for (slug, version) in &self.installed {
            println!("installed {slug} {version}");
        }
        for (slug, version) in &self.updated {
            println!("updated {slug} -> {version}");
        }
        for slug in &self.removed {
            println!("removed {slug} (no longer on the server)");
        }
        for slug in &self.kept_local_edits {
            println!("kept {slug}: edited locally since it was installed (--force overwrites)");
        }
        for slug in &self.skipped_unmanaged {
            println!("skipped {slug}: a folder of that name was not installed by sync (--force overwrites)");
        }
        if self.pushed > 0 {
            println!("pushed {} transcript(s)", self.pushed);
        }
        if self.unchanged {
            println!("up to date");
        }
    }
}

pub struct SyncClient {
    options: SyncOptions,
    http: reqwest::Client,
}

impl SyncClient {
    pub fn new(options: SyncOptions) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { options, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.options.server.trim_end_matches('/'), path)
    }

    fn lock_path(&self) -> PathBuf {
        self.options.dir.join(STATE_DIR).join("lock.json")
    }

    fn read_lock(&self) -> anyhow::Result<Lockfile> {
        match std::fs::read(self.lock_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is not a valid lockfile", self.lock_path().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Lockfile { server: self.options.server.clone(), ..Default::default() })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn write_lock(&self, lock: &Lockfile) -> anyhow::Result<()> {
        let path = self.lock_path();
        let dir = path.parent().expect("the lockfile has a folder");
        std::fs::create_dir_all(dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut temp, lock)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// One pass: push transcripts (if asked), then pull skills.
    pub async fn sync_once(&self) -> anyhow::Result<SyncReport> {
        std::fs::create_dir_all(self.options.dir.join(STATE_DIR))
            .with_context(|| format!("cannot create {}", self.options.dir.display()))?;
        self.clean_leftovers()?;
        let mut lock = self.read_lock()?;
        let mut report = SyncReport::default();
        if let Some(push_dir) = &self.options.push {
            report.pushed = self.push(push_dir, &mut lock).await?;
            self.write_lock(&lock)?;
        }

        let mut request = self.http.get(self.url("/api/sync/manifest")).bearer_auth(&self.options.token);
        // A 304 is trusted only when the folder still holds exactly what was installed.
        let all_intact =
            lock.skills.iter().all(|(slug, locked)| self.local_fingerprint(slug).ok().flatten().as_ref() == Some(&locked.fingerprint));
        if let (Some(etag), false, true) = (&lock.etag, self.options.force, all_intact) {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.options.server))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            report.unchanged = true;
            return Ok(report);
        }
        let response = check(response).await?;
        let etag = response.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        let manifest: Manifest = response.json().await.context("the manifest is not valid JSON")?;

        for (slug, entry) in &manifest.skills {
            if !is_safe_slug(slug) {
                tracing::warn!(%slug, "ignoring a skill with an unsafe name");
                continue;
            }
            let target = self.options.dir.join(slug);
            let local = self.local_fingerprint(slug)?;
            match (lock.skills.get(slug), local) {
                (Some(locked), Some(local)) if local != locked.fingerprint && !self.options.force => {
                    report.kept_local_edits.push(slug.clone());
                    continue;
                }
                // Already the manifest's version (installed, or an identical copy adopted).
                (_, Some(local)) if local == entry.fingerprint => {}
                (None, Some(_)) if !self.options.force => {
                    report.skipped_unmanaged.push(slug.clone());
                    continue;
                }
                (previous, local) => {
                    self.install(slug, &entry.version, &entry.fingerprint, &target).await?;
                    match (previous, local) {
                        (Some(_), Some(_)) => report.updated.push((slug.clone(), entry.version.clone())),
                        _ => report.installed.push((slug.clone(), entry.version.clone())),
                    }
                }
            }
            lock.skills.insert(slug.clone(), LockedSkill { version: entry.version.clone(), fingerprint: entry.fingerprint.clone() });
            // Written after each skill, so a crash later in the pass loses nothing done.
            self.write_lock(&lock)?;
        }

        let gone: Vec<String> = lock.skills.keys().filter(|slug| !manifest.skills.contains_key(*slug)).cloned().collect();
        for slug in gone {
            let locked = lock.skills[&slug].clone();
            match self.local_fingerprint(&slug)? {
                Some(local) if local != locked.fingerprint && !self.options.force => {
                    report.kept_local_edits.push(slug.clone());
                }
                Some(_) => {
                    std::fs::remove_dir_all(self.options.dir.join(&slug))?;
                    report.removed.push(slug.clone());
                }
                None => {}
            }
            lock.skills.remove(&slug);
        }
        lock.etag = etag;
        lock.server = self.options.server.clone();
        self.write_lock(&lock)?;
        Ok(report)
    }

    /// The fingerprint of the local folder of `slug`, if it exists.
    fn local_fingerprint(&self, slug: &str) -> anyhow::Result<Option<String>> {
        let dir = self.options.dir.join(slug);
        if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(bundle::fingerprint_files(&read_skill_dir(&dir)?)))
    }

    /// Downloads a version, checks it against the manifest's fingerprint, writes it to a
    /// temporary folder and swaps it in.
    async fn install(&self, slug: &str, version: &str, fingerprint: &str, target: &Path) -> anyhow::Result<()> {
        let response = self
            .http
            // Slugs are [a-z0-9-]; only a version's build metadata (`+`) needs escaping.
            .get(self.url(&format!("/api/v1/download?slug={slug}&version={}", version.replace('+', "%2B"))))
            .bearer_auth(&self.options.token)
            .send()
            .await?;
        let bytes = check(response).await?.bytes().await?;
        let files = unzip(&bytes).with_context(|| format!("the download of {slug} {version} is not a valid zip"))?;
        let got = bundle::fingerprint_files(&files);
        if got != fingerprint {
            bail!("the download of {slug} {version} does not match its fingerprint ({got} != {fingerprint})");
        }
        let staging = tempfile::Builder::new().prefix(&format!("incoming-{slug}-")).tempdir_in(self.options.dir.join(STATE_DIR))?.keep();
        let crash_after = std::env::var("SKILLHIVE_SYNC_CRASH_AFTER_FILES").ok().and_then(|v| v.parse::<usize>().ok());
        for (written, (path, content)) in files.iter().enumerate() {
            if crash_after == Some(written) {
                // A fault-injection point for tests: the process dies mid-write, as on a
                // kill or power loss.
                std::process::abort();
            }
            let file = staging.join(path);
            std::fs::create_dir_all(file.parent().expect("a file in the staging folder"))?;
            std::fs::write(&file, content)?;
            std::fs::File::open(&file)?.sync_all()?;
        }
        swap_in(&staging, target)?;
        Ok(())
    }

    /// Leftovers of an interrupted pass: staging folders (never swapped in) and previous
    /// versions (already swapped out). Neither holds the live copy, so both go.
    fn clean_leftovers(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(self.options.dir.join(STATE_DIR))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if (name.starts_with("incoming-") || name.starts_with("outgoing-")) && entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Uploads new `*.jsonl` transcripts in `dir` to the import endpoint.
    async fn push(&self, dir: &Path, lock: &mut Lockfile) -> anyhow::Result<usize> {
        let mut pushed = 0;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path)?;
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let digest = bundle::sha256_hex(&bytes);
            if lock.pushed.get(&name) == Some(&digest) {
                continue;
            }
            let response = self
                .http
                .post(self.url("/api/trajectories/import"))
                .bearer_auth(&self.options.token)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(bytes)
                .send()
                .await?;
            match response.status() {
                s if s.is_success() => pushed += 1,
                // Imported before (from another machine, or a lost lockfile): done too.
                reqwest::StatusCode::CONFLICT => {}
                _ => {
                    let error = check(response).await.err().map(|e| e.to_string()).unwrap_or_default();
                    bail!("cannot push {}: {error}", path.display());
                }
            }
            lock.pushed.insert(name, digest);
        }
        Ok(pushed)
    }

    /// Syncs, then again after every change the server announces, until stopped.
    ///
    /// The client subscribes before it syncs: a publication between the two is then in
    /// the sync or announced on the stream, never lost (syncing first and subscribing
    /// after missed one that landed in between). A reconnection the server cannot resume
    /// from (no event id yet) syncs again for the same reason.
    pub async fn watch(&self) -> anyhow::Result<()> {
        let mut last_event: Option<String> = None;
        let mut first = true;
        loop {
            let mut request = self.http.get(self.url("/api/sync/events")).bearer_auth(&self.options.token);
            if let Some(id) = &last_event {
                request = request.header("Last-Event-ID", id);
            }
            match request.send().await.map_err(anyhow::Error::from).and_then(|r| Ok(r.error_for_status()?)) {
                Ok(response) => {
                    if first || last_event.is_none() {
                        match self.sync_once().await {
                            Ok(report) => report.print(),
                            // The first pass's errors (a wrong token, an unreachable server) end
                            // the watch; later ones are reported and retried.
                            Err(e) if first => return Err(e),
                            Err(e) => eprintln!("sync failed: {e:#}"),
                        }
                        first = false;
                    }
                    let mut body = response.bytes_stream();
                    let mut buffer = String::new();
                    while let Some(chunk) = body.next().await {
                        let Ok(chunk) = chunk else { break };
                        buffer.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buffer.find("\n\n") {
                            let frame: String = buffer.drain(..end + 2).collect();
                            let is_change = frame.lines().any(|l| l.starts_with("event:") && !l.contains("keep-alive"));
                            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                                last_event = Some(id.trim().to_string());
                            }
                            if is_change {
                                match self.sync_once().await {
                                    Ok(report) => report.print(),
                                    Err(e) => eprintln!("sync failed: {e:#}"),
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    if first {
                        // Without the event stream the first pass still runs, and its
                        // errors still end the watch.
                        self.sync_once().await?.print();
                        first = false;
                    }
                    eprintln!("cannot follow {}: {e:#}; retrying", self.options.server);
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

fn is_safe_slug(slug: &str) -> bool {
    !slug.is_empty() && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("no message").to_string();
    bail!("the server answered {status}: {message}")
}

/// The files of a skill zip, within a bundle's caps (checked on what is read, not on what
/// the zip claims).
pub fn unzip(bytes: &[u8]) -> anyhow::Result<Files> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    // A zip's own size says nothing of what it expands to: the bundle's caps (files,
    // bytes per file, bytes in all) are checked on what is actually read, so a zip bomb
    // stops after at most a bundle's worth of bytes.
    anyhow::ensure!(
        archive.len() <= bundle::MAX_FILES * 2,
        "the zip lists {} entries; a skill has at most {}",
        archive.len(),
        bundle::MAX_FILES
    );
    let mut files = Files::new();
    let mut total = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        if entry.is_dir() {
            continue;
        }
        let name = entry.name().to_string();
        bundle::check_path(&name).map_err(|m| anyhow::anyhow!("unsafe path in the zip: {m}"))?;
        let mut content = Vec::new();
        entry.by_ref().take(bundle::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut content)?;
        anyhow::ensure!(content.len() <= bundle::MAX_FILE_BYTES, "{name} is larger than a skill file may be");
        total += content.len();
        anyhow::ensure!(
            total <= bundle::MAX_BUNDLE_BYTES,
            "the zip expands past {} bytes, more than a skill may hold",
            bundle::MAX_BUNDLE_BYTES
        );
        anyhow::ensure!(files.len() < bundle::MAX_FILES, "the zip holds more than {} files", bundle::MAX_FILES);
        files.insert(name, content);
    }
    Ok(files)
}

/// Puts `staging` at `target` atomically: exchanged with the old folder in one
/// `renameat2(RENAME_EXCHANGE)` when there is one, then the old copy is removed.
fn swap_in(staging: &Path, target: &Path) -> anyhow::Result<()> {
    if !target.exists() {
        std::fs::rename(staging, target)?;
        return Ok(());
    }
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    if let Err(error) = renameat_with(CWD, staging, CWD, target, RenameFlags::EXCHANGE) {
        bail!("cannot swap {} into place: {}", target.display(), std::io::Error::from(error));
    }
    // `staging` now holds the previous version; rename it out of the way first, so that a
    // crash during the removal leaves a leftover the next pass cleans, not a half folder.
    let outgoing =
        staging.with_file_name(format!("outgoing-{}", staging.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()));
    std::fs::rename(staging, &outgoing)?;
    std::fs::remove_dir_all(&outgoing)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files {
            writer.start_file(*name, options).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_bombs_stop_at_a_bundles_worth_of_bytes() {
        // 20 MB of zeros in one entry, a few kilobytes on the wire.
        let one_big = zip_of(&[("SKILL.md", vec![0u8; 20 * 1024 * 1024])]);
        assert!(one_big.len() < 100 * 1024);
        assert!(unzip(&one_big).unwrap_err().to_string().contains("larger than a skill file"));
        // Many entries just under the file cap: stopped at the bundle's total.
        let names: Vec<String> = (0..12).map(|i| format!("part-{i}.txt")).collect();
        let many: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), vec![b'a'; 1024 * 1024 - 1])).collect();
        assert!(unzip(&zip_of(&many)).unwrap_err().to_string().contains("expands past"));
        // An ordinary bundle comes through whole.
        let files = unzip(&zip_of(&[("SKILL.md", b"---\nname: x\n---\n".to_vec()), ("references/a.md", b"a".to_vec())])).unwrap();
        assert_eq!(files.len(), 2);
    }

    proptest! {
        /// Damaged zips (random bytes changed, cut short) and noise are refused or read,
        /// never a panic.
        #[test]
        fn damaged_zips_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            noise in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut bytes = zip_of(&[("SKILL.md", b"---\nname: x\ndescription: y\n---\nbody\n".to_vec()), ("scripts/run.sh", vec![b'x'; 300])]);
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = unzip(&bytes);
            let _ = unzip(&bytes[..cut.index(bytes.len())]);
            let _ = unzip(&noise);
        }
    }
}
