//! ActGuide-RL's arithmetic: action data as guidance, only where the policy needs it.
//!
//! A group is *hard* when no rollout earned a reward. Only then is the task's reference
//! plan (tool calls that worked in other users' sessions) shown, and only as much of it as
//! needed: a binary search over the plan's length finds the shortest prefix with which a
//! probe succeeds. The guided rollouts are trained as if sampled from the unguided prompt:
//! the policy learns to act without the hint (a mixed-policy update, whose ratio is taken
//! against the guided behaviour's logprobs).

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::episode::Episode;
use crate::trainer::{OldPolicy, TrainingSequence};

/// Probes of the hint length at most.
pub const MAX_PROBES: usize = 5;
/// Rollouts per probe.
pub const PROBE_ROLLOUTS: usize = 2;

/// One reference action: a tool and its JSON arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub tool: String,
    pub arguments: String,
}

/// A group is hard when its best reward is not above 0.
pub fn is_hard(rewards: &[f64]) -> bool {
    rewards.iter().copied().fold(f64::NEG_INFINITY, f64::max) <= 0.0
}

/// The first `k` actions as a plan: `Plan:` then `i. name: arguments` per line; empty for 0.
pub fn plan_hint(actions: &[Action], k: usize) -> String {
    if k == 0 {
        return String::new();
    }
    let steps: Vec<String> = actions.iter().take(k).enumerate().map(|(i, a)| format!("{}. {}: {}", i + 1, a.tool, a.arguments)).collect();
    format!("Plan:\n{}", steps.join("\n"))
}

/// What the search tried and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HintSearch {
    /// The hint length chosen.
    pub length: usize,
    /// Each probe's length and whether it succeeded, in order.
    pub probes: Vec<(usize, bool)>,
}

/// Binary search of the hint length in `[0, actions]`: a probe that succeeds at `mid`
/// moves the upper end there, a failure moves the lower end past it; at most
/// [`MAX_PROBES`] probes; the length is the lower end (with more than 2⁵ actions it may
/// be one no probe tried, when the probes run out first).
pub async fn search_hint_length<F, Fut>(actions: usize, mut probe: F) -> anyhow::Result<HintSearch>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let (mut lo, mut hi) = (0, actions);
    let mut probes = Vec::new();
    while lo < hi && probes.len() < MAX_PROBES {
        let mid = (lo + hi) / 2;
        let succeeded = probe(mid).await?;
        probes.push((mid, succeeded));
        if succeeded {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(HintSearch { length: lo, probes })
}

/// A guided episode as the unguided policy's sample: the unguided prompt's tokens, then
/// the episode's tokens with their mask, and the guided behaviour's logprobs (the ratio's
/// old policy).
pub fn unguided_sequence(unguided_prompt: &[u32], guided: &Episode, advantage: f64) -> TrainingSequence {
    let tokens = unguided_prompt.iter().chain(&guided.tokens).copied().collect();
    let mask = std::iter::repeat_n(false, unguided_prompt.len()).chain(guided.sampled.iter().copied()).collect();
    TrainingSequence {
        tokens,
        mask,
        engine_logprobs: guided.logprobs.clone(),
        advantage,
        token_advantages: Vec::new(),
        old_policy: Some(OldPolicy::Behaviour),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::EpisodeEnd;

    async fn search(actions: usize, threshold: usize) -> HintSearch {
        search_hint_length(actions, |k| async move { Ok(k >= threshold) }).await.unwrap()
    }

    #[tokio::test]
    async fn the_hint_search_finds_a_monotone_threshold_in_few_probes() {
        let found = search(8, 5).await;
        assert_eq!(found, HintSearch { length: 5, probes: vec![(4, false), (6, true), (5, true)] });
        assert_eq!(search(8, 0).await, HintSearch { length: 0, probes: vec![(4, true), (2, true), (1, true), (0, true)] });
        assert_eq!(search(3, 4).await.length, 3, "a threshold past the plan ends at the whole plan");
        // Five probes at most: a 40-step plan stops with the interval [36, 37] open, and
        // the lower end (untried) is the length, as the method specifies.
        let long = search(40, 37).await;
        assert_eq!(long.probes, vec![(20, false), (30, false), (35, false), (38, true), (37, true)]);
        assert_eq!(long.length, 36);
        assert_eq!(search(0, 0).await, HintSearch { length: 0, probes: vec![] });
    }

    #[test]
    fn hints_are_plans_and_guided_samples_train_the_unguided_prompt() {
        assert!(is_hard(&[0.0, 0.0, -0.1]) && !is_hard(&[0.0, 0.2]));
        let actions = [
            Action { tool: "exec".into(), arguments: r#"{"command":"wc -l a.csv"}"#.into() },
            Action { tool: "read".into(), arguments: r#"{"path":"a.csv"}"#.into() },
        ];
        assert_eq!(plan_hint(&actions, 0), "");
        assert_eq!(plan_hint(&actions, 1), "Plan:\n1. exec: {\"command\":\"wc -l a.csv\"}");
        assert_eq!(plan_hint(&actions, 5).lines().count(), 3);

        let guided = Episode {
            seed: 1,
            prompt: vec![1, 2, 99, 98, 3],
            tokens: vec![10, 20, 11],
            sampled: vec![true, false, true],
            logprobs: vec![-0.1, -0.2],
            entropies: vec![0.3, 0.3],
            turns: Vec::new(),
            answer: None,
            end: EpisodeEnd::Answered,
            reward: 1.0,
        };
        let sequence = unguided_sequence(&[1, 2, 3], &guided, 0.5);
        assert_eq!(sequence.tokens, [1, 2, 3, 10, 20, 11]);
        assert_eq!(sequence.mask, [false, false, false, true, false, true]);
        assert_eq!(sequence.engine_logprobs, [-0.1, -0.2]);
        assert_eq!(sequence.old_policy, Some(OldPolicy::Behaviour), "the ratio is against the guided behaviour");
    }
}
