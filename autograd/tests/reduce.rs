//! gradcheck and gradgradcheck of reductions, softmax and log-softmax over random shapes,
//! dim subsets and layouts.

use crate::common;

use common::check;
use ferrograd_autograd::Var;
use ferrograd_tensor::testing::{any_distinct_layout, shape_in};
use ferrograd_tensor::Tensor;
use proptest::prelude::*;

/// A tensor of rank 1..=3 in a non-repeating layout, with a subset of its dims.
fn tensor_and_dims() -> impl Strategy<Value = (Tensor<f64>, Vec<isize>, bool)> {
    shape_in(1, 3, 3).prop_flat_map(|s| {
        let rank = s.len();
        (
            any_distinct_layout::<f64>(s),
            proptest::sample::subsequence((0..rank as isize).collect::<Vec<_>>(), 1..=rank),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn smooth_reductions((x, dims, keepdim) in tensor_and_dims()) {
        check(|v| v[0].sum_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        check(|v| v[0].mean_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        check(|v| v[0].logsumexp_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        // Scaled to |x| <= 1.2 so that products of up to 27 elements stay small: at |prod| ~ 1e7
        // the finite differences' rounding noise (~1e-4) exceeds gradgradcheck's atol.
        check(|v| (&v[0] * 0.3).prod_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        let n: usize = dims.iter().map(|&d| x.shape()[d as usize]).product();
        if n > 1 {
            check(|v| v[0].var_dims(&dims, 1, keepdim), std::slice::from_ref(&x), true)?;
            check(|v| v[0].std_dims(&dims, 0, keepdim), std::slice::from_ref(&x), true)?;
        }
    }

    #[test]
    fn extreme_reductions((x, dims, keepdim) in tensor_and_dims()) {
        check(|v| v[0].max_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        check(|v| v[0].min_dims(&dims, keepdim), std::slice::from_ref(&x), true)?;
        let d = dims[0];
        check(|v| v[0].max_dim(d, keepdim).0, std::slice::from_ref(&x), true)?;
        check(|v| v[0].min_dim(d, keepdim).0, std::slice::from_ref(&x), true)?;
    }

    #[test]
    fn softmax_family((x, dims, _k) in tensor_and_dims()) {
        let d = dims[0] - x.rank() as isize; // negative dims resolve too
        check(|v| v[0].softmax(d), std::slice::from_ref(&x), true)?;
        check(|v| v[0].log_softmax(d), std::slice::from_ref(&x), true)?;
    }
}

#[test]
fn full_reductions_are_scalars() {
    let x = Var::leaf(Tensor::from_vec(vec![1.0f64, -2.0, 3.0, 0.5], &[2, 2]));
    for y in [x.sum(), x.mean(), x.max(), x.min(), x.prod(), x.var(1), x.std(1), x.logsumexp()] {
        assert_eq!(y.shape(), &[] as &[usize]);
    }
    let g = x.max().backward();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn prod_gradient_is_exact_at_zeros() {
    let x = Var::leaf(Tensor::from_vec(vec![2.0f64, 0.0, 3.0, 0.0, 0.0, 5.0], &[2, 3]));
    let g = x.prod_dims(&[1], false).sum().backward();
    // Row 0 has one zero: its gradient is the product of the others; row 1 has two: all zero.
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.0, 6.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn prod_second_derivatives_cross_zeros() {
    // Slices with one, two and three exact zeros: d²prod / dx_i dx_k is the product of the rest,
    // non-zero for two zeros (a proptest found the mask-based formula giving 0 there).
    let rows = [0.0f64, 2.0, -1.5, 0.7, 0.0, 2.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.7];
    let x = Tensor::from_vec(rows.to_vec(), &[3, 4]);
    check(|v| v[0].prod_dims(&[1], false), std::slice::from_ref(&x), true).unwrap();
    check(|v| v[0].prod(), &[Tensor::from_vec(vec![0.0, 3.0, 0.0, -2.0], &[2, 2])], true).unwrap();
}

#[test]
fn max_gradient_is_shared_among_ties() {
    let x = Var::leaf(Tensor::from_vec(vec![3.0f64, 1.0, 3.0], &[3]));
    let g = x.max().backward();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.5, 0.0, 0.5]);
}

#[test]
fn log_softmax_gradient_is_finite_on_huge_logits() {
    let x = Var::leaf(Tensor::from_vec(vec![1e4f32, -1e4, 0.0, 5e3], &[1, 4]));
    let y = x.log_softmax(1);
    assert!(y.to_vec().iter().all(|v| v.is_finite()));
    let g = y.select(1, 1).sum().backward();
    assert!(g.get(&x).unwrap().to_vec().iter().all(|v| v.is_finite()));
}
