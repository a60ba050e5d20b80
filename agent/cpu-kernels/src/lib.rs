//! CPU matrix products on GGUF block-quantized weights (Q4_1, Q8_0) for the embedded
//! engine.
//!
//! mistral.rs computes these formats through candle, which rounds each activation row to 8
//! bits and then runs a scalar Q4_1 dot product, one thread hand-off per activation row.
//! Here the blocks are multiplied with F32 activations in vectorized loops, one hand-off
//! per product, and prompts through panels of the blocks expanded to F32 for a dense GEMM
//! kernel, so one copy of the weights (the file's blocks) serves both. The patched
//! mistral.rs (agent/vendor) builds its GGUF linear layers with [`gguf_linear`]; everything
//! else about the layer stays mistral.rs's.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Result, Tensor};
use mistralrs_quant::{GgufMatMul, QuantMethod, QuantMethodConfig};

pub mod linear;
pub mod matrix;
pub mod simd;

pub use linear::{CpuQuantizedLinear, PANEL_PATH_MIN_ROWS};
pub use matrix::{BlockFormat, QuantizedMatrix};

/// The linear layer for a GGUF weight: ours for Q4_1/Q8_0 matrices in CPU memory,
/// mistral.rs's own otherwise.
pub fn gguf_linear(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Arc<dyn QuantMethod>> {
    match CpuQuantizedLinear::new(weight.clone(), bias.clone())? {
        Some(layer) => Ok(Arc::new(layer)),
        None => Ok(Arc::new(GgufMatMul::new(QuantMethodConfig::Gguf { q_weight: weight, b: bias })?)),
    }
}
