//! Greedy output of the real default model on a fixed prompt set, as the server computes it
//! by default (`--weights auto`: block-quantized products for generated tokens, panels of
//! the blocks expanded to F32 for prompts, our CPU attention), against the output of the same weights expanded
//! to F32 everywhere and computed by upstream's dense kernels (`fixtures/greedy_reference.json`).
//!
//! A kernel that computes the same function in another order changes logits by rounding
//! only; this test holds every greedy token equal and every chosen token's log-probability
//! within `LOGPROB_TOLERANCE` of the reference. The prompts are stored as token ids, so a
//! change of tokenizer or chat template cannot pass for a change of kernels; they span a
//! short chat, a prompt longer than one attention block, and one longer than the engine's
//! prefill chunk (1,024 tokens), where attention over earlier chunks comes into play.
//!
//! `UPDATE_EXPECT=1 cargo test --release -p agent --test greedy_reference` re-records the
//! fixture from the dense expansion; only do that on a build whose output is the one to keep.

use agent::engine::mistral::{MistralRsEngine, MistralRsOptions};
use agent::engine::{ChatMessage, Engine, GenerationRequest, Prompt};
use agent::model;
use agent::repack::{self, WeightFormat};
use serde::{Deserialize, Serialize};

/// How far a chosen token's natural-log probability may move (rounding of f32 sums in
/// another order over 30 layers stays well under this; a wrong kernel moves it by tenths).
const LOGPROB_TOLERANCE: f32 = 2e-3;
const NEW_TOKENS: usize = 24;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/greedy_reference.json");

#[derive(Serialize, Deserialize)]
struct Case {
    name: String,
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// The gap between the chosen and the runner-up token's log-probability at each step:
    /// a greedy token can only flip where rounding is larger than this.
    margins: Vec<f32>,
}

/// The default model with its weights held as `format`. Neither way rounds activations to
/// 8 bits (candle's quantized products do, and then rounding differences of 1e-6 flip
/// some of those roundings and move logprobs by up to ~0.1 between two correct kernels,
/// which would hide a wrong one).
async fn engine(format: WeightFormat) -> MistralRsEngine {
    let path = model::default_model_path(&model::cache_dir());
    assert!(path.exists(), "{} is missing: run `skillhive model pull` (scripts/test does)", path.display());
    let weights = repack::prepare(&model::cache_dir(), &path, format).expect("repack the default model");
    MistralRsEngine::load(MistralRsOptions::new(weights, "test")).await.expect("load the default model")
}

/// The prompts of a fresh recording: chats whose system prompts are cut from the project's
/// own architecture document, which gives natural text of any length.
async fn recorded_prompts(engine: &MistralRsEngine) -> Vec<(String, Vec<u32>)> {
    let document = include_str!("../../ARCHITECTURE.md");
    let cut = |chars: usize| document.chars().take(chars).collect::<String>();
    let chats = [
        ("short", None, "What is the capital of France?"),
        ("one_block", Some(cut(2_000)), "Summarise the text above in one sentence."),
        ("two_chunks", Some(cut(9_000)), "Which directory holds the migrations?"),
    ];
    let mut prompts = Vec::new();
    for (name, system, user) in chats {
        let mut messages: Vec<ChatMessage> = system.into_iter().map(ChatMessage::system).collect();
        messages.push(ChatMessage::user(user));
        prompts.push((name.to_string(), engine.tokenize(&Prompt::Messages(messages)).await.unwrap()));
    }
    prompts
}

async fn greedy(engine: &MistralRsEngine, name: String, prompt: Vec<u32>) -> Case {
    let mut request = GenerationRequest::new(Prompt::Tokens(prompt.clone()), NEW_TOKENS);
    request.temperature = Some(0.0);
    request.logprobs = Some(2);
    let choice = engine.generate(request).await.unwrap().choices.remove(0);
    let top = choice.logprobs.expect("logprobs were asked for");
    let margins = top.iter().map(|t| t.top[0].1 - t.top.get(1).map_or(f32::NEG_INFINITY, |r| r.1)).collect();
    Case { name, prompt, tokens: choice.token_ids, logprobs: choice.token_logprobs, margins }
}

#[tokio::test]
async fn greedy_output_of_the_default_model_is_unchanged() {
    if std::env::var("UPDATE_EXPECT").as_deref() == Ok("1") {
        let engine = engine(WeightFormat::F32).await;
        let mut cases = Vec::new();
        for (name, prompt) in recorded_prompts(&engine).await {
            cases.push(greedy(&engine, name, prompt).await);
        }
        std::fs::write(FIXTURE, serde_json::to_string(&cases).unwrap() + "\n").unwrap();
        return;
    }
    let engine = engine(WeightFormat::Auto).await;
    let reference: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    assert!(reference.iter().any(|case| case.prompt.len() > 1_024), "the prompt set must cross a prefill chunk");
    for expected in reference {
        let got = greedy(&engine, expected.name.clone(), expected.prompt.clone()).await;
        // Log-probabilities are compared up to the first changed token (after it, the
        // contexts differ), so that a failure says how far the logits moved, not only where.
        let same = got.tokens.iter().zip(&expected.tokens).take_while(|(a, b)| a == b).count();
        let moved: Vec<f32> = got.logprobs.iter().zip(&expected.logprobs).take(same + 1).map(|(a, b)| (a - b).abs()).collect();
        let worst = moved.iter().copied().fold(0.0f32, f32::max);
        eprintln!(
            "{}: {} prompt tokens, {same} of {} tokens equal, logprob changes {moved:?}",
            expected.name,
            expected.prompt.len(),
            expected.tokens.len()
        );
        assert!(worst <= LOGPROB_TOLERANCE, "{}: a chosen token's logprob moved by {worst}", expected.name);
        assert_eq!(got.tokens, expected.tokens, "{}: greedy tokens changed", expected.name);
    }
}
