//! Properties of attention, the transformer layers and the positional encodings: gradcheck and
//! gradgradcheck over random shapes, layouts and masks with respect to inputs and every
//! parameter; causality (no gradient from a position to earlier outputs); padded keys get
//! exactly zero gradient; fully masked rows give zeros, never NaN; RoPE's relative positions.

use ferrograd_autograd::check::{gradcheck, gradgradcheck};
use ferrograd_autograd::{grad_with, BackwardOptions, Var};
use ferrograd_nn::check::{gradcheck_module_with, gradgradcheck_module_with, GradcheckOptions};
use ferrograd_nn::functional::{scaled_dot_product_attention, scaled_dot_product_attention_with_rng, AttnMask};
use ferrograd_nn::layers::{
    DecoderMasks, EncoderMasks, LearnedPositionalEncoding, MultiheadAttention, MultiheadAttentionArgs,
    MultiheadAttentionConfig, RotaryEmbedding, SinusoidalPositionalEncoding, TransformerActivation, TransformerDecoder,
    TransformerDecoderLayer, TransformerEncoderLayer, TransformerLayerConfig,
};
use ferrograd_nn::Module;
use ferrograd_tensor::testing::any_layout;
use ferrograd_tensor::Tensor;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut rng(seed))
}

/// A boolean mask of `shape`, `true` (allowed) at about two thirds of the entries.
fn random_mask(shape: &[usize], seed: u64) -> Tensor<bool> {
    Tensor::from_fn(shape, |i| !(i as u64 * 2654435761 + seed * 40503).is_multiple_of(3))
}

fn fail(what: &str) -> impl Fn(String) -> TestCaseError + '_ {
    move |e| TestCaseError::fail(format!("{what}: {e}"))
}

fn check_fn(what: &str, f: impl Fn(&[Var<f64>]) -> Var<f64>, inputs: &[Tensor<f64>]) -> Result<(), TestCaseError> {
    gradcheck(&f, inputs).map_err(|e| fail(what)(e.to_string()))?;
    gradgradcheck(&f, inputs).map_err(|e| fail(what)(format!("second order: {e}")))
}

fn check_module<M: Module<f64> + ?Sized>(
    what: &str,
    m: &M,
    inputs: &[Tensor<f64>],
    f: impl Fn(&[Var<f64>]) -> Var<f64>,
    second: bool,
) -> Result<(), TestCaseError> {
    let opts = GradcheckOptions::default();
    gradcheck_module_with(m, inputs, &f, &opts).map_err(|e| fail(what)(e.to_string()))?;
    if second {
        gradgradcheck_module_with(m, inputs, &f, &opts).map_err(|e| fail(what)(format!("second order: {e}")))?;
    }
    Ok(())
}

