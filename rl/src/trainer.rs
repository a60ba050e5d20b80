//! One policy-gradient update on the CPU: the clipped objective of [`crate::math`] over the
//! trainable policy of [`crate::policy`], AdamW with gradient clipping, and checkpoints that
//! resume exactly.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::math::{self, Aggregation, Clip};
use crate::policy::{Adapters, BaseModel, LoraConfig, Policy, TokenBatch};

/// One sampled sequence to learn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSequence {
    /// The whole sequence: prompt, the policy's tokens and any tool results between them.
    pub tokens: Vec<u32>,
    /// `true` where `tokens[i]` was sampled from the policy and is trained on; prompt and
    /// tool-result tokens are `false`. `mask[0]` is always `false` (nothing predicts it).
    pub mask: Vec<bool>,
    /// The logprob the engine sampled each trained token with, in order.
    pub engine_logprobs: Vec<f32>,
    /// The advantage of this sequence (the same for all its tokens, unless
    /// `token_advantages` says otherwise).
    pub advantage: f64,
    /// One advantage per trained token, in order, where a method gives tokens different
    /// ones (APPO's prefixes of branch points); empty: `advantage` for every token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_advantages: Vec<f64>,
    /// The ratio's old policy for this sequence, where it differs from the trainer's
    /// (ActGuide's guided samples are the behaviour policy's, not the trained prompt's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_policy: Option<OldPolicy>,
}

impl TrainingSequence {
    /// A prompt followed by a sampled completion, every completion token trained.
    pub fn completion(prompt: &[u32], completion: &[u32], engine_logprobs: Vec<f32>, advantage: f64) -> Self {
        let tokens: Vec<u32> = prompt.iter().chain(completion).copied().collect();
        let mask = (0..tokens.len()).map(|i| i >= prompt.len()).collect();
        Self { tokens, mask, engine_logprobs, advantage, token_advantages: Vec::new(), old_policy: None }
    }

    /// The advantage of trained token `index`.
    pub fn advantage_of(&self, index: usize) -> f64 {
        self.token_advantages.get(index).copied().unwrap_or(self.advantage)
    }

    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }
}

/// The update's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    /// Gradients are scaled down to this global L2 norm when above it.
    pub max_grad_norm: f64,
    pub clip: Clip,
    /// Weight of the k3 estimate of KL(π_θ ‖ π_ref) in the loss. The reference pass runs
    /// also at 0, because the KL is watched from the first step either way.
    pub kl_coef: f64,
    pub aggregation: Aggregation,
    /// What the clipped ratio compares the policy with.
    pub old_policy: OldPolicy,
    /// Most tokens one forward pass holds; a step's sequences are split into micro-batches
    /// of at most this many (padded) tokens and their gradients summed.
    pub micro_batch_tokens: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            clip: Clip::default(),
            kl_coef: 0.0,
            aggregation: Aggregation::TokenMean,
            old_policy: OldPolicy::Recomputed,
            micro_batch_tokens: 1024,
        }
    }
}

/// The "old" policy of PPO's ratio `π_θ / π_old`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldPolicy {
    /// The trainer's own logprobs before the update. On-policy (samples from the policy
    /// being updated) the ratio starts at 1 and clipping never binds in a single epoch.
    #[default]
    Recomputed,
    /// The logprobs the engine sampled with. For samples drawn by an older policy (an
    /// asynchronous rollout, a replayed buffer) the ratio measures how far the policy has
    /// moved since, and the clip bounds the update; this is also how the behaviour
    /// policy's grammar masking, if any, enters the ratio.
    Behaviour,
}

/// AdamW over the adapters, with its moments kept as tensors so that a checkpoint holds
/// them exactly.
struct AdamW {
    step: u64,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
}

impl AdamW {
    fn new(vars: &[&Var]) -> anyhow::Result<Self> {
        let zeros = |v: &&Var| Tensor::zeros(v.dims(), DType::F32, &Device::Cpu);
        Ok(Self {
            step: 0,
            first: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            second: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
        })
    }

