//! Data-parallel training with the [`Learner`]: a [`DataSource`] that yields one rank's shard of
//! each epoch ([`DistributedLoader`]) and, with the `mpi` feature, [`Learner::distributed`],
//! which plugs a `DistributedDataParallel` into the Learner's backward (the gradients averaged
//! during the backward of each accumulation group's last batch), `logs_sync` and `rank` hooks. The user's model, loss, metrics and callbacks stay as they are.

use ferrograd_distributed::DistributedSampler;
use ferrograd_nn::data::TensorDataset;
use ferrograd_tensor::{Element, Float, Tensor};

use crate::{Batch, DataSource};

/// The batches of one rank's shard of a dataset: the indices of a [`DistributedSampler`] (epoch
/// `e` of the Learner is the sampler's epoch `e`, so every epoch has a new order without a
/// `set_epoch` call), cut into batches of `batch_size` (the per-rank batch: the global batch is
/// `batch_size` times the number of ranks).
///
/// ```
/// use ferrograd_distributed::DistributedSampler;
/// use ferrograd_nn::data::TensorDataset;
/// use ferrograd_tensor::Tensor;
/// use ferrograd_train::{DataSource, DistributedLoader};
///
/// let ds = TensorDataset::new(Tensor::<f32>::arange(0.0, 10.0, 1.0), Tensor::<i64>::zeros(&[10]));
/// // Rank 1 of 2, in dataset order: samples 1, 3, 5, 7, 9 in batches of 2.
/// let loader = DistributedLoader::new(ds, 2, DistributedSampler::new(10, 2, 1).shuffle(false));
/// assert_eq!(loader.epoch_len(0), 3);
/// let firsts: Vec<Vec<f32>> = loader.batches(0, 0).map(|b| b.inputs.to_vec()).collect();
/// assert_eq!(firsts, vec![vec![1.0, 3.0], vec![5.0, 7.0], vec![9.0]]);
/// ```
#[derive(Clone, Debug)]
pub struct DistributedLoader<X: Element = f32, Y: Element = i64> {
    dataset: TensorDataset<X, Y>,
    batch_size: usize,
    sampler: DistributedSampler,
    drop_last: bool,
}

impl<X: Element, Y: Element> DistributedLoader<X, Y> {
    /// Batches of `batch_size` of the samples `sampler` deals this rank.
    ///
    /// # Panics
    /// If `batch_size` is 0.
    #[track_caller]
    pub fn new(dataset: TensorDataset<X, Y>, batch_size: usize, sampler: DistributedSampler) -> Self {
        assert!(batch_size > 0, "DistributedLoader::new: batch_size must be at least 1");
        DistributedLoader { dataset, batch_size, sampler, drop_last: false }
    }

    /// Drops the last batch of a rank's shard when it is short (default `false`).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The sampler.
    pub fn sampler(&self) -> &DistributedSampler {
        &self.sampler
    }

    /// The per-rank batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn num_batches(&self) -> usize {
        let n = self.sampler.num_samples();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }
}

impl<F: Float, Y: Element> DataSource<F, Y> for DistributedLoader<F, Y> {
    fn epoch_len(&self, _epoch: u64) -> usize {
        self.num_batches()
    }

    fn batches(&self, epoch: u64, start: usize) -> Box<dyn Iterator<Item = Batch<F, Y>> + '_> {
        let order = self.sampler.indices_for_epoch(epoch);
        let (bs, n) = (self.batch_size, self.num_batches());
        Box::new((start..n).map(move |b| {
            let end = ((b + 1) * bs).min(order.len());
            let idx: Vec<i64> = order[b * bs..end].iter().map(|&i| i as i64).collect();
            let indices = Tensor::from_vec(idx, &[end - b * bs]);
            let (inputs, targets) = self.dataset.batch(&indices);
            Batch { inputs, targets, indices }
        }))
    }
}

