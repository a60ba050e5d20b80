//! A training run on disk: its step metrics as JSON Lines (appended as each step ends, so a
//! crashed run keeps what it measured), its checkpoint, and a plot of reward against step.
//!
//! Layout under the RL folder (`{data}/rl`):
//! - `runs/{name}/metrics.jsonl`, `runs/{name}/checkpoint/`, `runs/{name}/reward.svg`,
//!   `runs/{name}/scratch/` (the policy files rollouts are served from while it runs);
//! - `policies/` (a [`crate::registry::PolicyRegistry`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::grpo::StepReport;
use crate::registry::check_policy_id;

pub struct RunDir {
    pub name: String,
    pub dir: PathBuf,
}

impl RunDir {
    pub fn open(rl_dir: &Path, name: &str) -> anyhow::Result<Self> {
        check_policy_id(name).context("run names follow the rules of policy ids")?;
        let dir = rl_dir.join("runs").join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { name: name.to_string(), dir })
    }

    /// The names of the runs under `rl_dir`.
    pub fn list(rl_dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        match std::fs::read_dir(rl_dir.join("runs")) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_dir() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        names.sort();
        Ok(names)
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    /// Appends one step's report and redraws the plot.
    pub fn record(&self, report: &StepReport) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(self.metrics_path())?;
        writeln!(file, "{}", serde_json::to_string(report)?)?;
        let reports = self.reports()?;
        std::fs::write(self.dir.join("reward.svg"), reward_plot(&reports))?;
        Ok(())
    }

    /// Every step recorded so far; a damaged line (a crash mid-write) is skipped.
    pub fn reports(&self) -> anyhow::Result<Vec<StepReport>> {
        let text = match std::fs::read_to_string(self.metrics_path()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }
}

/// Success rate, mean reward (with its spread) and KL against step, as an SVG image.
pub fn reward_plot(reports: &[StepReport]) -> String {
    let (width, height, margin) = (640.0, 320.0, 48.0);
    let steps = reports.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let x = |step: u64| margin + (step as f64 - 1.0).max(0.0) / (steps - 1.0).max(1.0) * (width - 2.0 * margin);
    let y = |value: f64| height - margin - value.clamp(0.0, 1.0) * (height - 2.0 * margin);
    let line = |values: &dyn Fn(&StepReport) -> f64| -> String {
        reports.iter().map(|r| format!("{:.1},{:.1}", x(r.step), y(values(r)))).collect::<Vec<_>>().join(" ")
    };
    let kl_max = reports.iter().map(|r| r.metrics.approx_kl).fold(0.0, f64::max).max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{margin}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{margin}\" y1=\"{margin}\" x2=\"{margin}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{margin}\" y=\"20\">success (green), mean reward ± std (blue), KL to the base (orange, 0 to {kl_max:.3}) by step</text>\n\
         <text x=\"8\" y=\"{top}\">1</text><text x=\"8\" y=\"{b}\">0</text>\n\
         <text x=\"{margin}\" y=\"{label}\">1</text><text x=\"{r}\" y=\"{label}\" text-anchor=\"end\">{steps}</text>\n",
        b = height - margin,
        r = width - margin,
        top = margin + 4.0,
        label = height - margin + 16.0,
    );
    let upper = line(&|r| r.metrics.reward_mean + r.metrics.reward_std);
    let lower: Vec<String> =
        reports.iter().rev().map(|r| format!("{:.1},{:.1}", x(r.step), y(r.metrics.reward_mean - r.metrics.reward_std))).collect();
    svg.push_str(&format!("<polygon points=\"{upper} {}\" fill=\"#4c72b0\" fill-opacity=\"0.15\"/>\n", lower.join(" ")));
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#4c72b0\" stroke-width=\"2\"/>\n",
        line(&|r| r.metrics.reward_mean)
    ));
    svg.push_str(&format!("<polyline points=\"{}\" fill=\"none\" stroke=\"#55a868\" stroke-width=\"2\"/>\n", line(&|r| r.success_rate)));
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#dd8452\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>\n",
        line(&|r| r.metrics.approx_kl / kl_max)
    ));
    svg.push_str("</svg>\n");
    svg
}
