//! Configuration of `skillhive serve`: one clap struct, every option with an environment
//! fallback. Precedence is flag, then environment, then the default written here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// mistral.rs embedded in this process, on a local GGUF file.
    Mistralrs,
    /// A remote OpenAI-compatible endpoint.
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DType {
    /// 32-bit activations: the fast choice on CPUs without native f16 arithmetic.
    F32,
    /// Whatever mistral.rs picks for the device (F16/BF16 where supported).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// The file's own types, unless it holds Q5_0/Q5_1 tensors: then Q8_0.
    Auto,
    /// Q4_1, Q5_0 and Q5_1 tensors requantized to Q8_0.
    #[value(name = "q8_0")]
    Q8_0,
    /// Those tensors expanded to F32: fast prompt reading, slow decoding.
    F32,
    /// The file's own types (Q4_1 and Q8_0 have fast block kernels, for prompts too).
    /// `dual` (the blocks plus an F32 copy for prompts, until prompts ran as fast from the
    /// blocks) is still accepted and means this.
    #[value(alias = "dual")]
    AsShipped,
}

/// Where the commands that only touch the database find it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory holding the database, as for `serve`.
    #[arg(long, env = "SKILLHIVE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database URL, as for `serve`.
    #[arg(long, env = "SKILLHIVE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    pub async fn open(&self) -> anyhow::Result<crate::database::Database> {
        crate::database::Database::open(self.database_url.as_deref(), &self.data_dir).await
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "SKILLHIVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and other state.
    #[arg(long, env = "SKILLHIVE_DATA", default_value = "data")]
    pub data_dir: PathBuf,

    /// A PostgreSQL database (`postgres://user:password@host:port/name`) instead of the
    /// SQLite file in the data directory; several server nodes may share it.
    #[arg(long, env = "SKILLHIVE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Which inference backend serves requests.
    #[arg(long, env = "SKILLHIVE_BACKEND", value_enum, default_value = "mistralrs")]
    pub backend: Backend,

    /// GGUF model file for the embedded backend. Without it the default model
    /// (SmolLM2-135M-Instruct Q4_1) is used, fetched into the cache when absent.
    #[arg(long, env = "SKILLHIVE_MODEL")]
    pub model: Option<PathBuf>,

    /// The model name clients use. Defaults to the default model's name, or the file stem.
    #[arg(long, env = "SKILLHIVE_MODEL_ID")]
    pub model_id: Option<String>,

    /// Activation dtype of the embedded backend.
    #[arg(long, env = "SKILLHIVE_DTYPE", value_enum, default_value = "f32")]
    pub dtype: DType,

    /// How the embedded backend holds weights in memory. Repacked copies are written once
    /// to the cache, named by the source file's hash.
    #[arg(long, env = "SKILLHIVE_WEIGHTS", value_enum, default_value = "auto")]
    pub weights: Weights,

    /// Threads the embedded backend computes on (matrix products, attention). Defaults to
    /// one per core; fewer leave cores to the HTTP server and other work on the machine.
    #[arg(long, env = "SKILLHIVE_THREADS")]
    pub threads: Option<usize>,

    /// Finished sequences whose KV caches the embedded backend keeps, so that a prompt that
    /// begins like one of them (a shared system prompt, an earlier turn) reads only what
    /// follows. 0 turns the prefix cache off.
    #[arg(long, env = "SKILLHIVE_PREFIX_CACHE_ENTRIES", default_value_t = agent::engine::mistral::DEFAULT_PREFIX_CACHE_ENTRIES)]
    pub prefix_cache_entries: usize,

    /// Most sequences the embedded backend batches together.
    #[arg(long, env = "SKILLHIVE_MAX_BATCH", default_value_t = 16)]
    pub max_batch: usize,

    /// Cap on new tokens per request; requests asking for more are refused.
    #[arg(long, env = "SKILLHIVE_MAX_TOKENS", default_value_t = 1024)]
    pub max_tokens: usize,

    /// New tokens generated when a request names no limit (at most --max-tokens).
    #[arg(long, env = "SKILLHIVE_DEFAULT_MAX_TOKENS", default_value_t = 256)]
    pub default_max_tokens: usize,

    /// Base URL of the OpenAI-compatible backend, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, env = "SKILLHIVE_OPENAI_BASE_URL", required_if_eq("backend", "openai"))]
    pub openai_base_url: Option<String>,

    /// API key for the OpenAI-compatible backend.
    #[arg(long, env = "SKILLHIVE_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// Model name to request from the OpenAI-compatible backend.
    #[arg(long, env = "SKILLHIVE_OPENAI_MODEL", required_if_eq("backend", "openai"))]
    pub openai_model: Option<String>,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SKILLHIVE_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,

    /// Longest a request may take before it is answered with 408, in seconds.
    #[arg(long, env = "SKILLHIVE_REQUEST_TIMEOUT", default_value_t = 600)]
    pub request_timeout: u64,

    /// Seconds a client has to send a request's head (also between kept-alive requests)
    /// before its connection is closed.
    #[arg(long, env = "SKILLHIVE_HEADER_TIMEOUT", default_value_t = 30)]
    pub header_timeout: u64,

    /// Open connections at most; more wait in the listen backlog.
    #[arg(long, env = "SKILLHIVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Requests per minute each user may send (0: no limit).
    #[arg(long, env = "SKILLHIVE_USER_REQUESTS_PER_MINUTE", default_value_t = 600)]
    pub user_requests_per_minute: u32,

    /// Prompt plus completion tokens each user may use per UTC day (0: no limit).
    #[arg(long, env = "SKILLHIVE_USER_TOKENS_PER_DAY", default_value_t = 2_000_000)]
    pub user_tokens_per_day: u64,

    /// Chat completions and agent turns each user may run at once (0: no limit).
    #[arg(long, env = "SKILLHIVE_USER_CONCURRENT", default_value_t = 4)]
    pub user_concurrent: usize,

    /// The bubblewrap binary that agents' commands run under.
    #[arg(long, env = "SKILLHIVE_BWRAP", default_value = "bwrap")]
    pub bwrap: PathBuf,

    /// Run agents' commands directly on the host when bubblewrap is missing. Only the
    /// allowlist's argument rules then stand between a model and the host; without this
    /// flag, commands are refused where no sandbox can be made.
    #[arg(long, env = "SKILLHIVE_EXEC_UNSANDBOXED")]
    pub exec_unsandboxed: bool,

    /// Megabytes each user's workspace may hold.
    #[arg(long, env = "SKILLHIVE_WORKSPACE_QUOTA_MB", default_value_t = 256)]
    pub workspace_quota_mb: u64,

    /// Model steps an agent turn may take at most; a request may ask for fewer.
    #[arg(long, env = "SKILLHIVE_TURN_MAX_STEPS", default_value_t = 8)]
    pub turn_max_steps: usize,

    /// Seconds an agent turn may run at most; a request may ask for fewer.
    #[arg(long, env = "SKILLHIVE_TURN_MAX_SECONDS", default_value_t = 300)]
    pub turn_max_seconds: u64,

    /// Seeds every agent turn's sampling (a request may name its own seed).
    #[arg(long, env = "SKILLHIVE_TURN_SEED")]
    pub turn_seed: Option<u64>,

    /// How many of the skills most relevant to a request have their instructions put
    /// into the agent's prompt (0: only the catalog).
    #[arg(long, env = "SKILLHIVE_INLINE_SKILLS", default_value_t = 1)]
    pub inline_skills: usize,

    #[command(flatten)]
    pub evolver: EvolverArgs,
}

