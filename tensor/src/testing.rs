//! Proptest strategies for property-testing code over tensors (feature `testing`).
//!
//! Kernels and gradients must be right on every layout, not only on fresh contiguous tensors, so
//! the strategies here produce tensors whose logical shape is what the test asked for but whose
//! layout may be transposed, sliced with a step, flipped, offset, or broadcast.
//!
//! ```
//! use ferrograd_tensor::testing::{any_layout, shape};
//! use proptest::prelude::*;
//! use proptest::test_runner::TestRunner;
//!
//! // In a test file this is the body of a `proptest!` block.
//! TestRunner::default()
//!     .run(&shape(3, 4).prop_flat_map(any_layout::<f64>), |t| {
//!         prop_assert_eq!(t.to_vec().len(), t.numel());
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use proptest::prelude::*;
use proptest::sample::subsequence;

use crate::{Element, Tensor};

mod caller;
pub use caller::{catch_panic, CaughtPanic};

/// How a strategy laid a tensor out in storage; part of the generated value for shrinking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// Fresh row-major storage.
    Contiguous,
    /// A permutation of a contiguous tensor (e.g. a transpose).
    Permuted,
    /// Every `step`-th element of a larger tensor along each dim, at an offset.
    Stepped,
    /// Some dims reversed through negative strides.
    Flipped,
    /// Size-1 dims expanded with stride 0 (elements repeat).
    Broadcast,
}

/// Shapes of rank `0..=max_rank` with each dim in `1..=max_dim`.
pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 0..=max_rank)
}

/// Shapes of rank `min_rank..=max_rank` with each dim in `1..=max_dim`.
pub fn shape_in(min_rank: usize, max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, min_rank..=max_rank)
}

/// Element values: uniform in [-4, 4] converted with `E::from_f64` (integers truncate, u8
/// saturates at 0); booleans are `x > 0`, so both values are equally likely.
pub fn values<E: Element>(n: usize) -> impl Strategy<Value = Vec<E>> {
    prop::collection::vec(-4.0f64..4.0, n).prop_map(|v| {
        v.into_iter()
            .map(|x| {
                if E::DTYPE == crate::DType::Bool {
                    E::from_f64(f64::from(u8::from(x > 0.0)))
                } else {
                    E::from_f64(x)
                }
            })
            .collect()
    })
}

