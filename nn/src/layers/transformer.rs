//! Transformer layers, as PyTorch's: [`TransformerEncoderLayer`], [`TransformerDecoderLayer`],
//! and the stacks [`TransformerEncoder`], [`TransformerDecoder`], with PyTorch's parameter names
//! (`self_attn.in_proj_weight`, `linear1.weight`, `norm1.bias`, `layers.0.…`, `norm.weight`), so a
//! PyTorch `state_dict` loads with no renaming.
//!
//! # Signatures
//!
//! | type | inherent `forward` | `Module::forward(x)` |
//! |---|---|---|
//! | `TransformerEncoderLayer`, `TransformerEncoder` | `(src, &EncoderMasks) -> out` | `forward_unmasked(src)` |
//! | `TransformerDecoderLayer`, `TransformerDecoder` | `(tgt, memory, &DecoderMasks) -> out` | none (panics: it needs a memory) |
//!
//! The masks are PyTorch's keyword arguments gathered in [`EncoderMasks`] and [`DecoderMasks`]
//! (each `Default` to no mask), with PyTorch's conventions: a boolean mask is `true` where
//! attention is **not** allowed, an additive one is added to the scores; attention masks are
//! `[L, S]` or `[B * nhead, L, S]`, key padding masks `[B, S]`. `is_causal` applies a causal mask
//! (on top of the given one, if any; PyTorch reads it as a hint that the given one is causal,
//! which gives the same result). The encoder's `Module::forward` is the unmasked form, so an
//! encoder composes in a [`Sequential`](crate::layers::Sequential).

use ferrograd_autograd::Var;
use ferrograd_tensor::Float;
use rand::Rng;

use super::attention::{MultiheadAttention, MultiheadAttentionArgs, MultiheadAttentionConfig};
use super::linear::{Linear, LinearConfig};
use super::norm::{LayerNorm, LayerNormConfig};
use super::Dropout;
use crate::functional::AttnMask;
use crate::Module;

/// The feed-forward activation of the transformer layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransformerActivation {
    /// ReLU (PyTorch's default).
    #[default]
    Relu,
    /// Exact GELU.
    Gelu,
}

/// Options of the transformer layers and stacks (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerLayerConfig {
    /// Width of the feed-forward block (default 2048).
    pub dim_feedforward: usize,
    /// Dropout probability after attention, inside and after the feed-forward block, and on
    /// the attention weights, in training (default 0.1).
    pub dropout: f64,
    /// The feed-forward activation (default ReLU).
    pub activation: TransformerActivation,
    /// The layer norms' epsilon (default 1e-5).
    pub layer_norm_eps: f64,
    /// Whether inputs and output are `[B, T, d_model]` rather than `[T, B, d_model]` (default `false`).
    pub batch_first: bool,
    /// Pre-norm (`x + f(norm(x))`) rather than post-norm (`norm(x + f(x))`) (default `false`).
    pub norm_first: bool,
    /// Whether the linear layers and layer norms have biases (default `true`).
    pub bias: bool,
}

impl Default for TransformerLayerConfig {
    fn default() -> Self {
        TransformerLayerConfig {
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: TransformerActivation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }
}

/// The masks of an encoder layer or stack (`TransformerEncoderLayer.forward`'s keyword
/// arguments); `Default` is no mask.
///
/// ```
/// use ferrograd_nn::layers::EncoderMasks;
/// let masks = EncoderMasks::<f32> { is_causal: true, ..Default::default() };
/// assert!(masks.src_mask.is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct EncoderMasks<F: Float = f32> {
    /// `[T, T]` or `[B * nhead, T, T]`: pairs not allowed to attend (`true`), or added.
    pub src_mask: Option<AttnMask<F>>,
    /// `[B, T]`: padded positions (`true`), or an additive mask per key.
    pub src_key_padding_mask: Option<AttnMask<F>>,
    /// Applies a causal mask.
    pub is_causal: bool,
}

/// The masks of a decoder layer or stack (`TransformerDecoderLayer.forward`'s keyword
/// arguments); `Default` is no mask.
///
/// ```
/// use ferrograd_nn::layers::DecoderMasks;
/// let masks = DecoderMasks::<f32> { tgt_is_causal: true, ..Default::default() };
/// assert!(masks.memory_key_padding_mask.is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct DecoderMasks<F: Float = f32> {
    /// `[T, T]` or `[B * nhead, T, T]`, for the self-attention over the target.
    pub tgt_mask: Option<AttnMask<F>>,
    /// `[T, S]` or `[B * nhead, T, S]`, for the attention over the memory.
    pub memory_mask: Option<AttnMask<F>>,
    /// `[B, T]`: padded target positions.
    pub tgt_key_padding_mask: Option<AttnMask<F>>,
    /// `[B, S]`: padded memory positions.
    pub memory_key_padding_mask: Option<AttnMask<F>>,
    /// Applies a causal mask to the target's self-attention.
    pub tgt_is_causal: bool,
    /// Applies a causal mask to the attention over the memory.
    pub memory_is_causal: bool,
}

