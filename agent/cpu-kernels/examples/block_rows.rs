//! Times the block product against candle's dense F32 product for 1 to 64 activation rows
//! on the default model's largest per-layer shape (1,536 × 576), to place
//! `BLOCK_PATH_MAX_ROWS`.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cpu_kernels::{BlockFormat, QuantizedMatrix};

fn main() {
    let (rows, cols) = (1536, 576);
    let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let weights = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&weights, GgmlDType::Q4_1).unwrap();
    let matrix = QuantizedMatrix::from_gguf_blocks(BlockFormat::Q4_1, rows, cols, &q.data().unwrap()).unwrap();
    let dense = Tensor::from_vec(matrix.dequantize(), (rows, cols), &Device::Cpu).unwrap().t().unwrap();
    for m in [1usize, 2, 4, 8, 12, 16, 24, 32, 48, 64] {
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
        let mut out = vec![0f32; m * rows];
        let runs = 400;
        let time = |f: &mut dyn FnMut()| {
            for _ in 0..20 {
                f();
            }
            let start = Instant::now();
            for _ in 0..runs {
                f();
            }
            start.elapsed().as_secs_f64() / runs as f64 * 1e6
        };
        let blocks = time(&mut || matrix.matmul(&x, m, &mut out));
        let dense = time(&mut || {
            std::hint::black_box(xt.matmul(&dense).unwrap());
        });
        println!("{m:>3} rows: blocks {blocks:8.1} µs, dense {dense:8.1} µs, blocks/dense {:.2}", blocks / dense);
    }
}
