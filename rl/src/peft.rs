//! LoRA adapters in PEFT's format (`adapter_config.json` and `adapter_model.safetensors`),
//! both ways: an adapter trained with TRL or verl on GPUs comes back into our engine, and
//! one trained here goes out to them.
//!
//! PEFT names tensors by Hugging Face's module paths
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, A shaped (r, in),
//! B shaped (out, r)) and keeps q and k in Hugging Face's layout. llama.cpp's converter
//! permutes the rows of q and k for interleaved rotary embeddings, so the rows of their
//! `lora_B` are permuted the same way on import, and back on export.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::policy::{adapter_key, Adapters, BaseModel, LoraConfig, LoraTarget};

#[derive(Debug, Serialize, Deserialize)]
struct AdapterConfig {
    r: usize,
    lora_alpha: f64,
    target_modules: Vec<String>,
    #[serde(default = "lora_type")]
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

fn lora_type() -> String {
    "LORA".into()
}

fn module_name(target: LoraTarget) -> &'static str {
    target.hf_name().rsplit('.').next().unwrap_or_default()
}

fn peft_key(layer: usize, target: LoraTarget, half: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.{half}.weight", target.hf_name())
}

/// Rows of a q or k projection (or of its `lora_B`) from Hugging Face's layout to
/// llama.cpp's: per head, the two halves of the head dimension interleaved.
fn hf_to_gguf_rows(rows: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, cols) = rows.dims2()?;
    rows.reshape((heads, 2, out / heads / 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((out, cols))
}

/// The inverse of [`hf_to_gguf_rows`].
fn gguf_to_hf_rows(rows: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, cols) = rows.dims2()?;
    rows.reshape((heads, out / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((out, cols))
}

/// The heads whose rows a target's output is permuted by, if it is q or k.
fn permuted_heads(base: &BaseModel, target: LoraTarget) -> Option<usize> {
    match target {
        LoraTarget::Q => Some(base.config.heads),
        LoraTarget::K => Some(base.config.kv_heads),
        _ => None,
    }
}

/// Reads a PEFT LoRA adapter for `base`.
pub fn import(dir: &Path, base: &BaseModel) -> anyhow::Result<Adapters> {
    let config: AdapterConfig = serde_json::from_slice(
        &std::fs::read(dir.join("adapter_config.json")).with_context(|| format!("{} has no adapter_config.json", dir.display()))?,
    )
    .context("adapter_config.json is not a PEFT adapter configuration")?;
    if config.peft_type != "LORA" {
        bail!("the adapter is of type {}; only LoRA adapters can be imported", config.peft_type);
    }
    let targets: Vec<LoraTarget> = config
        .target_modules
        .iter()
        .map(|m| LoraTarget::parse(m).with_context(|| format!("target module `{m}` is not a Llama projection")))
        .collect::<anyhow::Result<_>>()?;
    let lora = LoraConfig { rank: config.r, alpha: config.lora_alpha, targets: targets.clone() };
    let adapters = Adapters::new(base, lora, 0)?;
    let tensors = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .with_context(|| format!("cannot read {}/adapter_model.safetensors", dir.display()))?;
    let mut named: HashMap<String, Tensor> = HashMap::new();
    for layer in 0..base.config.layers {
        for &target in &targets {
            let key = adapter_key(layer, target);
            let get = |half: &str| {
                let name = peft_key(layer, target, half);
                tensors.get(&name).with_context(|| format!("the adapter has no `{name}`")).and_then(|t| Ok(t.to_dtype(DType::F32)?))
            };
            let a = get("lora_A")?;
            let mut b = get("lora_B")?;
            if let Some(heads) = permuted_heads(base, target) {
                b = hf_to_gguf_rows(&b, heads)?;
            }
            named.insert(format!("{key}.lora_a"), a);
            named.insert(format!("{key}.lora_b"), b);
        }
    }
    adapters.load_named(&named)?;
    Ok(adapters)
}

/// Writes `adapters` as a PEFT LoRA adapter of the Hugging Face model `base_name`.
pub fn export(adapters: &Adapters, base: &BaseModel, base_name: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for layer in 0..base.config.layers {
        for &target in &adapters.config.targets {
            let Some(pair) = adapters.pairs.get(&adapter_key(layer, target)) else { continue };
            let mut b = pair.b.as_tensor().copy()?;
            if let Some(heads) = permuted_heads(base, target) {
                b = gguf_to_hf_rows(&b, heads)?;
            }
            tensors.insert(peft_key(layer, target, "lora_A"), pair.a.as_tensor().copy()?);
            tensors.insert(peft_key(layer, target, "lora_B"), b);
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))?;
    let config = AdapterConfig {
        r: adapters.config.rank,
        lora_alpha: adapters.config.alpha,
        target_modules: adapters.config.targets.iter().map(|t| module_name(*t).to_string()).collect(),
        peft_type: lora_type(),
        task_type: Some("CAUSAL_LM".into()),
        base_model_name_or_path: Some(base_name.into()),
    };
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_and_k_rows_move_as_llama_cpp_permutes_them() {
        // Two heads of dimension 4: llama.cpp's permute(w, n_head) sends, within each head,
        // the halves [0, 1 | 2, 3] to the interleaved order [0, 2, 1, 3].
        let rows: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let hf = Tensor::from_vec(rows, (8, 1), &Device::Cpu).unwrap();
        let gguf = hf_to_gguf_rows(&hf, 2).unwrap();
        let order: Vec<f32> = gguf.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(order, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        let back: Vec<f32> = gguf_to_hf_rows(&gguf, 2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(back, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    }
}
