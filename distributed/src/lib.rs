//! `ferrograd-distributed`: data-parallel training across processes and machines over MPI.
//!
//! - [`DistributedSampler`]: each rank's disjoint shard of every epoch (no MPI needed);
//! - with the `mpi` feature (rsmpi over Open MPI or MPICH):
//!   - [`Communicator`]: collectives on tensors (all-reduce sum/mean/max/min, broadcast,
//!     all-gather, reduce-scatter, barrier) whose size disagreements between ranks are typed
//!     errors on every rank, not hangs, and whose panics abort the whole job naming the rank;
//!   - [`DistributedDataParallel`]: PyTorch's DDP (rank 0's weights broadcast at construction,
//!     gradients averaged in 25 MB buckets in reverse parameter order, each bucket's all-reduce
//!     started during backward as soon as its gradients are final ([`DistributedDataParallel::backward`]),
//!     `no_sync`, `find_unused_parameters`);
//!   - rank-0 helpers: [`Communicator::save_checkpoint`], [`main_println!`],
//!     [`Communicator::mean_values`].
//!
//! Programs start the way MPI programs do: `mpirun -n 2 target/release/examples/mnist_ddp`
//! (several machines: `mpirun --hostfile hosts -n 8 ...`). Each rank computes on one thread by
//! default ([`Communicator::init`] says how to change it). ferrograd-train's `Learner` runs under
//! DDP, its backward overlapped with the averaging as [`DistributedDataParallel::backward_into`]
//! does (see `ferrograd_train`'s `Learner::distributed`).

#![warn(missing_docs)]

#[cfg(feature = "mpi")]
mod comm;
#[cfg(feature = "mpi")]
mod ddp;
mod error;
#[cfg(feature = "mpi")]
mod rank0;
mod sampler;

#[cfg(feature = "mpi")]
pub use comm::{Communicator, MpiFloat, ReduceOp};
#[cfg(feature = "mpi")]
pub use ddp::{DdpOptions, DistributedDataParallel, SyncEvent};
pub use error::DistError;
#[cfg(feature = "mpi")]
pub use mpi;
pub use sampler::DistributedSampler;
