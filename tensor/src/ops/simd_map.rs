//! Elementwise loops compiled a second and third time with AVX-512 or AVX2+FMA enabled, chosen
//! at run time.
//!
//! The crate is built for the baseline x86-64 target (SSE2), so a loop such as `gelu`'s, whose
//! scalar function is branch-free and inlined, vectorises only four lanes wide. The same loop in
//! a function with `#[target_feature]` vectorises sixteen lanes wide on AVX-512, with the same
//! scalar function inlined into it. The results are bit-identical to the baseline loop: Rust
//! never lets LLVM fuse a multiply and an add that the source wrote separately, and each
//! element is still computed on its own, so only the width of the vectors changes. Measured on
//! the transformer benchmark (`benches/transformer.rs`), where GELU and its gradient over the
//! feed-forward activations took about 10% of a step at SSE2 width. The instruction set is the
//! one the packed products and the LSTM's pointwise passes use ([`Kernel::best`]).

use std::mem::MaybeUninit;

use super::packed_gemm::Kernel;

/// `dst[i] = f(src[i])`; the loop every level compiles.
#[inline(always)]
fn map_loop<E: Copy, O>(src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    for (d, &x) in dst.iter_mut().zip(src) {
        d.write(f(x));
    }
}

/// `dst[i] = f(a[i], b[i])`; the loop every level compiles.
#[inline(always)]
fn zip_loop<A: Copy, B: Copy, O>(a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        d.write(f(x, y));
    }
}

