//! Attention and transformer layers against PyTorch (`fixtures/attention.txt`, written by
//! `fixtures/gen_attention.py`): outputs, attention weights and the gradients of every input
//! and parameter, in f64 (1e-10) and f32 (1e-5), with PyTorch's parameters loaded by their
//! state_dict names.

use std::collections::BTreeMap;

use ferrograd_autograd::{Grads, Var};
use ferrograd_nn::functional::{scaled_dot_product_attention, AttnMask};
use ferrograd_nn::layers::{MultiheadAttention, MultiheadAttentionArgs, MultiheadAttentionConfig};
use ferrograd_nn::Module;
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

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

/// Loads the fixture's parameters of `case` (PyTorch's state_dict names) into `module`.
fn load<F: Float>(case: &str, module: &dyn Module<F>) {
    let state: BTreeMap<String, Tensor<F>> = module
        .named_parameters()
        .into_iter()
        .map(|(name, _)| {
            let t = cast::<F>(&get(&format!("{case}.{name}")));
            (name, t)
        })
        .collect();
    module.load_state_dict(&state).expect("PyTorch's state_dict loads");
}

/// Checks the gradient of every parameter of `module` against the fixture's.
#[track_caller]
fn check_param_grads<F: Float>(case: &str, module: &dyn Module<F>, grads: &Grads<F>, tol: f64) {
    for (name, p) in module.named_parameters() {
        let g = grads.get_by_id(p.id()).unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
        assert_close(&format!("{case}.grad.{name}"), g, &get(&format!("{case}.grad.{name}")), tol);
    }
}

fn opt_bool(name: &str) -> Option<AttnMask<f64>> {
    fixture().contains_key(name).then(|| AttnMask::Bool(bool_mask(name)))
}

fn mha_case<F: Float>(case: &str, tol: f64) {
    let r = &mut StdRng::seed_from_u64(3);
    let (e, h, config) = match case {
        "mha_self" => (8, 2, MultiheadAttentionConfig::default()),
        "mha_cross_bf" => (8, 4, MultiheadAttentionConfig { batch_first: true, ..Default::default() }),
        "mha_kvdim" => (6, 3, MultiheadAttentionConfig { kdim: Some(5), vdim: Some(3), ..Default::default() }),
        "mha_nobias" => (4, 1, MultiheadAttentionConfig { bias: false, ..Default::default() }),
        _ => unreachable!(),
    };
    let mha = MultiheadAttention::<F>::with_config(e, h, config, r);
    load(case, &mha);
    let query = Var::leaf(cast::<F>(&get(&format!("{case}.query"))));
    let self_attn = case == "mha_self";
    let (key, value) = if self_attn {
        (query.clone(), query.clone())
    } else {
        (Var::leaf(cast::<F>(&get(&format!("{case}.key")))), Var::leaf(cast::<F>(&get(&format!("{case}.value")))))
    };
    let cast_mask = |m: AttnMask<f64>| match m {
        AttnMask::Bool(b) => AttnMask::Bool(b),
        AttnMask::Additive(a) => AttnMask::Additive(Var::constant(cast::<F>(a.data()))),
    };
    let attn_mask = match case {
        "mha_kvdim" => Some(AttnMask::Additive(Var::constant(get(&format!("{case}.attn_mask"))))),
        _ => opt_bool(&format!("{case}.attn_mask")),
    };
    let args = MultiheadAttentionArgs {
        key_padding_mask: opt_bool(&format!("{case}.key_padding_mask")).map(cast_mask),
        attn_mask: attn_mask.map(cast_mask),
        need_weights: case != "mha_nobias",
        average_attn_weights: case != "mha_cross_bf",
        is_causal: false,
    };
    let (out, w) = mha.forward(&query, &key, &value, &args);
    let mut outs = vec![("out", out)];
    outs.extend(w.map(|w| ("weights", w)));
    let grads = check_outputs(case, &outs, tol);
    let mut leaves = vec![("query", &query)];
    if !self_attn {
        leaves.extend([("key", &key), ("value", &value)]);
    }
    for (name, x) in leaves {
        assert_close(
            &format!("{case}.grad.{name}"),
            grads.get(x).expect("grad"),
            &get(&format!("{case}.grad.{name}")),
            tol,
        );
    }
    check_param_grads(case, &mha, &grads, tol);
}

const MHA_CASES: [&str; 4] = ["mha_self", "mha_cross_bf", "mha_kvdim", "mha_nobias"];

#[test]
fn multihead_attention_matches_pytorch_f64() {
    for case in MHA_CASES {
        mha_case::<f64>(case, 1e-10);
    }
}

#[test]
fn multihead_attention_matches_pytorch_f32() {
    for case in MHA_CASES {
        mha_case::<f32>(case, 1e-5);
    }
}
