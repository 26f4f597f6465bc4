//! gradcheck and gradgradcheck of matmul (every rank combination, broadcast batch dims,
//! transposed operands), linear (leading dims, any layouts, with and without bias),
//! convolutions and pooling.

use crate::common;

use common::check;
use ferrograd_autograd::Var;
use ferrograd_tensor::testing::any_distinct_layout;
use ferrograd_tensor::{Conv1dOptions, Conv2dOptions, Pool2dOptions, Tensor};
use proptest::prelude::*;

/// Shapes for matmul: optional batch dims that broadcast, then the matrix dims (or 1-D).
fn matmul_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..4, 1usize..4, 1usize..4, 0usize..5, 1usize..3).prop_map(|(n, k, m, case, b)| match case {
        0 => (vec![k], vec![k]),
        1 => (vec![k], vec![k, m]),
        2 => (vec![n, k], vec![k]),
        3 => (vec![b, 1, n, k], vec![2, k, m]),
        _ => (vec![n, k], vec![k, m]),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn matmul((a, b) in matmul_shapes().prop_flat_map(|(sa, sb)| (any_distinct_layout::<f64>(sa), any_distinct_layout::<f64>(sb)))) {
        check(|v| v[0].matmul(&v[1]), &[a, b], true)?;
    }

    #[test]
    fn linear(
        (x, w, b) in (0usize..3, 1usize..4, 1usize..4, 1usize..3, 1usize..3).prop_flat_map(|(lead, k, out, n0, n1)| {
            let xs: Vec<usize> = [n0, n1].into_iter().take(lead).chain([k]).collect();
            (any_distinct_layout::<f64>(xs), any_distinct_layout::<f64>(vec![out, k]), any_distinct_layout::<f64>(vec![out]))
        }),
        bias in any::<bool>(),
    ) {
        if bias {
            check(|v| v[0].linear(&v[1], Some(&v[2])), &[x, w, b], true)?;
        } else {
            check(|v| v[0].linear(&v[1], None), &[x, w], true)?;
        }
    }

    #[test]
    fn matmul_of_transposed_views(n in 1usize..4, k in 1usize..4, m in 1usize..4) {
        let a = with_layout_t(&[k, n]);
        let b = with_layout_t(&[m, k]);
        check(|v| v[0].t().matmul(&v[1].t()), &[a, b], true)?;
    }
}

fn with_layout_t(shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| (i as f64 * 0.77).sin())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn conv2d(
        n in 1usize..3, groups in 1usize..3, cpg in 1usize..3, opg in 1usize..3,
        h in 3usize..6, w in 3usize..6, kh in 1usize..3, kw in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, dil in 1usize..3, bias in any::<bool>(),
    ) {
        let (c, o) = (groups * cpg, groups * opg);
        prop_assume!(h + 2 * pad > dil * (kh - 1) && w + 2 * pad > dil * (kw - 1));
        let opts = Conv2dOptions { stride: [stride, 1], padding: [pad, pad], dilation: [dil, 1], groups };
        let x = Tensor::from_fn(&[n, c, h, w], |i| (i as f64 * 0.71).sin());
        let wt = Tensor::from_fn(&[o, cpg, kh, kw], |i| (i as f64 * 0.37).cos());
        let b = Tensor::from_fn(&[o], |i| i as f64 * 0.1);
        if bias {
            check(|v| v[0].conv2d(&v[1], Some(&v[2]), &opts), &[x, wt, b], true)?;
        } else {
            // A transposed view as input: the kernels must read any layout.
            let xt = x.transpose(2, 3).contiguous().transpose(2, 3);
            check(|v| v[0].conv2d(&v[1], None, &opts), &[xt, wt], true)?;
        }
    }

    #[test]
    fn conv1d(n in 1usize..3, c in 1usize..3, o in 1usize..3, l in 3usize..7, k in 1usize..4, stride in 1usize..3, pad in 0usize..2) {
        prop_assume!(l + 2 * pad >= k);
        let opts = Conv1dOptions { stride, padding: pad, dilation: 1, groups: 1 };
        let x = Tensor::from_fn(&[n, c, l], |i| (i as f64 * 0.53).sin());
        let wt = Tensor::from_fn(&[o, c, k], |i| (i as f64 * 0.29).cos());
        let b = Tensor::from_fn(&[o], |i| 0.2 - i as f64);
        check(|v| v[0].conv1d(&v[1], Some(&v[2]), &opts), &[x, wt, b], true)?;
    }

    #[test]
    fn pooling(n in 1usize..3, c in 1usize..3, h in 2usize..6, w in 2usize..6, k in 1usize..3, s in 1usize..3, seed in 0u64..100) {
        prop_assume!(h >= k && w >= k);
        let opts = Pool2dOptions { kernel: [k, k], stride: [s, s], padding: [0, 0], count_include_pad: true };
        // Distinct values so max pooling has no ties (ties are kinks finite differences cannot judge).
        let x = Tensor::from_fn(&[n, c, h, w], |i| ((i as u64 * 7919 + seed) % 1009) as f64 * 0.01);
        check(|v| v[0].max_pool2d(&opts), std::slice::from_ref(&x), true)?;
        check(|v| v[0].avg_pool2d(&opts), std::slice::from_ref(&x), true)?;
        if k > 1 {
            let padded = Pool2dOptions { padding: [1, 1], count_include_pad: false, ..opts };
            check(|v| v[0].avg_pool2d(&padded), std::slice::from_ref(&x), true)?;
        }
    }
}

#[test]
#[should_panic(expected = "matmul")]
fn matmul_shape_error_names_the_op() {
    let a = Var::leaf(Tensor::<f32>::zeros(&[2, 3]));
    let b = Var::leaf(Tensor::<f32>::zeros(&[4, 5]));
    let _ = a.matmul(&b);
}

/// `x @ w^T` (a Linear layer) gives `w` a contiguous gradient, so optimizers read it as a plain
/// slice, and the values are those of the textbook formula `(x^T g)^T`.
#[test]
fn gradient_of_a_transposed_weight_is_contiguous() {
    let x = Var::leaf(Tensor::<f64>::from_fn(&[3, 4], |i| (i as f64 * 0.3).sin()));
    let w = Var::leaf(Tensor::<f64>::from_fn(&[5, 4], |i| (i as f64 * 0.7).cos()));
    let g = Tensor::<f64>::from_fn(&[3, 5], |i| i as f64 - 7.0);
    let grads = (&x.matmul(&w.t()) * &Var::constant(g.clone())).sum().backward();
    let (gw, gx) = (grads.get(&w).unwrap(), grads.get(&x).unwrap());
    assert!(gw.is_contiguous());
    let want_w = g.t().matmul(x.data());
    let want_x = g.matmul(w.data());
    for (a, b) in gw.to_vec().iter().zip(want_w.to_vec()).chain(gx.to_vec().iter().zip(want_x.to_vec())) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }
}
