//! APPO's arithmetic: where to branch a rollout, and how branch rewards flow back into the
//! rollout they left.
//!
//! A token is a good branch point when the policy was unsure there (high entropy) and has
//! since moved towards what followed (a high discounted importance ratio). Both are
//! z-scored within one rollout over its content tokens (not blank, not punctuation); the
//! Branching Score is their product, kept where both z-scores are positive.

use serde::{Deserialize, Serialize};

/// The clip of the discounted ratio Ω.
pub const OMEGA_CLIP: (f64, f64) = (0.8, 1.2);
/// The decay of a branch point's weight over the tokens before it.
pub const PROCEDURE_DECAY: f64 = 0.9;

/// The entropy (nats) of a token's distribution as far as its top-k logprobs show it:
/// `−Σ p·log p` over the listed alternatives.
pub fn top_k_entropy(top_logprobs: &[f32]) -> f64 {
    top_logprobs.iter().map(|&l| -(l as f64).exp() * l as f64).sum()
}

/// Ω_t = clip(exp(Σ_{k≥t} γ^{k−t} (log π_cur(a_k) − log π_rollout(a_k))), 0.8, 1.2): how much
/// more likely the current policy finds the rest of the rollout from `t` on, discounted.
pub fn discounted_ratio(current: &[f32], rollout: &[f32], gamma: f64) -> Vec<f64> {
    assert_eq!(current.len(), rollout.len(), "one logprob per token under each policy");
    let mut sums = vec![0.0; current.len()];
    let mut running = 0.0;
    for t in (0..current.len()).rev() {
        running = (current[t] - rollout[t]) as f64 + gamma * running;
        sums[t] = running;
    }
    sums.into_iter().map(|s| s.exp().clamp(OMEGA_CLIP.0, OMEGA_CLIP.1)).collect()
}

/// Whether a token's text can be a branch point: not blank and not only punctuation.
pub fn is_content_token(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty() && !text.chars().all(|c| c.is_ascii_punctuation() || (!c.is_alphanumeric() && !c.is_whitespace()))
}

/// Z-scores of `values` over the `eligible` positions (population standard deviation);
/// ineligible positions, and every position when the eligible values do not vary, get 0.
pub fn z_scores(values: &[f64], eligible: &[bool]) -> Vec<f64> {
    let picked: Vec<f64> = values.iter().zip(eligible).filter(|(_, e)| **e).map(|(v, _)| *v).collect();
    if picked.is_empty() {
        return vec![0.0; values.len()];
    }
    let mean = picked.iter().sum::<f64>() / picked.len() as f64;
    let std = (picked.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / picked.len() as f64).sqrt();
    values.iter().zip(eligible).map(|(v, e)| if *e && std > 0.0 { (v - mean) / std } else { 0.0 }).collect()
}

/// One token's branching evidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BranchScore {
    pub z_entropy: f64,
    pub z_ratio: f64,
    /// BS_t = Z(H_t)·Z(Ω_t).
    pub score: f64,
}

impl BranchScore {
    /// A candidate: unsure then (Z(H) > 0) and favoured since (Z(Ω) > 0).
    pub fn is_candidate(&self) -> bool {
        self.z_entropy > 0.0 && self.z_ratio > 0.0
    }
}

pub fn branching_scores(entropy: &[f64], omega: &[f64], eligible: &[bool]) -> Vec<BranchScore> {
    let (zh, zo) = (z_scores(entropy, eligible), z_scores(omega, eligible));
    zh.into_iter().zip(zo).map(|(z_entropy, z_ratio)| BranchScore { z_entropy, z_ratio, score: z_entropy * z_ratio }).collect()
}

/// The `budget` branch points of one rollout: the candidates with the highest scores;
/// without candidates, any eligible token by score; ties go to the higher entropy, then to
/// the earlier token (on-policy every Ω is 1, every score 0, and the entropy decides);
/// repeated in order until `budget` are taken. Empty when no token is eligible.
pub fn select_branch_points(scores: &[BranchScore], eligible: &[bool], budget: usize) -> Vec<usize> {
    let ranked = |filter: &dyn Fn(usize) -> bool| {
        let mut points: Vec<usize> = (0..scores.len()).filter(|&t| eligible[t] && filter(t)).collect();
        points.sort_by(|&a, &b| {
            scores[b].score.total_cmp(&scores[a].score).then(scores[b].z_entropy.total_cmp(&scores[a].z_entropy)).then(a.cmp(&b))
        });
        points
    };
    let mut pool = ranked(&|t| scores[t].is_candidate());
    if pool.is_empty() {
        pool = ranked(&|_| true);
    }
    if pool.is_empty() {
        return Vec::new();
    }
    pool.iter().copied().cycle().take(budget).collect()
}

