//! Typed errors for everything that comes from outside the program: checkpoints, data files,
//! configs. Messages name the file, the tensor and the problem.

use std::path::PathBuf;

/// An error of the nn crate.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A state dict lacks a tensor the module has.
    #[error("state dict has no tensor `{name}`")]
    MissingTensor {
        /// The dotted name.
        name: String,
    },
    /// A state dict holds a tensor the module does not have.
    #[error("state dict has tensor `{name}`, which the module does not have")]
    UnexpectedTensor {
        /// The dotted name.
        name: String,
    },
    /// A tensor's shape differs from the module's.
    #[error("tensor `{name}` has shape {found:?}, the module expects {expected:?}")]
    ShapeMismatch {
        /// The dotted name.
        name: String,
        /// The module's shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A checkpoint tensor whose element type differs from the one asked for.
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    DTypeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The element type asked for.
        expected: ferrograd_tensor::DType,
        /// The element type in the file.
        found: ferrograd_tensor::DType,
    },
    /// A checkpoint tensor stored in an element type ferrograd cannot hold (F16, BF16, F8_*,
    /// U16, ...) or that the format does not know at all.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype string as written in the file's header.
        dtype: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file whose content is not what its format says.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An IDX file (MNIST's format) that is malformed.
    #[error("{path}: {problem}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: crate::data::IdxProblem,
    },
    /// Two files that must describe the same samples (images and their labels) hold different
    /// numbers of them.
    #[error("{first} holds {first_count} samples but {second} holds {second_count}")]
    CountMismatch {
        /// The first file (the images).
        first: PathBuf,
        /// Its number of samples.
        first_count: usize,
        /// The second file (the labels).
        second: PathBuf,
        /// Its number of samples.
        second_count: usize,
    },
}
