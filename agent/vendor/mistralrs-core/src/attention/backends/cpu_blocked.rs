//! Attention on the CPU as matrix products over the keys each query row can see.
//!
//! The row-at-a-time flash kernel in `cpu.rs` walks every key for every query row, masked
//! or not, with a scalar dot product, exponential and value update per key: reading a
//! 7,000-token prompt spent ~87 % of its time there, and prefill speed fell from ~214 tok/s
//! at 500 tokens to ~23 at 7,000. Here a prompt step in F32 takes the query rows of one KV
//! head's group in blocks, and each block walks tiles of only the keys its mask leaves
//! visible (under a causal mask, the keys up to its last row), so masked keys cost nothing,
//! with a GEMM per tile and a running softmax ([`tiled_prompt_attention`]); steps of a few
//! rows (generating tokens) take direct dot products ([`token_step_attention`]); F16 takes
//! whole rows of scores per block through candle.
//!
//! The result equals `softmax(q·kᵀ·scale + mask)·v` up to rounding: keys past the last
//! finite mask entry of every row of a block contribute `exp(-inf) = 0` there, so leaving
//! them out changes no sum.

use candle_core::{DType, Result, Storage, Tensor, D};
use rayon::prelude::*;

/// Query rows per block. Under a causal mask a block computes, on average, half a block of
/// masked keys per row; 128 keeps that small beside prompts of hundreds of tokens while the
/// products stay large enough (3 heads × 128 rows per KV head here) for the GEMM's tiles.
const QUERY_BLOCK: usize = 128;

/// `q`: (batch, heads, q_len, head_dim); `k`, `v`: (batch, kv_heads, kv_len, head_dim) with
/// heads `g·n_kv_groups .. (g+1)·n_kv_groups` sharing KV head `g`; `mask`: additive, of a
/// shape that broadcasts to (batch, heads, q_len, kv_len), `-inf` where a key is hidden.
/// Returns (batch, heads, q_len, head_dim).
pub fn blocked_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, n_kv_groups: usize, scale: f32) -> Result<Tensor> {
    let (b, h, q_len, d) = q.dims4()?;
    let (_, kv_h, kv_len, _) = k.dims4()?;
    let dv = v.dim(D::Minus1)?;
    if kv_h * n_kv_groups != h {
        candle_core::bail!("{h} query heads do not share {kv_h} KV heads in groups of {n_kv_groups}");
    }
    // In f32 before broadcasting, so that a converted mask costs its own size only.
    let mask = match mask {
        Some(mask) => Some(mask.to_dtype(DType::F32)?.broadcast_as((b, h, q_len, kv_len))?),
        None => None,
    };
    let visible = match &mask {
        Some(mask) => visible_keys_per_row(mask)?,
        None => vec![kv_len; q_len],
    };

    if q_len <= TOKEN_STEP_ROWS {
        if let Some(out) = token_step_attention(q, k, v, mask.as_ref(), &visible, n_kv_groups, scale)? {
            return Ok(out);
        }
    }
    if let Some(out) = tiled_prompt_attention(q, k, v, mask.as_ref(), &visible, n_kv_groups, scale)? {
        return Ok(out);
    }

    // Anything else (F16): whole rows of scores per block of queries, through candle.

    let mut blocks = Vec::with_capacity(q_len.div_ceil(QUERY_BLOCK));
    for start in (0..q_len).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(q_len - start);
        let seen = visible[start..start + rows].iter().copied().max().unwrap_or(0).max(1);
        // (b, h, rows, d) → (b, kv_h, groups·rows, d): the rows of the heads that share a
        // KV head form one matrix, multiplied with that head's keys once.
        let q_block = q.narrow(2, start, rows)?.contiguous()?.reshape((b, kv_h, n_kv_groups * rows, d))?;
        // The KV cache hands out views into a larger buffer; the GEMM reads them in place.
        let keys = k.narrow(2, 0, seen)?;
        let values = v.narrow(2, 0, seen)?;
        let scores = matmul(&q_block, &keys.t()?)?.to_dtype(DType::F32)?.reshape((b, h, rows, seen))?;
        let mask = match &mask {
            Some(mask) => Some(mask.narrow(2, start, rows)?.narrow(3, 0, seen)?),
            None => None,
        };
        let weights = masked_softmax(&scores, mask.as_ref(), scale)?.to_dtype(v.dtype())?;
        let weights = weights.reshape((b, kv_h, n_kv_groups * rows, seen))?;
        blocks.push(matmul(&weights, &values)?.reshape((b, h, rows, dv))?);
    }
    Tensor::cat(&blocks, 2)
}

