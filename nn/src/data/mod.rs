//! Data loading: datasets, a batching and shuffling loader, IDX/MNIST files and augmentation.
//!
//! A [`TensorDataset`] holds samples as rows of two tensors; a [`DataLoader`] cuts it into
//! (shuffled) mini-batches; [`read_idx`] and [`Mnist`] read the IDX format through a memory
//! map; the [`augment`] transforms perturb image batches with a seeded RNG.

pub mod augment;
mod dataset;
mod idx;
mod loader;

pub use dataset::{Dataset, TensorDataset};
pub use idx::{read_idx, write_idx, IdxArray, IdxProblem, Mnist, MAX_DECOMPRESSED_BYTES};
pub use loader::{Batches, DataLoader};
