//! The `exec` tool: runs a command in a user's workspace, bounded in every direction.
//!
//! - The sandbox is the boundary: the command runs under bubblewrap with only the user's
//!   workspace mounted (no other user's directory exists inside), the system read-only,
//!   no network, its own PID namespace, and resource limits (CPU time, file size, memory,
//!   open files). Where bubblewrap is missing, nothing runs unless the operator opted in
//!   to running commands unsandboxed.
//! - A policy decides what may run: nothing, an allowlist of harmless programs (run
//!   without a shell, each option checked against the program's own rules in
//!   [`rules`], every file name kept inside the workspace), or anything through `sh -c`.
//!   The allowlist is defence in depth, not the boundary.
//! - The environment is cleared; the working directory is the workspace.
//! - A timeout kills the whole sandbox; output beyond a cap is cut and the command
//!   killed, so a flood cannot fill memory or a model's context.

pub mod escapes;
pub mod pids;
pub mod rules;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Programs the default policy allows: they read, count and print, and cannot reach the
/// network or change anything outside the files named to them.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "cut", "tr", "echo", "printf", "date", "pwd", "diff", "stat", "du",
    "basename", "dirname", "true", "false", "seq",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecPolicy {
    /// No command runs.
    Deny,
    /// Only these programs, without a shell.
    Allowlist(Vec<String>),
    /// Any shell command line.
    Full,
}

impl Default for ExecPolicy {
    fn default() -> Self {
        ExecPolicy::Allowlist(DEFAULT_ALLOWLIST.iter().map(|s| s.to_string()).collect())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    pub timeout: Duration,
    /// Cap on stdout and on stderr, each.
    pub max_output_bytes: usize,
    /// Largest file a command may write (RLIMIT_FSIZE); a larger write kills it.
    pub max_file_bytes: u64,
    /// Address space of each process (RLIMIT_AS).
    pub max_memory_bytes: u64,
    /// Processes a command may have at once, itself included (a pids cgroup, see [`pids`]).
    pub max_processes: u32,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_output_bytes: 16 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            max_processes: 64,
        }
    }
}

/// Where commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// Under bubblewrap, this binary.
    Bubblewrap(PathBuf),
    /// Directly on the host, because the operator said so (`--exec-unsandboxed`). The
    /// allowlist's rules are then the only protection.
    Unsandboxed,
    /// Bubblewrap is missing or cannot make a sandbox here, and the operator did not opt
    /// in: every command is refused.
    Missing,
}

impl Sandbox {
    /// Bubblewrap at `bwrap` if it can make a sandbox here, else what the operator allows.
    pub fn detect(bwrap: &Path, allow_unsandboxed: bool) -> Self {
        if bubblewrap_works(bwrap) {
            Sandbox::Bubblewrap(bwrap.to_path_buf())
        } else if allow_unsandboxed {
            Sandbox::Unsandboxed
        } else {
            Sandbox::Missing
        }
    }
}

impl Default for Sandbox {
    /// `bwrap` from `PATH` when it works (checked once per process), else refuse.
    fn default() -> Self {
        static DETECTED: OnceLock<Sandbox> = OnceLock::new();
        DETECTED.get_or_init(|| Sandbox::detect(Path::new("bwrap"), false)).clone()
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when the command was killed (timeout or output cap).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub output_truncated: bool,
    /// Whether it ran under bubblewrap.
    pub sandboxed: bool,
}

impl ExecOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    #[error("running commands is disabled on this server")]
    Denied,
    #[error("`{0}` is not an allowed command; allowed: {1}")]
    NotAllowed(String, String),
    #[error("argument `{0}` names a path outside the workspace")]
    PathOutside(String),
    #[error("`{0}`: argument `{1}` is refused: {2}")]
    OptionRefused(String, String, String),
    #[error("running commands needs bubblewrap, which is not available on this server")]
    NoSandbox,
    #[error("the command line cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the command is empty")]
    Empty,
    #[error("the command could not be started: {0}")]
    Spawn(String),
}

