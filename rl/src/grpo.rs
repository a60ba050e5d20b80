//! Group-relative policy optimisation on the shared engine: every step samples a group per
//! task from the engine serving the current policy, scores the samples with the tasks'
//! verifiers, updates the adapters on the CPU, and publishes the updated policy back into
//! an engine, which samples the next step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agent::engine::Engine;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::episode::{self, Branch, Episode, EpisodeEnd, EpisodeLimits, ResumeAt};
use crate::math::{self, AdvantageEstimator, StepMetrics};
use crate::methods::role_agent::{self, FailureSampler};
use crate::methods::{actguide, appo, resum};
use crate::policy::BaseModel;
use crate::publish;
use crate::rollout::SamplingConfig;
use crate::task::Task;
use crate::trainer::{Trainer, TrainingSequence};

/// One way of collecting and scoring a step's samples on top of GRPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    #[default]
    Grpo,
    /// ActGuide-RL: a group that earned nothing is re-sampled with the shortest prefix of
    /// the task's reference plan that lets a probe succeed, and trained as the unguided
    /// prompt's samples.
    #[serde(rename = "actguide", alias = "act-guide")]
    ActGuide,
    /// Role-Agent: tool calls predict their results (rewards shaped by the similarity),
    /// and failed tasks are drawn more often, with the failures most like them.
    RoleAgent,
    /// ReSum: where a reply wrote the summarization phrase, a branch without it; at other
    /// positions, a branch with it injected; each branch and its rollout get opposite
    /// advantages for what the summary gained or lost.
    Resum,
    /// APPO: each group branches at its most uncertain content tokens (inside agent
    /// episodes too); the branches' rewards raise or lower the advantage of the prefix they
    /// share with their rollout.
    Appo,
}

impl Method {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "grpo" => Some(Self::Grpo),
            "actguide" => Some(Self::ActGuide),
            "role-agent" => Some(Self::RoleAgent),
            "appo" => Some(Self::Appo),
            "resum" => Some(Self::Resum),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Grpo => "grpo",
            Self::ActGuide => "actguide",
            Self::RoleAgent => "role-agent",
            Self::Appo => "appo",
            Self::Resum => "resum",
        }
    }
}

/// The methods a run combines on GRPO. They compose where each changes a different part
/// of a step: ActGuide-RL the prompts of hard groups, Role-Agent the rewards and the task
/// draws, APPO or ReSum the branches and the advantages taken from them. APPO and ReSum
/// both decide advantages from their own branches, so a run has at most one of them; a
/// group ActGuide guided is trained as ActGuide says, without branches (a branch of a
/// guided sample would be trained under the guided prompt). Empty: plain GRPO.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Methods(BTreeSet<Method>);

impl Methods {
    /// `grpo`, one method, or several joined by `+` or `,` (`actguide+role-agent+appo`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut methods = Vec::new();
        for name in list.split(['+', ',']).map(str::trim) {
            methods
                .push(Method::parse(name).ok_or_else(|| format!("`{name}` is not a method: grpo, actguide, role-agent, appo or resum"))?);
        }
        Self::new(methods)
    }

    pub fn new(methods: impl IntoIterator<Item = Method>) -> Result<Self, String> {
        let set: BTreeSet<Method> = methods.into_iter().filter(|m| *m != Method::Grpo).collect();
        if set.contains(&Method::Appo) && set.contains(&Method::Resum) {
            return Err("APPO and ReSum both take advantages from their own branches: a run combines at most one of them".into());
        }
        Ok(Self(set))
    }

    pub fn uses(&self, method: Method) -> bool {
        self.0.contains(&method)
    }

    /// APPO or ReSum, if the run branches.
    pub fn branching(&self) -> Option<Method> {
        self.0.iter().copied().find(|m| matches!(m, Method::Appo | Method::Resum))
    }

    pub fn is_grpo(&self) -> bool {
        self.0.is_empty()
    }

    /// `grpo`, or the methods joined by `+`.
    pub fn name(&self) -> String {
        if self.0.is_empty() {
            return "grpo".into();
        }
        self.0.iter().map(|m| m.name()).collect::<Vec<_>>().join("+")
    }
}

