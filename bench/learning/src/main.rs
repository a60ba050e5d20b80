//! `learning`: runs the learning experiment against a running skillhive server and writes
//! its report. `bench/learning/run` starts the server and the users and calls this.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use learning::client::Client;
use learning::experiment::{self, Settings};

#[derive(Parser)]
#[command(about = "Held-out tasks before and after the evolver learns from users' training sessions")]
struct Args {
    /// The server's base URL.
    #[arg(long)]
    server: String,
    /// An admin's token (starts the evolver run).
    #[arg(long)]
    admin_token: String,
    /// The users' tokens; the first also runs the held-out tasks.
    #[arg(long = "user-token", required = true)]
    user_tokens: Vec<String>,
    /// The model's name, for the report.
    #[arg(long, default_value = "unknown")]
    model: String,
    /// The small size: one held-out and one training task per family, one seed, and at
    /// most 5 steps and 90 seconds a turn (about 25 minutes on the embedded default).
    #[arg(long)]
    quick: bool,
    /// Seeds of the held-out runs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Only these families (comma-separated).
    #[arg(long, value_delimiter = ',')]
    families: Vec<String>,
    #[arg(long)]
    train_per_family: Option<usize>,
    #[arg(long)]
    heldout_per_family: Option<usize>,
    /// Steps a turn may take (default 6, 5 with --quick).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Seconds a turn may take (default 120, 90 with --quick).
    #[arg(long)]
    max_seconds: Option<u64>,
    /// Where report.md and report.json go.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tasks = learning::load_suite(&learning::suite_dir())?;
    let settings = Settings {
        seeds: args.seeds.unwrap_or_else(|| if args.quick { vec![1] } else { vec![1, 2, 3] }),
        train_per_family: args.train_per_family.unwrap_or(if args.quick { 1 } else { 5 }),
        heldout_per_family: args.heldout_per_family.unwrap_or(if args.quick { 1 } else { 3 }),
        families: args.families,
        max_steps: args.max_steps.unwrap_or(if args.quick { 5 } else { 6 }),
        max_seconds: args.max_seconds.unwrap_or(if args.quick { 90 } else { 120 }),
        evolve_timeout: Duration::from_secs(3600),
    };
    let admin = Client::new(&args.server, &args.admin_token)?;
    let users = args.user_tokens.iter().map(|t| Client::new(&args.server, t)).collect::<anyhow::Result<Vec<_>>>()?;
    let report = experiment::run(&args.model, &admin, &users, &tasks, &settings, &|line| eprintln!("{line}"))?;
    experiment::write(&report, &args.out)?;
    println!("{}", experiment::markdown(&report));
    Ok(())
}
