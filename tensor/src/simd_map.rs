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
//! feed-forward activations took about 10% of a step at SSE2 width.

use std::mem::MaybeUninit;

/// The widest instruction set this process may use for the elementwise loops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Avx512,
    Avx2,
    Base,
}

#[inline]
fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        // `is_x86_feature_detected!` caches its answer: one relaxed load after the first call.
        if is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Base
}

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

/// Writes `f(src[i])` into `dst[i]` for every `i` (the two have the same length), with the
/// widest vectors this CPU has.
pub(crate) fn map_into<E: Copy, O>(src: &[E], dst: &mut [MaybeUninit<O>], f: &impl Fn(E) -> O) {
    assert_eq!(src.len(), dst.len(), "map_into: lengths differ");
    match level() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked by `level`), the features these
        // functions are compiled for; they only run the safe loop.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { map_avx512(src, dst, f) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { map_avx2(src, dst, f) },
        _ => map_loop(src, dst, f),
    }
}

/// Writes `f(a[i], b[i])` into `dst[i]` for every `i` (all three have the same length), with the
/// widest vectors this CPU has.
pub(crate) fn zip_into<A: Copy, B: Copy, O>(a: &[A], b: &[B], dst: &mut [MaybeUninit<O>], f: &impl Fn(A, B) -> O) {
    assert!(a.len() == dst.len() && b.len() == dst.len(), "zip_into: lengths differ");
    match level() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked by `level`), the features these
        // functions are compiled for; they only run the safe loop.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { zip_avx512(a, b, dst, f) },
        // SAFETY: as above, for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { zip_avx2(a, b, dst, f) },
        _ => zip_loop(a, b, dst, f),
    }
}

/// A vector of `len` elements written by `fill` into its uninitialised storage; `fill` must
/// write every element of the slice it is given (the callers here pass `map_into`/`zip_into`,
/// which do).
pub(crate) fn collect_with<O>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<O>])) -> Vec<O> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements of the spare capacity (its contract above; both
    // callers' loops write `dst[i]` for every `i` of a slice of exactly `len`).
    unsafe { out.set_len(len) };
    out
}

/// One thread's piece of an elementwise pass: its output and its two inputs.
pub(crate) type Part<'d, 'a, 'b, O, A, B> = (&'d mut [MaybeUninit<O>], &'a [A], &'b [B]);

/// `dst`, `a` and `b` (all of one length) cut into `parts` consecutive ranges, as
/// [`crate::parallel_collect`] cuts them: part `i` is `i * len / parts..(i + 1) * len / parts`.
/// Each element's value does not depend on the part it falls in.
pub(crate) fn split<'d, 'a, 'b, O, A, B>(
    parts: usize,
    dst: &'d mut [MaybeUninit<O>],
    a: &'a [A],
    b: &'b [B],
) -> Vec<Part<'d, 'a, 'b, O, A, B>> {
    let len = dst.len();
    assert!(a.len() == len && b.len() == len && parts > 0, "split: lengths differ");
    let (mut rest, mut a, mut b) = (dst, a, b);
    (0..parts)
        .map(|i| {
            let n = (i + 1) * len / parts - i * len / parts;
            let (d, dt) = std::mem::take(&mut rest).split_at_mut(n);
            let ((pa, at), (pb, bt)) = (a.split_at(n), b.split_at(n));
            (rest, a, b) = (dt, at, bt);
            (d, pa, pb)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level's loop against the plain iterator, on lengths around the vector widths
    /// (tails), for a branchy function and one with NaN and infinities.
    #[test]
    fn every_level_matches_the_plain_loop_bit_for_bit() {
        let f = |x: f32| if x > 0.5 { (x * 3.0 - 1.0) / (x + 2.0) } else { x.abs().sqrt() - x * x };
        let g = |x: f32, y: f32| x.max(y) * 0.5 - x / (y + 1.5);
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
            let mut levels = vec![Level::Base];
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    levels.push(Level::Avx2);
                }
                if is_x86_feature_detected!("avx512f") {
                    levels.push(Level::Avx512);
                }
            }
            for l in levels {
                let got = collect_with(len, |d| match l {
                    // SAFETY: only levels the CPU has are pushed above.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx512 => unsafe { map_avx512(&src, d, &f) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx2 => unsafe { map_avx2(&src, d, &f) },
                    _ => map_loop(&src, d, &f),
                });
                assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "map at {l:?}, len {len}");
                let got2 = collect_with(len, |d| match l {
                    // SAFETY: only levels the CPU has are pushed above.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx512 => unsafe { zip_avx512(&src, &other, d, &g) },
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    Level::Avx2 => unsafe { zip_avx2(&src, &other, d, &g) },
                    _ => zip_loop(&src, &other, d, &g),
                });
                assert_eq!(got2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want2, "zip at {l:?}, len {len}");
            }
            // and the dispatching entry points, the second over the two pieces of `split`
            assert_eq!(
                collect_with(len, |d| map_into(&src, d, &f)).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want
            );
            let out = collect_with(len, |d| {
                for (d, a, b) in split(2, d, &src, &other) {
                    zip_into(a, b, d, &g);
                }
            });
            assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want2);
        }
    }
}