/// `dst[i] = f(a[i], b[i], c[i])`; the loop every level compiles.
#[inline(always)]
fn zip3_loop<A: Copy, B: Copy, C: Copy, O>(
    (a, b, c): (&[A], &[B], &[C]),
    dst: &mut [MaybeUninit<O>],
    f: &impl Fn(A, B, C) -> O,
) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        d.write(f(x, y, z));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn zip3_avx512<A: Copy, B: Copy, C: Copy, O>(
    src: (&[A], &[B], &[C]),
    dst: &mut [MaybeUninit<O>],
    f: &impl Fn(A, B, C) -> O,
) {
    zip3_loop(src, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip3_avx2<A: Copy, B: Copy, C: Copy, O>(
    src: (&[A], &[B], &[C]),
    dst: &mut [MaybeUninit<O>],
    f: &impl Fn(A, B, C) -> O,
) {
    zip3_loop(src, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_avx512<E: Copy, O>(src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    map_loop(src, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2<E: Copy, O>(src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    map_loop(src, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn zip_avx512<A: Copy, B: Copy, O>(a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    zip_loop(a, b, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn zip_avx2<A: Copy, B: Copy, O>(a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    zip_loop(a, b, dst, f)
}

/// [`map_into`] with the loop compiled for `kernel`'s instruction set.
///
/// # Panics
/// If `kernel` cannot run on this CPU.
fn map_with<E: Copy, O>(kernel: Kernel, src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    assert!(kernel.available(), "simd_map: {kernel:?} not supported by this CPU");
    match kernel {
        // SAFETY: the CPU has AVX-512F (checked above; every such CPU also has AVX2 and FMA),
        // the features this function is compiled for; it only runs the safe loop.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { map_avx512(src, dst, f) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { map_avx2(src, dst, f) },
        Kernel::Scalar => map_loop(src, dst, f),
    }
}

/// [`zip_into`] with the loop compiled for `kernel`'s instruction set.
///
/// # Panics
/// If `kernel` cannot run on this CPU.
fn zip_with<A: Copy, B: Copy, O>(kernel: Kernel, a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    assert!(kernel.available(), "simd_map: {kernel:?} not supported by this CPU");
    match kernel {
        // SAFETY: as in `map_with`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { zip_avx512(a, b, dst, f) },
        // SAFETY: as in `map_with`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { zip_avx2(a, b, dst, f) },
        Kernel::Scalar => zip_loop(a, b, dst, f),
    }
}

/// Writes `f(src[i])` into `dst[i]` for every `i` (the two have the same length), with the
/// widest vectors this CPU has.
pub(crate) fn map_into<E: Copy, O>(src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    assert_eq!(src.len(), dst.len(), "map_into: lengths differ");
    map_with(Kernel::best(), src, dst, f)
}

/// Writes `f(a[i], b[i])` into `dst[i]` for every `i` (all three have the same length), with the
/// widest vectors this CPU has.
pub(crate) fn zip_into<A: Copy, B: Copy, O>(a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    assert!(a.len() == dst.len() && b.len() == dst.len(), "zip_into: lengths differ");
    zip_with(Kernel::best(), a, b, dst, f)
}

/// Writes `f(a[i], b[i], c[i])` into `dst[i]` for every `i` (all four have the same length),
/// with the widest vectors this CPU has.
pub(crate) fn zip3_into<A: Copy, B: Copy, C: Copy, O>(
    src: (&[A], &[B], &[C]),
    dst: &mut [MaybeUninit<O>],
    f: &impl Fn(A, B, C) -> O,
) {
    zip3_with(Kernel::best(), src, dst, f)
}

/// [`zip3_into`] with the loop compiled for `kernel`'s instruction set.
///
/// # Panics
/// If `kernel` cannot run on this CPU, or the lengths differ.
fn zip3_with<A: Copy, B: Copy, C: Copy, O>(
    kernel: Kernel,
    (a, b, c): (&[A], &[B], &[C]),
    dst: &mut [MaybeUninit<O>],
    f: &impl Fn(A, B, C) -> O,
) {
    assert!(kernel.available(), "simd_map: {kernel:?} not supported by this CPU");
    assert!(a.len() == dst.len() && b.len() == dst.len() && c.len() == dst.len(), "zip3_into: lengths differ");
    match kernel {
        // SAFETY: as in `map_with`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { zip3_avx512((a, b, c), dst, f) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { zip3_avx2((a, b, c), dst, f) },
        Kernel::Scalar => zip3_loop((a, b, c), dst, f),
    }
}

/// Runs `f` compiled for `kernel`'s instruction set: for loops that are not a plain map or zip
/// (a softmax row's max, exponentials and sum). Only what is inlined into `f` is compiled wider,
/// so `f` itself (a closure can be: `#[inline(always)] || ...`) and its helpers must be
/// `#[inline(always)]`; as for the maps, the results are the same bits.
///
/// # Panics
/// If `kernel` cannot run on this CPU.
pub(crate) fn run_with<R>(kernel: Kernel, f: impl FnOnce() -> R) -> R {
    assert!(kernel.available(), "simd_map: {kernel:?} not supported by this CPU");
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match kernel {
            // SAFETY: as in `map_with`: the CPU has the features these are compiled for.
            Kernel::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above, for AVX2 and FMA.
            Kernel::Avx2 => return unsafe { avx2(f) },
            Kernel::Scalar => {}
        }
    }
    f()
}

/// [`run_with`] the widest instruction set this CPU has.
pub(crate) fn run_widest<R>(f: impl FnOnce() -> R) -> R {
    run_with(Kernel::best(), f)
}

/// A vector of `len` elements written by `fill` into its uninitialised storage; `fill` must
/// write every element of the slice it is given (`map_into`/`zip_into` do, as do layer norm's
/// row loops).
pub(crate) fn collect_with<O>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<O>])) -> Vec<O> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements of the spare capacity (its contract above: every
    // caller's loops write `dst[i]` for every `i` of a slice of exactly `len`).
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set's loop against the plain iterator, on lengths around the vector widths
    /// (tails), for a branchy function and one with NaN and infinities.
    #[test]
    fn every_level_matches_the_plain_loop_bit_for_bit() {
        let f = |x: f32| if x > 0.5 { (x * 3.0 - 1.0) / (x + 2.0) } else { x.abs().sqrt() - x * x };
        let g = |x: f32, y: f32| x.max(y) * 0.5 - x / (y + 1.5);
        let h = |x: f32, y: f32, z: f32| if z > 1.0 { x / z } else { y * z - x };
        for len in [0usize, 1, 3, 15, 16, 17, 31, 33, 64, 100, 1000] {
            let mut src: Vec<f32> = (0..len).map(|i| ((i * 7919) % 101) as f32 / 17.0 - 2.5).collect();
            if len > 3 {
                src[1] = f32::NAN;
                src[2] = f32::INFINITY;
                src[3] = -0.0;
            }
            let other: Vec<f32> = src.iter().rev().map(|&x| x * 1.25 + 0.5).collect();
            let want: Vec<u32> = src.iter().map(|&x| f(x).to_bits()).collect();
            let want2: Vec<u32> = src.iter().zip(&other).map(|(&x, &y)| g(x, y).to_bits()).collect();
            let third: Vec<f32> = other.iter().map(|&y| 2.0 - y).collect();
            let want3: Vec<u32> =
                src.iter().zip(&other).zip(&third).map(|((&x, &y), &z)| h(x, y, z).to_bits()).collect();
            #[cfg(target_arch = "x86_64")]
            let kernels = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512];
            #[cfg(not(target_arch = "x86_64"))]
            let kernels = [Kernel::Scalar];
            for k in kernels.into_iter().filter(|k| k.available()) {
                let got = collect_with(len, |d| map_with(k, &src, d, &f));
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "map at {k:?}, len {len}");
                let got2 = collect_with(len, |d| zip_with(k, &src, &other, d, &g));
                assert_eq!(got2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want2, "zip at {k:?}, len {len}");
                let got3 = collect_with(len, |d| zip3_with(k, (&src, &other, &third), d, &h));
                assert_eq!(got3.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want3, "zip3 at {k:?}, len {len}");
            }
            // and the dispatching entry points
            assert_eq!(
                collect_with(len, |d| map_into(&src, d, &f)).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want
            );
            assert_eq!(
                collect_with(len, |d| zip_into(&src, &other, d, &g)).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want2
            );
            let got3 = collect_with(len, |d| zip3_into((&src, &other, &third), d, &h));
            assert_eq!(got3.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want3);
        }
    }
}
