//! The core math of policy-gradient updates, on plain slices.
//!
//! Conventions, fixed here once:
//! - A *group* is the G samples drawn for one prompt; advantages are computed within it.
//! - `log_ratio` is `log π_θ(token) − log π_ref(token)` for KL, and `log π_θ − log π_old`
//!   (the behaviour policy that sampled the token) for the PPO ratio.
//! - Losses are to be minimized; a positive advantage makes its tokens more likely.

use serde::{Deserialize, Serialize};

/// How rewards within a group become advantages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdvantageEstimator {
    /// GRPO: `(r − mean) / (std + ε)` with the sample standard deviation (n − 1), or, with
    /// `normalize_std` off, `r − mean` (Dr.GRPO, which removes the bias towards groups of
    /// low variance).
    Grpo { epsilon: f64, normalize_std: bool },
    /// RLOO: each reward minus the mean of the *other* rewards of its group.
    Rloo,
}

impl Default for AdvantageEstimator {
    fn default() -> Self {
        AdvantageEstimator::Grpo { epsilon: 1e-6, normalize_std: true }
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The sample standard deviation (divided by n − 1); 0 for fewer than two values.
fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// The advantage of each sample of one group. A group whose rewards are all equal gives
/// all-zero advantages whatever the estimator: it carries no signal.
pub fn group_advantages(rewards: &[f64], estimator: AdvantageEstimator) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return Vec::new();
    }
    let m = mean(rewards);
    match estimator {
        AdvantageEstimator::Grpo { epsilon, normalize_std } => {
            let scale = if normalize_std { sample_std(rewards) + epsilon } else { 1.0 };
            rewards.iter().map(|r| (r - m) / scale).collect()
        }
        AdvantageEstimator::Rloo => {
            if n < 2 {
                return vec![0.0; n];
            }
            let total: f64 = rewards.iter().sum();
            rewards.iter().map(|r| r - (total - r) / (n - 1) as f64).collect()
        }
    }
}

/// The estimators of KL(π_θ ‖ π_ref) from one sampled token, given
/// `log_ratio = log π_θ − log π_ref` (Schulman, "Approximating KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `log_ratio`: unbiased, high variance, can be negative.
    K1,
    /// `log_ratio² / 2`: biased, low variance, never negative.
    K2,
    /// `exp(−log_ratio) − 1 + log_ratio`: unbiased, low variance, never negative.
    K3,
}

pub fn kl(log_ratio: f64, estimator: KlEstimator) -> f64 {
    match estimator {
        KlEstimator::K1 => log_ratio,
        KlEstimator::K2 => 0.5 * log_ratio * log_ratio,
        KlEstimator::K3 => (-log_ratio).exp() - 1.0 + log_ratio,
    }
}

/// The clipping of the PPO objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    /// The ratio is clipped to `[1 − low, 1 + high]` (equal for symmetric PPO; a larger
    /// `high` is DAPO's "clip higher").
    pub low: f64,
    pub high: f64,
    /// Dual clip: for a negative advantage the loss is at most `−dual · A`, so that a token
    /// the policy now finds far likelier than the behaviour policy did cannot dominate the
    /// update. `None` turns it off; it must be greater than 1.
    pub dual: Option<f64>,
}

impl Default for Clip {
    fn default() -> Self {
        Clip { low: 0.2, high: 0.2, dual: Some(3.0) }
    }
}

/// One token's clipped surrogate loss and whether clipping decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    pub loss: f64,
    /// The clipped term (or the dual clip) was the one taken: this token's gradient is 0.
    pub clipped: bool,
}

/// The PPO clipped surrogate loss of one token, with `log_ratio = log π_θ − log π_old`.
pub fn ppo_token_loss(log_ratio: f64, advantage: f64, clip: Clip) -> TokenLoss {
    let ratio = log_ratio.exp();
    let unclipped = -advantage * ratio;
    let clipped = -advantage * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    let mut loss = unclipped.max(clipped);
    let mut was_clipped = clipped > unclipped;
    if let (Some(dual), true) = (clip.dual, advantage < 0.0) {
        let bound = -advantage * dual;
        if bound < loss {
            loss = bound;
            was_clipped = true;
        }
    }
    TokenLoss { loss, clipped: was_clipped }
}

/// How per-token losses of a batch of sequences become one number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregation {
    /// Every token of the batch counts the same (DAPO).
    TokenMean,
    /// Each sequence's mean, then the mean over sequences (GRPO as published: a token of
    /// a short sequence weighs more).
    SeqMeanTokenMean,
    /// Each sequence's sum, then the mean over sequences.
    SeqMeanTokenSum,
    /// Each sequence's sum divided by a constant length, then the mean over sequences
    /// (Dr.GRPO: no length bias in either direction).
    SeqMeanTokenSumNorm { max_tokens: usize },
}

