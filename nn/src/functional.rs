//! Stateless functions of `torch.nn.functional` that layers share: attention.
//!
//! [`scaled_dot_product_attention`] is one recorded op: its forward fuses the scale, the masks
//! and a softmax into one pass over the `[.., L, S]` scores, and its backward reuses the
//! forward's probabilities instead of recomputing them. Under `create_graph` the backward
//! rebuilds the probabilities from `Var` ops, so second derivatives stay exact.
//! [`MultiheadAttention`](crate::layers::MultiheadAttention) and the transformer layers call it.

use ferrograd_autograd::Var;
use ferrograd_tensor::{broadcast_shapes, AttentionMasks, Float, Tensor};
use rand::Rng;

/// The mask of [`scaled_dot_product_attention`], as PyTorch's `attn_mask` takes it.
///
/// Either broadcasts to the scores' shape `[.., L, S]` (say `[L, S]` for every batch and head,
/// or `[B, 1, 1, S]` per batch).
#[derive(Clone, Debug)]
pub enum AttnMask<F: Float = f32> {
    /// `true` where a query may attend to a key (`scaled_dot_product_attention`'s convention;
    /// note that `MultiheadAttention`'s boolean masks mean the opposite, as in PyTorch).
    Bool(Tensor<bool>),
    /// Added to the scaled scores before the softmax (`-inf` masks a position out). It may
    /// require grad (a learned bias such as ALiBi's); its gradient is summed to its shape.
    Additive(Var<F>),
}

impl<F: Float> From<Tensor<bool>> for AttnMask<F> {
    fn from(m: Tensor<bool>) -> Self {
        AttnMask::Bool(m)
    }
}

// One impl per float type: a generic `From<Tensor<F>>` would overlap `From<Tensor<bool>>`.
macro_rules! additive_from_tensor {
    ($($f:ty),*) => {$(
        impl From<Tensor<$f>> for AttnMask<$f> {
            fn from(m: Tensor<$f>) -> Self {
                AttnMask::Additive(Var::constant(m))
            }
        }
    )*};
}
additive_from_tensor!(f32, f64);

impl<F: Float> From<Var<F>> for AttnMask<F> {
    fn from(m: Var<F>) -> Self {
        AttnMask::Additive(m)
    }
}

