//! [`DistributedDataParallel`]: PyTorch's DDP over a [`Communicator`].
//!
//! Every rank holds a full replica of the model and trains it on its own shard of each batch.
//! At construction the replicas are made equal (rank 0's parameters and buffers are broadcast);
//! after each backward, [`DistributedDataParallel::sync_grads`] replaces every rank's gradients by
//! their average over the ranks; each rank's optimizer then takes the same step from the same
//! state, so the replicas stay equal without ever sending weights again.
//!
//! The gradients travel in buckets of about [`DdpOptions::bucket_cap_mb`] megabytes, filled in
//! reverse parameter order (the order backward produces them, as PyTorch does): one all-reduce
//! per bucket instead of one per parameter. ferrograd's backward hands all gradients over at its
//! end, so the buckets are reduced one after another after backward, not overlapped with it.

use std::cell::{Cell, RefCell};

use ferrograd_autograd::{Grads, Param};
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;

use crate::comm::{MpiFloat, ReduceOp};
use crate::{Communicator, DistError};

/// Options of [`DistributedDataParallel`] (PyTorch's constructor arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct DdpOptions {
    /// The size of a gradient bucket in megabytes (2^20 bytes); default 25, as PyTorch's.
    pub bucket_cap_mb: f64,
    /// Whether parameters may receive no gradient in a step (default `false`). When on, a
    /// parameter that got a gradient on no rank keeps no gradient (the optimizer skips it) and one
    /// that got a gradient on some ranks is averaged with zeros for the others, as PyTorch does.
    /// When off, such a parameter is a [`DistError::UnusedParameter`] on every rank.
    pub find_unused_parameters: bool,
    /// Whether [`DistributedDataParallel::sync_grads`] also copies rank 0's buffers (BatchNorm's
    /// running statistics) to every rank (default `false`: buffers stay per rank, as PyTorch's
    /// BatchNorm without SyncBatchNorm and `broadcast_buffers=False`).
    pub broadcast_buffers: bool,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions { bucket_cap_mb: 25.0, find_unused_parameters: false, broadcast_buffers: false }
    }
}

impl DdpOptions {
    /// Sets [`DdpOptions::bucket_cap_mb`].
    pub fn bucket_cap_mb(mut self, mb: f64) -> Self {
        self.bucket_cap_mb = mb;
        self
    }

    /// Sets [`DdpOptions::find_unused_parameters`].
    pub fn find_unused_parameters(mut self, on: bool) -> Self {
        self.find_unused_parameters = on;
        self
    }

    /// Sets [`DdpOptions::broadcast_buffers`].
    pub fn broadcast_buffers(mut self, on: bool) -> Self {
        self.broadcast_buffers = on;
        self
    }
}

/// Data-parallel training of one model replicated on every rank.
///
/// ```no_run
/// use ferrograd_autograd::Var;
/// use ferrograd_distributed::{Communicator, DdpOptions, DistributedDataParallel};
/// use ferrograd_nn::{layers::Linear, Module};
/// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
/// use ferrograd_tensor::Tensor;
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let comm = Communicator::init()?;
/// let model = Linear::new(4, 1, &mut StdRng::seed_from_u64(comm.rank() as u64));
/// let ddp = DistributedDataParallel::new(&model, &comm, DdpOptions::default())?; // rank 0's weights everywhere
/// let mut opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
/// let x = Var::constant(Tensor::<f32>::ones(&[8, 4])); // this rank's shard of the batch
/// let mut grads = model.forward(&x).square().mean().backward();
/// ddp.sync_grads(&mut grads)?; // averaged over the ranks
/// opt.step(&grads);
/// # Ok::<(), ferrograd_distributed::DistError>(())
/// ```
pub struct DistributedDataParallel<'a, F: MpiFloat = f32> {
    module: &'a dyn Module<F>,
    comm: &'a Communicator,
    params: Vec<(String, Param<F>)>,
    buckets: Vec<Vec<usize>>,
    options: DdpOptions,
    sync: Cell<bool>,
    buffers: RefCell<(Vec<F>, Vec<F>)>,
}

impl<'a, F: MpiFloat> DistributedDataParallel<'a, F> {
    /// Wraps `module`: checks that every rank has the same parameter names and shapes, then
    /// copies rank 0's parameters and buffers to every rank.
    ///
    /// # Errors
    /// [`DistError::ModelMismatch`] on every rank if the ranks' models differ.
    pub fn new(module: &'a dyn Module<F>, comm: &'a Communicator, options: DdpOptions) -> Result<Self, DistError> {
        let params = module.named_parameters();
        let buffers = module.named_buffers();
        let mut layout: Vec<usize> = Vec::new();
        let mut names = String::new();
        for (name, p) in params.iter().chain(&buffers) {
            names.push_str(name);
            names.push('\0');
            layout.push(p.shape().len());
            layout.extend(p.shape());
        }
        let (max, min) = comm.agree(&[
            params.len() as i64,
            buffers.len() as i64,
            hash_bytes(names.as_bytes()),
            hash_bytes(&layout.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<u8>>()),
        ]);
        if max != min {
            let what = ["the number of parameters", "the number of buffers", "parameter or buffer names", "shapes"]
                [(0..4).find(|&i| max[i] != min[i]).unwrap_or(3)];
            return Err(DistError::ModelMismatch { rank: comm.rank(), what: what.to_string() });
        }
        for (_, p) in params.iter().chain(&buffers) {
            broadcast_param(comm, p)?;
        }
        let cap = (options.bucket_cap_mb * (1 << 20) as f64 / std::mem::size_of::<F>() as f64).max(1.0) as usize;
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut filled = 0;
        for i in (0..params.len()).rev() {
            let n = params[i].1.numel();
            match buckets.last_mut() {
                Some(b) if filled + n <= cap || b.is_empty() => b.push(i),
                _ => {
                    buckets.push(vec![i]);
                    filled = 0;
                }
            }
            filled += n;
        }
        Ok(DistributedDataParallel {
            module,
            comm,
            params,
            buckets,
            options,
            sync: Cell::new(true),
            buffers: RefCell::new((Vec::new(), Vec::new())),
        })
    }

