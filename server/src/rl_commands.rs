//! `skillhive rl …`: train a policy on the shared engine, list the published policies, and
//! promote or roll back the one that serves the default model id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use agent::engine::Engine;
use agent::model;
use agent::repack::{self, WeightFormat};
use rl::episode::EpisodeLimits;
use rl::grpo::{GrpoConfig, GrpoRun, Methods};
use rl::policy::{BaseModel, LoraConfig, LoraTarget};
use rl::registry::{Gate, PolicyRegistry, PolicyState, Promotion};
use rl::rollout::SamplingConfig;
use rl::runs::RunDir;
use rl::task::Task;
use rl::trainer::{Trainer, TrainerConfig};

#[derive(Debug, Subcommand)]
pub enum RlCommand {
    /// Train a policy with GRPO on tasks with verifiable rewards. Each step samples from the
    /// engine serving the current policy, updates LoRA adapters on the CPU and publishes the
    /// update back into the engine. A run with a checkpoint resumes where it stopped; the
    /// final policy is published as a candidate.
    Train(TrainArgs),
    /// List the published policies and which one serves the default model id.
    Policies(RlDir),
    /// Make a policy the default, if it scores at least as well as the current default on
    /// held-out tasks (the same draws for both).
    Promote {
        /// The policy's id (see `skillhive rl policies`).
        id: String,
        #[command(flatten)]
        tasks: TaskArgs,
        /// Samples per held-out task and side.
        #[arg(long, default_value_t = 16)]
        samples: usize,
        #[arg(long, default_value_t = 8)]
        max_new_tokens: usize,
        /// Replies per episode of an agent task at most.
        #[arg(long, default_value_t = 4)]
        max_turns: usize,
        #[command(flatten)]
        dir: RlDir,
    },
    /// Restore the default before the current one (the base model if there was none).
    Rollback(RlDir),
    /// Publish a LoRA adapter trained elsewhere (PEFT's format: `adapter_config.json`,
    /// `adapter_model.safetensors`) as a candidate policy.
    ImportPeft {
        /// The adapter's folder.
        dir: PathBuf,
        /// The policy id to publish it under.
        #[arg(long)]
        id: String,
        /// The base model it was trained on (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        dir_args: RlDir,
    },
    /// Write a run's adapter in PEFT's format, to continue training it with TRL or verl.
    ExportPeft {
        #[arg(long)]
        run: String,
        #[arg(long)]
        out: PathBuf,
        /// The Hugging Face name of the base model, recorded in the adapter's configuration.
        #[arg(long, default_value = "HuggingFaceTB/SmolLM2-135M-Instruct")]
        base_name: String,
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        dir_args: RlDir,
    },
    /// Write training data for verl or TRL as JSON Lines: tasks from a file, or harvested
    /// from users' rated sessions (only requests at least `--min-users` users asked, with
    /// the answer that many users' successes agree on; anything secret dropped).
    Export {
        /// `verl` (RL tasks), `verl-agent-loop` (episodes of the tasks rolled out on the
        /// default model, as token ids with the response mask), `trl-grpo` (RL prompts),
        /// `trl-sft` (tasks answered with their exact answers), `trl-kto` (rated answers;
        /// harvest only) or `trl-dpo` (preference pairs from the evolver's A/B replays;
        /// harvest only).
        #[arg(long)]
        format: String,
        /// Export the tasks of this JSON Lines file.
        #[arg(long, conflicts_with = "harvest")]
        tasks: Option<PathBuf>,
        /// Harvest from the sessions the evolver recorded.
        #[arg(long)]
        harvest: bool,
        #[arg(long, default_value_t = 3)]
        min_users: usize,
        /// Episodes per task (`verl-agent-loop`).
        #[arg(long, default_value_t = 4)]
        samples: usize,
        /// Tokens per reply at most (`verl-agent-loop`).
        #[arg(long, default_value_t = 48)]
        max_new_tokens: usize,
        /// The training method whose sequences to write (`verl-agent-loop`): `grpo` writes
        /// episodes with their rewards; the others (or several joined by `+`) write what
        /// the methods train on.
        #[arg(long, default_value = "grpo")]
        method: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        database: crate::config::DatabaseArgs,
    },
}