/// Query rows up to which a step takes [`token_step_attention`]: generating tokens, where a
/// GEMM would spend its time packing the whole KV cache for a handful of rows.
const TOKEN_STEP_ROWS: usize = 4;

/// Keys per task in [`token_step_attention`]: small enough that a long context splits
/// into many tasks for the pool, large enough that each task's scores stay in L1.
const KEY_CHUNK: usize = 256;

/// Attention for a few query rows as direct dot products over each row's visible keys,
/// reading the KV cache in place. Work is split by KV head and by chunk of keys (the
/// split-K of "flash decoding"): a task reads its chunk of a KV head's keys and values once
/// for every query head sharing it, and keeps, per row, the chunk's maximum score, sum of
/// exponentials and unnormalised output, which are then combined exactly. `None` when the
/// tensors are not F32 with contiguous rows (the GEMM path takes those).
fn token_step_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    visible: &[usize],
    n_kv_groups: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let (b, h, q_len, d) = q.dims4()?;
    let kv_h = k.dim(1)?;
    let dv = v.dim(D::Minus1)?;
    with_cpu_operands(q, k, v, mask, |CpuOperands { q: q_data, k: k_data, v: v_data, k_stride: ks, v_stride: vs, mask: mask_view }| {
        let chunks = visible.iter().copied().max().unwrap_or(0).div_ceil(KEY_CHUNK).max(1);
        // The rows of one KV head's group: query head `g·n_kv_groups + i`, row `r`, at `i·q_len + r`.
        let group_rows = n_kv_groups * q_len;
        // Per task and group row: the chunk's maximum score, its sum of exponentials, its output.
        let partial = dv + 2;
        let mut partials = vec![0f32; b * kv_h * chunks * group_rows * partial];
        partials.par_chunks_mut(group_rows * partial).enumerate().for_each(|(task, parts)| {
            let (bi, g, chunk) = (task / (kv_h * chunks), task / chunks % kv_h, task % chunks);
            let first_key = chunk * KEY_CHUNK;
            let keys_of = |gr: usize| visible[gr % q_len].min(first_key + KEY_CHUNK).saturating_sub(first_key);
            let n_keys = (0..group_rows).map(keys_of).max().unwrap_or(0);
            let mut scores = vec![f32::NEG_INFINITY; group_rows * KEY_CHUNK];
            for j in 0..n_keys {
                let key = first_key + j;
                let k_row = &k_data[bi * ks[0] + g * ks[1] + key * ks[2]..][..d];
                for gr in (0..group_rows).filter(|&gr| j < keys_of(gr)) {
                    let (hi, r) = (g * n_kv_groups + gr / q_len, gr % q_len);
                    let query = &q_data[((bi * h + hi) * q_len + r) * d..][..d];
                    let mut score = dot(query, k_row) * scale;
                    if let Some((mask, stride)) = mask_view {
                        score += mask[bi * stride[0] + hi * stride[1] + r * stride[2] + key * stride[3]];
                    }
                    scores[gr * KEY_CHUNK + j] = score;
                }
            }
            for (gr, part) in parts.chunks_exact_mut(partial).enumerate() {
                let row = &mut scores[gr * KEY_CHUNK..gr * KEY_CHUNK + n_keys];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                part[0] = max;
                if max == f32::NEG_INFINITY {
                    continue; // no visible key in this chunk: zero weight in the combination
                }
                part[1] = exp_shifted_sum(row, max);
            }
            for j in 0..n_keys {
                let v_row = &v_data[bi * vs[0] + g * vs[1] + (first_key + j) * vs[2]..][..dv];
                for (gr, part) in parts.chunks_exact_mut(partial).enumerate() {
                    let w = scores[gr * KEY_CHUNK + j];
                    if part[0] == f32::NEG_INFINITY || w == 0.0 {
                        continue;
                    }
                    for (o, v) in part[2..].iter_mut().zip(v_row) {
                        *o += w * v;
                    }
                }
            }
        });
        // Combine the chunks of each row: Σ e^(mᶜ−M)·oᶜ / Σ e^(mᶜ−M)·sᶜ with M the largest mᶜ.
        let mut out = vec![0f32; b * h * q_len * dv];
        for (index, out) in out.chunks_exact_mut(dv).enumerate() {
            let (bi, hi, r) = (index / (h * q_len), index / q_len % h, index % q_len);
            let (g, gr) = (hi / n_kv_groups, (hi % n_kv_groups) * q_len + r);
            let part = |chunk: usize| {
                let task = (bi * kv_h + g) * chunks + chunk;
                &partials[(task * group_rows + gr) * partial..][..partial]
            };
            let max = (0..chunks).map(|c| part(c)[0]).fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                continue; // every key hidden: zero output, as in `masked_softmax`
            }
            let mut sum = 0f32;
            for c in 0..chunks {
                let p = part(c);
                if p[0] == f32::NEG_INFINITY {
                    continue;
                }
                let factor = (p[0] - max).exp();
                sum += factor * p[1];
                for (o, v) in out.iter_mut().zip(&p[2..]) {
                    *o += factor * v;
                }
            }
            let inverse = 1.0 / sum;
            for o in out.iter_mut() {
                *o *= inverse;
            }
        }
        Tensor::from_vec(out, (b, h, q_len, dv), q.device())
    })
}

