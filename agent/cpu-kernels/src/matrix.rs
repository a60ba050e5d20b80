//! A weight matrix held in GGUF's 32-value blocks, multiplied by F32 activations.
//!
//! The product is exactly the one a dense F32 copy of the weights would give, up to the
//! order of additions: every block is expanded to `q * d + m` and multiplied with the
//! activations in F32. Nothing is rounded to 8 bits on the activation side (llama.cpp and
//! candle's quantized path do that), so a model gives the same logits through this path as
//! through its dense F32 expansion, and one greedy reference serves both.
//!
//! The loops are written over fixed-size lanes so that the compiler vectorizes them for the
//! CPU the build targets (the workspace builds with `target-cpu=native`: AVX-512 or AVX2 on
//! x86, NEON on ARM); the same source is the portable fallback.

use rayon::prelude::*;

use crate::simd;

/// Values per GGUF block for the formats taken here.
pub const BLOCK: usize = 32;

/// Bytes of F32 weights [`QuantizedMatrix::matmul_panels`] expands at a time per thread:
/// a quarter of a typical core's L2, so that the panel and the activation tiles the GEMM
/// kernel packs beside it stay there.
const PANEL_BYTES: usize = 256 * 1024;

/// The output matrix's first value, shared by the panel tasks of one product, which write
/// disjoint columns of it.
struct OutputColumns(*mut f32);

// SAFETY: the pointer is only used inside `matmul_panels`, whose tasks write disjoint
// columns of a buffer that outlives them.
#[allow(unsafe_code)]
unsafe impl Sync for OutputColumns {}
#[allow(unsafe_code)]
unsafe impl Send for OutputColumns {}

/// How a block stores its 32 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// 4-bit unsigned values `q` with a scale and a minimum: `q * d + m`. Low nibbles are
    /// the block's first 16 values, high nibbles its last 16.
    Q4_1,
    /// 8-bit signed values with a scale: `q * d`.
    Q8_0,
}

impl BlockFormat {
    /// Bytes one block takes in a GGUF file.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// Bytes of quantized values per block in [`QuantizedMatrix`]'s layout.
    fn quant_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => BLOCK / 2,
            BlockFormat::Q8_0 => BLOCK,
        }
    }
}

/// A `rows × cols` weight matrix (rows are output features), unpacked from GGUF blocks so
/// that the inner loop reads F32 scales instead of converting F16 ones for every block.
pub struct QuantizedMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// One scale per block, row-major.
    scales: Vec<f32>,
    /// One minimum per block (Q4_1); empty for Q8_0.
    mins: Vec<f32>,
    /// The blocks' values, [`BlockFormat::quant_bytes`] per block, row-major.
    quants: Vec<u8>,
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix").field("format", &self.format).field("rows", &self.rows).field("cols", &self.cols).finish()
    }
}

/// Why a matrix cannot be taken from GGUF bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum MatrixError {
    ColumnsNotBlockMultiple(usize),
    WrongByteCount { expected: usize, actual: usize },
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixError::ColumnsNotBlockMultiple(cols) => write!(f, "{cols} columns is not a multiple of {BLOCK}"),
            MatrixError::WrongByteCount { expected, actual } => write!(f, "expected {expected} bytes of blocks, got {actual}"),
        }
    }
}

impl std::error::Error for MatrixError {}

