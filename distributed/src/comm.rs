//! Collectives on tensors over an MPI communicator.
//!
//! A [`Communicator`] owns MPI's world communicator (and MPI itself, when it initialised it).
//! Every collective first has the ranks agree on the sizes they pass, in one small all-reduce, so
//! a rank with a tensor of the wrong size gets a [`DistError`] on *every* rank instead of a hang
//! or a silent misread; then one MPI call moves the data straight out of and into the tensors'
//! storage (contiguous tensors are not copied on the way out).
//!
//! rsmpi 0.8 does not expose `MPI_IN_PLACE`, so the in-place variants (`*_`) reduce into a new
//! buffer and swap it into the tensor: the same single MPI call and no copy beyond what MPI's
//! out-of-place collective itself needs. [`Communicator::broadcast_`] is truly in place.

use std::sync::Once;

use ferrograd_tensor::{Float, Tensor};
use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use mpi::Count;

use crate::DistError;

/// An element type MPI can carry: `f32` and `f64`.
pub trait MpiFloat: Float + Equivalence {}

impl MpiFloat for f32 {}
impl MpiFloat for f64 {}

/// How an all-reduce combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over the ranks.
    Sum,
    /// The sum divided by the number of ranks.
    Mean,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
}

impl ReduceOp {
    fn mpi(self) -> SystemOperation {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => SystemOperation::sum(),
            ReduceOp::Max => SystemOperation::max(),
            ReduceOp::Min => SystemOperation::min(),
        }
    }
}

/// MPI's world communicator with collectives on tensors.
///
/// ```no_run
/// use ferrograd_distributed::{Communicator, ReduceOp};
/// use ferrograd_tensor::Tensor;
///
/// let comm = Communicator::init()?;
/// let mut t = Tensor::<f32>::full(&[3], comm.rank() as f32);
/// comm.all_reduce_(&mut t, ReduceOp::Sum)?; // every rank: 0 + 1 + ... + (size - 1)
/// comm.barrier();
/// # Ok::<(), ferrograd_distributed::DistError>(())
/// ```
pub struct Communicator {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    // Finalises MPI when the communicator that initialised it is dropped; declared last so the
    // communicator goes first.
    _universe: Option<Universe>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Communicator(rank {} of {})", self.rank, self.size)
    }
}

static PANIC_HOOK: Once = Once::new();

