//! Vectorised f32 -> uint8 quantization and min/max scans for the int8 layers, where the
//! per-element scalar loops cost more than the int8 GEMM itself.
//!
//! Each operation has a portable scalar implementation, the reference, and AVX2 and AVX-512
//! ones picked at run time ([`Simd::best`]). They give identical results for every input,
//! special values included:
//!
//! - quantization computes `t = x * (1 / scale)` in f32, clamps it to `[-zero_point,
//!   255 - zero_point]`, rounds half to even and adds `zero_point`: PyTorch's
//!   `clamp(nearbyint(x * inv_scale) + zero_point, 0, 255)` and
//!   `ferrograd_tuning::quant::QParams::quantize_value` (clamping to integer bounds
//!   before rounding gives the same integers). `+inf` gives 255, `-inf` 0 and NaN 0;
//! - min/max ignore NaN; an empty or all-NaN slice gives `(+inf, -inf)`.
//!
//! ```
//! use ferrograd_tensor::quant::simd::{min_max, quantize_u8_into};
//! let x = [-1.0f32, 0.0, 0.5, 3.0, f32::NAN];
//! assert_eq!(min_max(&x), (-1.0, 3.0));
//! let mut q = [0u8; 5];
//! quantize_u8_into(&x, 4.0 / 255.0, 64, &mut q);
//! assert_eq!(q, [0, 64, 96, 255, 0]);
//! ```

/// An instruction set for the routines of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// Portable Rust: the reference.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512F and AVX-512BW.
    Avx512,
}

