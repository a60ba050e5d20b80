//! Held-out evaluation: the mean reward of a policy on tasks it was not trained on, with
//! the same seeds for every policy compared, so that two policies meet the same draws.

use agent::engine::{Engine, Prompt};

use crate::rollout::{self, SamplingConfig};
use crate::task::Task;

/// The mean reward of `samples` samples per task (rewards in `[0, 1]`).
pub async fn mean_reward(engine: &dyn Engine, tasks: &[Task], samples: usize, sampling: &SamplingConfig, seed: u64) -> anyhow::Result<f64> {
    if tasks.is_empty() || samples == 0 {
        anyhow::bail!("an evaluation needs at least one task and one sample");
    }
    let mut total = 0.0;
    for (index, task) in tasks.iter().enumerate() {
        let prompt = engine.tokenize(&Prompt::Messages(task.messages.clone())).await?;
        let group = rollout::sample_group(engine, &prompt, samples, sampling, seed ^ index as u64).await?;
        total += group.iter().map(|s| task.verifier.reward(&s.text)).sum::<f64>();
    }
    Ok(total / (tasks.len() * samples) as f64)
}