/// When the evolver runs and how strict it is.
#[derive(Debug, Clone, Args)]
pub struct EvolverArgs {
    /// Run the evolver every this many minutes (0: never on a timer).
    #[arg(long, env = "SKILLHIVE_EVOLVE_EVERY_MINUTES", default_value_t = 60)]
    pub evolve_every_minutes: u64,

    /// Run the evolver once this many finished sessions await it (0: never on a count).
    #[arg(long, env = "SKILLHIVE_EVOLVE_AFTER_SESSIONS", default_value_t = 20)]
    pub evolve_after_sessions: i64,

    /// Distinct users a group of sessions needs to count as a pattern.
    #[arg(long, env = "SKILLHIVE_EVOLVE_MIN_USERS", default_value_t = 2)]
    pub evolve_min_users: usize,

    /// Days after which evidence weighs half as much.
    #[arg(long, env = "SKILLHIVE_EVOLVE_HALF_LIFE_DAYS", default_value_t = 14.0)]
    pub evolve_half_life_days: f64,

    /// How much lower a candidate's replay score may be than the current version's.
    #[arg(long, env = "SKILLHIVE_EVOLVE_AB_THRESHOLD", default_value_t = 0.0)]
    pub evolve_ab_threshold: f64,

    /// Hold accepted candidates for an admin's approval instead of publishing them.
    #[arg(long, env = "SKILLHIVE_EVOLVE_REVIEW")]
    pub evolve_review: bool,
}

impl EvolverArgs {
    pub fn config(&self) -> evolver::EvolverConfig {
        evolver::EvolverConfig {
            min_distinct_users: self.evolve_min_users,
            half_life_days: self.evolve_half_life_days,
            ab_threshold: self.evolve_ab_threshold,
            review: self.evolve_review,
            ..Default::default()
        }
    }
}
