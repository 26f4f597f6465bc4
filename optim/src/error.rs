//! The optimizer crate's typed error: what can go wrong building an optimizer (options out of
//! range, a parameter given twice), loading its saved state, or clipping gradients.

use thiserror::Error;

use crate::NonFiniteGrad;

/// An error building an optimizer from options, loading its state, or clipping gradients.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimError {
    /// An option is outside its range (PyTorch raises at construction for the same values).
    #[error("{rule}: invalid {option} = {value}: {requirement}")]
    InvalidOption {
        /// The optimizer (or rule) the option belongs to.
        rule: String,
        /// The option's name (`lr`, `betas.0`, `momentum`, ...).
        option: String,
        /// The value given.
        value: f64,
        /// What the option must be.
        requirement: String,
    },
    /// A parameter was given twice (in one group or in two).
    #[error("optimizer: parameter {0} is already in this optimizer")]
    DuplicateParameter(String),
    /// Gradient clipping met a NaN or infinite total norm (with `error_if_nonfinite`).
    #[error(
        "clip_grad_norm: the gradients' total {norm_type}-norm is {norm} ({}); gradients left unchanged",
        offenders(params)
    )]
    NonFiniteGradNorm {
        /// The total norm computed.
        norm: f64,
        /// The p of the norm.
        norm_type: f64,
        /// The parameters whose gradient holds NaN or infinity (empty if the norm overflowed
        /// from finite values).
        params: Vec<NonFiniteGrad>,
    },
    /// The saved state lacks an entry this optimizer needs.
    #[error("optimizer state: missing entry `{0}`")]
    MissingKey(String),
    /// The saved state holds an entry this optimizer has no place for (another optimizer, or
    /// other parameter groups).
    #[error("optimizer state: unexpected entry `{0}` (no such group, parameter or state in this optimizer)")]
    UnexpectedKey(String),
    /// A saved tensor's shape differs from the parameter's state it would replace.
    #[error("optimizer state: entry `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The entry's name.
        key: String,
        /// The shape the optimizer needs.
        expected: Vec<usize>,
        /// The shape found in the saved state.
        found: Vec<usize>,
    },
    /// A saved value is impossible: a step count that is negative, fractional, not finite or
    /// beyond 2^53; a state value that is not finite; a negative sum of squares.
    #[error("optimizer state: entry `{key}` holds an invalid value: {reason}")]
    InvalidValue {
        /// The entry's name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `Ok` if `ok`, else the [`OptimError::InvalidOption`] for `rule`'s `option`.
pub(crate) fn require(rule: &str, option: &str, value: f64, ok: bool, requirement: &str) -> Result<(), OptimError> {
    if ok {
        Ok(())
    } else {
        Err(OptimError::InvalidOption {
            rule: rule.to_string(),
            option: option.to_string(),
            value,
            requirement: requirement.to_string(),
        })
    }
}

/// A rate, decay or tolerance: finite and `>= 0` (NaN and infinity fail).
pub(crate) fn non_negative(rule: &str, option: &str, value: f64) -> Result<(), OptimError> {
    require(rule, option, value, value.is_finite() && value >= 0.0, "must be finite and >= 0")
}

/// A decay factor of a running average: in `[0, 1)`.
pub(crate) fn decay(rule: &str, option: &str, value: f64) -> Result<(), OptimError> {
    require(rule, option, value, (0.0..1.0).contains(&value), "must be in [0, 1)")
}

/// A fraction: in `[0, 1]`.
pub(crate) fn fraction(rule: &str, option: &str, value: f64) -> Result<(), OptimError> {
    require(rule, option, value, (0.0..=1.0).contains(&value), "must be in [0, 1]")
}

/// The parameters of an [`OptimError::NonFiniteGradNorm`] message.
fn offenders(params: &[NonFiniteGrad]) -> String {
    if params.is_empty() {
        "every element is finite: the sum of powers overflowed".to_string()
    } else {
        params.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}
