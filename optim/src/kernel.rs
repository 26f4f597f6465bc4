//! Shared pieces of the fused update loops: contiguous views of the operands, scalar casts, and
//! the flush of subnormal moment estimates.
//!
//! Why flush: moment estimates of parameters whose gradient stays zero (dead ReLU units) decay
//! geometrically into subnormal floats, and arithmetic on subnormals is many times slower on
//! x86. Every running average the built-in rules keep goes through [`ftz`], which sets values
//! below the smallest normal float to zero. It is branch-free (a select), and it changes
//! results only where PyTorch would be computing with subnormals.

use std::borrow::Cow;

use ferrograd_tensor::{Element, Float, Tensor};

/// The elements of `t` in row-major order, borrowed when `t` is contiguous.
pub(crate) fn dense<F: Float>(t: &Tensor<F>) -> Cow<'_, [F]> {
    match t.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_vec()),
    }
}

/// `x` as the element type.
#[inline]
pub(crate) fn c<F: Float>(x: f64) -> F {
    F::from_f64(x)
}

/// Flush to zero: `x` if it is a normal float (or zero, NaN, infinite), else zero.
#[inline(always)]
pub(crate) fn ftz<F: Float>(x: F) -> F {
    if x.abs() < F::min_positive_value() {
        F::zero()
    } else {
        x
    }
}

/// A fresh zero tensor shaped like `t`.
pub(crate) fn zeros_like<F: Float>(t: &Tensor<F>) -> Tensor<F> {
    Tensor::zeros(t.shape())
}

/// For [`RuleState::validate`](crate::RuleState::validate): `Ok` if no element of the loaded
/// entry `name` (a running sum or average of squares) is negative.
pub(crate) fn non_negative<F: Float>(name: &'static str, t: &Tensor<F>) -> Result<(), (&'static str, String)> {
    match t.to_vec().into_iter().enumerate().find(|(_, x)| *x < F::zero()) {
        None => Ok(()),
        Some((i, x)) => {
            Err((name, format!("element {i} is {}, but it averages squares and is never negative", Element::to_f64(x))))
        }
    }
}
