//! The optimizer crate's typed error: what can go wrong loading saved optimizer state.

use thiserror::Error;

/// An error loading optimizer state (a checkpoint that does not fit the optimizer).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OptimError {
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
    /// A saved value is out of range (a negative or fractional step count).
    #[error("optimizer state: entry `{key}` holds an invalid value: {reason}")]
    InvalidValue {
        /// The entry's name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}
