//! The learning experiment, driven through a real server's API:
//! 1. **before**: one user runs every held-out task with each seed;
//! 2. **training**: every user runs the training tasks, and rates each session up or
//!    down as the task's checker says, as a user who checks the result would;
//! 3. **evolve**: an admin starts an evolver run and waits for it (real engine, real gate);
//! 4. **after**: the held-out tasks again, same user, same seeds.
//!
//! The report pairs each held-out (task, seed) before and after.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::client::Client;
use crate::stats::mcnemar_exact;
use crate::tasks::{Split, Task};

#[derive(Debug, Clone)]
pub struct Settings {
    pub seeds: Vec<u64>,
    /// Training tasks per family each user runs (at most the family's).
    pub train_per_family: usize,
    /// Held-out tasks per family (at most the family's).
    pub heldout_per_family: usize,
    /// Only these families; empty means all.
    pub families: Vec<String>,
    pub max_steps: usize,
    pub max_seconds: u64,
    pub evolve_timeout: Duration,
}

/// The phase a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Before,
    Training,
    After,
}

/// One task run by one user with one seed.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRun {
    pub phase: Phase,
    pub task: String,
    pub family: String,
    pub user: usize,
    pub seed: u64,
    pub passed: bool,
    /// Why the checker said no, or "ok".
    pub detail: String,
    pub stop_reason: String,
    pub answer: String,
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub session_id: String,
}

/// Per family (and overall): held-out success before and after.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyResult {
    pub family: String,
    pub pairs: usize,
    pub before: f64,
    pub after: f64,
    pub improved: usize,
    pub worsened: usize,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub settings: Value,
    pub families: Vec<FamilyResult>,
    pub overall: FamilyResult,
    pub training_success: f64,
    pub runs: Vec<TaskRun>,
    /// The evolver run: its report and its candidates with their verdicts.
    pub evolver_run: Value,
    /// Every skill version the evolver published during the experiment.
    pub publications: Vec<Value>,
    pub mean_tokens_before: f64,
    pub mean_tokens_after: f64,
    pub mean_seconds_before: f64,
    pub mean_seconds_after: f64,
    pub minutes: f64,
}

/// The tasks of a phase under the settings, in a fixed order.
pub fn select(tasks: &[Task], split: Split, per_family: usize, families: &[String]) -> Vec<Task> {
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let mut selected = Vec::new();
    for task in tasks.iter().filter(|t| t.split == split && (families.is_empty() || families.contains(&t.family))) {
        let n = taken.entry(task.family.as_str()).or_insert(0);
        if *n < per_family {
            *n += 1;
            selected.push(task.clone());
        }
    }
    selected
}

