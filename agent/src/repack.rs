//! Repacking GGUF weights into a type the CPU kernels are fast at.
//!
//! Q4_1 and Q8_0 matrices (the default model's types) are multiplied by our own kernels
//! (`cpu-kernels`), for generated tokens and prompts alike, so the file's blocks serve as
//! they are. candle, the tensor library under mistral.rs, computes Q5_0 and Q5_1 with
//! scalar code; rewriting those tensors as Q8_0 once, into the cache, moves their work
//! onto fast kernels. The values are the same to within Q8_0's rounding: a 5-bit block is
//! 32 weights on 32 levels, which 8-bit blocks of the same size represent almost exactly.
//! See [`WeightFormat`] for the choices.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

/// Tensor types that candle computes without SIMD on x86 and that Q8_0 holds without loss
/// worth measuring. (Q4_1 goes to our kernels as it is; an explicit `q8_0` repack still
/// rewrites it, as it did before those kernels existed.)
const SLOW_TYPES: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// The types among [`SLOW_TYPES`] that no kernel of ours takes: a file holding any of them
/// is repacked to Q8_0 by `Auto`.
const SLOW_WITHOUT_OUR_KERNELS: &[GgmlDType] = &[GgmlDType::Q5_0, GgmlDType::Q5_1];

/// GGUF's `general.file_type` code for a file whose weights are mostly `dtype`.
fn file_type_code(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        _ => 7, // MOSTLY_Q8_0
    }
}

/// Where the repacked copy of `source` lives: next to nothing the user owns, in the cache,
/// named after the source's content hash so that a changed source is never served stale.
pub fn repacked_path(cache: &Path, source: &Path, format: WeightFormat) -> anyhow::Result<PathBuf> {
    let digest = crate::model::sha256_file(source).with_context(|| format!("cannot read {}", source.display()))?;
    let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    Ok(cache.join("models").join("repacked").join(format!("{stem}.{}.{}.gguf", &digest[..16], format.suffix())))
}

/// Whether a repack to `target` rewrites a tensor of type `tensor`: to F32, every
/// quantized tensor (so that nothing is computed on 8-bit activations; the default model's
/// tied output matrix is Q8_0); to Q8_0, the slow types.
fn rewrites(target: GgmlDType, tensor: GgmlDType) -> bool {
    match target {
        GgmlDType::F32 => !matches!(tensor, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16),
        _ => SLOW_TYPES.contains(&tensor),
    }
}

/// Whether a GGUF file has tensors a repack to `target` rewrites.
pub fn needs_repack(source: &Path, target: GgmlDType) -> anyhow::Result<bool> {
    let mut reader = BufReader::new(File::open(source)?);
    let content = gguf_file::Content::read(&mut reader).with_context(|| format!("{} is not a readable GGUF file", source.display()))?;
    Ok(content.tensor_infos.values().any(|info| rewrites(target, info.ggml_dtype)))
}

/// How the embedded backend stores weights in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// The file's own tensor types. Q4_1 and Q8_0 matrices are multiplied block by block
    /// (the `cpu-kernels` crate) for generated tokens, and through panels expanded to F32
    /// for a dense GEMM kernel for prompts: one copy of the weights, fast for both.
    AsShipped,
    /// Slow types requantized to Q8_0.
    Q8_0,
    /// Every quantized tensor expanded to F32: exact values, but decoding reads 4 bytes per
    /// weight and slows down.
    F32,
    /// `AsShipped`, unless the file holds types only a repack makes fast; see
    /// [`choose_auto`].
    Auto,
}

impl WeightFormat {
    fn dtype(self) -> Option<GgmlDType> {
        match self {
            WeightFormat::Q8_0 => Some(GgmlDType::Q8_0),
            WeightFormat::F32 => Some(GgmlDType::F32),
            WeightFormat::AsShipped | WeightFormat::Auto => None,
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            // Not "f32": files of that name expanded only the slow types.
            WeightFormat::F32 => "dense",
            _ => "q8_0",
        }
    }
}

/// `Auto` resolved for one file: the file as it is, unless it holds Q5_0/Q5_1 tensors,
/// which no kernel of ours takes and candle computes with scalar code: then Q8_0.
pub fn choose_auto(source: &Path) -> anyhow::Result<WeightFormat> {
    let mut reader = BufReader::new(File::open(source)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let slow = content.tensor_infos.values().any(|info| SLOW_WITHOUT_OUR_KERNELS.contains(&info.ggml_dtype));
    Ok(if slow { WeightFormat::Q8_0 } else { WeightFormat::AsShipped })
}

/// Returns what to load in place of `source`: the source itself when it has nothing to
/// repack (or the format keeps the file's blocks), else its repacked copy in the cache,
/// written first if absent.
pub fn prepare(cache: &Path, source: &Path, format: WeightFormat) -> anyhow::Result<PathBuf> {
    let format = if format == WeightFormat::Auto { choose_auto(source)? } else { format };
    let Some(dtype) = format.dtype() else { return Ok(source.to_path_buf()) };
    if !needs_repack(source, dtype)? {
        return Ok(source.to_path_buf());
    }
    let target = repacked_path(cache, source, format)?;
    if !target.exists() {
        repack_to(source, &target, dtype)?;
    }
    Ok(target)
}

/// Writes a copy of `source` whose slow-typed tensors are stored as `dtype`. The file is
/// written under a temporary name and renamed, so a crash never leaves a partial model.
pub fn repack_to(source: &Path, target: &Path, dtype: GgmlDType) -> anyhow::Result<()> {
    let mut reader = BufReader::new(File::open(source)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(&mut reader, name, &device)?;
        let tensor = if rewrites(dtype, tensor.dtype()) { QTensor::quantize(&tensor.dequantize(&device)?, dtype)? } else { tensor };
        tensors.push((name.as_str(), tensor));
    }
    let file_type = gguf_file::Value::U32(file_type_code(dtype));
    let mut metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(key, value)| if key == "general.file_type" { (key.as_str(), &file_type) } else { (key.as_str(), value) })
        .collect();
    metadata.sort_by_key(|(key, _)| *key);

    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    write_gguf(target, &metadata, &tensor_refs)
}

