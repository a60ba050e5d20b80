//! The command line: `skillhive serve` and `skillhive model pull`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use agent::engine::mistral::{ActivationDType, MistralRsEngine, MistralRsOptions};
use agent::engine::openai::{OpenAiEngine, OpenAiOptions};
use agent::engine::Engine;
use agent::model::{self, PullOutcome, DEFAULT_MODEL};

use crate::config::{Backend, DType, DatabaseArgs, ServeConfig, Weights};
use crate::database::Database;
use crate::http::{app, AppState, GenerationLimits, HttpLimits};
use crate::services::evolver::EvolverService;
use crate::services::skills::SkillRepo;
use crate::storage::skills::{load_starter_skills, starter_skills};
use crate::sync_client::{SyncClient, SyncOptions};
use agent::repack::{self, WeightFormat};

#[derive(Debug, Parser)]
#[command(name = "skillhive", version, about = "A server on which many users run agents that get better together.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(ServeConfig),
    /// Manage model files.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Import an OpenClaw transcript (JSONL v3) or a SkillClaw session record as a user's
    /// session; a malformed file imports nothing.
    Import {
        file: std::path::PathBuf,
        /// The user the session belongs to.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Run the evolver: mine finished sessions into better shared skills. Takes the same
    /// model and data options as `serve`.
    Evolve {
        /// One run, then exit (otherwise keep running on the schedule).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Keep a local skills folder in step with a server: installs and updates what the
    /// manifest lists, keeps local edits, never touches folders it did not install.
    Sync {
        /// The server's base URL.
        #[arg(long, env = "SKILLHIVE_SERVER")]
        server: String,
        /// An API token for the server.
        #[arg(long, env = "SKILLHIVE_TOKEN", hide_env_values = true)]
        token: String,
        /// The local skills folder.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Overwrite local edits and same-named folders sync did not install.
        #[arg(long)]
        force: bool,
        /// Also upload the OpenClaw session transcripts (`*.jsonl`) in this folder.
        #[arg(long)]
        push: Option<std::path::PathBuf>,
        /// Keep running, syncing again whenever the server publishes a change.
        #[arg(long)]
        watch: bool,
    },
    /// Work with skill folders offline.
    Skills {
        #[command(subcommand)]
        command: SkillsCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Reinforcement learning on the engine: train, list, promote and roll back policies.
    Rl {
        #[command(subcommand)]
        command: crate::rl_commands::RlCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SkillsCommand {
    /// Check a skill folder as the server checks a published bundle: each problem with its
    /// file, line and rule. Exits 1 when there is any.
    Validate {
        dir: std::path::PathBuf,
        /// Hold the skill to the AgentSkills reference validator's rules (`skills-ref
        /// validate`) instead of this server's lenient ones, which accept OpenClaw-style
        /// skills (flow-style `metadata`, extra frontmatter keys).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user and print its API token (shown only this once).
    Add {
        name: String,
        /// Let the user run admin operations.
        #[arg(long)]
        admin: bool,
        /// Also set a password for signing in from a browser: asked for on the terminal,
        /// or read as the first line of standard input (never an argument, which other
        /// users of the machine could see).
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a user's password for signing in from a browser (read as for `add --password`);
    /// their open browser sessions end.
    Passwd {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Add a user to a group, so they see and may publish the group's skills
    /// (scope `group:<GROUP>`).
    Join {
        name: String,
        group: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke every API token of a user; every server node refuses them within a second.
    Revoke {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Fetch the default model into the cache and verify its hash; does nothing when a
    /// verified copy is already there.
    Pull,
    /// Print where the default model is (or will be) stored.
    Path,
}

pub async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,mistralrs_core=warn,mistralrs=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => serve(config).await,
        Command::Evolve { once, config } => evolve(once, config).await,
        Command::Model { command: ModelCommand::Pull } => pull().await,
        Command::User { command: UserCommand::Add { name, admin, password, database } } => {
            add_user(&name, admin, password, &database).await
        }
        Command::User { command: UserCommand::Passwd { name, database } } => set_password(&name, &database).await,
        Command::Skills { command: SkillsCommand::Validate { dir, strict } } => return validate_skill_dir(&dir, strict),
        Command::User { command: UserCommand::Join { name, group, database } } => join_group(&name, &group, &database).await,
        Command::User { command: UserCommand::Revoke { name, database } } => revoke(&name, &database).await,
        Command::Import { file, user, database } => import(&file, &user, &database).await,
        Command::Rl { command } => crate::rl_commands::run(command).await,
        Command::Sync { server, token, dir, force, push, watch } => sync(SyncOptions { server, token, dir, force, push, watch }).await,
        Command::Model { command: ModelCommand::Path } => {
            println!("{}", model::default_model_path(&model::cache_dir()).display());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, the outermost context first, so the fix is the first thing read.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A new password from the terminal (not echoed) or from the first line of standard input.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ")?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    crate::services::accounts::check_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

async fn add_user(name: &str, admin: bool, password: bool, database: &DatabaseArgs) -> anyhow::Result<()> {
    // The password is read (and checked) before anything is created, so a refused one
    // leaves no half-made user behind.
    let password = if password { Some(crate::services::accounts::hash_password(&read_password()?)?) } else { None };
    let db = database.open().await?;
    let (user, token) = crate::http::auth::create_user_with_token(db.store.as_ref(), name, admin).await?;
    if let Some(hash) = &password {
        db.store.set_password(&user.id, Some(hash)).await?;
    }
    eprintln!("created user {} ({}){}", user.name, user.id, if admin { ", admin" } else { "" });
    // Only the token goes to stdout, so that scripts can capture it.
    println!("{token}");
    Ok(())
}

/// Prints each problem of a skill folder; the exit code says whether there was any.
fn validate_skill_dir(dir: &std::path::Path, strict: bool) -> ExitCode {
    use agent::skills::format::Strictness;
    let strictness = if strict { Strictness::Strict } else { Strictness::Lenient };
    let slug = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let files = match crate::storage::skills::read_skill_dir(dir) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("error: cannot read {}: {error:#}", dir.display());
            return ExitCode::from(2);
        }
    };
    let problems = agent::skills::bundle::check_bundle(&slug, &files, strictness);
    for problem in &problems {
        println!("{problem}");
    }
    if problems.is_empty() {
        println!("{slug}: valid{}", if strict { " (strict)" } else { "" });
        ExitCode::SUCCESS
    } else {
        eprintln!("{slug}: {} problem(s)", problems.len());
        ExitCode::FAILURE
    }
}

async fn set_password(name: &str, database: &DatabaseArgs) -> anyhow::Result<()> {
    let hash = crate::services::accounts::hash_password(&read_password()?)?;
    let db = database.open().await?;
    let user = db.store.user_by_name(name).await?.with_context(|| format!("no user named `{name}`"))?;
    db.store.set_password(&user.id, Some(&hash)).await?;
    eprintln!("set the password of {name}; their browser sessions ended");
    Ok(())
}

async fn join_group(name: &str, group: &str, database: &DatabaseArgs) -> anyhow::Result<()> {
    let db = database.open().await?;
    let user = db.store.user_by_name(name).await?.with_context(|| format!("no user named `{name}`"))?;
    db.skills.add_group_member(group, &user.id).await?;
    println!("{name} is a member of group:{group}");
    Ok(())
}

async fn revoke(name: &str, database: &DatabaseArgs) -> anyhow::Result<()> {
    let db = database.open().await?;
    let user = db.store.user_by_name(name).await?.with_context(|| format!("no user named `{name}`"))?;
    let revoked = db.store.revoke_tokens(&user.id).await?;
    println!("revoked {revoked} token(s) of {name}");
    Ok(())
}

async fn evolve(once: bool, config: ServeConfig) -> anyhow::Result<()> {
    let db = Database::open(config.database_url.as_deref(), &config.data_dir).await?;
    let skills = Arc::new(SkillRepo::new(db.skills.clone()));
    load_starter_skills(skills.store.as_ref(), starter_skills()).await?;
    let engine = build_engine(&config).await?;
    let service = EvolverService::scheduled(db.evolver.clone(), &skills, &config.evolver, exec_sandbox(&config));
    if !once {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        service.schedule(engine, skills, shutdown).await;
        return Ok(());
    }
    let (run_id, report) = service.evolver(engine).run_once("cli").await?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "run_id": run_id, "report": report }))?);
    Ok(())
}

async fn sync(options: SyncOptions) -> anyhow::Result<()> {
    let watch = options.watch;
    let client = SyncClient::new(options)?;
    if watch {
        return client.watch().await;
    }
    client.sync_once().await?.print();
    Ok(())
}

async fn import(file: &std::path::Path, user: &str, database: &DatabaseArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = agent::import::parse(&text).with_context(|| format!("{} cannot be imported", file.display()))?;
    let db = database.open().await?;
    let owner =
        db.store.user_by_name(user).await?.with_context(|| format!("no user named `{user}`; create it with `skillhive user add`"))?;
    match db.store.import_session(&owner.id, &imported).await? {
        Some(session) => println!("imported {} events as session {}", imported.events.len(), session.id),
        None => anyhow::bail!("the {} session `{}` was already imported", imported.source, imported.external_id),
    }
    Ok(())
}

async fn pull() -> anyhow::Result<()> {
    let cache = model::cache_dir();
    let outcome = tokio::task::spawn_blocking(move || model::pull_default(&cache)).await??;
    match outcome {
        PullOutcome::AlreadyPresent(path) => println!("{} already present at {}", DEFAULT_MODEL.id, path.display()),
        PullOutcome::Fetched(path) => println!("fetched {} to {}", DEFAULT_MODEL.id, path.display()),
    }
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    if let Some(threads) = config.threads {
        agent::engine::mistral::set_compute_threads(threads)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    run_server(config, listener, shutdown_signal()).await
}

/// The whole server on `listener` until `shutdown` resolves: the database in the data
/// directory, the starter skills, the engine, the evolver's schedule, the HTTP API; then
/// a graceful shutdown that ends feeds, background tasks and running turns. The `serve`
/// command runs it on its address and the process's signals; tests run it in-process.
pub async fn run_server(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown_requested: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let db = Database::open(config.database_url.as_deref(), &config.data_dir).await?;
    // This process's name among the nodes on the database, for the turns it runs.
    let node = uuid::Uuid::new_v4().to_string();
    db.store.heartbeat(&node).await.context("cannot record this node in the database")?;
    let interrupted = db.store.mark_interrupted_sessions(&node, db.node_timeout()).await.context("cannot mark interrupted sessions")?;
    if interrupted > 0 {
        tracing::warn!(interrupted, "sessions were running on a node that stopped; marked interrupted");
    }

    let skills = Arc::new(SkillRepo::new(db.skills.clone()));
    let loaded = load_starter_skills(skills.store.as_ref(), starter_skills()).await.context("cannot load the starter skills")?;
    if loaded > 0 {
        tracing::info!(loaded, "starter skills published to the shared repository");
    }
    // Cancelled on the shutdown signal: feeds end and background tasks stop.
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Publications by other processes (the CLI, an evolver) reach sync clients too.
    tokio::spawn(skills.clone().follow_changes(shutdown.clone()));
    let interval = crate::database::HEARTBEAT;
    tokio::spawn(crate::services::nodes::keep_alive(db.store.clone(), node.clone(), interval, db.node_timeout(), shutdown.clone()));

    let base = build_engine(&config).await?;
    // The embedded backend also serves the RL policies published in the data directory,
    // and the promoted one behind the default model id.
    let models = Arc::new(match config.backend {
        Backend::Mistralrs => crate::services::models::ModelRouter::with_policies(base, &config.data_dir.join("rl"))?,
        Backend::Openai => crate::services::models::ModelRouter::fixed(base),
    });
    tokio::spawn(models.clone().watch(Duration::from_secs(5), shutdown.clone()));
    let engine: Arc<dyn agent::engine::Engine> = models.clone();
    let exec_sandbox = exec_sandbox(&config);
    let evolver = EvolverService::scheduled(db.evolver.clone(), &skills, &config.evolver, exec_sandbox.clone());
    let quotas = Arc::new(crate::services::quota::Quotas::new(crate::services::quota::UsageLimits {
        requests_per_minute: config.user_requests_per_minute,
        tokens_per_day: config.user_tokens_per_day,
        concurrent_generations: config.user_concurrent,
    }));
    // Timed runs yield to users' generations like those started through the API.
    let yielding: Arc<dyn agent::engine::Engine> = Arc::new(crate::services::quota::YieldingEngine::new(engine.clone(), quotas.clone()));
    tokio::spawn(evolver.clone().schedule(yielding, skills.clone(), shutdown.clone()));
    let engine_window = engine.info().context_window;
    let state = AppState {
        accounts: Arc::new(crate::services::accounts::Accounts::new(db.store.clone())?),
        engine,
        models,
        store: db.store.clone(),
        // A default above the cap would make every request without a limit fail; the cap wins.
        limits: GenerationLimits {
            max_tokens_cap: config.max_tokens,
            default_max_tokens: config.default_max_tokens.min(config.max_tokens),
        },
        agent: Arc::new(
            crate::services::turns::AgentRuntime::new(
                config.data_dir.join("workspaces"),
                agent::agent_loop::AgentConfig {
                    context_window: engine_window.unwrap_or(8192),
                    exec_sandbox,
                    workspace_quota_bytes: config.workspace_quota_mb.saturating_mul(1024 * 1024),
                    max_steps: config.turn_max_steps.max(1),
                    max_wall_time: Duration::from_secs(config.turn_max_seconds.max(1)),
                    seed: config.turn_seed,
                    inline_skills: config.inline_skills,
                    ..Default::default()
                },
            )
            .on_node(node),
        ),
        skills,
        evolver,
        quotas,
        shutdown: shutdown.clone(),
    };
    let http = HttpLimits { body_bytes: config.body_limit, request_timeout: Duration::from_secs(config.request_timeout) };
    tokio::spawn(crate::services::nodes::follow_signals(state.store.clone(), state.skills.clone(), state.agent.clone(), shutdown.clone()));

    let address = listener.local_addr()?;
    // Printed on stdout, flushed, so that scripts and tests can read the bound port.
    println!("skillhive listening on http://{address}");
    std::io::stdout().flush()?;
    tracing::info!(%address, model = %state.engine.info().id, "serving");

    let connections = crate::http::server::ConnectionLimits {
        header_timeout: Duration::from_secs(config.header_timeout.max(1)),
        max_connections: config.max_connections.max(1),
        ..Default::default()
    };
    let agent = state.agent.clone();
    let signal = async move {
        shutdown_requested.await;
        shutdown.cancel();
        // Running turns stop at their next step and are recorded as cancelled, rather
        // than found interrupted at the next start.
        agent.cancel_all();
    };
    crate::http::server::serve(listener, app(state, http), connections, signal).await;
    tracing::info!("shut down");
    Ok(())
}

/// Where agents' commands run, said loudly when it is not a sandbox.
fn exec_sandbox(config: &ServeConfig) -> agent::exec::Sandbox {
    use agent::exec::Sandbox;
    let sandbox = Sandbox::detect(&config.bwrap, config.exec_unsandboxed);
    match &sandbox {
        Sandbox::Bubblewrap(path) => {
            tracing::info!(bwrap = %path.display(), processes = %agent::exec::pids::describe(), "agents' commands run under bubblewrap")
        }
        Sandbox::Unsandboxed => tracing::warn!(
            "bubblewrap is not available and --exec-unsandboxed is set: agents' commands run DIRECTLY ON THIS HOST, \
             guarded only by the allowlist's argument rules"
        ),
        Sandbox::Missing => tracing::warn!(
            bwrap = %config.bwrap.display(),
            "bubblewrap is not available: agents' commands are refused (install bubblewrap, or pass --exec-unsandboxed)"
        ),
    }
    sandbox
}

async fn build_engine(config: &ServeConfig) -> anyhow::Result<Arc<dyn Engine>> {
    match config.backend {
        Backend::Openai => {
            let model = config.openai_model.clone().context("--openai-model is required with --backend openai")?;
            let engine = OpenAiEngine::new(OpenAiOptions {
                base_url: config.openai_base_url.clone().context("--openai-base-url is required with --backend openai")?,
                api_key: config.openai_api_key.clone(),
                served_id: config.model_id.clone().unwrap_or_else(|| model.clone()),
                model,
                context_window: None,
                timeout: Duration::from_secs(config.request_timeout),
            })?;
            Ok(Arc::new(engine))
        }
        Backend::Mistralrs => {
            let (path, default_id) = match &config.model {
                Some(path) => {
                    model::check_gguf_file(path)?;
                    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    (path.clone(), stem)
                }
                None => (ensure_default_model().await?, DEFAULT_MODEL.id.to_string()),
            };
            let format = match config.weights {
                Weights::Auto => WeightFormat::Auto,
                Weights::Q8_0 => WeightFormat::Q8_0,
                Weights::F32 => WeightFormat::F32,
                Weights::AsShipped => WeightFormat::AsShipped,
            };
            let source = path.clone();
            let weights =
                tokio::task::spawn_blocking(move || repack::prepare(&model::cache_dir(), &source, format)).await?.with_context(|| {
                    format!(
                        "cannot read model {} (damaged or truncated?); run `skillhive model pull` or pass another --model",
                        path.display()
                    )
                })?;
            if weights != path {
                tracing::info!(repacked = %weights.display(), "using repacked weights");
            }
            let mut options = MistralRsOptions::new(weights, config.model_id.clone().unwrap_or(default_id));
            options.dtype = match config.dtype {
                DType::F32 => ActivationDType::F32,
                DType::Auto => ActivationDType::Auto,
            };
            options.max_batch = config.max_batch;
            options.prefix_cache_entries = config.prefix_cache_entries;
            tracing::info!(path = %path.display(), "loading model");
            // The loader can panic on a malformed file; running it as a task turns that
            // panic into an error we can report in one line.
            let engine = tokio::spawn(MistralRsEngine::load(options))
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "model file {} could not be loaded (malformed GGUF); run `skillhive model pull` or pass --model PATH",
                        path.display()
                    )
                })?
                .with_context(|| {
                    format!(
                        "cannot load model {} (damaged or truncated?); run `skillhive model pull` or pass another --model",
                        path.display()
                    )
                })?;
            Ok(Arc::new(engine))
        }
    }
}

/// The default model's path, fetched first when absent and verified when present.
pub(crate) async fn ensure_default_model() -> anyhow::Result<std::path::PathBuf> {
    let cache = model::cache_dir();
    let path = model::default_model_path(&cache);
    if path.exists() {
        let check = path.clone();
        tokio::task::spawn_blocking(move || model::verify_default(&check)).await??;
        return Ok(path);
    }
    tracing::info!(cache = %cache.display(), "default model absent; fetching it");
    let outcome = tokio::task::spawn_blocking(move || model::pull_default(&cache)).await??;
    Ok(outcome.path().to_path_buf())
}

/// Resolves on ctrl-c or SIGTERM, letting in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_server_runs_in_process_and_stops_when_asked_with_a_feed_open() {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap();
        // An inference backend where nothing answers: every endpoint that stores data works.
        let args = [
            "skillhive",
            "serve",
            "--data-dir",
            data_dir,
            "--backend",
            "openai",
            "--openai-base-url",
            "http://127.0.0.1:9/v1",
            "--openai-model",
            "none",
        ];
        let Cli { command: Command::Serve(config) } = Cli::try_parse_from(args).unwrap() else { panic!("not serve") };
        let db = Database::open(None, data.path()).await.unwrap();
        let (_, token) = crate::http::auth::create_user_with_token(db.store.as_ref(), "u", false).await.unwrap();
        drop(db);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_server(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let mut healthy = false;
        for _ in 0..200 {
            if client.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(healthy, "the server never answered /healthz");
        let feed = client.get(format!("{url}/api/sync/events")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(feed.status(), 200);

        let started = std::time::Instant::now();
        stop.send(()).unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "stopping took {:?}", started.elapsed());
    }
}
