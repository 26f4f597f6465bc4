//! Attention and transformer layers against PyTorch (`fixtures/attention.txt`, written by
//! `fixtures/gen_attention.py`): outputs, attention weights and the gradients of every input
//! and parameter, in f64 (1e-10) and f32 (1e-5), with PyTorch's parameters loaded by their
//! state_dict names.

use std::collections::BTreeMap;

use ferrograd_autograd::{Grads, Var};
use ferrograd_nn::functional::{scaled_dot_product_attention, AttnMask};
use ferrograd_nn::layers::{
    DecoderMasks, EncoderMasks, MultiheadAttention, MultiheadAttentionArgs, MultiheadAttentionConfig, RotaryEmbedding,
    SinusoidalPositionalEncoding, TransformerActivation, TransformerDecoder, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, TransformerLayerConfig,
};
use ferrograd_nn::{load_module, Module};
use ferrograd_tensor::{assert_panics_here, Float, Tensor};
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

fn layer_config(case: &str) -> (usize, usize, TransformerLayerConfig) {
    let base = TransformerLayerConfig { dropout: 0.0, ..Default::default() };
    let pre_gelu_bf = TransformerLayerConfig {
        norm_first: true,
        activation: TransformerActivation::Gelu,
        batch_first: true,
        dim_feedforward: 12,
        ..base
    };
    match case {
        "enc_post_relu" | "encoder_2l" | "dec_post_relu" | "decoder_2l" => {
            (8, 2, TransformerLayerConfig { dim_feedforward: 16, ..base })
        }
        "enc_pre_gelu_bf" | "dec_pre_gelu_bf" => (8, 4, pre_gelu_bf),
        _ => unreachable!(),
    }
}

fn opt_mask<F: Float>(name: &str) -> Option<AttnMask<F>> {
    fixture().contains_key(name).then(|| AttnMask::Bool(bool_mask(name)))
}

fn encoder_case<F: Float>(case: &str, tol: f64) {
    let (d, h, config) = layer_config(case);
    let r = &mut StdRng::seed_from_u64(5);
    let masks = EncoderMasks {
        src_mask: opt_mask(&format!("{case}.src_mask")),
        src_key_padding_mask: opt_mask(&format!("{case}.src_key_padding_mask")),
        is_causal: case != "enc_post_relu",
    };
    let src = Var::leaf(cast::<F>(&get(&format!("{case}.src"))));
    let (out, grads, module): (Var<F>, Grads<F>, Box<dyn Module<F>>) = if case == "encoder_2l" {
        let enc = TransformerEncoder::<F>::new(d, h, 2, config, true, r);
        load(case, &enc);
        let out = enc.forward(&src, &masks);
        let grads = check_outputs(case, &[("out", out.clone())], tol);
        (out, grads, Box::new(enc))
    } else {
        let layer = TransformerEncoderLayer::<F>::with_config(d, h, config, r);
        load(case, &layer);
        let out = layer.forward(&src, &masks);
        let grads = check_outputs(case, &[("out", out.clone())], tol);
        (out, grads, Box::new(layer))
    };
    assert_eq!(out.shape(), src.shape());
    assert_close(&format!("{case}.grad.src"), grads.get(&src).expect("grad"), &get(&format!("{case}.grad.src")), tol);
    check_param_grads(case, module.as_ref(), &grads, tol);
}

fn decoder_case<F: Float>(case: &str, tol: f64) {
    let (d, h, config) = layer_config(case);
    let r = &mut StdRng::seed_from_u64(5);
    let masks = DecoderMasks {
        tgt_mask: None,
        memory_mask: opt_mask(&format!("{case}.memory_mask")),
        tgt_key_padding_mask: opt_mask(&format!("{case}.tgt_key_padding_mask")),
        memory_key_padding_mask: opt_mask(&format!("{case}.memory_key_padding_mask")),
        tgt_is_causal: case != "dec_pre_gelu_bf",
        memory_is_causal: false,
    };
    let tgt = Var::leaf(cast::<F>(&get(&format!("{case}.tgt"))));
    let memory = Var::leaf(cast::<F>(&get(&format!("{case}.memory"))));
    let (grads, module): (Grads<F>, Box<dyn Module<F>>) = if case == "decoder_2l" {
        let dec = TransformerDecoder::<F>::new(d, h, 2, config, true, r);
        load(case, &dec);
        let out = dec.forward(&tgt, &memory, &masks);
        (check_outputs(case, &[("out", out)], tol), Box::new(dec))
    } else {
        let layer = TransformerDecoderLayer::<F>::with_config(d, h, config, r);
        load(case, &layer);
        let out = layer.forward(&tgt, &memory, &masks);
        (check_outputs(case, &[("out", out)], tol), Box::new(layer))
    };
    for (name, x) in [("tgt", &tgt), ("memory", &memory)] {
        assert_close(
            &format!("{case}.grad.{name}"),
            grads.get(x).expect("grad"),
            &get(&format!("{case}.grad.{name}")),
            tol,
        );
    }
    check_param_grads(case, module.as_ref(), &grads, tol);
}

