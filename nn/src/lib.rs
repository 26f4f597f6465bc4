//! `ferrograd-nn`: layers, losses, data loading and checkpoints on top of the autograd.
//!
//! A model is a [`Module`]: a forward pass over [`Var`](ferrograd_autograd::Var)s plus a named
//! tree of [`Param`](ferrograd_autograd::Param)s, usually read off a struct's fields by
//! `#[derive(Module)]`. Layers follow PyTorch's names, shapes and default initialisations.
//! [`check::gradcheck_module`] checks a module's gradients against finite differences.
//! [`functional`] holds the stateless pieces layers share (`scaled_dot_product_attention`).
//!
//! Layers with several inputs or outputs (recurrent state, attention masks and weights, a
//! decoder's memory) keep their natural signature as an inherent `forward` and name a
//! single-input form for [`Module::forward`], so they still compose in a
//! [`Sequential`]: see [`layers`] and the module docs of each family.

#![warn(missing_docs)]

// The derive's expansion names `::ferrograd_nn`, which must resolve inside this crate too.
extern crate self as ferrograd_nn;

pub mod check;
pub mod checkpoint;
pub mod data;
mod error;
pub mod functional;
pub mod init;
pub mod layers;
pub mod loss;
mod module;

pub use checkpoint::{load_module, save_module, AnyTensor};
pub use error::NnError;
pub use ferrograd_derive::Module;
pub use layers::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, Embedding, Flatten, GRUCell, LSTMCell, LayerNorm,
    LeakyReLU, Linear, LogSoftmax, MaxPool2d, MultiheadAttention, RNNCell, ReLU, Sequential, SiLU, Sigmoid, Softmax,
    Tanh, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer, GELU, GRU, LSTM,
    RNN,
};
#[doc(hidden)]
pub use module::derive_support as __private;
pub use module::{Module, TrainingFlag};
