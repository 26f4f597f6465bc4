//! Proptest strategies for property-testing code over tensors (feature `testing`).
//!
//! Kernels, gradients and modules must be right on every layout, not only on fresh contiguous
//! tensors, so the strategies here produce tensors whose logical shape is what the test asked
//! for but whose layout may be transposed, sliced with a step, flipped, offset, or broadcast.
//! Values are drawn from [-4, 4) unless a range is given (the `_in` variants); [`map_values`]
//! rescales a drawn tensor without losing its layout. A failing case's report shows each
//! tensor's layout (shape, strides, offset) beside its data, since the layout is often the cause.
//!
//! [`proptest`](mod@proptest) itself is re-exported, so a user's tests need no direct dependency on it:
//!
//! ```
//! use ferrograd_tensor::testing::proptest::prelude::*;
//! use ferrograd_tensor::testing::{module_input, shape_in};
//! use ferrograd_tensor::Tensor;
//!
//! // In a test file, `proptest! { #[test] fn ... }` runs this on 256 cases.
//! proptest!(|(x in shape_in(2, 2, 4).prop_flat_map(|s| module_input::<f64>(s, -1.0..1.0)))| {
//!     let y = x.map(|v| v * 2.0);
//!     prop_assert!(y.to_vec().iter().all(|v| v.abs() <= 2.0));
//! });
//! ```
//!
//! ```
//! use ferrograd_tensor::testing::{any_layout, shape};
//! use proptest::prelude::*;
//! use proptest::test_runner::TestRunner;
//!
//! // The same with a runner of your own.
//! TestRunner::default()
//!     .run(&shape(3, 4).prop_flat_map(any_layout::<f64>), |t| {
//!         prop_assert_eq!(t.to_vec().len(), t.numel());
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use std::ops::Range;

pub use proptest;
use proptest::prelude::*;
use proptest::sample::subsequence;

use crate::{Element, Tensor};

/// The range values are drawn from when a strategy is given none.
pub const DEFAULT_RANGE: Range<f64> = -4.0..4.0;

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

/// Element values: uniform in [-4, 4) converted with `E::from_f64` (integers truncate, u8
/// saturates at 0); booleans are `x > 0`, so both values are equally likely.
pub fn values<E: Element>(n: usize) -> impl Strategy<Value = Vec<E>> {
    values_in(n, DEFAULT_RANGE)
}

