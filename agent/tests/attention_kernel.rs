//! The engine's CPU attention (blocks of matrix products over visible keys, patched into
//! mistral.rs) against a scalar reference in f64, on random data: prompt steps that start
//! at position 0 and after a cached prefix, decode steps, grouped KV heads, batches, every
//! mask shape mistral.rs passes, and masks that are not causal (a sliding window, a
//! bidirectional span), where no key may be skipped on the assumption of causality.

use candle_core::{Device, Tensor};
use mistralrs::core::blocked_attention;
use rand::{Rng, SeedableRng};

/// f32 sums in another order than the f64 reference: outputs are weighted means of values
/// in [-1, 1], so an absolute bound is the right measure.
const TOLERANCE: f64 = 2e-5;

struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q_len: usize,
    /// Positions already in the KV cache before this step's queries.
    past: usize,
    mask: Mask,
}

#[derive(Clone, Copy)]
enum Mask {
    None,
    /// Causal, of shape (q_len, kv_len), as mistral.rs builds it for a prompt step.
    Causal,
    /// Causal, of shape (batch, 1, q_len, kv_len).
    CausalPerBatch,
    /// Causal and each query sees only the last `window` keys.
    SlidingWindow(usize),
    /// Causal except that the first `span` queries see each other both ways.
    Bidirectional(usize),
}

impl Mask {
    /// Whether query `i` (at position `past + i`) may see key `j`.
    fn allows(self, past: usize, i: usize, j: usize) -> bool {
        let position = past + i;
        match self {
            Mask::None => true,
            Mask::Causal | Mask::CausalPerBatch => j <= position,
            Mask::SlidingWindow(window) => j <= position && position - j < window,
            Mask::Bidirectional(span) => j <= position || (position < past + span && j < past + span),
        }
    }
}

