//! Differentiable ops, one file per family; each op's forward and backward sit together.
//!
//! Backward formulas are written with `Var` ops, so a `create_graph` backward records them and
//! gives higher-order gradients; otherwise the engine runs them under `no_grad`, where a `Var` op
//! costs what its tensor op costs.

mod arith;
mod conv;
mod index;
mod linalg;
mod reduce;
mod rnn;
mod shape;
mod triangle;
mod unary;

use ferrograd_tensor::{Float, Tensor};

use crate::Var;

/// A constant 0/1 mask in the float type, from a boolean tensor (masks carry no gradient).
pub(crate) fn mask<F: Float>(m: &Tensor<bool>) -> Var<F> {
    Var::constant(m.map(|b| if b { F::one() } else { F::zero() }))
}
