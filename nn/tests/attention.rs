//! Attention and transformer layers against PyTorch (`fixtures/attention.txt`, written by
//! `fixtures/gen_attention.py`): outputs, attention weights and the gradients of every input
//! and parameter, in f64 (1e-10) and f32 (1e-5), with PyTorch's parameters loaded by their
//! state_dict names.

use std::collections::BTreeMap;

use ferrograd_autograd::{Grads, Var};
use ferrograd_nn::functional::{scaled_dot_product_attention, AttnMask};
use ferrograd_tensor::{Float, Tensor};

/// `fixtures/attention.txt`: name -> tensor (`-1e300` stands for `-inf`).
fn fixture() -> &'static BTreeMap<String, Tensor<f64>> {
    static F: std::sync::OnceLock<BTreeMap<String, Tensor<f64>>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        include_str!("fixtures/attention.txt")
            .lines()
            .map(|line| {
                let mut parts = line.split_whitespace();
                let name = parts.next().expect("name").to_string();
                let dims = parts.next().expect("dims");
                let shape: Vec<usize> = if dims == "scalar" {
                    Vec::new()
                } else {
                    dims.split(',').map(|d| d.parse().expect("dim")).collect()
                };
                let values: Vec<f64> = parts
                    .map(|v| v.parse().expect("value"))
                    .map(|v: f64| if v <= -1e300 { f64::NEG_INFINITY } else { v })
                    .collect();
                (name, Tensor::from_vec(values, &shape))
            })
            .collect()
    })
}

fn get(name: &str) -> Tensor<f64> {
    fixture().get(name).unwrap_or_else(|| panic!("fixture has no {name}")).clone()
}

fn cast<F: Float>(t: &Tensor<f64>) -> Tensor<F> {
    t.map(F::from_f64)
}

fn bool_mask(name: &str) -> Tensor<bool> {
    get(name).map(|v| v != 0.0)
}

#[track_caller]
fn assert_close<F: Float>(what: &str, got: &Tensor<F>, want: &Tensor<f64>, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        let g = ferrograd_tensor::Element::to_f64(*g);
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what} element {i}: got {g}, want {w}");
    }
}

/// The loss `sum(w_o * o)` over the named outputs, its gradients, and checks of every output.
#[track_caller]
fn check_outputs<F: Float>(case: &str, outs: &[(&str, Var<F>)], tol: f64) -> Grads<F> {
    let mut loss: Option<Var<F>> = None;
    for (name, o) in outs {
        assert_close(&format!("{case}.{name}"), o.data(), &get(&format!("{case}.{name}")), tol);
        let w = Var::constant(cast::<F>(&get(&format!("{case}.w_{name}"))));
        let term = (o * &w).sum();
        loss = Some(match loss {
            Some(l) => &l + &term,
            None => term,
        });
    }
    loss.expect("at least one output").backward()
}

fn sdpa_case<F: Float>(case: &str, tol: f64) {
    let q = Var::leaf(cast::<F>(&get(&format!("{case}.q"))));
    let k = Var::leaf(cast::<F>(&get(&format!("{case}.k"))));
    let v = Var::leaf(cast::<F>(&get(&format!("{case}.v"))));
    let mask_name = format!("{case}.mask");
    let (mask, mask_var) = match case {
        "sdpa_bool" => (Some(AttnMask::Bool(bool_mask(&mask_name))), None),
        "sdpa_additive" => {
            let m = Var::leaf(cast::<F>(&get(&mask_name)));
            (Some(AttnMask::Additive(m.clone())), Some(m))
        }
        _ => (None, None),
    };
    let causal = case.starts_with("sdpa_causal");
    let scale = (case == "sdpa_bool").then_some(0.3);
    let out = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), 0.0, causal, scale);
    let grads = check_outputs(case, &[("out", out)], tol);
    for (name, x) in [("q", &q), ("k", &k), ("v", &v)].into_iter().chain(mask_var.as_ref().map(|m| ("mask", m))) {
        assert_close(
            &format!("{case}.grad.{name}"),
            grads.get(x).expect("grad"),
            &get(&format!("{case}.grad.{name}")),
            tol,
        );
    }
}

const SDPA_CASES: [&str; 5] = ["sdpa_plain", "sdpa_bool", "sdpa_additive", "sdpa_causal", "sdpa_causal_rect"];

#[test]
fn sdpa_matches_pytorch_f64() {
    for case in SDPA_CASES {
        sdpa_case::<f64>(case, 1e-10);
    }
}

#[test]
fn sdpa_matches_pytorch_f32() {
    for case in SDPA_CASES {
        sdpa_case::<f32>(case, 1e-5);
    }
}