impl From<Method> for Methods {
    fn from(method: Method) -> Self {
        // One method always forms a valid set.
        Self(std::iter::once(method).filter(|m| *m != Method::Grpo).collect())
    }
}

/// Checkpoints written before methods combined hold one method; later ones a list.
impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Method),
            Many(Vec<Method>),
        }
        let methods = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(method) => vec![method],
            OneOrMany::Many(methods) => methods,
        };
        Self::new(methods).map_err(serde::de::Error::custom)
    }
}

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
    #[serde(default, alias = "method")]
    pub methods: Methods,
    /// Branch points per task and step: APPO's, and ReSum's injected phrases.
    #[serde(default = "default_branches")]
    pub branches: usize,
    /// ReSum's summarization phrase.
    #[serde(default = "default_phrase")]
    pub phrase: String,
}

fn default_phrase() -> String {
    resum::DEFAULT_PHRASE.to_string()
}

fn default_branches() -> usize {
    2
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
            methods: Methods::default(),
            branches: default_branches(),
            phrase: default_phrase(),
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
    /// Tokens the policy sampled per episode of `metrics` (replies only, no branches).
    #[serde(default)]
    pub rollout_length_mean: f64,
    /// How the step's episodes ended (all `answered` for tasks without tools).
    #[serde(default)]
    pub ends: BTreeMap<EpisodeEnd, usize>,
    /// What the method measured: ActGuide's hard groups, probes and hint lengths;
    /// Role-Agent's predictions, their similarity and the shaped reward.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub method_metrics: BTreeMap<String, f64>,
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
        let method: Vec<String> = self
            .method_metrics
            .iter()
            .filter(|(key, _)| !key.starts_with("task_weight_"))
            .map(|(key, value)| format!("{key} {value:.2}"))
            .collect();
        let method = if method.is_empty() { String::new() } else { format!("  {}", method.join(", ")) };
        line + &ends + &method
    }
}

/// Where Role-Agent's task weights are saved in a checkpoint.
const SAMPLER_FILE: &str = "role-agent-sampler.json";

/// One step's samples, as the method drew and scored them.
pub struct Batch {
    pub sequences: Vec<TrainingSequence>,
    /// The index (in the step's tasks) of the task each sequence belongs to.
    pub task_of: Vec<usize>,
    /// Per group, the rewards the policy itself earned (before guidance or shaping).
    pub groups: Vec<Vec<f64>>,
    /// Per episode of `groups`, the tokens the policy sampled in it (its replies, not the
    /// tool results): the rollout length, apart from what branches added.
    pub rollout_lengths: Vec<usize>,
    pub ends: Vec<EpisodeEnd>,
    pub method_metrics: BTreeMap<String, f64>,
    pub rollout_seconds: f64,
}

/// A training run: the trainer, and the engine serving its latest published policy.
pub struct GrpoRun {
    pub trainer: Trainer,
    pub config: GrpoConfig,
    pub name: String,
    policy_dir: PathBuf,
    engine: Arc<dyn Engine>,
    published: Vec<PathBuf>,
    /// Role-Agent's failure-driven task weights (created at the first step).
    sampler: Option<FailureSampler>,
}

impl GrpoRun {
    /// Starts (or resumes) a run: publishes the trainer's current policy into `policy_dir`
    /// and loads it into an engine. A fresh trainer publishes the base model itself, with
    /// every tensor F32, so that even the first step samples what the trainer computes.
    pub async fn start(trainer: Trainer, config: GrpoConfig, name: &str, policy_dir: &Path) -> anyhow::Result<Self> {
        let id = policy_id(name, trainer.step());
        let (engine, path) = publish_policy(&trainer, policy_dir, &id).await?;
        Ok(Self {
            engine,
            trainer,
            config,
            name: name.to_string(),
            policy_dir: policy_dir.to_path_buf(),
            published: vec![path],
            sampler: None,
        })
    }

    /// Saves the method's own state beside the trainer's checkpoint in `dir` (Role-Agent's
    /// task weights; nothing for the other methods).
    pub fn save_method_state(&self, dir: &Path) -> anyhow::Result<()> {
        if let Some(sampler) = &self.sampler {
            std::fs::write(dir.join(SAMPLER_FILE), serde_json::to_vec(sampler)?)?;
        }
        Ok(())
    }

