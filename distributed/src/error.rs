//! The crate's error type.

use thiserror::Error;

/// What can go wrong in a collective or in data-parallel training.
///
/// Every variant that a disagreement between processes produces is returned on *every* rank
/// (the ranks agree on the check before any data moves), so no rank is left waiting in a
/// collective the others have abandoned.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DistError {
    /// MPI was already initialised (and finalised or owned elsewhere) in this process.
    #[error("MPI init: MPI is already initialised in this process (call Communicator::init once)")]
    AlreadyInitialized,
    /// The ranks passed tensors of different sizes to a collective that needs equal ones.
    #[error("{op}: rank {rank} holds {local} elements {shape:?}, but the ranks hold between {min} and {max}")]
    SizeMismatch {
        /// The collective.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// This rank's element count.
        local: usize,
        /// This rank's shape.
        shape: Vec<usize>,
        /// The smallest count over the ranks.
        min: usize,
        /// The largest count over the ranks.
        max: usize,
    },
    /// The ranks passed tensors whose shapes disagree beyond the dimension a collective joins.
    #[error("{op}: rank {rank} has shape {shape:?}; the other ranks' shapes differ after dimension 0")]
    ShapeMismatch {
        /// The collective.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// This rank's shape.
        shape: Vec<usize>,
    },
    /// A root or rank outside the communicator.
    #[error("{op}: rank {root} is not in a communicator of {size} processes")]
    BadRank {
        /// The collective.
        op: &'static str,
        /// The rank asked for.
        root: usize,
        /// The number of processes.
        size: usize,
    },
    /// More elements than one MPI call can carry (MPI counts are 32-bit).
    #[error("{op}: {numel} elements exceed MPI's count limit of {}", i32::MAX)]
    TooLarge {
        /// The collective.
        op: &'static str,
        /// The element count asked for.
        numel: usize,
    },
    /// The ranks' models differ: parameter names or shapes at DistributedDataParallel's
    /// construction.
    #[error("DistributedDataParallel: rank {rank}'s model differs from the others' ({what})")]
    ModelMismatch {
        /// This process's rank.
        rank: usize,
        /// What differs.
        what: String,
    },
    /// A parameter received no gradient on some rank while `find_unused_parameters` is off.
    #[error(
        "DistributedDataParallel: parameter `{name}` received a gradient on {used} of {world} ranks; \
         set DdpOptions::find_unused_parameters(true) if the model leaves parameters unused"
    )]
    UnusedParameter {
        /// The parameter's name.
        name: String,
        /// On how many ranks it had a gradient.
        used: usize,
        /// The number of ranks.
        world: usize,
    },
    /// Rank 0 could not write a checkpoint (returned on every rank).
    #[error("save_checkpoint: rank 0 could not write {path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// Rank 0's error.
        message: String,
    },
}