/// Writes a GGUF file under a temporary name and renames it into place, so that a crash
/// (or a reader loading it at the same moment) never sees a partial model.
pub fn write_gguf(target: &Path, metadata: &[(&str, &gguf_file::Value)], tensors: &[(&str, &QTensor)]) -> anyhow::Result<()> {
    let dir = target.parent().context("the GGUF target has no parent directory")?;
    std::fs::create_dir_all(dir)?;
    let staged = tempfile::Builder::new().prefix(".gguf-").suffix(".gguf").tempfile_in(dir)?;
    {
        let mut writer = BufWriter::new(staged.as_file());
        gguf_file::write(&mut writer, metadata, tensors)?;
    }
    staged.as_file().sync_all()?;
    staged.persist(target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn write_gguf(path: &Path, tensor: &QTensor) {
        let mut file = File::create(path).unwrap();
        let arch = gguf_file::Value::String("llama".into());
        let file_type = gguf_file::Value::U32(3);
        gguf_file::write(&mut file, &[("general.architecture", &arch), ("general.file_type", &file_type)], &[("w", tensor)]).unwrap();
    }

    #[test]
    fn q4_1_tensors_become_q8_0_with_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..2 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let original = QTensor::quantize(&Tensor::from_vec(values, (2, 64), &Device::Cpu).unwrap(), GgmlDType::Q4_1).unwrap();
        let source = dir.path().join("m.gguf");
        write_gguf(&source, &original);
        assert!(needs_repack(&source, GgmlDType::Q8_0).unwrap());

        let target = prepare(dir.path(), &source, WeightFormat::Q8_0).unwrap();
        assert_ne!(target, source);
        let mut reader = BufReader::new(File::open(&target).unwrap());
        let content = gguf_file::Content::read(&mut reader).unwrap();
        let repacked = content.tensor(&mut reader, "w", &Device::Cpu).unwrap();
        assert_eq!(repacked.dtype(), GgmlDType::Q8_0);
        assert_eq!(repacked.shape().dims(), &[2, 64]);
        assert!(matches!(content.metadata["general.file_type"], gguf_file::Value::U32(7)));
        assert!(matches!(&content.metadata["general.architecture"], gguf_file::Value::String(s) if s == "llama"));

        let before: Vec<f32> = original.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let after: Vec<f32> = repacked.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.02, "largest difference {worst}");

        // Prepared twice, the copy is reused; a file with nothing slow is used as it is.
        assert_eq!(prepare(dir.path(), &source, WeightFormat::Q8_0).unwrap(), target);
        assert!(!needs_repack(&target, GgmlDType::Q8_0).unwrap());
        assert_eq!(prepare(dir.path(), &target, WeightFormat::Q8_0).unwrap(), target);
        assert_eq!(prepare(dir.path(), &source, WeightFormat::AsShipped).unwrap(), source);
    }

    /// A one-tensor Q4_1 model file in a fresh directory.
    fn small_q4_1_model() -> (tempfile::TempDir, QTensor, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..64).map(|i| i as f32 / 7.0).collect();
        let original = QTensor::quantize(&Tensor::from_vec(values, (1, 64), &Device::Cpu).unwrap(), GgmlDType::Q4_1).unwrap();
        let source = dir.path().join("m.gguf");
        write_gguf(&source, &original);
        (dir, original, source)
    }

    #[test]
    fn f32_expansion_is_exact() {
        let (dir, original, source) = small_q4_1_model();
        let target = prepare(dir.path(), &source, WeightFormat::F32).unwrap();
        assert!(target.to_string_lossy().ends_with(".dense.gguf"));
        let mut reader = BufReader::new(File::open(&target).unwrap());
        let content = gguf_file::Content::read(&mut reader).unwrap();
        let expanded = content.tensor(&mut reader, "w", &Device::Cpu).unwrap();
        assert_eq!(expanded.dtype(), GgmlDType::F32);
        let before: Vec<f32> = original.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let after: Vec<f32> = expanded.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn auto_keeps_the_files_blocks_where_our_kernels_take_them() {
        let (dir, _, source) = small_q4_1_model();
        assert_eq!(choose_auto(&source).unwrap(), WeightFormat::AsShipped);
        assert_eq!(prepare(dir.path(), &source, WeightFormat::Auto).unwrap(), source);
    }

    #[test]
    fn auto_repacks_types_no_fast_kernel_takes() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..64).map(|i| i as f32 / 7.0).collect();
        let original = QTensor::quantize(&Tensor::from_vec(values, (1, 64), &Device::Cpu).unwrap(), GgmlDType::Q5_0).unwrap();
        let source = dir.path().join("m.gguf");
        write_gguf(&source, &original);
        assert_eq!(choose_auto(&source).unwrap(), WeightFormat::Q8_0);
        let target = prepare(dir.path(), &source, WeightFormat::Auto).unwrap();
        assert!(target.to_string_lossy().ends_with(".q8_0.gguf"), "{}", target.display());
    }
}