/// Whether bubblewrap is installed at `bwrap` and can create a sandbox here (it needs
/// namespaces, which some containers forbid).
fn bubblewrap_works(bwrap: &Path) -> bool {
    std::process::Command::new(bwrap)
        .args(["--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks a command line against the policy and returns the argv to run.
pub fn plan(command: &str, policy: &ExecPolicy) -> Result<Vec<String>, ExecError> {
    match policy {
        ExecPolicy::Deny => Err(ExecError::Denied),
        ExecPolicy::Full => {
            if command.trim().is_empty() {
                return Err(ExecError::Empty);
            }
            Ok(vec!["sh".into(), "-c".into(), command.to_string()])
        }
        ExecPolicy::Allowlist(allowed) => {
            let argv = shell_words::split(command).map_err(|e| ExecError::Unparsable(e.to_string()))?;
            let program = argv.first().ok_or(ExecError::Empty)?;
            // A program without rules cannot be judged, so it is refused even when an
            // operator lists it.
            let program_rules = rules::rules_for(program).filter(|_| allowed.iter().any(|a| a == program));
            let program_rules = program_rules.ok_or_else(|| ExecError::NotAllowed(program.clone(), allowed.join(", ")))?;
            rules::check(program_rules, &argv[1..])?;
            Ok(argv)
        }
    }
}

/// Runs `command` in `workspace` under `policy`, `limits` and `sandbox`.
pub async fn run(
    workspace: &Path,
    command: &str,
    policy: &ExecPolicy,
    limits: ExecLimits,
    sandbox: &Sandbox,
) -> Result<ExecOutcome, ExecError> {
    let argv = plan(command, policy)?;
    let (mut process, sandboxed) = match sandbox {
        Sandbox::Missing => return Err(ExecError::NoSandbox),
        Sandbox::Bubblewrap(program) => {
            let mut bwrap = Command::new(program);
            for dir in ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/alternatives", "/etc/ld.so.cache"] {
                bwrap.args(["--ro-bind-try", dir, dir]);
            }
            bwrap
                .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind"])
                .arg(workspace)
                .args(["/workspace", "--chdir", "/workspace", "--unshare-all", "--die-with-parent", "--new-session", "--"])
                .args(&argv);
            (bwrap, true)
        }
        Sandbox::Unsandboxed => {
            let mut direct = Command::new(&argv[0]);
            direct.args(&argv[1..]).current_dir(workspace);
            (direct, false)
        }
    };
    use rustix::process::{Resource, Rlimit};
    let rlimits = [
        // CPU seconds past the wall-clock timeout cannot be used anyway; the limit stops
        // a busy loop that outlives a killed parent.
        (Resource::Cpu, limits.timeout.as_secs() + 1),
        (Resource::Fsize, limits.max_file_bytes),
        (Resource::As, limits.max_memory_bytes),
        (Resource::Nofile, 256),
        (Resource::Core, 0),
    ];
    let cap = pids::Group::new(limits.max_processes);
    let procs = cap.as_ref().map(pids::Group::procs);
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // open, write and close, which are async-signal-safe; it allocates nothing and touches
    // no memory the parent's threads could hold. (std offers no safe way to run code
    // between fork and exec, and these limits must bind the command itself.)
    #[allow(unsafe_code)]
    unsafe {
        process.pre_exec(move || {
            for (resource, value) in rlimits {
                rustix::process::setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) })?;
            }
            if let Some(procs) = &procs {
                pids::join_from_child(procs)?;
            }
            Ok(())
        });
    }
    process
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so that a timeout kills what the command started too.
        .process_group(0);
    process.env("HOME", if sandboxed { Path::new("/workspace") } else { workspace });
    let mut child = process.spawn().map_err(|e| ExecError::Spawn(e.to_string()))?;
    let group = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let cap = limits.max_output_bytes;
    let collect = async {
        let (out, err) = tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap));
        (out, err)
    };
    let (stdout, stderr, timed_out) = match tokio::time::timeout(limits.timeout, collect).await {
        Ok(((out, out_cut), (err, err_cut))) => {
            if out_cut || err_cut {
                kill_group(group);
            }
            ((out, out_cut), (err, err_cut), false)
        }
        Err(_) => {
            kill_group(group);
            ((Vec::new(), false), (Vec::new(), false), true)
        }
    };
    let output_truncated = stdout.1 || stderr.1;
    // A command that closed its output but goes on running is killed at the deadline too.
    let status = match tokio::time::timeout(limits.timeout, child.wait()).await {
        Ok(Ok(status)) => status.code(),
        _ => {
            kill_group(group);
            let _ = child.wait().await;
            None
        }
    };
    Ok(ExecOutcome {
        exit_code: if timed_out || output_truncated { None } else { status },
        stdout: String::from_utf8_lossy(&stdout.0).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.0).into_owned(),
        timed_out,
        output_truncated,
        sandboxed,
    })
}