fn mha<F: Float>(
    d_model: usize,
    nhead: usize,
    c: &TransformerLayerConfig,
    rng: &mut impl Rng,
) -> MultiheadAttention<F> {
    let config =
        MultiheadAttentionConfig { dropout: c.dropout, bias: c.bias, batch_first: c.batch_first, ..Default::default() };
    MultiheadAttention::with_config(d_model, nhead, config, rng)
}

fn norm<F: Float>(d_model: usize, c: &TransformerLayerConfig) -> LayerNorm<F> {
    LayerNorm::with_config(
        &[d_model],
        LayerNormConfig { eps: c.layer_norm_eps, elementwise_affine: true, bias: c.bias },
    )
}

fn linear<F: Float>(i: usize, o: usize, c: &TransformerLayerConfig, rng: &mut impl Rng) -> Linear<F> {
    Linear::with_config(i, o, LinearConfig { bias: c.bias }, rng)
}

/// Self- or cross-attention without weights, as the layers call it.
#[track_caller]
fn attend<F: Float>(
    attn: &MultiheadAttention<F>,
    q: &Var<F>,
    kv: &Var<F>,
    mask: &Option<AttnMask<F>>,
    key_padding_mask: &Option<AttnMask<F>>,
    is_causal: bool,
) -> Var<F> {
    let args = MultiheadAttentionArgs {
        key_padding_mask: key_padding_mask.clone(),
        need_weights: false,
        attn_mask: mask.clone(),
        average_attn_weights: true,
        is_causal,
    };
    attn.forward(q, kv, kv, &args).0
}

/// `linear2(dropout(act(linear1(x))))`.
#[track_caller]
fn feed_forward<F: Float>(
    linear1: &Linear<F>,
    dropout: &Dropout,
    linear2: &Linear<F>,
    act: TransformerActivation,
    x: &Var<F>,
) -> Var<F> {
    let h = linear1.forward(x);
    let h = match act {
        TransformerActivation::Relu => h.relu(),
        TransformerActivation::Gelu => h.gelu(),
    };
    linear2.forward(&dropout.forward(&h))
}

