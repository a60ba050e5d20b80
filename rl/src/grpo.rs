//! Group-relative policy optimisation on the shared engine: every step samples a group per
//! task from the engine serving the current policy, scores the samples with the tasks'
//! verifiers, updates the adapters on the CPU, and publishes the updated policy back into
//! an engine, which samples the next step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agent::engine::Engine;
use serde::{Deserialize, Serialize};

use crate::episode::{self, EpisodeEnd, EpisodeLimits};
use crate::math::{self, AdvantageEstimator, StepMetrics};
use crate::policy::BaseModel;
use crate::publish;
use crate::rollout::SamplingConfig;
use crate::task::Task;
use crate::trainer::Trainer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    /// Samples per task and step.
    pub group_size: usize,
    pub sampling: SamplingConfig,
    /// Turns and tokens of an agent task's episode at most.
    #[serde(default)]
    pub limits: EpisodeLimits,
    pub estimator: AdvantageEstimator,
    /// Seeds every rollout: step `s` of a run with seed `x` samples the same tokens however
    /// often it is re-run from the same policy.
    pub seed: u64,
    /// Published policy files kept on disk (the newest); older ones are deleted.
    pub keep_policies: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            group_size: 16,
            sampling: SamplingConfig::default(),
            limits: EpisodeLimits::default(),
            estimator: AdvantageEstimator::Grpo { epsilon: 1e-6, normalize_std: true },
            seed: 0,
            keep_policies: 2,
        }
    }
}

/// Where a step's time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimings {
    pub rollout_seconds: f64,
    pub reference_seconds: f64,
    pub train_seconds: f64,
    pub publish_seconds: f64,
}

/// What one step did and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The number of this update (1 for the first).
    pub step: u64,
    /// Rewards and the other metrics of the samples this step trained on, which the
    /// policy before the update produced.
    pub metrics: StepMetrics,
    /// The share of samples that earned the full reward (1).
    pub success_rate: f64,
    /// How the step's episodes ended (all `answered` for tasks without tools).
    #[serde(default)]
    pub ends: BTreeMap<EpisodeEnd, usize>,
    pub loss: f64,
    pub grad_norm: f64,
    pub trained_tokens: usize,
    /// Trained tokens per second of forward and backward.
    pub train_tokens_per_second: f64,
    pub timings: StepTimings,
    /// The model id of the policy published by this step.
    pub policy: String,
}

impl StepReport {
    /// The one line a person watching a run reads per step.
    pub fn line(&self) -> String {
        let m = &self.metrics;
        let t = &self.timings;
        // Agent episodes also say how they ended (answered, turn limit, ...).
        let ends = if self.ends.keys().any(|end| *end != EpisodeEnd::Answered) {
            let counts: Vec<String> = self
                .ends
                .iter()
                .map(|(end, n)| format!("{} {n}", serde_json::to_value(end).unwrap_or_default().as_str().unwrap_or("?")))
                .collect();
            format!("  ends: {}", counts.join(", "))
        } else {
            String::new()
        };
        let line = format!(
            "step {:>3}  success {:.3}  reward {:.3} ± {:.3}  kl {:.4}  entropy {:.3}  clip {:.3}  gap {:.4}  len {:.1}  |g| {:.3}  \
             {:.1}s (rollout {:.1} ref {:.1} train {:.1} publish {:.1})",
            self.step,
            self.success_rate,
            m.reward_mean,
            m.reward_std,
            m.approx_kl,
            m.entropy,
            m.clip_fraction,
            m.logprob_gap,
            m.length_mean,
            self.grad_norm,
            t.rollout_seconds + t.reference_seconds + t.train_seconds + t.publish_seconds,
            t.rollout_seconds,
            t.reference_seconds,
            t.train_seconds,
            t.publish_seconds,
        );
        line + &ends
    }
}

/// A training run: the trainer, and the engine serving its latest published policy.
pub struct GrpoRun {
    pub trainer: Trainer,
    pub config: GrpoConfig,
    pub name: String,
    policy_dir: PathBuf,
    engine: Arc<dyn Engine>,
    published: Vec<PathBuf>,
}