    /// The wrapped model (its `forward` is the DDP model's forward).
    pub fn module(&self) -> &'a dyn Module<F> {
        self.module
    }

    /// The communicator.
    pub fn comm(&self) -> &'a Communicator {
        self.comm
    }

    /// The options it was built with.
    pub fn options(&self) -> &DdpOptions {
        &self.options
    }

    /// The parameters' names in each bucket, in the order they are reduced (reverse parameter
    /// order).
    pub fn bucket_names(&self) -> Vec<Vec<String>> {
        self.buckets.iter().map(|b| b.iter().map(|&i| self.params[i].0.clone()).collect()).collect()
    }

    /// Runs `f` with gradient synchronisation off (PyTorch's `no_sync` context): calls to
    /// [`sync_grads`](Self::sync_grads) inside it return at once, so gradients accumulated over
    /// several backward passes are averaged once, by the first `sync_grads` after it.
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.sync.replace(false);
        let out = f();
        self.sync.set(before);
        out
    }

    /// Replaces `grads` (this rank's gradients of the model's parameters) by their average over
    /// the ranks, bucket by bucket; every rank must call it for the same step. Gradients of
    /// tensors that are not the model's parameters are left alone.
    ///
    /// # Errors
    /// [`DistError::UnusedParameter`] (on every rank) when a parameter lacks a gradient on some
    /// rank and [`DdpOptions::find_unused_parameters`] is off.
    pub fn sync_grads(&self, grads: &mut Grads<F>) -> Result<(), DistError> {
        if !self.sync.get() {
            return Ok(());
        }
        let world = self.comm.size();
        let inv = F::one() / F::from_f64(world as f64);
        let mut guard = self.buffers.borrow_mut();
        let (send, recv) = &mut *guard;
        for bucket in &self.buckets {
            // The bucket: every gradient flattened, then one "had a gradient" flag per parameter
            // (summed, it counts the ranks that used the parameter).
            send.clear();
            let mut flags = Vec::with_capacity(bucket.len());
            for &i in bucket {
                let p = &self.params[i].1;
                match grads.get_param(p) {
                    Some(g) => {
                        match g.as_slice() {
                            Some(s) => send.extend_from_slice(s),
                            None => send.extend(g.to_vec()),
                        }
                        flags.push(F::one());
                    }
                    None => {
                        send.resize(send.len() + p.numel(), F::zero());
                        flags.push(F::zero());
                    }
                }
            }
            send.extend(flags);
            recv.clear();
            recv.resize(send.len(), F::zero());
            self.comm.reduce_raw(send, recv, ReduceOp::Sum);
            let grads_len = recv.len() - bucket.len();
            let (values, used) = recv.split_at(grads_len);
            let mut start = 0;
            for (k, &i) in bucket.iter().enumerate() {
                let (name, p) = &self.params[i];
                let n = p.numel();
                let used = used[k].to_f64().round() as usize;
                if used < world && !self.options.find_unused_parameters {
                    return Err(DistError::UnusedParameter { name: name.clone(), used, world });
                }
                if used > 0 {
                    let avg: Vec<F> = values[start..start + n].iter().map(|&v| v * inv).collect();
                    grads.insert(p.id(), Tensor::from_vec(avg, &p.shape()));
                }
                start += n;
            }
        }
        drop(guard);
        if self.options.broadcast_buffers {
            self.sync_buffers()?;
        }
        Ok(())
    }

    /// Copies rank 0's buffers (BatchNorm's running statistics) to every rank: before
    /// evaluating or saving when buffers are kept per rank.
    ///
    /// # Errors
    /// None in practice: the buffers' shapes were checked equal at construction.
    pub fn sync_buffers(&self) -> Result<(), DistError> {
        for (_, b) in self.module.named_buffers() {
            broadcast_param(self.comm, &b)?;
        }
        Ok(())
    }

    /// Whether every rank holds the same parameters, bit for bit (a check for tests and for
    /// debugging a run whose replicas drifted apart).
    ///
    /// # Errors
    /// As [`Communicator::all_reduce`].
    pub fn replicas_equal(&self) -> Result<bool, DistError> {
        let mut same = true;
        for (_, p) in &self.params {
            let mine = p.value();
            let mut theirs = mine.clone();
            self.comm.broadcast_(&mut theirs, 0)?;
            same &= mine.to_vec().iter().zip(theirs.to_vec()).all(|(a, b)| a.to_bits_u64() == b.to_bits_u64());
        }
        let mut flag = [if same { 0.0f64 } else { 1.0 }];
        self.comm.all_reduce_slice_(&mut flag, ReduceOp::Max)?;
        Ok(flag[0] == 0.0)
    }
}

fn broadcast_param<F: MpiFloat>(comm: &Communicator, p: &Param<F>) -> Result<(), DistError> {
    let mut t = p.value();
    comm.broadcast_(&mut t, 0)?;
    p.set(t);
    Ok(())
}

fn hash_bytes(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Bits of a float for exact comparison.
trait ToBits {
    fn to_bits_u64(self) -> u64;
}

impl<F: MpiFloat> ToBits for F {
    fn to_bits_u64(self) -> u64 {
        self.to_f64().to_bits()
    }
}
