//! Reproducible sampling and teacher forcing for the embedded backend.
//!
//! mistral.rs draws every request's random numbers from one generator seeded once per
//! engine, so the same request sampled twice gives different text. A caller that passes a
//! seed (an A/B replay, an RL rollout that must be re-run) needs the same text back. This
//! logits processor does the sampling itself, from a generator owned by the request, and
//! hands mistral.rs logits in which only the chosen token is finite; the engine's greedy
//! pick then takes exactly that token. It also records the log-probability of each pick,
//! because the logits mistral.rs sees afterwards no longer carry it.
//!
//! It is also how every logprob the embedded backend reports is computed: mistral.rs 0.8.1
//! reports base-10 logarithms, and on its greedy path the logarithm of a raw logit rather
//! than of a probability (values above 0). A request for logprobs is therefore sampled
//! here, greedily when it asks for greedy decoding, and its natural-log values and top
//! alternatives come from these picks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use mistralrs::{CustomLogitsProcessor, DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One sampled token and its log-probability under the sampling distribution, with the
/// most likely alternatives (token, log-probability), most likely first, when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// The entropy (nats) of the distribution the token was drawn from, over the whole
    /// vocabulary (0 where unknown): how unsure the policy was at this position.
    pub entropy: f32,
}

/// `−Σ p·ln p` of the distribution with these unnormalized weights.
fn entropy_of(weights: &[f32], total: f32) -> f32 {
    weights.iter().filter(|w| **w > 0.0).map(|w| w / total).map(|p| -p * p.ln()).sum()
}

pub struct SeededSampler {
    temperature: f64,
    top_p: f64,
    /// Takes the most likely token; logprobs are then those of the model's distribution
    /// (temperature 1).
    greedy: bool,
    /// How many alternatives each pick records.
    top_k: usize,
    /// Tokens taken instead of sampled at the first positions of the generation, from
    /// context position `.0` on; their picks carry the model's logprobs of them.
    forced: Option<(usize, Vec<u32>)>,
    state: Mutex<SamplerState>,
}

struct SamplerState {
    rng: StdRng,
    /// Picks keyed by the length of the context they extend. When a grammar rejects a pick,
    /// mistral.rs masks the logits and asks again for the same position; keying by position
    /// keeps only the pick that was used.
    picks: BTreeMap<usize, SampledToken>,
}

impl SeededSampler {
    pub fn new(seed: u64, temperature: f64, top_p: Option<f64>) -> Self {
        Self {
            temperature,
            top_p: top_p.unwrap_or(1.0),
            greedy: false,
            top_k: 0,
            forced: None,
            state: Mutex::new(SamplerState { rng: StdRng::seed_from_u64(seed), picks: BTreeMap::new() }),
        }
    }

    /// A sampler that decodes greedily and records the model's logprobs (temperature 1).
    pub fn greedy() -> Self {
        Self { greedy: true, ..Self::new(0, 1.0, None) }
    }

    /// Records the `k` most likely alternatives of each pick.
    pub fn with_top(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Makes the generation begin with `tokens` (the prompt being `prompt_len` tokens
    /// long) and sample from there on.
    pub fn with_forced(mut self, prompt_len: usize, tokens: Vec<u32>) -> Self {
        self.forced = (!tokens.is_empty()).then_some((prompt_len, tokens));
        self
    }

    /// The picks in generation order.
    pub fn picks(&self) -> Vec<SampledToken> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.picks.values().cloned().collect()
    }

    /// The pick at position `index` of the generation (0 for the first new token).
    pub fn pick(&self, index: usize) -> Option<SampledToken> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.picks.values().nth(index).cloned()
    }

