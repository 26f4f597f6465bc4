//! The fused LSTM and GRU cells: gradcheck and gradgradcheck with respect to every input over
//! random shapes and layouts, and agreement with the unfused ops they replace (values and
//! gradients, f64 and f32).

use crate::common;

use common::check;
use ferrograd_autograd::{grad, Var};
use ferrograd_tensor::testing::{any_layout_in, contiguous_in};
use ferrograd_tensor::{Float, Tensor};
use proptest::prelude::*;

/// `(gx, gh, state)` for a cell of `gates` gates: `[B, gates * H]` twice and `[B, H]`.
fn cell_inputs(gates: usize) -> impl Strategy<Value = Vec<Tensor<f64>>> {
    (1usize..4, 1usize..4).prop_flat_map(move |(b, h)| {
        (
            any_layout_in::<f64>(vec![b, gates * h], -2.0..2.0),
            contiguous_in::<f64>(vec![b, gates * h], -2.0..2.0),
            any_layout_in::<f64>(vec![b, h], -2.0..2.0),
        )
            .prop_map(|(x, y, s)| vec![x, y, s])
    })
}

/// The unfused LSTM step the fused op replaces.
fn lstm_ref<F: Float>(gx: &Var<F>, gh: &Var<F>, c: &Var<F>) -> (Var<F>, Var<F>) {
    let a = (gx + gh).chunk(4, -1);
    let (i, f, g, o) = (a[0].sigmoid(), a[1].sigmoid(), a[2].tanh(), a[3].sigmoid());
    let c_new = &(&f * c) + &(&i * &g);
    (&o * &c_new.tanh(), c_new)
}

/// The unfused GRU step the fused op replaces.
fn gru_ref<F: Float>(gx: &Var<F>, gh: &Var<F>, h: &Var<F>) -> Var<F> {
    let (x3, h3) = (gx.chunk(3, -1), gh.chunk(3, -1));
    let r = (&x3[0] + &h3[0]).sigmoid();
    let z = (&x3[1] + &h3[1]).sigmoid();
    let n = (&x3[2] + &(&r * &h3[2])).tanh();
    &n + &(&z * &(h - &n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn lstm_cell_gradients(xs in cell_inputs(4)) {
        check(|v| { let (h, c) = Var::fused_lstm_cell(&v[0], &v[1], &v[2]); Var::cat(&[&h, &c], -1) }, &xs, true)?;
        // Only one of the two outputs used: the other's gradient is absent, not zero-filled wrong.
        check(|v| Var::fused_lstm_cell(&v[0], &v[1], &v[2]).0, &xs, true)?;
        check(|v| Var::fused_lstm_cell(&v[0], &v[1], &v[2]).1.square(), &xs, false)?;
    }

    #[test]
    fn gru_cell_gradients(xs in cell_inputs(3)) {
        check(|v| Var::fused_gru_cell(&v[0], &v[1], &v[2]), &xs, true)?;
    }

    #[test]
    fn fused_cells_match_the_unfused_ops(xs in cell_inputs(4), ys in cell_inputs(3)) {
        let close = |a: &[f64], b: &[f64], tol: f64| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()));
        // f64: the same functions, so the same values and gradients to rounding.
        let v: Vec<Var<f64>> = xs.iter().map(|t| Var::leaf(t.clone())).collect();
        let (h, c) = Var::fused_lstm_cell(&v[0], &v[1], &v[2]);
        let (hr, cr) = lstm_ref(&v[0], &v[1], &v[2]);
        prop_assert!(close(&h.to_vec(), &hr.to_vec(), 1e-14) && close(&c.to_vec(), &cr.to_vec(), 1e-14));
        let w = Var::constant(Tensor::from_fn(h.shape(), |i| 0.3 + (i as f64 * 0.71).sin()));
        let fused = grad(&[(&(&h * &w) + &c).sum()], &v, None, false);
        let unfused = grad(&[(&(&hr * &w) + &cr).sum()], &v, None, false);
        for (a, b) in fused.iter().zip(&unfused) {
            prop_assert!(close(&a.as_ref().unwrap().to_vec(), &b.as_ref().unwrap().to_vec(), 1e-13));
        }
        // f32: polynomial activations, a few ulp from libm's.
        let v: Vec<Var<f32>> = xs.iter().map(|t| Var::leaf(t.map(|x| x as f32))).collect();
        let (h, c) = Var::fused_lstm_cell(&v[0], &v[1], &v[2]);
        let (hr, cr) = lstm_ref(&v[0], &v[1], &v[2]);
        let f = |t: Vec<f32>| t.into_iter().map(f64::from).collect::<Vec<_>>();
        prop_assert!(close(&f(h.to_vec()), &f(hr.to_vec()), 2e-6) && close(&f(c.to_vec()), &f(cr.to_vec()), 2e-6));
        let fused = grad(&[(&h + &c).sum()], &v, None, false);
        let unfused = grad(&[(&hr + &cr).sum()], &v, None, false);
        for (a, b) in fused.iter().zip(&unfused) {
            prop_assert!(close(&f(a.as_ref().unwrap().to_vec()), &f(b.as_ref().unwrap().to_vec()), 1e-5));
        }

        let v: Vec<Var<f64>> = ys.iter().map(|t| Var::leaf(t.clone())).collect();
        let (h, hr) = (Var::fused_gru_cell(&v[0], &v[1], &v[2]), gru_ref(&v[0], &v[1], &v[2]));
        prop_assert!(close(&h.to_vec(), &hr.to_vec(), 1e-14));
        let fused = grad(&[h.square().sum()], &v, None, false);
        let unfused = grad(&[hr.square().sum()], &v, None, false);
        for (a, b) in fused.iter().zip(&unfused) {
            prop_assert!(close(&a.as_ref().unwrap().to_vec(), &b.as_ref().unwrap().to_vec(), 1e-13));
        }
    }
}

