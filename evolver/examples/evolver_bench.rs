//! The evolver's own cost: engine calls and tokens per new session (replays counted
//! apart), and a run's wall time, over fixture sessions with the rule engine (no model
//! time) and the in-memory store. The first run sees every session; a second run sees
//! none and must ask the engine nothing.
//!
//! Usage: evolver_bench [SESSIONS]

use std::sync::Arc;
use std::time::Instant;

use evolver::testing::{trace, MemoryStore, RuleEngine};
use evolver::{Evolver, EvolverConfig};

const GOALS: &[(&str, Option<&str>)] = &[
    ("count rows in the csv file", Some("csv-inspect")),
    ("show the header of the csv file", Some("csv-inspect")),
    ("summarize the long report", Some("summarize-long-file")),
    ("find every TODO in the notes", Some("search-text")),
    ("convert markdown notes to html", None),
    ("convert my markdown notes into html pages", None),
    ("rename the photos by date", None),
    ("plan a birthday party", None),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let sessions: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let store = Arc::new(MemoryStore::default());
    for slug in ["csv-inspect", "summarize-long-file", "search-text"] {
        store.add_skill(slug, &format!("---\nname: {slug}\ndescription: The {slug} skill. Use when the task needs it.\n---\nFollow the steps carefully and check each result.\n"));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    for i in 0..sessions {
        let (goal, skill) = GOALS[i % GOALS.len()];
        let user = format!("user{}", i % 7);
        // Every third session fails a tool, so some groups are weak and get decided.
        let failed = i % 3 == 0;
        store.add_session(trace(
            &format!("s{i}"),
            &user,
            now - (sessions - i) as i64 * 600,
            goal,
            skill.map(|s| (s, "1.0.0")),
            failed,
            true,
        ));
    }
    let engine = Arc::new(RuleEngine::default());
    engine.decide(
        "Skill csv-inspect",
        "improve",
        "csv-inspect",
        "Inspect a CSV file. Use when asked about a .csv file.",
        "1. Check the file exists with ls.\n2. Count rows with wc -l.",
    );
    engine.decide(
        "markdown",
        "create",
        "markdown to html",
        "Convert markdown notes to HTML. Use when asked to publish notes.",
        "1. Read the notes.\n2. Write the HTML file next to them.",
    );
    let evolver = Evolver { engine: engine.clone(), store: store.clone(), config: EvolverConfig::default() };

    let started = Instant::now();
    let (_, report) = evolver.run_once("bench").await?;
    let wall = started.elapsed();
    let calls: usize = report.steps.iter().map(|s| s.llm_calls).sum();
    let replays: usize = report.steps.iter().map(|s| s.replay_calls).sum();
    let tokens: usize = report.steps.iter().map(|s| s.prompt_tokens + s.completion_tokens).sum();
    let per_session = calls as f64 / report.new_sessions.max(1) as f64;
    println!(
        "sessions: {}; patterns: {}; candidates: {}; published: {}",
        report.new_sessions, report.patterns, report.candidates, report.published
    );
    println!("engine calls: {calls} ({per_session:.2} per new session, target <= 1.2); replay calls: {replays}");
    println!(
        "tokens: {tokens} ({:.0} per new session, estimated at 4 characters a token)",
        tokens as f64 / report.new_sessions.max(1) as f64
    );
    for step in &report.steps {
        println!("  {:<10} {:>4} items {:>4} calls {:>6} ms", step.name, step.items, step.llm_calls, step.millis);
    }
    println!("run wall time: {:.1} ms (pipeline overhead, no model time)", wall.as_secs_f64() * 1e3);

    let before = engine.calls();
    let started = Instant::now();
    let (_, second) = evolver.run_once("bench").await?;
    println!(
        "second run: {} new sessions, {} engine calls, {:.1} ms",
        second.new_sessions,
        engine.calls() - before,
        started.elapsed().as_secs_f64() * 1e3
    );
    anyhow::ensure!(per_session <= 1.2, "more than 1.2 engine calls per new session");
    Ok(())
}