/// Aggregates the losses of the tokens that count (`mask` true: the model's own tokens;
/// prompt and tool-result tokens are false) of each sequence.
pub fn aggregate(losses: &[Vec<f64>], masks: &[Vec<bool>], mode: Aggregation) -> f64 {
    let per_sequence: Vec<(f64, usize)> = losses
        .iter()
        .zip(masks)
        .map(|(loss, mask)| loss.iter().zip(mask).filter(|(_, m)| **m).fold((0.0, 0usize), |(sum, count), (l, _)| (sum + l, count + 1)))
        .collect();
    let sequences = per_sequence.len().max(1) as f64;
    match mode {
        Aggregation::TokenMean => {
            let (sum, count) = per_sequence.iter().fold((0.0, 0usize), |(s, c), (sum, count)| (s + sum, c + count));
            if count == 0 {
                0.0
            } else {
                sum / count as f64
            }
        }
        Aggregation::SeqMeanTokenMean => {
            per_sequence.iter().map(|(sum, count)| if *count == 0 { 0.0 } else { sum / *count as f64 }).sum::<f64>() / sequences
        }
        Aggregation::SeqMeanTokenSum => per_sequence.iter().map(|(sum, _)| sum).sum::<f64>() / sequences,
        Aggregation::SeqMeanTokenSumNorm { max_tokens } => {
            per_sequence.iter().map(|(sum, _)| sum / max_tokens.max(1) as f64).sum::<f64>() / sequences
        }
    }
}

/// The weight of each token's loss under `mode`: every aggregation is a weighted sum of
/// token losses, `aggregate(l) = Σ weight · l`, which is what a trainer back-propagates.
/// Tokens that do not count weigh 0.
pub fn aggregation_weights(masks: &[Vec<bool>], mode: Aggregation) -> Vec<Vec<f64>> {
    let sequences = masks.len().max(1) as f64;
    let total: usize = masks.iter().map(|m| m.iter().filter(|c| **c).count()).sum();
    masks
        .iter()
        .map(|mask| {
            let count = mask.iter().filter(|c| **c).count();
            let weight = match mode {
                Aggregation::TokenMean => 1.0 / total.max(1) as f64,
                Aggregation::SeqMeanTokenMean => 1.0 / (count.max(1) as f64 * sequences),
                Aggregation::SeqMeanTokenSum => 1.0 / sequences,
                Aggregation::SeqMeanTokenSumNorm { max_tokens } => 1.0 / (max_tokens.max(1) as f64 * sequences),
            };
            mask.iter().map(|counts| if *counts { weight } else { 0.0 }).collect()
        })
        .collect()
}

/// What a training step is watched by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub reward_mean: f64,
    pub reward_std: f64,
    pub reward_min: f64,
    pub reward_max: f64,
    /// Groups whose rewards were all equal: they teach nothing this step.
    pub zero_variance_groups: f64,
    /// Tokens whose loss the clip decided.
    pub clip_fraction: f64,
    /// Mean k3 estimate of KL(π_θ ‖ π_ref) over the counted tokens.
    pub approx_kl: f64,
    /// Mean entropy of the policy over the counted tokens.
    pub entropy: f64,
    pub length_mean: f64,
    pub length_max: usize,
    /// Mean absolute difference between the logprobs the engine sampled with and the
    /// trainer's recomputation of them: 0 when both compute the same distribution.
    pub logprob_gap: f64,
}

/// What one sequence contributes to the metrics.
pub struct SequenceStats<'a> {
    pub mask: &'a [bool],
    pub clipped: &'a [bool],
    /// `log π_θ − log π_ref` per token.
    pub ref_log_ratio: &'a [f64],
    pub entropy: &'a [f64],
    pub engine_logprobs: &'a [f64],
    pub trainer_logprobs: &'a [f64],
}

