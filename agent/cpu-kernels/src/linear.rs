//! A GGUF linear layer for mistral.rs on the CPU: decoding steps (one token for each
//! sequence) and short prompts multiply the blocks in place
//! ([`QuantizedMatrix::matmul`]); prompt-sized products expand the blocks panel by panel
//! for a dense GEMM kernel ([`QuantizedMatrix::matmul_panels`]), which reads a long prompt
//! faster than any block loop here. Only the file's blocks are kept in memory.

use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result, Tensor};
use mistralrs_quant::{GgufMatMul, IsqType, QuantMethod, QuantMethodConfig, QuantizeOntoGuard, QuantizedSerde};

use crate::matrix::{BlockFormat, QuantizedMatrix};

/// Products of at least this many activation rows (prompts) go through panels of the blocks
/// expanded to F32 for a dense GEMM kernel; shorter ones multiply the blocks in place,
/// where the blocks are 5–6× fewer bytes than F32 and up to a tile of rows share each
/// expanded block. Measured with `examples/block_rows` (the model's MLP matrices streamed
/// from memory, against a dense GEMM on an F32 copy, on a noisy 2-core machine with
/// AVX-512): at 24 rows the blocks take ~0.6× the dense time and the panels ~0.7×; at 32
/// rows the blocks ~1.0× and the panels ~0.7×; at 64 rows the blocks ~1.9× and the panels
/// ~0.8×.
///
/// Decoding steps (one row per sequence, 16 sequences by default) stay below it, so a
/// decoding token's products do not depend on how many sequences share its step (the block
/// products are batch-invariant; see `QuantizedMatrix::matmul`).
pub const PANEL_PATH_MIN_ROWS: usize = 32;

#[derive(Debug)]
pub struct CpuQuantizedLinear {
    blocks: QuantizedMatrix,
    /// The layer mistral.rs would have built. It answers everything this one does not do
    /// itself: other devices and dtypes, LoRA deltas, re-quantization and serialization.
    upstream: Arc<GgufMatMul>,
    bias: Option<Tensor>,
}

impl CpuQuantizedLinear {
    /// `None` when the weights are not a 2-D Q4_1/Q8_0 matrix in CPU memory.
    pub fn new(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Option<Self>> {
        let format = match weight.dtype() {
            GgmlDType::Q4_1 => BlockFormat::Q4_1,
            GgmlDType::Q8_0 => BlockFormat::Q8_0,
            _ => return Ok(None),
        };
        let (rows, cols) = match weight.shape().dims() {
            [rows, cols] => (*rows, *cols),
            _ => return Ok(None),
        };
        if !weight.device().is_cpu() || !cols.is_multiple_of(crate::matrix::BLOCK) {
            return Ok(None);
        }
        let blocks = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &weight.data()?).map_err(candle_core::Error::wrap)?;
        let upstream = Arc::new(GgufMatMul::new(QuantMethodConfig::Gguf { q_weight: weight, b: bias.clone() })?);
        Ok(Some(Self { blocks, upstream, bias }))
    }

    fn blocks_forward(&self, a: &Tensor) -> Result<Tensor> {
        let mut dims = a.dims().to_vec();
        let m = a.elem_count() / self.blocks.cols();
        let x = a.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; m * self.blocks.rows()];
        if m >= PANEL_PATH_MIN_ROWS {
            self.blocks.matmul_panels(&x, m, &mut out);
        } else {
            self.blocks.matmul(&x, m, &mut out);
        }
        *dims.last_mut().expect("a matrix product's input has a last dimension") = self.blocks.rows();
        let y = Tensor::from_vec(out, dims, &Device::Cpu)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl QuantMethod for CpuQuantizedLinear {
    fn new(_method: QuantMethodConfig) -> Result<Self> {
        candle_core::bail!("CpuQuantizedLinear is built with CpuQuantizedLinear::new")
    }

    fn dequantize_w(&self) -> Result<Tensor> {
        self.upstream.dequantize_w()
    }

    fn forward(&self, a: &Tensor) -> Result<Tensor> {
        let ours = a.device().is_cpu() && a.dtype() == DType::F32 && a.dims().last() == Some(&self.blocks.cols());
        if !ours {
            return self.upstream.forward(a);
        }
        self.blocks_forward(a)
    }

    fn gather_forward(&self, a: &Tensor, indices: &Tensor) -> Result<Tensor> {
        self.upstream.gather_forward(a, indices)
    }

    fn quantized_act_type(&self) -> Option<DType> {
        self.upstream.quantized_act_type()
    }

    fn dtype_and_device(&self) -> (DType, Device) {
        self.upstream.dtype_and_device()
    }

    fn add_delta_w(&self, delta: &Tensor) -> Result<Arc<dyn QuantMethod>> {
        self.upstream.add_delta_w(delta)
    }

    fn apply_isq(
        self: Arc<Self>,
        dtype: Option<IsqType>,
        device: Device,
        n_quantized: &AtomicUsize,
        imatrix_weight: Option<Vec<f32>>,
        guard: QuantizeOntoGuard,
    ) -> Result<Arc<dyn QuantMethod>> {
        self.upstream.clone().apply_isq(dtype, device, n_quantized, imatrix_weight, guard)
    }
}

impl QuantizedSerde for CpuQuantizedLinear {
    fn name(&self) -> &'static str {
        self.upstream.name()
    }

    fn isq_serde_supported(&self) -> bool {
        self.upstream.isq_serde_supported()
    }

    fn serialize(&self) -> Result<Cow<'_, [u8]>> {
        self.upstream.serialize()
    }

    fn serialize_with_bias(&self, bias: Option<Tensor>) -> Result<Cow<'_, [u8]>> {
        self.upstream.serialize_with_bias(bias)
    }
}