/// Attention's operands on the CPU in F32: each tensor's elements from its layout's first
/// one, the strides of the keys, the values and the mask (queries are contiguous).
struct CpuOperands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    k_stride: &'a [usize],
    v_stride: &'a [usize],
    mask: Option<(&'a [f32], &'a [usize])>,
}

/// Calls `f` with the operands' data, borrowed from their storage for the call, when all
/// are F32 on the CPU and each key and value row is contiguous; `None` otherwise (the
/// candle path takes those).
fn with_cpu_operands<R>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    f: impl FnOnce(CpuOperands<'_>) -> Result<R>,
) -> Result<Option<R>> {
    if q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Ok(None);
    }
    if k.stride()[3] != 1 || v.stride()[3] != 1 {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let (q_storage, q_layout) = q.storage_and_layout();
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Some(q_data), Some(k_data), Some(v_data)) = (cpu_f32(&q_storage, q_layout), cpu_f32(&k_storage, k_layout), cpu_f32(&v_storage, v_layout))
    else {
        return Ok(None);
    };
    let (ks, vs) = (k.stride(), v.stride());
    let mask_guard = mask.map(|mask| mask.storage_and_layout());
    let mask_view = match &mask_guard {
        Some((storage, layout)) => match cpu_f32(storage, layout) {
            Some(data) => Some((data, layout.stride())),
            None => return Ok(None),
        },
        None => None,
    };
    f(CpuOperands { q: q_data, k: k_data, v: v_data, k_stride: ks, v_stride: vs, mask: mask_view }).map(Some)
}

/// The f32 elements of a CPU tensor's storage from its layout's first one; `None` for
/// another dtype or device.
fn cpu_f32<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>().ok().map(|data| &data[layout.start_offset()..]),
        _ => None,
    }
}

/// Query rows per task of [`tiled_prompt_attention`], for each query head of a KV head's
/// group (3 heads × 64 rows for the default model).
const TILE_QUERY_ROWS: usize = 64;

/// Keys per tile of [`tiled_prompt_attention`]: a tile's scores (192 rows × 256 keys, 192
/// KiB), keys, values and running output stay in a core's L2 cache.
const TILE_KEYS: usize = 256;