/// One encoder layer, as `torch.nn.TransformerEncoderLayer`: self-attention and a feed-forward
/// block, each with a residual connection and a layer norm (post-norm by default, pre-norm with
/// `norm_first`).
///
/// Parameters: `self_attn.*` (a [`MultiheadAttention`]), `linear1.*` `[ff, d]`, `linear2.*`
/// `[d, ff]`, `norm1.*`, `norm2.*`. Input and output `[T, B, d]` (`[B, T, d]` with `batch_first`,
/// or unbatched `[T, d]`).
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::{EncoderMasks, TransformerActivation, TransformerEncoderLayer, TransformerLayerConfig};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let config = TransformerLayerConfig {
///     dim_feedforward: 32, norm_first: true, activation: TransformerActivation::Gelu, batch_first: true,
///     ..Default::default()
/// };
/// let layer = TransformerEncoderLayer::<f32>::with_config(16, 4, config, &mut StdRng::seed_from_u64(0));
/// let x = Var::constant(Tensor::ones(&[2, 10, 16])); // [batch, time, d_model]
/// let y = layer.forward(&x, &EncoderMasks { is_causal: true, ..Default::default() });
/// assert_eq!(y.shape(), &[2, 10, 16]);
/// ```
#[derive(Debug, Module)]
#[module(forward = forward_unmasked)]
pub struct TransformerEncoderLayer<F: Float = f32> {
    /// The self-attention.
    pub self_attn: MultiheadAttention<F>,
    /// The feed-forward block's first layer, `d -> dim_feedforward`.
    pub linear1: Linear<F>,
    /// Dropout inside the feed-forward block.
    pub dropout: Dropout,
    /// The feed-forward block's second layer, `dim_feedforward -> d`.
    pub linear2: Linear<F>,
    /// The norm of the attention block.
    pub norm1: LayerNorm<F>,
    /// The norm of the feed-forward block.
    pub norm2: LayerNorm<F>,
    /// Dropout after the attention.
    pub dropout1: Dropout,
    /// Dropout after the feed-forward block.
    pub dropout2: Dropout,
    #[module(skip)]
    config: TransformerLayerConfig,
}

impl<F: Float> TransformerEncoderLayer<F> {
    /// A layer with PyTorch's defaults (feed-forward 2048, dropout 0.1, ReLU, post-norm,
    /// sequence-first).
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead`.
    #[track_caller]
    pub fn new(d_model: usize, nhead: usize, rng: &mut impl Rng) -> Self {
        Self::with_config(d_model, nhead, TransformerLayerConfig::default(), rng)
    }

    /// A layer with explicit options; its dropout generators are seeded from `rng`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead` or `dropout` is not in `[0, 1]`.
    #[track_caller]
    pub fn with_config(d_model: usize, nhead: usize, config: TransformerLayerConfig, rng: &mut impl Rng) -> Self {
        let c = &config;
        TransformerEncoderLayer {
            self_attn: mha(d_model, nhead, c, rng),
            linear1: linear(d_model, c.dim_feedforward, c, rng),
            dropout: Dropout::new(c.dropout, rng.random()),
            linear2: linear(c.dim_feedforward, d_model, c, rng),
            norm1: norm(d_model, c),
            norm2: norm(d_model, c),
            dropout1: Dropout::new(c.dropout, rng.random()),
            dropout2: Dropout::new(c.dropout, rng.random()),
            config,
        }
    }

    /// The options.
    pub fn config(&self) -> TransformerLayerConfig {
        self.config
    }

    /// The layer over `src` with `masks`.
    ///
    /// # Panics
    /// If a shape does not fit the layer (the message names the layer and the shapes).
    #[track_caller]
    pub fn forward(&self, src: &Var<F>, masks: &EncoderMasks<F>) -> Var<F> {
        // Blocks are methods, not closures, so that a shape error reports the caller's line.
        if self.config.norm_first {
            let x = src + &self.sa_block(&self.norm1.forward(src), masks);
            &x + &self.ff_block(&self.norm2.forward(&x))
        } else {
            let x = self.norm1.forward(&(src + &self.sa_block(src, masks)));
            self.norm2.forward(&(&x + &self.ff_block(&x)))
        }
    }

    #[track_caller]
    fn sa_block(&self, x: &Var<F>, m: &EncoderMasks<F>) -> Var<F> {
        let a = attend(&self.self_attn, x, x, &m.src_mask, &m.src_key_padding_mask, m.is_causal);
        self.dropout1.forward(&a)
    }

    #[track_caller]
    fn ff_block(&self, x: &Var<F>) -> Var<F> {
        let f = feed_forward(&self.linear1, &self.dropout, &self.linear2, self.config.activation, x);
        self.dropout2.forward(&f)
    }

    /// The layer without masks (also [`Module::forward`]).
    #[track_caller]
    pub fn forward_unmasked(&self, src: &Var<F>) -> Var<F> {
        self.forward(src, &EncoderMasks::default())
    }
}

/// One decoder layer, as `torch.nn.TransformerDecoderLayer`: self-attention over the target,
/// attention over the memory (the encoder's output) and a feed-forward block, each with a
/// residual connection and a layer norm (post-norm by default, pre-norm with `norm_first`).
///
/// Parameters: `self_attn.*`, `multihead_attn.*`, `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`,
/// `norm3.*`. Target and output `[T, B, d]`, memory `[S, B, d]` (batch first with `batch_first`,
/// or unbatched). It has no single-input form: [`Module::forward`] panics, as calling PyTorch's
/// with one argument raises; call the inherent `forward(tgt, memory, masks)`.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::{DecoderMasks, TransformerDecoderLayer, TransformerLayerConfig};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let config = TransformerLayerConfig { dim_feedforward: 32, ..Default::default() };
/// let layer = TransformerDecoderLayer::<f32>::with_config(16, 4, config, &mut StdRng::seed_from_u64(0));
/// let tgt = Var::constant(Tensor::ones(&[7, 2, 16])); // [time, batch, d_model]
/// let memory = Var::constant(Tensor::ones(&[9, 2, 16]));
/// let y = layer.forward(&tgt, &memory, &DecoderMasks { tgt_is_causal: true, ..Default::default() });
/// assert_eq!(y.shape(), &[7, 2, 16]);
/// ```
#[derive(Debug, Module)]
#[module(forward = none)]
pub struct TransformerDecoderLayer<F: Float = f32> {
    /// The self-attention over the target.
    pub self_attn: MultiheadAttention<F>,
    /// The attention over the memory.
    pub multihead_attn: MultiheadAttention<F>,
    /// The feed-forward block's first layer, `d -> dim_feedforward`.
    pub linear1: Linear<F>,
    /// Dropout inside the feed-forward block.
    pub dropout: Dropout,
    /// The feed-forward block's second layer, `dim_feedforward -> d`.
    pub linear2: Linear<F>,
    /// The norm of the self-attention block.
    pub norm1: LayerNorm<F>,
    /// The norm of the memory-attention block.
    pub norm2: LayerNorm<F>,
    /// The norm of the feed-forward block.
    pub norm3: LayerNorm<F>,
    /// Dropout after the self-attention.
    pub dropout1: Dropout,
    /// Dropout after the memory attention.
    pub dropout2: Dropout,
    /// Dropout after the feed-forward block.
    pub dropout3: Dropout,
    #[module(skip)]
    config: TransformerLayerConfig,
}

impl<F: Float> TransformerDecoderLayer<F> {
    /// A layer with PyTorch's defaults (feed-forward 2048, dropout 0.1, ReLU, post-norm,
    /// sequence-first).
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead`.
    #[track_caller]
    pub fn new(d_model: usize, nhead: usize, rng: &mut impl Rng) -> Self {
        Self::with_config(d_model, nhead, TransformerLayerConfig::default(), rng)
    }

    /// A layer with explicit options; its dropout generators are seeded from `rng`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead` or `dropout` is not in `[0, 1]`.
    #[track_caller]
    pub fn with_config(d_model: usize, nhead: usize, config: TransformerLayerConfig, rng: &mut impl Rng) -> Self {
        let c = &config;
        TransformerDecoderLayer {
            self_attn: mha(d_model, nhead, c, rng),
            multihead_attn: mha(d_model, nhead, c, rng),
            linear1: linear(d_model, c.dim_feedforward, c, rng),
            dropout: Dropout::new(c.dropout, rng.random()),
            linear2: linear(c.dim_feedforward, d_model, c, rng),
            norm1: norm(d_model, c),
            norm2: norm(d_model, c),
            norm3: norm(d_model, c),
            dropout1: Dropout::new(c.dropout, rng.random()),
            dropout2: Dropout::new(c.dropout, rng.random()),
            dropout3: Dropout::new(c.dropout, rng.random()),
            config,
        }
    }

    /// The options.
    pub fn config(&self) -> TransformerLayerConfig {
        self.config
    }

    /// The layer over the target `tgt` attending to `memory`, with `masks`.
    ///
    /// # Panics
    /// If a shape does not fit the layer (the message names the layer and the shapes).
    #[track_caller]
    pub fn forward(&self, tgt: &Var<F>, memory: &Var<F>, masks: &DecoderMasks<F>) -> Var<F> {
        // Blocks are methods, not closures, so that a shape error reports the caller's line.
        if self.config.norm_first {
            let x = tgt + &self.sa_block(&self.norm1.forward(tgt), masks);
            let x = &x + &self.mha_block(&self.norm2.forward(&x), memory, masks);
            &x + &self.ff_block(&self.norm3.forward(&x))
        } else {
            let x = self.norm1.forward(&(tgt + &self.sa_block(tgt, masks)));
            let x = self.norm2.forward(&(&x + &self.mha_block(&x, memory, masks)));
            self.norm3.forward(&(&x + &self.ff_block(&x)))
        }
    }

    #[track_caller]
    fn sa_block(&self, x: &Var<F>, m: &DecoderMasks<F>) -> Var<F> {
        let a = attend(&self.self_attn, x, x, &m.tgt_mask, &m.tgt_key_padding_mask, m.tgt_is_causal);
        self.dropout1.forward(&a)
    }

    #[track_caller]
    fn mha_block(&self, x: &Var<F>, memory: &Var<F>, m: &DecoderMasks<F>) -> Var<F> {
        let a = attend(&self.multihead_attn, x, memory, &m.memory_mask, &m.memory_key_padding_mask, m.memory_is_causal);
        self.dropout2.forward(&a)
    }

    #[track_caller]
    fn ff_block(&self, x: &Var<F>) -> Var<F> {
        let f = feed_forward(&self.linear1, &self.dropout, &self.linear2, self.config.activation, x);
        self.dropout3.forward(&f)
    }
}

/// A stack of encoder layers with an optional final norm, as `torch.nn.TransformerEncoder`;
/// parameters `layers.{i}.…` and `norm.*`.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::{EncoderMasks, TransformerEncoder, TransformerLayerConfig};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let config = TransformerLayerConfig { dim_feedforward: 32, batch_first: true, ..Default::default() };
/// let encoder = TransformerEncoder::<f32>::new(16, 4, 2, config, true, &mut StdRng::seed_from_u64(0));
/// assert!(encoder.named_parameters().iter().any(|(n, _)| n == "layers.1.self_attn.in_proj_weight"));
/// let x = Var::constant(Tensor::ones(&[2, 10, 16]));
/// assert_eq!(encoder.forward(&x, &EncoderMasks::default()).shape(), &[2, 10, 16]);
/// # use ferrograd_nn::Module;
/// ```
#[derive(Debug, Module)]
#[module(forward = forward_unmasked)]
pub struct TransformerEncoder<F: Float = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer<F>>,
    /// The final layer norm, if any.
    pub norm: Option<LayerNorm<F>>,
}