#[derive(Debug, Args)]
pub struct RlDir {
    /// The server's data directory; RL state lives in its `rl` folder.
    #[arg(long, env = "SKILLHIVE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
}

impl RlDir {
    fn rl(&self) -> PathBuf {
        self.data_dir.join("rl")
    }
    fn registry(&self) -> anyhow::Result<PolicyRegistry> {
        PolicyRegistry::open(&self.rl().join("policies"))
    }
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// A built-in task: `pick-a-number` (answer with a number from 2 to 9).
    #[arg(long)]
    task: Option<String>,
    /// A JSON Lines file of tasks: `{"id", "messages": [{"role", "content"}], "verifier":
    /// {"kind": "exact_answer", "answer"} | {"kind": "contains", "text"} | {"kind":
    /// "integer_in_range", "min", "max"}}`.
    #[arg(long, conflicts_with = "task")]
    tasks: Option<PathBuf>,
}

impl TaskArgs {
    fn load(&self) -> anyhow::Result<Vec<Task>> {
        match (&self.task, &self.tasks) {
            (Some(name), None) => match name.as_str() {
                "pick-a-number" => Ok(vec![Task::pick_a_number()]),
                other => bail!("no built-in task `{other}`; the built-in task is `pick-a-number`"),
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                let tasks: Vec<Task> = text
                    .lines()
                    .enumerate()
                    .filter(|(_, line)| !line.trim().is_empty())
                    .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{} line {}: not a task", path.display(), i + 1)))
                    .collect::<anyhow::Result<_>>()?;
                if tasks.is_empty() {
                    bail!("{} holds no tasks", path.display());
                }
                Ok(tasks)
            }
            _ => bail!("name the tasks: --task pick-a-number or --tasks FILE.jsonl"),
        }
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run's name; its metrics, checkpoint and plot go to `{data}/rl/runs/{run}`.
    #[arg(long)]
    run: String,
    #[command(flatten)]
    tasks: TaskArgs,
    /// Updates to make in this invocation.
    #[arg(long, default_value_t = 4)]
    steps: u64,
    /// Samples per task and step.
    #[arg(long, default_value_t = 16)]
    group: usize,
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Layers that get adapters: q, k, v, o, gate, up, down (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "q,v")]
    targets: Vec<String>,
    /// Weight of the KL penalty against the base model (it is measured either way).
    #[arg(long, default_value_t = 0.0)]
    kl_coef: f64,
    /// Tokens per reply at most.
    #[arg(long, default_value_t = 8)]
    max_new_tokens: usize,
    /// Replies per episode of an agent task (a task with tools) at most.
    #[arg(long, default_value_t = 4)]
    max_turns: usize,
    /// Tokens of an agent episode's whole sequence at most.
    #[arg(long, default_value_t = 1024)]
    max_episode_tokens: usize,
    /// `grpo`, `actguide` (hard groups re-sampled with the shortest helpful prefix of the
    /// task's `actions`), `role-agent` (predicted tool results shape rewards; failed tasks
    /// are drawn more often), `appo` (branches at uncertain tokens of replies, inside agent
    /// episodes too) or `resum` (branches with and without the summarization phrase); or
    /// several joined by `+` (`actguide+role-agent+appo`; at most one of appo and resum).
    #[arg(long, default_value = "grpo")]
    method: String,
    /// Give each task without `actions` the plan that at least `--min-users` users'
    /// successful sessions of the same request took on the same files (from the sessions
    /// the evolver recorded): ActGuide's guidance from other users' work.
    #[arg(long)]
    actions_from_sessions: bool,
    #[arg(long, default_value_t = 3)]
    min_users: usize,
    /// A PostgreSQL database URL, as for `serve` (`--actions-from-sessions`).
    #[arg(long, env = "SKILLHIVE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Branch points per task and step (`appo`, `resum`).
    #[arg(long, default_value_t = 2)]
    branches: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The base model (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    dir: RlDir,
}

pub async fn run(command: RlCommand) -> anyhow::Result<()> {
    match command {
        RlCommand::Train(args) => train(args).await,
        RlCommand::Policies(dir) => policies(&dir),
        RlCommand::Promote { id, tasks, samples, max_new_tokens, max_turns, dir } => {
            let limits = EpisodeLimits { max_turns, ..Default::default() };
            promote(&id, &tasks, samples, max_new_tokens, &limits, &dir).await
        }
        RlCommand::Export { format, tasks, harvest, min_users, samples, max_new_tokens, method, out, database } => {
            let methods = Methods::parse(&method).map_err(anyhow::Error::msg)?;
            let source = ExportSource { tasks: tasks.as_deref(), harvest, min_users, samples, max_new_tokens, methods };
            export(&format, &source, &out, &database).await
        }
        RlCommand::ImportPeft { dir, id, model, dir_args } => {
            let path = base_model_path(&model).await?;
            let base = BaseModel::load(&path)?;
            let adapters = rl::peft::import(&dir, &base)?;
            let registry = dir_args.registry()?;
            let staged = registry.dir().join(format!(".{id}.staged"));
            rl::publish::write_policy(&base, Some(&adapters), &staged)?;
            registry.register(&staged, &id, &path, "peft-import", 0)?;
            println!("published `{id}` as a candidate from {}", dir.display());
            Ok(())
        }
        RlCommand::ExportPeft { run, out, base_name, model, dir_args } => {
            let path = base_model_path(&model).await?;
            let base = Arc::new(BaseModel::load(&path)?);
            let checkpoint = RunDir::open(&dir_args.rl(), &run)?.checkpoint();
            if !checkpoint.join("state.json").exists() {
                bail!("run `{run}` has no checkpoint to export");
            }
            let trainer = Trainer::resume(base.clone(), &checkpoint)?;
            rl::peft::export(&trainer.adapters, &base, &base_name, &out)?;
            println!("wrote the adapter of `{run}` after step {} to {}", trainer.step(), out.display());
            Ok(())
        }
        RlCommand::Rollback(dir) => {
            match dir.registry()?.rollback()? {
                Some(id) => println!("the default is `{id}` again"),
                None => println!("the base model serves the default id again"),
            }
            Ok(())
        }
    }
}

async fn base_model_path(model: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match model {
        Some(path) => {
            model::check_gguf_file(path)?;
            Ok(path.clone())
        }
        None => crate::cli::ensure_default_model().await,
    }
}

async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let mut tasks = args.tasks.load()?;
    if args.actions_from_sessions {
        let database = crate::config::DatabaseArgs { data_dir: args.dir.data_dir.clone(), database_url: args.database_url.clone() };
        let attached = attach_harvested_actions(&mut tasks, &database, args.min_users).await?;
        eprintln!("reference actions from users' sessions for {attached} of {} task(s)", tasks.len());
    }
    let targets: Vec<LoraTarget> = args
        .targets
        .iter()
        .map(|t| LoraTarget::parse(t.trim()).with_context(|| format!("`{t}` is not a layer (q, k, v, o, gate, up, down)")))
        .collect::<anyhow::Result<_>>()?;
    if args.group < 2 {
        bail!("--group must be at least 2: advantages compare samples within a group");
    }
    let path = base_model_path(&args.model).await?;
    let run_dir = RunDir::open(&args.dir.rl(), &args.run)?;
    eprintln!("loading {} for training", path.display());
    let load = path.clone();
    let base = Arc::new(tokio::task::spawn_blocking(move || BaseModel::load(&load)).await??);

