//! Rollouts through the shared engine, token in and token out: the prompt is tokenized once
//! by the engine's own chat template, every sample continues from those exact tokens with
//! its own seed, and comes back as token ids with the logprobs it was sampled with.

use agent::engine::{Choice, Engine, FinishReason, GenerationRequest, Prompt};
use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub seed: u64,
    pub completion: Vec<u32>,
    /// The behaviour policy's logprob of each completion token (temperature 1: the model's
    /// own distribution, which the trainer recomputes).
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

/// How samples are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 1.0 samples the model's own distribution; other values make the behaviour policy
    /// differ from the trained one (the gap metric then shows it).
    pub temperature: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { max_new_tokens: 24, temperature: 1.0 }
    }
}

/// The seed of sample `index` of a group seeded with `group_seed`: distinct per sample and
/// reproducible, so a resumed run samples exactly what the uninterrupted one would have.
pub fn sample_seed(group_seed: u64, index: usize) -> u64 {
    group_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index as u64)
}

/// One seeded sample continuing `prompt` (under `json_schema` when given), checked to
/// carry one logprob per token id: every rollout, episode turn and branch draws through it.
/// The sample begins with `forced` (a reply resumed part-way), which counts in its token
/// budget and comes back in it, with the model's logprobs; at least one token is sampled.
pub async fn sample_one(
    engine: &dyn Engine,
    prompt: Vec<u32>,
    forced: &[u32],
    sampling: &SamplingConfig,
    seed: u64,
    json_schema: Option<serde_json::Value>,
) -> anyhow::Result<Choice> {
    let mut request = GenerationRequest::new(Prompt::Tokens(prompt), sampling.max_new_tokens.max(forced.len() + 1));
    request.temperature = Some(sampling.temperature);
    request.seed = Some(seed);
    request.logprobs = Some(0);
    request.json_schema = json_schema;
    request.forced = forced.to_vec();
    let choice = engine.generate(request).await?.choices.into_iter().next().context("the engine returned no choice")?;
    anyhow::ensure!(
        choice.token_logprobs.len() == choice.token_ids.len(),
        "the engine returned {} token ids but {} logprobs",
        choice.token_ids.len(),
        choice.token_logprobs.len()
    );
    Ok(choice)
}

/// `group` samples continuing `prompt`, sent together so that the engine batches them.
pub async fn sample_group(
    engine: &dyn Engine,
    prompt: &[u32],
    group: usize,
    sampling: &SamplingConfig,
    group_seed: u64,
) -> anyhow::Result<Vec<Sample>> {
    let requests = (0..group).map(|index| {
        let seed = sample_seed(group_seed, index);
        async move {
            let choice = sample_one(engine, prompt.to_vec(), &[], sampling, seed, None).await?;
            Ok::<_, anyhow::Error>(Sample {
                seed,
                completion: choice.token_ids,
                logprobs: choice.token_logprobs,
                text: choice.text,
                finish_reason: choice.finish_reason,
            })
        }
    });
    futures::future::try_join_all(requests).await
}

/// How a branch changes the exact token prefix it continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrefixEdit {
    /// Continue from the prefix as it is.
    Keep,
    /// Insert tokens at a position (a hint, a corrected step).
    Insert { at: usize, tokens: Vec<u32> },
    /// Remove the tokens in `start..end` (a wrong step, a summarized span).
    Delete { start: usize, end: usize },
}

impl PrefixEdit {
    /// The edited prefix; an edit outside the prefix is refused, not clamped.
    pub fn apply(&self, prefix: &[u32]) -> anyhow::Result<Vec<u32>> {
        let mut tokens = prefix.to_vec();
        match self {
            PrefixEdit::Keep => {}
            PrefixEdit::Insert { at, tokens: inserted } => {
                anyhow::ensure!(*at <= tokens.len(), "cannot insert at {at}: the prefix has {} tokens", tokens.len());
                tokens.splice(*at..*at, inserted.iter().copied());
            }
            PrefixEdit::Delete { start, end } => {
                anyhow::ensure!(
                    start <= end && *end <= tokens.len(),
                    "cannot delete {start}..{end} of a prefix of {} tokens",
                    tokens.len()
                );
                tokens.drain(*start..*end);
            }
        }
        anyhow::ensure!(!tokens.is_empty(), "the edit leaves no prefix to continue from");
        Ok(tokens)
    }
}

/// `group` samples continuing `prefix` after `edit`: the branches the next issue's
/// algorithms compare (a trajectory resumed from a summary, a step re-taken with a hint).
/// Returns the edited prefix with the samples.
pub async fn branch(
    engine: &dyn Engine,
    prefix: &[u32],
    edit: &PrefixEdit,
    group: usize,
    sampling: &SamplingConfig,
    group_seed: u64,
) -> anyhow::Result<(Vec<u32>, Vec<Sample>)> {
    let edited = edit.apply(prefix)?;
    let samples = sample_group(engine, &edited, group, sampling, group_seed).await?;
    Ok((edited, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_edits_keep_insert_and_delete_exact_tokens() {
        let prefix = [1, 2, 3, 4];
        assert_eq!(PrefixEdit::Keep.apply(&prefix).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(PrefixEdit::Insert { at: 2, tokens: vec![9, 9] }.apply(&prefix).unwrap(), vec![1, 2, 9, 9, 3, 4]);
        assert_eq!(PrefixEdit::Insert { at: 4, tokens: vec![7] }.apply(&prefix).unwrap(), vec![1, 2, 3, 4, 7]);
        assert_eq!(PrefixEdit::Delete { start: 1, end: 3 }.apply(&prefix).unwrap(), vec![1, 4]);
        assert!(PrefixEdit::Insert { at: 5, tokens: vec![7] }.apply(&prefix).is_err());
        assert!(PrefixEdit::Delete { start: 3, end: 2 }.apply(&prefix).is_err());
        assert!(PrefixEdit::Delete { start: 0, end: 4 }.apply(&prefix).is_err(), "nothing left to continue from");
    }
}