    /// The sampling distribution's unnormalized weights and their sum.
    fn weights(&self, logits: &[f32]) -> (Vec<f32>, f32) {
        let temperature = if self.greedy { 1.0 } else { self.temperature.max(1e-5) as f32 };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) / temperature).exp()).collect();
        let total: f32 = weights.iter().sum();
        (weights, total)
    }

    /// The pick of a forced token: the token itself, with its logprob under the sampling
    /// distribution (−∞ where the distribution excludes it).
    pub fn forced_pick(&self, logits: &[f32], token: u32) -> SampledToken {
        let (weights, total) = self.weights(logits);
        let weight = weights.get(token as usize).copied().unwrap_or(0.0);
        SampledToken { token, logprob: (weight / total).ln(), top: Vec::new(), entropy: entropy_of(&weights, total) }
    }

    /// Samples one token index from raw logits. Pure so that it can be tested without a
    /// model.
    pub fn sample(&self, logits: &[f32], rng: &mut StdRng) -> SampledToken {
        let (weights, total) = self.weights(logits);
        // The first token with the highest logit: what greedy decoding picks.
        let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0;
        if !(total.is_finite() && total > 0.0) {
            // Every token is masked or the logits are broken: fall back to greedy.
            return SampledToken { token: argmax() as u32, logprob: 0.0, top: Vec::new(), entropy: 0.0 };
        }
        let top = if self.top_k == 0 {
            Vec::new()
        } else {
            let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
            order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
            order.into_iter().take(self.top_k).map(|i| (i as u32, (weights[i] / total).ln())).collect()
        };
        if self.greedy {
            let chosen = argmax();
            return SampledToken {
                token: chosen as u32,
                logprob: (weights[chosen] / total).ln(),
                top,
                entropy: entropy_of(&weights, total),
            };
        }
        // Nucleus: the smallest set of most likely tokens whose mass reaches top_p.
        let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let mut kept_mass = 0.0f32;
        let mut kept = 0;
        for &i in &order {
            kept_mass += weights[i] / total;
            kept += 1;
            if kept_mass as f64 >= self.top_p {
                break;
            }
        }
        let order = &order[..kept];
        let kept_total: f32 = order.iter().map(|&i| weights[i]).sum();
        let mut target = rng.random::<f32>() * kept_total;
        let mut chosen = order[order.len() - 1];
        for &i in order {
            target -= weights[i];
            if target <= 0.0 {
                chosen = i;
                break;
            }
        }
        SampledToken { token: chosen as u32, logprob: (weights[chosen] / total).ln(), top, entropy: entropy_of(&weights, total) }
    }
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let SamplerState { rng, picks } = &mut *state;
        let forced = self.forced.as_ref().and_then(|(start, tokens)| context.len().checked_sub(*start).and_then(|i| tokens.get(i)));
        let pick = match forced {
            Some(&token) if (token as usize) < values.len() => self.forced_pick(&values, token),
            _ => self.sample(&values, rng),
        };
        let token = pick.token as usize;
        picks.insert(context.len(), pick);
        let mut forced = vec![f32::NEG_INFINITY; values.len()];
        forced[token] = 0.0;
        Tensor::from_vec(forced, values.len(), logits.device())?.to_dtype(logits.dtype())
    }
}

/// Counts the tokens a generation produced, by the positions the engine asked about,
/// leaving the logits alone. mistral.rs 0.8.1 ends a streamed sequence without a final
/// chunk when its last token leaves an incomplete UTF-8 character (a byte token of a
/// multi-byte character, cut off by the token limit or followed by end-of-text): the
/// count says whether such a stream ended at the limit or earlier.
#[derive(Default)]
pub struct StepCounter {
    positions: Mutex<std::collections::BTreeSet<usize>>,
}

impl StepCounter {
    /// Tokens generated so far (a position the grammar made the engine ask about twice
    /// counts once).
    pub fn steps(&self) -> usize {
        self.positions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

impl CustomLogitsProcessor for StepCounter {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        self.positions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(context.len());
        Ok(logits.clone())
    }
}

/// Log-softmax of one position's logits at `token`, computed stably.
fn log_softmax_at(logits: &[f32], token: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    logits[token] - log_sum
}

/// Teacher forcing: makes the engine "generate" a given token sequence, recording the
/// model's log-probability of each given token on the way. One decode step per token, as
/// in generation, so scoring costs what sampling the same tokens would.
pub struct ForcedContinuation {
    tokens: Vec<u32>,
    /// Position of the first forced token in the context (the prefix length).
    start: usize,
    picks: Mutex<BTreeMap<usize, SampledToken>>,
}

impl ForcedContinuation {
    pub fn new(prefix_len: usize, tokens: Vec<u32>) -> Self {
        Self { tokens, start: prefix_len, picks: Mutex::new(BTreeMap::new()) }
    }

    pub fn picks(&self) -> Vec<SampledToken> {
        self.picks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).values().cloned().collect()
    }
}

