//! The fused training-mode BatchNorm op (`Tensor::batch_norm_forward`/`backward` behind
//! `BatchNorm1d`/`BatchNorm2d::forward` on rows of at least 32 elements) against the plain
//! formula in Var ops, in f32 against f64, and under gradcheck and gradgradcheck.

use ferrograd_autograd::check::{gradcheck, gradgradcheck};
use ferrograd_autograd::{grad_with, BackwardOptions, Var};
use ferrograd_nn::layers::{BatchNorm1d, BatchNorm2d, BatchNormConfig};
use ferrograd_nn::Module;
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |_| rng.random::<f64>() * 4.0 - 2.0 + 0.5)
}

/// `(x - mean) / sqrt(var + eps) * w + b` with per-channel statistics over every dim but 1, in
/// plain Var ops.
fn reference(x: &Var<f64>, w: Option<&Var<f64>>, b: Option<&Var<f64>>, eps: f64) -> Var<f64> {
    let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
    let mut stat = vec![1; x.rank()];
    stat[1] = x.shape()[1];
    let mean = x.mean_dims(&dims, true);
    let var = (x - &mean).square().mean_dims(&dims, true);
    let mut y = (x - &mean) * var.add_scalar(eps).rsqrt();
    if let Some(w) = w {
        y = y * w.reshape(&stat);
    }
    if let Some(b) = b {
        y = y + b.reshape(&stat);
    }
    y
}

/// The layer for `shape`'s rank: BatchNorm2d for rank 4, BatchNorm1d otherwise.
fn forward<F: Float>(
    shape: &[usize],
    config: BatchNormConfig,
    x: &Var<F>,
    w: Option<&Var<F>>,
    b: Option<&Var<F>>,
) -> Var<F> {
    if shape.len() == 4 {
        BatchNorm2d::<F>::with_config(shape[1], config).forward_with(x, w, b)
    } else {
        BatchNorm1d::<F>::with_config(shape[1], config).forward_with(x, w, b)
    }
}

/// `[N, C, L]` and `[N, C, H, W]` with rows of at least 32 elements (the layers' fused op: 32
/// partial sums, with and without a remainder; one channel), and shorter rows (`[N, C]` among
/// them), which the layers compute in Var ops.
const CASES: [&[usize]; 7] = [&[2, 3, 32], &[2, 2, 4, 9], &[3, 1, 33], &[2, 3, 70], &[5, 3], &[4, 3, 7], &[3, 4, 1, 1]];

#[test]
fn fused_batch_norm_matches_the_plain_formula_with_its_gradients() {
    let mut rng = StdRng::seed_from_u64(1);
    for shape in CASES {
        let c = shape[1];
        for affine in [true, false] {
            let config = BatchNormConfig { eps: 1e-3, affine, ..Default::default() };
            let x = Var::leaf(randn(&mut rng, shape));
            let w = Var::leaf(randn(&mut rng, &[c]));
            let b = Var::leaf(randn(&mut rng, &[c]));
            let (wo, bo) = (affine.then_some(&w), affine.then_some(&b));
            let got = forward(shape, config, &x, wo, bo);
            let want = reference(&x, wo, bo, 1e-3);
            assert!(got.data().max_abs_diff(want.data()) < 1e-12, "{shape:?}: forward");
            let proj = Var::constant(randn(&mut rng, shape));
            // The input's gradient alone (the weight still enters it).
            let opts = BackwardOptions { retain_graph: true, create_graph: false };
            let only = |y: &Var<f64>| grad_with(&[(y * &proj).sum()], std::slice::from_ref(&x), None, opts)[0].clone();
            let (a, e) = (only(&got).expect("dx"), only(&want).expect("dx"));
            assert!(a.data().max_abs_diff(e.data()) < 1e-11, "{shape:?}: dx alone");
            let (gg, gw) = ((&got * &proj).sum().backward(), (&want * &proj).sum().backward());
            for (name, v, used) in [("x", &x, true), ("w", &w, affine), ("b", &b, affine)] {
                match (gg.get(v), gw.get(v)) {
                    (Some(a), Some(e)) => assert!(a.max_abs_diff(e) < 1e-11, "{shape:?}: d{name}"),
                    (None, None) => assert!(!used),
                    _ => panic!("{shape:?}: d{name} present in one only"),
                }
            }
        }
    }
}