/// Procedure-level scaling of the initial rollout's token advantages: for each branch point
/// `(t, BS_t)`, tokens `u ≤ t` get `1 + (BS_t / max BS)·0.9^{t−u}` and later tokens 1; the
/// factors are averaged over the branch points. All ones when no score is positive.
pub fn procedure_scaling(len: usize, points: &[(usize, f64)]) -> Vec<f64> {
    let max = points.iter().map(|(_, s)| *s).fold(f64::NEG_INFINITY, f64::max);
    if points.is_empty() || max <= 0.0 {
        return vec![1.0; len];
    }
    (0..len)
        .map(|u| {
            let total: f64 = points
                .iter()
                .map(|&(t, score)| if u <= t { 1.0 + (score / max) * PROCEDURE_DECAY.powi((t - u) as i32) } else { 1.0 })
                .sum();
            total / points.len() as f64
        })
        .collect()
}

/// The initial rollout's token advantages under the dual-group rule: its own advantage
/// (from the group of initial rollouts) on every token, plus, on the prefix `0..=t` of each
/// branch point, the mean advantage of that point's branches (from the group of branches);
/// then scaled by [`procedure_scaling`].
pub fn initial_token_advantages(advantage: f64, len: usize, branches: &[(usize, f64)], scaling: &[f64]) -> Vec<f64> {
    (0..len)
        .map(|u| {
            let from_branches: f64 = branches.iter().filter(|(t, _)| u <= *t).map(|(_, mean)| mean).sum();
            (advantage + from_branches) * scaling.get(u).copied().unwrap_or(1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    // Expected values computed by hand (and checked in Python with numpy) for a 6-token
    // rollout: " The", " file", ",", " has", " 4", "." — the comma and period ineligible.
    #[test]
    fn appo_scores_a_six_token_rollout_exactly() {
        let half = 0.5f32.ln();
        assert!((top_k_entropy(&[half, half]) - std::f64::consts::LN_2).abs() < 1e-6);
        let texts = [" The", " file", ",", " has", " 4", "."];
        let eligible: Vec<bool> = texts.iter().map(|t| is_content_token(t)).collect();
        assert_eq!(eligible, [true, true, false, true, true, false]);

        let current = [-1.0f32, -0.5, -0.1, -2.0, -0.2, -0.1];
        let rollout = [-1.0f32, -1.0, -0.1, -1.5, -0.7, -0.1];
        let omega = discounted_ratio(&current, &rollout, 0.5);
        // Σ from the end: t5 0; t4 0.5; t3 −0.5+0.25 = −0.25; t2 −0.125; t1 0.5−0.0625 = 0.4375;
        // t0 0.21875; exp and clip to [0.8, 1.2].
        close(&omega, &[1.2, 1.2, 0.8824969, 0.8, 1.2, 1.0]);

        let entropy = [0.2, 1.4, 0.9, 1.0, 0.6, 0.1];
        // Eligible entropies 0.2, 1.4, 1.0, 0.6: mean 0.8, std sqrt(0.2) = 0.4472136.
        let zh = z_scores(&entropy, &eligible);
        close(&zh, &[-1.3416408, 1.3416408, 0.0, 0.4472136, -0.4472136, 0.0]);
        // Eligible Ω 1.2, 1.2, 0.8, 1.2: mean 1.1, std 0.1732051.
        let scores = branching_scores(&entropy, &omega, &eligible);
        let zo: Vec<f64> = scores.iter().map(|s| s.z_ratio).collect();
        close(&zo, &[0.5773503, 0.5773503, 0.0, -1.7320508, 0.5773503, 0.0]);
        let bs: Vec<f64> = scores.iter().map(|s| s.score).collect();
        close(&bs, &[-0.7745967, 0.7745967, 0.0, -0.7745967, -0.2581989, 0.0]);

        // One candidate (token 1): a budget of 2 repeats it.
        assert_eq!(select_branch_points(&scores, &eligible, 2), [1, 1]);
        // No candidate: the eligible tokens by score (ties to the earlier one).
        let flat: Vec<BranchScore> = scores.iter().map(|s| BranchScore { z_entropy: -1.0, ..*s }).collect();
        assert_eq!(select_branch_points(&flat, &eligible, 3), [1, 4, 0]);
        assert!(select_branch_points(&scores, &[false; 6], 2).is_empty());
        // On-policy (every Ω equal, every score 0) the entropy ranks the tokens.
        let on_policy = branching_scores(&entropy, &[1.0; 6], &eligible);
        assert_eq!(select_branch_points(&on_policy, &eligible, 2), [1, 3]);

        // Two branch points, at 1 (BS 0.8) and 4 (BS 0.4): max 0.8, so weights 1 and 0.5.
        // u0: (1 + 0.9 + 1 + 0.5·0.9⁴)/2; u1: (2 + 1 + 0.5·0.9³)/2; u2: (1 + 1 + 0.5·0.81)/2;
        // u3: (1 + 1.45)/2; u4: (1 + 1.5)/2; u5: 1.
        close(&procedure_scaling(6, &[(1, 0.8), (4, 0.4)]), &[1.614025, 1.68225, 1.2025, 1.225, 1.25, 1.0]);
        close(&procedure_scaling(3, &[(1, -0.2)]), &[1.0; 3]);
        let a = initial_token_advantages(0.5, 6, &[(1, 1.0), (4, -0.5)], &[1.0; 6]);
        close(&a, &[1.0, 1.0, 0.0, 0.0, 0.0, 0.5]);
    }
}