    let checkpoint = run_dir.checkpoint();
    let trainer = if checkpoint.join("state.json").exists() {
        let trainer = Trainer::resume(base.clone(), &checkpoint)?;
        eprintln!("resuming run `{}` after step {}", args.run, trainer.step());
        trainer
    } else {
        let lora = LoraConfig { rank: args.rank, alpha: args.alpha, targets };
        let config = TrainerConfig { learning_rate: args.lr, kl_coef: args.kl_coef, ..Default::default() };
        Trainer::new(base.clone(), lora, config, args.seed)?
    };
    let methods = Methods::parse(&args.method).map_err(anyhow::Error::msg)?;
    let config = GrpoConfig {
        methods,
        branches: args.branches,
        group_size: args.group,
        sampling: SamplingConfig { max_new_tokens: args.max_new_tokens, temperature: 1.0 },
        limits: EpisodeLimits { max_turns: args.max_turns, max_tokens: args.max_episode_tokens, ..Default::default() },
        seed: args.seed,
        ..Default::default()
    };
    let mut run = GrpoRun::start(trainer, config, &args.run, &run_dir.scratch()).await?;
    run.load_method_state(&checkpoint)?;

    let bar = indicatif::ProgressBar::new(args.steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed_precise} elapsed, {eta} left  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for _ in 0..args.steps {
        let report = run.step(&tasks).await?;
        run.trainer.save_checkpoint(&checkpoint)?;
        run.save_method_state(&checkpoint)?;
        run_dir.record(&report)?;
        // Without a terminal the bar draws nothing, and neither would its println.
        if bar.is_hidden() {
            eprintln!("{}", report.line());
        } else {
            bar.println(report.line());
        }
        bar.set_message(format!("reward {:.2}", report.metrics.reward_mean));
        bar.inc(1);
    }
    bar.finish();

