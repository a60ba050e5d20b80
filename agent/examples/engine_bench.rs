//! Measures the embedded engine the way `bench/engine` measures llama.cpp: exact token
//! prompts, greedy decoding, streamed, timing the first token (prefill) and the rest
//! (decode). Prints one JSON object per prompt.
//!
//! Usage: engine_bench MODEL.gguf PROMPTS.json NEW_TOKENS RUNS [WEIGHTS]
//! where PROMPTS.json is `{"name": [token ids], ...}` and WEIGHTS is how the weights are
//! held in memory: as-shipped, q8_0, f32 or auto (the server's default).

use std::time::Instant;

use agent::engine::mistral::{ActivationDType, MistralRsEngine, MistralRsOptions};
use agent::engine::{Engine, GenerationRequest, Prompt, StreamEvent};
use agent::repack::WeightFormat;
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model, prompts, new_tokens, runs, weights) = match args.as_slice() {
        [_, model, prompts, new_tokens, runs] => (model, prompts, new_tokens, runs, "auto"),
        [_, model, prompts, new_tokens, runs, weights] => (model, prompts, new_tokens, runs, weights.as_str()),
        _ => anyhow::bail!("usage: engine_bench MODEL.gguf PROMPTS.json NEW_TOKENS RUNS [as-shipped|q8_0|f32|auto]"),
    };
    let format = match weights {
        "as-shipped" => WeightFormat::AsShipped,
        "q8_0" => WeightFormat::Q8_0,
        "f32" => WeightFormat::F32,
        "auto" => WeightFormat::Auto,
        other => anyhow::bail!("unknown weight format {other}"),
    };
    let model = agent::repack::prepare(&agent::model::cache_dir(), std::path::Path::new(model), format)?;
    let new_tokens: usize = new_tokens.parse()?;
    let runs: usize = runs.parse()?;
    let prompts: std::collections::BTreeMap<String, Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(prompts)?)?;
    let mut options = MistralRsOptions::new(model, "bench");
    // Every run reads its whole prompt: the same prompt again would come from the prefix
    // cache (bench/engine-concurrency measures that).
    options.prefix_cache_entries = 0;
    let mut label = format!("skillhive ({weights})");
    if std::env::var("BENCH_DTYPE").as_deref() == Ok("auto") {
        options.dtype = ActivationDType::Auto;
        label = format!("skillhive ({weights}, dtype auto)");
    }
    let engine = MistralRsEngine::load(options).await?;

    for (name, tokens) in &prompts {
        let mut samples = Vec::new();
        // One warm-up run, not reported: the first call pays one-off allocation costs.
        for run in 0..=runs {
            let request = GenerationRequest::new(Prompt::Tokens(tokens.clone()), new_tokens);
            let started = Instant::now();
            let mut stream = engine.generate_stream(request).await?;
            let mut first_token = None;
            let mut generated = 0usize;
            while let Some(event) = stream.next().await {
                if let StreamEvent::Delta { .. } = event? {
                    generated += 1;
                    first_token.get_or_insert_with(Instant::now);
                }
            }
            let finished = Instant::now();
            let first_token = first_token.unwrap_or(finished);
            if run > 0 {
                let prefill_s = (first_token - started).as_secs_f64();
                let decode_s = (finished - first_token).as_secs_f64();
                samples.push((prefill_s, decode_s, generated));
            }
        }
        let median = |mut values: Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let prefill = median(samples.iter().map(|s| tokens.len() as f64 / s.0).collect());
        let decode = median(samples.iter().map(|s| (s.2.saturating_sub(1)) as f64 / s.1.max(1e-9)).collect());
        println!(
            "{}",
            serde_json::json!({"engine": label, "prompt": name, "prompt_tokens": tokens.len(), "prefill_tok_s": prefill, "decode_tok_s": decode, "new_tokens": samples[0].2})
        );
    }
    Ok(())
}
