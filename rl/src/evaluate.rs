//! Held-out evaluation: the mean reward of a policy on tasks it was not trained on, with
//! the same seeds for every policy compared, so that two policies meet the same draws.

use agent::engine::Engine;

use crate::episode::{self, EpisodeLimits};
use crate::rollout::SamplingConfig;
use crate::task::Task;

/// The mean reward of `samples` samples per task (rewards in `[0, 1]`).
pub async fn mean_reward(
    engine: &dyn Engine,
    tasks: &[Task],
    samples: usize,
    sampling: &SamplingConfig,
    limits: &EpisodeLimits,
    seed: u64,
) -> anyhow::Result<f64> {
    if tasks.is_empty() || samples == 0 {
        anyhow::bail!("an evaluation needs at least one task and one sample");
    }
    let mut total = 0.0;
    for (index, task) in tasks.iter().enumerate() {
        let group = episode::run_group(engine, task, samples, sampling, limits, seed ^ index as u64).await?;
        total += group.iter().map(|e| e.reward).sum::<f64>();
    }
    Ok(total / (tasks.len() * samples) as f64)
}
