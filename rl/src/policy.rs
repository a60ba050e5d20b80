//! The trainable policy: a differentiable Llama forward over a GGUF model's weights, with
//! LoRA adapters on a frozen base.
//!
//! The engine serves quantized weights through fused kernels that have no backward pass,
//! and candle's fused ops (`rms_norm`, `softmax_last_dim`, `rope_i`) silently drop the
//! gradient. This forward is therefore written from autograd-safe ops only: `rms_norm_slow`,
//! `ops::log_softmax`/`ops::softmax` and `rope_i_slow`. The base weights are the GGUF's
//! tensors dequantized to F32 once and never updated; only the adapters are [`Var`]s.
//!
//! Weights stay in the GGUF's own layout, including its q/k rows, which llama.cpp's
//! converter permutes for interleaved rotary embeddings: the forward applies RoPE
//! interleaved, and an adapter trained here merges into the same file without any
//! permutation (an adapter trained in Hugging Face's layout needs one; see `peft`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The shape of a Llama-family model, read from its GGUF metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
}

fn metadata_usize(content: &gguf_file::Content, key: &str) -> anyhow::Result<usize> {
    let value = content.metadata.get(key).with_context(|| format!("the GGUF file has no `{key}`"))?;
    Ok(match value {
        gguf_file::Value::U8(v) => *v as usize,
        gguf_file::Value::U16(v) => *v as usize,
        gguf_file::Value::U32(v) => *v as usize,
        gguf_file::Value::U64(v) => *v as usize,
        gguf_file::Value::I32(v) => usize::try_from(*v)?,
        gguf_file::Value::I64(v) => usize::try_from(*v)?,
        other => bail!("`{key}` is not an integer: {other:?}"),
    })
}

fn metadata_f64(content: &gguf_file::Content, key: &str) -> Option<f64> {
    match content.metadata.get(key)? {
        gguf_file::Value::F32(v) => Some(*v as f64),
        gguf_file::Value::F64(v) => Some(*v),
        _ => None,
    }
}

impl ModelConfig {
    pub fn from_gguf(content: &gguf_file::Content) -> anyhow::Result<Self> {
        let arch = match content.metadata.get("general.architecture") {
            Some(gguf_file::Value::String(arch)) => arch.clone(),
            _ => bail!("the GGUF file names no architecture"),
        };
        if arch != "llama" {
            bail!("the trainer supports Llama-family models; this one is `{arch}`");
        }
        let hidden = metadata_usize(content, "llama.embedding_length")?;
        let heads = metadata_usize(content, "llama.attention.head_count")?;
        let kv_heads = metadata_usize(content, "llama.attention.head_count_kv").unwrap_or(heads);
        let embed = content.tensor_infos.get("token_embd.weight").context("the GGUF file has no token embedding")?;
        Ok(Self {
            hidden,
            layers: metadata_usize(content, "llama.block_count")?,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            vocab: embed.shape.dims()[0],
            rms_eps: metadata_f64(content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: metadata_f64(content, "llama.rope.freq_base").unwrap_or(10_000.0),
        })
    }
}

/// A linear layer of a transformer block that an adapter can attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [Self::Q, Self::K, Self::V, Self::O, Self::Gate, Self::Up, Self::Down];

    /// The tensor's name inside a block of a GGUF file.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Q => "attn_q",
            Self::K => "attn_k",
            Self::V => "attn_v",
            Self::O => "attn_output",
            Self::Gate => "ffn_gate",
            Self::Up => "ffn_up",
            Self::Down => "ffn_down",
        }
    }

    /// The module's name in Hugging Face's Llama (and so in PEFT adapters).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Q => "self_attn.q_proj",
            Self::K => "self_attn.k_proj",
            Self::V => "self_attn.v_proj",
            Self::O => "self_attn.o_proj",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::Down => "mlp.down_proj",
        }
    }

    /// The short name used in configurations (`q`, `gate`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Q => "q",
            Self::K => "k",
            Self::V => "v",
            Self::O => "o",
            Self::Gate => "gate",
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    /// A target by its short, GGUF or Hugging Face module name (`q`, `attn_q`, `q_proj`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.short_name() == name || t.gguf_name() == name || t.hf_name().rsplit('.').next() == Some(name))
    }
}

