//! Helpers for the end-to-end tests: start the real `skillhive` binary on an ephemeral
//! port with a temporary data directory, and stop it when the test ends.

pub mod load;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `skillhive` binary built alongside these tests (same profile, same target dir).
pub fn skillhive_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/skillhive
    let dir = exe.parent().and_then(Path::parent).expect("target profile directory");
    let binary = dir.join(format!("skillhive{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing; run the tests with `cargo test --release --workspace` so the binary is built",
        binary.display()
    );
    binary
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    /// API token of the user `tester`, created before the server started.
    pub token: String,
    pub data_dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `skillhive serve` with the default model and the given extra arguments.
    pub fn start(extra_args: &[&str]) -> Server {
        Self::start_with_env(extra_args, &[])
    }

    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let token = add_user(data_dir.path(), "tester");
        Self::launch(data_dir, token, extra_args, env)
    }

    /// Starts a server on an existing data directory (after [`Server::kill`]).
    pub fn launch(data_dir: tempfile::TempDir, token: String, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(skillhive_binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn skillhive");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let stderr_text = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[server] {line}");
                    stderr_text.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("skillhive listening on ") {
                    let _ = sender.send(url.trim().to_string());
                }
            }
        });
        let url = match receiver.recv_timeout(Duration::from_secs(300)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; stderr:\n{}", stderr_text.lock().unwrap());
            }
        };
        Server { child, url, token, data_dir, stderr: stderr_text }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL (no chance to clean up) and hands back its data
    /// directory and token, to start it again with [`Server::launch`].
    pub fn kill(mut self) -> (tempfile::TempDir, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temp dir"));
        (data_dir, std::mem::take(&mut self.token))
    }

    /// Sends SIGTERM and waits for the process; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Creates a user in a data directory with `skillhive user add` and returns its token.
pub fn add_user(data_dir: &Path, name: &str) -> String {
    add_user_with(data_dir, name, &[])
}

/// Creates an admin user and returns its token.
pub fn add_admin(data_dir: &Path, name: &str) -> String {
    add_user_with(data_dir, name, &["--admin"])
}

fn add_user_with(data_dir: &Path, name: &str, flags: &[&str]) -> String {
    let output = Command::new(skillhive_binary())
        .args(["user", "add", name, "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .output()
        .expect("run skillhive user add");
    assert!(output.status.success(), "user add failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("token is text").trim().to_string()
}

/// Creates a user who also signs in with `password` (read by `user add --password` from
/// standard input, as a script would give it); returns its token.
pub fn add_user_with_password(data_dir: &Path, name: &str, password: &str, admin: bool) -> String {
    use std::io::Write;
    let mut command = Command::new(skillhive_binary());
    command.args(["user", "add", name, "--password", "--data-dir"]).arg(data_dir);
    if admin {
        command.arg("--admin");
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run skillhive user add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password written");
    let output = child.wait_with_output().expect("user add finished");
    assert!(output.status.success(), "user add failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("token is text").trim().to_string()
}

/// Runs one browser scenario of `tests/web/ui_test.py` (Playwright driving Debian's
/// Chromium) against the server at `base` with `fixture` (what the scenario needs to know:
/// users, ids). Its screenshots go to `tests/web/artifacts/<scenario>/`. Panics with the
/// scenario's output when it fails.
pub fn browser_scenario(scenario: &str, base: &str, fixture: &serde_json::Value) {
    let python =
        std::env::var("SKILLHIVE_TEST_PYTHON").unwrap_or_else(|_| repo_root().join(".venv/bin/python").to_string_lossy().into_owned());
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture_path = dir.path().join("fixture.json");
    std::fs::write(&fixture_path, fixture.to_string()).expect("fixture written");
    let artifacts = repo_root().join("tests/web/artifacts").join(scenario);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let output = Command::new(&python)
        .arg(repo_root().join("tests/web/ui_test.py"))
        .args([scenario, "--base", base, "--fixture"])
        .arg(&fixture_path)
        .arg("--artifacts")
        .arg(&artifacts)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} ({e}); scripts/test creates .venv with playwright"));
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{printed}");
    assert!(output.status.success(), "browser scenario `{scenario}` failed:\n{printed}");
}

/// The model name the default server serves.
pub const MODEL: &str = "SmolLM2-135M-Instruct-Q4_1";

/// The repository root, for scripts and fixtures.
pub fn repo_root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR for the tests it runs; the one compiled in may name
    // another checkout that shared this target directory.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().expect("repo root").to_path_buf()
}

/// An HTTP client for the tests; generous timeout, since turns run on the real model.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().expect("http client")
}

/// Calls the server's API as the holder of `token`: the status and the JSON body (the
/// body as a string when it is not JSON).
pub async fn call(
    method: reqwest::Method,
    server: &Server,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = client().request(method, format!("{}{path}", server.url)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Runs the real `clawhub` CLI (pinned in `tests/clawhub`) against `registry`.
pub fn clawhub(workdir: &Path, config: &Path, registry: &str, args: &[&str]) -> std::process::Output {
    let cli = repo_root().join("tests/clawhub/node_modules/.bin/clawhub");
    assert!(cli.exists(), "{} is missing: `bash scripts/test` installs it (npm ci in tests/clawhub)", cli.display());
    let output = Command::new(cli)
        .args(["--registry", registry, "--workdir"])
        .arg(workdir)
        .arg("--no-input")
        .args(args)
        .env("CLAWHUB_CONFIG_PATH", config)
        .env("CLAWHUB_DISABLE_TELEMETRY", "1")
        .output()
        .expect("run clawhub");
    eprintln!("clawhub {args:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    output
}

/// Runs a `skillhive` subcommand that touches only the database at `database_url`;
/// its standard output, after checking it succeeded.
pub fn skillhive_on(database_url: &str, args: &[&str]) -> String {
    let output = Command::new(skillhive_binary()).args(args).args(["--database-url", database_url]).output().expect("run skillhive");
    assert!(output.status.success(), "skillhive {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("text").trim().to_string()
}
