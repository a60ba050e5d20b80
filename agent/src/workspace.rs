//! A user's workspace: the one directory the file tools may touch.
//!
//! Every path a model gives is relative to the workspace root. Paths that could leave it
//! are refused before any file is opened: absolute paths, `..` components, and symlinks
//! (anywhere along the path) that resolve outside the root.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Largest slice of a file that `read` returns; more is cut with a note, so a huge file
/// cannot flood a small model's context.
pub const MAX_READ_BYTES: usize = 16 * 1024;
/// Largest file `write` or `edit` will produce.
pub const MAX_WRITE_BYTES: usize = 1024 * 1024;
/// Most entries `ls` lists.
pub const MAX_LIST_ENTRIES: usize = 200;

/// Why a file operation was refused or failed, in words meant for the model and the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error("path `{0}` is absolute; use a path relative to the workspace")]
    Absolute(String),
    #[error("path `{0}` leaves the workspace (`..` is not allowed)")]
    ParentComponent(String),
    #[error("path `{0}` resolves outside the workspace through a symlink")]
    SymlinkEscape(String),
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("`{0}` is a directory, not a file")]
    IsDirectory(String),
    #[error("`{0}` is a file, not a directory; read it with read")]
    NotDirectory(String),
    #[error("the text to replace was not found in `{0}`")]
    EditNoMatch(String),
    #[error("the text to replace occurs {1} times in `{0}`; include more context so it occurs once")]
    EditAmbiguous(String, usize),
    #[error("the content is {0} bytes; the limit is {MAX_WRITE_BYTES}")]
    TooLarge(usize),
    #[error("`{0}` is not UTF-8 text")]
    NotText(String),
    #[error("`{0}` is not a regular file")]
    NotRegular(String),
    #[error("the workspace would hold {0} bytes, over its quota of {1}; remove files first")]
    OverQuota(u64, u64),
    #[error("I/O error on `{0}`: {1}")]
    Io(String, String),
}

/// Default cap on the bytes a workspace holds, see [`Workspace::with_quota`].
pub const DEFAULT_QUOTA_BYTES: u64 = 256 * 1024 * 1024;
/// Entries a usage count visits at most; a workspace with more is treated as full, so
/// that counting cannot itself become slow.
const MAX_COUNTED_ENTRIES: usize = 50_000;

pub struct Workspace {
    root: PathBuf,
    quota_bytes: u64,
}