impl<F: Float> TransformerEncoder<F> {
    /// `num_layers` independently initialised layers of the given options, and a final
    /// `LayerNorm` if `final_norm` (PyTorch's `norm=` argument).
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead` or `dropout` is not in `[0, 1]`.
    #[track_caller]
    pub fn new(
        d_model: usize,
        nhead: usize,
        num_layers: usize,
        config: TransformerLayerConfig,
        final_norm: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let layers =
            (0..num_layers).map(|_| TransformerEncoderLayer::with_config(d_model, nhead, config, rng)).collect();
        TransformerEncoder { layers, norm: final_norm.then(|| norm(d_model, &config)) }
    }

    /// A stack of the given layers and final norm.
    pub fn from_layers(layers: Vec<TransformerEncoderLayer<F>>, norm: Option<LayerNorm<F>>) -> Self {
        TransformerEncoder { layers, norm }
    }

    /// Every layer over `src` with the same `masks`, then the final norm.
    ///
    /// # Panics
    /// If a shape does not fit the layers.
    #[track_caller]
    pub fn forward(&self, src: &Var<F>, masks: &EncoderMasks<F>) -> Var<F> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward(&x, masks);
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => x,
        }
    }

    /// The stack without masks (also [`Module::forward`]).
    #[track_caller]
    pub fn forward_unmasked(&self, src: &Var<F>) -> Var<F> {
        self.forward(src, &EncoderMasks::default())
    }
}

/// A stack of decoder layers with an optional final norm, as `torch.nn.TransformerDecoder`;
/// parameters `layers.{i}.…` and `norm.*`. Like the layer, it has no single-input form.
///
/// ```
/// use ferrograd_autograd::Var;
/// use ferrograd_nn::layers::{DecoderMasks, TransformerDecoder, TransformerLayerConfig};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
/// let config = TransformerLayerConfig { dim_feedforward: 32, ..Default::default() };
/// let decoder = TransformerDecoder::<f32>::new(16, 4, 2, config, true, &mut StdRng::seed_from_u64(0));
/// let (tgt, memory) = (Var::constant(Tensor::ones(&[5, 2, 16])), Var::constant(Tensor::ones(&[8, 2, 16])));
/// let y = decoder.forward(&tgt, &memory, &DecoderMasks { tgt_is_causal: true, ..Default::default() });
/// assert_eq!(y.shape(), &[5, 2, 16]);
/// ```
#[derive(Debug, Module)]
#[module(forward = none)]
pub struct TransformerDecoder<F: Float = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerDecoderLayer<F>>,
    /// The final layer norm, if any.
    pub norm: Option<LayerNorm<F>>,
}