#[test]
#[should_panic(expected = "fused_lstm_cell: gate blocks [2, 8] and [2, 8] must both be [B, 4 * H] for a state [2, 3]")]
fn shape_errors_name_the_op_and_the_shapes() {
    let g = Var::constant(Tensor::<f32>::zeros(&[2, 8]));
    Var::fused_lstm_cell(&g, &g, &Var::constant(Tensor::zeros(&[2, 3])));
}

/// A whole-sequence case: `[gx [T, B, 4H], w_hh [4H, H], h0 [B, H], c0 [B, H]]` and maybe a
/// bias `[4H]` last, lengths (or none), direction, and whether the initial state is given.
fn sequence_case() -> impl Strategy<Value = (Vec<Tensor<f64>>, Option<Vec<usize>>, bool, bool)> {
    (1usize..4, 1usize..4, 1usize..4).prop_flat_map(|(t, b, h)| {
        (
            (
                any_layout_in::<f64>(vec![t, b, 4 * h], -2.0..2.0),
                any_layout_in::<f64>(vec![4 * h, h], -1.0..1.0),
                contiguous_in::<f64>(vec![b, h], -1.0..1.0),
                contiguous_in::<f64>(vec![b, h], -1.0..1.0),
                proptest::option::of(any_layout_in::<f64>(vec![4 * h], -1.0..1.0)),
            )
                .prop_map(|(x, w, h0, c0, b)| [vec![x, w, h0, c0], b.into_iter().collect()].concat()),
            proptest::option::of(proptest::collection::vec(0..=t, b)),
            any::<bool>(),
            any::<bool>(),
        )
    })
}

/// The loop of fused cells the sequence op replaces (padded steps keep the state, output 0).
fn sequence_ref(v: &[Var<f64>], lengths: Option<&[usize]>, reverse: bool, state: bool) -> [Var<f64>; 3] {
    let (steps, batch, hidden) = (v[0].shape()[0], v[0].shape()[1], v[1].shape()[1]);
    let zero = Var::constant(Tensor::zeros(&[batch, hidden]));
    let (mut h, mut c) = if state { (v[2].clone(), v[3].clone()) } else { (zero.clone(), zero.clone()) };
    let mut out = vec![zero.clone(); steps];
    for s in 0..steps {
        let t = if reverse { steps - 1 - s } else { s };
        let gx = match v.get(4) {
            Some(b) => &v[0].select(0, t) + b,
            None => v[0].select(0, t),
        };
        let (hn, cn) = Var::fused_lstm_cell(&gx, &h.matmul(&v[1].t()), &c);
        let m = Tensor::from_fn(&[batch, 1], |r| lengths.is_none_or(|l| t < l[r]));
        out[t] = Var::where_(&m, &hn, &zero);
        (h, c) = (Var::where_(&m, &hn, &h), Var::where_(&m, &cn, &c));
    }
    [Var::stack(&out.iter().collect::<Vec<_>>(), 0), h, c]
}