/// The shape of the adapters: which layers get them, their rank and their scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    /// The update is scaled by `alpha / rank`, as in PEFT.
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, targets: vec![LoraTarget::Q, LoraTarget::V] }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }
}

/// The frozen base: every tensor of the GGUF file dequantized to F32.
pub struct BaseModel {
    pub config: ModelConfig,
    pub path: PathBuf,
    /// The file's metadata (tokenizer, chat template, shape), copied into published policies.
    pub metadata: BTreeMap<String, gguf_file::Value>,
    tensors: BTreeMap<String, Tensor>,
}

impl BaseModel {
    /// Reads and dequantizes every tensor of a GGUF file (well under a second for the
    /// default model's 272 tensors).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut reader = BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
        let content = gguf_file::Content::read(&mut reader).with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
        let config = ModelConfig::from_gguf(&content)?;
        let mut tensors = BTreeMap::new();
        for name in content.tensor_infos.keys() {
            let tensor = content.tensor(&mut reader, name, &Device::Cpu)?.dequantize(&Device::Cpu)?;
            tensors.insert(name.clone(), tensor);
        }
        let metadata = content.metadata.into_iter().collect();
        Ok(Self { config, path: path.to_path_buf(), metadata, tensors })
    }

    pub fn tensor(&self, name: &str) -> anyhow::Result<&Tensor> {
        self.tensors.get(name).with_context(|| format!("the model has no tensor `{name}`"))
    }

    /// The output projection: its own tensor, or the token embedding when they are tied.
    fn lm_head(&self) -> anyhow::Result<&Tensor> {
        match self.tensors.get("output.weight") {
            Some(head) => Ok(head),
            None => self.tensor("token_embd.weight"),
        }
    }

    /// The weight of `target` in block `layer`, shaped (out, in).
    pub fn linear_weight(&self, layer: usize, target: LoraTarget) -> anyhow::Result<&Tensor> {
        self.tensor(&format!("blk.{layer}.{}.weight", target.gguf_name()))
    }

    pub fn tensors(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }
}

/// The low-rank update of one linear layer: `W x + scale · B (A x)`.
pub struct LoraPair {
    /// (rank, in)
    pub a: Var,
    /// (out, rank); zero at the start, so a fresh adapter changes nothing.
    pub b: Var,
}

/// The trainable adapters of a policy, keyed by `blk.{layer}.{gguf name}`.
pub struct Adapters {
    pub config: LoraConfig,
    pub pairs: BTreeMap<String, LoraPair>,
}

pub fn adapter_key(layer: usize, target: LoraTarget) -> String {
    format!("blk.{layer}.{}", target.gguf_name())
}