    let step = run.trainer.step();
    let id = format!("{}-step{step}", args.run);
    let registry = args.dir.registry()?;
    if registry.get(&id)?.is_some() {
        println!("policy `{id}` was published before; nothing new to publish");
        return Ok(());
    }
    let staged = registry.dir().join(format!(".{id}.staged"));
    rl::publish::write_policy(&base, Some(&run.trainer.adapters), &staged)?;
    registry.register(&staged, &id, &path, &args.run, step)?;
    println!("published `{id}` as a candidate (metrics: {})", run_dir.metrics_path().display());
    println!("promote it with: skillhive rl promote {id} --task … (or --tasks held-out.jsonl)");
    Ok(())
}

fn policies(dir: &RlDir) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let policies = registry.list()?;
    if policies.is_empty() {
        println!("no policies published; train one with `skillhive rl train`");
        return Ok(());
    }
    println!("{:<32} {:<10} {:<20} {:>6}  gate (candidate vs incumbent)", "id", "state", "run", "step");
    for policy in policies {
        let state = match policy.state {
            PolicyState::Candidate => "candidate",
            PolicyState::Default => "default",
            PolicyState::Previous => "previous",
            PolicyState::Retired => "retired",
        };
        let gate =
            policy.gate.map(|g| format!("{:.3} vs {:.3} over {}", g.candidate_reward, g.incumbent_reward, g.samples)).unwrap_or_default();
        println!("{:<32} {:<10} {:<20} {:>6}  {gate}", policy.id, state, policy.run, policy.step);
    }
    Ok(())
}

async fn load_engine(path: &Path, id: &str) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(Arc::new(rl::publish::load_policy_engine(path, id).await?))
}

async fn promote(
    id: &str,
    tasks: &TaskArgs,
    samples: usize,
    max_new_tokens: usize,
    limits: &EpisodeLimits,
    dir: &RlDir,
) -> anyhow::Result<()> {
    let tasks = tasks.load()?;
    let registry = dir.registry()?;
    let candidate = registry.get(id)?.with_context(|| format!("no policy `{id}` (see `skillhive rl policies`)"))?;
    let incumbent_path = match registry.default_policy()? {
        Some(current) => registry.path_of(&current),
        // The base model as the server serves it by default.
        None => {
            let base = candidate.base_model.clone();
            tokio::task::spawn_blocking(move || repack::prepare(&model::cache_dir(), &base, WeightFormat::Auto)).await??
        }
    };
    let sampling = SamplingConfig { max_new_tokens, temperature: 1.0 };
    let seed = 0x5eed;
    eprintln!("scoring `{id}` on {} held-out task(s) × {samples} samples", tasks.len());
    let candidate_reward = {
        let engine = load_engine(&registry.path_of(&candidate), id).await?;
        rl::evaluate::mean_reward(engine.as_ref(), &tasks, samples, &sampling, limits, seed).await?
    };
    eprintln!("scoring the incumbent ({}) on the same draws", incumbent_path.display());
    let incumbent_reward = {
        let engine = load_engine(&incumbent_path, "incumbent").await?;
        rl::evaluate::mean_reward(engine.as_ref(), &tasks, samples, &sampling, limits, seed).await?
    };
    let gate = Gate { samples: tasks.len() * samples, candidate_reward, incumbent_reward };
    match registry.promote(id, gate)? {
        Promotion::Promoted { id, gate } => {
            println!("promoted `{id}`: held-out reward {:.3} vs {:.3}", gate.candidate_reward, gate.incumbent_reward);
            Ok(())
        }
        Promotion::Refused { id, gate } => {
            bail!(
                "`{id}` stays a candidate: held-out reward {:.3} vs the incumbent's {:.3} (a candidate must solve something and do no worse)",
                gate.candidate_reward,
                gate.incumbent_reward
            )
        }
    }
}