impl<F: Float> TransformerDecoder<F> {
    /// `num_layers` independently initialised layers of the given options, and a final
    /// `LayerNorm` if `final_norm` (PyTorch's `norm=` argument).
    ///
    /// # Panics
    /// If `d_model` is not divisible by `nhead` or `dropout` is not in `[0, 1]`.
    #[track_caller]
    pub fn new(
        d_model: usize,
        nhead: usize,
        num_layers: usize,
        config: TransformerLayerConfig,
        final_norm: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let layers =
            (0..num_layers).map(|_| TransformerDecoderLayer::with_config(d_model, nhead, config, rng)).collect();
        TransformerDecoder { layers, norm: final_norm.then(|| norm(d_model, &config)) }
    }

    /// A stack of the given layers and final norm.
    pub fn from_layers(layers: Vec<TransformerDecoderLayer<F>>, norm: Option<LayerNorm<F>>) -> Self {
        TransformerDecoder { layers, norm }
    }

    /// Every layer over `tgt` attending to `memory` with the same `masks`, then the final norm.
    ///
    /// # Panics
    /// If a shape does not fit the layers.
    #[track_caller]
    pub fn forward(&self, tgt: &Var<F>, memory: &Var<F>, masks: &DecoderMasks<F>) -> Var<F> {
        let mut x = tgt.clone();
        for layer in &self.layers {
            x = layer.forward(&x, memory, masks);
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => x,
        }
    }
}
