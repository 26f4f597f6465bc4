//! Fake quantization against PyTorch's own output: the forward pass of
//! `torch.fake_quantize_per_tensor_affine` / `fake_quantize_per_channel_affine` and the input
//! gradient of `sum(y * w)` (the straight-through estimator), on values at the clamp edges, on
//! and next to .5 rounding ties, for int8 and uint8 parameters. Reference values:
//! `fixtures/gen_fake_quant.py`.

use ferrograd_autograd::Var;
use ferrograd_tensor::Tensor;
use ferrograd_tuning::quant::{fake_quantize, fake_quantize_mask, QDtype, QParams, QScheme};

mod fixtures {
    include!("fixtures/fake_quant_torch.rs");
}
use fixtures::CASES;

/// One element where we differ from PyTorch.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through `Debug` in the failure messages
struct Mismatch {
    case: &'static str,
    index: usize,
    x: f32,
    scale: f32,
    x_over_scale: f64,
    y_ours_torch: (f32, f32),
    grad_ours_torch: (f32, f32),
}

/// Distance of `x / scale` from the nearest half-way point between two integers, in steps.
fn distance_to_tie(x: f32, scale: f32) -> f64 {
    ((f64::from(x) / f64::from(scale)).rem_euclid(1.0) - 0.5).abs()
}

/// Runs every case through `fake_quantize` and its backward; returns the elements whose forward
/// value or input gradient differs from PyTorch's.
fn mismatches() -> Vec<Mismatch> {
    let mut out = Vec::new();
    for &(case, scales, zero_points, qmin, qmax, axis, shape, xs, ws, ys, gs) in CASES {
        let dtype = if qmin < 0 { QDtype::Int8 } else { QDtype::Uint8 };
        assert_eq!((dtype.qmin(), dtype.qmax()), (qmin, qmax), "{case}");
        let scheme = if dtype == QDtype::Int8 { QScheme::Symmetric } else { QScheme::Affine };
        let params = QParams { dtype, scheme, scale: scales.to_vec(), zero_point: zero_points.to_vec(), axis };
        let x = Var::leaf(Tensor::from_vec(xs.to_vec(), shape));
        let w = Var::constant(Tensor::from_vec(ws.to_vec(), shape));
        let y = fake_quantize(&x, &params);
        let grad = Var::mul(&y, &w).sum().backward().get(&x).unwrap().to_vec();
        let mask = fake_quantize_mask(x.data(), &params).to_vec();
        let y = y.to_vec();
        let inner: usize = axis.map_or(1, |a| shape[a + 1..].iter().product());
        for i in 0..xs.len() {
            assert_eq!(mask[i] * ws[i], grad[i], "{case}[{i}]: the gradient is not the mask times the weight");
            if y[i] != ys[i] || grad[i] != gs[i] {
                let c = axis.map_or(0, |a| (i / inner) % shape[a]);
                out.push(Mismatch {
                    case,
                    index: i,
                    x: xs[i],
                    scale: scales[c],
                    x_over_scale: f64::from(xs[i]) / f64::from(scales[c]),
                    y_ours_torch: (y[i], ys[i]),
                    grad_ours_torch: (grad[i], gs[i]),
                });
            }
        }
    }
    out
}

#[test]
fn fixture_covers_ties_and_clamp_edges() {
    let (mut ties, mut clamped, mut passed) = (0, 0, 0);
    for &(_, scales, _, _, _, axis, shape, xs, _, _, gs) in CASES {
        let inner: usize = axis.map_or(1, |a| shape[a + 1..].iter().product());
        for (i, (&x, &g)) in xs.iter().zip(gs).enumerate() {
            let c = axis.map_or(0, |a| (i / inner) % shape[a]);
            ties += usize::from(distance_to_tie(x, scales[c]) == 0.0);
            if g == 0.0 {
                clamped += 1;
            } else {
                passed += 1;
            }
        }
    }
    assert!(ties >= 50 && clamped >= 50 && passed >= 100, "{ties} ties, {clamped} clamped, {passed} passed");
}

/// PyTorch's formula, `zero_point + nearbyint(x * (1 / scale))` in f32 (round half to even),
/// clamped and dequantized, reproduces the fixture exactly (the fixture is what it says).
#[test]
fn fixture_is_zero_point_plus_round_half_even() {
    for &(case, scales, zero_points, qmin, qmax, axis, shape, xs, _, ys, gs) in CASES {
        let inner: usize = axis.map_or(1, |a| shape[a + 1..].iter().product());
        for (i, &x) in xs.iter().enumerate() {
            let c = axis.map_or(0, |a| (i / inner) % shape[a]);
            let q = (x * (1.0 / scales[c])).round_ties_even() as i32 + zero_points[c];
            let y = (q.clamp(qmin, qmax) - zero_points[c]) as f32 * scales[c];
            assert_eq!(y, ys[i], "{case}[{i}]: x = {x}");
            assert_eq!((qmin..=qmax).contains(&q), gs[i] != 0.0, "{case}[{i}]: x = {x}");
        }
    }
}

/// Away from .5 ties, forward values and gradients are bit-equal to PyTorch's.
#[test]
fn matches_torch_away_from_rounding_ties() {
    let off: Vec<Mismatch> = mismatches().into_iter().filter(|m| distance_to_tie(m.x, m.scale) > 1e-5).collect();
    assert!(off.is_empty(), "{} elements differ from PyTorch:\n{off:#?}", off.len());
}

/// On and next to ties too: we compute PyTorch's `zero_point + nearbyint(x * (1 / scale))` (round
/// half to even), not `floor(x / scale + zero_point + 0.5)`, which was one step off on exact ties
/// and, through the f32 sum, rounded `k + 0.4999999` up when the zero point was not 0.
#[test]
fn matches_torch_on_and_next_to_rounding_ties() {
    let all = mismatches();
    assert!(all.is_empty(), "{} elements differ from PyTorch:\n{all:#?}", all.len());
}