/// `[B, H, n, e]` with a random layout (transposed, sliced, flipped...).
fn qkv_strategy(b: usize, h: usize, n: usize, e: usize) -> impl Strategy<Value = Tensor<f64>> {
    any_layout::<f64>(vec![b, h, n, e])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    /// SDPA with each kind of mask, over random shapes and layouts, first and second order.
    #[test]
    fn sdpa_gradients(
        ((b, h, l, s, e, ev), q) in (1usize..3, 1usize..3, 1usize..4, 1usize..4, 1usize..4, 1usize..3)
            .prop_flat_map(|d| (Just(d), qkv_strategy(d.0, d.1, d.2, d.4))),
        seed in 0u64..1000,
        kind in 0usize..5,
    ) {
        let k = randn(&[b, 1, s, e], seed); // broadcast over heads
        let v = randn(&[b, h, s, ev], seed + 1);
        match kind {
            0 => check_fn("sdpa", |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], None, 0.0, false, None), &[q, k, v])?,
            1 => {
                let m = AttnMask::Bool(random_mask(&[b, 1, l, s], seed));
                check_fn("sdpa bool mask", |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], Some(&m), 0.0, false, Some(0.7)), &[q, k, v])?
            }
            2 => {
                // An additive mask is an input too: its gradient is checked.
                let bias = randn(&[l, s], seed + 2);
                check_fn("sdpa additive mask", |x| {
                    let m = AttnMask::Additive(x[3].clone());
                    scaled_dot_product_attention(&x[0], &x[1], &x[2], Some(&m), 0.0, false, None)
                }, &[q, k, v, bias])?
            }
            3 => check_fn("sdpa causal", |x| scaled_dot_product_attention(&x[0], &x[1], &x[2], None, 0.0, true, None), &[q, k, v])?,
            _ => {
                // Dropout from a generator seeded afresh at every call: the same mask each time.
                let m = AttnMask::Bool(random_mask(&[l, s], seed));
                check_fn("sdpa dropout", |x| {
                    let r = &mut rng(seed);
                    scaled_dot_product_attention_with_rng(&x[0], &x[1], &x[2], Some(&m), 0.4, false, None, r)
                }, &[q, k, v])?
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// MultiheadAttention with respect to query, key, value and every parameter, over random
    /// configurations and masks.
    #[test]
    fn multihead_attention_gradients(
        (heads, head_dim, l, s, b) in (1usize..3, 1usize..3, 1usize..4, 1usize..4, 1usize..3),
        kv_dims in proptest::option::of((1usize..4, 1usize..4)),
        bias in any::<bool>(),
        batch_first in any::<bool>(),
        masks in 0usize..4,
        seed in 0u64..1000,
    ) {
        let e = heads * head_dim;
        let (kdim, vdim) = kv_dims.unwrap_or((e, e));
        let config = MultiheadAttentionConfig { bias, batch_first, kdim: Some(kdim), vdim: Some(vdim), ..Default::default() };
        let mha = MultiheadAttention::<f64>::with_config(e, heads, config, &mut rng(seed));
        for p in mha.parameters() {
            p.set(randn(&p.shape(), seed + 7)); // non-zero biases
        }
        let shape = |n: usize, d: usize| if batch_first { vec![b, n, d] } else { vec![n, b, d] };
        let (q, k, v) = (randn(&shape(l, e), seed + 1), randn(&shape(s, kdim), seed + 2), randn(&shape(s, vdim), seed + 3));
        let mut pad = random_mask(&[b, s], seed);
        pad = pad.logical_not(); // true: padding
        let args = MultiheadAttentionArgs {
            key_padding_mask: (masks & 1 == 1).then(|| AttnMask::Bool(pad.clone())),
            attn_mask: (masks & 2 == 2).then(|| AttnMask::Additive(Var::constant(randn(&[b * heads, l, s], seed + 4)))),
            need_weights: true,
            average_attn_weights: seed % 2 == 0,
            is_causal: seed % 3 == 0,
        };
        let f = |x: &[Var<f64>]| {
            let (o, w) = mha.forward(&x[0], &x[1], &x[2], &args);
            let w = w.expect("weights");
            Var::cat(&[&o.reshape(&[o.numel()]), &w.reshape(&[w.numel()])], 0)
        };
        check_module("MultiheadAttention", &mha, &[q.clone(), k, v], f, seed % 2 == 0)?;
        // Self-attention (one projection for q, k and v) when the dims allow it.
        if kdim == e && vdim == e {
            let args = MultiheadAttentionArgs { need_weights: false, is_causal: seed % 2 == 1, ..Default::default() };
            check_module("MultiheadAttention self", &mha, &[q], |x| mha.forward(&x[0], &x[0], &x[0], &args).0, false)?;
        }
    }
}

fn small_config(norm_first: bool, gelu: bool, batch_first: bool) -> TransformerLayerConfig {
    TransformerLayerConfig {
        dim_feedforward: 5,
        dropout: 0.0,
        activation: if gelu { TransformerActivation::Gelu } else { TransformerActivation::Relu },
        batch_first,
        norm_first,
        ..Default::default()
    }
}

