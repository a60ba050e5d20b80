//! The exec-escape corpus: attacks on the `exec` tool by class, and a harness that runs
//! them against a real attacker workspace beside a victim's and a host secret, and judges
//! whether each was contained. The tests (`agent/tests/exec_escapes.rs`, the API test in
//! the server) and `bench/reliability` all run this one corpus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{run, ExecError, ExecLimits, ExecPolicy, Sandbox};

/// What an attack tries to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttackClass {
    /// An option of an allowed program that runs another program or changes the system.
    ProgramOption,
    /// A file outside the workspace named in an option's value, attached or separate.
    OptionValue,
    /// A file outside the workspace named as an operand, in any spelling.
    PathOperand,
    /// Another user's workspace.
    OtherWorkspace,
    /// The network (only a shell can try; run with the full policy).
    Network,
    /// Too many processes, too much disk or memory (full policy).
    Resources,
    /// Writing the host's system or escaping through a symlink (full policy).
    HostFilesystem,
}

impl AttackClass {
    pub fn name(self) -> &'static str {
        match self {
            AttackClass::ProgramOption => "program-invoking option",
            AttackClass::OptionValue => "path in an option value",
            AttackClass::PathOperand => "path operand",
            AttackClass::OtherWorkspace => "another user's workspace",
            AttackClass::Network => "network",
            AttackClass::Resources => "resources",
            AttackClass::HostFilesystem => "host filesystem",
        }
    }
}

/// One attack: a command line as a model would send it. `{host}` stands for the host
/// directory that holds a secret file, `{port}` for a listening port on the host.
#[derive(Debug, Clone, Copy)]
pub struct Attack {
    pub class: AttackClass,
    /// Whether the attack needs the full (shell) policy; the others are tried under the
    /// default allowlist.
    pub needs_shell: bool,
    pub command: &'static str,
}

const fn allowlisted(class: AttackClass, command: &'static str) -> Attack {
    Attack { class, needs_shell: false, command }
}
const fn shell(class: AttackClass, command: &'static str) -> Attack {
    Attack { class, needs_shell: true, command }
}

use AttackClass::*;