/// The metrics of a step from its groups' rewards and its sequences.
pub fn step_metrics(groups: &[Vec<f64>], sequences: &[SequenceStats<'_>]) -> StepMetrics {
    let rewards: Vec<f64> = groups.iter().flatten().copied().collect();
    let zero_variance = groups.iter().filter(|g| g.len() > 1 && g.iter().all(|r| *r == g[0])).count();
    let mut counted = 0usize;
    let (mut clipped, mut kl_sum, mut entropy_sum, mut gap_sum) = (0usize, 0.0, 0.0, 0.0);
    let mut lengths = Vec::new();
    for sequence in sequences {
        let mut length = 0usize;
        for (i, &counts) in sequence.mask.iter().enumerate() {
            if !counts {
                continue;
            }
            length += 1;
            counted += 1;
            clipped += usize::from(sequence.clipped.get(i).copied().unwrap_or(false));
            kl_sum += sequence.ref_log_ratio.get(i).map_or(0.0, |r| kl(*r, KlEstimator::K3));
            entropy_sum += sequence.entropy.get(i).copied().unwrap_or(0.0);
            if let (Some(engine), Some(trainer)) = (sequence.engine_logprobs.get(i), sequence.trainer_logprobs.get(i)) {
                gap_sum += (engine - trainer).abs();
            }
        }
        lengths.push(length);
    }
    let per_token = |sum: f64| if counted == 0 { 0.0 } else { sum / counted as f64 };
    StepMetrics {
        reward_mean: mean(&rewards),
        reward_std: sample_std(&rewards),
        reward_min: rewards.iter().copied().reduce(f64::min).unwrap_or(0.0),
        reward_max: rewards.iter().copied().reduce(f64::max).unwrap_or(0.0),
        zero_variance_groups: if groups.is_empty() { 0.0 } else { zero_variance as f64 / groups.len() as f64 },
        clip_fraction: per_token(clipped as f64),
        approx_kl: per_token(kl_sum),
        entropy: per_token(entropy_sum),
        length_mean: if lengths.is_empty() { 0.0 } else { lengths.iter().sum::<usize>() as f64 / lengths.len() as f64 },
        length_max: lengths.iter().copied().max().unwrap_or(0),
        logprob_gap: per_token(gap_sum),
    }
}

/// The entropy of a distribution given by its logits (a numerically stable softmax).
pub fn entropy_of_logits(logits: &[f64]) -> f64 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return 0.0;
    }
    let log_sum = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    -logits.iter().map(|l| l - log_sum).map(|lp| if lp.is_finite() { lp.exp() * lp } else { 0.0 }).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    fn check(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!(close(*a, *e, 5e-8), "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn grpo_dr_grpo_and_rloo_advantages_match_their_definitions() {
        let grpo = AdvantageEstimator::Grpo { epsilon: 1e-6, normalize_std: true };
        check(&group_advantages(&[1.0, 0.0, 0.0, 0.0], grpo), &[1.4999970, -0.4999990, -0.4999990, -0.4999990]);
        let dr = AdvantageEstimator::Grpo { epsilon: 1e-6, normalize_std: false };
        check(&group_advantages(&[1.0, 0.0, 0.0, 0.0], dr), &[0.75, -0.25, -0.25, -0.25]);
        // RLOO: 1 − mean(0, 0, 0) = 1; 0 − mean(1, 0, 0) = −1/3.
        check(&group_advantages(&[1.0, 0.0, 0.0, 0.0], AdvantageEstimator::Rloo), &[1.0, -1.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0]);
        for estimator in [grpo, dr, AdvantageEstimator::Rloo] {
            check(&group_advantages(&[0.5, 0.5, 0.5], estimator), &[0.0, 0.0, 0.0]);
            assert!(group_advantages(&[], estimator).is_empty());
            check(&group_advantages(&[1.0], estimator), &[0.0]);
        }
    }

    #[test]
    fn kl_estimators_at_known_points() {
        assert!(close(kl(0.1, KlEstimator::K3), 0.0048374180, 1e-10));
        assert!(close(kl(0.1, KlEstimator::K2), 0.005, 1e-12));
        assert!(close(kl(-0.1, KlEstimator::K1), -0.1, 1e-12));
        for estimator in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            assert_eq!(kl(0.0, estimator), 0.0, "identical policies diverge by nothing");
        }
        assert!(kl(-2.0, KlEstimator::K3) > 0.0 && kl(2.0, KlEstimator::K3) > 0.0);
    }

    #[test]
    fn ppo_clips_each_side_and_the_dual_clip_bounds_negative_advantages() {
        let clip = Clip::default();
        // The dual clip: A = −1, ratio 5, c = 3 gives 3 (not 5).
        let dual = ppo_token_loss(5f64.ln(), -1.0, clip);
        assert!(close(dual.loss, 3.0, 1e-12) && dual.clipped);
        let without = ppo_token_loss(5f64.ln(), -1.0, Clip { dual: None, ..clip });
        assert!(close(without.loss, 5.0, 1e-12));
        // A positive advantage stops pulling once the ratio passes 1 + ε.
        let high = ppo_token_loss(1.5f64.ln(), 2.0, clip);
        assert!(close(high.loss, -2.4, 1e-12) && high.clipped);
        // Inside the trust region the unclipped term holds.
        let inside = ppo_token_loss(1.1f64.ln(), 2.0, clip);
        assert!(close(inside.loss, -2.2, 1e-12) && !inside.clipped);
        // A negative advantage with a ratio below 1 − ε is clipped at 0.8.
        let low = ppo_token_loss(0.5f64.ln(), -1.0, clip);
        assert!(close(low.loss, 0.8, 1e-12) && low.clipped);
        // Clip higher: an asymmetric range.
        let asymmetric = ppo_token_loss(1.25f64.ln(), 1.0, Clip { low: 0.2, high: 0.28, dual: None });
        assert!(close(asymmetric.loss, -1.25, 1e-12) && !asymmetric.clipped);
    }

    #[test]
    fn aggregation_modes_weigh_tokens_and_sequences_as_named() {
        // Two sequences: one counted token of loss 1, and three of loss 3 (a prompt token
        // of loss 100 is masked out).
        let losses = vec![vec![100.0, 1.0], vec![3.0, 3.0, 3.0]];
        let masks = vec![vec![false, true], vec![true, true, true]];
        assert!(close(aggregate(&losses, &masks, Aggregation::TokenMean), 10.0 / 4.0, 1e-12));
        assert!(close(aggregate(&losses, &masks, Aggregation::SeqMeanTokenMean), (1.0 + 3.0) / 2.0, 1e-12));
        assert!(close(aggregate(&losses, &masks, Aggregation::SeqMeanTokenSum), (1.0 + 9.0) / 2.0, 1e-12));
        assert!(close(aggregate(&losses, &masks, Aggregation::SeqMeanTokenSumNorm { max_tokens: 10 }), (0.1 + 0.9) / 2.0, 1e-12));
        assert_eq!(aggregate(&[vec![1.0]], &[vec![false]], Aggregation::TokenMean), 0.0);

        // The trainer's token weights give the same numbers as a weighted sum.
        for mode in [
            Aggregation::TokenMean,
            Aggregation::SeqMeanTokenMean,
            Aggregation::SeqMeanTokenSum,
            Aggregation::SeqMeanTokenSumNorm { max_tokens: 10 },
        ] {
            let weights = aggregation_weights(&masks, mode);
            let weighted: f64 = weights.iter().flatten().zip(losses.iter().flatten()).map(|(w, l)| w * l).sum();
            assert!(close(weighted, aggregate(&losses, &masks, mode), 1e-12), "{mode:?}");
        }
    }

    #[test]
    fn step_metrics_count_only_the_models_tokens() {
        let groups = vec![vec![1.0, 0.0], vec![1.0, 1.0]];
        let sequences = [
            SequenceStats {
                mask: &[false, true, true],
                clipped: &[true, true, false],
                ref_log_ratio: &[5.0, 0.1, 0.0],
                entropy: &[9.0, 1.0, 0.5],
                engine_logprobs: &[0.0, -1.0, -2.0],
                trainer_logprobs: &[-9.0, -1.1, -2.0],
            },
            SequenceStats {
                mask: &[true],
                clipped: &[false],
                ref_log_ratio: &[0.0],
                entropy: &[1.5],
                engine_logprobs: &[-0.5],
                trainer_logprobs: &[-0.3],
            },
        ];
        let metrics = step_metrics(&groups, &sequences);
        assert!(close(metrics.reward_mean, 0.75, 1e-12));
        assert_eq!((metrics.reward_min, metrics.reward_max), (0.0, 1.0));
        assert!(close(metrics.zero_variance_groups, 0.5, 1e-12));
        assert!(close(metrics.clip_fraction, 1.0 / 3.0, 1e-12));
        assert!(close(metrics.approx_kl, 0.0048374180 / 3.0, 1e-10));
        assert!(close(metrics.entropy, 1.0, 1e-12));
        assert!(close(metrics.logprob_gap, (0.1 + 0.0 + 0.2) / 3.0, 1e-12));
        assert!(close(metrics.length_mean, 1.5, 1e-12));
        assert_eq!(metrics.length_max, 2);
    }

    #[test]
    fn entropy_of_uniform_and_certain_distributions() {
        assert!(close(entropy_of_logits(&[0.0, 0.0, 0.0, 0.0]), 4f64.ln(), 1e-12));
        assert!(close(entropy_of_logits(&[0.0, f64::NEG_INFINITY]), 0.0, 1e-12));
        assert!(close(entropy_of_logits(&[1000.0, 0.0]), 0.0, 1e-9), "no overflow");
    }
}
