//! One harness for the in-process API tests and the benchmarks: the whole application
//! state over a fresh SQLite database in a temporary directory, on whatever engine the
//! caller brings, so that no test file builds an `AppState` by hand.

use std::sync::Arc;

use agent::agent_loop::AgentConfig;
use agent::engine::Engine;
use evolver::EvolverConfig;

use crate::database::Database;
use crate::http::{app, AppState, GenerationLimits, HttpLimits};
use crate::services::evolver::EvolverService;
use crate::services::skills::SkillRepo;
use crate::services::turns::AgentRuntime;
use crate::storage::User;

pub struct TestApp {
    /// Holds the database, blobs and workspaces; removed on drop.
    pub dir: tempfile::TempDir,
    pub db: Database,
    pub state: AppState,
}

impl TestApp {
    /// The application on `engine` with default settings and small generation limits.
    pub async fn new(engine: Arc<dyn Engine>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = Database::sqlite(&dir.path().join("skillhive.db"), &dir.path().join("blobs")).await?;
        let skills = Arc::new(SkillRepo::new(db.skills.clone()));
        let state = AppState {
            models: Arc::new(crate::services::models::ModelRouter::fixed(engine.clone())),
            engine,
            store: db.store.clone(),
            limits: GenerationLimits { max_tokens_cap: 100, default_max_tokens: 16 },
            agent: Arc::new(AgentRuntime::new(dir.path().join("workspaces"), AgentConfig::default())),
            evolver: EvolverService::new(db.evolver.clone(), &skills, EvolverConfig::default()),
            skills,
            quotas: Default::default(),
            accounts: Arc::new(crate::services::accounts::Accounts::new(db.store.clone())?),
            shutdown: Default::default(),
        };
        Ok(Self { dir, db, state })
    }

    /// The agent configured as `config` says, workspaces kept in the test's directory.
    pub fn with_agent(mut self, config: AgentConfig) -> Self {
        self.state.agent = Arc::new(AgentRuntime::new(self.dir.path().join("workspaces"), config));
        self
    }

    pub fn with_evolver(mut self, config: EvolverConfig) -> Self {
        self.state.evolver = EvolverService::new(self.db.evolver.clone(), &self.state.skills, config);
        self
    }

    pub fn with_limits(mut self, limits: GenerationLimits) -> Self {
        self.state.limits = limits;
        self
    }

    /// The router over this state.
    pub fn router(&self) -> axum::Router {
        app(self.state.clone(), HttpLimits::default())
    }

    /// A new user and their API token.
    pub async fn user(&self, name: &str, admin: bool) -> anyhow::Result<(User, String)> {
        crate::http::auth::create_user_with_token(self.db.store.as_ref(), name, admin).await
    }

    /// For each `(user name, file, lines)`, a finished session of that (existing) user who
    /// counted the data rows of a CSV file with `wc -l`, answered right and rated the answer
    /// up: verifiable successes of several users, the pattern the evolver mines a new
    /// skill from.
    pub async fn counted_rows_sessions(&self, counts: &[(&str, &str, usize)]) -> anyhow::Result<()> {
        use agent::trajectory::{Event, StopReason};
        let store = &self.db.store;
        for &(name, file, lines) in counts {
            let owner = store.user_by_name(name).await?.ok_or_else(|| anyhow::anyhow!("no user `{name}`"))?;
            let session = store.create_session(&owner.id, "rows", "m").await?;
            let content: String = (0..lines).map(|i| format!("r{i},x\n")).collect();
            let arguments = serde_json::json!({ "command": format!("wc -l {file}") }).to_string();
            for event in [
                Event::UserMessage { text: format!("How many data rows does {file} have?") },
                Event::ToolCall { call_id: "c1".into(), name: "exec".into(), arguments },
                Event::InputFile { path: file.into(), content },
                Event::ToolResult {
                    call_id: "c1".into(),
                    name: "exec".into(),
                    ok: true,
                    exit_code: Some(0),
                    excerpt: format!("exit code 0\n{lines} {file}\n"),
                },
                Event::FinalAnswer { text: (lines - 1).to_string() },
                Event::Stop { reason: StopReason::FinalAnswer, detail: None },
            ] {
                store.append_event(&owner.id, &session.id, event.kind(), &serde_json::to_value(&event)?).await?;
            }
            store.add_feedback(&owner.id, &session.id, None, "up", None).await?;
        }
        Ok(())
    }
}

/// A private PostgreSQL server for tests and benchmarks: a fresh cluster in a temporary
/// directory on a free local port, stopped and removed on drop. Debian's `postgresql`
/// package provides the programs (the test script installs it).
pub mod postgres {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::Context;

