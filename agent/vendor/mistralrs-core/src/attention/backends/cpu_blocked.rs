//! Attention on the CPU as blocks of matrix products over the keys each block can see.
//!
//! The row-at-a-time flash kernel in `cpu.rs` walks every key for every query row, masked
//! or not, with a scalar dot product, exponential and value update per key: reading a
//! 7,000-token prompt spent ~87 % of its time there, and prefill speed fell from ~214 tok/s
//! at 500 tokens to ~23 at 7,000. Here the query rows of one KV head's group are taken in
//! blocks of `QUERY_BLOCK`; each block multiplies with only the keys its mask leaves
//! visible (under a causal mask, the keys up to its last row), so masked keys cost nothing,
//! and the work runs in candle's tiled GEMM and vectorised softmax.
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
    let (Storage::Cpu(q_cpu), Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*q_storage, &*k_storage, &*v_storage) else {
        return Ok(None);
    };
    let q_data = &q_cpu.as_slice::<f32>()?[q_layout.start_offset()..];
    let k_data = &k_cpu.as_slice::<f32>()?[k_layout.start_offset()..];
    let v_data = &v_cpu.as_slice::<f32>()?[v_layout.start_offset()..];
    let (ks, vs) = (k.stride(), v.stride());
    let mask_guard = mask.map(|mask| mask.storage_and_layout());
    let mask_view = match &mask_guard {
        Some((storage, layout)) => {
            let Storage::Cpu(cpu) = &**storage else { return Ok(None) };
            Some((&cpu.as_slice::<f32>()?[layout.start_offset()..], layout.stride()))
        }
        None => None,
    };
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
    Ok(Some(Tensor::from_vec(out, (b, h, q_len, dv), q.device())?))
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
        *v = (*v - max).exp();
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
    let clamped = x.clamp(-87.0, 88.0);
    let n = (clamped * LOG2_E + 0.5).floor();
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
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
    let Storage::Cpu(cpu) = &*storage else { candle_core::bail!("the CPU attention got scores off the CPU") };
    let scores_data = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    let mask_guard = mask.map(|mask| mask.storage_and_layout());
    let mask_view = match &mask_guard {
        Some((storage, layout)) => {
            let Storage::Cpu(cpu) = &**storage else { candle_core::bail!("the CPU attention got a mask off the CPU") };
            Some((&cpu.as_slice::<f32>()?[layout.start_offset()..], layout.stride()))
        }
        None => None,
    };
    let mut out = vec![0f32; b * h * rows * seen];
    out.par_chunks_mut(seen).enumerate().for_each(|(index, out_row)| {
        let scores_row = &scores_data[index * seen..(index + 1) * seen];
        let (bi, hi, row) = (index / (h * rows), index / rows % h, index % rows);
        match mask_view {
            // A mask row in consecutive memory (the usual causal mask): a straight pass
            // that the compiler vectorizes.
            Some((mask, stride)) if stride[3] == 1 => {
                let base = bi * stride[0] + hi * stride[1] + row * stride[2];
                for ((o, s), m) in out_row.iter_mut().zip(scores_row).zip(&mask[base..base + seen]) {
                    *o = s * scale + m;
                }
            }
            Some((mask, stride)) => {
                let base = bi * stride[0] + hi * stride[1] + row * stride[2];
                for (col, (o, s)) in out_row.iter_mut().zip(scores_row).enumerate() {
                    *o = s * scale + mask[base + col * stride[3]];
                }
            }
            None => {
                for (o, s) in out_row.iter_mut().zip(scores_row) {
                    *o = s * scale;
                }
            }
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