impl Simd {
    /// Whether this CPU can run the implementation.
    pub fn is_available(self) -> bool {
        match self {
            Simd::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest implementation this CPU runs.
    pub fn best() -> Simd {
        [Simd::Avx512, Simd::Avx2].into_iter().find(|s| s.is_available()).unwrap_or(Simd::Scalar)
    }
}

/// Quantizes `xs` to uint8 into `out`: `clamp(round(x * (1 / scale)) + zero_point, 0, 255)`, half to even
/// (see the module documentation for special values), with the fastest implementation.
///
/// # Panics
/// If `xs` and `out` have different lengths.
pub fn quantize_u8_into(xs: &[f32], scale: f32, zero_point: i32, out: &mut [u8]) {
    quantize_u8_into_with(Simd::best(), xs, scale, zero_point, out);
}

/// [`quantize_u8_into`] with a chosen implementation.
///
/// # Panics
/// If the implementation is not available on this CPU, or `xs` and `out` have different lengths.
pub fn quantize_u8_into_with(simd: Simd, xs: &[f32], scale: f32, zero_point: i32, out: &mut [u8]) {
    assert!(simd.is_available(), "quantize_u8_into: {simd:?} is not available on this CPU");
    assert_eq!(xs.len(), out.len(), "quantize_u8_into: {} values into {} bytes", xs.len(), out.len());
    let (inv, zp) = (1.0 / scale, zero_point as f32);
    match simd {
        Simd::Scalar => quantize_scalar(xs, inv, zp, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX2) was checked above; the lengths are equal.
        Simd::Avx2 => unsafe { x86::quantize_avx2(xs, inv, zp, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX-512F and BW) was checked above; the lengths are equal.
        Simd::Avx512 => unsafe { x86::quantize_avx512(xs, inv, zp, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("quantize_u8_into: availability was checked"),
    }
}

/// The reference: `f32::max` maps NaN to the lower bound, hence to 0. After the clamp and the
/// rounding, `r + zp` is an integer in `[0, 255]`, exact in f32.
fn quantize_scalar(xs: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
    let (lo, hi) = (-zp, 255.0 - zp);
    for (o, &v) in out.iter_mut().zip(xs) {
        *o = ((v * inv).max(lo).min(hi).round_ties_even() + zp) as u8;
    }
}

/// The smallest and largest value of `xs`, NaN ignored, with the fastest implementation;
/// `(+inf, -inf)` when there is none.
pub fn min_max(xs: &[f32]) -> (f32, f32) {
    min_max_with(Simd::best(), xs)
}

/// [`min_max`] with a chosen implementation.
///
/// # Panics
/// If the implementation is not available on this CPU.
pub fn min_max_with(simd: Simd, xs: &[f32]) -> (f32, f32) {
    assert!(simd.is_available(), "min_max: {simd:?} is not available on this CPU");
    match simd {
        Simd::Scalar => min_max_scalar(xs, f32::INFINITY, f32::NEG_INFINITY),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX2) was checked above.
        Simd::Avx2 => unsafe { x86::min_max_avx2(xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability (AVX-512F and BW) was checked above.
        Simd::Avx512 => unsafe { x86::min_max_avx512(xs) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("min_max: availability was checked"),
    }
}

/// The reference, folding `xs` into a running `(lo, hi)`; `f32::min`/`max` ignore NaN.
fn min_max_scalar(xs: &[f32], lo: f32, hi: f32) -> (f32, f32) {
    xs.iter().fold((lo, hi), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{min_max_scalar, quantize_scalar};

    // The vector `max(t, lo)` / `min(t, hi)` return their second operand when the first is NaN,
    // so a NaN `t` becomes `lo`, hence 0, like the reference. The rounding is explicit (nearest,
    // ties to even), whatever MXCSR says; adding `zp` to the rounded value is exact, and the
    // truncating conversion of an integer in [0, 255] changes nothing.

    /// # Safety
    /// The CPU must support AVX2; `xs.len() == out.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_avx2(xs: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
        let (vinv, vzp) = (_mm256_set1_ps(inv), _mm256_set1_ps(zp));
        let (lo, hi) = (_mm256_set1_ps(-zp), _mm256_set1_ps(255.0 - zp));
        let q = |x: &[f32; 8]| {
            // SAFETY: `x` is 8 readable f32; loadu has no alignment requirement.
            let x = unsafe { _mm256_loadu_ps(x.as_ptr()) };
            let t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, vinv), lo), hi);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
            _mm256_cvttps_epi32(_mm256_add_ps(r, vzp))
        };
        // Packing 4 x 8 i32 gives bytes in the order 0-3 of each vector then 4-7 of each; the
        // permutation of 4-byte groups restores the element order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut xc = xs.chunks_exact(32);
        let mut oc = out.chunks_exact_mut(32);
        for (x, o) in (&mut xc).zip(&mut oc) {
            let (x, _) = x.as_chunks::<8>();
            let (a, b, c, d) = (q(&x[0]), q(&x[1]), q(&x[2]), q(&x[3]));
            let bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
            // SAFETY: `o` is 32 writable bytes; storeu has no alignment requirement.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), _mm256_permutevar8x32_epi32(bytes, order)) };
        }
        quantize_scalar(xc.remainder(), inv, zp, oc.into_remainder());
    }

    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW; `xs.len() == out.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_avx512(xs: &[f32], inv: f32, zp: f32, out: &mut [u8]) {
        let (vinv, vzp) = (_mm512_set1_ps(inv), _mm512_set1_ps(zp));
        let (lo, hi) = (_mm512_set1_ps(-zp), _mm512_set1_ps(255.0 - zp));
        let q = |x: &[f32; 16]| {
            // SAFETY: `x` is 16 readable f32; loadu has no alignment requirement.
            let x = unsafe { _mm512_loadu_ps(x.as_ptr()) };
            let t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, vinv), lo), hi);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
            _mm512_cvttps_epi32(_mm512_add_ps(r, vzp))
        };
        // 64 values per step, packed to bytes in registers and stored at once (a narrowing
        // store `vpmovdb` per 16 values was the bottleneck). The packs work within 128-bit
        // lanes: 4-byte group `4 * lane + v` holds elements `4 * lane ..` of vector `v`, and
        // the permutation puts group `4 * v + lane` there instead.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let mut xc = xs.chunks_exact(64);
        let mut oc = out.chunks_exact_mut(64);
        for (x, o) in (&mut xc).zip(&mut oc) {
            let (x, _) = x.as_chunks::<16>();
            let (a, b, c, d) = (q(&x[0]), q(&x[1]), q(&x[2]), q(&x[3]));
            // Values are in [0, 255], so the saturating packs are exact.
            let bytes = _mm512_packus_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
            // SAFETY: `o` is 64 writable bytes; storeu has no alignment requirement.
            unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), _mm512_permutexvar_epi32(order, bytes)) };
        }
        let (xs, out) = (xc.remainder(), oc.into_remainder());
        let (xc, x_rest) = xs.as_chunks::<16>();
        let (oc, o_rest) = out.as_chunks_mut::<16>();
        for (x, o) in xc.iter().zip(oc) {
            // SAFETY: `o` is 16 writable bytes; storeu has no alignment requirement.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q(x))) };
        }
        quantize_scalar(x_rest, inv, zp, o_rest);
    }

    // `min(x, acc)` / `max(x, acc)` return `acc` when `x` is NaN: NaN is ignored, as by the
    // reference. Lanes are then folded with the reference, which is order-independent (min and
    // max are exact), so every implementation agrees.

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn min_max_avx2(xs: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = ([_mm256_set1_ps(f32::INFINITY); 2], [_mm256_set1_ps(f32::NEG_INFINITY); 2]);
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for h in 0..2 {
                // SAFETY: `c` holds 16 f32, read as two groups of 8.
                let x = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) };
                lo[h] = _mm256_min_ps(x, lo[h]);
                hi[h] = _mm256_max_ps(x, hi[h]);
            }
        }
        let (mut l, mut u) = ([0.0f32; 8], [0.0f32; 8]);
        // SAFETY: `l` and `u` are 8 writable f32.
        unsafe {
            _mm256_storeu_ps(l.as_mut_ptr(), _mm256_min_ps(lo[0], lo[1]));
            _mm256_storeu_ps(u.as_mut_ptr(), _mm256_max_ps(hi[0], hi[1]));
        }
        let (l, _) = min_max_scalar(&l, f32::INFINITY, f32::NEG_INFINITY);
        let (_, u) = min_max_scalar(&u, f32::INFINITY, f32::NEG_INFINITY);
        min_max_scalar(chunks.remainder(), l, u)
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn min_max_avx512(xs: &[f32]) -> (f32, f32) {
        // Four independent accumulators each, to hide the latency of min/max.
        let (mut lo, mut hi) = ([_mm512_set1_ps(f32::INFINITY); 4], [_mm512_set1_ps(f32::NEG_INFINITY); 4]);
        let mut chunks = xs.chunks_exact(64);
        for c in &mut chunks {
            for h in 0..4 {
                // SAFETY: `c` holds 64 f32, read as four groups of 16.
                let x = unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * h)) };
                lo[h] = _mm512_min_ps(x, lo[h]);
                hi[h] = _mm512_max_ps(x, hi[h]);
            }
        }
        let (mut l, mut u) = ([0.0f32; 16], [0.0f32; 16]);
        // SAFETY: `l` and `u` are 16 writable f32.
        unsafe {
            _mm512_storeu_ps(l.as_mut_ptr(), _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3])));
            _mm512_storeu_ps(u.as_mut_ptr(), _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3])));
        }
        let (l, _) = min_max_scalar(&l, f32::INFINITY, f32::NEG_INFINITY);
        let (_, u) = min_max_scalar(&u, f32::INFINITY, f32::NEG_INFINITY);
        min_max_scalar(chunks.remainder(), l, u)
    }
}
