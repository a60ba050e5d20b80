//! The block products against a value-by-value reference on random weights: the blocks
//! must be read exactly as candle reads them, and the products must equal a dense F32
//! product up to the order of additions.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cpu_kernels::{BlockFormat, QuantizedMatrix};
use rand::{Rng, SeedableRng};

/// Relative to the size of the terms summed (Σ|w·x|), so that long rows are held to the
/// same standard as short ones; F32 accumulation in another order stays far below it.
const TOLERANCE: f64 = 1e-5;

fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The two ways a matrix multiplies activations: its block loops, and panels expanded to F32.
#[derive(Clone, Copy, Debug)]
enum Product {
    Blocks,
    Panels,
}

/// Quantizes random weights with candle, reads the blocks into a matrix, and checks that
/// (1) the matrix dequantizes to exactly candle's values and (2) its product with random
/// activations (for each number of activation rows, by the block loops and by expanded
/// panels) equals an f64 product of those values.
fn check(format: BlockFormat, rows: usize, cols: usize, activation_rows: &[usize]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64((rows * 31 + cols) as u64);
    let weights = Tensor::from_vec(random(&mut rng, rows * cols), (rows, cols), &Device::Cpu).unwrap();
    let dtype = match format {
        BlockFormat::Q4_1 => GgmlDType::Q4_1,
        BlockFormat::Q8_0 => GgmlDType::Q8_0,
    };
    let quantized = QTensor::quantize(&weights, dtype).unwrap();
    let matrix = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &quantized.data().unwrap()).unwrap();
    let expected_values = quantized.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let values = matrix.dequantize();
    assert_eq!(values, expected_values, "{format:?} {rows}x{cols}: blocks read differently from candle");

    for (&m, product) in activation_rows.iter().flat_map(|m| [(m, Product::Blocks), (m, Product::Panels)]) {
        let x = random(&mut rng, m * cols);
        let mut out = vec![f32::NAN; m * rows];
        match product {
            Product::Blocks => matrix.matmul(&x, m, &mut out),
            Product::Panels => matrix.matmul_panels(&x, m, &mut out),
        }
        for token in 0..m {
            let x = &x[token * cols..(token + 1) * cols];
            for row in 0..rows {
                let w = &values[row * cols..(row + 1) * cols];
                let exact: f64 = w.iter().zip(x).map(|(w, x)| *w as f64 * *x as f64).sum();
                let scale: f64 = w.iter().zip(x).map(|(w, x)| (*w as f64 * *x as f64).abs()).sum();
                let got = out[token * rows + row] as f64;
                assert!(
                    (got - exact).abs() <= TOLERANCE * scale.max(1.0),
                    "{format:?} {rows}x{cols}, {m} rows by {product:?}: out[{token}][{row}] = {got}, reference {exact}"
                );
            }
        }
    }
}

#[test]
fn q4_1_matches_the_dense_product() {
    // The default model's shapes (576 wide, 1,536 in the MLP, 192 for grouped keys and
    // values), an odd number of blocks, a row count no thread split divides evenly, and
    // decode (1 row) as well as short and prompt-sized products.
    check(BlockFormat::Q4_1, 576, 576, &[1, 2, 4, 8, 16, 37]);
    check(BlockFormat::Q4_1, 192, 576, &[1, 5]);
    check(BlockFormat::Q4_1, 576, 1536, &[1, 3, 70]);
    check(BlockFormat::Q4_1, 13, 96, &[1, 7]);
}

#[test]
fn q8_0_matches_the_dense_product() {
    check(BlockFormat::Q8_0, 576, 576, &[1, 2, 4, 8, 16, 37]);
    check(BlockFormat::Q8_0, 1536, 576, &[1, 3, 70]);
    check(BlockFormat::Q8_0, 13, 96, &[1, 7]);
}

/// Products with nothing to compute leave the output as it is instead of failing.
#[test]
fn empty_products_compute_nothing() {
    let matrix = QuantizedMatrix::from_gguf_blocks(BlockFormat::Q8_0, 0, 64, &[]).unwrap();
    matrix.matmul_panels(&[0.5; 64], 1, &mut []);
    let matrix = QuantizedMatrix::from_gguf_blocks(BlockFormat::Q8_0, 2, 64, &[0; 136]).unwrap();
    matrix.matmul_panels(&[], 0, &mut []);
}