#[cfg(feature = "mpi")]
mod ddp {
    use ferrograd_distributed::{DistributedDataParallel, MpiFloat};
    use ferrograd_nn::checkpoint::CheckpointElement;
    use ferrograd_tensor::Element;

    use crate::Learner;

    impl<'a, F: MpiFloat + CheckpointElement, Y: Element> Learner<'a, F, Y> {
        /// Trains under `ddp` (feature `mpi`): gradients are averaged over the ranks at each
        /// step by [`DistributedDataParallel::backward_into`] (each bucket during backward as
        /// soon as its gradients are final, or all after backward when `DdpOptions::overlap` is
        /// off), each epoch's figures are averaged over the
        /// ranks before any callback sees them ([`Learner::logs_sync`], so early stopping and
        /// plateau schedules decide the same on every rank), and callbacks that write files run
        /// on rank 0 only ([`Learner::rank`]). Give each rank its shard of the data with a
        /// [`DistributedLoader`](crate::DistributedLoader). Gradient accumulation
        /// ([`Learner::accumulate`]) syncs once per optimizer step, as `no_sync` does.
        ///
        /// An error of the collectives (a parameter without gradient on some rank while
        /// `find_unused_parameters` is off) panics naming the rank, and the panic hook of
        /// `Communicator::init` ends the whole job.
        ///
        /// ```no_run
        /// use ferrograd_distributed::{Communicator, DdpOptions, DistributedDataParallel, DistributedSampler};
        /// use ferrograd_nn::data::TensorDataset;
        /// use ferrograd_nn::layers::Linear;
        /// use ferrograd_nn::loss::cross_entropy;
        /// use ferrograd_nn::Module;
        /// use ferrograd_optim::{GroupOptions, Optim, Sgd};
        /// use ferrograd_tensor::Tensor;
        /// use ferrograd_train::{DistributedLoader, Learner};
        /// use rand::{rngs::StdRng, SeedableRng};
        ///
        /// let comm = Communicator::init()?;
        /// let model = Linear::new(4, 2, &mut StdRng::seed_from_u64(0));
        /// let ddp = DistributedDataParallel::new(&model, &comm, DdpOptions::default())?;
        /// let ds = TensorDataset::new(Tensor::<f32>::ones(&[64, 4]), Tensor::<i64>::zeros(&[64]));
        /// let shard = DistributedLoader::new(ds, 8, DistributedSampler::new(64, comm.size(), comm.rank()));
        /// let opt = Optim::new(Sgd::default(), model.parameters(), GroupOptions::lr(0.1));
        /// let mut learner = Learner::new(&model, opt, cross_entropy).distributed(&ddp).quiet();
        /// learner.fit(&shard, None, 2).unwrap();
        /// # Ok::<(), ferrograd_distributed::DistError>(())
        /// ```
        pub fn distributed(self, ddp: &'a DistributedDataParallel<'_, F>) -> Self {
            let comm = ddp.comm();
            // The last batch of each accumulation group goes through DDP's backward (which
            // averages during backward, or after it when `DdpOptions::overlap` is off); the
            // ones before it only add up, as under `no_sync`.
            let learner = self.grad_backward(move |loss, grads, ends_group| {
                let done = if ends_group {
                    ddp.backward_into(loss, grads)
                } else {
                    ddp.no_sync(|| ddp.backward_into(loss, grads))
                };
                if let Err(e) = done {
                    panic!("Learner::distributed: {e}");
                }
            });
            learner
                .logs_sync(move |logs| {
                    let mut values: Vec<f64> = logs.values.iter().map(|(_, v)| *v).collect();
                    if let Err(e) = comm.mean_values(&mut values) {
                        panic!("Learner::distributed: averaging the epoch's logs: {e}");
                    }
                    for ((_, v), mean) in logs.values.iter_mut().zip(values) {
                        *v = mean;
                    }
                })
                .rank(comm.rank(), comm.size())
        }
    }
}
