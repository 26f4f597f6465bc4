//! Strided traversal shared by every kernel.
//!
//! Kernels see a tensor as runs: a base storage offset per operand, a run length, and a stride
//! per operand inside the run. Dims that are contiguous with their neighbour in every operand are
//! merged first (like PyTorch's TensorIterator), so a contiguous tensor is a single run and an
//! inner broadcast is a long run with stride 0. The closure writes the inner loop itself, which
//! lets it special-case unit strides so the compiler vectorises them.

use crate::layout::{Shape, Strides};

/// Merge dims that every operand walks contiguously, and drop size-1 dims.
pub(crate) fn collapse<const N: usize>(shape: &[usize], strides: [&[isize]; N]) -> (Shape, [Strides; N]) {
    let mut out_shape = Shape::new();
    let mut out_strides: [Strides; N] = std::array::from_fn(|_| Strides::new());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(&last_len) = out_shape.last() {
            let mergeable = (0..N).all(|k| *out_strides[k].last().unwrap() == strides[k][d] * shape[d] as isize);
            if mergeable {
                *out_shape.last_mut().unwrap() = last_len * shape[d];
                for k in 0..N {
                    *out_strides[k].last_mut().unwrap() = strides[k][d];
                }
                continue;
            }
        }
        out_shape.push(shape[d]);
        for k in 0..N {
            out_strides[k].push(strides[k][d]);
        }
    }
    (out_shape, out_strides)
}

/// Call `f(bases, len, inner_strides)` for each innermost run of `N` operands that share `shape`,
/// in row-major order of the logical index.
#[inline]
pub(crate) fn for_each_run<const N: usize>(
    shape: &[usize],
    strides: [&[isize]; N],
    offsets: [usize; N],
    mut f: impl FnMut([usize; N], usize, [isize; N]),
) {
    if shape.contains(&0) {
        return;
    }
    let (shape, strides) = collapse(shape, strides);
    if shape.is_empty() {
        f(offsets, 1, [1; N]);
        return;
    }
    let last = shape.len() - 1;
    let inner_len = shape[last];
    let inner: [isize; N] = std::array::from_fn(|k| strides[k][last]);
    let mut idx: smallvec::SmallVec<[usize; 6]> = smallvec::smallvec![0; last];
    let mut cur: [isize; N] = std::array::from_fn(|k| offsets[k] as isize);
    loop {
        f(std::array::from_fn(|k| cur[k] as usize), inner_len, inner);
        let mut d = last;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..N {
                cur[k] += strides[k][d];
            }
            if idx[d] < shape[d] {
                break;
            }
            for k in 0..N {
                cur[k] -= strides[k][d] * shape[d] as isize;
            }
            idx[d] = 0;
        }
    }
}

/// Call `f(offsets)` for every element of `N` operands that share `shape`, in row-major order.
#[inline]
pub(crate) fn for_each_offset<const N: usize>(
    shape: &[usize],
    strides: [&[isize]; N],
    offsets: [usize; N],
    mut f: impl FnMut([usize; N]),
) {
    for_each_run(shape, strides, offsets, |base, len, st| {
        let mut cur: [isize; N] = std::array::from_fn(|k| base[k] as isize);
        for _ in 0..len {
            f(std::array::from_fn(|k| cur[k] as usize));
            for k in 0..N {
                cur[k] += st[k];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_merges_contiguous_dims() {
        let (s, st) = collapse(&[2, 3, 4], [&[12, 4, 1]]);
        assert_eq!(s.as_slice(), &[24]);
        assert_eq!(st[0].as_slice(), &[1]);
        // A transposed operand blocks merging.
        let (s, _) = collapse(&[2, 3], [&[3, 1], &[1, 2]]);
        assert_eq!(s.as_slice(), &[2, 3]);
    }

    #[test]
    fn offsets_visit_row_major_order() {
        let mut seen = vec![];
        // A 2x3 transposed view of a 3x2 buffer.
        for_each_offset(&[2, 3], [&[1, 2]], [0], |[o]| seen.push(o));
        assert_eq!(seen, vec![0, 2, 4, 1, 3, 5]);
        let mut seen = vec![];
        for_each_offset(&[2, 0], [&[1, 2]], [0], |[o]| seen.push(o));
        assert!(seen.is_empty());
        for_each_offset(&[], [&[]], [7], |[o]| seen.push(o));
        assert_eq!(seen, vec![7]);
    }
}