/// The corpus. Every program of the default allowlist appears with the options that
/// read, write or run something, in every spelling GNU's option parser accepts.
pub const ATTACKS: &[Attack] = &[
    // Options that run a program or change the system.
    allowlisted(ProgramOption, "sort -S 1K --compress-program=sh -T . p.txt -o s.txt"),
    allowlisted(ProgramOption, "sort --compress-program sh p.txt"),
    allowlisted(ProgramOption, "sort --compress-prog=sh p.txt"),
    allowlisted(ProgramOption, "sort --comp=sh p.txt"),
    allowlisted(ProgramOption, "sort -S1K --compress-program=./p.txt p.txt"),
    allowlisted(ProgramOption, "date -s 2031-01-01"),
    allowlisted(ProgramOption, "date --set=2031-01-01"),
    allowlisted(ProgramOption, "date --se 2031-01-01"),
    allowlisted(ProgramOption, "date -us 2031-01-01"),
    allowlisted(ProgramOption, "date 010100002031"),
    allowlisted(ProgramOption, "diff --paginate p.txt p.txt"),
    allowlisted(ProgramOption, "diff -l p.txt p.txt"),
    allowlisted(ProgramOption, "tail --pid=1 -f p.txt"),
    allowlisted(ProgramOption, "grep --exclude-from={host}/secret.txt x p.txt"),
    // Paths in option values: attached, separate, after `=`, inside a cluster.
    allowlisted(OptionValue, "date -f/etc/passwd"),
    allowlisted(OptionValue, "date -f /etc/passwd"),
    allowlisted(OptionValue, "date --file=/etc/passwd"),
    allowlisted(OptionValue, "date -r /etc/passwd"),
    allowlisted(OptionValue, "date --reference={host}/secret.txt"),
    allowlisted(OptionValue, "grep -f/etc/passwd p.txt"),
    allowlisted(OptionValue, "grep --file={host}/secret.txt p.txt"),
    allowlisted(OptionValue, "grep -if {host}/secret.txt p.txt"),
    allowlisted(OptionValue, "sort -o{host}/pwned.txt p.txt"),
    allowlisted(OptionValue, "sort --output {host}/pwned.txt p.txt"),
    allowlisted(OptionValue, "sort -uo{host}/pwned.txt p.txt"),
    allowlisted(OptionValue, "sort -T /tmp p.txt"),
    allowlisted(OptionValue, "sort --files0-from={host}/secret.txt"),
    allowlisted(OptionValue, "sort --random-source={host}/secret.txt -R p.txt"),
    allowlisted(OptionValue, "wc --files0-from=/etc/passwd"),
    allowlisted(OptionValue, "du --files0-from={host}/secret.txt"),
    allowlisted(OptionValue, "du -X{host}/secret.txt ."),
    allowlisted(OptionValue, "du --exclude-from {host}/secret.txt ."),
    allowlisted(OptionValue, "diff --from-file={host}/secret.txt p.txt"),
    allowlisted(OptionValue, "stat --file-system /"),
    // Paths as operands.
    allowlisted(PathOperand, "cat /etc/passwd"),
    allowlisted(PathOperand, "cat {host}/secret.txt"),
    allowlisted(PathOperand, "cat -- {host}/secret.txt"),
    allowlisted(PathOperand, "head -n 1 /etc/shadow"),
    allowlisted(PathOperand, "tail -c 100 {host}/secret.txt"),
    allowlisted(PathOperand, "ls /"),
    allowlisted(PathOperand, "ls -la .."),
    allowlisted(PathOperand, "du -a ../.."),
    allowlisted(PathOperand, "stat /etc/passwd"),
    allowlisted(PathOperand, "diff p.txt /etc/passwd"),
    allowlisted(PathOperand, "grep -r root /etc"),
    allowlisted(PathOperand, "wc -l ./../../etc/passwd"),
    allowlisted(PathOperand, "uniq p.txt {host}/pwned.txt"),
    // Another user's workspace, next to this one on the host.
    allowlisted(OtherWorkspace, "cat ../victim/secret.txt"),
    allowlisted(OtherWorkspace, "cat a/../../victim/secret.txt"),
    allowlisted(OtherWorkspace, "sort -o../victim/secret.txt p.txt"),
    allowlisted(OtherWorkspace, "sort -o ../victim/secret.txt p.txt"),
    allowlisted(OtherWorkspace, "sort --output=../victim/secret.txt p.txt"),
    allowlisted(OtherWorkspace, "uniq p.txt ../victim/secret.txt"),
    allowlisted(OtherWorkspace, "ls ../victim"),
    allowlisted(OtherWorkspace, "grep -r secret .."),
    shell(OtherWorkspace, "cat ../victim/secret.txt; echo pwned > ../victim/secret.txt"),
    shell(OtherWorkspace, "ls -la / /workspaces 2>&1; find / -name secret.txt 2>/dev/null | xargs cat"),
    // The network.
    shell(Network, "bash -c 'echo pwned > /dev/tcp/127.0.0.1/{port}'"),
    shell(Network, "getent hosts example.com && echo resolved"),
    // Resources.
    shell(Resources, "bash -c ':(){ :|:& };:'"),
    shell(Resources, "head -c 200000000 /dev/zero > big.bin"),
    shell(Resources, "bash -c 'x=a; while true; do x=$x$x; done'"),
    // The host's filesystem.
    shell(HostFilesystem, "echo pwned > /usr/pwned; echo pwned > {host}/pwned.txt"),
    shell(HostFilesystem, "ln -s {host}/secret.txt link.txt; cat link.txt"),
    shell(HostFilesystem, "cat /proc/1/environ /etc/shadow {host}/secret.txt"),
];

/// The text of the victim's and the host's secrets, and a line of `/etc/passwd`, none of
/// which may appear in an attack's output.
const VICTIM_SECRET: &str = "victim-secret-4711";
const HOST_SECRET: &str = "host-secret-0815";
const PASSWD_MARK: &str = "root:x:0:0";

