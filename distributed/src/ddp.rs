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
//! per bucket instead of one per parameter. [`DistributedDataParallel::backward`] overlaps them
//! with backward: it runs backward with [`Var::backward_with_ready`], which reports each
//! parameter's gradient as soon as it is final, copies it into its bucket, and starts the
//! bucket's non-blocking all-reduce (`MPI_Iallreduce`) as soon as the bucket is full, while
//! backward goes on with the layers below; it waits for every bucket at the end. Buckets start
//! strictly in order (bucket k only after bucket k-1), so every rank issues the same
//! collectives in the same order even when the ranks' gradients become ready in different
//! orders. A bucket holding a parameter that received no gradient (`find_unused_parameters`)
//! cannot fill during backward: it and the buckets after it start after backward, with zeros
//! for the missing gradients, as [`sync_grads`](DistributedDataParallel::sync_grads) does.
//! [`DdpOptions::overlap`] turns the overlap off (backward, then `sync_grads`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use ferrograd_autograd::{BackwardOptions, Grads, NodeId, Param, Var};
use ferrograd_nn::Module;
use ferrograd_tensor::Tensor;
use mpi::collective::SystemOperation;
use mpi::request::{LocalScope, Request};
use mpi::traits::CommunicatorCollectives;

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
    /// Whether [`DistributedDataParallel::backward`] starts each bucket's all-reduce during
    /// backward, as soon as the bucket's gradients are final (default `true`, as PyTorch). Off:
    /// it runs backward, then [`sync_grads`](DistributedDataParallel::sync_grads). Either way
    /// the averaged gradients are the same; only when the communication happens differs. On 2
    /// ranks of one machine it made no measurable difference either way (Open MPI moves a
    /// non-blocking collective on only inside MPI calls; README, *Training on several
    /// processes*); it is on because it costs nothing there and pays where an all-reduce takes
    /// longer than a layer's backward. A model whose gradients fit in one bucket takes the
    /// path without overlap whatever this says: its one bucket fills only when backward ends.
    pub overlap: bool,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions { bucket_cap_mb: 25.0, find_unused_parameters: false, broadcast_buffers: false, overlap: true }
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

    /// Sets [`DdpOptions::overlap`].
    pub fn overlap(mut self, on: bool) -> Self {
        self.overlap = on;
        self
    }
}