fn sequence_op(v: &[Var<f64>], lengths: Option<&[usize]>, reverse: bool, state: bool) -> [Var<f64>; 3] {
    let (h0, c0) = if state { (Some(&v[2]), Some(&v[3])) } else { (None, None) };
    let (out, h, c) = Var::fused_lstm_sequence(&v[0], v.get(4), &v[1], h0, c0, lengths, reverse);
    [out, h, c]
}

/// Every output used, with different weights, so that each gradient path is checked.
fn sequence_loss(o: [Var<f64>; 3]) -> Var<f64> {
    let [out, h, c] = o;
    let w = Var::constant(Tensor::from_fn(out.shape(), |i| 0.3 + (i as f64 * 0.71).sin()));
    &(&(&out * &w).sum() + &(&h * &h).sum()) + &(&c * &c.sin()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn lstm_sequence_gradients((xs, lens, reverse, state) in sequence_case()) {
        let l = lens.as_deref();
        check(|v| sequence_loss(sequence_op(v, l, reverse, state)), &xs, true)?;
        // Only the final hidden state used (the output and c_n get no gradient).
        check(|v| sequence_op(v, l, reverse, state)[1].clone(), &xs, false)?;
    }

    #[test]
    fn lstm_sequence_matches_the_loop_of_cells((xs, lens, reverse, state) in sequence_case()) {
        let l = lens.as_deref();
        let close = |a: &[f64], b: &[f64], tol: f64| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()));
        let v: Vec<Var<f64>> = xs.iter().map(|t| Var::leaf(t.clone())).collect();
        let (got, want) = (sequence_op(&v, l, reverse, state), sequence_ref(&v, l, reverse, state));
        for (a, b) in got.iter().zip(&want) {
            prop_assert!(close(&a.to_vec(), &b.to_vec(), 1e-13));
        }
        let g = grad(&[sequence_loss(got)], &v, None, false);
        let r = grad(&[sequence_loss(want)], &v, None, false);
        for (a, b) in g.iter().zip(&r) {
            match (a, b) {
                (Some(a), Some(b)) => prop_assert!(close(&a.to_vec(), &b.to_vec(), 1e-12)),
                (None, None) => {}
                // The reference may route a zero gradient where the op gives none (no state).
                (a, b) => prop_assert!(!state && a.iter().chain(b).all(|g| g.to_vec().iter().all(|&x| x == 0.0))),
            }
        }
        // Padded steps' projections get exactly zero gradient.
        if let (Some(l), Some(dgx)) = (l, &g[0]) {
            for (r, &len) in l.iter().enumerate() {
                for t in len..xs[0].shape()[0] {
                    prop_assert!(dgx.data().select(0, t).select(0, r).to_vec().iter().all(|&x| x == 0.0));
                }
            }
        }
        // f32 agrees with f64 (polynomial activations).
        let v32: Vec<Var<f32>> = xs.iter().map(|t| Var::leaf(t.map(|x| x as f32))).collect();
        let (h0, c0) = if state { (Some(&v32[2]), Some(&v32[3])) } else { (None, None) };
        let (out32, _, _) = Var::fused_lstm_sequence(&v32[0], v32.get(4), &v32[1], h0, c0, l, reverse);
        let out64 = sequence_op(&v, l, reverse, state)[0].to_vec();
        prop_assert!(out32.to_vec().iter().zip(&out64).all(|(&a, &b)| (f64::from(a) - b).abs() < 1e-5));
    }
}

#[test]
#[should_panic(expected = "lstm_sequence: lengths [1, 4] must be 2 values in 0..=3")]
fn sequence_lengths_beyond_the_steps_are_refused() {
    let gx = Var::constant(Tensor::<f32>::zeros(&[3, 2, 8]));
    let w = Var::constant(Tensor::zeros(&[8, 2]));
    Var::fused_lstm_sequence(&gx, None, &w, None, None, Some(&[1, 4]), false);
}