/// Element values uniform in `range`, converted as [`values`] says (booleans are `x > 0`).
///
/// # Panics
/// If the range is empty or not finite.
#[track_caller]
pub fn values_in<E: Element>(n: usize, range: Range<f64>) -> impl Strategy<Value = Vec<E>> {
    check_range("values_in", &range);
    prop::collection::vec(range, n).prop_map(|v| {
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

/// Checked where a strategy is built, at the caller's line, rather than when a case is drawn.
#[track_caller]
fn check_range(op: &str, range: &Range<f64>) {
    assert!(
        range.start.is_finite() && range.end.is_finite() && range.start < range.end,
        "testing::{op}: the value range {range:?} is empty or not finite"
    );
}

/// A contiguous tensor of exactly `shape`.
pub fn contiguous<E: Element>(shape: Vec<usize>) -> impl Strategy<Value = Tensor<E>> {
    contiguous_in(shape, DEFAULT_RANGE)
}

/// A contiguous tensor of exactly `shape` with values in `range`.
#[track_caller]
pub fn contiguous_in<E: Element>(shape: Vec<usize>, range: Range<f64>) -> impl Strategy<Value = Tensor<E>> {
    let n = shape.iter().product();
    values_in::<E>(n, range).prop_map(move |v| Tensor::from_vec(v, &shape))
}

/// A tensor of exactly `shape` laid out as `kind` says. Broadcast views are only made where
/// `kind` is `Broadcast`, since they repeat elements (in-place ops reject them).
pub fn with_layout<E: Element>(shape: Vec<usize>, kind: LayoutKind) -> BoxedStrategy<Tensor<E>> {
    with_layout_in(shape, kind, DEFAULT_RANGE)
}

/// [`with_layout`] with values in `range`.
#[track_caller]
pub fn with_layout_in<E: Element>(shape: Vec<usize>, kind: LayoutKind, range: Range<f64>) -> BoxedStrategy<Tensor<E>> {
    check_range("with_layout_in", &range);
    let rank = shape.len();
    match kind {
        LayoutKind::Contiguous => contiguous_in::<E>(shape, range).boxed(),
        LayoutKind::Permuted => Just((0..rank).collect::<Vec<usize>>())
            .prop_shuffle()
            .prop_flat_map(move |perm| {
                // Storage holds dims in `perm` order; permuting with the inverse restores `shape`.
                let stored: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                contiguous_in::<E>(stored, range.clone()).prop_map(move |t| t.permute(&inv))
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
                contiguous_in::<E>(big, range.clone()).prop_map(move |mut t| {
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
                contiguous_in::<E>(shape.clone(), range.clone()).prop_map(move |t| t.flip(&dims))
            })
            .boxed(),
        LayoutKind::Broadcast => subsequence((0..rank).collect::<Vec<usize>>(), 0..=rank)
            .prop_flat_map(move |dims| {
                let mut small = shape.clone();
                for &d in &dims {
                    small[d] = 1;
                }
                let shape = shape.clone();
                contiguous_in::<E>(small, range.clone()).prop_map(move |t| t.expand(&shape))
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
    any_layout_in(shape, DEFAULT_RANGE)
}

/// [`any_layout`] with values in `range`.
#[track_caller]
pub fn any_layout_in<E: Element>(shape: Vec<usize>, range: Range<f64>) -> impl Strategy<Value = Tensor<E>> {
    check_range("any_layout_in", &range);
    layout_kind(true).prop_flat_map(move |k| with_layout_in::<E>(shape.clone(), k, range.clone()))
}

/// A tensor of exactly `shape` in any layout whose elements are distinct storage locations
/// (no broadcast): safe as an in-place target or for perturbing in finite differences.
pub fn any_distinct_layout<E: Element>(shape: Vec<usize>) -> impl Strategy<Value = Tensor<E>> {
    any_distinct_layout_in(shape, DEFAULT_RANGE)
}

/// [`any_distinct_layout`] with values in `range`.
#[track_caller]
pub fn any_distinct_layout_in<E: Element>(shape: Vec<usize>, range: Range<f64>) -> impl Strategy<Value = Tensor<E>> {
    check_range("any_distinct_layout_in", &range);
    layout_kind(false).prop_flat_map(move |k| with_layout_in::<E>(shape.clone(), k, range.clone()))
}

/// An input for a module: exactly `shape` (a batch of examples, say `[N, features]` or
/// `[N, C, H, W]`), values in `range`, in a random layout whose elements are distinct: fresh,
/// transposed (or otherwise permuted), stepped and offset into a larger tensor, or flipped.
/// A module must give the same result on all of them.
#[track_caller]
pub fn module_input<E: Element>(shape: Vec<usize>, range: Range<f64>) -> impl Strategy<Value = Tensor<E>> {
    any_distinct_layout_in(shape, range)
}

/// Inputs for a module with several inputs, one of each shape, each as [`module_input`].
#[track_caller]
pub fn module_inputs<E: Element>(shapes: Vec<Vec<usize>>, range: Range<f64>) -> impl Strategy<Value = Vec<Tensor<E>>> {
    let each: Vec<_> = shapes.into_iter().map(|s| module_input::<E>(s, range.clone())).collect();
    each
}

/// `t` with `f` applied to every element, in `t`'s own layout (strides and offset kept): to
/// rescale a drawn tensor without making it contiguous, as an op on it would.
///
/// ```
/// use ferrograd_tensor::testing::map_values;
/// use ferrograd_tensor::Tensor;
/// let t = Tensor::<f64>::arange(0.0, 6.0, 1.0).reshape(&[2, 3]).t();
/// let half = map_values(&t, |v| v * 0.5);
/// assert_eq!(half.strides(), t.strides());
/// assert_eq!(half.to_vec(), t.to_vec().iter().map(|v| v * 0.5).collect::<Vec<_>>());
/// ```
pub fn map_values<E: Element>(t: &Tensor<E>, f: impl Fn(E) -> E) -> Tensor<E> {
    let storage = t.storage().iter().map(|&v| f(v)).collect();
    Tensor::from_parts(storage, t.layout().clone()).expect("the same layout over storage of the same length")
}

/// A tensor of random shape (rank up to `max_rank`, dims up to `max_dim`) in any layout.
pub fn tensor<E: Element>(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Tensor<E>> {
    tensor_in(max_rank, max_dim, DEFAULT_RANGE)
}

/// [`tensor`] with values in `range`.
#[track_caller]
pub fn tensor_in<E: Element>(max_rank: usize, max_dim: usize, range: Range<f64>) -> impl Strategy<Value = Tensor<E>> {
    check_range("tensor_in", &range);
    shape(max_rank, max_dim).prop_flat_map(move |s| any_layout_in::<E>(s, range.clone()))
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
    broadcastable_pair_in(max_rank, max_dim, DEFAULT_RANGE)
}

/// [`broadcastable_pair`] with values in `range`.
#[track_caller]
pub fn broadcastable_pair_in<E: Element>(
    max_rank: usize,
    max_dim: usize,
    range: Range<f64>,
) -> impl Strategy<Value = (Tensor<E>, Tensor<E>)> {
    check_range("broadcastable_pair_in", &range);
    broadcastable_shapes(max_rank, max_dim)
        .prop_flat_map(move |(a, b)| (any_layout_in::<E>(a, range.clone()), any_layout_in::<E>(b, range.clone())))
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

        #[test]
        fn values_stay_in_the_range_asked_for(t in tensor_in::<f64>(3, 4, -0.5..0.25), (a, b) in broadcastable_pair_in::<f32>(3, 3, 1.0..2.0)) {
            prop_assert!(t.to_vec().iter().all(|v| (-0.5..0.25).contains(v)), "{:?}", t);
            prop_assert!(a.to_vec().iter().chain(&b.to_vec()).all(|v| (1.0..2.0).contains(v)));
        }

        #[test]
        fn mapped_values_keep_the_layout(t in tensor::<f64>(3, 4)) {
            let m = map_values(&t, |v| v * 0.25 - 1.0);
            prop_assert_eq!((m.shape(), m.strides(), m.offset()), (t.shape(), t.strides(), t.offset()));
            let expected: Vec<f64> = t.to_vec().iter().map(|v| v * 0.25 - 1.0).collect();
            prop_assert_eq!(m.to_vec(), expected);
        }
    }

    /// Draws `n` values of `strategy` with a fixed seed.
    fn draws<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        (0..n).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect()
    }

    #[test]
    fn module_inputs_cover_transposed_stepped_offset_and_flipped_layouts_without_repeats() {
        let inputs = draws(module_input::<f32>(vec![3, 4], -1.0..1.0), 200);
        let strided = |t: &Tensor<f32>| t.strides().to_vec();
        assert!(inputs.iter().all(|t| t.shape() == [3, 4] && t.to_vec().iter().all(|v| v.abs() <= 1.0)));
        assert!(inputs.iter().all(|t| t.strides().iter().all(|&s| s != 0)), "a broadcast view is not a module input");
        assert!(inputs.iter().any(|t| t.is_contiguous()));
        assert!(inputs.iter().any(|t| strided(t) == [1, 3]), "no transposed input");
        assert!(inputs.iter().any(|t| t.offset() > 0 && t.strides().iter().all(|&s| s > 0)), "no offset view");
        assert!(inputs.iter().any(|t| t.strides()[1] > 1 && t.strides()[0] > 4), "no stepped view");
        assert!(inputs.iter().any(|t| t.strides().iter().any(|&s| s < 0)), "no flipped view");

        let several = draws(module_inputs::<f64>(vec![vec![2, 3], vec![5]], 0.0..1.0), 20);
        assert!(several.iter().all(|v| v.len() == 2 && v[0].shape() == [2, 3] && v[1].shape() == [5]));
    }

    #[test]
    fn a_failing_case_reports_the_layout_not_only_the_data() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(64)
        });
        let result = runner.run(&module_input::<f32>(vec![2, 3], -1.0..1.0), |t| {
            prop_assert!(t.is_contiguous());
            Ok(())
        });
        let report = match result {
            Err(proptest::test_runner::TestError::Fail(_, t)) => format!("{t:?}"),
            other => panic!("expected a failing case, got {other:?}"),
        };
        assert!(
            report.contains("shape=[2, 3]") && report.contains("strides=") && report.contains("offset="),
            "{report}"
        );
        // A fresh tensor prints as before: shape and data.
        assert_eq!(format!("{:?}", Tensor::<f32>::zeros(&[2])), "Tensor<f32>(shape=[2], data=[0.0, 0.0])");
    }

    #[test]
    #[should_panic(expected = "testing::any_layout_in: the value range 1.0..1.0 is empty")]
    fn an_empty_range_is_refused_when_the_strategy_is_built() {
        let _ = any_layout_in::<f32>(vec![2], 1.0..1.0);
    }
}
