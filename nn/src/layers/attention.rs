//! [`MultiheadAttention`], as `torch.nn.MultiheadAttention`: PyTorch's parameter names, shapes,
//! initialisation and mask conventions, so a PyTorch `state_dict` loads with no renaming.
//!
//! # Signature
//!
//! [`Module::forward`] takes one `Var`; attention takes a query, a key, a value and masks, and
//! returns the output and (optionally) the attention weights. So the inherent
//! [`MultiheadAttention::forward`] has the full signature, with the masks and flags in a
//! [`MultiheadAttentionArgs`] (PyTorch's keyword arguments, with PyTorch's defaults), and
//! `Module::forward` (what [`Sequential`](crate::layers::Sequential) calls) is self-attention
//! without masks, [`MultiheadAttention::self_attention`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ferrograd_autograd::{Param, Var};
use ferrograd_tensor::{Float, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::linear::{Linear, LinearConfig};
use crate::functional::{attention, Attention, AttnMask};
use crate::Module;

/// Options of [`MultiheadAttention`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiheadAttentionConfig {
    /// Dropout probability on the attention weights, in training (default 0).
    pub dropout: f64,
    /// Whether the input and output projections have biases (default `true`).
    pub bias: bool,
    /// Feature size of the key (default: `embed_dim`).
    pub kdim: Option<usize>,
    /// Feature size of the value (default: `embed_dim`).
    pub vdim: Option<usize>,
    /// Whether inputs and output are `[B, L, E]` rather than `[L, B, E]` (default `false`).
    pub batch_first: bool,
}

impl Default for MultiheadAttentionConfig {
    fn default() -> Self {
        MultiheadAttentionConfig { dropout: 0.0, bias: true, kdim: None, vdim: None, batch_first: false }
    }
}

/// The keyword arguments of [`MultiheadAttention::forward`], with PyTorch's defaults
/// (`need_weights` and `average_attn_weights` true, the rest off).
///
/// Masks follow PyTorch's `MultiheadAttention`: a boolean mask is `true` where attention is
/// **not** allowed, an additive one is added to the scores.
///
/// ```
/// use ferrograd_nn::functional::AttnMask;
/// use ferrograd_nn::layers::MultiheadAttentionArgs;
/// use ferrograd_tensor::Tensor;
/// let pad = Tensor::from_vec(vec![false, false, true], &[1, 3]); // the third key is padding
/// let args = MultiheadAttentionArgs::<f32> {
///     key_padding_mask: Some(AttnMask::Bool(pad)),
///     need_weights: false,
///     ..Default::default()
/// };
/// assert!(args.attn_mask.is_none());
/// ```
#[derive(Clone, Debug)]
pub struct MultiheadAttentionArgs<F: Float = f32> {
    /// `[B, S]` (unbatched `[S]`): keys to ignore (`true`), or an additive mask per key.
    pub key_padding_mask: Option<AttnMask<F>>,
    /// Whether to return the attention weights (default `true`).
    pub need_weights: bool,
    /// `[L, S]` or `[B * num_heads, L, S]`: pairs not allowed to attend (`true`), or added.
    pub attn_mask: Option<AttnMask<F>>,
    /// Whether the returned weights are averaged over heads (`[B, L, S]`) rather than per head
    /// (`[B, num_heads, L, S]`) (default `true`).
    pub average_attn_weights: bool,
    /// Applies a causal mask (query `i` sees keys `0..=i`), on top of `attn_mask` if given
    /// (PyTorch treats it as a hint that `attn_mask` is causal; the result is the same).
    pub is_causal: bool,
}