const ENCODER_CASES: [&str; 3] = ["enc_post_relu", "enc_pre_gelu_bf", "encoder_2l"];
const DECODER_CASES: [&str; 3] = ["dec_post_relu", "dec_pre_gelu_bf", "decoder_2l"];

#[test]
fn transformer_encoder_matches_pytorch_f64() {
    for case in ENCODER_CASES {
        encoder_case::<f64>(case, 1e-10);
    }
}

#[test]
fn transformer_encoder_matches_pytorch_f32() {
    for case in ENCODER_CASES {
        encoder_case::<f32>(case, 1e-5);
    }
}

#[test]
fn transformer_decoder_matches_pytorch_f64() {
    for case in DECODER_CASES {
        decoder_case::<f64>(case, 1e-10);
    }
}

#[test]
fn transformer_decoder_matches_pytorch_f32() {
    for case in DECODER_CASES {
        decoder_case::<f32>(case, 1e-5);
    }
}

/// PyTorch's own `state_dict` of a 2-layer encoder with a final norm, saved by safetensors,
/// loads by name with `load_module` and gives PyTorch's output.
#[test]
fn pytorch_saved_encoder_loads_with_load_module() {
    let (d, h, config) = layer_config("encoder_2l");
    let enc = TransformerEncoder::<f64>::new(d, h, 2, config, true, &mut StdRng::seed_from_u64(0));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_encoder.safetensors");
    load_module(path, &enc).unwrap();
    let masks = EncoderMasks {
        src_key_padding_mask: opt_mask("encoder_2l.src_key_padding_mask"),
        is_causal: true,
        ..Default::default()
    };
    let out = enc.forward(&Var::constant(get("encoder_2l.src")), &masks);
    assert_close("encoder_2l.out", out.data(), &get("encoder_2l.out"), 1e-10);
}

/// Shape errors panic with the op's name and the shapes, at the line that called the function
/// or the layer's `forward`.
#[test]
fn shape_errors_name_the_op_and_shapes_at_the_callers_line() {
    use scaled_dot_product_attention as sdpa;
    const OP: &str = "scaled_dot_product_attention";
    let v = |shape: &[usize]| Var::leaf(Tensor::<f64>::zeros(shape));
    let (q, k, vv, k3, v4) = (v(&[2, 3, 4]), v(&[2, 5, 4]), v(&[2, 5, 6]), v(&[2, 5, 3]), v(&[2, 4, 6]));
    assert_panics_here!(sdpa(&q, &k3, &vv, None, 0.0, false, None), OP, "[2, 3, 4]", "[2, 5, 3]");
    assert_panics_here!(sdpa(&q, &k, &v4, None, 0.0, false, None), OP, "[2, 5, 4]", "[2, 4, 6]");
    let m = AttnMask::Bool(Tensor::full(&[3, 4], true));
    assert_panics_here!(sdpa(&q, &k, &vv, Some(&m), 0.0, false, None), OP, "[3, 4]", "[2, 3, 5]");
    assert_panics_here!(sdpa(&q, &k, &vv, Some(&m), 0.0, true, None), OP, "is_causal");
    assert_panics_here!(v(&[3]).tril(0), "tril", "[3]");

    const MHA: &str = "MultiheadAttention";
    let r = &mut StdRng::seed_from_u64(0);
    let mha = MultiheadAttention::<f64>::new(4, 2, r);
    let (x, x5, x6, x34) = (v(&[3, 2, 4]), v(&[3, 2, 5]), v(&[3, 2, 6]), v(&[3, 4]));
    assert_panics_here!(mha.forward(&x, &x5, &x, &Default::default()), MHA, "[3, 2, 4]", "[3, 2, 5]");
    let pad = Some(AttnMask::Bool(Tensor::full(&[3, 2], false)));
    let pad = MultiheadAttentionArgs { key_padding_mask: pad, ..Default::default() };
    assert_panics_here!(mha.forward(&x, &x, &x, &pad), MHA, "key_padding_mask", "[3, 2]");
    assert_panics_here!(Module::forward(&mha, &x6), MHA, "[3, 2, 6]");
    let config = TransformerLayerConfig { dim_feedforward: 8, ..Default::default() };
    let enc = TransformerEncoder::<f64>::new(4, 2, 2, config, true, r);
    assert_panics_here!(enc.forward(&x6, &EncoderMasks::default()), MHA, "[3, 2, 6]");
    let dec = TransformerDecoderLayer::<f64>::with_config(4, 2, config, r);
    assert_panics_here!(dec.forward(&x, &x34, &DecoderMasks::default()), MHA, "[3, 2, 4]", "[3, 4]");
    let src_mask = Some(AttnMask::Bool(Tensor::full(&[2, 2], false)));
    let masks = EncoderMasks { src_mask, ..Default::default() };
    assert_panics_here!(enc.layers[0].forward(&x, &masks), MHA, "attn_mask", "[2, 2]");
    let (rope, sin) = (RotaryEmbedding::new(4), SinusoidalPositionalEncoding::new(4, 2, false));
    assert_panics_here!(rope.forward(&v(&[2, 3])), "RotaryEmbedding", "[2, 3]");
    assert_panics_here!(sin.forward(&x), "SinusoidalPositionalEncoding", "max_len");
}
