//! `ferrograd-autograd`: define-by-run reverse-mode automatic differentiation.
//!
//! A [`Var`] is a tensor that may require grad. Ops on `Var`s compute on tensors and record a
//! node with a backward closure; [`Var::backward`] (or [`grad`]) walks the recorded graph from
//! the output and returns [`Grads`]. Backward formulas are `Var` ops themselves, so gradients can
//! be differentiated again (`create_graph`). [`check::gradcheck`] and [`check::gradgradcheck`]
//! compare any function's gradients with finite differences.
//!
//! ```
//! use ferrograd_autograd::Var;
//! use ferrograd_tensor::Tensor;
//! let w = Var::leaf(Tensor::from_vec(vec![0.5f64, -0.25], &[2, 1]));
//! let x = Var::constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]));
//! let loss = x.matmul(&w).relu().sum();
//! let grads = loss.backward();
//! assert_eq!(grads.get(&w).unwrap().shape(), &[2, 1]);
//! ```

#![warn(missing_docs)]

mod backward;
pub mod check;
mod custom;
mod mode;
mod ops;
mod param;
mod var;

pub use backward::{grad, grad_with, BackwardOptions, Grads};
pub use custom::CustomOp;
pub use mode::{anomaly_enabled, detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly};
pub use param::Param;
pub use var::{BackwardCtx, InputGrads, NodeId, Var};