/// Runs one task as `client`'s user: a fresh workspace with the task's files, one turn,
/// then the checker on the answer and on the files the check names, fetched back.
pub fn run_task(
    client: &Client,
    task: &Task,
    seed: u64,
    settings: &Settings,
) -> anyhow::Result<(crate::Verdict, crate::client::TurnReply)> {
    client.reset_workspace(task.files.iter())?;
    let started = Instant::now();
    let mut reply = client.run_turn(&task.id, &task.request, seed, settings.max_steps, settings.max_seconds)?;
    if reply.millis == 0 {
        reply.millis = started.elapsed().as_millis() as u64;
    }
    let local = tempfile_dir()?;
    task.materialize(&local)?;
    for path in task.check.paths() {
        let target = local.join(path);
        match client.workspace_file(path)? {
            Some(content) => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&target, content)?;
            }
            None => {
                let _ = std::fs::remove_file(&target);
            }
        }
    }
    let verdict = task.check(&local, &reply.answer);
    let _ = std::fs::remove_dir_all(&local);
    Ok((verdict, reply))
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("skillhive-learning-{}-{}", std::process::id(), uuid_like()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn record(phase: Phase, task: &Task, user: usize, seed: u64, verdict: crate::Verdict, reply: crate::client::TurnReply) -> TaskRun {
    TaskRun {
        phase,
        task: task.id.clone(),
        family: task.family.clone(),
        user,
        seed,
        passed: verdict.passed,
        detail: verdict.detail,
        stop_reason: reply.stop_reason,
        answer: reply.answer,
        steps: reply.steps,
        tokens: reply.tokens,
        seconds: reply.millis as f64 / 1000.0,
        session_id: reply.session_id,
    }
}

/// Runs the whole experiment; `progress` hears one line per step.
pub fn run(
    model: &str,
    admin: &Client,
    users: &[Client],
    tasks: &[Task],
    settings: &Settings,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Report> {
    anyhow::ensure!(!users.is_empty(), "the experiment needs at least one user");
    let started = Instant::now();
    let heldout = select(tasks, Split::Heldout, settings.heldout_per_family, &settings.families);
    let training = select(tasks, Split::Train, settings.train_per_family, &settings.families);
    let mut runs = Vec::new();
    let evaluate = |phase: Phase, runs: &mut Vec<TaskRun>| -> anyhow::Result<()> {
        let total = heldout.len() * settings.seeds.len();
        for (i, (task, seed)) in heldout.iter().flat_map(|t| settings.seeds.iter().map(move |s| (t, *s))).enumerate() {
            let (verdict, reply) = run_task(&users[0], task, seed, settings)?;
            progress(&format!(
                "{phase:?} {}/{total}: {} seed {seed}: {} ({})",
                i + 1,
                task.id,
                if verdict.passed { "pass" } else { "fail" },
                verdict.detail
            ));
            runs.push(record(phase, task, 0, seed, verdict, reply));
        }
        Ok(())
    };

    evaluate(Phase::Before, &mut runs)?;
    let total = training.len() * users.len();
    let mut done = 0;
    for (i, task) in training.iter().enumerate() {
        for (u, user) in users.iter().enumerate() {
            // Each training session gets its own seed, as different people's would differ.
            let seed = settings.seeds[0].wrapping_add(1000 * (u as u64 + 1) + i as u64);
            let (verdict, reply) = run_task(user, task, seed, settings)?;
            user.rate(&reply.session_id, verdict.passed, &verdict.detail)?;
            done += 1;
            progress(&format!("Training {done}/{total}: {} user {u}: {}", task.id, if verdict.passed { "pass" } else { "fail" }));
            runs.push(record(Phase::Training, task, u, seed, verdict, reply));
        }
    }
    progress("Evolving: summarizing, grouping, deciding, gating");
    let evolver_run = admin.evolve(settings.evolve_timeout, |run: &Value| {
        let steps: Vec<String> = run["report"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect();
        progress(&format!("  evolver: {} (steps done: {})", run["status"].as_str().unwrap_or("?"), steps.join(", ")));
    })?;
    evaluate(Phase::After, &mut runs)?;

    let publications = admin.skills()?["skills"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["latest"]["author_kind"] == "evolver")
        .map(|s| json!({ "slug": s["slug"], "version": s["latest"]["version"], "description": s["latest"]["description"], "provenance": s["latest"]["provenance"] }))
        .collect();
    let settings_json = json!({
        "seeds": settings.seeds,
        "users": users.len(),
        "train_per_family": settings.train_per_family,
        "heldout_per_family": settings.heldout_per_family,
        "families": settings.families,
        "max_steps": settings.max_steps,
        "max_seconds": settings.max_seconds,
        "heldout_tasks": heldout.len(),
        "training_tasks": training.len(),
    });
    Ok(summarize(model, settings_json, runs, evolver_run, publications, started.elapsed()))
}

fn pairs_result(family: &str, runs: &[TaskRun]) -> FamilyResult {
    let before: BTreeMap<(&str, u64), bool> = runs
        .iter()
        .filter(|r| r.phase == Phase::Before && (family == "all" || r.family == family))
        .map(|r| ((r.task.as_str(), r.seed), r.passed))
        .collect();
    let after: BTreeMap<(&str, u64), bool> = runs
        .iter()
        .filter(|r| r.phase == Phase::After && (family == "all" || r.family == family))
        .map(|r| ((r.task.as_str(), r.seed), r.passed))
        .collect();
    let (mut improved, mut worsened, mut pairs, mut passed_before, mut passed_after) = (0, 0, 0, 0, 0);
    for (key, was) in &before {
        let Some(now) = after.get(key) else { continue };
        pairs += 1;
        passed_before += usize::from(*was);
        passed_after += usize::from(*now);
        match (was, now) {
            (false, true) => improved += 1,
            (true, false) => worsened += 1,
            _ => {}
        }
    }
    let rate = |n: usize| if pairs == 0 { 0.0 } else { n as f64 / pairs as f64 };
    FamilyResult {
        family: family.to_string(),
        pairs,
        before: rate(passed_before),
        after: rate(passed_after),
        improved,
        worsened,
        p_value: mcnemar_exact(improved, worsened),
    }
}

/// Builds the report from the runs.
pub fn summarize(
    model: &str,
    settings: Value,
    runs: Vec<TaskRun>,
    evolver_run: Value,
    publications: Vec<Value>,
    elapsed: Duration,
) -> Report {
    let families: Vec<String> = runs
        .iter()
        .filter(|r| r.phase != Phase::Training)
        .map(|r| r.family.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mean = |phase: Phase, f: &dyn Fn(&TaskRun) -> f64| {
        let of: Vec<f64> = runs.iter().filter(|r| r.phase == phase).map(f).collect();
        if of.is_empty() {
            0.0
        } else {
            of.iter().sum::<f64>() / of.len() as f64
        }
    };
    let training: Vec<&TaskRun> = runs.iter().filter(|r| r.phase == Phase::Training).collect();
    Report {
        model: model.to_string(),
        settings,
        families: families.iter().map(|f| pairs_result(f, &runs)).collect(),
        overall: pairs_result("all", &runs),
        training_success: if training.is_empty() {
            0.0
        } else {
            training.iter().filter(|r| r.passed).count() as f64 / training.len() as f64
        },
        mean_tokens_before: mean(Phase::Before, &|r| r.tokens as f64),
        mean_tokens_after: mean(Phase::After, &|r| r.tokens as f64),
        mean_seconds_before: mean(Phase::Before, &|r| r.seconds),
        mean_seconds_after: mean(Phase::After, &|r| r.seconds),
        minutes: elapsed.as_secs_f64() / 60.0,
        runs,
        evolver_run,
        publications,
    }
}

/// The report as Markdown: the paired table, the evolver's decisions and verdicts, and
/// every publication.
pub fn markdown(report: &Report) -> String {
    let pct = |x: f64| format!("{:.0} %", x * 100.0);
    let mut md = format!(
        "# Learning experiment\n\nModel: `{}`. Settings: `{}`. Took {:.1} minutes.\n\n## Held-out success, before and after evolution\n\n\
         | family | pairs | before | after | improved | worsened | p (exact McNemar) |\n|---|---|---|---|---|---|---|\n",
        report.model, report.settings, report.minutes
    );
    for f in report.families.iter().chain(std::iter::once(&report.overall)) {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} |\n",
            if f.family == "all" { "**all**" } else { &f.family },
            f.pairs,
            pct(f.before),
            pct(f.after),
            f.improved,
            f.worsened,
            f.p_value
        ));
    }
    md.push_str(&format!(
        "\nTraining sessions that passed their checker: {}. Tokens per held-out task: {:.0} before, {:.0} after; seconds: {:.1} before, {:.1} after.\n",
        pct(report.training_success),
        report.mean_tokens_before,
        report.mean_tokens_after,
        report.mean_seconds_before,
        report.mean_seconds_after
    ));
    let run_report = &report.evolver_run["report"];
    md.push_str(&format!(
        "\n## The evolver run\n\nStatus `{}`; {} new sessions, {} summaries discarded, {} patterns, {} candidates, {} published.\n\n| pattern | decision | why |\n|---|---|---|\n",
        report.evolver_run["status"].as_str().unwrap_or("?"),
        run_report["new_sessions"],
        run_report["summaries_discarded"],
        run_report["patterns"],
        run_report["candidates"],
        run_report["published"],
    ));
    for decision in run_report["decisions"].as_array().cloned().unwrap_or_default() {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            decision["pattern"].as_str().unwrap_or(""),
            decision["action"].as_str().unwrap_or(""),
            decision["reason"].as_str().unwrap_or("")
        ));
    }
    md.push_str(
        "\n| candidate | action | writer | status | replay (baseline → candidate) | refused because |\n|---|---|---|---|---|---|\n",
    );
    for candidate in report.evolver_run["candidates"].as_array().cloned().unwrap_or_default() {
        let verdict = &candidate["verdict"];
        let replay = &verdict["replay"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            candidate["slug"].as_str().unwrap_or(""),
            candidate["action"].as_str().unwrap_or(""),
            candidate["writer"].as_str().unwrap_or(""),
            candidate["status"].as_str().unwrap_or(""),
            if replay.is_object() { format!("{} → {}", replay["baseline_scores"], replay["candidate_scores"]) } else { "—".into() },
            verdict["failed"].as_str().unwrap_or("—"),
        ));
    }
    md.push_str("\n## Publications\n\n");
    if report.publications.is_empty() {
        md.push_str("None.\n");
    }
    for publication in &report.publications {
        md.push_str(&format!(
            "- `{}` {}: {}\n",
            publication["slug"].as_str().unwrap_or(""),
            publication["version"].as_str().unwrap_or(""),
            publication["description"].as_str().unwrap_or("")
        ));
    }
    md
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(report)?)?;
    Ok(())
}