/// Gives tasks without reference actions the plans harvested from the recorded sessions
/// (see [`rl::harvest::attach_actions`]); returns how many got one.
async fn attach_harvested_actions(tasks: &mut [Task], database: &crate::config::DatabaseArgs, min_users: usize) -> anyhow::Result<usize> {
    let db = database.open().await?;
    let records = db.evolver.summaries_since(0).await?;
    let harvested = rl::harvest::harvest(&records, min_users);
    for (reason, sessions) in &harvested.dropped {
        eprintln!("  dropped {sessions} session(s): {reason}");
    }
    Ok(rl::harvest::attach_actions(tasks, &harvested))
}

/// Where exported rows come from.
struct ExportSource<'a> {
    tasks: Option<&'a Path>,
    harvest: bool,
    min_users: usize,
    samples: usize,
    max_new_tokens: usize,
    methods: Methods,
}

async fn export(format: &str, source: &ExportSource<'_>, out: &Path, database: &crate::config::DatabaseArgs) -> anyhow::Result<()> {
    use rl::export::{self, Format};
    let format = Format::parse(format)
        .with_context(|| format!("`{format}` is not a format: verl, verl-agent-loop, trl-grpo, trl-sft, trl-kto or trl-dpo"))?;
    let mut pairs = Vec::new();
    let (tasks, rated) = match (source.tasks, source.harvest) {
        (Some(path), false) => (TaskArgs { task: None, tasks: Some(path.to_path_buf()) }.load()?, Vec::new()),
        (None, true) => {
            let db = database.open().await?;
            let records = db.evolver.summaries_since(0).await?;
            let harvested = rl::harvest::harvest(&records, source.min_users);
            eprintln!(
                "harvested {} task(s) and {} rated answer(s) from {} recorded session(s)",
                harvested.tasks.len(),
                harvested.rated.len(),
                records.len()
            );
            for (reason, sessions) in &harvested.dropped {
                eprintln!("  dropped {sessions} session(s): {reason}");
            }
            if format == Format::TrlDpo {
                let candidates = db.evolver.candidates(None, i64::MAX).await?;
                let found = rl::harvest::preference_pairs(&candidates, &records, source.min_users);
                eprintln!("found {} preference pair(s) in the replays of {} candidate(s)", found.pairs.len(), candidates.len());
                for (reason, cases) in &found.dropped {
                    eprintln!("  dropped {cases} replayed case(s): {reason}");
                }
                pairs = found.pairs;
            }
            (harvested.tasks.into_iter().map(|h| h.task).collect(), harvested.rated)
        }
        _ => bail!("name the source: --tasks FILE or --harvest"),
    };
    let rows: Vec<serde_json::Value> = match format {
        Format::Verl => tasks.iter().enumerate().map(|(i, task)| export::verl_row(task, i, "train")).collect(),
        Format::VerlAgentLoop if !source.methods.is_grpo() => {
            // The method's own sequences, drawn from the base model as its first step would.
            let path = base_model_path(&None).await?;
            let base = Arc::new(BaseModel::load(&path)?);
            let trainer = Trainer::new(base, LoraConfig::default(), TrainerConfig::default(), 0)?;
            let config = GrpoConfig {
                methods: source.methods.clone(),
                group_size: source.samples,
                sampling: SamplingConfig { max_new_tokens: source.max_new_tokens, temperature: 1.0 },
                ..Default::default()
            };
            let scratch = tempfile::tempdir()?;
            let mut run = GrpoRun::start(trainer, config, "export", scratch.path()).await?;
            let batch = run.collect(&tasks, 1).await?;
            eprintln!("{} sequence(s); {:?}", batch.sequences.len(), batch.method_metrics);
            batch.sequences.iter().zip(&batch.task_of).map(|(sequence, t)| export::verl_sequence_row(&tasks[*t].id, sequence)).collect()
        }
        Format::VerlAgentLoop => {
            let path = base_model_path(&None).await?;
            let engine = load_engine(&path, "base").await?;
            let sampling = SamplingConfig { max_new_tokens: source.max_new_tokens, temperature: 1.0 };
            let mut rows = Vec::new();
            for (index, task) in tasks.iter().enumerate() {
                let episodes =
                    rl::episode::run_group(engine.as_ref(), task, source.samples, &sampling, &EpisodeLimits::default(), index as u64)
                        .await?;
                eprintln!("{}: rewards {:?}", task.id, episodes.iter().map(|e| e.reward).collect::<Vec<_>>());
                rows.extend(episodes.iter().map(|episode| export::verl_agent_loop_row(task, episode)));
            }
            rows
        }
        Format::TrlGrpo => tasks.iter().map(export::trl_grpo_row).collect(),
        Format::TrlSft => tasks.iter().filter_map(export::trl_sft_row).collect(),
        Format::TrlKto if source.harvest => rated.iter().map(export::trl_kto_row).collect(),
        Format::TrlKto => bail!("trl-kto rows come from users' ratings: use --harvest"),
        Format::TrlDpo if source.harvest => pairs.iter().map(export::trl_dpo_row).collect(),
        Format::TrlDpo => bail!("trl-dpo rows come from the evolver's replays of users' sessions: use --harvest"),
    };
    std::fs::write(out, export::to_jsonl(&rows)).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} row(s) to {}", rows.len(), out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use evolver::store::{CandidateRecord, ReplayCase, ReplayComparison, ReplayOutcome, SummaryRecord, Verdict};

    fn record(session: &str, user: &str, request: &str, answer: &str) -> SummaryRecord {
        SummaryRecord {
            session_id: session.into(),
            user_id: user.into(),
            run_id: "run".into(),
            updated_at: 1,
            request: request.into(),
            summary: Default::default(),
            skills_read: Vec::new(),
            score: 1.0,
            score_source: "feedback".into(),
            verdict: Verdict::Success,
            observed: true,
            summary_discarded: None,
            replay: ReplayCase { answer: Some(answer.into()), ..Default::default() },
        }
    }

    /// A real database file in `dir`, and an evolver run to record summaries under.
    async fn recording_database(dir: &Path) -> (crate::config::DatabaseArgs, crate::database::Database, String) {
        let database = crate::config::DatabaseArgs { data_dir: dir.to_path_buf(), database_url: None };
        let db = database.open().await.unwrap();
        let run = db.evolver.start_run("test").await.unwrap();
        (database, db, run)
    }

    /// Records `summary` as a real session of `user` (created on first use) under `run`, as
    /// the evolver would; returns the session's id.
    async fn record_session(db: &crate::database::Database, run: &str, user: &str, mut summary: SummaryRecord) -> String {
        let user_id = match db.store.user_by_name(user).await.unwrap() {
            Some(existing) => existing.id,
            None => db.store.create_user(user, false).await.unwrap().id,
        };
        let session = db.store.create_session(&user_id, "t", "m").await.unwrap();
        summary.session_id = session.id.clone();
        summary.user_id = user_id;
        summary.run_id = run.into();
        db.evolver.save_summary(&summary).await.unwrap();
        session.id
    }

    /// Harvest from a real database file: the shared pattern is exported in every format;
    /// a planted secret and one user's own request never are.
    #[tokio::test]
    async fn export_harvests_only_shared_patterns_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (database, db, run) = recording_database(dir.path()).await;
        let save = async |user: &str, request: &str, answer: &str| record_session(&db, &run, user, record("", "", request, answer)).await;
        let mut replays = Vec::new();
        for user in ["ada", "bo", "cy"] {
            let session = save(user, "What is 6 times 7?", "42").await;
            replays.push(replayed(&session, "41", "42"));
            save(user, "Deploy with token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "deployed").await;
        }
        for _ in 0..3 {
            let session = save("ada", "Rename my file notes-for-dr-who.txt", "done").await;
            replays.push(replayed(&session, "not done", "renamed notes-for-dr-who.txt"));
        }
        // The evolver's gate replayed those sessions without and with a candidate skill.
        let candidate = CandidateRecord {
            id: "cand-1".into(),
            run_id: run.clone(),
            slug: "times".into(),
            action: "create".into(),
            base_version: None,
            skill_md: String::new(),
            rationale: String::new(),
            evidence_sessions: Vec::new(),
            distinct_users: 3,
            status: "rejected".into(),
            verdict: serde_json::json!({ "accepted": false, "replay": { evolver::pipeline::REPLAY_CASES_KEY: replays } }),
            published_version: None,
            writer: "mined".into(),
        };
        db.evolver.save_candidate(&candidate).await.unwrap();
        drop(db);

        for format in ["verl", "trl-grpo", "trl-sft", "trl-kto", "trl-dpo"] {
            let out = dir.path().join(format!("{format}.jsonl"));
            let source =
                ExportSource { tasks: None, harvest: true, min_users: 3, samples: 1, max_new_tokens: 8, methods: Methods::default() };
            export(format, &source, &out, &database).await.unwrap();
            let text = std::fs::read_to_string(&out).unwrap();
            let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(rows.len(), 1, "{format}: {text}");
            assert!(text.contains("What is 6 times 7?"), "{text}");
            assert!(!text.contains("ghp_") && !text.contains("dr-who"), "{format} leaked: {text}");
        }
        let verl = std::fs::read_to_string(dir.path().join("verl.jsonl")).unwrap();
        let row: serde_json::Value = serde_json::from_str(verl.lines().next().unwrap()).unwrap();
        assert_eq!(row["reward_model"]["ground_truth"], "42");
        let dpo = std::fs::read_to_string(dir.path().join("trl-dpo.jsonl")).unwrap();
        let row: serde_json::Value = serde_json::from_str(dpo.lines().next().unwrap()).unwrap();
        assert_eq!((row["chosen"][0]["content"].as_str(), row["rejected"][0]["content"].as_str()), (Some("42"), Some("41")));
    }

    /// ActGuide's plans from a real database file: tasks given in a file get the tool calls
    /// that enough users' successful sessions of their request took on their files; one
    /// user's own way of working is never a plan.
    #[tokio::test]
    async fn training_tasks_get_the_plans_other_users_shared() {
        let dir = tempfile::tempdir().unwrap();
        let (database, db, run) = recording_database(dir.path()).await;
        let poem = std::collections::BTreeMap::from([("poem.txt".to_string(), "a\nb\nc\nd\n".to_string())]);
        let wc = vec![("exec".to_string(), r#"{"command": "wc -l poem.txt"}"#.to_string())];
        let secret_path = vec![("read".to_string(), r#"{"path": "ada-private/poem.txt"}"#.to_string())];
        for (user, procedure) in [("ada", &secret_path), ("bo", &wc), ("cy", &wc), ("dee", &wc)] {
            let mut summary = record("", "", "How many lines does poem.txt have?", "4");
            summary.replay.inputs = poem.clone();
            summary.replay.procedure = procedure.clone();
            record_session(&db, &run, user, summary).await;
        }
        drop(db);
        let task = |id: &str, files: &std::collections::BTreeMap<String, String>| Task {
            id: id.into(),
            messages: vec![agent::engine::ChatMessage::user("How many lines does poem.txt have? Answer with the number only.")],
            verifier: rl::task::Verifier::Number { value: 4.0 },
            tools: vec!["exec".into(), "read".into()],
            files: files.clone(),
            actions: Vec::new(),
        };
        // The request must match up to case, spacing and final punctuation, and so must the files.
        let mut tasks = vec![task("worded-otherwise", &poem), task("other-files", &Default::default())];
        tasks[0].messages = vec![agent::engine::ChatMessage::user("how many lines does poem.txt have")];
        assert_eq!(attach_harvested_actions(&mut tasks, &database, 3).await.unwrap(), 1);
        assert_eq!(tasks[0].actions.len(), 1);
        assert_eq!(tasks[0].actions[0].tool, "exec");
        assert!(tasks[0].actions[0].arguments.contains("wc -l"), "{:?}", tasks[0].actions);
        assert!(tasks[1].actions.is_empty());
        // With four users required, three sharing a plan give none.
        let mut strict = vec![task("strict", &poem)];
        strict[0].messages = tasks[0].messages.clone();
        assert_eq!(attach_harvested_actions(&mut strict, &database, 4).await.unwrap(), 0);
    }

    fn replayed(session: &str, baseline: &str, candidate: &str) -> ReplayComparison {
        ReplayComparison {
            session_id: session.into(),
            baseline: ReplayOutcome { passed: false, answer: Some(baseline.into()) },
            candidate: ReplayOutcome { passed: true, answer: Some(candidate.into()) },
        }
    }
}
