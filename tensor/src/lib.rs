//! `ferrograd-tensor`: a strided n-dimensional tensor and its CPU kernels.
//!
//! A [`Tensor`] is reference-counted storage plus a [`Layout`] (shape, strides in elements,
//! offset). Views such as [`Tensor::transpose`], [`Tensor::slice`], [`Tensor::expand`] and
//! [`Tensor::flip`] only change the layout. Kernels take any layout: each has a contiguous fast
//! path and one general strided path, and binary ops broadcast with NumPy's rules.
//!
//! Shape mismatches are programming errors and panic with the op's name and both shapes, at the
//! line that called the op (every check is `#[track_caller]` up to the public method, and none
//! sits inside a closure, where the caller's location would be lost); data from outside the
//! program goes through `try_` constructors that return [`TensorError`]. The `testing` feature's
//! `assert_panics_here!` checks that an op of your own does the same.
//!
//! ```
//! use ferrograd_tensor::Tensor;
//! let x = Tensor::<f32>::arange(0.0, 6.0, 1.0).reshape(&[2, 3]);
//! assert_eq!(x.t().shape(), &[3, 2]);
//! ```

#![warn(missing_docs)]

mod buffer_cache;
mod element;
mod error;
mod iter;
mod layout;
mod ops;
pub mod quant;
mod tensor;
#[cfg(feature = "testing")]
pub mod testing;
mod threads;

pub use buffer_cache::{backward_pass_finished, buffer_caching, set_buffer_caching};
pub use element::{DType, Element, Float, Num};
pub use error::{Result, TensorError};
pub use layout::{broadcast_shapes, contiguous_strides, normalize_dim, Layout, Shape, Strides};
pub use ops::*;
pub use tensor::Tensor;

/// Re-exported so users can seed the random constructors without naming another crate version.
pub use rand;