/// Gives every parameter random values (LayerNorm's ones and zeros hide mistakes).
fn randomize(m: &dyn Module<f64>, seed: u64) {
    for (i, p) in m.parameters().into_iter().enumerate() {
        p.set(randn(&p.shape(), seed * 31 + i as u64).map(|v| 0.5 * v));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Encoder and decoder layers with respect to their inputs and every parameter, over
    /// random shapes, norm placement, activation, layout and masks. (GELU for the second order:
    /// ReLU's kink is not twice differentiable.)
    #[test]
    fn transformer_layer_gradients(
        (t, s, b) in (1usize..4, 1usize..4, 1usize..3),
        norm_first in any::<bool>(),
        gelu in any::<bool>(),
        batch_first in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let (d, h) = (4, 2);
        let config = small_config(norm_first, gelu, batch_first);
        let shape = |n: usize| if batch_first { vec![b, n, d] } else { vec![n, b, d] };
        let enc = TransformerEncoderLayer::<f64>::with_config(d, h, config, &mut rng(seed));
        randomize(&enc, seed);
        let masks = EncoderMasks {
            src_mask: Some(AttnMask::Additive(Var::constant(randn(&[t, t], seed + 5)))),
            src_key_padding_mask: Some(AttnMask::Bool(random_mask(&[b, t], seed).logical_not())),
            is_causal: seed % 2 == 0,
        };
        check_module("TransformerEncoderLayer", &enc, &[randn(&shape(t), seed + 1)], |x| enc.forward(&x[0], &masks), gelu)?;

        let dec = TransformerDecoderLayer::<f64>::with_config(d, h, config, &mut rng(seed + 1));
        randomize(&dec, seed + 1);
        let masks = DecoderMasks {
            tgt_is_causal: true,
            memory_key_padding_mask: Some(AttnMask::Bool(random_mask(&[b, s], seed).logical_not())),
            memory_mask: Some(AttnMask::Bool(random_mask(&[t, s], seed + 3).logical_not())),
            ..Default::default()
        };
        let inputs = [randn(&shape(t), seed + 2), randn(&shape(s), seed + 3)];
        check_module("TransformerDecoderLayer", &dec, &inputs, |x| dec.forward(&x[0], &x[1], &masks), gelu)?;
    }
}

/// The gradient of `out[.., t, ..]` (positions on `axis`) with respect to `input`.
fn grad_of_position(out: &Var<f64>, input: &Var<f64>, axis: usize, t: usize) -> Tensor<f64> {
    let y = out.select(axis as isize, t).sum();
    let opts = BackwardOptions { retain_graph: true, create_graph: false };
    grad_with(&[y], std::slice::from_ref(input), None, opts)[0].as_ref().expect("input gets a gradient").data().clone()
}

/// Whether every element at positions `t + 1..` on `axis` is exactly zero, while position `t`
/// itself does get a gradient.
fn causal_grad(g: &Tensor<f64>, axis: usize, t: usize) -> bool {
    let n = g.shape()[axis];
    let at = |p: usize| g.select(axis as isize, p).to_vec();
    (t + 1..n).all(|p| at(p).iter().all(|&v| v == 0.0)) && at(t).iter().any(|&v| v != 0.0)
}

/// With `is_causal` (or a causal mask), output position `t` gets no gradient from any input
/// position after `t`: exactly zero, for SDPA, MultiheadAttention, both layers and a stack.
#[test]
fn causal_outputs_get_no_gradient_from_later_positions() {
    let (t_len, b, d, h) = (5, 2, 4, 2);
    for seed in 0..3 {
        // SDPA, q = k = v, [B, H, T, E].
        let x = Var::leaf(randn(&[b, h, t_len, d], seed));
        let causal_bool = AttnMask::Bool(Tensor::tril_mask(t_len, t_len, 0));
        for mask in [None, Some(&causal_bool)] {
            let out = scaled_dot_product_attention(&x, &x, &x, mask, 0.0, mask.is_none(), None);
            for t in 0..t_len {
                assert!(causal_grad(&grad_of_position(&out, &x, 2, t), 2, t), "sdpa: position {t}");
            }
        }
        // MultiheadAttention and an encoder layer, sequence-first [T, B, d].
        let mha = MultiheadAttention::<f64>::new(d, h, &mut rng(seed));
        randomize(&mha, seed);
        let x = Var::leaf(randn(&[t_len, b, d], seed + 1));
        let additive_causal =
            Tensor::from_fn(&[t_len, t_len], |i| if i % t_len > i / t_len { f64::NEG_INFINITY } else { 0.0 });
        for args in [
            MultiheadAttentionArgs { is_causal: true, ..Default::default() },
            MultiheadAttentionArgs {
                attn_mask: Some(AttnMask::Additive(Var::constant(additive_causal.clone()))),
                ..Default::default()
            },
        ] {
            let (out, _) = mha.forward(&x, &x, &x, &args);
            for t in 0..t_len {
                assert!(causal_grad(&grad_of_position(&out, &x, 0, t), 0, t), "MultiheadAttention: position {t}");
            }
        }
        for norm_first in [false, true] {
            let enc =
                TransformerEncoderLayer::<f64>::with_config(d, h, small_config(norm_first, true, true), &mut rng(seed));
            randomize(&enc, seed);
            let xb = Var::leaf(randn(&[b, t_len, d], seed + 2));
            let out = enc.forward(&xb, &EncoderMasks { is_causal: true, ..Default::default() });
            for t in 0..t_len {
                assert!(causal_grad(&grad_of_position(&out, &xb, 1, t), 1, t), "encoder layer: position {t}");
            }
        }
        // A 2-layer decoder: causal in the target; the memory is seen whole.
        let dec = TransformerDecoder::<f64>::new(d, h, 2, small_config(false, false, false), true, &mut rng(seed));
        randomize(&dec, seed);
        let tgt = Var::leaf(randn(&[t_len, b, d], seed + 3));
        let memory = Var::leaf(randn(&[3, b, d], seed + 4));
        let out = dec.forward(&tgt, &memory, &DecoderMasks { tgt_is_causal: true, ..Default::default() });
        for t in 0..t_len {
            assert!(causal_grad(&grad_of_position(&out, &tgt, 0, t), 0, t), "decoder: position {t}");
        }
    }
}

/// Padded keys (key_padding_mask) receive exactly zero gradient through attention: the key and
/// value rows of padded positions in MultiheadAttention, and in an encoder layer the inputs of
/// padded positions as seen from the other positions' outputs.
#[test]
fn padded_keys_get_exactly_zero_gradient() {
    let (l, s, b, d, h) = (3, 5, 2, 6, 3);
    let pad = Tensor::from_vec(vec![false, false, true, false, true, false, false, false, true, true], &[b, s]);
    let padded = |bi: usize, si: usize| pad.at(&[bi, si]);
    for batch_first in [false, true] {
        let config = MultiheadAttentionConfig { batch_first, kdim: Some(4), vdim: Some(5), ..Default::default() };
        let mha = MultiheadAttention::<f64>::with_config(d, h, config, &mut rng(1));
        randomize(&mha, 1);
        let shape = |n: usize, e: usize| if batch_first { vec![b, n, e] } else { vec![n, b, e] };
        let (q, k, v) =
            (Var::leaf(randn(&shape(l, d), 2)), Var::leaf(randn(&shape(s, 4), 3)), Var::leaf(randn(&shape(s, 5), 4)));
        let args = MultiheadAttentionArgs { key_padding_mask: Some(AttnMask::Bool(pad.clone())), ..Default::default() };
        let (out, w) = mha.forward(&q, &k, &v, &args);
        let w = w.expect("weights");
        let grads = (&out.sum() + &w.sum()).backward();
        for (name, x) in [("key", &k), ("value", &v)] {
            let g = grads.get(x).expect("grad");
            for bi in 0..b {
                for si in 0..s {
                    let row = if batch_first { g.select(0, bi).select(0, si) } else { g.select(0, si).select(0, bi) };
                    let zero = row.to_vec().iter().all(|&x| x == 0.0);
                    assert_eq!(zero, padded(bi, si), "{name} [{bi}, {si}] (batch_first {batch_first})");
                }
            }
        }
        // Weights of padded keys are exactly zero.
        for bi in 0..b {
            for si in 0..s {
                if padded(bi, si) {
                    assert!(w.data().select(0, bi).select(1, si).to_vec().iter().all(|&x| x == 0.0));
                }
            }
        }
    }
    // Encoder layer: output position t (not padded) gets no gradient from padded inputs.
    let enc = TransformerEncoderLayer::<f64>::with_config(d, h, small_config(true, true, true), &mut rng(2));
    randomize(&enc, 2);
    let x = Var::leaf(randn(&[b, s, d], 5));
    let out = enc
        .forward(&x, &EncoderMasks { src_key_padding_mask: Some(AttnMask::Bool(pad.clone())), ..Default::default() });
    for bi in 0..b {
        for t in (0..s).filter(|&t| !padded(bi, t)) {
            let g = grad_of_position(&out.select(0, bi), &x, 0, t);
            for si in (0..s).filter(|&si| padded(bi, si)) {
                assert!(
                    g.select(0, bi).select(0, si).to_vec().iter().all(|&x| x == 0.0),
                    "encoder: output {t} from padded {si}"
                );
            }
        }
    }
}

/// A query with every key masked out: SDPA gives zeros and zero gradients (as PyTorch's), and
/// MultiheadAttention gives `out_proj.bias` with zero weights, never NaN.
#[test]
fn fully_masked_rows_give_zeros_not_nan() {
    let q = Var::leaf(randn(&[2, 3, 4], 1));
    let k = Var::leaf(randn(&[2, 5, 4], 2));
    let v = Var::leaf(randn(&[2, 5, 3], 3));
    let keep = Tensor::from_fn(&[3, 5], |i| i / 5 != 1); // query 1 sees nothing
    let minus_inf = Tensor::from_fn(&[3, 5], |i| if i / 5 == 1 { f64::NEG_INFINITY } else { 0.0 });
    for mask in [AttnMask::Bool(keep), AttnMask::Additive(Var::constant(minus_inf))] {
        let out = scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None);
        assert!(out.to_vec().iter().all(|x| x.is_finite()));
        assert!(out.data().select(1, 1).to_vec().iter().all(|&x| x == 0.0));
        let g = out.sum().backward();
        assert!(g.get(&q).unwrap().select(1, 1).to_vec().iter().all(|&x| x == 0.0));
        for x in [&q, &k, &v] {
            assert!(g.get(x).unwrap().to_vec().iter().all(|x| x.is_finite()));
        }
    }
    let mha = MultiheadAttention::<f64>::new(4, 2, &mut rng(0));
    randomize(&mha, 0);
    let x = Var::leaf(randn(&[3, 2, 4], 4));
    let pad = Tensor::from_vec(vec![true, true, true, false, true, false], &[2, 3]); // batch 0 all padding
    let args = MultiheadAttentionArgs { key_padding_mask: Some(AttnMask::Bool(pad)), ..Default::default() };
    let (out, w) = mha.forward(&x, &x, &x, &args);
    let bias = mha.out_proj.bias.as_ref().unwrap().value().to_vec();
    for t in 0..3 {
        assert_eq!(out.data().select(0, t).select(0, 0).to_vec(), bias);
    }
    assert!(w.unwrap().data().select(0, 0).to_vec().iter().all(|&x| x == 0.0));
    let g = out.sum().backward();
    assert!(g.get(&x).unwrap().to_vec().iter().all(|x| x.is_finite()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// RoPE: gradients at both orders over random shapes and layouts, both pair layouts, any
    /// start position; and the rotated dot product of a query at m and a key at n depends on
    /// m - n only.
    #[test]
    fn rotary_embedding_gradients_and_relative_positions(
        x in (1usize..3, 1usize..5, 1usize..4).prop_flat_map(|(b, t, half)| any_layout::<f64>(vec![b, t, 2 * half])),
        interleaved in any::<bool>(),
        start in 0usize..20,
        shift in 1usize..7,
    ) {
        let dim = x.shape()[2];
        let rope = RotaryEmbedding::with_options(dim, 10000.0, interleaved);
        check_fn("rope", |v| rope.forward_from(&v[0], start), std::slice::from_ref(&x))?;
        // <R(m) q, R(n) k> = <R(m + c) q, R(n + c) k>.
        let q = Var::constant(x.select(0, 0).narrow(0, 0, 1));
        let k = Var::constant(x.select(0, 0).narrow(0, x.shape()[1] - 1, 1));
        let dot = |m: usize, n: usize| (&rope.forward_from(&q, m) * &rope.forward_from(&k, n)).sum().item();
        let (a, c) = (dot(start + 3, start), dot(start + 3 + shift, start + shift));
        prop_assert!((a - c).abs() < 1e-9 * (1.0 + a.abs()), "{} vs {}", a, c);
    }

    /// Sinusoidal and learned encodings: gradients with respect to the input (and the table).
    #[test]
    fn position_encoding_gradients(
        (t, b, d) in (1usize..5, 1usize..3, 1usize..5),
        batch_first in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let shape = if batch_first { vec![b, t, d] } else { vec![t, b, d] };
        let x = randn(&shape, seed);
        let sin = SinusoidalPositionalEncoding::new(d, 8, batch_first);
        check_fn("sinusoidal", |v| sin.forward(&v[0]).square(), std::slice::from_ref(&x))?;
        let learned = LearnedPositionalEncoding::<f64>::new(d, 8, batch_first, &mut rng(seed));
        check_module("learned", &learned, std::slice::from_ref(&x), |v| learned.forward(&v[0]).square(), true)?;
        // Position p of every batch gets row p of the table.
        let y = learned.forward(&Var::constant(Tensor::zeros(&shape)));
        let p = t - 1;
        let row = if batch_first { y.data().select(0, b - 1).select(0, p) } else { y.data().select(0, p).select(0, b - 1) };
        prop_assert_eq!(row.to_vec(), learned.weight.value().select(0, p).to_vec());
    }
}

/// Attention dropout drops whole probabilities and rescales the rest: the output equals the
/// reference `(softmax(q kᵀ / sqrt(E)) * mask) v` with the mask drawn from the same generator
/// in the same order, and so do the gradients.
#[test]
fn sdpa_dropout_matches_the_reference() {
    use rand::Rng;
    let (q, k, v) =
        (Var::leaf(randn(&[2, 3, 4, 5], 1)), Var::leaf(randn(&[2, 3, 6, 5], 2)), Var::leaf(randn(&[2, 3, 6, 2], 3)));
    let p = 0.3;
    let out = scaled_dot_product_attention_with_rng(&q, &k, &v, None, p, false, None, &mut rng(9));
    let mut r = rng(9);
    let mask = Tensor::from_fn(&[2, 3, 4, 6], |_| if r.random::<f64>() < p { 0.0 } else { 1.0 / (1.0 - p) });
    let probs = q.matmul(&k.transpose(-2, -1)).mul_scalar(1.0 / 5f64.sqrt()).softmax(-1);
    let want = (&probs * &Var::constant(mask)).matmul(&v);
    assert!(out.data().max_abs_diff(want.data()) < 1e-12);
    let w = Var::constant(randn(out.shape(), 4));
    let (g1, g2) = ((&out * &w).sum().backward(), (&want * &w).sum().backward());
    for x in [&q, &k, &v] {
        assert!(g1.get(x).unwrap().max_abs_diff(g2.get(x).unwrap()) < 1e-12);
    }
}

/// The sinusoidal table is the formula of "Attention Is All You Need".
#[test]
fn sinusoidal_table_is_the_papers() {
    let pe = SinusoidalPositionalEncoding::new(6, 10, false).table::<f64>(10);
    for pos in 0..10 {
        for i in 0..3 {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / 6.0);
            assert!((pe.at(&[pos, 2 * i]) - angle.sin()).abs() < 1e-12);
            assert!((pe.at(&[pos, 2 * i + 1]) - angle.cos()).abs() < 1e-12);
        }
    }
}

/// Unbatched inputs (`[T, d]`, PyTorch's unbatched form) give the batch-of-one result.
#[test]
fn unbatched_inputs_match_a_batch_of_one() {
    let (t, s, d, h) = (4, 3, 6, 2);
    let config = MultiheadAttentionConfig { kdim: Some(5), ..Default::default() };
    let mha = MultiheadAttention::<f64>::with_config(d, h, config, &mut rng(0));
    randomize(&mha, 0);
    let (q, k, v) = (randn(&[t, d], 1), randn(&[s, 5], 2), randn(&[s, d], 3));
    let pad = Tensor::from_vec(vec![false, true, false], &[s]);
    let one = |x: &Tensor<f64>| Var::constant(x.unsqueeze(1));
    let args = MultiheadAttentionArgs { key_padding_mask: Some(AttnMask::Bool(pad.clone())), ..Default::default() };
    let (o, w) = mha.forward(&Var::constant(q.clone()), &Var::constant(k.clone()), &Var::constant(v.clone()), &args);
    let args1 =
        MultiheadAttentionArgs { key_padding_mask: Some(AttnMask::Bool(pad.unsqueeze(0))), ..Default::default() };
    let (o1, w1) = mha.forward(&one(&q), &one(&k), &one(&v), &args1);
    assert!(o.data().max_abs_diff(&o1.data().squeeze_dim(1)) < 1e-12);
    assert!(w.unwrap().data().max_abs_diff(&w1.unwrap().data().squeeze_dim(0)) < 1e-12);

    let enc = TransformerEncoderLayer::<f64>::with_config(d, h, small_config(true, true, false), &mut rng(1));
    randomize(&enc, 1);
    let masks = EncoderMasks { is_causal: true, ..Default::default() };
    let y = enc.forward(&Var::constant(q.clone()), &masks);
    let y1 = enc.forward(&one(&q), &masks);
    assert!(y.data().max_abs_diff(&y1.data().squeeze_dim(1)) < 1e-12);
}