/// Attention for a prompt step in F32, one task per KV head and block of query rows, over
/// tiles of keys with a running ("online") softmax, as flash attention computes it: per
/// tile, one GEMM for the scores, the mask, the exponentials against the row's running
/// maximum (rescaling the sums and outputs so far when it grows), and one GEMM that adds
/// the weighted values. No buffer grows with the prompt: holding whole rows of scores per
/// block (the path below, for F16) allocated, faulted in and freed tens of megabytes per
/// block at 7,000 tokens, and the kernel's page work, which varied from run to run, cost
/// up to half as much time again as the arithmetic. `None` when the tensors are not F32
/// on the CPU with contiguous rows.
fn tiled_prompt_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    visible: &[usize],
    n_kv_groups: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let (b, h, q_len, d) = q.dims4()?;
    let kv_h = k.dim(1)?;
    let dv = v.dim(D::Minus1)?;
    with_cpu_operands(q, k, v, mask, |CpuOperands { q: q_data, k: k_data, v: v_data, k_stride: ks, v_stride: vs, mask: mask_view }| {

        let blocks = q_len.div_ceil(TILE_QUERY_ROWS);
        // Each task's output rows: query head `g·n_kv_groups + i`, row `start + r`, at `i·rows + r`.
        let task_outputs: Vec<Vec<f32>> = (0..b * kv_h * blocks)
            .into_par_iter()
            .map(|task| {
                let (bi, g, block) = (task / (kv_h * blocks), task / blocks % kv_h, task % blocks);
                let start = block * TILE_QUERY_ROWS;
                let rows = TILE_QUERY_ROWS.min(q_len - start);
                let group_rows = n_kv_groups * rows;
                let head_and_row = |gr: usize| (g * n_kv_groups + gr / rows, start + gr % rows);
                let seen = visible[start..start + rows].iter().copied().max().unwrap_or(0);
                // The block's queries, scaled once here rather than every score.
                let mut queries = Vec::with_capacity(group_rows * d);
                for gr in 0..group_rows {
                    let (hi, r) = head_and_row(gr);
                    queries.extend(q_data[((bi * h + hi) * q_len + r) * d..][..d].iter().map(|x| x * scale));
                }
                let mut out = vec![0f32; group_rows * dv];
                let mut row_max = vec![f32::NEG_INFINITY; group_rows];
                let mut row_sum = vec![0f32; group_rows];
                let mut scores = vec![0f32; group_rows * TILE_KEYS];
                for first_key in (0..seen).step_by(TILE_KEYS) {
                    let n_keys = TILE_KEYS.min(seen - first_key);
                    let scores = &mut scores[..group_rows * n_keys];
                    // The tile's keys and values, `n_keys` rows apart by the cache's stride;
                    // slicing checks that every element the products read is in the buffer.
                    let keys = &k_data[bi * ks[0] + g * ks[1] + first_key * ks[2]..][..(n_keys - 1) * ks[2] + d];
                    let values = &v_data[bi * vs[0] + g * vs[1] + first_key * vs[2]..][..(n_keys - 1) * vs[2] + dv];
                    // scores (group_rows × n_keys) = queries (group_rows × d) · keysᵀ (d × n_keys).
                    // SAFETY: `gemm` reads `group_rows × d` queries with row stride `d`, `d ×
                    // n_keys` of `keys` with column stride `ks[2]` (both within the slices
                    // above), and writes `group_rows × n_keys` scores with row stride `n_keys`,
                    // exactly `scores`' length. `read_dst` is false: the scores are only written.
                    unsafe {
                        gemm::gemm(
                            group_rows,
                            n_keys,
                            d,
                            scores.as_mut_ptr(),
                            1,
                            n_keys as isize,
                            false,
                            queries.as_ptr(),
                            1,
                            d as isize,
                            keys.as_ptr(),
                            ks[2] as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        )
                    };
                    for (gr, row) in scores.chunks_exact_mut(n_keys).enumerate() {
                        if let Some((mask, stride)) = mask_view {
                            let (hi, r) = head_and_row(gr);
                            add_mask_row(row, mask, bi * stride[0] + hi * stride[1] + r * stride[2] + first_key * stride[3], stride[3]);
                        }
                        let max = row_max[gr].max(lanes_max(row));
                        if max == f32::NEG_INFINITY {
                            row.fill(0.0); // every key so far hidden: no weight yet
                            continue;
                        }
                        // e^(old max − new max) rescales what earlier tiles summed: 1 when the
                        // maximum did not grow, 0 before the first visible key.
                        let rescale = exp(row_max[gr] - max);
                        row_sum[gr] = row_sum[gr] * rescale + exp_shifted_sum(row, max);
                        row_max[gr] = max;
                        if rescale != 1.0 {
                            out[gr * dv..(gr + 1) * dv].iter_mut().for_each(|o| *o *= rescale);
                        }
                    }
                    // out (group_rows × dv) += weights (group_rows × n_keys) · values (n_keys × dv).
                    // SAFETY: reads `group_rows × n_keys` weights (the whole of `scores`) and
                    // `n_keys × dv` of `values` with row stride `vs[2]` (within the slice), and
                    // reads and writes `group_rows × dv` outputs, exactly `out`'s length.
                    unsafe {
                        gemm::gemm(
                            group_rows,
                            dv,
                            n_keys,
                            out.as_mut_ptr(),
                            1,
                            dv as isize,
                            true,
                            scores.as_ptr(),
                            1,
                            n_keys as isize,
                            values.as_ptr(),
                            1,
                            vs[2] as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        )
                    };
                }
                for (o, sum) in out.chunks_exact_mut(dv).zip(&row_sum) {
                    // A row with every key hidden has a zero sum and keeps zero output, as in
                    // `masked_softmax`.
                    if *sum > 0.0 {
                        let inverse = 1.0 / sum;
                        o.iter_mut().for_each(|x| *x *= inverse);
                    }
                }
                out
            })
            .collect();

        let mut out = vec![0f32; b * h * q_len * dv];
        out.par_chunks_mut(q_len * dv).enumerate().for_each(|(index, head_out)| {
            let (bi, hi) = (index / h, index % h);
            let (g, i) = (hi / n_kv_groups, hi % n_kv_groups);
            for block in 0..blocks {
                let start = block * TILE_QUERY_ROWS;
                let rows = TILE_QUERY_ROWS.min(q_len - start);
                let task_out = &task_outputs[(bi * kv_h + g) * blocks + block];
                head_out[start * dv..(start + rows) * dv].copy_from_slice(&task_out[i * rows * dv..(i + 1) * rows * dv]);
            }
        });
        Tensor::from_vec(out, (b, h, q_len, dv), q.device())
    })
}

