//! `ferrograd-nn`: layers, losses, data loading and checkpoints on top of the autograd.
//!
//! A model is a [`Module`]: a forward pass over [`Var`](ferrograd_autograd::Var)s plus a named
//! tree of [`Param`](ferrograd_autograd::Param)s. Layers follow PyTorch's names, shapes and
//! default initialisations.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
mod error;
pub mod loss;
mod module;

pub use checkpoint::{load_module, save_module, AnyTensor};
pub use error::NnError;
pub use module::Module;