fn kill_group(group: Option<u32>) {
    if let Some(pid) = group {
        // The group id is our child's pid, which `process_group(0)` made a group leader.
        if let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// Reads up to `cap` bytes; returns them and whether more was there.
async fn read_capped(reader: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, false),
            Ok(n) => {
                let room = cap - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
                if n > room || kept.len() >= cap {
                    return (kept, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ExecPolicy {
        ExecPolicy::Full
    }

    async fn run(workspace: &Path, command: &str, policy: &ExecPolicy, limits: ExecLimits) -> Result<ExecOutcome, ExecError> {
        super::run(workspace, command, policy, limits, &Sandbox::default()).await
    }

    #[test]
    fn the_allowlist_refuses_other_programs_and_outside_paths() {
        let policy = ExecPolicy::default();
        assert_eq!(plan("ls -la notes", &policy).unwrap(), vec!["ls", "-la", "notes"]);
        assert!(matches!(plan("rm -rf x", &policy), Err(ExecError::NotAllowed(p, _)) if p == "rm"));
        assert!(matches!(plan("/bin/ls", &policy), Err(ExecError::NotAllowed(_, _))));
        assert_eq!(plan("cat /etc/passwd", &policy), Err(ExecError::PathOutside("/etc/passwd".into())));
        assert_eq!(plan("cat ../other/secret", &policy), Err(ExecError::PathOutside("../other/secret".into())));
        assert_eq!(plan("grep --file=/etc/shadow x", &policy), Err(ExecError::PathOutside("--file=/etc/shadow".into())));
        assert_eq!(plan("echo 'unclosed", &policy), Err(ExecError::Unparsable("missing closing quote".into())));
        assert_eq!(plan("ls", &ExecPolicy::Deny), Err(ExecError::Denied));
        assert_eq!(plan("   ", &full()), Err(ExecError::Empty));
    }

    #[tokio::test]
    async fn commands_run_in_the_workspace_with_a_clean_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\ntwo\n").unwrap();
        let outcome = run(dir.path(), "wc -l a.txt", &ExecPolicy::default(), ExecLimits::default()).await.unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.stdout.trim(), "2 a.txt");
        std::env::set_var("SKILLHIVE_TEST_SECRET", "leak");
        let env = run(dir.path(), "env", &full(), ExecLimits::default()).await.unwrap();
        assert!(!env.stdout.contains("SKILLHIVE_TEST_SECRET"), "{}", env.stdout);
        let failing = run(dir.path(), "cat missing.txt", &ExecPolicy::default(), ExecLimits::default()).await.unwrap();
        assert_eq!(failing.exit_code, Some(1));
        assert!(failing.stderr.contains("missing.txt"));
    }

    #[tokio::test]
    async fn timeouts_and_floods_are_cut_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ExecLimits { timeout: Duration::from_millis(500), max_output_bytes: 4096, ..Default::default() };
        let started = std::time::Instant::now();
        let slow = run(dir.path(), "sleep 30 & sleep 30", &full(), limits).await.unwrap();
        assert!(slow.timed_out && slow.exit_code.is_none(), "{slow:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let flood = run(dir.path(), "yes", &full(), limits).await.unwrap();
        assert!(flood.output_truncated, "{flood:?}");
        assert_eq!(flood.stdout.len(), 4096);
        assert!(flood.exit_code.is_none());
    }

    #[tokio::test]
    async fn under_the_sandbox_only_the_workspace_is_writable() {
        // scripts/test installs bubblewrap, so this runs the sandbox for real.
        assert!(matches!(Sandbox::default(), Sandbox::Bubblewrap(_)), "bubblewrap is needed to run commands");
        let dir = tempfile::tempdir().unwrap();
        let outcome =
            run(dir.path(), "echo hi > made.txt; touch /usr/escape; cat /etc/passwd", &full(), ExecLimits::default()).await.unwrap();
        assert!(outcome.sandboxed);
        assert_eq!(std::fs::read_to_string(dir.path().join("made.txt")).unwrap(), "hi\n");
        assert!(outcome.stderr.contains("Read-only file system"), "{}", outcome.stderr);
        assert!(!Path::new("/usr/escape").exists());
        assert!(outcome.stderr.contains("/etc/passwd"), "system files outside the sandbox are not visible");
    }
}
