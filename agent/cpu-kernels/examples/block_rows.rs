//! Times the block product and the expanded panels against candle's dense F32 product for
//! 1 to 512 activation rows, to place `PANEL_PATH_MIN_ROWS` (`ROWS=32,64` picks the counts). Each pass multiplies 90 matrices of the default model's
//! MLP shape (1,536 × 576; 30 layers × 3), more than the CPU's caches hold in either form,
//! so that weights stream from memory as they do in a forward pass.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cpu_kernels::{BlockFormat, QuantizedMatrix};

const MATRICES: usize = 90;

fn main() {
    let (rows, cols) = (1536, 576);
    let mut blocks = Vec::new();
    let mut dense = Vec::new();
    for k in 0..MATRICES {
        let values: Vec<f32> = (0..rows * cols).map(|i| (((i + k * 131) * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let weights = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&weights, GgmlDType::Q4_1).unwrap();
        let matrix = QuantizedMatrix::from_gguf_blocks(BlockFormat::Q4_1, rows, cols, &q.data().unwrap()).unwrap();
        dense.push(Tensor::from_vec(matrix.dequantize(), (rows, cols), &Device::Cpu).unwrap().t().unwrap());
        blocks.push(matrix);
    }
    let sizes: Vec<usize> = std::env::var("ROWS")
        .map(|v| v.split(",").map(|s| s.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512]);
    for m in sizes {
        let x: Vec<f32> = (0..m * cols).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
        let mut out = vec![0f32; m * rows];
        let runs = 10;
        let time = |f: &mut dyn FnMut()| {
            f();
            let start = Instant::now();
            for _ in 0..runs {
                f();
            }
            start.elapsed().as_secs_f64() / runs as f64 * 1e3
        };
        let by_blocks = time(&mut || blocks.iter().for_each(|b| b.matmul(&x, m, &mut out)));
        let by_panels = time(&mut || blocks.iter().for_each(|b| b.matmul_panels(&x, m, &mut out)));
        let by_dense = time(&mut || {
            dense.iter().for_each(|d| {
                std::hint::black_box(xt.matmul(d).unwrap());
            })
        });
        println!(
            "{m:>3} rows: blocks {by_blocks:7.2} ms, panels {by_panels:7.2} ms, dense {by_dense:7.2} ms a pass; blocks/dense {:.2}, panels/dense {:.2}",
            by_blocks / by_dense,
            by_panels / by_dense
        );
    }
}
