//! Typed errors for input that comes from outside the program (data, files, configs).
//!
//! Shape mismatches between tensors in code are programming errors and panic instead, naming the
//! op and both shapes.

use crate::DType;

/// An error from building or converting a tensor out of external data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The data has a different number of elements than the shape asks for.
    #[error("{op}: {len} elements do not fit shape {shape:?} ({expected} elements)")]
    DataLength {
        /// The operation that failed.
        op: &'static str,
        /// Number of elements given.
        len: usize,
        /// The requested shape.
        shape: Vec<usize>,
        /// Number of elements the shape holds.
        expected: usize,
    },
    /// The shape's element count overflows `usize`.
    #[error("{op}: the element count of shape {shape:?} overflows")]
    ShapeOverflow {
        /// The operation that failed.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// Two shapes that had to agree do not.
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not match")]
    ShapeMismatch {
        /// The operation that failed.
        op: &'static str,
        /// The first shape.
        lhs: Vec<usize>,
        /// The second shape.
        rhs: Vec<usize>,
    },
    /// An element type other than the expected one.
    #[error("{op}: expected dtype {expected}, found {found}")]
    DType {
        /// The operation that failed.
        op: &'static str,
        /// The dtype the operation needs.
        expected: DType,
        /// The dtype it was given.
        found: DType,
    },
    /// An index outside the dimension it indexes.
    #[error("{op}: index {index} is out of range for dim {dim} of size {size}")]
    IndexOutOfRange {
        /// The operation that failed.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The dim indexed.
        dim: usize,
        /// The size of that dim.
        size: usize,
    },
}

/// `Result` with [`TensorError`].
pub type Result<T> = std::result::Result<T, TensorError>;