    fn update(&mut self, vars: &[&Var], grads: &[Tensor], config: &TrainerConfig) -> anyhow::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let correction1 = 1.0 - config.beta1.powi(t);
        let correction2 = 1.0 - config.beta2.powi(t);
        for (i, (var, grad)) in vars.iter().zip(grads).enumerate() {
            self.first[i] = ((&self.first[i] * config.beta1)? + (grad * (1.0 - config.beta1))?)?;
            self.second[i] = ((&self.second[i] * config.beta2)? + (grad.sqr()? * (1.0 - config.beta2))?)?;
            let m_hat = (&self.first[i] / correction1)?;
            let v_hat = (&self.second[i] / correction2)?;
            let step = (m_hat / (v_hat.sqrt()? + config.adam_eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - config.learning_rate * config.weight_decay))?;
            var.set(&(decayed - (step * config.learning_rate)?)?)?;
        }
        Ok(())
    }
}

/// What one update measured, besides the rewards (which the caller knows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub clip_fraction: f64,
    pub approx_kl: f64,
    pub entropy: f64,
    pub logprob_gap: f64,
    pub trained_tokens: usize,
    /// Tensors of the adapters that received a non-zero gradient, of all of them.
    pub tensors_with_gradient: usize,
    pub tensors: usize,
    pub reference_seconds: f64,
    pub train_seconds: f64,
    /// Per sequence, the trainer's logprob of each trained token before the update.
    pub trainer_logprobs: Vec<Vec<f32>>,
}

/// The adapters, their optimizer and the step counter over a frozen base.
pub struct Trainer {
    pub base: std::sync::Arc<BaseModel>,
    pub adapters: Adapters,
    pub config: TrainerConfig,
    pub seed: u64,
    optimizer: AdamW,
}

/// The positions of a micro-batch's trained tokens: flat rows, targets, and whose each is.
struct Positions {
    rows: Vec<u32>,
    targets: Vec<u32>,
    owners: Vec<Owner>,
}

/// Where a trained token comes from.
#[derive(Clone, Copy)]
struct Owner {
    /// The sequence, indexed in the whole step.
    sequence: usize,
    /// Its index among the sequence's trained tokens.
    index: usize,
    /// Its position in the sequence's tokens.
    position: usize,
}

fn positions(sequences: &[&TrainingSequence], time: usize, first: usize) -> Positions {
    let mut out = Positions { rows: Vec::new(), targets: Vec::new(), owners: Vec::new() };
    for (s, sequence) in sequences.iter().enumerate() {
        let mut index = 0;
        for (p, (&token, &trained)) in sequence.tokens.iter().zip(&sequence.mask).enumerate() {
            if trained && p > 0 {
                out.rows.push((s * time + p - 1) as u32);
                out.targets.push(token);
                out.owners.push(Owner { sequence: first + s, index, position: p });
                index += 1;
            }
        }
    }
    out
}

/// Makes glibc's allocator keep freed memory for reuse instead of handing it back to the
/// kernel at once.
///
/// A training step allocates and frees activations of megabytes each, hundreds of times.
/// With glibc's defaults most of them are fresh pages from the kernel, zeroed and faulted
/// in one by one: profiled on a step of the default model, page faults and page clearing
/// took about 40 % of the time. Allocations up to glibc's largest mmap threshold (32 MiB)
/// now come from the heap, and the heap is not trimmed below 1 GiB of free space.
fn reuse_freed_memory() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        #[allow(unsafe_code)]
        // SAFETY: `mallopt` only sets two of glibc's allocator parameters; it takes plain
        // integers, touches no memory of ours, and is documented as callable at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

impl Trainer {
    pub fn new(base: std::sync::Arc<BaseModel>, lora: LoraConfig, config: TrainerConfig, seed: u64) -> anyhow::Result<Self> {
        reuse_freed_memory();
        let adapters = Adapters::new(&base, lora, seed)?;
        let optimizer = AdamW::new(&adapters.vars())?;
        Ok(Self { base, adapters, config, seed, optimizer })
    }

    /// Updates applied so far.
    pub fn step(&self) -> u64 {
        self.optimizer.step
    }