impl GrpoRun {
    /// Starts (or resumes) a run: publishes the trainer's current policy into `policy_dir`
    /// and loads it into an engine. A fresh trainer publishes the base model itself, with
    /// every tensor F32, so that even the first step samples what the trainer computes.
    pub async fn start(trainer: Trainer, config: GrpoConfig, name: &str, policy_dir: &Path) -> anyhow::Result<Self> {
        let id = policy_id(name, trainer.step());
        let (engine, path) = publish_policy(&trainer, policy_dir, &id).await?;
        Ok(Self { engine, trainer, config, name: name.to_string(), policy_dir: policy_dir.to_path_buf(), published: vec![path] })
    }

    /// The engine serving the current policy.
    pub fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    pub fn base(&self) -> &Arc<BaseModel> {
        &self.trainer.base
    }

    /// The model id of the policy after `step` updates.
    pub fn policy_id(&self, step: u64) -> String {
        policy_id(&self.name, step)
    }

    async fn publish(&mut self) -> anyhow::Result<()> {
        let (engine, path) = publish_policy(&self.trainer, &self.policy_dir, &self.policy_id(self.trainer.step())).await?;
        self.engine = engine;
        self.published.push(path);
        while self.published.len() > self.config.keep_policies.max(1) {
            let old = self.published.remove(0);
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }

    /// One step over `tasks`: rollouts, the update, and publishing the new policy.
    pub async fn step(&mut self, tasks: &[Task]) -> anyhow::Result<StepReport> {
        let step = self.trainer.step() + 1;
        let started = Instant::now();
        let mut sequences = Vec::new();
        let mut groups = Vec::new();
        let mut ends: Vec<EpisodeEnd> = Vec::new();
        for (index, task) in tasks.iter().enumerate() {
            let group_seed = self.config.seed ^ (step << 20) ^ index as u64;
            let episodes = episode::run_group(
                self.engine.as_ref(),
                task,
                self.config.group_size,
                &self.config.sampling,
                &self.config.limits,
                group_seed,
            )
            .await?;
            let rewards: Vec<f64> = episodes.iter().map(|e| e.reward).collect();
            let advantages = math::group_advantages(&rewards, self.config.estimator);
            for (episode, advantage) in episodes.iter().zip(advantages) {
                sequences.push(episode.training_sequence(advantage));
                ends.push(episode.end);
            }
            groups.push(rewards);
        }
        let rollout_seconds = started.elapsed().as_secs_f64();

        let stats = self.trainer.update(&sequences)?;

        let started = Instant::now();
        self.publish().await?;
        let publish_seconds = started.elapsed().as_secs_f64();

        let mut metrics = math::step_metrics(&groups, &[]);
        metrics.approx_kl = stats.approx_kl;
        metrics.entropy = stats.entropy;
        metrics.clip_fraction = stats.clip_fraction;
        metrics.logprob_gap = stats.logprob_gap;
        let lengths: Vec<usize> = sequences.iter().map(|s| s.trained_tokens()).collect();
        metrics.length_mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
        metrics.length_max = lengths.iter().copied().max().unwrap_or(0);
        let rewards: Vec<f64> = groups.iter().flatten().copied().collect();
        let success_rate = rewards.iter().filter(|r| **r >= 1.0).count() as f64 / rewards.len().max(1) as f64;
        Ok(StepReport {
            step,
            metrics,
            success_rate,
            ends: ends.iter().fold(BTreeMap::new(), |mut counts, end| {
                *counts.entry(*end).or_insert(0) += 1;
                counts
            }),
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            trained_tokens: stats.trained_tokens,
            train_tokens_per_second: stats.trained_tokens as f64 / stats.train_seconds.max(1e-9),
            timings: StepTimings {
                rollout_seconds,
                reference_seconds: stats.reference_seconds,
                train_seconds: stats.train_seconds,
                publish_seconds,
            },
            policy: self.policy_id(step),
        })
    }
}

fn policy_id(run: &str, step: u64) -> String {
    format!("{run}-step{step}")
}

/// Writes the trainer's policy as `{dir}/{id}.gguf` and loads it into a new engine.
async fn publish_policy(trainer: &Trainer, dir: &Path, id: &str) -> anyhow::Result<(Arc<dyn Engine>, PathBuf)> {
    let path = dir.join(format!("{id}.gguf"));
    publish::write_policy(&trainer.base, Some(&trainer.adapters), &path)?;
    let engine = publish::load_policy_engine(&path, id).await?;
    Ok((Arc::new(engine), path))
}
