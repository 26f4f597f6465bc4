//! The standard layers, one file per family, each a struct of [`Param`](ferrograd_autograd::Param)s
//! with a PyTorch-default `new` constructor, an inherent `forward`, and `#[derive(Module)]`.
//!
//! Parameter and buffer names match PyTorch (`weight`, `bias`, `running_mean`, `running_var`),
//! and shapes too (a Linear weight is `[out, in]`), so state dicts line up with PyTorch's.
//!
//! Layers with parameters also have `forward_with`, the same computation with the parameter
//! values passed in as `Var`s: for gradient checks, weight tying and functional use.

mod activation;
mod attention;
mod container;
mod conv;
mod dropout;
mod embedding;
mod linear;
mod norm;
mod pool;
mod positional;
mod rnn;
mod transformer;

pub use activation::{LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Tanh, GELU};
pub use attention::{MultiheadAttention, MultiheadAttentionArgs, MultiheadAttentionConfig};
pub use container::{Flatten, Sequential};
pub use conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::{Linear, LinearConfig};
pub use norm::{BatchNorm1d, BatchNorm2d, BatchNormConfig, LayerNorm, LayerNormConfig};
pub use pool::{AvgPool2d, MaxPool2d};
pub use positional::{LearnedPositionalEncoding, RotaryEmbedding, SinusoidalPositionalEncoding};
pub use rnn::{GRUCell, LSTMCell, RNNCell, RNNCellConfig, RNNConfig, RnnNonlinearity, GRU, LSTM, RNN};
pub use transformer::{
    DecoderMasks, EncoderMasks, TransformerActivation, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
    TransformerEncoderLayer, TransformerLayerConfig,
};

use ferrograd_tensor::Float;

/// A bias parameter's PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn default_bias<F: Float>(len: usize, fan_in: usize, rng: &mut impl rand::Rng) -> ferrograd_autograd::Param<F> {
    let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    ferrograd_autograd::Param::new(crate::init::symmetric_uniform(&[len], bound, rng))
}

/// A weight's PyTorch default for Linear and Conv: kaiming_uniform(a = sqrt(5)), i.e.
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn default_weight<F: Float>(shape: &[usize], rng: &mut impl rand::Rng) -> ferrograd_autograd::Param<F> {
    let (fan_in, _) = crate::init::fan_in_and_fan_out(shape);
    let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    ferrograd_autograd::Param::new(crate::init::symmetric_uniform(shape, bound, rng))
}
