//! The fused LayerNorm op (`Tensor::layer_norm_forward`/`backward` behind `LayerNorm::forward`)
//! against the plain formula in Var ops, and under gradcheck and gradgradcheck.

use ferrograd_autograd::check::{gradcheck, gradgradcheck};
use ferrograd_autograd::{grad_with, BackwardOptions, Var};
use ferrograd_nn::layers::{LayerNorm, LayerNormConfig};
use ferrograd_tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |_| rng.random::<f64>() * 4.0 - 2.0 + 0.5)
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last `k` dims, in plain Var ops.
fn reference(x: &Var<f64>, k: usize, w: Option<&Var<f64>>, b: Option<&Var<f64>>, eps: f64) -> Var<f64> {
    let dims: Vec<isize> = (x.rank() - k..x.rank()).map(|d| d as isize).collect();
    let mean = x.mean_dims(&dims, true);
    let var = (x - &mean).square().mean_dims(&dims, true);
    let mut y = (x - &mean) * var.add_scalar(eps).rsqrt();
    if let Some(w) = w {
        y = y * w;
    }
    if let Some(b) = b {
        y = y + b;
    }
    y
}

const CASES: [(&[usize], usize); 4] = [(&[5, 7], 1), (&[2, 3, 4], 1), (&[2, 3, 4], 2), (&[1, 1], 1)];

#[test]
fn fused_layer_norm_matches_the_plain_formula_with_its_gradients() {
    let mut rng = StdRng::seed_from_u64(1);
    for (shape, k) in CASES {
        for (affine, bias) in [(true, true), (true, false), (false, false)] {
            let norm_shape = &shape[shape.len() - k..];
            let ln = LayerNorm::<f64>::with_config(
                norm_shape,
                LayerNormConfig { eps: 1e-3, elementwise_affine: affine, bias },
            );
            let x = Var::leaf(randn(&mut rng, shape));
            let w = Var::leaf(randn(&mut rng, norm_shape));
            let b = Var::leaf(randn(&mut rng, norm_shape));
            let (wo, bo) = (affine.then_some(&w), (affine && bias).then_some(&b));
            let got = ln.forward_with(&x, wo, bo);
            let want = reference(&x, k, wo, bo, 1e-3);
            assert!(got.data().max_abs_diff(want.data()) < 1e-12, "{shape:?} k={k}: forward");
            let proj = Var::constant(randn(&mut rng, shape));
            // The input's gradient alone (the weight still enters it).
            let opts = BackwardOptions { retain_graph: true, create_graph: false };
            let only = |y: &Var<f64>| grad_with(&[(y * &proj).sum()], std::slice::from_ref(&x), None, opts)[0].clone();
            let (a, e) = (only(&got).expect("dx"), only(&want).expect("dx"));
            assert!(a.data().max_abs_diff(e.data()) < 1e-11, "{shape:?} k={k}: dx alone");
            let (gg, gw) = ((&got * &proj).sum().backward(), (&want * &proj).sum().backward());
            for (name, v, used) in [("x", &x, true), ("w", &w, wo.is_some()), ("b", &b, bo.is_some())] {
                match (gg.get(v), gw.get(v)) {
                    (Some(a), Some(e)) => assert!(a.max_abs_diff(e) < 1e-11, "{shape:?} k={k}: d{name}"),
                    (None, None) => assert!(!used),
                    _ => panic!("{shape:?} k={k}: d{name} present in one only"),
                }
            }
        }
    }
}

#[test]
fn fused_layer_norm_f32_matches_f64() {
    let mut rng = StdRng::seed_from_u64(2);
    let x64 = randn(&mut rng, &[6, 128]);
    let w64 = randn(&mut rng, &[128]);
    let b64 = randn(&mut rng, &[128]);
    let g64 = randn(&mut rng, &[6, 128]);
    let f32v = |t: &Tensor<f64>| t.map(|v| v as f32);
    let ln32 = LayerNorm::<f32>::new(&[128]);
    let ln64 = LayerNorm::<f64>::new(&[128]);
    let (x32, w32, b32) = (Var::leaf(f32v(&x64)), Var::leaf(f32v(&w64)), Var::leaf(f32v(&b64)));
    let (x, w, b) = (Var::leaf(x64), Var::leaf(w64), Var::leaf(b64));
    let y32 = ln32.forward_with(&x32, Some(&w32), Some(&b32));
    let y64 = ln64.forward_with(&x, Some(&w), Some(&b));
    assert!(y32.data().map(|v| v as f64).max_abs_diff(y64.data()) < 1e-5);
    let g32 = (&y32 * &Var::constant(f32v(&g64))).sum().backward();
    let g = (&y64 * &Var::constant(g64)).sum().backward();
    for (a, e) in [(&x32, &x), (&w32, &w), (&b32, &b)] {
        let (a, e) = (g32.get(a).unwrap().map(|v| v as f64), g.get(e).unwrap().clone());
        assert!(a.max_abs_diff(&e) < 1e-4 * (1.0 + e.abs().max().item()), "{}", a.max_abs_diff(&e));
    }
}

#[test]
fn fused_layer_norm_passes_gradcheck_and_gradgradcheck() {
    let mut rng = StdRng::seed_from_u64(3);
    for (shape, k) in CASES {
        let norm_shape = &shape[shape.len() - k..];
        let ln = LayerNorm::<f64>::with_config(norm_shape, LayerNormConfig { eps: 1e-2, ..Default::default() });
        let inputs = [randn(&mut rng, shape), randn(&mut rng, norm_shape), randn(&mut rng, norm_shape)];
        let f = |v: &[Var<f64>]| ln.forward_with(&v[0], Some(&v[1]), Some(&v[2]));
        gradcheck(f, &inputs).unwrap();
        gradgradcheck(f, &inputs).unwrap();
        let g = |v: &[Var<f64>]| ln.forward_with(&v[0], None, None);
        gradcheck(g, &inputs[..1]).unwrap();
        gradgradcheck(g, &inputs[..1]).unwrap();
    }
}