/// One step of gradient synchronisation as it happened, for tests and for seeing whether the
/// communication overlapped with backward ([`DistributedDataParallel::last_sync_trace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// Backward reported the final gradient of parameter `param` (its position in
    /// `named_parameters()`).
    GradReady {
        /// The parameter's position in the model's `named_parameters()`.
        param: usize,
    },
    /// The all-reduce of bucket `bucket` (its position in
    /// [`bucket_names`](DistributedDataParallel::bucket_names)) started.
    BucketLaunched {
        /// The bucket's position in the order buckets are reduced.
        bucket: usize,
    },
    /// Backward returned.
    BackwardEnd,
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
    /// Where each parameter's gradient goes: (bucket, position in the bucket), for every time
    /// the parameter appears in `params`.
    places: HashMap<NodeId, Vec<(usize, usize)>>,
    /// Per bucket, where each of its parameters' gradients starts in the bucket's buffer.
    offsets: Vec<Vec<usize>>,
    options: DdpOptions,
    sync: Cell<bool>,
    /// Per bucket, its send and receive buffers: the gradients flattened at `offsets`, then one
    /// "had a gradient" flag per parameter (summed, it counts the ranks that used the
    /// parameter). Allocated at the first sync, then reused.
    bucket_buffers: RefCell<Vec<(Vec<F>, Vec<F>)>>,
    trace: RefCell<Vec<SyncEvent>>,
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
        let mut places: HashMap<NodeId, Vec<(usize, usize)>> = HashMap::new();
        let mut offsets = Vec::with_capacity(buckets.len());
        for (b, bucket) in buckets.iter().enumerate() {
            let mut start = 0;
            let mut starts = Vec::with_capacity(bucket.len());
            for (k, &i) in bucket.iter().enumerate() {
                places.entry(params[i].1.id()).or_default().push((b, k));
                starts.push(start);
                start += params[i].1.numel();
            }
            starts.push(start);
            offsets.push(starts);
        }
        Ok(DistributedDataParallel {
            module,
            comm,
            params,
            buckets,
            places,
            offsets,
            options,
            sync: Cell::new(true),
            bucket_buffers: RefCell::new(Vec::new()),
            trace: RefCell::new(Vec::new()),
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
        let mut trace = self.trace.borrow_mut();
        trace.clear();
        trace.push(SyncEvent::BackwardEnd);
        drop(trace);
        self.sync_after_backward(grads)
    }

    /// What the last [`backward`](Self::backward) (or [`sync_grads`](Self::sync_grads)) did, in
    /// order: with the overlap, bucket 0 starts before the first layers' gradients are ready
    /// and before backward ends; without it, every bucket starts after [`SyncEvent::BackwardEnd`].
    pub fn last_sync_trace(&self) -> Vec<SyncEvent> {
        self.trace.borrow().clone()
    }

    /// Backward of `loss` with the gradients averaged over the ranks: the returned gradients
    /// are those of `loss.backward()` after [`sync_grads`](Self::sync_grads), but each bucket's
    /// all-reduce starts during backward, as soon as its gradients are final
    /// ([`DdpOptions::overlap`]). Every rank must call it for the same step. Inside
    /// [`no_sync`](Self::no_sync) it is plain backward.
    ///
    /// ```no_run
    /// use ferrograd_autograd::Var;
    /// use ferrograd_distributed::{Communicator, DdpOptions, DistributedDataParallel};
    /// use ferrograd_nn::{layers::{Linear, ReLU, Sequential}, Module};
    /// use ferrograd_optim::{GroupOptions, Optim, Optimizer, Sgd};
    /// use ferrograd_tensor::Tensor;
    /// use rand::{rngs::StdRng, SeedableRng};
    ///
    /// let comm = Communicator::init()?;
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let model = Sequential::new().add(Linear::new(4, 64, &mut rng)).add(ReLU).add(Linear::new(64, 1, &mut rng));
    /// // Small buckets: the last layer's all-reduce runs while backward computes the first's.
    /// let ddp = DistributedDataParallel::new(&model, &comm, DdpOptions::default().bucket_cap_mb(0.001))?;
    /// let mut opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
    /// let x = Var::constant(Tensor::<f32>::ones(&[8, 4]));
    /// let grads = ddp.backward(&model.forward(&x).square().mean())?; // averaged over the ranks
    /// opt.step(&grads);
    /// # Ok::<(), ferrograd_distributed::DistError>(())
    /// ```
    ///
    /// # Errors
    /// As [`sync_grads`](Self::sync_grads).
    ///
    /// # Panics
    /// As [`Var::backward`].
    pub fn backward(&self, loss: &Var<F>) -> Result<Grads<F>, DistError> {
        let mut grads = Grads::default();
        self.backward_into(loss, &mut grads)?;
        Ok(grads)
    }

    /// [`backward`](Self::backward) for gradient accumulation: adds `loss`'s gradients to
    /// `grads` (those of the micro-batches before, computed under [`no_sync`](Self::no_sync)),
    /// then averages the sums over the ranks, each bucket as soon as its sums are final. Inside
    /// `no_sync` it only adds.
    ///
    /// ```no_run
    /// # use ferrograd_autograd::{Grads, Var};
    /// # use ferrograd_distributed::{Communicator, DdpOptions, DistributedDataParallel};
    /// # use ferrograd_nn::{layers::Linear, Module};
    /// # use ferrograd_tensor::Tensor;
    /// # use rand::{rngs::StdRng, SeedableRng};
    /// # let comm = Communicator::init()?;
    /// # let model = Linear::new(4, 1, &mut StdRng::seed_from_u64(0));
    /// # let ddp = DistributedDataParallel::new(&model, &comm, DdpOptions::default())?;
    /// let micro = [Tensor::<f32>::ones(&[4, 4]), Tensor::<f32>::zeros(&[4, 4])];
    /// let mut grads = Grads::default();
    /// ddp.no_sync(|| ddp.backward_into(&model.forward(&Var::constant(micro[0].clone())).sum(), &mut grads))?;
    /// ddp.backward_into(&model.forward(&Var::constant(micro[1].clone())).sum(), &mut grads)?; // synced
    /// # Ok::<(), ferrograd_distributed::DistError>(())
    /// ```
    ///
    /// # Errors
    /// As [`sync_grads`](Self::sync_grads).
    ///
    /// # Panics
    /// As [`Var::backward`], and if a gradient in `grads` has another shape than this pass's.
    pub fn backward_into(&self, loss: &Var<F>, grads: &mut Grads<F>) -> Result<(), DistError> {
        // One bucket fills only when backward reaches the first layer: nothing can overlap,
        // and the blocking all-reduce after backward is the cheaper call.
        if !self.sync.get() || !self.options.overlap || self.buckets.len() < 2 {
            let new = loss.backward();
            if grads.is_empty() {
                *grads = new;
            } else {
                grads.accumulate(&new);
            }
            return self.sync_grads(grads);
        }
        self.overlapped_backward(loss, grads)
    }

    /// The overlapped path of [`backward_into`](Self::backward_into).
    fn overlapped_backward(&self, loss: &Var<F>, grads: &mut Grads<F>) -> Result<(), DistError> {
        let mut buffers = self.bucket_buffers();
        let mut trace = self.trace.borrow_mut();
        trace.clear();
        // Per bucket: its buffers until it starts, and how many of its gradients are missing.
        let mut slots: Vec<Option<(&mut [F], &mut [F])>> =
            buffers.iter_mut().map(|(s, r)| Some((&mut s[..], &mut r[..]))).collect();
        let mut missing: Vec<usize> = self.buckets.iter().map(Vec::len).collect();
        // A bucket's filled flags live in its send buffer, after the gradients.
        for (slot, offsets) in slots.iter_mut().zip(&self.offsets) {
            let (send, _) = slot.as_mut().expect("no bucket started yet");
            send[offsets[offsets.len() - 1]..].fill(F::zero());
        }
        let earlier: &Grads<F> = grads;
        let comm = self.comm.raw();
        let (new, reduced) = mpi::request::scope(|scope| {
            let mut next = 0;
            let mut inflight: Vec<(usize, Request<'_, [F], &LocalScope<'_>>)> = Vec::new();
            let mut done: Vec<Option<&[F]>> = vec![None; self.buckets.len()];
            let new = loss.backward_with_ready(BackwardOptions::default(), |id, g| {
                let Some(places) = self.places.get(&id) else { return };
                for &(b, k) in places {
                    let (send, _) = slots[b].as_mut().expect("a bucket starts only once all its gradients are in");
                    let i = self.buckets[b][k];
                    self.fill(send, b, k, earlier.get_by_id(id), Some(g.data()));
                    missing[b] -= 1;
                    trace.push(SyncEvent::GradReady { param: i });
                }
                while next < self.buckets.len() && missing[next] == 0 {
                    let (send, recv) = slots[next].take().expect("each bucket starts once");
                    inflight.push((next, comm.immediate_all_reduce_into(scope, &*send, recv, SystemOperation::sum())));
                    trace.push(SyncEvent::BucketLaunched { bucket: next });
                    next += 1;
                }
                // Open MPI moves a non-blocking collective on only inside MPI calls: test the
                // buckets in flight so they progress while backward computes.
                progress(&mut inflight, &mut done);
            });
            trace.push(SyncEvent::BackwardEnd);
            // Buckets with gradients backward never reported (unused parameters) start now,
            // with what `grads` held before or zeros.
            for (b, slot) in slots.iter_mut().enumerate().skip(next) {
                let (send, recv) = slot.take().expect("each bucket starts once");
                for (k, &i) in self.buckets[b].iter().enumerate() {
                    let flag = self.offsets[b][self.buckets[b].len()] + k;
                    if send[flag] == F::zero() {
                        self.fill(send, b, k, earlier.get_by_id(self.params[i].1.id()), None);
                    }
                }
                inflight.push((b, comm.immediate_all_reduce_into(scope, &*send, recv, SystemOperation::sum())));
                trace.push(SyncEvent::BucketLaunched { bucket: b });
            }
            for (b, request) in inflight {
                done[b] = Some(request.wait_for_data());
            }
            let reduced: Vec<&[F]> = done.into_iter().map(|d| d.expect("every bucket was reduced")).collect();
            (new, reduced)
        });
        drop(trace);
        // The other leaves' gradients (not the model's parameters) are summed as they are.
        for (id, g) in new.iter() {
            if !self.places.contains_key(&id) {
                let mut one = Grads::default();
                one.insert(id, g.clone());
                grads.accumulate(&one);
            }
        }
        let world = self.comm.size();
        for (b, values) in reduced.into_iter().enumerate() {
            self.unpack(b, values, world, grads)?;
        }
        drop(buffers);
        if self.options.broadcast_buffers {
            self.sync_buffers()?;
        }
        Ok(())
    }

    /// Writes parameter `k` of bucket `b` into the bucket's send buffer: the sum of `earlier`
    /// and `now` where present, zeros (and a cleared flag) where neither is.
    fn fill(&self, send: &mut [F], b: usize, k: usize, earlier: Option<&Tensor<F>>, now: Option<&Tensor<F>>) {
        let bucket = &self.buckets[b];
        let (start, end) = (self.offsets[b][k], self.offsets[b][k + 1]);
        let flag = self.offsets[b][bucket.len()] + k;
        let out = &mut send[start..end];
        let copy = |out: &mut [F], t: &Tensor<F>| match t.as_slice() {
            Some(s) => out.copy_from_slice(s),
            None => out.copy_from_slice(&t.to_vec()),
        };
        match (earlier, now) {
            (None, None) => {
                out.fill(F::zero());
                send[flag] = F::zero();
                return;
            }
            (Some(t), None) | (None, Some(t)) => copy(out, t),
            (Some(a), Some(g)) => {
                assert_eq!(
                    a.shape(),
                    g.shape(),
                    "DistributedDataParallel::backward_into: the accumulated gradient of `{}` has shape {:?}, this pass's {:?}",
                    self.params[bucket[k]].0,
                    a.shape(),
                    g.shape()
                );
                copy(out, a);
                match g.as_slice() {
                    Some(s) => out.iter_mut().zip(s).for_each(|(o, &v)| *o += v),
                    None => out.iter_mut().zip(g.to_vec()).for_each(|(o, v)| *o += v),
                }
            }
        }
        send[flag] = F::one();
    }

    /// Replaces the gradients of bucket `b`'s parameters in `grads` by the averages of the
    /// bucket's reduced buffer `values` (sums over `world` ranks, then one flag per parameter).
    fn unpack(&self, b: usize, values: &[F], world: usize, grads: &mut Grads<F>) -> Result<(), DistError> {
        let bucket = &self.buckets[b];
        let inv = F::one() / F::from_f64(world as f64);
        let (values, used) = values.split_at(values.len() - bucket.len());
        for (k, &i) in bucket.iter().enumerate() {
            let (name, p) = &self.params[i];
            let used = used[k].to_f64().round() as usize;
            if used < world && !self.options.find_unused_parameters {
                return Err(DistError::UnusedParameter { name: name.clone(), used, world });
            }
            if used > 0 {
                let avg: Vec<F> = values[self.offsets[b][k]..self.offsets[b][k + 1]].iter().map(|&v| v * inv).collect();
                grads.insert(p.id(), Tensor::from_vec(avg, &p.shape()));
            }
        }
        Ok(())
    }

    /// The buckets' send and receive buffers, allocated on first use.
    fn bucket_buffers(&self) -> std::cell::RefMut<'_, Vec<(Vec<F>, Vec<F>)>> {
        let mut buffers = self.bucket_buffers.borrow_mut();
        if buffers.is_empty() {
            for (bucket, offsets) in self.buckets.iter().zip(&self.offsets) {
                let len = offsets[bucket.len()] + bucket.len();
                buffers.push((vec![F::zero(); len], vec![F::zero(); len]));
            }
        }
        buffers
    }

    /// [`sync_grads`](Self::sync_grads) once backward has ended (appends to the trace).
    fn sync_after_backward(&self, grads: &mut Grads<F>) -> Result<(), DistError> {
        let world = self.comm.size();
        let mut buffers = self.bucket_buffers();
        for (b, (bucket, (send, recv))) in self.buckets.iter().zip(buffers.iter_mut()).enumerate() {
            for (k, &i) in bucket.iter().enumerate() {
                self.fill(send, b, k, grads.get_param(&self.params[i].1), None);
            }
            self.trace.borrow_mut().push(SyncEvent::BucketLaunched { bucket: b });
            self.comm.reduce_raw(send, recv, ReduceOp::Sum);
            self.unpack(b, recv, world, grads)?;
        }
        drop(buffers);
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

/// Tests the requests in flight once (each test lets MPI move them on) and keeps the data of
/// those that completed.
#[allow(clippy::type_complexity)]
fn progress<'a, F: MpiFloat>(
    inflight: &mut Vec<(usize, Request<'a, [F], &LocalScope<'a>>)>,
    done: &mut [Option<&'a [F]>],
) {
    let mut i = 0;
    while i < inflight.len() {
        let (b, request) = inflight.swap_remove(i);
        match request.test_with_data() {
            Ok((_, data)) => done[b] = Some(data),
            Err(request) => {
                inflight.push((b, request));
                let last = inflight.len() - 1;
                inflight.swap(i, last);
                i += 1;
            }
        }
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