impl QuantizedMatrix {
    /// Takes a matrix from its GGUF block bytes (little-endian, as stored in the file).
    pub fn from_gguf_blocks(format: BlockFormat, rows: usize, cols: usize, data: &[u8]) -> Result<Self, MatrixError> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(MatrixError::ColumnsNotBlockMultiple(cols));
        }
        let blocks = rows * cols / BLOCK;
        let block_bytes = format.gguf_block_bytes();
        if data.len() != blocks * block_bytes {
            return Err(MatrixError::WrongByteCount { expected: blocks * block_bytes, actual: data.len() });
        }
        let f16_at = |bytes: &[u8], at: usize| half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32();
        let mut scales = Vec::with_capacity(blocks);
        let mut mins = Vec::with_capacity(if format == BlockFormat::Q4_1 { blocks } else { 0 });
        let mut quants = Vec::with_capacity(blocks * format.quant_bytes());
        for block in data.chunks_exact(block_bytes) {
            scales.push(f16_at(block, 0));
            match format {
                BlockFormat::Q4_1 => {
                    mins.push(f16_at(block, 2));
                    quants.extend_from_slice(&block[4..]);
                }
                BlockFormat::Q8_0 => quants.extend_from_slice(&block[2..]),
            }
        }
        Ok(Self { format, rows, cols, scales, mins, quants })
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The matrix in F32, row-major, computed value by value (the reference the products
    /// are checked against).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0, &mut out);
        out
    }

    /// Weight rows from `first` in F32 into `out` (a whole number of rows, row-major):
    /// `q * d + m` for Q4_1, `q * d` for Q8_0, each rounded once as written.
    fn dequantize_rows(&self, first: usize, out: &mut [f32]) {
        let blocks_per_row = self.cols / BLOCK;
        let first_block = first * blocks_per_row;
        for (i, values) in out.chunks_exact_mut(BLOCK).enumerate() {
            // Fixed-size arrays, so that the loops below are whole vector operations.
            let values: &mut [f32; BLOCK] = values.try_into().expect("chunks of one block");
            let block = first_block + i;
            let d = self.scales[block];
            match self.format {
                BlockFormat::Q4_1 => {
                    let m = self.mins[block];
                    let qs: &[u8; 16] = self.quants[block * 16..block * 16 + 16].try_into().expect("16 bytes of values");
                    for j in 0..16 {
                        values[j] = (qs[j] & 0x0F) as f32 * d + m;
                        values[j + 16] = (qs[j] >> 4) as f32 * d + m;
                    }
                }
                BlockFormat::Q8_0 => {
                    let qs: &[u8; BLOCK] = self.quants[block * BLOCK..block * BLOCK + BLOCK].try_into().expect("32 bytes of values");
                    for j in 0..BLOCK {
                        values[j] = qs[j] as i8 as f32 * d;
                    }
                }
            }
        }
    }

    /// `out = x · selfᵀ` for products of many activation rows (prompts), at the speed of a
    /// dense F32 GEMM without keeping a dense copy of the weights: each panel of weight rows
    /// is expanded to F32 once, into a buffer that stays in the core's L2, and the `gemm`
    /// crate's kernel (the one candle's dense products use) multiplies every activation row
    /// with it. The expansion costs one pass over the weights, small beside `m` rows of
    /// multiply-adds once `m` is a few dozen. Each value is the same as in a dense F32 copy,
    /// so the products equal the dense path's up to the order of additions.
    pub fn matmul_panels(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activations must be m × cols");
        assert_eq!(out.len(), m * self.rows, "output must be m × rows");
        if m == 0 || self.rows == 0 {
            return;
        }
        // Whole weight rows, a multiple of 16 of them, about `PANEL_BYTES` of F32 (at least
        // 16 rows however wide they are).
        let panel_rows = (PANEL_BYTES / (4 * self.cols).max(1)).max(1).next_multiple_of(16).min(self.rows);
        let panels = self.rows.div_ceil(panel_rows);
        let out = OutputColumns(out.as_mut_ptr());
        (0..panels).into_par_iter().for_each_init(Vec::new, |panel, p| {
            let first = p * panel_rows;
            let rows = panel_rows.min(self.rows - first);
            panel.resize(rows * self.cols, 0f32);
            self.dequantize_rows(first, panel);
            let out = &out;
            // SAFETY: `out` points to `m × self.rows` F32 values (asserted above) that live
            // until this parallel loop returns; this task writes only columns
            // `first..first + rows` of each of the `m` rows (row stride `self.rows`), and no
            // two panels share a column. `x` holds `m × cols` values (row stride `cols`) and
            // `panel` `rows × cols` (row-major, so column stride `cols` as the right-hand
            // `cols × rows` matrix). `read_dst` is false, so the output is only written.
            #[allow(unsafe_code)]
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    self.cols,
                    out.0.add(first),
                    1,
                    self.rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    self.cols as isize,
                    panel.as_ptr(),
                    self.cols as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
    }

    /// `out = x · selfᵀ` for `x` of `m × cols` and `out` of `m × rows`, both row-major.
    ///
    /// The output rows are split into one contiguous range per compute thread, so each
    /// product costs one hand-off to the pool (not one per activation row, nor per small
    /// chunk), and each thread streams its own slice of the weights once per activation row.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activations must be m × cols");
        assert_eq!(out.len(), m * self.rows, "output must be m × rows");
        let blocks_per_row = self.cols / BLOCK;
        // Tiled also for one row, so that a token's outputs are computed the same way
        // whichever other tokens share its product: a sequence decoded in a batch gets the
        // same logits as alone.
        let tiled = tokens_tiled();
        // Sums of each activation block, for Q4_1's `m · Σx` term (the tiled products fold
        // the minimums into the weights instead).
        let block_sums: Vec<f32> =
            if self.format == BlockFormat::Q4_1 && !tiled { x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect() } else { Vec::new() };
        let threads = rayon::current_num_threads().max(1);
        // Ranges of whole rows, a multiple of 8 so that no two threads write one cache line.
        let rows_per_task = self.rows.div_ceil(threads).next_multiple_of(8).max(8);
        if m == 1 {
            // The calling thread computes the first range itself while the pool's other
            // threads take the rest. The patched mistral.rs runs its forward on a pool
            // thread, so the ranges add up to exactly one per core.
            let mut ranges = out.chunks_mut(rows_per_task).enumerate();
            let own = ranges.next();
            let rows_dot = |first: usize, out: &mut [f32]| {
                if tiled {
                    for (i, o) in out.iter_mut().enumerate() {
                        self.row_dot_tokens(first + i, x, std::slice::from_mut(o));
                    }
                } else {
                    self.rows_dot(first, x, &block_sums, out);
                }
            };
            rayon::in_place_scope(|scope| {
                for (task, out) in ranges {
                    let rows_dot = &rows_dot;
                    scope.spawn(move |_| rows_dot(task * rows_per_task, out));
                }
                if let Some((_, out)) = own {
                    rows_dot(0, out);
                }
            });
            return;
        }
        // Several activation rows: each task fills its rows for every activation row into a
        // transposed buffer (its own contiguous slice), reusing each weight row from L1
        // (and, tiled, each expanded block from registers).
        let mut transposed = vec![0f32; self.rows * m];
        transposed.par_chunks_mut(rows_per_task * m).enumerate().for_each(|(task, out)| {
            let first = task * rows_per_task;
            if tiled {
                // One tile of activation rows at a time across all of this task's weight
                // rows: the tile stays in L1 and the task's weights in L2. (Each weight
                // row against all activation rows reads those again for every weight row:
                // from 24 rows on they spill L1: 24 and 32 rows took 1.3× this order's time.)
                for start in (0..m).step_by(simd::TOKEN_TILE) {
                    let end = (start + simd::TOKEN_TILE).min(m);
                    let tile = &x[start * self.cols..end * self.cols];
                    for (i, o) in out.chunks_exact_mut(m).enumerate() {
                        self.row_dot_tokens(first + i, tile, &mut o[start..end]);
                    }
                }
                return;
            }
            for (i, o) in out.chunks_exact_mut(m).enumerate() {
                for (token, o) in o.iter_mut().enumerate() {
                    let x = &x[token * self.cols..(token + 1) * self.cols];
                    let sums = &block_sums[token * blocks_per_row..(token + 1) * blocks_per_row];
                    *o = self.row_dot(first + i, x, sums);
                }
            }
        });
        for (row, values) in transposed.chunks_exact(m).enumerate() {
            for (token, v) in values.iter().enumerate() {
                out[token * self.rows + row] = *v;
            }
        }
    }

    /// Output values for consecutive weight rows from `first`, for one activation row.
    fn rows_dot(&self, first: usize, x: &[f32], block_sums: &[f32], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.row_dot(first + i, x, block_sums);
        }
    }

    /// Weight row `row` times every activation row of `x` (one value each into `out`), where
    /// [`tokens_tiled`].
    fn row_dot_tokens(&self, row: usize, x: &[f32], out: &mut [f32]) {
        let blocks = self.cols / BLOCK;
        let first = row * blocks;
        let scales = &self.scales[first..first + blocks];
        #[cfg(target_arch = "x86_64")]
        match self.format {
            BlockFormat::Q4_1 => {
                simd::q4_1_tokens_avx512(scales, &self.mins[first..first + blocks], &self.quants[first * 16..(first + blocks) * 16], x, out)
            }
            BlockFormat::Q8_0 => simd::q8_0_tokens_avx512(scales, &self.quants[first * 32..(first + blocks) * 32], x, out),
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (scales, x, out);
            unreachable!("activation rows are tiled only with AVX-512");
        }
    }

    /// One output value: weight row `row` times one activation row.
    fn row_dot(&self, row: usize, x: &[f32], block_sums: &[f32]) -> f32 {
        let blocks = self.cols / BLOCK;
        let first = row * blocks;
        let scales = &self.scales[first..first + blocks];
        match self.format {
            BlockFormat::Q4_1 => {
                let mins = &self.mins[first..first + blocks];
                let quants = &self.quants[first * 16..(first + blocks) * 16];
                let minimums: f32 = mins.iter().zip(block_sums).map(|(m, s)| m * s).sum();
                let products = match simd::level() {
                    // AVX-512 CPUs take the tiled products and never come here; they run
                    // the AVX2 loop too.
                    #[cfg(target_arch = "x86_64")]
                    simd::Level::Avx512 | simd::Level::Avx2 => simd::q4_1_avx2(scales, quants, x),
                    simd::Level::Portable => q4_1_row_dot(scales, quants, x),
                };
                products + minimums
            }
            BlockFormat::Q8_0 => {
                let quants = &self.quants[first * 32..(first + blocks) * 32];
                match simd::level() {
                    #[cfg(target_arch = "x86_64")]
                    simd::Level::Avx512 | simd::Level::Avx2 => simd::q8_0_avx2(scales, quants, x),
                    simd::Level::Portable => q8_0_row_dot(scales, quants, x),
                }
            }
        }
    }
}