fn random(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Runs one case through the kernel and the reference; returns the largest difference.
fn check(case: Case) -> f64 {
    let Case { batch, heads, kv_heads, head_dim: d, q_len, past, mask } = case;
    let kv_len = past + q_len;
    let mut rng = rand::rngs::StdRng::seed_from_u64((q_len * 1_000 + past) as u64);
    let q = random(&mut rng, batch * heads * q_len * d);
    let k = random(&mut rng, batch * kv_heads * kv_len * d);
    let v = random(&mut rng, batch * kv_heads * kv_len * d);
    // Scores spread wider than 1/sqrt(d) would give, so that the softmax is not flat.
    let scale = 2.0 / (d as f32).sqrt();

    let additive: Vec<f32> =
        (0..q_len).flat_map(|i| (0..kv_len).map(move |j| if mask.allows(past, i, j) { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask_tensor = match mask {
        Mask::None => None,
        Mask::CausalPerBatch => Some(Tensor::from_vec(additive.repeat(batch), (batch, 1, q_len, kv_len), &Device::Cpu).unwrap()),
        _ => Some(Tensor::from_vec(additive.clone(), (q_len, kv_len), &Device::Cpu).unwrap()),
    };
    // The layouts mistral.rs passes: queries transposed from (batch, q_len, heads, d), keys
    // and values views of the first `kv_len` positions of a larger KV cache buffer.
    let queries = Tensor::from_vec(q.clone(), (batch, heads, q_len, d), &Device::Cpu).unwrap();
    let queries = queries.transpose(1, 2).unwrap().contiguous().unwrap().transpose(1, 2).unwrap();
    let cached = |data: &[f32]| {
        let exact = Tensor::from_vec(data.to_vec(), (batch, kv_heads, kv_len, d), &Device::Cpu).unwrap();
        let spare = Tensor::zeros((batch, kv_heads, 7, d), candle_core::DType::F32, &Device::Cpu).unwrap();
        Tensor::cat(&[exact, spare], 2).unwrap().narrow(2, 0, kv_len).unwrap()
    };
    let got = blocked_attention(&queries, &cached(&k), &cached(&v), mask_tensor.as_ref(), heads / kv_heads, scale)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got.len(), batch * heads * q_len * d);

    let mut worst = 0f64;
    for b in 0..batch {
        for h in 0..heads {
            let kv = h / (heads / kv_heads);
            for i in 0..q_len {
                let q_row = &q[((b * heads + h) * q_len + i) * d..][..d];
                let key = |j: usize| &k[((b * kv_heads + kv) * kv_len + j) * d..][..d];
                let value = |j: usize| &v[((b * kv_heads + kv) * kv_len + j) * d..][..d];
                let visible: Vec<usize> = (0..kv_len).filter(|&j| mask.allows(past, i, j)).collect();
                let scores: Vec<f64> = visible
                    .iter()
                    .map(|&j| q_row.iter().zip(key(j)).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>() * f64::from(scale))
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..d {
                    let expected: f64 = visible.iter().zip(&weights).map(|(&j, w)| w * f64::from(value(j)[c])).sum::<f64>() / total;
                    let actual = f64::from(got[((b * heads + h) * q_len + i) * d + c]);
                    worst = worst.max((expected - actual).abs());
                }
            }
        }
    }
    worst
}

/// The default model's shape: 9 query heads sharing 3 KV heads, 64 dimensions.
fn case(q_len: usize, past: usize, mask: Mask) -> Case {
    Case { batch: 1, heads: 9, kv_heads: 3, head_dim: 64, q_len, past, mask }
}

#[test]
fn prompt_steps_match_the_reference() {
    // One block, several blocks with a ragged last one, and a step after a cached prefix.
    for (q_len, past) in [(5, 0), (300, 0), (130, 417)] {
        let worst = check(case(q_len, past, Mask::Causal));
        assert!(worst < TOLERANCE, "q_len {q_len} after {past}: off by {worst}");
    }
}

#[test]
fn decode_steps_match_the_reference() {
    for past in [0, 1, 999] {
        let worst = check(case(1, past, Mask::None));
        assert!(worst < TOLERANCE, "one query after {past}: off by {worst}");
    }
}

#[test]
fn token_steps_across_key_chunks_match_the_reference() {
    // Steps of up to 4 rows split the keys into chunks of 256 and combine them: rows that
    // see different numbers of keys, per-batch masks, and a sliding window that hides
    // whole chunks.
    let cases = [
        case(3, 700, Mask::Causal),
        Case { batch: 2, heads: 9, kv_heads: 3, head_dim: 64, q_len: 2, past: 600, mask: Mask::CausalPerBatch },
        case(1, 600, Mask::SlidingWindow(50)),
        case(4, 255, Mask::Causal),
    ];
    for case in cases {
        let (q_len, past) = (case.q_len, case.past);
        let worst = check(case);
        assert!(worst < TOLERANCE, "{q_len} rows after {past}: off by {worst}");
    }
}

#[test]
fn batches_and_head_layouts_match_the_reference() {
    let cases = [
        Case { batch: 2, heads: 9, kv_heads: 3, head_dim: 64, q_len: 140, past: 20, mask: Mask::CausalPerBatch },
        Case { batch: 2, heads: 4, kv_heads: 4, head_dim: 32, q_len: 7, past: 3, mask: Mask::Causal },
        Case { batch: 1, heads: 8, kv_heads: 1, head_dim: 16, q_len: 129, past: 0, mask: Mask::None },
    ];
    for case in cases {
        let (batch, heads, kv_heads) = (case.batch, case.heads, case.kv_heads);
        let worst = check(case);
        assert!(worst < TOLERANCE, "batch {batch}, {heads} heads over {kv_heads}: off by {worst}");
    }
}

#[test]
fn masks_that_are_not_causal_are_honoured() {
    for mask in [Mask::SlidingWindow(50), Mask::Bidirectional(200)] {
        let worst = check(case(260, 40, mask));
        assert!(worst < TOLERANCE, "off by {worst}");
    }
}