    pub struct PgCluster {
        dir: tempfile::TempDir,
        bin: PathBuf,
        pub port: u16,
    }

    /// The directory holding `initdb` and `pg_ctl`: on the PATH, else Debian's.
    fn bin_dir() -> anyhow::Result<PathBuf> {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                    return Ok(dir);
                }
            }
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions
            .pop()
            .context("PostgreSQL is not installed (no initdb on the PATH or in /usr/lib/postgresql); install Debian's `postgresql`")
    }

    /// PostgreSQL refuses to run as root; as root it runs as the `postgres` user.
    fn command(bin: &Path, program: &str) -> Command {
        if rustix::process::geteuid().is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(bin.join(program));
            command
        } else {
            Command::new(bin.join(program))
        }
    }

    fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
        let output = command.output().with_context(|| format!("cannot run {what}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    impl PgCluster {
        /// Creates and starts a cluster whose superuser `skillhive` needs no password
        /// from this machine.
        pub fn start() -> anyhow::Result<Self> {
            let bin = bin_dir()?;
            let dir = tempfile::Builder::new().prefix("skillhive-pg-").tempdir()?;
            if rustix::process::geteuid().is_root() {
                run(
                    {
                        let mut c = Command::new("chown");
                        c.arg("-R").arg("postgres").arg(dir.path());
                        c
                    },
                    "chown",
                )?;
            }
            let data = dir.path().join("data");
            let mut initdb = command(&bin, "initdb");
            initdb.arg("-D").arg(&data).args(["-U", "skillhive", "--auth=trust", "--no-sync", "-E", "UTF8"]);
            run(initdb, "initdb")?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let cluster = Self { dir, bin, port };
            cluster.start_server()?;
            Ok(cluster)
        }

        fn start_server(&self) -> anyhow::Result<()> {
            let mut pg_ctl = command(&self.bin, "pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .arg("-o")
                .arg(format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", self.port, self.dir.path().display()))
                .args(["-w", "start"]);
            run(pg_ctl, "pg_ctl start")
        }

        /// Stops the server the way a crash would (no checkpoint, no clean shutdown),
        /// then starts it again: what was acknowledged must still be there.
        pub fn crash_and_restart(&self) -> anyhow::Result<()> {
            let mut pg_ctl = command(&self.bin, "pg_ctl");
            pg_ctl.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]);
            run(pg_ctl, "pg_ctl stop")?;
            self.start_server()
        }

        pub fn url(&self, database: &str) -> String {
            format!("postgres://skillhive@127.0.0.1:{}/{database}", self.port)
        }
    }

    impl Drop for PgCluster {
        fn drop(&mut self) {
            let mut pg_ctl = command(&self.bin, "pg_ctl");
            pg_ctl.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]);
            let _ = pg_ctl.output();
        }
    }

    /// A new, empty database: in the server named by `SKILLHIVE_TEST_POSTGRES` (a URL of
    /// a database its user may create databases from, as the test script sets), else in a
    /// private cluster started for the caller, returned with it so that it lives as long.
    pub async fn fresh_database() -> anyhow::Result<(Option<PgCluster>, String)> {
        let (cluster, admin_url) = match std::env::var("SKILLHIVE_TEST_POSTGRES") {
            Ok(url) => (None, url),
            Err(_) => {
                let cluster = tokio::task::spawn_blocking(PgCluster::start).await??;
                let url = cluster.url("postgres");
                (Some(cluster), url)
            }
        };
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut admin: sqlx::PgConnection =
            sqlx::Connection::connect(&admin_url).await.with_context(|| format!("cannot reach {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        let base = admin_url.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap_or(admin_url);
        Ok((cluster, format!("{base}/{name}")))
    }
}

/// The one scripted engine of the in-process tests: it answers from a script, then as
/// `Otherwise` says, and remembers every request it was asked.
pub mod scripted {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use agent::engine::{
        Choice, Engine, EngineError, EventStream, FinishReason, Generation, GenerationRequest, ModelInfo, StreamEvent, ToolCall, Usage,
    };
    use async_trait::async_trait;

    /// One scripted reply.
    pub enum Step {
        Reply(Choice),
        /// A model that never answers.
        Hang,
        /// A bug somewhere below the caller.
        Panic,
    }

    impl From<Choice> for Step {
        fn from(choice: Choice) -> Self {
            Step::Reply(choice)
        }
    }

    /// What the engine answers once its script is done.
    #[derive(Clone, Copy)]
    pub enum Otherwise {
        /// A chat model: `Hello there`, or a call of `read` when the request offers tools.
        Chat,
        /// An agent at the end of its work: the answer `done`; and where a grammar allows
        /// only an answer, that answer as JSON, as a real engine would write it.
        Done,
    }

    pub const USAGE: Usage = Usage { prompt_tokens: 7, completion_tokens: 2 };

    pub struct ScriptedEngine {
        info: ModelInfo,
        otherwise: Otherwise,
        script: Mutex<VecDeque<Step>>,
        /// How many of the next requests fail: a plain one at once, a streamed one after
        /// its first piece of text.
        failures: Mutex<usize>,
        /// Every request, in order.
        pub seen: Mutex<Vec<GenerationRequest>>,
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl ScriptedEngine {
        pub fn new(context_window: Option<usize>, otherwise: Otherwise, script: impl IntoIterator<Item = impl Into<Step>>) -> Self {
            Self {
                info: ModelInfo { id: "scripted".into(), context_window, backend: "mistralrs" },
                otherwise,
                script: Mutex::new(script.into_iter().map(Into::into).collect()),
                failures: Mutex::new(0),
                seen: Mutex::new(Vec::new()),
            }
        }

        /// The next `count` requests fail.
        pub fn fail_next(&self, count: usize) {
            *lock(&self.failures) = count;
        }

        fn take_failure(&self) -> bool {
            let mut failures = lock(&self.failures);
            let fail = *failures > 0;
            *failures = failures.saturating_sub(1);
            fail
        }

        /// The reply to `request`, the script first.
        async fn reply(&self, request: &GenerationRequest) -> Choice {
            if let (Otherwise::Done, Some(_)) = (self.otherwise, &request.json_schema) {
                return Choice { text: r#"{"answer": "what I found"}"#.into(), ..Default::default() };
            }
            let next = lock(&self.script).pop_front();
            match next {
                Some(Step::Reply(choice)) => choice,
                Some(Step::Hang) => std::future::pending().await,
                Some(Step::Panic) => panic!("scripted panic"),
                None => match self.otherwise {
                    Otherwise::Done => Choice { text: "done".into(), ..Default::default() },
                    Otherwise::Chat if request.offers_tools() => {
                        let call = ToolCall { id: "call_1".into(), name: "read".into(), arguments: r#"{"path":"a.txt"}"#.into() };
                        Choice { tool_calls: vec![call], finish_reason: Some(FinishReason::ToolCalls), ..Default::default() }
                    }
                    Otherwise::Chat => Choice { text: "Hello there".into(), finish_reason: Some(FinishReason::Stop), ..Default::default() },
                },
            }
        }
    }

    #[async_trait]
    impl Engine for ScriptedEngine {
        fn info(&self) -> &ModelInfo {
            &self.info
        }

        async fn generate(&self, request: GenerationRequest) -> Result<Generation, EngineError> {
            lock(&self.seen).push(request.clone());
            if self.take_failure() {
                return Err(EngineError::Backend("scripted failure".into()));
            }
            Ok(Generation { choices: vec![self.reply(&request).await], usage: USAGE })
        }

        async fn generate_stream(&self, request: GenerationRequest) -> Result<EventStream, EngineError> {
            lock(&self.seen).push(request.clone());
            if self.take_failure() {
                let events = vec![
                    Ok(StreamEvent::Delta { index: 0, text: "Hel".into(), logprobs: vec![] }),
                    Err(EngineError::Backend("scripted failure".into())),
                ];
                return Ok(Box::pin(futures::stream::iter(events)));
            }
            let choice = self.reply(&request).await;
            let mut events = Vec::new();
            // The text arrives in two pieces, as tokens would.
            let middle = choice.text.len() / 2;
            for piece in [&choice.text[..middle], &choice.text[middle..]] {
                if !piece.is_empty() {
                    events.push(Ok(StreamEvent::Delta { index: 0, text: piece.to_string(), logprobs: vec![] }));
                }
            }
            let reason = if choice.tool_calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls };
            if !choice.tool_calls.is_empty() {
                events.push(Ok(StreamEvent::ToolCalls { index: 0, calls: choice.tool_calls }));
            }
            events.push(Ok(StreamEvent::Finish { index: 0, reason }));
            events.push(Ok(StreamEvent::Usage(USAGE)));
            Ok(Box::pin(futures::stream::iter(events)))
        }

        async fn score(&self, _: &[u32], _: &[u32]) -> Result<Vec<f32>, EngineError> {
            Err(EngineError::InvalidRequest("not scripted".into()))
        }
    }
}