/// Adds a mask row of `row.len()` entries, `stride` apart from `base`, to `row`. A mask
/// row in consecutive memory (the usual causal mask) takes a straight pass that the
/// compiler vectorizes; any other stride, one entry at a time.
fn add_mask_row(row: &mut [f32], mask: &[f32], base: usize, stride: usize) {
    if stride == 1 {
        let len = row.len();
        for (x, m) in row.iter_mut().zip(&mask[base..base + len]) {
            *x += m;
        }
    } else {
        for (col, x) in row.iter_mut().enumerate() {
            *x += mask[base + col * stride];
        }
    }
}

/// The largest value of a row (`-inf` for an empty one), in 16 independent lanes, which the
/// compiler vectorizes (a plain fold over `f32::max` runs one value at a time).
fn lanes_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for i in 0..16 {
            lanes[i] = lanes[i].max(chunk[i]);
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// Replaces each `x` of a row by `e^(x − max)` and returns their sum: the softmax's
/// exponentials, 16 at a time (libm's `expf` is one call per value, and with the loops
/// around it was a third of a 4,000-token prompt's time).
fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    let mut sums = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let lanes: &mut [f32; 16] = chunk.try_into().expect("chunks of 16");
        for v in lanes.iter_mut() {
            *v = exp(*v - max);
        }
        for (s, v) in sums.iter_mut().zip(lanes.iter()) {
            *s += v;
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        tail += *v;
    }
    sums.iter().sum::<f32>() + tail
}