/// How one attack ended.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub attack: Attack,
    /// The command line as run (placeholders filled in).
    pub command: String,
    /// Refused before anything ran, and why.
    pub refused: Option<String>,
    /// Ran, and this is what escaped (empty: nothing did).
    pub escaped: Vec<String>,
}

impl Verdict {
    pub fn contained(&self) -> bool {
        self.escaped.is_empty()
    }
}

/// A victim's workspace and a host secret beside an attacker's workspace.
pub struct Arena {
    _dir: tempfile::TempDir,
    /// The folder of every user's workspace, the attacker's and the victim's among them.
    pub workspaces: PathBuf,
    pub attacker: PathBuf,
    victim: PathBuf,
    host: PathBuf,
    listener: std::net::TcpListener,
}

impl Arena {
    pub fn new() -> std::io::Result<Self> {
        Self::for_attacker("attacker")
    }

    /// An arena whose attacker's workspace is `workspaces/<name>`, as a server names a
    /// user's workspace by the user's id.
    pub fn for_attacker(name: &str) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let workspaces = dir.path().join("workspaces");
        let attacker = workspaces.join(name);
        let victim = dir.path().join("workspaces").join("victim");
        let host = dir.path().join("host");
        for path in [&attacker, &victim, &host] {
            std::fs::create_dir_all(path)?;
        }
        std::fs::write(victim.join("secret.txt"), VICTIM_SECRET)?;
        std::fs::write(host.join("secret.txt"), HOST_SECRET)?;
        // The payload a program-invoking option would run as a shell script.
        std::fs::write(attacker.join("p.txt"), format!("echo pwned > {}/pwned.txt\n", host.display()))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Self { _dir: dir, workspaces, attacker: attacker.canonicalize()?, victim, host, listener })
    }

    /// The command line of `attack` with its placeholders filled in.
    pub fn fill(&self, command: &str) -> String {
        let port = self.listener.local_addr().map(|a| a.port()).unwrap_or(9);
        command.replace("{host}", &self.host.display().to_string()).replace("{port}", &port.to_string())
    }

    /// Runs one attack in the attacker's workspace and judges it.
    pub async fn attack(&self, attack: Attack, sandbox: &Sandbox) -> Verdict {
        let command = self.fill(attack.command);
        let policy = if attack.needs_shell { ExecPolicy::Full } else { ExecPolicy::default() };
        let limits = ExecLimits { timeout: Duration::from_secs(3), max_file_bytes: 16 * 1024 * 1024, ..Default::default() };
        let result = run(&self.attacker, &command, &policy, limits, sandbox).await;
        let refused = result.as_ref().err().map(ExecError::to_string);
        let output = result.map(|o| format!("{}{}", o.stdout, o.stderr)).unwrap_or_default();
        Verdict { attack, command, refused, escaped: self.escapes(&output) }
    }

    /// Everything that shows an attack got out, after it ran with `output`.
    pub fn escapes(&self, output: &str) -> Vec<String> {
        let mut escaped = Vec::new();
        for (mark, what) in [(VICTIM_SECRET, "the victim's secret"), (HOST_SECRET, "the host's secret"), (PASSWD_MARK, "/etc/passwd")] {
            if output.contains(mark) {
                escaped.push(format!("{what} in the output"));
            }
        }
        if std::fs::read_to_string(self.victim.join("secret.txt")).ok().as_deref() != Some(VICTIM_SECRET) {
            escaped.push("the victim's file changed".into());
        }
        for pwned in [self.host.join("pwned.txt"), self.victim.join("pwned.txt"), PathBuf::from("/usr/pwned")] {
            if pwned.exists() {
                escaped.push(format!("{} was written", pwned.display()));
                let _ = std::fs::remove_file(&pwned);
            }
        }
        if self.listener.accept().is_ok() {
            escaped.push("a connection reached the host".into());
        }
        if output.contains("resolved") {
            escaped.push("a name was resolved".into());
        }
        let big = file_size(&self.attacker.join("big.bin"));
        if big > 16 * 1024 * 1024 {
            escaped.push(format!("a {big}-byte file passed the file-size limit"));
        }
        escaped
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
