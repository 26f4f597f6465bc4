//! Shared helpers of the autograd property tests.
#![allow(dead_code)]

use ferrograd_autograd::check::{gradcheck, gradgradcheck};
use ferrograd_autograd::Var;
use ferrograd_tensor::Tensor;
use proptest::test_runner::TestCaseError;

/// gradcheck (and gradgradcheck if `second`) of `f` at `inputs`, as a proptest failure.
pub fn check(f: impl Fn(&[Var<f64>]) -> Var<f64>, inputs: &[Tensor<f64>], second: bool) -> Result<(), TestCaseError> {
    gradcheck(&f, inputs).map_err(|e| TestCaseError::fail(format!("first order: {e}")))?;
    if second {
        gradgradcheck(&f, inputs).map_err(|e| TestCaseError::fail(format!("second order: {e}")))?;
    }
    Ok(())
}
