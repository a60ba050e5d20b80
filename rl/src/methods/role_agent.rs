//! Role-Agent's arithmetic: one model as agent and as world.
//!
//! - *World-In-Agent*: the agent predicts the next observation (`<predict_next>…</predict_next>`
//!   in its reply, or a `predict_next` field of its JSON action); the closer the prediction
//!   to what the tool returned (difflib's ratio), the larger the reward: `r·(1 + λ·sim)`.
//! - *Agent-In-World*: failed tasks are remembered (at most 512); a failure raises its
//!   task's sampling weight, and those of the past failures most like it, so training
//!   returns to what the policy cannot do yet.

use std::collections::VecDeque;

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// λ: how much a perfect prediction adds to the reward (as a fraction of it).
pub const PREDICTION_WEIGHT: f64 = 0.2;
/// Failed tasks remembered at most.
pub const HISTORY: usize = 512;
/// What a failure adds to its own task's weight.
pub const FAILURE_BOOST: f64 = 0.15;
/// What a failure adds to a similar past failure's weight, times the similarity.
pub const SIMILAR_BOOST: f64 = 0.35;
/// Past failures boosted per failure.
pub const SIMILAR_TASKS: usize = 3;
/// No task's weight falls below this, so every task can still be drawn.
pub const MIN_WEIGHT: f64 = 1e-3;

const OPEN: &str = "<predict_next>";
const CLOSE: &str = "</predict_next>";

/// difflib's `SequenceMatcher(None, a, b).ratio()` over characters: 2·matches / total length.
pub fn similarity(a: &str, b: &str) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    // The crate's own `ratio` is an f32; the same quotient in f64 matches Python's digits.
    let matches: usize = difflib::sequencematcher::SequenceMatcher::new(a, b).get_matching_blocks().iter().map(|m| m.size).sum();
    2.0 * matches as f64 / (a.chars().count() + b.chars().count()) as f64
}

/// The agent's prediction of the next observation, if its reply has one.
pub fn prediction(reply: &str) -> Option<String> {
    if let Ok(Value::Object(action)) = serde_json::from_str::<Value>(reply.trim()) {
        if let Some(text) = action.get("predict_next").and_then(Value::as_str) {
            return Some(text.to_string());
        }
    }
    let start = reply.find(OPEN)? + OPEN.len();
    let end = reply[start..].find(CLOSE)? + start;
    Some(reply[start..end].to_string())
}

/// The reward shaped by the predictions an episode made of its observations: `r·(1 + λ·s)`
/// with `s` the mean similarity over the steps that predicted; no prediction, no shaping.
pub fn shaped_reward(reward: f64, predictions: &[(Option<String>, String)], lambda: f64) -> f64 {
    let sims: Vec<f64> = predictions.iter().filter_map(|(p, actual)| p.as_ref().map(|p| similarity(p, actual))).collect();
    if sims.is_empty() {
        return reward;
    }
    reward * (1.0 + lambda * sims.iter().sum::<f64>() / sims.len() as f64)
}

/// Failure-driven task sampling. Its state (weights and history) is plain data, saved with
/// a run's checkpoint, so that a resumed run draws what the uninterrupted one would have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureSampler {
    weights: Vec<f64>,
    history: VecDeque<usize>,
}