impl Adapters {
    /// Fresh adapters: A uniform in ±1/√in (PEFT's Kaiming default), B zero.
    pub fn new(base: &BaseModel, config: LoraConfig, seed: u64) -> anyhow::Result<Self> {
        if config.rank == 0 {
            bail!("the LoRA rank must be at least 1");
        }
        if config.targets.is_empty() {
            bail!("LoRA needs at least one target layer");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        for layer in 0..base.config.layers {
            for &target in &config.targets {
                let (out, input) = base.linear_weight(layer, target)?.dims2()?;
                let bound = 1.0 / (input as f32).sqrt();
                let values: Vec<f32> = (0..config.rank * input).map(|_| rng.random_range(-bound..bound)).collect();
                let a = Var::from_tensor(&Tensor::from_vec(values, (config.rank, input), &Device::Cpu)?)?;
                let b = Var::from_tensor(&Tensor::zeros((out, config.rank), DType::F32, &Device::Cpu)?)?;
                pairs.insert(adapter_key(layer, target), LoraPair { a, b });
            }
        }
        Ok(Self { config, pairs })
    }

    /// Every trainable tensor, in a fixed order (by key, A before B).
    pub fn vars(&self) -> Vec<&Var> {
        self.pairs.values().flat_map(|pair| [&pair.a, &pair.b]).collect()
    }

    /// A copy of the tensors by name (`{key}.lora_a`, `{key}.lora_b`), for checkpoints. A
    /// copy, because the optimizer updates the variables' storage in place.
    pub fn named_tensors(&self) -> candle_core::Result<BTreeMap<String, Tensor>> {
        let mut named = BTreeMap::new();
        for (key, pair) in &self.pairs {
            named.insert(format!("{key}.lora_a"), pair.a.as_tensor().copy()?);
            named.insert(format!("{key}.lora_b"), pair.b.as_tensor().copy()?);
        }
        Ok(named)
    }

    /// Sets every tensor from `named` (as written by [`Adapters::named_tensors`]).
    pub fn load_named(&self, named: &std::collections::HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (key, pair) in &self.pairs {
            for (suffix, var) in [("lora_a", &pair.a), ("lora_b", &pair.b)] {
                let name = format!("{key}.{suffix}");
                let tensor = named.get(&name).with_context(|| format!("the adapter file has no `{name}`"))?;
                if tensor.dims() != var.dims() {
                    bail!("`{name}` has shape {:?}; the adapter expects {:?}", tensor.dims(), var.dims());
                }
                var.set(&tensor.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }

    /// The dense update `scale · B A` of one layer, shaped like its weight.
    pub fn delta(&self, key: &str) -> anyhow::Result<Option<Tensor>> {
        let Some(pair) = self.pairs.get(key) else { return Ok(None) };
        Ok(Some((pair.b.as_tensor().matmul(pair.a.as_tensor())? * self.config.scale())?))
    }
}

/// Token sequences of one forward pass, right-padded to the same length.
pub struct TokenBatch {
    /// (batch, time), u32
    pub tokens: Tensor,
    pub batch: usize,
    pub time: usize,
}

impl TokenBatch {
    pub fn new(sequences: &[&[u32]]) -> anyhow::Result<Self> {
        let time = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if time == 0 {
            bail!("a forward pass needs at least one token");
        }
        // Padding sits after each sequence; under the causal mask no real token attends to it.
        let padded: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied().chain(std::iter::repeat_n(0, time - s.len()))).collect();
        Ok(Self { tokens: Tensor::from_vec(padded, (sequences.len(), time), &Device::Cpu)?, batch: sequences.len(), time })
    }
}

/// Log-probabilities (and entropies) of chosen tokens at chosen positions.
pub struct Scored {
    /// (positions,): `log π(target | tokens before it)`; differentiable in the adapters.
    pub logprobs: Tensor,
    /// (positions,): the entropy of the policy at each position (no gradient).
    pub entropy: Tensor,
}

/// The base model plus (optionally) adapters: what the trainer differentiates.
pub struct Policy<'a> {
    pub base: &'a BaseModel,
    pub adapters: Option<&'a Adapters>,
}

impl Policy<'_> {
    fn linear(&self, x: &Tensor, layer: usize, target: LoraTarget) -> anyhow::Result<Tensor> {
        let weight = self.base.linear_weight(layer, target)?;
        let mut y = x.matmul(&weight.t()?)?;
        if let Some(pair) = self.adapters.and_then(|a| a.pairs.get(&adapter_key(layer, target))) {
            let scale = self.adapters.map(|a| a.config.scale()).unwrap_or(1.0);
            let low = x.matmul(&pair.a.as_tensor().t()?)?.matmul(&pair.b.as_tensor().t()?)?;
            y = (y + (low * scale)?)?;
        }
        Ok(y)
    }

    fn rope_tables(&self, time: usize) -> anyhow::Result<(Tensor, Tensor)> {
        let config = &self.base.config;
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f64 / config.head_dim as f64) as f32).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), &Device::Cpu)?;
        let positions = Tensor::arange(0u32, time as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((time, 1))?;
        let freqs = positions.broadcast_mul(&inv_freq)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    /// The final hidden states, (batch · time, hidden).
    pub fn hidden_states(&self, batch: &TokenBatch) -> anyhow::Result<Tensor> {
        let config = &self.base.config;
        let (b, t) = (batch.batch, batch.time);
        let (heads, kv_heads, head_dim) = (config.heads, config.kv_heads, config.head_dim);
        let eps = config.rms_eps as f32;
        let mut x = self.base.tensor("token_embd.weight")?.index_select(&batch.tokens.flatten_all()?, 0)?;
        let (cos, sin) = self.rope_tables(t)?;
        let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (1, 1, t, t), &Device::Cpu)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for layer in 0..config.layers {
            let block = |name: &str| self.base.tensor(&format!("blk.{layer}.{name}.weight"));
            let h = candle_nn::ops::rms_norm_slow(&x, block("attn_norm")?, eps)?;
            let q = self.linear(&h, layer, LoraTarget::Q)?.reshape((b, t, heads, head_dim))?.transpose(1, 2)?.contiguous()?;
            let k = self.linear(&h, layer, LoraTarget::K)?.reshape((b, t, kv_heads, head_dim))?.transpose(1, 2)?.contiguous()?;
            let v = self.linear(&h, layer, LoraTarget::V)?.reshape((b, t, kv_heads, head_dim))?.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope_i_slow(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i_slow(&k, &cos, &sin)?;
            // Grouped-query attention: each key/value head serves `heads / kv_heads`
            // consecutive query heads.
            let repeat = |kv: Tensor| -> candle_core::Result<Tensor> {
                if heads == kv_heads {
                    return Ok(kv);
                }
                kv.unsqueeze(2)?.broadcast_as((b, kv_heads, heads / kv_heads, t, head_dim))?.contiguous()?.reshape((b, heads, t, head_dim))
            };
            let (k, v) = (repeat(k)?, repeat(v)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            let attention = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
            let attention = attention.transpose(1, 2)?.contiguous()?.reshape((b * t, heads * head_dim))?;
            x = (x + self.linear(&attention, layer, LoraTarget::O)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, block("ffn_norm")?, eps)?;
            let gated = (self.linear(&h, layer, LoraTarget::Gate)?.silu()? * self.linear(&h, layer, LoraTarget::Up)?)?;
            x = (x + self.linear(&gated, layer, LoraTarget::Down)?)?;
        }
        Ok(candle_nn::ops::rms_norm_slow(&x, self.base.tensor("output_norm.weight")?, eps)?)
    }

    /// Scores `targets[i]` as the token after flat position `rows[i]` (row `s · time + p`
    /// is position `p` of sequence `s`). Only these rows go through the output layer, whose
    /// vocabulary-wide logits are the largest tensors of a step.
    pub fn score(&self, batch: &TokenBatch, rows: &[u32], targets: &[u32]) -> anyhow::Result<Scored> {
        let hidden = self.hidden_states(batch)?;
        let rows = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
        let selected = hidden.index_select(&rows, 0)?;
        let logits = selected.matmul(&self.base.lm_head()?.t()?)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = Tensor::from_slice(targets, (targets.len(), 1), &Device::Cpu)?;
        let logprobs = log_probs.gather(&targets, 1)?.squeeze(1)?;
        let detached = log_probs.detach();
        let entropy = (detached.exp()? * &detached)?.sum(1)?.neg()?;
        Ok(Scored { logprobs, entropy })
    }
}
