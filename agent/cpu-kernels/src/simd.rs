//! Vector versions of the block dot products, chosen once per process by what the CPU has.
//!
//! Written with `std::arch` intrinsics because the compiler does not vectorize the portable
//! loops well (it splits the nibble expansion into 4-lane pieces and ran slower than
//! candle's scalar code). Each function computes Σ over blocks of `d · Σ q·x` for one
//! weight row, exactly as [`crate::matrix::q4_1_row_dot`] / [`crate::matrix::q8_0_row_dot`]
//! do, up to the order of additions; the tests compare all of them.

use std::sync::OnceLock;

/// The widest vector instructions this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::env::var_os("CPU_KERNELS_PORTABLE").is_some() {
            return Level::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Portable
    })
}

/// Lengths every row function requires; checked before any unchecked load.
fn check_row(scales: &[f32], quants: &[u8], x: &[f32], quant_bytes: usize) {
    assert_eq!(quants.len(), scales.len() * quant_bytes, "one block of values per scale");
    assert_eq!(x.len(), scales.len() * 32, "32 activations per block");
}

#[cfg(target_arch = "x86_64")]
pub fn q4_1_avx2(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
    check_row(scales, quants, x, 16);
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    // SAFETY: the CPU has AVX2 and FMA (asserted above), and `check_row`
    // proved the loads in bounds.
    #[allow(unsafe_code)]
    unsafe {
        x86::q4_1_avx2(scales, quants, x)
    }
}

#[cfg(target_arch = "x86_64")]
pub fn q8_0_avx2(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
    check_row(scales, quants, x, 32);
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
    // SAFETY: as for `q4_1_avx2`, with 32 value bytes per block.
    #[allow(unsafe_code)]
    unsafe {
        x86::q8_0_avx2(scales, quants, x)
    }
}

/// Most activation rows [`q4_1_tokens_avx512`] and [`q8_0_tokens_avx512`] take at once:
/// two accumulator registers each, next to the weights' two.
pub const TOKEN_TILE: usize = 8;

/// One weight row times several activation rows (`tokens`, each `cols` long, one after
/// another), into `out` (one value per activation row): each block is expanded to F32
/// weights (`q * d + m`) once and multiplied with every activation row while in registers,
/// where the single-row functions expand it again for each row. Exact up to the order of
/// additions, like them.
#[cfg(target_arch = "x86_64")]
pub fn q4_1_tokens_avx512(scales: &[f32], mins: &[f32], quants: &[u8], tokens: &[f32], out: &mut [f32]) {
    check_tokens(scales, quants, tokens, out, 16);
    assert_eq!(mins.len(), scales.len(), "one minimum per block");
    assert!(is_x86_feature_detected!("avx512f"));
    for (tile, out) in tokens.chunks(TOKEN_TILE * scales.len() * 32).zip(out.chunks_mut(TOKEN_TILE)) {
        // SAFETY: the CPU has AVX-512F (asserted above); `check_tokens` proved every block
        // of values and every activation row in bounds, and `tokens_tile` reads `out.len()`
        // activation rows from `tile`, which holds exactly that many.
        #[allow(unsafe_code)]
        unsafe {
            x86::tokens_tile::<true>(scales, mins, quants, tile, out)
        }
    }
}

/// [`q4_1_tokens_avx512`] for Q8_0 blocks (`q * d`).
#[cfg(target_arch = "x86_64")]
pub fn q8_0_tokens_avx512(scales: &[f32], quants: &[u8], tokens: &[f32], out: &mut [f32]) {
    check_tokens(scales, quants, tokens, out, 32);
    assert!(is_x86_feature_detected!("avx512f"));
    for (tile, out) in tokens.chunks(TOKEN_TILE * scales.len() * 32).zip(out.chunks_mut(TOKEN_TILE)) {
        // SAFETY: as for `q4_1_tokens_avx512`; Q8_0 reads no minimums.
        #[allow(unsafe_code)]
        unsafe {
            x86::tokens_tile::<false>(scales, &[], quants, tile, out)
        }
    }
}

fn check_tokens(scales: &[f32], quants: &[u8], tokens: &[f32], out: &[f32], quant_bytes: usize) {
    assert_eq!(quants.len(), scales.len() * quant_bytes, "one block of values per scale");
    assert_eq!(tokens.len(), out.len() * scales.len() * 32, "one output per activation row of 32 values per block");
}