/// A whole-layer case: `[x [T, B, I], w_ih [4H, I], w_hh [4H, H], h0, c0]` and maybe a bias
/// last, lengths (or none), direction, and whether the initial state is given.
fn layer_case() -> impl Strategy<Value = (Vec<Tensor<f64>>, Option<Vec<usize>>, bool, bool)> {
    (1usize..4, 1usize..4, 1usize..4, 1usize..4).prop_flat_map(|(t, b, i, h)| {
        (
            (
                any_layout_in::<f64>(vec![t, b, i], -2.0..2.0),
                any_layout_in::<f64>(vec![4 * h, i], -1.0..1.0),
                any_layout_in::<f64>(vec![4 * h, h], -1.0..1.0),
                contiguous_in::<f64>(vec![b, h], -1.0..1.0),
                contiguous_in::<f64>(vec![b, h], -1.0..1.0),
                proptest::option::of(any_layout_in::<f64>(vec![4 * h], -1.0..1.0)),
            )
                .prop_map(|(x, wi, wh, h0, c0, b)| [vec![x, wi, wh, h0, c0], b.into_iter().collect()].concat()),
            proptest::option::of(proptest::collection::vec(0..=t, b)),
            any::<bool>(),
            any::<bool>(),
        )
    })
}

/// A layer as a function of its inputs, lengths, direction and whether the state is given.
type LayerFn<F> = fn(&[Var<F>], Option<&[usize]>, bool, bool) -> [Var<F>; 3];

fn layer_op<F: Float>(v: &[Var<F>], lengths: Option<&[usize]>, reverse: bool, state: bool) -> [Var<F>; 3] {
    let (h0, c0) = if state { (Some(&v[3]), Some(&v[4])) } else { (None, None) };
    let (out, h, c) = Var::fused_lstm_layer(&v[0], &v[1], v.get(5), &v[2], h0, c0, lengths, reverse);
    [out, h, c]
}

/// The projection as its own product, then the sequence op.
fn layer_ref<F: Float>(v: &[Var<F>], lengths: Option<&[usize]>, reverse: bool, state: bool) -> [Var<F>; 3] {
    let (t, b, i) = (v[0].shape()[0], v[0].shape()[1], v[0].shape()[2]);
    let gx = v[0].reshape(&[t * b, i]).matmul(&v[1].t()).reshape(&[t, b, v[1].shape()[0]]);
    let (h0, c0) = if state { (Some(&v[3]), Some(&v[4])) } else { (None, None) };
    let (out, h, c) = Var::fused_lstm_sequence(&gx, v.get(5), &v[2], h0, c0, lengths, reverse);
    [out, h, c]
}

fn layer_loss<F: Float>(o: [Var<F>; 3]) -> Var<F> {
    let [out, h, c] = o;
    let w = Var::constant(Tensor::from_fn(out.shape(), |i| F::from_f64(0.3 + (i as f64 * 0.71).sin())));
    &(&(&out * &w).sum() + &(&h * &h).sum()) + &(&c * &c.sin()).sum()
}

/// Gradients of `layer_loss` through `f` with respect to the leaves `v`, the input `v[0]` a
/// constant (so that no gradient of the projections is asked for) unless `input_grad`.
fn layer_grads<F: Float>(
    f: LayerFn<F>,
    xs: &[Tensor<F>],
    l: Option<&[usize]>,
    reverse: bool,
    state: bool,
    input_grad: bool,
) -> Vec<Option<Vec<f64>>> {
    let v: Vec<Var<F>> = xs
        .iter()
        .enumerate()
        .map(|(k, t)| if k == 0 && !input_grad { Var::constant(t.clone()) } else { Var::leaf(t.clone()) })
        .collect();
    let loss = layer_loss(f(&v, l, reverse, state));
    let params: Vec<Var<F>> = v.iter().skip(usize::from(!input_grad)).cloned().collect();
    grad(&[loss], &params, None, false)
        .into_iter()
        .map(|g| g.map(|g| g.to_vec().into_iter().map(|x| x.to_f64()).collect()))
        .collect()
}