#[test]
fn malformed_blocks_are_refused() {
    assert!(QuantizedMatrix::from_gguf_blocks(BlockFormat::Q4_1, 2, 48, &[0; 60]).is_err());
    assert!(QuantizedMatrix::from_gguf_blocks(BlockFormat::Q8_0, 2, 64, &[0; 135]).is_err());
}

/// Every vector version this CPU runs against the portable loop it replaces, on rows of
/// 1 to 48 blocks; the matrix tests above only reach the widest one.
#[test]
fn each_vector_level_matches_the_portable_loop() {
    use cpu_kernels::matrix::{q4_1_row_dot, q8_0_row_dot};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for blocks in [1usize, 2, 17, 48] {
        let scales = random(&mut rng, blocks);
        let x = random(&mut rng, blocks * 32);
        let q4: Vec<u8> = (0..blocks * 16).map(|_| rng.random()).collect();
        let q8: Vec<u8> = (0..blocks * 32).map(|_| rng.random()).collect();
        let scale: f32 = x.iter().map(|v| v.abs()).sum::<f32>() * 16.0;
        let close = |a: f32, b: f32, what: &str| assert!((a - b).abs() <= 1e-5 * scale, "{what}, {blocks} blocks: {a} vs {b}");
        let (q4_ref, q8_ref) = (q4_1_row_dot(&scales, &q4, &x), q8_0_row_dot(&scales, &q8, &x) / 8.0);
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                close(cpu_kernels::simd::q4_1_avx2(&scales, &q4, &x), q4_ref, "q4_1 avx2");
                close(cpu_kernels::simd::q8_0_avx2(&scales, &q8, &x) / 8.0, q8_ref, "q8_0 avx2");
            }
            if is_x86_feature_detected!("avx512f") {
                // The tiled kernels fold each block's minimum into its weights; zero
                // minimums leave the sum the row functions compute.
                let (mut q4_tiled, mut q8_tiled) = ([0f32], [0f32]);
                cpu_kernels::simd::q4_1_tokens_avx512(&scales, &vec![0.0; blocks], &q4, &x, &mut q4_tiled);
                cpu_kernels::simd::q8_0_tokens_avx512(&scales, &q8, &x, &mut q8_tiled);
                close(q4_tiled[0], q4_ref, "q4_1 avx512");
                close(q8_tiled[0] / 8.0, q8_ref, "q8_0 avx512");
            }
        }
        let _ = (close, q4_ref, q8_ref);
    }
}

/// A row's products are the same, bit for bit, whether it is multiplied alone or with
/// others (up to the batch the scheduler decodes at once): a sequence decoded next to
/// other users' sequences gets exactly the logits it gets alone.
#[test]
fn a_rows_products_do_not_depend_on_the_rows_beside_it() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // The scheduler's default batch: 16 sequences decoding at once.
    let (rows, cols, m) = (200, 576, 16);
    for (format, dtype) in [(BlockFormat::Q4_1, GgmlDType::Q4_1), (BlockFormat::Q8_0, GgmlDType::Q8_0)] {
        let weights = Tensor::from_vec(random(&mut rng, rows * cols), (rows, cols), &Device::Cpu).unwrap();
        let quantized = QTensor::quantize(&weights, dtype).unwrap();
        let matrix = QuantizedMatrix::from_gguf_blocks(format, rows, cols, &quantized.data().unwrap()).unwrap();
        let x = random(&mut rng, m * cols);
        let mut together = vec![0f32; m * rows];
        matrix.matmul(&x, m, &mut together);
        for token in 0..m {
            let mut alone = vec![0f32; rows];
            matrix.matmul(&x[token * cols..(token + 1) * cols], 1, &mut alone);
            assert_eq!(alone, together[token * rows..(token + 1) * rows], "{format:?}: row {token} of {m}");
        }
    }
}