    /// Restores what [`GrpoRun::save_method_state`] saved, if anything.
    pub fn load_method_state(&mut self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(SAMPLER_FILE);
        if path.exists() {
            self.sampler = Some(serde_json::from_slice(&std::fs::read(&path)?)?);
        }
        Ok(())
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

    /// The samples of step `step` over `tasks` as the configured method draws and scores
    /// them, ready for the update (or for export), without updating anything but
    /// Role-Agent's task weights.
    pub async fn collect(&mut self, tasks: &[Task], step: u64) -> anyhow::Result<Batch> {
        let started = Instant::now();
        let mut sequences = Vec::new();
        let mut task_of = Vec::new();
        let mut groups = Vec::new();
        let mut rollout_lengths = Vec::new();
        let mut ends: Vec<EpisodeEnd> = Vec::new();
        let mut method_metrics = BTreeMap::new();
        // Role-Agent draws the step's tasks by their failure weights; the others take each once.
        let methods = self.config.methods.clone();
        let drawn: Vec<usize> = if methods.uses(Method::RoleAgent) {
            let sampler = self.sampler.get_or_insert_with(|| FailureSampler::new(tasks.len()));
            anyhow::ensure!(
                sampler.weights().len() == tasks.len(),
                "the run's task weights cover {} tasks, not {}: resume it with the same tasks",
                sampler.weights().len(),
                tasks.len()
            );
            sampler.draw(tasks.len(), self.config.seed ^ step)
        } else {
            (0..tasks.len()).collect()
        };
        for (index, &task_index) in drawn.iter().enumerate() {
            let task = &tasks[task_index];
            let group_seed = self.config.seed ^ (step << 20) ^ index as u64;
            let mut limits = self.config.limits.clone();
            limits.predict_observations = methods.uses(Method::RoleAgent);
            let mut episodes =
                episode::run_group(self.engine.as_ref(), task, self.config.group_size, &self.config.sampling, &limits, group_seed).await?;
            let measured: Vec<f64> = episodes.iter().map(|e| e.reward).collect();
            rollout_lengths.extend(episodes.iter().map(|e| e.logprobs.len()));
            let mut unguided_prompt = None;
            if methods.uses(Method::ActGuide) && actguide::is_hard(&measured) {
                *method_metrics.entry("hard_groups".into()).or_insert(0.0) += 1.0;
                if let Some((length, guided)) = self.guide(task, &limits, group_seed, &mut method_metrics).await? {
                    *method_metrics.entry("hint_length_sum".into()).or_insert(0.0) += length as f64;
                    unguided_prompt = Some(episodes[0].prompt.clone());
                    episodes = guided;
                }
            }
            // What the policy itself earned (unguided, unshaped): the step's measured rewards.
            groups.push(measured);
            let rewards: Vec<f64> = episodes.iter().map(|e| self.reward(e, Some(&mut method_metrics))).collect();
            if methods.uses(Method::RoleAgent) {
                let sampler = self.sampler.as_mut().expect("created above");
                let prompt_of = |t: usize| tasks[t].messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
                for _failed in episodes.iter().filter(|e| e.reward <= 0.0) {
                    sampler.record_failure(task_index, |a, b| role_agent::similarity(&prompt_of(a), &prompt_of(b)));
                }
            }
            match methods.branching() {
                Some(branching) if unguided_prompt.is_none() => {
                    let branched = match branching {
                        Method::Appo => self.appo_sequences(task, &episodes, &rewards, &limits, group_seed, &mut method_metrics).await?,
                        _ => self.resum_sequences(task, &episodes, &rewards, &limits, group_seed, &mut method_metrics).await?,
                    };
                    sequences.extend(branched);
                    task_of.resize(sequences.len(), task_index);
                    ends.extend(episodes.iter().map(|e| e.end));
                    continue;
                }
                Some(_) => *method_metrics.entry("guided_groups_without_branches".into()).or_insert(0.0) += 1.0,
                None => {}
            }
            let advantages = math::group_advantages(&rewards, self.config.estimator);
            for (episode, advantage) in episodes.iter().zip(advantages) {
                sequences.push(match &unguided_prompt {
                    Some(prompt) => actguide::unguided_sequence(prompt, episode, advantage),
                    None => episode.training_sequence(advantage),
                });
                ends.push(episode.end);
            }
            task_of.resize(sequences.len(), task_index);
        }
        if let Some(sampler) = &self.sampler {
            for (t, weight) in sampler.weights().iter().enumerate() {
                method_metrics.insert(format!("task_weight_{t}"), *weight);
            }
        }
        Ok(Batch { sequences, task_of, groups, rollout_lengths, ends, method_metrics, rollout_seconds: started.elapsed().as_secs_f64() })
    }

    /// One step over `tasks`: rollouts, the update, and publishing the new policy.
    pub async fn step(&mut self, tasks: &[Task]) -> anyhow::Result<StepReport> {
        let step = self.trainer.step() + 1;
        let Batch { sequences, groups, rollout_lengths, ends, method_metrics, rollout_seconds, .. } = self.collect(tasks, step).await?;

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
            rollout_length_mean: rollout_lengths.iter().sum::<usize>() as f64 / rollout_lengths.len().max(1) as f64,
            ends: ends.iter().fold(BTreeMap::new(), |mut counts, end| {
                *counts.entry(*end).or_insert(0) += 1;
                counts
            }),
            method_metrics,
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

impl GrpoRun {
    /// ActGuide's guidance for a hard group: the hint length by binary search (two
    /// rollouts per probe, a probe succeeding when either earns a reward), then the group
    /// sampled again with that much of the plan. `None` when the task has no plan.
    async fn guide(
        &self,
        task: &Task,
        limits: &EpisodeLimits,
        group_seed: u64,
        metrics: &mut BTreeMap<String, f64>,
    ) -> anyhow::Result<Option<(usize, Vec<Episode>)>> {
        if task.actions.is_empty() {
            return Ok(None);
        }
        let engine = self.engine.clone();
        let sampling = self.config.sampling.clone();
        let search = actguide::search_hint_length(task.actions.len(), |k| {
            let guided = task.with_hint(&actguide::plan_hint(&task.actions, k));
            let (engine, sampling, limits) = (engine.clone(), sampling.clone(), limits.clone());
            async move {
                let probes =
                    episode::run_group(engine.as_ref(), &guided, actguide::PROBE_ROLLOUTS, &sampling, &limits, group_seed ^ k as u64)
                        .await?;
                Ok(probes.iter().any(|e| e.reward > 0.0))
            }
        })
        .await?;
        *metrics.entry("probes".into()).or_insert(0.0) += search.probes.len() as f64;
        let guided = task.with_hint(&actguide::plan_hint(&task.actions, search.length));
        let episodes =
            episode::run_group(self.engine.as_ref(), &guided, self.config.group_size, &self.config.sampling, limits, group_seed).await?;
        Ok(Some((search.length, episodes)))
    }
}

impl GrpoRun {
    /// A branch of `source` at its sampled token `position`: the reply holding it resumed
    /// with its tokens up to `position` kept, or replaced by `reply_prefix` when given.
    async fn branch(
        &self,
        task: &Task,
        source: &Episode,
        limits: &EpisodeLimits,
        position: usize,
        reply_prefix: Option<Vec<u32>>,
        seed: u64,
    ) -> anyhow::Result<Branch> {
        let spans = source.reply_spans();
        let turn = spans.iter().position(|span| span.contains(&position)).context("a branch point must be a token the policy sampled")?;
        let reply_prefix = reply_prefix.unwrap_or_else(|| source.tokens[spans[turn].start..=position].to_vec());
        let at = ResumeAt { source, turn, reply_prefix: &reply_prefix };
        episode::resume_episode(self.engine.as_ref(), task, &self.config.sampling, limits, at, seed).await
    }

    /// APPO for one group: branch points across the group (z-scored entropy times z-scored
    /// discounted ratio over each rollout's own tokens; the top `branches`), one
    /// continuation from each (in an agent episode, the rest of that reply and the turns
    /// after it), and the initial rollouts' token advantages from both groups, scaled along
    /// the procedure. Positions count the policy's tokens only: tool results are neither
    /// branch points nor steps of the procedure. The rollouts are sampled by the policy
    /// being trained, so the discounted ratio is 1 everywhere and the entropy ranks points.
    async fn appo_sequences(
        &self,
        task: &Task,
        episodes: &[Episode],
        rewards: &[f64],
        limits: &EpisodeLimits,
        group_seed: u64,
        metrics: &mut BTreeMap<String, f64>,
    ) -> anyhow::Result<Vec<TrainingSequence>> {
        // (rollout, index among its sampled tokens) of every candidate position.
        let mut owners: Vec<(usize, usize)> = Vec::new();
        let mut scores = Vec::new();
        let mut eligible = Vec::new();
        let positions_of: Vec<Vec<usize>> = episodes.iter().map(Episode::sampled_positions).collect();
        for (i, (episode, positions)) in episodes.iter().zip(&positions_of).enumerate() {
            // A reply's last token has nothing after it in the reply to branch into.
            let reply_ends: Vec<usize> = episode.reply_spans().iter().map(|span| span.end - 1).collect();
            let mut content = Vec::with_capacity(positions.len());
            for &p in positions {
                content.push(!reply_ends.contains(&p) && appo::is_content_token(&self.engine.detokenize(&[episode.tokens[p]]).await?));
            }
            let entropy: Vec<f64> = (0..positions.len()).map(|k| episode.entropies.get(k).copied().unwrap_or(0.0) as f64).collect();
            let omega = vec![1.0; positions.len()];
            scores.extend(appo::branching_scores(&entropy, &omega, &content));
            eligible.extend(content);
            owners.extend((0..positions.len()).map(|k| (i, k)));
        }
        let points = appo::select_branch_points(&scores, &eligible, self.config.branches);
        *metrics.entry("candidates".into()).or_insert(0.0) +=
            scores.iter().zip(&eligible).filter(|(s, e)| **e && s.is_candidate()).count() as f64;
        *metrics.entry("branch_points".into()).or_insert(0.0) += points.len() as f64;
        let mut branch_rewards = Vec::with_capacity(points.len());
        for (b, &point) in points.iter().enumerate() {
            let (i, k) = owners[point];
            let source = &episodes[i];
            let position = positions_of[i][k];
            if source.sampled[..position].iter().any(|sampled| !sampled) {
                *metrics.entry("branch_points_in_later_turns".into()).or_insert(0.0) += 1.0;
            }
            let seed = group_seed ^ ((b as u64 + 1) << 32);
            let branch = self.branch(task, source, limits, position, None, seed).await?;
            branch_rewards.push(self.reward(&branch.episode, None));
        }
        if !branch_rewards.is_empty() {
            *metrics.entry("branch_reward_sum".into()).or_insert(0.0) += branch_rewards.iter().sum::<f64>();
        }
        let initial = math::group_advantages(rewards, self.config.estimator);
        let branch = math::group_advantages(&branch_rewards, self.config.estimator);
        Ok(episodes
            .iter()
            .enumerate()
            .map(|(i, episode)| {
                // This rollout's branch points, each with the mean advantage of its branches.
                let mut at: BTreeMap<usize, (f64, usize, f64)> = BTreeMap::new();
                for (b, &point) in points.iter().enumerate() {
                    if owners[point].0 == i {
                        let entry = at.entry(owners[point].1).or_insert((0.0, 0, scores[point].score));
                        entry.0 += branch[b];
                        entry.1 += 1;
                    }
                }
                let branches: Vec<(usize, f64)> = at.iter().map(|(k, (sum, n, _))| (*k, sum / *n as f64)).collect();
                let bs: Vec<(usize, f64)> = at.iter().map(|(k, (_, _, score))| (*k, *score)).collect();
                let trained = positions_of[i].len();
                let scaling = appo::procedure_scaling(trained, &bs);
                let mut sequence = episode.training_sequence(initial[i]);
                sequence.token_advantages = appo::initial_token_advantages(initial[i], trained, &branches, &scaling);
                sequence
            })
            .collect())
    }
}

impl GrpoRun {
    /// ReSum for one group. Natural points (the policy wrote the phrase) branch without
    /// it: the reply up to the phrase, sampled on. Artifact points (seeded, `branches` per
    /// group, one per rollout in turn) branch with it: the reply up to the point, the
    /// phrase, sampled on. In an agent episode the phrase can only stand where the tool
    /// grammar takes free text, so artifact points lie inside the final answer's text.
    /// Each pair's advantages are opposite (the side with the summary gains what the other
    /// lost) and apply from the branch point on; the rollouts also keep their group
    /// advantage. A branch trains only its own sampled tokens: the shared prefix is trained
    /// in its rollout, and the injected phrase in none.
    async fn resum_sequences(
        &self,
        task: &Task,
        episodes: &[Episode],
        rewards: &[f64],
        limits: &EpisodeLimits,
        group_seed: u64,
        metrics: &mut BTreeMap<String, f64>,
    ) -> anyhow::Result<Vec<TrainingSequence>> {
        let phrase = self.engine.tokenize_text(&format!(" {}", self.config.phrase.trim())).await?;
        let initial = math::group_advantages(rewards, self.config.estimator);
        let mut token_advantages: Vec<Vec<f64>> =
            episodes.iter().zip(&initial).map(|(e, a)| vec![*a; e.sampled_positions().len()]).collect();
        let mut branches = Vec::new();
        let mut artifacts_left = self.config.branches;
        for (i, episode) in episodes.iter().enumerate() {
            let positions = episode.sampled_positions();
            let spans = episode.reply_spans();
            let mut naturals = Vec::new();
            for span in &spans {
                naturals.extend(resum::natural_points(&episode.tokens[span.clone()], &phrase).into_iter().map(|n| span.start + n));
            }
            let artifacts = if artifacts_left > 0 {
                let free: Vec<usize> = self
                    .free_text_points(task, episode)
                    .await?
                    .into_iter()
                    .filter(|p| !naturals.iter().any(|n| (*n..n + phrase.len()).contains(p)))
                    .collect();
                let picked: Vec<usize> =
                    resum::artifact_points(0, free.len(), &[], 0, 1, group_seed ^ i as u64).into_iter().map(|k| free[k]).collect();
                if !picked.is_empty() {
                    artifacts_left -= 1;
                }
                picked
            } else {
                Vec::new()
            };
            *metrics.entry("natural_points".into()).or_insert(0.0) += naturals.len() as f64;
            *metrics.entry("artifact_points".into()).or_insert(0.0) += artifacts.len() as f64;
            let points = naturals.iter().map(|p| (*p, true)).chain(artifacts.iter().map(|p| (*p, false)));
            for (b, (point, natural)) in points.enumerate() {
                // The branch's reply up to the point, with the phrase injected at an artifact
                // point (a natural point drops it).
                let span = spans.iter().find(|span| span.contains(&point)).context("a ReSum point lies in a reply")?;
                let mut reply_prefix: Vec<u32> = episode.tokens[span.start..point].to_vec();
                if !natural {
                    reply_prefix.extend_from_slice(&phrase);
                }
                let seed = group_seed ^ (((i as u64) << 40) | ((b as u64 + 1) << 32));
                let branch = self.branch(task, episode, limits, point, Some(reply_prefix), seed).await?;
                let reward = self.reward(&branch.episode, None);
                let (with, without) =
                    if natural { resum::paired_advantage(rewards[i], reward) } else { resum::paired_advantage(reward, rewards[i]) };
                let (rollout_side, branch_side) = if natural { (with, without) } else { (without, with) };
                *metrics.entry("pair_gain_sum".into()).or_insert(0.0) += with;
                let first_trained = positions.partition_point(|p| *p < point);
                for advantage in &mut token_advantages[i][first_trained..] {
                    *advantage += rollout_side;
                }
                let sequence = branch.training_sequence(branch_side);
                if sequence.trained_tokens() > 0 {
                    branches.push(sequence);
                }
            }
        }
        *metrics.entry("branches".into()).or_insert(0.0) += branches.len() as f64;
        let mut sequences: Vec<TrainingSequence> = episodes
            .iter()
            .zip(token_advantages)
            .zip(&initial)
            .map(|((episode, advantages), advantage)| TrainingSequence {
                token_advantages: advantages,
                ..episode.training_sequence(*advantage)
            })
            .collect();
        sequences.extend(branches);
        Ok(sequences)
    }

    /// Positions in `episode.tokens` where ReSum may inject its phrase: anywhere after the
    /// first token of a single reply, and in an agent episode inside the text of its final
    /// answer (the only free text the tool grammar admits the phrase into).
    async fn free_text_points(&self, task: &Task, episode: &Episode) -> anyhow::Result<Vec<usize>> {
        if !task.is_agentic() {
            return Ok((1..episode.tokens.len()).collect());
        }
        let Some(last) = episode.reply_spans().pop().filter(|_| episode.answer.is_some()) else {
            return Ok(Vec::new());
        };
        let mut points = Vec::new();
        for point in last.start + 1..last.end {
            let text = self.engine.detokenize(&episode.tokens[last.start..point]).await?;
            if resum::inside_answer_text(&text) {
                points.push(point);
            }
        }
        Ok(points)
    }
}

impl GrpoRun {
    /// An episode's reward as the run's methods score it: under Role-Agent shaped by its
    /// predictions (counted in `metrics` when given), otherwise its verifier's.
    fn reward(&self, episode: &Episode, metrics: Option<&mut BTreeMap<String, f64>>) -> f64 {
        if !self.config.methods.uses(Method::RoleAgent) {
            return episode.reward;
        }
        let steps: Vec<(Option<String>, String)> = episode
            .turns
            .iter()
            .filter_map(|turn| turn.result.clone().map(|result| (role_agent::prediction(&turn.text), result)))
            .collect();
        let shaped = role_agent::shaped_reward(episode.reward, &steps, role_agent::PREDICTION_WEIGHT);
        if let Some(metrics) = metrics {
            for prediction in steps.iter().filter_map(|(prediction, result)| prediction.as_ref().map(|p| (p, result))) {
                *metrics.entry("predictions".into()).or_insert(0.0) += 1.0;
                *metrics.entry("prediction_similarity_sum".into()).or_insert(0.0) += role_agent::similarity(prediction.0, prediction.1);
            }
            *metrics.entry("shaped_reward_sum".into()).or_insert(0.0) += shaped;
        }
        shaped
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_combine_where_they_change_different_parts_of_a_step() {
        let all = Methods::parse("actguide+role-agent+appo").unwrap();
        assert!(all.uses(Method::ActGuide) && all.uses(Method::RoleAgent));
        assert_eq!(all.branching(), Some(Method::Appo));
        assert_eq!(all.name(), "actguide+role-agent+appo");
        assert_eq!(Methods::parse("resum,actguide").unwrap().name(), "actguide+resum");
        assert!(Methods::parse("grpo").unwrap().is_grpo());
        assert!(Methods::parse("appo+resum").unwrap_err().contains("at most one"));
        assert!(Methods::parse("actguide+ppo").unwrap_err().contains("`ppo` is not a method"));
    }

    #[test]
    fn a_checkpoint_of_one_method_still_loads() {
        let old: GrpoConfig = serde_json::from_value(serde_json::json!({
            "group_size": 4, "sampling": SamplingConfig::default(), "estimator": GrpoConfig::default().estimator,
            "seed": 1, "keep_policies": 2, "method": "appo"
        }))
        .unwrap();
        assert_eq!(old.methods, Method::Appo.into());
        let saved = serde_json::to_value(GrpoConfig { methods: Methods::parse("actguide+resum").unwrap(), ..old }).unwrap();
        assert_eq!(saved["methods"], serde_json::json!(["actguide", "resum"]));
        let back: GrpoConfig = serde_json::from_value(saved).unwrap();
        assert_eq!(back.methods.name(), "actguide+resum");
        let mut bad = serde_json::to_value(GrpoConfig::default()).unwrap();
        bad["methods"] = serde_json::json!(["appo", "resum"]);
        assert!(serde_json::from_value::<GrpoConfig>(bad).is_err(), "a combination the run refuses is refused from a file too");
    }
}