impl Communicator {
    /// Initialises MPI and returns the world communicator; MPI is finalised when it is dropped.
    ///
    /// Also, for a process started by `mpirun`:
    /// - limits matrix products to 1 thread per rank (ranks share the machine's cores), unless
    ///   the `MATMUL_NUM_THREADS` environment variable says otherwise (`mpirun -x
    ///   MATMUL_NUM_THREADS=2 ...`) or the program calls `ferrograd_tensor::set_num_threads`
    ///   afterwards;
    /// - installs a panic hook that prints the panicking rank and aborts the whole job
    ///   (`MPI_Abort`), so the other ranks do not wait forever in their next collective.
    ///
    /// # Errors
    /// [`DistError::AlreadyInitialized`] if MPI was initialised before in this process.
    pub fn init() -> Result<Communicator, DistError> {
        let universe = mpi::initialize().ok_or(DistError::AlreadyInitialized)?;
        let comm = universe.world();
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            ferrograd_tensor::set_num_threads(1);
        }
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                eprintln!("ferrograd-distributed: rank {rank} of {size} panicked; aborting the MPI job");
                previous(info);
                if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
                    SimpleCommunicator::world().abort(1);
                }
            }));
        });
        Ok(Communicator { comm, rank, size, _universe: Some(universe) })
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the process that writes checkpoints and logs.
    pub fn is_main_process(&self) -> bool {
        self.rank == 0
    }

    /// The rsmpi communicator, for collectives this type does not wrap.
    pub fn raw(&self) -> &SimpleCommunicator {
        &self.comm
    }

    /// Blocks until every rank has called it.
    pub fn barrier(&self) {
        self.comm.barrier();
    }

    /// Prints `message` naming this rank and aborts every process of the job.
    pub fn abort(&self, message: &str) -> ! {
        eprintln!("ferrograd-distributed: rank {} of {}: {message}; aborting the MPI job", self.rank, self.size);
        self.comm.abort(1)
    }

    /// The largest and the smallest of each value over the ranks (one all-reduce).
    pub(crate) fn agree(&self, values: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let send: Vec<i64> = values.iter().copied().chain(values.iter().map(|v| -v)).collect();
        let mut recv = vec![0i64; send.len()];
        self.comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::max());
        let (max, neg_min) = recv.split_at(values.len());
        (max.to_vec(), neg_min.iter().map(|v| -v).collect())
    }

    /// Checks that every rank passes `numel` elements (and fits an MPI count).
    fn same_numel(&self, op: &'static str, t_shape: &[usize], numel: usize) -> Result<(), DistError> {
        let (max, min) = self.agree(&[numel as i64]);
        if max[0] != min[0] {
            return Err(DistError::SizeMismatch {
                op,
                rank: self.rank,
                local: numel,
                shape: t_shape.to_vec(),
                min: min[0] as usize,
                max: max[0] as usize,
            });
        }
        count(op, numel)?;
        Ok(())
    }

    fn check_root(&self, op: &'static str, root: usize) -> Result<(), DistError> {
        if root >= self.size {
            return Err(DistError::BadRank { op, root, size: self.size });
        }
        Ok(())
    }

    /// Reduces `t` over the ranks and stores the result in `t` on every rank (PyTorch's
    /// `dist.all_reduce`).
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] (on every rank) if the ranks' tensors differ in size.
    pub fn all_reduce_<F: MpiFloat>(&self, t: &mut Tensor<F>, op: ReduceOp) -> Result<(), DistError> {
        *t = self.all_reduce(t, op)?;
        Ok(())
    }

    /// The reduction of `t` over the ranks, with `t`'s shape.
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] (on every rank) if the ranks' tensors differ in size.
    pub fn all_reduce<F: MpiFloat>(&self, t: &Tensor<F>, op: ReduceOp) -> Result<Tensor<F>, DistError> {
        self.same_numel("all_reduce", t.shape(), t.numel())?;
        let mut out = vec![F::zero(); t.numel()];
        match t.as_slice() {
            Some(s) => self.reduce_raw(s, &mut out, op),
            None => self.reduce_raw(&t.to_vec(), &mut out, op),
        }
        Ok(Tensor::from_vec(out, t.shape()))
    }

    /// The reduction of `input` over the ranks written into `out` (same number of elements;
    /// `out` keeps its shape): no allocation, and no copy when `input` is contiguous and `out`'s
    /// storage is its own, so a loop reusing `out` moves exactly what MPI's own all-reduce moves.
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] (on every rank) if the ranks' tensors differ in size.
    ///
    /// # Panics
    /// If `input` and `out` hold different numbers of elements on this rank.
    #[track_caller]
    pub fn all_reduce_into<F: MpiFloat>(
        &self,
        input: &Tensor<F>,
        out: &mut Tensor<F>,
        op: ReduceOp,
    ) -> Result<(), DistError> {
        assert_eq!(
            input.numel(),
            out.numel(),
            "all_reduce_into: input {:?} and output {:?} differ in size",
            input.shape(),
            out.shape()
        );
        self.same_numel("all_reduce_into", input.shape(), input.numel())?;
        match input.as_slice() {
            Some(s) => self.reduce_raw(s, out.as_mut_slice(), op),
            None => self.reduce_raw(&input.to_vec(), out.as_mut_slice(), op),
        }
        Ok(())
    }

    /// Reduces a slice over the ranks in place (for flat buffers: gradient buckets, logged
    /// figures).
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] (on every rank) if the ranks' slices differ in length.
    pub fn all_reduce_slice_<F: MpiFloat>(&self, values: &mut [F], op: ReduceOp) -> Result<(), DistError> {
        self.same_numel("all_reduce_slice_", &[values.len()], values.len())?;
        let send = values.to_vec();
        self.reduce_raw(&send, values, op);
        Ok(())
    }

    /// One unchecked MPI all-reduce from `send` into `recv` (equal lengths), then the division
    /// of a mean.
    pub(crate) fn reduce_raw<F: MpiFloat>(&self, send: &[F], recv: &mut [F], op: ReduceOp) {
        debug_assert_eq!(send.len(), recv.len());
        if send.is_empty() {
            return;
        }
        self.comm.all_reduce_into(send, recv, op.mpi());
        if op == ReduceOp::Mean {
            let inv = F::one() / F::from_f64(self.size as f64);
            recv.iter_mut().for_each(|v| *v *= inv);
        }
    }

    /// Copies `root`'s `t` into `t` on every other rank (PyTorch's `dist.broadcast`); the ranks'
    /// tensors must have the same number of elements.
    ///
    /// # Errors
    /// [`DistError::BadRank`] for a root outside the communicator; [`DistError::SizeMismatch`]
    /// (on every rank) if the ranks' tensors differ in size.
    pub fn broadcast_<F: MpiFloat>(&self, t: &mut Tensor<F>, root: usize) -> Result<(), DistError> {
        self.check_root("broadcast", root)?;
        self.same_numel("broadcast", t.shape(), t.numel())?;
        if t.numel() == 0 {
            return Ok(());
        }
        let root = self.comm.process_at_rank(root as i32);
        if self.rank == root.rank() as usize {
            // The root only sends: a shared or strided tensor is read, not made writable.
            match t.as_slice() {
                Some(s) => {
                    let mut s = s.to_vec();
                    root.broadcast_into(&mut s[..]);
                }
                None => {
                    let mut s = t.to_vec();
                    root.broadcast_into(&mut s[..]);
                }
            }
        } else {
            root.broadcast_into(t.as_mut_slice());
        }
        Ok(())
    }

    /// The ranks' tensors concatenated along dimension 0 in rank order (PyTorch's
    /// `all_gather_into_tensor`, also for ranks with different lengths along dimension 0).
    ///
    /// # Errors
    /// [`DistError::ShapeMismatch`] (on every rank) if the shapes differ after dimension 0.
    pub fn all_gather<F: MpiFloat>(&self, t: &Tensor<F>) -> Result<Tensor<F>, DistError> {
        let shape = if t.shape().is_empty() { vec![1] } else { t.shape().to_vec() };
        let rest: Vec<usize> = shape[1..].to_vec();
        let (max, min) = self.agree(&[rest.len() as i64, fingerprint(&rest)]);
        if max != min {
            return Err(DistError::ShapeMismatch { op: "all_gather", rank: self.rank, shape });
        }
        let row: usize = rest.iter().product();
        let mut rows = vec![0i64; self.size];
        self.comm.all_gather_into(&(shape[0] as i64), &mut rows[..]);
        let total_rows: usize = rows.iter().map(|&r| r as usize).sum();
        count("all_gather", total_rows * row)?;
        let counts: Vec<Count> = rows.iter().map(|&r| (r as usize * row) as Count).collect();
        let displs: Vec<Count> = counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
        let mut out = vec![F::zero(); total_rows * row];
        if !out.is_empty() {
            let mut part = PartitionMut::new(&mut out[..], counts, &displs[..]);
            match t.as_slice() {
                Some(s) => self.comm.all_gather_varcount_into(s, &mut part),
                None => self.comm.all_gather_varcount_into(&t.to_vec()[..], &mut part),
            }
        }
        let mut out_shape = rest;
        out_shape.insert(0, total_rows);
        Ok(Tensor::from_vec(out, &out_shape))
    }

    /// Reduces `t` over the ranks and returns this rank's share of the result: the rows of
    /// dimension 0 split as `numpy.array_split` does (the first `rows % size` ranks get one row
    /// more). With rows divisible by the size this is PyTorch's `reduce_scatter_tensor`.
    ///
    /// # Errors
    /// [`DistError::SizeMismatch`] (on every rank) if the ranks' tensors differ in size.
    pub fn reduce_scatter<F: MpiFloat>(&self, t: &Tensor<F>, op: ReduceOp) -> Result<Tensor<F>, DistError> {
        let shape = if t.shape().is_empty() { vec![1] } else { t.shape().to_vec() };
        self.same_numel("reduce_scatter", &shape, t.numel())?;
        let rows = shape[0];
        let row: usize = shape[1..].iter().product();
        let (p, r) = (self.size, self.rank);
        let my_rows = rows / p + usize::from(r < rows % p);
        let block_rows = rows.div_ceil(p);
        let mut out_shape = shape.clone();
        out_shape[0] = my_rows;
        if block_rows * row == 0 {
            return Ok(Tensor::zeros(&out_shape));
        }
        let mut recv = vec![F::zero(); block_rows * row];
        if rows.is_multiple_of(p) {
            match t.as_slice() {
                Some(s) => self.comm.reduce_scatter_block_into(s, &mut recv[..], op.mpi()),
                None => self.comm.reduce_scatter_block_into(&t.to_vec()[..], &mut recv[..], op.mpi()),
            }
        } else {
            // Uneven rows: each rank's share is padded to the largest share (one copy).
            let data = t.to_vec();
            let mut padded = vec![F::zero(); block_rows * row * p];
            let mut start = 0;
            for k in 0..p {
                let n = (rows / p + usize::from(k < rows % p)) * row;
                padded[k * block_rows * row..k * block_rows * row + n].copy_from_slice(&data[start..start + n]);
                start += n;
            }
            self.comm.reduce_scatter_block_into(&padded[..], &mut recv[..], op.mpi());
        }
        recv.truncate(my_rows * row);
        if op == ReduceOp::Mean {
            let inv = F::one() / F::from_f64(p as f64);
            recv.iter_mut().for_each(|v| *v *= inv);
        }
        Ok(Tensor::from_vec(recv, &out_shape))
    }
}

fn count(op: &'static str, numel: usize) -> Result<Count, DistError> {
    Count::try_from(numel).map_err(|_| DistError::TooLarge { op, numel })
}

/// A hash of a shape, equal on every rank for equal shapes.
fn fingerprint(dims: &[usize]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &d in dims {
        h = (h ^ d as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}
