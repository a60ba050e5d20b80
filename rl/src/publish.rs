//! Publishing a trained policy to the engine: the adapters merged into the base weights and
//! written as a GGUF file whose every tensor is F32.
//!
//! F32 throughout, for two measured reasons. mistral.rs's own GGUF LoRA path re-quantizes a
//! merged update to the tensor's type, and into Q4_1 only 0–6 % of an update survived. And
//! a quantized tensor anywhere (the default model's tied Q8_0 embedding is its output
//! layer) makes the engine quantize activations for that product, which moved sampled
//! logprobs by ~0.03 from the trainer's; with every tensor F32 they agree within 1e-3.

use std::path::Path;

use agent::engine::mistral::{MistralRsEngine, MistralRsOptions};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};

use crate::policy::{Adapters, BaseModel};

/// Writes `base` with `adapters` merged (`W + scale · B A` for every adapted layer) to
/// `target`, atomically.
pub fn write_policy(base: &BaseModel, adapters: Option<&Adapters>, target: &Path) -> anyhow::Result<()> {
    let file_type = gguf_file::Value::U32(0); // ALL_F32
    let mut metadata: Vec<(&str, &gguf_file::Value)> = base
        .metadata
        .iter()
        .map(|(key, value)| if key == "general.file_type" { (key.as_str(), &file_type) } else { (key.as_str(), value) })
        .collect();
    metadata.sort_by_key(|(key, _)| *key);
    let mut tensors = Vec::new();
    for (name, tensor) in base.tensors() {
        let key = name.strip_suffix(".weight").unwrap_or(name);
        let merged = match adapters.map(|a| a.delta(key)).transpose()?.flatten() {
            Some(delta) => (tensor + delta)?,
            None => tensor.clone(),
        };
        tensors.push((name.as_str(), QTensor::quantize(&merged, GgmlDType::F32)?));
    }
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    agent::repack::write_gguf(target, &metadata, &refs)
}

/// Loads a published policy into a new engine beside any others in this process.
pub async fn load_policy_engine(path: &Path, model_id: &str) -> anyhow::Result<MistralRsEngine> {
    MistralRsEngine::load(MistralRsOptions::new(path, model_id)).await
}