impl<F: Float> Default for MultiheadAttentionArgs<F> {
    fn default() -> Self {
        MultiheadAttentionArgs {
            key_padding_mask: None,
            need_weights: true,
            attn_mask: None,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

/// Multi-head attention, as `torch.nn.MultiheadAttention`: `num_heads` scaled dot-product
/// attentions over `embed_dim / num_heads`-wide slices of the projected query, key and value,
/// concatenated and projected by `out_proj`.
///
/// Parameters are PyTorch's: `in_proj_weight` `[3E, E]` and `in_proj_bias` `[3E]` when the key
/// and value have the embedding's size, else `q_proj_weight` `[E, E]`, `k_proj_weight`
/// `[E, kdim]`, `v_proj_weight` `[E, vdim]` and `in_proj_bias`; then `out_proj.weight` and
/// `out_proj.bias`. Projection weights are Xavier-uniform, biases zero, as PyTorch's.
///
/// Shapes: query `[L, B, E]`, key `[S, B, kdim]`, value `[S, B, vdim]`, output `[L, B, E]`
/// (`[B, L, ..]` with `batch_first`, or unbatched `[L, E]`); weights `[B, L, S]` averaged over
/// heads, else `[B, num_heads, L, S]`.
///
/// A query whose every key is masked out gets a zero attention output (so the layer's output is
/// `out_proj.bias`) and zero weights: PyTorch's `scaled_dot_product_attention` (its path when
/// `need_weights` is false) gives the same, while its `need_weights` path gives NaN there.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::functional::AttnMask;
/// use ferrograd_nn::layers::{MultiheadAttention, MultiheadAttentionArgs, MultiheadAttentionConfig};
/// use ferrograd_nn::Module;
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let config = MultiheadAttentionConfig { batch_first: true, ..Default::default() };
/// let mha = MultiheadAttention::<f32>::with_config(8, 2, config, &mut StdRng::seed_from_u64(0));
/// let x = Var::constant(Tensor::ones(&[3, 5, 8])); // [batch, time, embed]
/// let args = MultiheadAttentionArgs { is_causal: true, ..Default::default() };
/// let (out, weights) = mha.forward(&x, &x, &x, &args);
/// assert_eq!(out.shape(), &[3, 5, 8]);
/// assert_eq!(weights.unwrap().shape(), &[3, 5, 5]);
/// // The single-input form: self-attention without masks (what Sequential calls).
/// assert_eq!(Module::forward(&mha, &x).shape(), &[3, 5, 8]);
/// ```
#[derive(Debug, Module)]
#[module(forward = self_attention)]
pub struct MultiheadAttention<F: Float = f32> {
    /// `[3E, E]`: the query, key and value projections stacked (when kdim = vdim = E).
    pub in_proj_weight: Option<Param<F>>,
    /// `[E, E]` (when kdim or vdim differ from E).
    pub q_proj_weight: Option<Param<F>>,
    /// `[E, kdim]` (when kdim or vdim differ from E).
    pub k_proj_weight: Option<Param<F>>,
    /// `[E, vdim]` (when kdim or vdim differ from E).
    pub v_proj_weight: Option<Param<F>>,
    /// `[3E]`, if the layer has biases.
    pub in_proj_bias: Option<Param<F>>,
    /// The output projection `[E, E]`.
    pub out_proj: Linear<F>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    config: MultiheadAttentionConfig,
    #[module(skip)]
    rng: Mutex<StdRng>,
    #[module(training)]
    training: AtomicBool,
}

impl<F: Float> MultiheadAttention<F> {
    /// A layer with PyTorch's defaults (biases, no dropout, sequence-first).
    ///
    /// # Panics
    /// If `embed_dim` is not divisible by `num_heads`.
    #[track_caller]
    pub fn new(embed_dim: usize, num_heads: usize, rng: &mut impl Rng) -> Self {
        Self::with_config(embed_dim, num_heads, MultiheadAttentionConfig::default(), rng)
    }

    /// A layer with explicit options; its dropout generator is seeded from `rng`.
    ///
    /// # Panics
    /// If `embed_dim` is not divisible by `num_heads` or `dropout` is not in `[0, 1]`.
    #[track_caller]
    pub fn with_config(
        embed_dim: usize,
        num_heads: usize,
        config: MultiheadAttentionConfig,
        rng: &mut impl Rng,
    ) -> Self {
        assert!(
            num_heads > 0 && embed_dim.is_multiple_of(num_heads),
            "MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
        );
        assert!(
            (0.0..=1.0).contains(&config.dropout),
            "MultiheadAttention: dropout probability {} is not in [0, 1]",
            config.dropout
        );
        let e = embed_dim;
        let (kdim, vdim) = (config.kdim.unwrap_or(e), config.vdim.unwrap_or(e));
        let packed = kdim == e && vdim == e;
        fn xavier<F: Float>(shape: &[usize], rng: &mut impl Rng) -> Param<F> {
            Param::new(crate::init::xavier_uniform(shape, 1.0, rng))
        }
        let in_proj_weight = packed.then(|| xavier(&[3 * e, e], rng));
        let q_proj_weight = (!packed).then(|| xavier(&[e, e], rng));
        let k_proj_weight = (!packed).then(|| xavier(&[e, kdim], rng));
        let v_proj_weight = (!packed).then(|| xavier(&[e, vdim], rng));
        let in_proj_bias = config.bias.then(|| Param::new(Tensor::zeros(&[3 * e])));
        let out_proj = Linear::with_config(e, e, LinearConfig { bias: config.bias }, rng);
        if let Some(b) = &out_proj.bias {
            b.set(Tensor::zeros(&[e]));
        }
        MultiheadAttention {
            in_proj_weight,
            q_proj_weight,
            k_proj_weight,
            v_proj_weight,
            in_proj_bias,
            out_proj,
            num_heads,
            config,
            rng: Mutex::new(StdRng::seed_from_u64(rng.random())),
            training: AtomicBool::new(true),
        }
    }

    /// The options.
    pub fn config(&self) -> MultiheadAttentionConfig {
        self.config
    }

    /// The embedding size `E`.
    pub fn embed_dim(&self) -> usize {
        self.out_proj.out_features()
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// The key's feature size.
    pub fn kdim(&self) -> usize {
        self.config.kdim.unwrap_or(self.embed_dim())
    }

    /// The value's feature size.
    pub fn vdim(&self) -> usize {
        self.config.vdim.unwrap_or(self.embed_dim())
    }

    /// Self-attention of `x` without masks, the output only (also [`Module::forward`]).
    ///
    /// # Panics
    /// As [`MultiheadAttention::forward`].
    #[track_caller]
    pub fn self_attention(&self, x: &Var<F>) -> Var<F> {
        let args = MultiheadAttentionArgs { need_weights: false, ..Default::default() };
        self.forward(x, x, x, &args).0
    }

    /// The attention output and, if `args.need_weights`, the attention weights (after dropout,
    /// as PyTorch returns them), each differentiable.
    ///
    /// # Panics
    /// If a shape does not fit the layer or the others (the message names the layer and the
    /// shapes), or a mask does not have one of PyTorch's shapes.
    #[track_caller]
    pub fn forward(
        &self,
        query: &Var<F>,
        key: &Var<F>,
        value: &Var<F>,
        args: &MultiheadAttentionArgs<F>,
    ) -> (Var<F>, Option<Var<F>>) {
        const OP: &str = "MultiheadAttention";
        let (e, h, kdim, vdim) = (self.embed_dim(), self.num_heads, self.kdim(), self.vdim());
        let rank = query.rank();
        assert!(
            (rank == 2 || rank == 3) && key.rank() == rank && value.rank() == rank,
            "{OP}: query {:?}, key {:?} and value {:?} must all be [L, B, E] ([B, L, E] with batch_first) or all unbatched [L, E]",
            query.shape(),
            key.shape(),
            value.shape()
        );
        let last = |v: &Var<F>| v.shape()[rank - 1];
        assert!(
            last(query) == e && last(key) == kdim && last(value) == vdim,
            "{OP}: query {:?}, key {:?} and value {:?} do not end in embed_dim {e}, kdim {kdim} and vdim {vdim}",
            query.shape(),
            key.shape(),
            value.shape()
        );
        // Batch-first [B, L, E] from here on.
        let unbatched = rank == 2;
        let to_bf = |v: &Var<F>| {
            if unbatched {
                v.unsqueeze(0)
            } else if self.config.batch_first {
                v.clone()
            } else {
                v.transpose(0, 1)
            }
        };
        let (q_in, k_in, v_in) = (to_bf(query), to_bf(key), to_bf(value));
        let (b, l, s) = (q_in.shape()[0], q_in.shape()[1], k_in.shape()[1]);
        assert!(
            k_in.shape()[0] == b && v_in.shape()[0] == b && v_in.shape()[1] == s,
            "{OP}: query {:?}, key {:?} and value {:?} differ in batch size or key and value in length",
            query.shape(),
            key.shape(),
            value.shape()
        );

        // Projections on the inputs as they lie (one GEMM over all tokens), then batch-first.
        let bias = self.in_proj_bias.as_ref().map(Param::var);
        let bias_part = |i: usize| bias.as_ref().map(|b| b.narrow(0, i * e, e));
        let (q, k, v) = match &self.in_proj_weight {
            Some(w) if same_var(query, key) && same_var(key, value) => {
                // Self-attention: one [.., 3E] projection, split in three.
                let qkv = query.linear(&w.var(), bias.as_ref());
                let parts = qkv.chunk(3, -1);
                (parts[0].clone(), parts[1].clone(), parts[2].clone())
            }
            Some(w) => {
                let w = w.var();
                (
                    query.linear(&w.narrow(0, 0, e), bias_part(0).as_ref()),
                    key.linear(&w.narrow(0, e, e), bias_part(1).as_ref()),
                    value.linear(&w.narrow(0, 2 * e, e), bias_part(2).as_ref()),
                )
            }
            None => {
                let w = |p: &Option<Param<F>>| p.as_ref().expect("separate projection weights").var();
                (
                    query.linear(&w(&self.q_proj_weight), bias_part(0).as_ref()),
                    key.linear(&w(&self.k_proj_weight), bias_part(1).as_ref()),
                    value.linear(&w(&self.v_proj_weight), bias_part(2).as_ref()),
                )
            }
        };
        let (q, k, v) = (to_bf(&q), to_bf(&k), to_bf(&v));
        let d = e / h;
        let heads = |x: &Var<F>, n: usize| x.reshape(&[b, n, h, d]).permute(&[0, 2, 1, 3]);
        let (q, k, v) = (heads(&q, l), heads(&k, s), heads(&v, s));

        let (mask_bias, keep) = self.masks(OP, args, unbatched, b, l, s, query, key);
        let training = self.training.load(Ordering::Relaxed);
        let spec = Attention {
            scale: None,
            keep,
            causal: args.is_causal,
            dropout_p: if training { self.config.dropout } else { 0.0 },
            need_weights: args.need_weights,
        };
        let mut rng = self.rng.lock().expect("MultiheadAttention generator lock poisoned");
        let (o, w) = attention(OP, &q, &k, &v, mask_bias.as_ref(), &spec, &mut *rng);
        drop(rng);
        // Heads back together, straight into the caller's layout, then the output projection.
        let o = if unbatched {
            o.squeeze_dim(0).permute(&[1, 0, 2]).reshape(&[l, e])
        } else if self.config.batch_first {
            o.permute(&[0, 2, 1, 3]).reshape(&[b, l, e])
        } else {
            o.permute(&[2, 0, 1, 3]).reshape(&[l, b, e])
        };
        let o = self.out_proj.forward(&o);
        let w = w.map(|w| {
            let w = if args.average_attn_weights { w.mean_dims(&[1], false) } else { w };
            if unbatched {
                w.squeeze_dim(0)
            } else {
                w
            }
        });
        (o, w)
    }

    /// The masks of `args` (but `is_causal`) as an additive bias and a boolean keep-mask, each
    /// broadcastable to the scores `[B, H, L, S]`.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    fn masks(
        &self,
        op: &str,
        args: &MultiheadAttentionArgs<F>,
        unbatched: bool,
        b: usize,
        l: usize,
        s: usize,
        query: &Var<F>,
        key: &Var<F>,
    ) -> (Option<Var<F>>, Option<Tensor<bool>>) {
        let h = self.num_heads;
        let mut bias: Option<Var<F>> = None;
        let mut keep: Option<Tensor<bool>> = None;
        let mut add = |m: &AttnMask<F>, shape: &[usize]| match m {
            AttnMask::Bool(m) => {
                let k = m.reshape(shape).logical_not();
                keep = Some(match keep.take() {
                    Some(prev) => prev.logical_and(&k),
                    None => k,
                });
            }
            AttnMask::Additive(m) => {
                let m = m.reshape(shape);
                bias = Some(match bias.take() {
                    Some(prev) => &prev + &m,
                    None => m,
                });
            }
        };
        if let Some(m) = &args.attn_mask {
            let shape = mask_shape(m);
            let ok2 = shape == [l, s];
            let ok3 = shape == [if unbatched { h } else { b * h }, l, s];
            assert!(
                ok2 || ok3,
                "{op}: attn_mask of shape {shape:?} is neither [L, S] = [{l}, {s}] nor [B * num_heads, L, S] = [{}, {l}, {s}] (query {:?}, key {:?})",
                b * h,
                query.shape(),
                key.shape()
            );
            if ok2 {
                add(m, &[l, s]);
            } else {
                add(m, &[b, h, l, s]);
            }
        }
        if let Some(m) = &args.key_padding_mask {
            let shape = mask_shape(m);
            let want: Vec<usize> = if unbatched { vec![s] } else { vec![b, s] };
            assert!(
                shape == want,
                "{op}: key_padding_mask of shape {shape:?} is not [B, S] = {want:?} (query {:?}, key {:?})",
                query.shape(),
                key.shape()
            );
            add(m, &[b, 1, 1, s]);
        }
        (bias, keep)
    }
}

fn mask_shape<F: Float>(m: &AttnMask<F>) -> Vec<usize> {
    match m {
        AttnMask::Bool(t) => t.shape().to_vec(),
        AttnMask::Additive(v) => v.shape().to_vec(),
    }
}

/// Whether two `Var`s are the same value (PyTorch's `query is key`): the same graph node, or
/// the same constant view of the same storage.
fn same_var<F: Float>(a: &Var<F>, b: &Var<F>) -> bool {
    match (a.id(), b.id()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            a.data().shares_storage(b.data())
                && a.shape() == b.shape()
                && a.data().strides() == b.data().strides()
                && a.data().offset() == b.data().offset()
        }
        _ => false,
    }
}