    /// Splits sequences into micro-batches of at most `micro_batch_tokens` padded tokens.
    fn micro_batches<'s>(&self, sequences: &'s [TrainingSequence]) -> Vec<(usize, Vec<&'s TrainingSequence>)> {
        let mut batches: Vec<(usize, Vec<&TrainingSequence>)> = Vec::new();
        let mut start = 0;
        let mut current: Vec<&TrainingSequence> = Vec::new();
        for (i, sequence) in sequences.iter().enumerate() {
            let longest = current.iter().map(|s| s.tokens.len()).max().unwrap_or(0).max(sequence.tokens.len());
            if !current.is_empty() && longest * (current.len() + 1) > self.config.micro_batch_tokens {
                batches.push((start, std::mem::take(&mut current)));
                start = i;
            }
            current.push(sequence);
        }
        if !current.is_empty() {
            batches.push((start, current));
        }
        batches
    }

    /// Each micro-batch with trained tokens, padded, with the positions of those tokens.
    fn prepared_batches(&self, sequences: &[TrainingSequence]) -> anyhow::Result<Vec<(TokenBatch, Positions)>> {
        let mut prepared = Vec::new();
        for (first, batch) in self.micro_batches(sequences) {
            let tokens = TokenBatch::new(&batch.iter().map(|s| s.tokens.as_slice()).collect::<Vec<_>>())?;
            let at = positions(&batch, tokens.time, first);
            if !at.rows.is_empty() {
                prepared.push((tokens, at));
            }
        }
        Ok(prepared)
    }

    /// The trainer's logprob of every trained token under the current adapters (no update).
    pub fn logprobs(&self, sequences: &[TrainingSequence]) -> anyhow::Result<Vec<Vec<f32>>> {
        self.scores(sequences, true)
    }

    /// The logprob of every trained token, detached; `adapted` false scores the frozen base
    /// (the reference policy).
    fn scores(&self, sequences: &[TrainingSequence], adapted: bool) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut logprobs: Vec<Vec<f32>> = sequences.iter().map(|s| Vec::with_capacity(s.trained_tokens())).collect();
        let policy = Policy { base: &self.base, adapters: adapted.then_some(&self.adapters) };
        for (tokens, at) in self.prepared_batches(sequences)? {
            let scored = policy.score(&tokens, &at.rows, &at.targets)?;
            let values: Vec<f32> = scored.logprobs.detach().to_vec1()?;
            for (k, owner) in at.owners.iter().enumerate() {
                logprobs[owner.sequence].push(values[k]);
            }
        }
        Ok(logprobs)
    }

    /// One policy-gradient update on `sequences` (on-policy: the trainer's own logprobs
    /// before the update are the "old" policy of the clipped ratio; the engine's logprobs
    /// are compared with them and reported as the gap).
    pub fn update(&mut self, sequences: &[TrainingSequence]) -> anyhow::Result<UpdateStats> {
        for (i, sequence) in sequences.iter().enumerate() {
            if sequence.tokens.len() != sequence.mask.len() {
                bail!("sequence {i} has {} tokens but a mask of {}", sequence.tokens.len(), sequence.mask.len());
            }
            if !sequence.token_advantages.is_empty() && sequence.token_advantages.len() != sequence.trained_tokens() {
                bail!(
                    "sequence {i} has {} trained tokens but {} token advantages",
                    sequence.trained_tokens(),
                    sequence.token_advantages.len()
                );
            }
        }
        let masks: Vec<Vec<bool>> = sequences.iter().map(|s| s.mask.iter().skip(1).copied().collect()).collect();
        let weights = math::aggregation_weights(&masks, self.config.aggregation);
        let mut stats = UpdateStats { trained_tokens: sequences.iter().map(|s| s.trained_tokens()).sum(), ..Default::default() };

        let started = Instant::now();
        let reference = Some(self.scores(sequences, false)?);
        stats.reference_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let vars = self.adapters.vars();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut trainer_logprobs: Vec<Vec<f32>> = sequences.iter().map(|_| Vec::new()).collect();
        let mut entropies: Vec<Vec<f32>> = trainer_logprobs.clone();
        let mut clipped: Vec<Vec<bool>> = trainer_logprobs.iter().map(|_| Vec::new()).collect();
        let mut ref_ratio: Vec<Vec<f64>> = trainer_logprobs.iter().map(|_| Vec::new()).collect();
        let mut total_loss = 0.0;
        let policy = Policy { base: &self.base, adapters: Some(&self.adapters) };
        for (tokens, at) in self.prepared_batches(sequences)? {
            let scored = policy.score(&tokens, &at.rows, &at.targets)?;
            let n = at.rows.len();
            let advantages: Vec<f32> = at.owners.iter().map(|o| sequences[o.sequence].advantage_of(o.index) as f32).collect();
            // Token weights of the aggregation: every mode is a weighted sum of token losses.
            let token_weights: Vec<f32> = at.owners.iter().map(|o| weights[o.sequence][o.position - 1] as f32).collect();
            let recomputed = scored.logprobs.detach();
            // Each token's old logprob: the trainer's recomputation, or the engine's for the
            // sequences (or the whole update) whose ratio is against the behaviour policy.
            let recomputed_values: Vec<f32> = recomputed.to_vec1()?;
            let mut values = Vec::with_capacity(n);
            for (k, owner) in at.owners.iter().enumerate() {
                let sequence = &sequences[owner.sequence];
                values.push(match sequence.old_policy.unwrap_or(self.config.old_policy) {
                    OldPolicy::Recomputed => recomputed_values[k],
                    OldPolicy::Behaviour => sequence.engine_logprobs.get(owner.index).copied().ok_or_else(|| {
                        anyhow::anyhow!("sequence {} lacks the engine's logprob of its trained token {}", owner.sequence, owner.index)
                    })?,
                });
            }
            let old = Tensor::from_vec(values, n, &Device::Cpu)?;
            let advantage = Tensor::from_vec(advantages.clone(), n, &Device::Cpu)?;
            let ratio = (&scored.logprobs - &old)?.exp()?;
            let clip = self.config.clip;
            let unclipped = (ratio.neg()? * &advantage)?;
            let clipped_ratio = ratio.clamp(1.0 - clip.low, 1.0 + clip.high)?;
            let clipped_term = (clipped_ratio.neg()? * &advantage)?;
            let mut loss = unclipped.maximum(&clipped_term)?;
            if let Some(dual) = clip.dual {
                let bounds: Vec<f32> = advantages.iter().map(|a| if *a < 0.0 { -a * dual as f32 } else { f32::MAX }).collect();
                loss = loss.minimum(&Tensor::from_vec(bounds, n, &Device::Cpu)?)?;
            }
            let old_values: Vec<f32> = old.to_vec1()?;
            let current_values = recomputed_values;
            if let Some(reference) = &reference {
                let ref_values: Vec<f32> = at.owners.iter().map(|o| reference[o.sequence][o.index]).collect();
                let ref_logprobs = Tensor::from_vec(ref_values.clone(), n, &Device::Cpu)?;
                // k3 of log(π_ref / π_θ): exp(r) − r − 1, non-negative, unbiased for KL(π_θ ‖ π_ref).
                let r = (ref_logprobs - &scored.logprobs)?;
                if self.config.kl_coef > 0.0 {
                    let kl = ((r.exp()? - &r)? - 1.0)?;
                    loss = (loss + (kl * self.config.kl_coef)?)?;
                }
                for (k, owner) in at.owners.iter().enumerate() {
                    ref_ratio[owner.sequence].push((current_values[k] - ref_values[k]) as f64);
                }
            }
            let weighted = (loss * Tensor::from_vec(token_weights, n, &Device::Cpu)?)?.sum_all()?;
            total_loss += weighted.to_scalar::<f32>()? as f64;
            let store: GradStore = weighted.backward()?;
            for (i, var) in vars.iter().enumerate() {
                if let Some(grad) = store.get(var.as_tensor()) {
                    grads[i] = Some(match grads[i].take() {
                        Some(sum) => (sum + grad)?,
                        None => grad.clone(),
                    });
                }
            }
            let entropy: Vec<f32> = scored.entropy.to_vec1()?;
            for (k, owner) in at.owners.iter().enumerate() {
                let s = owner.sequence;
                trainer_logprobs[s].push(current_values[k]);
                entropies[s].push(entropy[k]);
                let log_ratio = (current_values[k] - old_values[k]) as f64;
                clipped[s].push(math::ppo_token_loss(log_ratio, advantages[k] as f64, clip).clipped);
            }
        }

        // Global gradient norm and clipping.
        let grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| Tensor::zeros(v.dims(), DType::F32, &Device::Cpu), Ok))
            .collect::<candle_core::Result<_>>()?;
        let mut squared = 0.0f64;
        for grad in &grads {
            let norm: f32 = grad.sqr()?.sum_all()?.to_scalar()?;
            squared += norm as f64;
            stats.tensors_with_gradient += usize::from(norm > 0.0);
        }
        stats.tensors = grads.len();
        stats.grad_norm = squared.sqrt();
        let factor = if stats.grad_norm > self.config.max_grad_norm { self.config.max_grad_norm / (stats.grad_norm + 1e-12) } else { 1.0 };
        let grads: Vec<Tensor> = grads.iter().map(|g| g * factor).collect::<candle_core::Result<_>>()?;
        if stats.grad_norm > 0.0 {
            self.optimizer.update(&vars, &grads, &self.config)?;
        } else {
            // Nothing to learn (every group's rewards were equal): the adapters and moments
            // stay as they are. AdamW's momentum and weight decay would otherwise move the
            // policy anyway; measured on the default model, two such steps raised the KL to
            // the base from 0.19 to 0.35. The step still counts.
            self.optimizer.step += 1;
        }
        stats.train_seconds = started.elapsed().as_secs_f64();

        // Metrics over the trained tokens.
        let engine: Vec<Vec<f64>> = sequences.iter().map(|s| s.engine_logprobs.iter().map(|v| *v as f64).collect()).collect();
        let trainer: Vec<Vec<f64>> = trainer_logprobs.iter().map(|v| v.iter().map(|x| *x as f64).collect()).collect();
        let entropy: Vec<Vec<f64>> = entropies.iter().map(|v| v.iter().map(|x| *x as f64).collect()).collect();
        let dense_masks: Vec<Vec<bool>> = trainer.iter().map(|v| vec![true; v.len()]).collect();
        let per_sequence: Vec<math::SequenceStats<'_>> = (0..sequences.len())
            .map(|s| math::SequenceStats {
                mask: &dense_masks[s],
                clipped: &clipped[s],
                ref_log_ratio: &ref_ratio[s],
                entropy: &entropy[s],
                engine_logprobs: &engine[s],
                trainer_logprobs: &trainer[s],
            })
            .collect();
        let metrics = math::step_metrics(&[], &per_sequence);
        stats.loss = total_loss;
        stats.clip_fraction = metrics.clip_fraction;
        stats.approx_kl = metrics.approx_kl;
        stats.entropy = metrics.entropy;
        stats.logprob_gap = metrics.logprob_gap;
        stats.trainer_logprobs = trainer_logprobs;
        Ok(stats)
    }

    /// Writes the adapters, the optimizer's moments and the step to `dir`.
    pub fn save_checkpoint(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let adapter: HashMap<String, Tensor> = self.adapters.named_tensors()?.into_iter().collect();
        candle_core::safetensors::save(&adapter, dir.join("adapter.safetensors"))?;
        let mut moments = HashMap::new();
        for (i, (first, second)) in self.optimizer.first.iter().zip(&self.optimizer.second).enumerate() {
            moments.insert(format!("m.{i}"), first.clone());
            moments.insert(format!("v.{i}"), second.clone());
        }
        candle_core::safetensors::save(&moments, dir.join("optimizer.safetensors"))?;
        let state = CheckpointState {
            step: self.optimizer.step,
            seed: self.seed,
            lora: self.adapters.config.clone(),
            trainer: self.config.clone(),
            base_model: self.base.path.clone(),
        };
        std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Resumes from a checkpoint written by [`Trainer::save_checkpoint`]: the next update is
    /// the one the saved trainer would have made.
    pub fn resume(base: std::sync::Arc<BaseModel>, dir: &Path) -> anyhow::Result<Self> {
        let state: CheckpointState =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).context("the checkpoint has no state.json")?)?;
        let mut trainer = Trainer::new(base, state.lora, state.trainer, state.seed)?;
        let adapter = candle_core::safetensors::load(dir.join("adapter.safetensors"), &Device::Cpu)?;
        trainer.adapters.load_named(&adapter)?;
        let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)?;
        for i in 0..trainer.optimizer.first.len() {
            trainer.optimizer.first[i] = moments.get(&format!("m.{i}")).context("the optimizer state is incomplete")?.clone();
            trainer.optimizer.second[i] = moments.get(&format!("v.{i}")).context("the optimizer state is incomplete")?.clone();
        }
        trainer.optimizer.step = state.step;
        Ok(trainer)
    }
}

/// What a checkpoint records besides its tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: u64,
    pub seed: u64,
    pub lora: LoraConfig,
    pub trainer: TrainerConfig,
    pub base_model: std::path::PathBuf,
}