impl CustomLogitsProcessor for ForcedContinuation {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let Some(&token) = context.len().checked_sub(self.start).and_then(|i| self.tokens.get(i)) else {
            // Past the given tokens (the engine asked for one more): leave the logits alone.
            return Ok(logits.clone());
        };
        if (token as usize) >= values.len() {
            // Nothing is recorded for this position; the caller sees the gap and reports
            // the token as outside the vocabulary.
            return Ok(logits.clone());
        }
        let pick = SampledToken { token, logprob: log_softmax_at(&values, token as usize), top: Vec::new(), entropy: 0.0 };
        self.picks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(context.len(), pick);
        let mut forced = vec![f32::NEG_INFINITY; values.len()];
        forced[token as usize] = 0.0;
        Tensor::from_vec(forced, values.len(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64, logits: &[f32], times: usize) -> Vec<u32> {
        let sampler = SeededSampler::new(seed, 1.0, None);
        let mut rng = StdRng::seed_from_u64(seed);
        (0..times).map(|_| sampler.sample(logits, &mut rng).token).collect()
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(draw(7, &logits, 32), draw(7, &logits, 32));
        assert_ne!(draw(7, &logits, 32), draw(8, &logits, 32));
    }

    #[test]
    fn forced_tokens_are_taken_with_their_logprobs_then_sampling_goes_on() {
        let logits = [0.0f32, 1.0, 2.0, f32::NEG_INFINITY];
        let sampler = SeededSampler::new(3, 1.0, None).with_forced(10, vec![0]);
        let pick = sampler.forced_pick(&logits, 0);
        assert_eq!(pick.token, 0);
        assert!((pick.logprob - log_softmax_at(&logits, 0)).abs() < 1e-6);
        assert_eq!(sampler.forced_pick(&logits, 3).logprob, f32::NEG_INFINITY, "a token the distribution excludes");
        // Through the processor: position 10 is forced, position 11 sampled (never the
        // masked token).
        let tensor = Tensor::from_vec(logits.to_vec(), 4, &mistralrs::Device::Cpu).unwrap();
        let context: Vec<u32> = vec![5; 10];
        let forced: Vec<f32> = sampler.apply(&tensor, &context).unwrap().to_vec1().unwrap();
        assert_eq!(forced, [0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let next: Vec<f32> = sampler.apply(&tensor, &[context, vec![0]].concat()).unwrap().to_vec1().unwrap();
        assert_ne!(next.iter().position(|l| *l == 0.0), Some(3));
        assert_eq!(sampler.picks().len(), 2);
        assert_eq!(sampler.picks()[0].token, 0);
    }

    #[test]
    fn masked_tokens_are_never_drawn_and_logprobs_are_exact() {
        let logits = [f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY];
        let sampler = SeededSampler::new(1, 1.0, None);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let pick = sampler.sample(&logits, &mut rng);
            assert!(pick.token == 1 || pick.token == 2);
            assert!((pick.logprob - 0.5f32.ln()).abs() < 1e-5);
            assert!((pick.entropy - std::f32::consts::LN_2).abs() < 1e-5, "two equal tokens: ln 2");
        }
    }

    #[test]
    fn greedy_picks_the_most_likely_token_with_its_natural_log_probability_and_the_top_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, f32::NEG_INFINITY];
        let sampler = SeededSampler::greedy().with_top(3);
        let mut rng = StdRng::seed_from_u64(0);
        let pick = sampler.sample(&logits, &mut rng);
        assert_eq!(pick.token, 1);
        assert!((pick.logprob - log_softmax_at(&logits, 1)).abs() < 1e-6);
        let tokens: Vec<u32> = pick.top.iter().map(|(t, _)| *t).collect();
        assert_eq!(tokens, [1, 2, 0]);
        assert!(pick.top.iter().all(|(_, lp)| *lp <= 0.0));
        let mass: f32 = pick.top.iter().map(|(_, lp)| lp.exp()).sum();
        assert!((mass - 1.0).abs() < 1e-5, "the three finite tokens hold all the mass: {mass}");
        assert_eq!(pick.top[0].1, pick.logprob);
    }

    #[test]
    fn log_softmax_matches_the_definition() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((log_softmax_at(&logits, 2) - (3.0f32.exp() / total).ln()).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~88% of the mass, so top_p = 0.5 leaves only it.
        let logits = [4.0, 1.0, 1.0, 0.0];
        let sampler = SeededSampler::new(3, 1.0, Some(0.5));
        let mut rng = StdRng::seed_from_u64(3);
        assert!((0..50).all(|_| sampler.sample(&logits, &mut rng).token == 0));
    }
}
