//! A cap on the processes one command may have, from the kernel's pids cgroup.
//!
//! A PID namespace hides other processes but does not stop a fork bomb from taking every
//! PID of the host (32,768 by default) for as long as it runs, and then every fork of
//! everyone else fails, the server's own threads included. RLIMIT_NPROC does not help:
//! the kernel ignores it for root and, for any other user, counts the server's own
//! threads against it. A pids cgroup does: each command runs in a fresh group whose
//! `pids.max` bounds it and everything it starts.
//!
//! The groups live under `skillhive/` in the pids hierarchy (cgroup v1's `pids` controller,
//! or v2's root with `pids` enabled). Where neither is writable (not root, no delegation),
//! commands run without the cap and [`describe`] says so.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The folder under which each command's group is made, if the host allows it.
fn parent() -> Option<&'static Path> {
    static PARENT: OnceLock<Option<PathBuf>> = OnceLock::new();
    PARENT
        .get_or_init(|| {
            // cgroup v1: a hierarchy of its own for the pids controller.
            let v1 = Path::new("/sys/fs/cgroup/pids/skillhive");
            if std::fs::create_dir_all(v1).is_ok() && v1.join("pids.max").exists() {
                return Some(v1.to_path_buf());
            }
            // cgroup v2: the unified root, with the controller handed down to our folder.
            let root = Path::new("/sys/fs/cgroup");
            let v2 = root.join("skillhive");
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "pids")
                && std::fs::write(root.join("cgroup.subtree_control"), "+pids").is_ok()
                && std::fs::create_dir_all(&v2).is_ok()
                && std::fs::write(v2.join("cgroup.subtree_control"), "+pids").is_ok()
            {
                return Some(v2);
            }
            None
        })
        .as_deref()
}

/// How commands' processes are capped on this host, for the operator's log.
pub fn describe() -> String {
    match parent() {
        Some(path) => format!("each command's processes are capped by a pids cgroup under {}", path.display()),
        None => "no pids cgroup is writable here: a command's processes are bounded only by its timeout".into(),
    }
}

/// One command's group; removed when dropped (once its processes are gone).
pub struct Group {
    path: PathBuf,
    /// `cgroup.procs` of the group, ready for the forked child to write itself into.
    procs: CString,
}

impl Group {
    /// A new group allowing at most `max` processes, or `None` where there are no groups.
    pub fn new(max: u32) -> Option<Group> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = parent()?;
        let path = parent.join(format!("exec-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let made = std::fs::create_dir(&path).and_then(|()| std::fs::write(path.join("pids.max"), max.to_string()));
        if let Err(error) = made {
            tracing::warn!(%error, group = %path.display(), "cannot make a pids cgroup for a command");
            let _ = std::fs::remove_dir(&path);
            return None;
        }
        let procs = CString::new(path.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()?;
        Some(Group { path, procs })
    }

    /// The group's `cgroup.procs`, for [`join_from_child`].
    pub fn procs(&self) -> CString {
        self.procs.clone()
    }
}

/// Moves the calling process into the group whose `cgroup.procs` is `procs`. Meant for a
/// forked child before exec: it only makes the async-signal-safe calls open, write, close.
pub fn join_from_child(procs: &std::ffi::CStr) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    // rustix makes the raw system calls, allocating nothing: safe in a forked child.
    let fd = rustix::fs::open(procs, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    if rustix::io::write(&fd, b"0")? != 1 {
        // An OS error code, not a message: a forked child must not allocate.
        return Err(rustix::io::Errno::IO.into());
    }
    Ok(())
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        // A killed sandbox's processes die a moment after the kill; the group can only be
        // removed once it is empty.
        let path = self.path.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                if std::fs::remove_dir(&path).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::warn!(group = %path.display(), "a command's pids cgroup could not be removed");
        });
    }
}