impl FailureSampler {
    /// `tasks` tasks, each of weight 1.
    pub fn new(tasks: usize) -> Self {
        Self { weights: vec![1.0; tasks], history: VecDeque::new() }
    }

    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Records a failure of `task`: its weight grows by 0.15, and each of the (at most
    /// three) most similar distinct past failures' by 0.35 times its similarity.
    pub fn record_failure(&mut self, task: usize, similarity: impl Fn(usize, usize) -> f64) {
        self.weights[task] += FAILURE_BOOST;
        let mut past: Vec<usize> = self.history.iter().copied().filter(|t| *t != task).collect();
        past.sort_unstable();
        past.dedup();
        let mut ranked: Vec<(usize, f64)> = past.into_iter().map(|t| (t, similarity(task, t))).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (other, sim) in ranked.into_iter().take(SIMILAR_TASKS) {
            self.weights[other] += SIMILAR_BOOST * sim;
        }
        self.history.push_back(task);
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        for weight in &mut self.weights {
            *weight = weight.max(MIN_WEIGHT);
        }
    }

    /// `n` task indices drawn with replacement, in proportion to the weights, seeded by
    /// `seed` (a run passes its seed and step).
    pub fn draw(&self, n: usize, seed: u64) -> Vec<usize> {
        let Ok(distribution) = WeightedIndex::new(&self.weights) else { return Vec::new() };
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| distribution.sample(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_difflibs_ratio() {
        // Python: difflib.SequenceMatcher(None, a, b).ratio()
        assert_eq!(similarity("the door opens", "the door is locked"), 0.6875);
        assert_eq!(similarity("abcd", "bcde"), 0.75);
        assert_eq!(similarity("same", "same"), 1.0);
        assert_eq!(similarity("abc", "xyz"), 0.0);
    }

    #[test]
    fn world_in_agent_shapes_rewards_by_prediction() {
        assert_eq!(prediction("I read it. <predict_next>the door opens</predict_next>").as_deref(), Some("the door opens"));
        assert_eq!(prediction(r#"{"tool": "read", "arguments": {}, "predict_next": "abcd"}"#).as_deref(), Some("abcd"));
        assert_eq!(prediction("no tag"), None);
        let steps = vec![(Some("the door opens".to_string()), "the door is locked".to_string()), (None, "x".to_string())];
        assert!((shaped_reward(1.0, &steps, PREDICTION_WEIGHT) - 1.1375).abs() < 1e-12);
        assert_eq!(shaped_reward(0.0, &steps, PREDICTION_WEIGHT), 0.0, "shaping scales a reward, never creates one");
        assert_eq!(shaped_reward(1.0, &[(None, "x".into())], PREDICTION_WEIGHT), 1.0);
    }

    #[test]
    fn agent_in_world_raises_failed_and_similar_tasks() {
        let prompts = ["count rows of a.csv", "count rows of b.csv", "sum qty in c.csv", "rename d.txt"];
        let sim = |a: usize, b: usize| similarity(prompts[a], prompts[b]);
        let mut sampler = FailureSampler::new(4);
        sampler.record_failure(0, sim);
        assert_eq!(sampler.weights(), &[1.15, 1.0, 1.0, 1.0]);
        sampler.record_failure(3, sim);
        let s30 = similarity(prompts[3], prompts[0]);
        assert_eq!(sampler.weights(), &[1.15 + 0.35 * s30, 1.0, 1.0, 1.15]);
        sampler.record_failure(1, sim);
        let (s10, s13) = (similarity(prompts[1], prompts[0]), similarity(prompts[1], prompts[3]));
        assert_eq!(s10, 0.9473684210526315, "Python: SequenceMatcher(None, 'count rows of b.csv', 'count rows of a.csv').ratio()");
        let expected = [1.15 + 0.35 * s30 + 0.35 * s10, 1.15, 1.0, 1.15 + 0.35 * s13];
        for (w, e) in sampler.weights().iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{:?} vs {expected:?}", sampler.weights());
        }
        // Draws follow the weights and repeat under the same seed.
        let draws = sampler.draw(2000, 7);
        let share_of = |t: usize| draws.iter().filter(|d| **d == t).count() as f64 / 2000.0;
        let total: f64 = expected.iter().sum();
        for (t, weight) in expected.iter().enumerate() {
            assert!((share_of(t) - weight / total).abs() < 0.04, "task {t}: {} vs {}", share_of(t), weight / total);
        }
        let mut again = FailureSampler::new(4);
        for t in [0, 3, 1] {
            again.record_failure(t, sim);
        }
        assert_eq!(again.draw(2000, 7), draws);
        // Saved and restored (a checkpoint), it draws the same.
        let restored: FailureSampler = serde_json::from_str(&serde_json::to_string(&sampler).unwrap()).unwrap();
        assert_eq!(restored.draw(2000, 7), draws);
    }
}