impl Workspace {
    /// Opens (creating if needed) the workspace at `root`, with the default quota.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self { root: root.canonicalize()?, quota_bytes: DEFAULT_QUOTA_BYTES })
    }

    /// Caps the bytes the workspace may hold: writes that would pass the cap are refused,
    /// and so are commands while it is over.
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }

    /// Calls `visit` with each regular file below the root (symlinks are not followed)
    /// and its size. False when the walk stopped at [`MAX_COUNTED_ENTRIES`] entries.
    fn walk_files(&self, mut visit: impl FnMut(&std::fs::DirEntry, u64)) -> bool {
        let mut visited = 0usize;
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                visited += 1;
                if visited > MAX_COUNTED_ENTRIES {
                    return false;
                }
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push(entry.path()),
                    Ok(t) if t.is_file() => visit(&entry, entry.metadata().map(|m| m.len()).unwrap_or(0)),
                    _ => {}
                }
            }
        }
        true
    }

    /// Bytes of regular files in the workspace (symlinks are not followed); a workspace
    /// with too many entries to count counts as full.
    pub fn usage(&self) -> u64 {
        let mut total = 0u64;
        if self.walk_files(|_, bytes| total += bytes) {
            total
        } else {
            u64::MAX
        }
    }

    /// Refuses when the workspace already holds more than its quota.
    pub fn check_quota(&self) -> Result<(), WorkspaceError> {
        let used = self.usage();
        if used > self.quota_bytes {
            return Err(WorkspaceError::OverQuota(used, self.quota_bytes));
        }
        Ok(())
    }

    /// Refuses a write that replaces `replaced` bytes with `added` ones when the result
    /// would pass the quota.
    fn check_growth(&self, replaced: u64, added: u64) -> Result<(), WorkspaceError> {
        let after = self.usage().saturating_sub(replaced).saturating_add(added);
        if after > self.quota_bytes {
            return Err(WorkspaceError::OverQuota(after, self.quota_bytes));
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a model-given path to a real path inside the workspace, or refuses it.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, WorkspaceError> {
        let relative = Path::new(path);
        let mut joined = self.root.clone();
        for component in relative.components() {
            match component {
                Component::Normal(part) => joined.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(WorkspaceError::ParentComponent(path.to_string())),
                Component::RootDir | Component::Prefix(_) => return Err(WorkspaceError::Absolute(path.to_string())),
            }
        }
        // The deepest part of the path that exists decides where it really points; a
        // symlink at any level shows up in its canonical form.
        let mut existing = joined.as_path();
        while std::fs::symlink_metadata(existing).is_err() {
            existing = existing.parent().unwrap_or(&self.root);
        }
        let real = existing.canonicalize().map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        if !real.starts_with(&self.root) {
            return Err(WorkspaceError::SymlinkEscape(path.to_string()));
        }
        // Joining an empty remainder would add a trailing separator, which makes a file
        // look like a missing directory.
        match joined.strip_prefix(existing) {
            Ok(rest) if !rest.as_os_str().is_empty() => Ok(real.join(rest)),
            _ => Ok(real),
        }
    }

    /// Reads a text file; beyond [`MAX_READ_BYTES`] the content is cut and says so. Only
    /// that much is read, whatever the file's size.
    pub fn read(&self, path: &str) -> Result<String, WorkspaceError> {
        use std::io::Read;
        let (file, total) = self.open_regular(path)?;
        let mut bytes = Vec::with_capacity(MAX_READ_BYTES.min(total as usize));
        file.take(MAX_READ_BYTES as u64).read_to_end(&mut bytes).map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        let total = (total as usize).max(bytes.len());
        let mut end = bytes.len();
        // A cut inside a character drops that character's leading bytes.
        while end < total && end > 0 && std::str::from_utf8(&bytes[..end]).is_err_and(|e| e.error_len().is_none()) {
            end -= 1;
        }
        let text = std::str::from_utf8(&bytes[..end]).map_err(|_| WorkspaceError::NotText(path.to_string()))?;
        if end < total {
            Ok(format!("{text}\n[... cut: showing {end} of {total} bytes]"))
        } else {
            Ok(text.to_string())
        }
    }

    /// Writes a file, creating parent directories inside the workspace.
    pub fn write(&self, path: &str, content: &str) -> Result<usize, WorkspaceError> {
        if content.len() > MAX_WRITE_BYTES {
            return Err(WorkspaceError::TooLarge(content.len()));
        }
        let real = self.resolve(path)?;
        if real.is_dir() {
            return Err(WorkspaceError::IsDirectory(path.to_string()));
        }
        let replaced = std::fs::symlink_metadata(&real).map(|m| m.len()).unwrap_or(0);
        self.check_growth(replaced, content.len() as u64)?;
        if let Some(parent) = real.parent() {
            std::fs::create_dir_all(parent).map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        }
        std::fs::write(&real, content).map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        Ok(content.len())
    }

    /// Replaces the one occurrence of `old` with `new`. Zero or several occurrences are
    /// refused: an edit must say unambiguously what it changes.
    pub fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), WorkspaceError> {
        use std::io::Read;
        let (file, size) = self.open_regular(path)?;
        if size > MAX_WRITE_BYTES as u64 {
            return Err(WorkspaceError::TooLarge(size as usize));
        }
        let real = self.resolve(path)?;
        let mut text = String::new();
        file.take(MAX_WRITE_BYTES as u64 + 1).read_to_string(&mut text).map_err(|_| WorkspaceError::NotText(path.to_string()))?;
        let occurrences = if old.is_empty() { 0 } else { text.matches(old).count() };
        match occurrences {
            0 => Err(WorkspaceError::EditNoMatch(path.to_string())),
            1 => {
                let edited = text.replacen(old, new, 1);
                if edited.len() > MAX_WRITE_BYTES {
                    return Err(WorkspaceError::TooLarge(edited.len()));
                }
                self.check_growth(text.len() as u64, edited.len() as u64)?;
                std::fs::write(&real, edited).map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))
            }
            n => Err(WorkspaceError::EditAmbiguous(path.to_string(), n)),
        }
    }

    /// Removes a file (not a directory); empty parent directories stay.
    pub fn remove(&self, path: &str) -> Result<(), WorkspaceError> {
        let real = self.resolve(path)?;
        let metadata = std::fs::symlink_metadata(&real).map_err(|_| WorkspaceError::NotFound(path.to_string()))?;
        if metadata.is_dir() {
            return Err(WorkspaceError::IsDirectory(path.to_string()));
        }
        std::fs::remove_file(&real).map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))
    }

    /// Every regular file below the root with its size, as relative paths, sorted; at most
    /// [`MAX_COUNTED_ENTRIES`] entries are visited.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut files = Vec::new();
        self.walk_files(|entry, bytes| {
            if let Ok(relative) = entry.path().strip_prefix(&self.root) {
                files.push((relative.to_string_lossy().into_owned(), bytes));
            }
        });
        files.sort();
        files
    }

    /// Lists a directory, sorted, directories marked with a trailing `/`.
    pub fn ls(&self, path: &str) -> Result<Vec<String>, WorkspaceError> {
        let real = self.resolve(path)?;
        if !real.exists() {
            return Err(WorkspaceError::NotFound(path.to_string()));
        }
        if !real.is_dir() {
            return Err(WorkspaceError::NotDirectory(path.to_string()));
        }
        let mut entries: Vec<String> = std::fs::read_dir(&real)
            .map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?
            .filter_map(Result::ok)
            .map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    format!("{name}/")
                } else {
                    name
                }
            })
            .collect();
        entries.sort();
        entries.truncate(MAX_LIST_ENTRIES);
        Ok(entries)
    }

    /// Opens a regular file for reading, with its size. The file is opened without
    /// blocking and checked after opening, so a FIFO or device (or a file swapped for one
    /// after a check) can neither block the caller nor be read.
    fn open_regular(&self, path: &str) -> Result<(std::fs::File, u64), WorkspaceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let real = self.existing_file(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&real)
            .map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        let metadata = file.metadata().map_err(|e| WorkspaceError::Io(path.to_string(), e.to_string()))?;
        if !metadata.is_file() {
            return Err(WorkspaceError::NotRegular(path.to_string()));
        }
        Ok((file, metadata.len()))
    }

    fn existing_file(&self, path: &str) -> Result<PathBuf, WorkspaceError> {
        let real = self.resolve(path)?;
        if !real.exists() {
            return Err(WorkspaceError::NotFound(path.to_string()));
        }
        if real.is_dir() {
            return Err(WorkspaceError::IsDirectory(path.to_string()));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(&dir.path().join("ws")).unwrap();
        (dir, ws)
    }

    #[test]
    fn files_are_written_read_edited_and_listed() {
        let (_dir, ws) = workspace();
        ws.write("notes/today.txt", "buy milk\nbuy bread\n").unwrap();
        assert_eq!(ws.read("notes/today.txt").unwrap(), "buy milk\nbuy bread\n");
        ws.edit("notes/today.txt", "milk", "oat milk").unwrap();
        assert_eq!(ws.read("./notes/today.txt").unwrap(), "buy oat milk\nbuy bread\n");
        assert_eq!(ws.edit("notes/today.txt", "buy", "get"), Err(WorkspaceError::EditAmbiguous("notes/today.txt".into(), 2)));
        assert_eq!(ws.edit("notes/today.txt", "eggs", "x"), Err(WorkspaceError::EditNoMatch("notes/today.txt".into())));
        ws.write("a.txt", "").unwrap();
        assert_eq!(ws.ls(".").unwrap(), vec!["a.txt", "notes/"]);
        assert_eq!(ws.read("missing.txt"), Err(WorkspaceError::NotFound("missing.txt".into())));
        assert_eq!(ws.read("notes"), Err(WorkspaceError::IsDirectory("notes".into())));
    }

    #[test]
    fn escapes_are_refused_before_touching_anything() {
        let (dir, ws) = workspace();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "secret").unwrap();
        assert_eq!(ws.read("../secret.txt"), Err(WorkspaceError::ParentComponent("../secret.txt".into())));
        assert_eq!(ws.read("a/../../secret.txt"), Err(WorkspaceError::ParentComponent("a/../../secret.txt".into())));
        let absolute = outside.to_string_lossy().into_owned();
        assert_eq!(ws.read(&absolute), Err(WorkspaceError::Absolute(absolute.clone())));
        assert_eq!(ws.write(&absolute, "x"), Err(WorkspaceError::Absolute(absolute)));

        // A symlink to a file outside, and one to a directory outside.
        std::os::unix::fs::symlink(&outside, ws.root().join("link.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), ws.root().join("up")).unwrap();
        assert_eq!(ws.read("link.txt"), Err(WorkspaceError::SymlinkEscape("link.txt".into())));
        assert_eq!(ws.write("link.txt", "pwned"), Err(WorkspaceError::SymlinkEscape("link.txt".into())));
        assert_eq!(ws.write("up/new.txt", "pwned"), Err(WorkspaceError::SymlinkEscape("up/new.txt".into())));
        assert_eq!(ws.ls("up"), Err(WorkspaceError::SymlinkEscape("up".into())));
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        assert!(!dir.path().join("new.txt").exists());

        // A symlink that stays inside is fine.
        ws.write("real.txt", "inside").unwrap();
        std::os::unix::fs::symlink(ws.root().join("real.txt"), ws.root().join("alias.txt")).unwrap();
        assert_eq!(ws.read("alias.txt").unwrap(), "inside");
    }

    #[test]
    fn only_regular_files_are_read_and_a_quota_caps_the_workspace() {
        let (_dir, ws) = workspace();
        let fifo = ws.root().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // A FIFO with no writer would block an open for reading forever.
        assert_eq!(ws.read("pipe"), Err(WorkspaceError::NotRegular("pipe".into())));
        assert_eq!(ws.edit("pipe", "a", "b"), Err(WorkspaceError::NotRegular("pipe".into())));

        let ws = ws.with_quota(1000);
        ws.write("a.txt", &"x".repeat(600)).unwrap();
        assert_eq!(ws.write("b.txt", &"x".repeat(600)), Err(WorkspaceError::OverQuota(1200, 1000)));
        // Replacing a file counts only the difference.
        ws.write("a.txt", &"y".repeat(900)).unwrap();
        assert!(ws.check_quota().is_ok());
        std::fs::write(ws.root().join("big.bin"), vec![0u8; 2000]).unwrap();
        assert!(matches!(ws.check_quota(), Err(WorkspaceError::OverQuota(2900, 1000))));
    }

    #[test]
    fn reads_of_huge_files_read_only_the_shown_part() {
        let (_dir, ws) = workspace();
        let file = std::fs::File::create(ws.root().join("huge.txt")).unwrap();
        // Sparse: 4 GiB on paper, nothing on disk; a whole-file read would need 4 GiB.
        file.set_len(4 << 30).unwrap();
        let text = ws.read("huge.txt").unwrap();
        assert!(text.contains(&format!("showing {MAX_READ_BYTES} of {} bytes", 4u64 << 30)), "{}", &text[text.len() - 60..]);
    }

    #[test]
    fn large_files_are_cut_and_oversized_writes_refused() {
        let (_dir, ws) = workspace();
        ws.write("big.txt", &"é".repeat(MAX_READ_BYTES)).unwrap();
        let text = ws.read("big.txt").unwrap();
        assert!(text.contains("[... cut: showing"), "no cut note");
        assert!(text.len() < MAX_READ_BYTES + 100);
        let huge = "x".repeat(MAX_WRITE_BYTES + 1);
        assert_eq!(ws.write("huge.txt", &huge), Err(WorkspaceError::TooLarge(MAX_WRITE_BYTES + 1)));
    }
}
