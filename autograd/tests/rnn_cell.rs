//! The fused LSTM and GRU cells: gradcheck and gradgradcheck with respect to every input over
//! random shapes and layouts, and agreement with the unfused ops they replace (values and
//! gradients, f64 and f32).

mod common;

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