/// The tensor op itself on short rows (which the layers leave to Var ops): forward and
/// backward against the plain formula's.
#[test]
fn batch_norm_op_on_short_rows_matches_the_plain_formula() {
    let mut rng = StdRng::seed_from_u64(5);
    for shape in [&[5usize, 3][..], &[4, 3, 7], &[3, 2, 1, 2]] {
        let c = shape[1];
        let (x, w, b, g) =
            (randn(&mut rng, shape), randn(&mut rng, &[c]), randn(&mut rng, &[c]), randn(&mut rng, shape));
        let f = x.batch_norm_forward(Some(&w), Some(&b), 1e-3);
        let gr = x.batch_norm_backward(&g, &f.mean, &f.rstd, Some(&w), true, true);
        let (xv, wv, bv) = (Var::leaf(x), Var::leaf(w), Var::leaf(b));
        let want = reference(&xv, Some(&wv), Some(&bv), 1e-3);
        assert!(f.out.max_abs_diff(want.data()) < 1e-12, "{shape:?}: forward");
        let grads = (&want * &Var::constant(g)).sum().backward();
        let weight = gr.weight.expect("asked for");
        let bias = gr.bias.expect("asked for");
        for (name, got, v) in [("x", &gr.input, &xv), ("w", &weight, &wv), ("b", &bias, &bv)] {
            assert!(got.max_abs_diff(grads.get(v).unwrap()) < 1e-11, "{shape:?}: d{name}");
        }
    }
}

#[test]
fn fused_batch_norm_f32_matches_f64() {
    let mut rng = StdRng::seed_from_u64(2);
    let shape = [16, 8, 5, 9]; // rows of 45
    let x64 = randn(&mut rng, &shape).mul_scalar(3.0).add_scalar(2.0);
    let w64 = randn(&mut rng, &[8]);
    let b64 = randn(&mut rng, &[8]);
    let g64 = randn(&mut rng, &shape);
    let f32v = |t: &Tensor<f64>| t.map(|v| v as f32);
    let config = BatchNormConfig::default();
    let (x32, w32, b32) = (Var::leaf(f32v(&x64)), Var::leaf(f32v(&w64)), Var::leaf(f32v(&b64)));
    let (x, w, b) = (Var::leaf(x64), Var::leaf(w64), Var::leaf(b64));
    let y32 = forward(&shape, config, &x32, Some(&w32), Some(&b32));
    let y64 = forward(&shape, config, &x, Some(&w), Some(&b));
    assert!(y32.data().map(|v| v as f64).max_abs_diff(y64.data()) < 1e-5);
    let g32 = (&y32 * &Var::constant(f32v(&g64))).sum().backward();
    let g = (&y64 * &Var::constant(g64)).sum().backward();
    for (a, e) in [(&x32, &x), (&w32, &w), (&b32, &b)] {
        let (a, e) = (g32.get(a).unwrap().map(|v| v as f64), g.get(e).unwrap().clone());
        assert!(a.max_abs_diff(&e) < 1e-4 * (1.0 + e.abs().max().item()), "{}", a.max_abs_diff(&e));
    }
}

#[test]
fn fused_batch_norm_passes_gradcheck_and_gradgradcheck() {
    let mut rng = StdRng::seed_from_u64(3);
    for shape in CASES {
        let c = shape[1];
        let config = BatchNormConfig { eps: 1e-2, ..Default::default() };
        let inputs = [randn(&mut rng, shape), randn(&mut rng, &[c]), randn(&mut rng, &[c])];
        let f = |v: &[Var<f64>]| forward(shape, config, &v[0], Some(&v[1]), Some(&v[2]));
        gradcheck(f, &inputs).unwrap();
        gradgradcheck(f, &inputs).unwrap();
        let g = |v: &[Var<f64>]| forward(shape, config, &v[0], None, None);
        gradcheck(g, &inputs[..1]).unwrap();
        gradgradcheck(g, &inputs[..1]).unwrap();
    }
}

/// Evaluation mode (`x * alpha + beta` with the running statistics) against
/// `(x - running_mean) / sqrt(running_var + eps) * w + b`, and under gradcheck and
/// gradgradcheck.
#[test]
fn eval_batch_norm_matches_the_formula_and_passes_gradgradcheck() {
    let mut rng = StdRng::seed_from_u64(4);
    let bn = BatchNorm2d::<f64>::new(3);
    bn.running_mean.set(randn(&mut rng, &[3]));
    bn.running_var.set(randn(&mut rng, &[3]).abs().add_scalar(0.1));
    bn.eval();
    let (x, w, b) = (randn(&mut rng, &[2, 3, 4, 5]), randn(&mut rng, &[3]), randn(&mut rng, &[3]));
    let stat = [1, 3, 1, 1];
    let (rm, rv) = (bn.running_mean.value().reshape(&stat), bn.running_var.value().reshape(&stat));
    let want = (&x - &rm) / &rv.add_scalar(1e-5).sqrt() * w.reshape(&stat) + b.reshape(&stat);
    let got =
        bn.forward_with(&Var::constant(x.clone()), Some(&Var::constant(w.clone())), Some(&Var::constant(b.clone())));
    assert!(got.data().max_abs_diff(&want) < 1e-12);
    let f = |v: &[Var<f64>]| bn.forward_with(&v[0], Some(&v[1]), Some(&v[2]));
    gradcheck(f, &[x.clone(), w.clone(), b.clone()]).unwrap();
    gradgradcheck(f, &[x, w, b]).unwrap();
}