/// Whether products of several activation rows expand each block once for all of them
/// (see [`simd::q4_1_tokens_avx512`]); elsewhere each row is a separate dot product.
fn tokens_tiled() -> bool {
    #[cfg(target_arch = "x86_64")]
    if simd::level() == simd::Level::Avx512 {
        return true;
    }
    false
}

/// Σ over blocks of `d · Σ q·x` (the caller adds `m · Σx`), in portable code: the
/// reference for the vector versions and what runs on CPUs without them.
pub fn q4_1_row_dot(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (block, d) in scales.iter().enumerate() {
        q4_1_block(&mut acc, &quants[block * 16..block * 16 + 16], &x[block * BLOCK..(block + 1) * BLOCK], *d);
    }
    acc.iter().sum()
}

#[inline(always)]
fn q4_1_block(acc: &mut [f32; 16], qs: &[u8], x: &[f32], d: f32) {
    let qs: &[u8; 16] = qs.try_into().expect("16 bytes of values");
    let x: &[f32; BLOCK] = x.try_into().expect("32 activations");
    // Nibbles first expanded to bytes in value order, so that the products below are two
    // straight 16-lane passes (written interleaved, the compiler falls back to 4 lanes).
    let mut values = [0u8; BLOCK];
    for j in 0..16 {
        values[j] = qs[j] & 0x0F;
        values[j + 16] = qs[j] >> 4;
    }
    let mut products = [0f32; 16];
    for j in 0..16 {
        products[j] = values[j] as f32 * x[j];
    }
    for j in 0..16 {
        products[j] = (values[j + 16] as f32).mul_add(x[j + 16], products[j]);
    }
    for j in 0..16 {
        acc[j] = products[j].mul_add(d, acc[j]);
    }
}

/// Σ over blocks of `d · Σ q·x`, in portable code.
pub fn q8_0_row_dot(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; BLOCK];
    for (block, d) in scales.iter().enumerate() {
        q8_0_block(&mut acc, &quants[block * BLOCK..(block + 1) * BLOCK], &x[block * BLOCK..(block + 1) * BLOCK], *d);
    }
    acc.iter().sum()
}

#[inline(always)]
fn q8_0_block(acc: &mut [f32; BLOCK], qs: &[u8], x: &[f32], d: f32) {
    let qs: &[u8; BLOCK] = qs.try_into().expect("32 bytes of values");
    let x: &[f32; BLOCK] = x.try_into().expect("32 activations");
    for j in 0..BLOCK {
        acc[j] = (qs[j] as i8 as f32 * x[j]).mul_add(d, acc[j]);
    }
}