/// A contiguous tensor of exactly `shape`.
pub fn contiguous<E: Element>(shape: Vec<usize>) -> impl Strategy<Value = Tensor<E>> {
    let n = shape.iter().product();
    values::<E>(n).prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// A tensor of exactly `shape` laid out as `kind` says. Broadcast views are only made where
/// `kind` is `Broadcast`, since they repeat elements (in-place ops reject them).
pub fn with_layout<E: Element>(shape: Vec<usize>, kind: LayoutKind) -> BoxedStrategy<Tensor<E>> {
    let rank = shape.len();
    match kind {
        LayoutKind::Contiguous => contiguous::<E>(shape).boxed(),
        LayoutKind::Permuted => Just((0..rank).collect::<Vec<usize>>())
            .prop_shuffle()
            .prop_flat_map(move |perm| {
                // Storage holds dims in `perm` order; permuting with the inverse restores `shape`.
                let stored: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                contiguous::<E>(stored).prop_map(move |t| t.permute(&inv))
            })
            .boxed(),
        LayoutKind::Stepped => (prop::collection::vec(1usize..=3, rank), prop::collection::vec(0usize..=2, rank))
            .prop_flat_map(move |(steps, starts)| {
                let big: Vec<usize> = shape
                    .iter()
                    .zip(&steps)
                    .zip(&starts)
                    .map(|((&d, &s), &o)| o + d.saturating_sub(1) * s + 1)
                    .collect();
                let (shape, steps, starts) = (shape.clone(), steps.clone(), starts.clone());
                contiguous::<E>(big).prop_map(move |mut t| {
                    for d in 0..shape.len() {
                        // A dim of size 0 becomes an empty slice of a dim of size >= 1.
                        let len = match shape[d] {
                            0 => 0,
                            n => (n - 1) * steps[d] + 1,
                        };
                        t = t.slice(d as isize, starts[d], starts[d] + len, steps[d]);
                    }
                    t
                })
            })
            .boxed(),
        LayoutKind::Flipped => subsequence((0..rank).collect::<Vec<usize>>(), 0..=rank)
            .prop_flat_map(move |dims| {
                let dims: Vec<isize> = dims.into_iter().map(|d| d as isize).collect();
                contiguous::<E>(shape.clone()).prop_map(move |t| t.flip(&dims))
            })
            .boxed(),
        LayoutKind::Broadcast => subsequence((0..rank).collect::<Vec<usize>>(), 0..=rank)
            .prop_flat_map(move |dims| {
                let mut small = shape.clone();
                for &d in &dims {
                    small[d] = 1;
                }
                let shape = shape.clone();
                contiguous::<E>(small).prop_map(move |t| t.expand(&shape))
            })
            .boxed(),
    }
}

/// A layout kind, broadcast views included or not.
pub fn layout_kind(allow_broadcast: bool) -> impl Strategy<Value = LayoutKind> {
    let mut kinds = vec![LayoutKind::Contiguous, LayoutKind::Permuted, LayoutKind::Stepped, LayoutKind::Flipped];
    if allow_broadcast {
        kinds.push(LayoutKind::Broadcast);
    }
    prop::sample::select(kinds)
}

/// A tensor of exactly `shape` in any layout, broadcast views included.
pub fn any_layout<E: Element>(shape: Vec<usize>) -> impl Strategy<Value = Tensor<E>> {
    layout_kind(true).prop_flat_map(move |k| with_layout::<E>(shape.clone(), k))
}

/// A tensor of exactly `shape` in any layout whose elements are distinct storage locations
/// (no broadcast): safe as an in-place target or for perturbing in finite differences.
pub fn any_distinct_layout<E: Element>(shape: Vec<usize>) -> impl Strategy<Value = Tensor<E>> {
    layout_kind(false).prop_flat_map(move |k| with_layout::<E>(shape.clone(), k))
}

/// A tensor of random shape (rank up to `max_rank`, dims up to `max_dim`) in any layout.
pub fn tensor<E: Element>(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Tensor<E>> {
    shape(max_rank, max_dim).prop_flat_map(any_layout::<E>)
}

/// Two shapes that broadcast together under NumPy's rules: the second is derived from the
/// first by dropping leading dims and setting some dims to 1 (and the roles may be swapped).
pub fn broadcastable_shapes(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(max_rank, max_dim).prop_flat_map(|a| {
        let rank = a.len();
        (Just(a), 0..=rank, prop::collection::vec(any::<bool>(), rank), any::<bool>()).prop_map(
            |(a, drop, ones, swap)| {
                let mut b: Vec<usize> = a.clone();
                for (i, one) in ones.iter().enumerate() {
                    if *one {
                        b[i] = 1;
                    }
                }
                let b = b[drop..].to_vec();
                if swap {
                    (b, a)
                } else {
                    (a, b)
                }
            },
        )
    })
}

/// Two tensors of broadcastable shapes, each in any layout.
pub fn broadcastable_pair<E: Element>(
    max_rank: usize,
    max_dim: usize,
) -> impl Strategy<Value = (Tensor<E>, Tensor<E>)> {
    broadcastable_shapes(max_rank, max_dim).prop_flat_map(|(a, b)| (any_layout::<E>(a), any_layout::<E>(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn layouts_keep_the_requested_shape(s in shape(4, 4), k in layout_kind(true)) {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let t = with_layout::<f32>(s.clone(), k).new_tree(&mut runner).unwrap().current();
            prop_assert_eq!(t.shape(), s.as_slice());
            prop_assert_eq!(t.to_vec().len(), t.numel());
        }

        #[test]
        fn broadcastable_shapes_broadcast((a, b) in broadcastable_shapes(4, 4)) {
            prop_assert!(crate::broadcast_shapes(&a, &b).is_some());
        }
    }
}