/// `a` within `tol` of `b`, relative to `b`'s largest magnitude (absent gradients: both absent
/// or one all zero).
fn grads_close(a: &[Option<Vec<f64>>], b: &[Option<Vec<f64>>], tol: f64) -> bool {
    a.iter().zip(b).all(|(a, b)| match (a, b) {
        (Some(a), Some(b)) => {
            let scale = b.iter().fold(1f64, |m, x| m.max(x.abs()));
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * scale)
        }
        (None, None) => true,
        (a, b) => a.iter().chain(b).all(|g| g.iter().all(|&x| x == 0.0)),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn lstm_layer_gradients((xs, lens, reverse, state) in layer_case()) {
        let l = lens.as_deref();
        check(|v| layer_loss(layer_op(v, l, reverse, state)), &xs, true)?;
    }

    #[test]
    fn lstm_layer_matches_projection_then_sequence((xs, lens, reverse, state) in layer_case()) {
        let l = lens.as_deref();
        let v: Vec<Var<f64>> = xs.iter().map(|t| Var::leaf(t.clone())).collect();
        for (a, b) in layer_op(&v, l, reverse, state).iter().zip(&layer_ref(&v, l, reverse, state)) {
            prop_assert!(a.to_vec().iter().zip(b.to_vec()).all(|(x, y)| (x - y).abs() <= 1e-13 * (1.0 + y.abs())));
        }
        let xs32: Vec<Tensor<f32>> = xs.iter().map(|t| t.map(|x| x as f32)).collect();
        for input_grad in [false, true] {
            let want = layer_grads::<f64>(layer_ref, &xs, l, reverse, state, input_grad);
            prop_assert!(grads_close(&layer_grads::<f64>(layer_op, &xs, l, reverse, state, input_grad), &want, 1e-12));
            // f32 (packed products, gradients accumulated step by step) against f64.
            prop_assert!(grads_close(&layer_grads::<f32>(layer_op, &xs32, l, reverse, state, input_grad), &want, 2e-4));
            prop_assert!(grads_close(&layer_grads::<f32>(layer_ref, &xs32, l, reverse, state, input_grad), &want, 2e-4));
        }
    }
}

/// Shapes past the packed kernels' tiles (8 and 6 rows, 32- and 16-wide panels, 8-deep packing
/// runs): f32 gradients of the layer and of the sequence op against f64.
#[test]
fn f32_layer_gradients_match_f64_past_the_tile_sizes() {
    for (t, b, i, h, lens, reverse) in [
        (5, 9, 5, 10, None, false),
        (3, 17, 33, 9, Some(vec![3, 1, 2, 0, 3, 3, 2, 1, 1, 3, 2, 3, 3, 1, 2, 3, 3]), true),
        (4, 7, 3, 17, Some(vec![4, 2, 4, 1, 3, 4, 4]), false),
    ] {
        let value = |k: usize, s: f64| ((k as f64 * s).sin() * 0.8) as f32;
        let g = 4 * h;
        let mut xs: Vec<Tensor<f64>> = vec![
            Tensor::from_fn(&[t, b, i], |k| f64::from(value(k, 0.37))),
            Tensor::from_fn(&[g, i], |k| f64::from(value(k, 0.53)) * 0.5),
            Tensor::from_fn(&[g, h], |k| f64::from(value(k, 0.29)) * 0.5),
            Tensor::from_fn(&[b, h], |k| f64::from(value(k, 0.91))),
            Tensor::from_fn(&[b, h], |k| f64::from(value(k, 0.77))),
        ];
        xs.push(Tensor::from_fn(&[g], |k| f64::from(value(k, 0.13))));
        let xs32: Vec<Tensor<f32>> = xs.iter().map(|t| t.map(|x| x as f32)).collect();
        let l = lens.as_deref();
        for (state, input_grad) in [(false, false), (true, true), (true, false)] {
            let want = layer_grads::<f64>(layer_ref, &xs, l, reverse, state, input_grad);
            let got = layer_grads::<f32>(layer_op, &xs32, l, reverse, state, input_grad);
            assert!(grads_close(&got, &want, 2e-4), "t {t} b {b} i {i} h {h} state {state} input_grad {input_grad}");
            let got = layer_grads::<f32>(layer_ref, &xs32, l, reverse, state, input_grad);
            assert!(grads_close(&got, &want, 2e-4), "sequence op: t {t} b {b} i {i} h {h} state {state}");
        }
    }
}

#[test]
#[should_panic(expected = "fused_lstm_layer: input [3, 2, 5], w_ih [8, 4] and w_hh [8, 2] must be")]
fn layer_shape_errors_name_the_shapes() {
    let x = Var::constant(Tensor::<f32>::zeros(&[3, 2, 5]));
    let (wi, wh) = (Var::constant(Tensor::zeros(&[8, 4])), Var::constant(Tensor::zeros(&[8, 2])));
    Var::fused_lstm_layer(&x, &wi, None, &wh, None, None, None, false);
}