/// `softmax(q kᵀ · scale + mask) v`, as `torch.nn.functional.scaled_dot_product_attention`.
///
/// Shapes: `q` `[.., L, E]`, `k` `[.., S, E]`, `v` `[.., S, Ev]`, output `[.., L, Ev]`; the
/// leading dims (batch, heads) broadcast among `q`, `k`, `v` and the mask. `scale` defaults to
/// `1 / sqrt(E)`. `is_causal` lets query `i` see keys `0..=i` (aligned top-left as PyTorch's,
/// also when `L != S`). `dropout_p` drops attention probabilities (scaling the rest by
/// `1 / (1 - p)`) with the thread's generator, always, as PyTorch's function does: pass 0 in
/// evaluation (or use [`scaled_dot_product_attention_with_rng`] for seeded masks).
///
/// A query whose every key is masked out gets an output row of zeros and zero gradients, which is
/// what PyTorch's function returns (its softmax of an all `-inf` row would be NaN).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::functional::{scaled_dot_product_attention, AttnMask};
/// use ferrograd_tensor::Tensor;
/// let q = Var::leaf(Tensor::<f64>::ones(&[2, 4, 3, 8])); // [batch, heads, L, E]
/// let kv = Var::constant(Tensor::<f64>::ones(&[2, 4, 5, 8]));
/// let out = scaled_dot_product_attention(&q, &kv, &kv, None, 0.0, true, None);
/// assert_eq!(out.shape(), &[2, 4, 3, 8]);
/// // A boolean mask per batch over the keys (`true`: attend), broadcast over heads and queries.
/// let keep = AttnMask::Bool(Tensor::from_fn(&[2, 1, 1, 5], |i| i % 5 < 3));
/// let out = scaled_dot_product_attention(&q, &kv, &kv, Some(&keep), 0.0, false, Some(0.5));
/// assert_eq!(out.shape(), &[2, 4, 3, 8]);
/// ```
///
/// # Panics
/// If a shape does not fit (the message names the op and the shapes), `dropout_p` is not in
/// `[0, 1]`, or both `attn_mask` and `is_causal` are given (as PyTorch refuses).
#[track_caller]
pub fn scaled_dot_product_attention<F: Float>(
    q: &Var<F>,
    k: &Var<F>,
    v: &Var<F>,
    attn_mask: Option<&AttnMask<F>>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Var<F> {
    scaled_dot_product_attention_with_rng(q, k, v, attn_mask, dropout_p, is_causal, scale, &mut rand::rng())
}

/// [`scaled_dot_product_attention`] drawing its dropout masks from `rng`.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::functional::scaled_dot_product_attention_with_rng;
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let x = Var::constant(Tensor::<f32>::ones(&[3, 4]));
/// let a = scaled_dot_product_attention_with_rng(&x, &x, &x, None, 0.5, false, None, &mut StdRng::seed_from_u64(1));
/// let b = scaled_dot_product_attention_with_rng(&x, &x, &x, None, 0.5, false, None, &mut StdRng::seed_from_u64(1));
/// assert_eq!(a.to_vec(), b.to_vec());
/// ```
///
/// # Panics
/// As [`scaled_dot_product_attention`].
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn scaled_dot_product_attention_with_rng<F: Float>(
    q: &Var<F>,
    k: &Var<F>,
    v: &Var<F>,
    attn_mask: Option<&AttnMask<F>>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
    rng: &mut impl Rng,
) -> Var<F> {
    const OP: &str = "scaled_dot_product_attention";
    assert!(
        !(is_causal && attn_mask.is_some()),
        "{OP}: attn_mask and is_causal are both set (give one; a causal mask can be combined into attn_mask)"
    );
    let (bias, keep) = match attn_mask {
        Some(AttnMask::Bool(m)) => (None, Some(m.clone())),
        Some(AttnMask::Additive(m)) => (Some(m), None),
        None => (None, None),
    };
    let spec = Attention { scale, keep, causal: is_causal, dropout_p, need_weights: false };
    attention(OP, q, k, v, bias, &spec, rng).0
}

/// Everything but the inputs of one attention call, as the layers build it.
pub(crate) struct Attention {
    /// `None`: `1 / sqrt(E)`.
    pub scale: Option<f64>,
    /// `true` where a query may attend a key, broadcast to the scores.
    pub keep: Option<Tensor<bool>>,
    /// Query `i` sees keys `0..=i` only.
    pub causal: bool,
    pub dropout_p: f64,
    /// Also return the (post-dropout) attention probabilities, differentiably.
    pub need_weights: bool,
}

#[track_caller]
fn check_qkv<F: Float>(op: &str, q: &Var<F>, k: &Var<F>, v: &Var<F>) {
    let (rq, rk, rv) = (q.rank(), k.rank(), v.rank());
    assert!(
        rq >= 2 && rk >= 2 && rv >= 2,
        "{op}: query {:?}, key {:?} and value {:?} must each be at least [L, E]",
        q.shape(),
        k.shape(),
        v.shape()
    );
    assert!(
        q.shape()[rq - 1] == k.shape()[rk - 1],
        "{op}: query shape {:?} and key shape {:?} differ in the embedding (last) dim",
        q.shape(),
        k.shape()
    );
    assert!(
        k.shape()[rk - 2] == v.shape()[rv - 2],
        "{op}: key shape {:?} and value shape {:?} differ in the sequence (second-last) dim",
        k.shape(),
        v.shape()
    );
    assert!(
        broadcast_shapes(&q.shape()[..rq - 2], &k.shape()[..rk - 2])
            .and_then(|b| broadcast_shapes(&b, &v.shape()[..rv - 2]))
            .is_some(),
        "{op}: the batch dims of query {:?}, key {:?} and value {:?} do not broadcast",
        q.shape(),
        k.shape(),
        v.shape()
    );
}

/// The probabilities of an all-`-inf` row are zeros rather than NaN.
fn softmax_rows_<F: Float>(s: &mut [F], len: usize) {
    if len == 0 {
        return;
    }
    for row in s.chunks_mut(len) {
        let max = row.iter().fold(F::neg_infinity(), |m, &x| if x > m { x } else { m });
        if max == F::neg_infinity() {
            row.fill(F::zero());
            continue;
        }
        let mut sum = F::zero();
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = F::one() / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Softmax over the last dim whose all-`-inf` rows give zeros, as a `Var` op (its backward is
/// softmax's, which is zero on such rows).
#[track_caller]
fn safe_softmax<F: Float>(x: &Var<F>) -> Var<F> {
    let mut out = x.data().contiguous();
    let len = out.shape().last().copied().unwrap_or(1);
    softmax_rows_(out.as_mut_slice(), len);
    let saved = out.clone();
    Var::from_op("softmax", out, [x], move |ctx, g| {
        let y = ctx.output(&saved);
        let dot = g.mul(&y).sum_dims(&[-1], true);
        [Some(y.mul(&g.sub(&dot)))].into_iter().collect()
    })
}

/// The scores `[.., L, S]` with scale, bias and mask applied, from `Var` ops (the reference path:
/// attention weights and second derivatives).
#[track_caller]
fn masked_scores<F: Float>(
    q: &Var<F>,
    k: &Var<F>,
    bias: Option<&Var<F>>,
    keep: Option<&Tensor<bool>>,
    causal: bool,
    scale: F,
) -> Var<F> {
    let mut s = q.matmul(&k.transpose(-2, -1)).mul_scalar(scale);
    if let Some(b) = bias {
        s = &s + b;
    }
    if let Some(m) = keep {
        let full = broadcast_shapes(s.shape(), m.shape()).expect("mask checked to broadcast");
        if full.as_slice() != s.shape() {
            s = s.broadcast_to(&full);
        }
        s = s.masked_fill(&m.logical_not(), F::neg_infinity());
    }
    if causal {
        let (l, n) = (s.shape()[s.rank() - 2], s.shape()[s.rank() - 1]);
        s = s.masked_fill(&Tensor::triu_mask(l, n, 1), F::neg_infinity());
    }
    s
}

/// The attention op behind [`scaled_dot_product_attention`] and the layers: the output, and the
/// attention probabilities when `spec.need_weights`.
#[track_caller]
pub(crate) fn attention<F: Float>(
    op: &'static str,
    q: &Var<F>,
    k: &Var<F>,
    v: &Var<F>,
    bias: Option<&Var<F>>,
    spec: &Attention,
    rng: &mut impl Rng,
) -> (Var<F>, Option<Var<F>>) {
    check_qkv(op, q, k, v);
    assert!((0.0..=1.0).contains(&spec.dropout_p), "{op}: dropout probability {} is not in [0, 1]", spec.dropout_p);
    let e = q.shape()[q.rank() - 1];
    let scale = F::from_f64(spec.scale.unwrap_or(1.0 / (e as f64).sqrt()));
    let (rq, rk) = (q.rank(), k.rank());
    let batch = broadcast_shapes(&q.shape()[..rq - 2], &k.shape()[..rk - 2]).expect("checked");
    let mut scores_shape = batch.to_vec();
    scores_shape.extend([q.shape()[rq - 2], k.shape()[rk - 2]]);
    for (what, shape) in [("attn_mask", bias.map(|b| b.shape())), ("mask", spec.keep.as_ref().map(|m| m.shape()))] {
        if let Some(shape) = shape {
            assert!(
                broadcast_shapes(&scores_shape, shape).is_some(),
                "{op}: {what} of shape {shape:?} does not broadcast to the scores' shape {scores_shape:?} (query {:?}, key {:?})",
                q.shape(),
                k.shape()
            );
        }
    }
    let full = [bias.map(|b| b.shape().to_vec()), spec.keep.as_ref().map(|m| m.shape().to_vec())]
        .into_iter()
        .flatten()
        .fold(scores_shape.clone(), |a, b| broadcast_shapes(&a, &b).expect("checked").to_vec());
    let dropout = (spec.dropout_p > 0.0).then(|| {
        let p = spec.dropout_p;
        let keep = if p < 1.0 { F::from_f64(1.0 / (1.0 - p)) } else { F::zero() };
        Tensor::from_fn(&full, |_| if rng.random::<f64>() < p { F::zero() } else { keep })
    });
    if spec.need_weights {
        let mut w = safe_softmax(&masked_scores(q, k, bias, spec.keep.as_ref(), spec.causal, scale));
        if let Some(d) = &dropout {
            w = &w * &Var::constant(d.clone());
        }
        return (w.matmul(v), Some(w));
    }

    // The fused kernel (see `Tensor::attention_forward`): probabilities saved for backward.
    let masks = AttentionMasks {
        bias: bias.map(|b| b.data()),
        keep: spec.keep.as_ref(),
        causal: spec.causal,
        dropout: dropout.as_ref(),
    };
    let fwd = q.data().attention_forward(k.data(), v.data(), scale, &masks);
    let zero = Var::constant(Tensor::zeros(&[]));
    let (qc, kc, vc, bc) = (q.clone(), k.clone(), v.clone(), bias.cloned());
    let (keep, causal, probs) = (spec.keep.clone(), spec.causal, fwd.probs);
    let out = Var::from_op(op, fwd.out, [q, k, v, bias.unwrap_or(&zero)], move |ctx, g| {
        let needs = |i| ctx.needs_input_grad(i);
        if !ctx.create_graph() {
            // The fused backward from the saved probabilities; gradients summed back over any
            // broadcast batch dims.
            let want_scores = needs(3) && bc.is_some();
            let gr = qc.data().attention_backward(
                kc.data(),
                vc.data(),
                &probs,
                dropout.as_ref(),
                g.data(),
                scale,
                want_scores,
            );
            let to = |t: Tensor<F>, like: &Var<F>| Var::constant(t).sum_to(like.shape());
            return [
                needs(0).then(|| to(gr.q, &qc)),
                needs(1).then(|| to(gr.k, &kc)),
                needs(2).then(|| to(gr.v, &vc)),
                gr.scores.and_then(|s| bc.as_ref().map(|b| to(s, b))),
            ]
            .into_iter()
            .collect();
        }
        // Under create_graph the same formulas in Var ops, with the probabilities rebuilt from
        // Var ops so that their own dependence on q, k and the bias is recorded.
        let p = safe_softmax(&masked_scores(&qc, &kc, bc.as_ref(), keep.as_ref(), causal, scale));
        let d = dropout.as_ref().map(|d| Var::constant(d.clone()));
        let pd = match &d {
            Some(d) => &p * d,
            None => p.clone(),
        };
        let dv = needs(2).then(|| pd.transpose(-2, -1).matmul(g).sum_to(vc.shape()));
        let (mut dq, mut dk, mut db) = (None, None, None);
        if needs(0) || needs(1) || needs(3) {
            let mut dp = g.matmul(&vc.transpose(-2, -1));
            if let Some(d) = &d {
                dp = &dp * d;
            }
            let ds = &p * &(&dp - &(&dp * &p).sum_dims(&[-1], true));
            if needs(0) {
                dq = Some(ds.matmul(&kc).mul_scalar(scale).sum_to(qc.shape()));
            }
            if needs(1) {
                dk = Some(ds.transpose(-2, -1).matmul(&qc).mul_scalar(scale).sum_to(kc.shape()));
            }
            if needs(3) {
                db = bc.as_ref().map(|b| ds.sum_to(b.shape()));
            }
        }
        [dq, dk, dv, db].into_iter().collect()
    });
    (out, None)
}