/// The intrinsics themselves. Every function requires the lengths `check_row` checks and
/// the named CPU features; the wrappers above hold both.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    /// Up to [`super::TOKEN_TILE`] activation rows (`out.len()`) times one weight row, in
    /// Q4_1 (`Q4_1` true: 16 bytes of nibbles and a minimum per block) or Q8_0 (32 signed
    /// bytes per block).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tokens_tile<const Q4_1: bool>(scales: &[f32], mins: &[f32], quants: &[u8], tile: &[f32], out: &mut [f32]) {
        // One instance per row count, so that the loop over rows is unrolled without tests.
        match out.len() {
            1 => tokens::<Q4_1, 1>(scales, mins, quants, tile, out),
            2 => tokens::<Q4_1, 2>(scales, mins, quants, tile, out),
            3 => tokens::<Q4_1, 3>(scales, mins, quants, tile, out),
            4 => tokens::<Q4_1, 4>(scales, mins, quants, tile, out),
            5 => tokens::<Q4_1, 5>(scales, mins, quants, tile, out),
            6 => tokens::<Q4_1, 6>(scales, mins, quants, tile, out),
            7 => tokens::<Q4_1, 7>(scales, mins, quants, tile, out),
            8 => tokens::<Q4_1, 8>(scales, mins, quants, tile, out),
            n => unreachable!("a tile holds 1 to {} activation rows, not {n}", super::TOKEN_TILE),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tokens<const Q4_1: bool, const N: usize>(scales: &[f32], mins: &[f32], quants: &[u8], tile: &[f32], out: &mut [f32]) {
        let cols = scales.len() * 32;
        let low_nibbles = _mm_set1_epi8(0x0F);
        // Two accumulators per activation row, for the blocks' first and second 16 values,
        // so that two chains of multiply-adds are in flight even for one row (the same
        // two for any number of rows: a row's sums do not depend on its tile mates).
        let mut acc = [[_mm512_setzero_ps(); 2]; N];
        for (block, &d) in scales.iter().enumerate() {
            let (first, second) = if Q4_1 {
                let qs = _mm_loadu_si128(quants.as_ptr().add(block * 16).cast());
                let low = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(qs, low_nibbles)));
                let high = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(qs), low_nibbles)));
                let (d, m) = (_mm512_set1_ps(d), _mm512_set1_ps(*mins.get_unchecked(block)));
                (_mm512_fmadd_ps(low, d, m), _mm512_fmadd_ps(high, d, m))
            } else {
                let qs = quants.as_ptr().add(block * 32);
                let d = _mm512_set1_ps(d);
                let first = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs.cast())));
                let second = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(qs.add(16).cast())));
                (_mm512_mul_ps(first, d), _mm512_mul_ps(second, d))
            };
            for (token, acc) in acc.iter_mut().enumerate() {
                let xs = tile.as_ptr().add(token * cols + block * 32);
                acc[0] = _mm512_fmadd_ps(first, _mm512_loadu_ps(xs), acc[0]);
                acc[1] = _mm512_fmadd_ps(second, _mm512_loadu_ps(xs.add(16)), acc[1]);
            }
        }
        for (o, [first, second]) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(_mm512_add_ps(first, second));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q4_1_avx2(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
        let low_nibbles = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); 2];
        for (block, &d) in scales.iter().enumerate() {
            let qs = _mm_loadu_si128(quants.as_ptr().add(block * 16).cast());
            let low = _mm_and_si128(qs, low_nibbles);
            let high = _mm_and_si128(_mm_srli_epi16::<4>(qs), low_nibbles);
            let values = [low, _mm_srli_si128::<8>(low), high, _mm_srli_si128::<8>(high)];
            let xs = x.as_ptr().add(block * 32);
            let mut products = _mm256_setzero_ps();
            for (i, v) in values.into_iter().enumerate() {
                let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                products = _mm256_fmadd_ps(v, _mm256_loadu_ps(xs.add(8 * i)), products);
            }
            acc[block % 2] = _mm256_fmadd_ps(products, _mm256_set1_ps(d), acc[block % 2]);
        }
        sum256(_mm256_add_ps(acc[0], acc[1]))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn q8_0_avx2(scales: &[f32], quants: &[u8], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        for (block, &d) in scales.iter().enumerate() {
            let qs = quants.as_ptr().add(block * 32);
            let xs = x.as_ptr().add(block * 32);
            let mut products = _mm256_setzero_ps();
            for i in 0..4 {
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(qs.add(8 * i).cast())));
                products = _mm256_fmadd_ps(v, _mm256_loadu_ps(xs.add(8 * i)), products);
            }
            acc[block % 2] = _mm256_fmadd_ps(products, _mm256_set1_ps(d), acc[block % 2]);
        }
        sum256(_mm256_add_ps(acc[0], acc[1]))
    }

    #[target_feature(enable = "avx2")]
    unsafe fn sum256(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        let one = _mm_add_ss(pairs, _mm_shuffle_ps::<1>(pairs, pairs));
        _mm_cvtss_f32(one)
    }
}