/// `e^x` without a library call, so that loops over it vectorize: Cephes' single-precision
/// method (`x = n·ln 2 + r` with `ln 2` in two parts, a degree-7 polynomial for `e^r` on
/// |r| ≤ ln 2 / 2, and `2^n` written into the exponent bits), within a few ulp of `expf`.
/// Softmax arguments are ≤ 0; below −87 (where `e^x` leaves f32's normal range) and for
/// `-inf` (a hidden key) the result is exactly 0, as `expf` gives for hidden keys.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // 1.5·2²³: adding it to a whole number |n| < 2²² leaves `n` in the low mantissa bits.
    const INTEGER_BITS: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * LOG2_E + 0.5).floor();
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // `2^n` with `n` in −126..=127 here: its biased exponent `n + 127` from the bits of
    // `n + 1.5·2²³` by integer operations. `n as i32` would do, but a float-to-int cast
    // saturates, and the compiler emits that one lane at a time with compares and moves:
    // with it, this function took 11 % of a 7,000-token prompt's time.
    let biased = (n + INTEGER_BITS).to_bits().wrapping_sub(INTEGER_BITS.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// A dot product in 16 independent lanes, which the compiler vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for i in 0..16 {
            lanes[i] += a[i] * b[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `softmax(scores·scale + mask)` over the last dimension, one row per task; `scores` is
/// contiguous f32 (b, h, rows, seen), `mask` an f32 view of the same shape. One pass
/// instead of candle's broadcast add (a single-threaded strided walk) and softmax. A row
/// with every key hidden gets zero weights rather than 0/0.
fn masked_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f32) -> Result<Tensor> {
    let (b, h, rows, seen) = scores.dims4()?;
    let (storage, layout) = scores.storage_and_layout();
    let Some(scores_data) = cpu_f32(&storage, layout) else { candle_core::bail!("the CPU attention got scores off the CPU") };
    let mask_guard = mask.map(|mask| mask.storage_and_layout());
    let mask_view = match &mask_guard {
        Some((storage, layout)) => match cpu_f32(storage, layout) {
            Some(data) => Some((data, layout.stride())),
            None => candle_core::bail!("the CPU attention got a mask off the CPU"),
        },
        None => None,
    };
    let mut out = vec![0f32; b * h * rows * seen];
    out.par_chunks_mut(seen).enumerate().for_each(|(index, out_row)| {
        let scores_row = &scores_data[index * seen..(index + 1) * seen];
        let (bi, hi, row) = (index / (h * rows), index / rows % h, index % rows);
        for (o, s) in out_row.iter_mut().zip(scores_row) {
            *o = s * scale;
        }
        if let Some((mask, stride)) = mask_view {
            add_mask_row(out_row, mask, bi * stride[0] + hi * stride[1] + row * stride[2], stride[3]);
        }
        let max = lanes_max(out_row);
        if max == f32::NEG_INFINITY {
            out_row.fill(0.0);
            return;
        }
        let sum = exp_shifted_sum(out_row, max);
        let inverse = 1.0 / sum;
        for o in out_row.iter_mut() {
            *o *= inverse;
        }
    });
    Tensor::from_vec(out, (b, h, rows, seen), scores.device())
}

/// `a·b`, in place where candle's GEMM takes the operands' strides, else on copies.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.matmul(b).or_else(|_| a.contiguous()?.matmul(&b.contiguous()?))
}

/// `mask` is f32. For each query row, one past the last key that any batch entry or head may see (the
/// last finite mask entry). Rows are scanned from their end, so a causal mask costs about
/// the masked half of it.
fn visible_keys_per_row(mask: &Tensor) -> Result<Vec<usize>> {
    let (b, h, q_len, kv_len) = mask.dims4()?;
    // The mask's own rows (before broadcasting) are the ones to scan: strides of 0 repeat them.
    let stride = mask.stride().to_vec();
    let (storage, layout) = mask.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("the CPU attention got a mask off the CPU") };
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    let (distinct_b, distinct_h) = (if stride[0] == 0 { 1 } else { b }, if stride[1] == 0 { 1 } else { h });
    let mut visible = vec![0usize; q_len];
    for bi in 0..distinct_b {
        for hi in 0..distinct_h {
            for (row, seen) in visible.iter_mut().enumerate() {
                let base = bi * stride[0] + hi * stride[1] + row * stride[2];
                let last = (0..kv_len).rev().find(|&col| data[base + col * stride[3]] != f32::NEG_INFINITY);
                *seen = (*seen).max(last.map_or(0, |col| col + 1));
            }
        }
    }
    Ok(visible)
}
